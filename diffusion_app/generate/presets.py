"""Settings as data: the one-click examples of every model, and links that reopen the app with a result's settings.

A *settings* dict holds some of: model, sampler, steps, spacing, eta, guidance, seed, batch, labels (class or
attribute names), stickman (a file of ``examples/stickmen``), lowres (a file of ``examples/lowres``) and a title.
``examples_for`` makes them for a model, ``settings_link`` writes one as a query string and ``from_query`` reads
one back, checking every value: a link is typed by anyone, so a bad value is dropped (and named), never used.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import numpy as np
from PIL import Image

from diffusion_core import BACKENDS, BOUNDS, SPACINGS, CheckpointError, read_json, training_source

from ..inputs import number
from ..settings import HERE, MAX_BATCH, MAX_SEED, STICKMEN_DIR

LOWRES_DIR = HERE / "examples" / "lowres"          # bundled low-resolution inputs (scripts/make_examples.py)
EXAMPLES_FILE = "examples.json"     # optional, in a model folder: a list of settings dicts (without "model")
MAX_EXAMPLES = 3
# attribute sets tried, in order, for a multi-label model without an examples.json
PICKS = (("woman", "dark skin tone"), ("cat", "face"), ("red", "heart"), ("man", "beard"), ("flag",), ("star",))
NUMBERS = {"steps": (*BOUNDS["steps"], True), "eta": (*BOUNDS["eta"], False), "guidance": (*BOUNDS["guidance"], False),
           "seed": (-1, MAX_SEED, True), "batch": (1, MAX_BATCH, True)}
# the bundled low-resolution inputs of each training data source (file name prefix); a super-resolution model is
# offered its own kind's, at its input size when there are such files (pose-sr was offered emoji: issue 35)
LOWRES_KINDS = {"emoji": "emoji_", "pose": "figure_"}
KEYS = ("model", "sampler", "steps", "spacing", "eta", "guidance", "seed", "batch", "labels", "stickman", "lowres",
        "backend")


def _folder(kind: str) -> Path:
    return STICKMEN_DIR if kind == "stickman" else LOWRES_DIR


def example_file(kind: str, name) -> Path | None:
    """The bundled example ``name`` (a bare file name) of ``kind`` (stickman / lowres), or None."""
    folder = _folder(kind)
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(".png"):
        return None
    path = folder / name
    return path if path.is_file() else None


def bundled_name(kind: str, image) -> str | None:
    """The name of the bundled example of ``kind`` that ``image`` (an upload: a path or a decoded PIL image) is,
    pixel for pixel, or None."""
    if image is None:
        return None
    try:
        if isinstance(image, Image.Image):
            size, mine = image.size, np.asarray(image.convert("RGB"))
        else:
            with Image.open(image) as img:
                size, mine = img.size, np.asarray(img.convert("RGB"))
        for path in sorted(_folder(kind).glob("*.png")):
            with Image.open(path) as ex:
                if ex.size == size and np.array_equal(np.asarray(ex.convert("RGB")), mine):
                    return path.name
    except (OSError, ValueError):
        return None
    return None


def _listed(pipe) -> list[dict]:
    """The examples a model folder lists (``examples.json``), or its cascade's base stage's."""
    for folder in (pipe.path, pipe.base.path):
        f = Path(folder) / EXAMPLES_FILE
        if f.is_file():
            return [dict(x) for x in read_json(f, expect=list) if isinstance(x, dict)]
    return []


def data_source(folder) -> str:
    """The data source a model folder was trained on (the core's training_source), or "" where it has none or
    its train_config.json cannot be read (the page then offers every bundled low-res input)."""
    try:
        return training_source(folder) or ""
    except (OSError, CheckpointError):
        return ""


def lowres_examples(pipe) -> list[Path]:
    """The bundled low-resolution inputs for super-resolution model ``pipe``: those of its data source (all when
    it has none), at its input size where there are such files (``*_64.png`` for a 64 px input), else the smallest."""
    files = sorted(LOWRES_DIR.glob("*.png"))
    prefix = LOWRES_KINDS.get(data_source(pipe.path))
    files = [p for p in files if prefix is None or p.name.startswith(prefix)] or files

    sizes = {}
    for p in files:
        with Image.open(p) as img:
            sizes[p] = min(img.size)
    want = pipe.config.low_res if pipe.config.low_res in sizes.values() else min(sizes.values(), default=0)
    return [p for p in files if sizes[p] == want]


def examples_for(pipe, model: str) -> list[dict]:
    """Up to MAX_EXAMPLES settings for ``model``: those its folder lists, else made from what it is conditioned
    on: classes spread over its label list, attribute sets it has (PICKS), bundled stickmen for a pose model,
    bundled low-resolution images for a super-resolution model; seeds for an unconditional one."""
    cfg = pipe.base.config
    out = _listed(pipe)
    if not out:
        if cfg.task == "super_resolution":
            out = [{"title": f"upscale {p.stem.removesuffix(f'_{cfg.low_res}')}", "lowres": p.name}
                   for p in lowres_examples(pipe)]
        elif cfg.task == "pose":
            out = [{"title": f"stickman {p.stem[-2:]}", "stickman": p.name} for p in sorted(STICKMEN_DIR.glob("*.png"))]
        elif cfg.multi_label:
            names = set(cfg.label_names)
            picks = [p for p in PICKS if set(p) <= names] or [(n,) for n in cfg.label_names]
            out = [{"title": " + ".join(p), "labels": list(p)} for p in picks]
        elif cfg.label_names:
            n = len(cfg.label_names)
            idx = sorted({0, n // 2, n - 1})
            out = [{"title": cfg.label_names[i], "labels": [cfg.label_names[i]]} for i in idx]
        else:
            out = [{"title": f"seed {s}", "seed": s} for s in range(MAX_EXAMPLES)]
    for ex in out:
        ex.setdefault("seed", 0)
        ex.setdefault("title", " + ".join(ex.get("labels", [])) or f"seed {ex['seed']}")
        ex["model"] = model
    return out[:MAX_EXAMPLES]


def settings_link(meta: dict, stickman: str | None = None, lowres: str | None = None) -> str:
    """A result's settings (its PNG metadata) as a query string that ``from_query`` reads: "?model=...&seed=..."."""
    q = [("model", meta["model"]), ("sampler", meta["sampler"]), ("steps", meta["steps"]),
         ("spacing", meta["spacing"]), ("guidance", f"{meta['guidance']:g}"), ("seed", meta["seed"]),
         ("batch", meta["batch_size"])]
    if meta.get("eta") is not None:
        q.append(("eta", f"{meta['eta']:g}"))
    q += [("label", name) for name in meta.get("labels") or []]
    if meta.get("backend") in BACKENDS:      # what ran the networks: the same seed gives other images elsewhere
        q.append(("backend", meta["backend"]))
    if stickman:
        q.append(("stickman", stickman))
    if lowres:
        q.append(("lowres", lowres))
    return "?" + urlencode(q)


def from_query(params, models) -> tuple[dict, list[str]]:
    """The settings of a link (``params``: a mapping with ``getlist``, e.g. a request's query parameters, or a dict
    of lists) and the names of the values dropped as invalid. Only a model the catalogue lists is taken; every
    other value is checked against its bounds (and the labels against the model) by ``check``."""
    get = (lambda k: params.getlist(k)) if hasattr(params, "getlist") else (lambda k: list(params.get(k, [])))
    raw = {k: v[-1] for k in KEYS if k != "labels" and (v := get(k))}
    if get("label"):
        raw["labels"] = get("label")
    if not raw:
        return {}, []
    if raw.get("model") not in models.names():
        return {}, ["model"]
    return check(raw)


def check(raw: dict) -> tuple[dict, list[str]]:
    """Keep the values of ``raw`` that are valid on their own (numbers in bounds, a known spacing, bundled
    example names); the sampler and labels are checked against the model when the settings are applied."""
    out, bad = {"model": raw["model"]}, []
    for k, v in raw.items():
        if k in ("model", "title"):
            continue
        try:
            if k in NUMBERS:
                lo, hi, whole = NUMBERS[k]
                v = number(v, k, lo, hi, whole=whole)
                v = int(v) if whole else v
            elif k == "spacing" and v not in SPACINGS:
                raise ValueError(v)
            elif k in ("stickman", "lowres") and example_file(k, v) is None:
                raise ValueError(v)
            elif k == "labels" and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
                raise ValueError(v)
            elif k == "sampler" and not isinstance(v, str):
                raise ValueError(v)
            elif k == "backend" and v not in BACKENDS:
                raise ValueError(v)
            elif k not in KEYS:
                raise ValueError(v)
        except ValueError:
            bad.append(k)
            continue
        out[k] = v
    return out, bad


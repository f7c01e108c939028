"""``load(folder)``: a checkpoint folder (model, ensemble or cascade, told apart by its config.json) as a
``Pipeline``, with the backend chosen for its networks."""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from ..checkpoint import (CONFIG, MAX_CASCADE_SIZE, CascadeManifest, CheckpointError, EnsembleManifest, folder_kind,
                          load_model_config, load_network, load_prior, read_manifest, work_problem)
from ..config import ConfigError
from ..folders import check_cascade_stages, check_experts, stage_config
from ..runtime import backends
from .model import Pipeline
from .stage import Stage, eval_chunk, sr_canvas


def load(folder, device="cpu", backend: str | None = None, measure: bool = True) -> Pipeline:
    """Load a model, ensemble or cascade folder. Raises CheckpointError with a one-line reason. ``backend``:
    where the networks run (``Pipeline.set_backend``; None: $DIFFUSION_CORE_BACKEND, else fp32); ``measure``:
    whether auto may time the backends here now (else it uses a remembered choice, or fp32)."""
    pipe = _load(Path(folder), device)
    name = backends.requested_backend(backend, default="fp32")
    return pipe.set_backend(name, measure) if name != "fp32" else pipe       # a loaded pipeline runs fp32 already


def _load(folder: Path, device="cpu") -> Pipeline:
    folder = Path(folder)
    kind = folder_kind(folder)
    if kind == "model":
        cfg, net = load_network(folder, device)
        prior, prior_labels = load_prior(folder)
        return Pipeline.of(Stage.of_network(cfg, folder, net, prior=prior, prior_labels=prior_labels,
                                            chunk=eval_chunk(cfg.output_size),
                                            description=cfg.description))
    if kind == "ensemble":
        return load_ensemble(folder, read_manifest(folder, EnsembleManifest), device)
    return load_cascade(folder, read_manifest(folder, CascadeManifest), device)


def load_ensemble(folder: Path, manifest: EnsembleManifest, device="cpu") -> Pipeline:
    """The expert ensemble ``manifest`` describes, its expert paths relative to ``folder``; nothing is written,
    so ``ensemble`` checks a manifest whole before saving it."""
    folder, where = Path(folder), Path(folder) / CONFIG
    experts, cfg0 = [], None
    T = manifest.T or load_model_config(folder / manifest.experts[0].path).diffusion.T
    try:
        manifest.check_tiling(T)
    except ConfigError as err:
        raise CheckpointError(f"{where}: {err}") from None
    for e in manifest.experts:
        if folder_kind(folder / e.path) != "model":
            raise CheckpointError(f"{where}: expert {e.path} is not a single model")
    # the experts denoise one x_t under one condition: checked on their configs before any network is loaded, as
    # the ``ensemble`` command checks them (a hand-written manifest is held to the same rules)
    check_experts(where, [(e.path, load_model_config(folder / e.path)) for e in manifest.experts])
    for e in manifest.experts:
        cfg, net = load_network(folder / e.path, device)
        if cfg.diffusion.T != T:
            raise CheckpointError(f"{folder / e.path}: T = {cfg.diffusion.T}, the ensemble's is {T}")
        cfg0 = cfg0 or cfg
        experts.append((e.t_lo, e.t_hi, net))
    return Pipeline.of(Stage(cfg0, folder, sorted(experts, key=lambda x: x[0]), routed=True,
                             description=manifest.description))


def load_cascade(folder: Path, manifest: CascadeManifest, device="cpu") -> Pipeline:
    """The cascade ``manifest`` describes, its stage paths relative to ``folder``. A stage must be a model or an
    ensemble (never a cascade: so no cycle can recurse), every stage after the first a super-resolution model
    taking the images the one before makes, each within the work bounds at the size it runs at in the cascade
    (``checkpoint.work_problem``), and the output at most MAX_CASCADE_SIZE pixels a side."""
    folder, where = Path(folder), Path(folder) / CONFIG
    for i, st in enumerate(manifest.stages):
        if folder_kind(folder / st.path) == "cascade":
            raise CheckpointError(f"{where}: stage {i} ({st.path}) is itself a cascade")
    # each stage takes the images the one before makes: checked on the configs before any network is loaded, as
    # the ``cascade`` command checks them (a hand-written manifest is held to the same rules)
    check_cascade_stages(where, [(st.path, stage_config(folder / st.path)) for st in manifest.stages])
    stages, size = [], 0
    for i, st in enumerate(manifest.stages):
        sub = _load(folder / st.path, device)
        cfg = sub.config
        if i == 0:
            if cfg.task == "super_resolution":
                raise CheckpointError(f"{where}: stage 0 ({st.path}) must be a base model, not super-resolution")
            size = cfg.unet.image_size
        else:
            if cfg.task != "super_resolution":
                raise CheckpointError(f"{where}: stage {i} ({st.path}) is not a super-resolution model")
            (size, _), canvas = sr_canvas(cfg, (size, size))
        if size > MAX_CASCADE_SIZE:
            raise CheckpointError(f"{where}: the cascade would make {size} px images (limit {MAX_CASCADE_SIZE})")
        if st.denoise_t >= 0 and (cfg.diffusion.is_cold or st.denoise_t >= cfg.diffusion.T):
            raise CheckpointError(f"{where}: stage {i} ({st.path}): denoise_t {st.denoise_t} is not a timestep of its "
                                  f"Gaussian schedule")
        too_much = i and work_problem(cfg.unet, canvas)     # its own config was checked at its high_res, not at size
        if too_much:
            raise CheckpointError(f"{where}: stage {i} ({st.path}) makes {size} px images: {too_much}")
        stages.append(replace(sub.stages[0], cascade=st))
    return Pipeline(stages, folder, manifest.description)


def measure_backends(root: Path, force: bool = False) -> int:
    """``python -m diffusion_core backends``: time the backends of every model folder under ``root`` (or of
    ``root`` itself) with auto and remember each choice with the load it was measured under, so that a server's
    auto uses it without measuring. Refused while the machine is busy: the timings would measure the other work
    (``force``: measure anyway; ``backends.choose`` then does not remember them)."""
    busy = backends._busy()
    if busy is not None and not force:
        print(f"error: the machine is busy (1-minute load {busy:.1f}): measure when it is idle, or --force",
              file=sys.stderr)
        return 2
    folders = [root] if (root / "config.json").is_file() else sorted(
        p for p in root.iterdir() if (p / "config.json").is_file() and not p.name.startswith("."))
    if not folders:
        raise FileNotFoundError(f"no model folders (with config.json) in {root}")
    for folder in folders:
        try:
            pipe = load(folder, backend="auto")
        except CheckpointError as e:
            print(f"{folder.name}: skipped: {e}")
            continue
        for line in dict.fromkeys(c.summary() for c in pipe.backend_choices):
            print(f"{folder.name}: {line}")
    return 0

"""Evaluation as users use a multi-label model: a few picked attributes, not a full label set (issue 20).

For each pick in ``PICKS`` (1-3 attributes, as a user ticks them in the app or passes ``--label``), sample
``per_pick`` images and report the fraction whose attributes, as the evaluation classifier predicts them
(logit > 0), include every picked one; beside it the same fraction for the real emoji that have every
picked attribute (what the classifier itself can see: a pick it misses on real emoji cannot be judged on
generated ones either; the mean over the "judgeable" picks keeps those the classifier finds on at least
``VISIBLE_CLASSIFIER_F1`` of at least ``MIN_POSITIVES`` real emoji, the rule of ``metrics.visible_f1``).
A model with ``label_mask`` samples the picks as "at least these" (the others
unknown); an older model as its full vector ("exactly these"), which is how such a model is used today.

Colours (issue 20, part 2): per pick, the mean RGB (0-255) of the central 8x8 pixels at 32 px and of the
whole image, generated vs real, so a skin tone drawn too dark or with a cast shows as numbers.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data import DataConfig, load_data

# user-style picks: people with tones and kinds, animals, hearts and colours, flags, faces, objects
PICKS: tuple[tuple[str, ...], ...] = (
    ("woman", "dark skin tone"),
    ("woman", "light skin tone"),
    ("man", "medium-dark skin tone"),
    ("man", "beard", "light skin tone"),
    ("person", "medium skin tone"),
    ("man",),
    ("woman",),
    ("hand", "dark skin tone"),
    ("hand", "medium-light skin tone"),
    ("hand",),
    ("person", "dark skin tone"),
    ("couple", "heart"),
    ("family",),
    ("cat", "face"),
    ("cat",),
    ("monkey",),
    ("Animals & Nature",),
    ("heart",),
    ("heart", "red"),
    ("heart", "blue"),
    ("heart", "purple"),
    ("flag",),
    ("Flags",),
    ("face",),
    ("Smileys & Emotion", "face"),
    ("Food & Drink",),
    ("Travel & Places",),
    ("Objects",),
    ("Symbols",),
    ("button",),
)
CENTRE = 8      # the colour measure's central square, in pixels at 32 px


def mean_colours(images: torch.Tensor) -> dict:
    """Mean RGB in 0-255 of (N, 3, H, W) images in [-1, 1], at 32 px (area): the central 8x8 and the whole."""
    x = images if images.shape[-1] == 32 else F.interpolate(images, size=(32, 32), mode="area")
    x = (x.clamp(-1, 1) + 1) * 127.5
    lo = (32 - CENTRE) // 2
    centre = x[:, :, lo:lo + CENTRE, lo:lo + CENTRE].mean(dim=(0, 2, 3))
    return {"centre_rgb": [round(float(v), 1) for v in centre], "image_rgb": [round(float(v), 1) for v in x.mean(dim=(0, 2, 3))]}


def includes_all(logits: torch.Tensor, picked: list[int]) -> torch.Tensor:
    """(N,) bool: the classifier's predicted attributes (logit > 0) include every picked index."""
    return (logits[:, picked] > 0).all(dim=1)


def evaluate_picks(model_dir: Path, classifier_dir: Path | None = None, per_pick: int = 16, sampler: str = "dpm++",
                   steps: int = 20, guidance: float = 2.0, seed: int = 0, picks=PICKS, device: str = "cpu",
                   progress: bool = True, hold: bool = True) -> dict:
    """Per pick: the fraction of ``per_pick`` samples that have every picked attribute (by the classifier),
    beside the same fraction over the real emoji with those attributes; their means over ``picks``; and the
    mean colours. Works on a model or a cascade folder (the cascade's final output is measured)."""
    from tqdm import tqdm
    from .classifier import features_of, load_classifier
    from .metrics import MIN_POSITIVES, VISIBLE_CLASSIFIER_F1
    from ..pipeline import load
    pipe = load(model_dir, device)
    cfg = pipe.base.config
    if not cfg.multi_label:
        raise ValueError(f"{model_dir}: the picks evaluation needs a multi-label (emoji) model")
    clf = load_classifier(Path(classifier_dir or "checkpoints/classifier-emoji"))
    real = load_data(DataConfig(source="emoji", split="all", image_size=32, channels=3))
    real_labels = torch.from_numpy(real.labels) > 0.5
    names = list(cfg.label_names)
    rows, t0 = [], time.time()
    for k, pick in enumerate(tqdm(picks, unit="pick", disable=not progress)):
        idx = [names.index(a) for a in pick]
        gen = pipe.sample(per_pick, sampler=sampler, steps=steps, guidance=guidance, labels=list(pick),
                          seed=seed + 1000 * k, device=device, hold=hold).cpu()
        _, logits = features_of(clf, gen)
        have = real_labels[:, idx].all(dim=1).nonzero().flatten()
        real_imgs = real.batch(have)["image"] if len(have) else None
        real_hit = float(includes_all(features_of(clf, real_imgs)[1], idx).float().mean()) if len(have) else None
        rows.append({"pick": list(pick), "generated": round(float(includes_all(logits, idx).float().mean()), 4),
                     "real": None if real_hit is None else round(real_hit, 4), "real_count": len(have),
                     "colours_generated": mean_colours(gen),
                     "colours_real": mean_colours(real_imgs) if real_imgs is not None else None})
    judged = [r for r in rows if r["real_count"] >= MIN_POSITIVES and r["real"] >= VISIBLE_CLASSIFIER_F1]

    def mean(key, rs):
        vals = [r[key] for r in rs if r[key] is not None]
        return round(float(np.mean(vals)), 4) if vals else None
    return {"model": str(model_dir), "labels_mean": pipe.picks_meaning, "per_pick": per_pick, "sampler": sampler,
            "steps": steps, "guidance": guidance, "seed": seed,
            "held_labels": list(pipe.base.config.sampling.held_labels) if hold else [], "picks": len(rows),
            "generated_mean": mean("generated", rows), "real_mean": mean("real", rows),
            "judgeable_picks": len(judged), "judgeable_rule": f"at least {MIN_POSITIVES} real emoji with the pick, "
            f"the classifier finds it on at least {VISIBLE_CLASSIFIER_F1} of them",
            "generated_mean_judgeable": mean("generated", judged), "real_mean_judgeable": mean("real", judged),
            "sampling_s": round(time.time() - t0, 1), "rows": rows}


def format_table(m: dict) -> str:
    """The per-pick rows as a Markdown table (for docs/models.md and the terminal)."""
    lines = ["| pick | generated | real (count) | centre RGB generated | centre RGB real |",
             "| --- | ---: | ---: | --- | --- |"]
    for r in m["rows"]:
        real = "-" if r["real"] is None else f"{r['real']:.2f} ({r['real_count']})"
        cr = r["colours_real"]["centre_rgb"] if r["colours_real"] else "-"
        lines.append(f"| {' + '.join(r['pick'])} | {r['generated']:.2f} | {real} | "
                     f"{r['colours_generated']['centre_rgb']} | {cr} |")
    lines.append(f"| **mean over {m['picks']} picks** | **{m['generated_mean']:.2f}** | "
                 f"**{m['real_mean']:.2f}** | | |")
    if m["judgeable_picks"]:
        lines.append(f"| **mean over the {m['judgeable_picks']} judgeable picks** | "
                     f"**{m['generated_mean_judgeable']:.2f}** | **{m['real_mean_judgeable']:.2f}** | | |")
    return "\n".join(lines)

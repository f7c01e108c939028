"""Evaluation as users use a multi-label model: a few picked attributes, not a full label set (issue 20).

For each pick in ``PICKS`` (1-3 attributes, as a user ticks them in the app or passes ``--label``), sample
``per_pick`` images and report the fraction whose attributes, as the picks' attribute classifier
(``attributes``, ``checkpoints/classifier-emoji-attrs``) predicts them (logit > 0), include every picked one;
beside it the same fraction for the real emoji that have every picked attribute, by the shipped classifier
and by its k-fold held-out predictions. A pick is judgeable when the classifier recognises each of its
attributes on real emoji it was not trained on (``metrics.pick_verdict``: enough real examples, held-out
recall and balanced accuracy); the others say why not, and only the judgeable ones enter the judgeable mean
(issue 39). ``sheet``: a PNG of 8 samples of every pick, one row each, labelled, to check the numbers by eye.
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
from PIL import Image, ImageDraw, ImageFont

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
                   progress: bool = True, hold: bool = True, sheet: Path | None = None) -> dict:
    """Per pick: the fraction of ``per_pick`` samples that have every picked attribute (by the classifier),
    beside the same fraction over the real emoji with those attributes (by the shipped classifier, and by its
    k-fold held-out predictions where the classifier folder has them), whether the classifier can judge the
    pick (``metrics.pick_verdict``: every attribute recognised on held-out real emoji) and why not; the means
    over all picks and over the judgeable ones; the mean colours. ``sheet``: also write a PNG of the first
    ``SHEET_CELLS`` samples of every pick, one row each (``picks_sheet``). Works on a model or a cascade
    folder (the cascade's final output is measured)."""
    from tqdm import tqdm
    from .attributes import ATTRS_CLASSIFIER
    from .metrics import JUDGE_MIN_BALANCED, JUDGE_MIN_POSITIVES, JUDGE_MIN_RECALL
    from ..pipeline import load
    pipe = load(model_dir, device)
    cfg = pipe.base.config
    if not cfg.multi_label:
        raise ValueError(f"{model_dir}: the picks evaluation needs a multi-label (emoji) model")
    judge = _Judge(Path(classifier_dir or ATTRS_CLASSIFIER))
    rows, shown, t0 = [], [], time.time()
    for k, pick in enumerate(tqdm(picks, unit="pick", disable=not progress)):
        gen = pipe.sample(per_pick, sampler=sampler, steps=steps, guidance=guidance, labels=list(pick),
                          seed=seed + 1000 * k, device=device, hold=hold).cpu()
        rows.append(judge.row(pick, gen))
        shown.append(gen[:SHEET_CELLS])
    judged = [r for r in rows if r["judgeable"]]

    def mean(key, rs):
        vals = [r[key] for r in rs if r.get(key) is not None]
        return round(float(np.mean(vals)), 4) if vals else None
    m = {"model": str(model_dir), "classifier": str(judge.folder), "labels_mean": pipe.picks_meaning,
         "per_pick": per_pick, "sampler": sampler, "steps": steps, "guidance": guidance, "seed": seed,
         "held_labels": list(pipe.base.config.sampling.held_labels) if hold else [], "picks": len(rows),
         "generated_mean": mean("generated", rows), "real_mean": mean("real", rows),
         "judgeable_picks": len(judged), "judgeable_rule": f"every picked attribute has at least "
         f"{JUDGE_MIN_POSITIVES} real emoji, and on them, held out of the classifier's training (k-fold), its "
         f"recall is at least {JUDGE_MIN_RECALL} and its balanced accuracy at least {JUDGE_MIN_BALANCED}",
         "generated_mean_judgeable": mean("generated", judged), "real_mean_judgeable": mean("real", judged),
         "real_heldout_mean_judgeable": mean("real_heldout", judged),
         "sampling_s": round(time.time() - t0, 1), "rows": rows}
    if sheet is not None:
        picks_sheet(shown, [_sheet_label(r) for r in rows]).save(sheet)
        m["sheet"] = str(sheet)
    return m


class _Judge:
    """The classifier of the picks evaluation, its held-out scores and predictions, and the real emoji."""

    def __init__(self, folder: Path):
        from .attributes import HELDOUT_FILE
        from .classifier import load_classifier
        from ..checkpoint import read_json
        self.folder, self.clf = folder, load_classifier(folder)
        training = read_json(folder / "training.json") if (folder / "training.json").is_file() else {}
        self.scores = training.get("heldout_per_attribute", {})
        self.real = load_data(DataConfig(source="emoji", split="all", image_size=32, channels=3))
        self.real_labels = torch.from_numpy(self.real.labels) > 0.5
        self.heldout = None
        if (folder / HELDOUT_FILE).is_file():
            from safetensors.torch import load_file
            self.heldout = load_file(str(folder / HELDOUT_FILE))["predicted"].bool()
            if self.heldout.shape != self.real_labels.shape:
                raise ValueError(f"{folder / HELDOUT_FILE}: {tuple(self.heldout.shape)} predictions, but the emoji "
                                 f"data set has {tuple(self.real_labels.shape)} labels: retrain the classifier")

    def row(self, pick: tuple[str, ...], gen: torch.Tensor) -> dict:
        """The per-pick record of samples ``gen`` (N, 3, H, W) in [-1, 1] drawn for ``pick``."""
        from .classifier import features_of
        from .metrics import pick_verdict
        idx = [list(self.clf.cfg.label_names).index(a) for a in pick]
        have = self.real_labels[:, idx].all(dim=1).nonzero().flatten()
        real_imgs = self.real.batch(have)["image"] if len(have) else None

        def hit(logits):
            return round(float(includes_all(logits, idx).float().mean()), 4)
        why_not = pick_verdict(pick, self.scores)
        return {"pick": list(pick), "generated": hit(features_of(self.clf, gen)[1]),
                "real": hit(features_of(self.clf, real_imgs)[1]) if len(have) else None, "real_count": len(have),
                "real_heldout": (hit(self.heldout[have].float() * 2 - 1) if self.heldout is not None and len(have)
                                 else None),
                "judgeable": not why_not, "not_judgeable": why_not,
                "colours_generated": mean_colours(gen),
                "colours_real": mean_colours(real_imgs) if real_imgs is not None else None}


SHEET_CELLS = 8         # samples shown per pick
SHEET_CELL = 64         # pixels per sample on the sheet
SHEET_LABEL = 260       # the label strip at each row's left, pixels
SHEET_PAD = 2


def _sheet_label(r: dict) -> str:
    """The pick, its score (generated, real), and why it cannot be judged, if so (clipped to the strip)."""
    real = "-" if r["real"] is None else f"{r['real']:.2f}"
    text = f"{' + '.join(r['pick'])}\ngenerated {r['generated']:.2f}, real {real}"
    return text if r["judgeable"] else f"{text}\nnot judgeable: {r['not_judgeable']}"


def picks_sheet(images: list[torch.Tensor], labels: list[str], cells: int = SHEET_CELLS, cell: int = SHEET_CELL,
                label_width: int = SHEET_LABEL, pad: int = SHEET_PAD) -> Image.Image:
    """One row per pick: its label (PIL text) in a white strip of ``label_width`` px, then up to ``cells``
    samples of ``images[row]`` ((n, C, H, W) in [-1, 1]), each resized to ``cell`` px, ``pad`` px apart (a
    row with fewer samples leaves its last cells white). Size: (label_width + cells * (cell + pad) + pad) x
    (rows * (cell + pad) + pad)."""
    from ..images import to_pil
    sheet = Image.new("RGB", (label_width + cells * (cell + pad) + pad, len(images) * (cell + pad) + pad), "white")
    font = _font(max(10, cell // 5))
    for r, (x, text) in enumerate(zip(images, labels)):
        top = pad + r * (cell + pad)
        strip = Image.new("RGB", (label_width - pad, cell), "white")      # the text is clipped to its strip
        ImageDraw.Draw(strip).multiline_text((2, 2), text, fill="black", font=font, spacing=2)
        sheet.paste(strip, (pad, top))
        for c, img in enumerate(x[:cells]):
            tile = to_pil(img).convert("RGB")
            method = Image.Resampling.NEAREST if tile.width <= cell else Image.Resampling.BOX
            sheet.paste(tile.resize((cell, cell), method), (label_width + pad + c * (cell + pad), top))
    return sheet


def _font(size: int):
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size=size)


def format_table(m: dict) -> str:
    """The per-pick rows as a Markdown table (for docs/models.md and the terminal)."""
    lines = ["| pick | generated | real (count) | real held-out | judgeable | centre RGB generated | centre RGB real |",
             "| --- | ---: | ---: | ---: | --- | --- | --- |"]

    def num(v):
        return "-" if v is None else f"{v:.2f}"
    for r in m["rows"]:
        real = "-" if r["real"] is None else f"{r['real']:.2f} ({r['real_count']})"
        cr = r["colours_real"]["centre_rgb"] if r["colours_real"] else "-"
        judged = "yes" if r.get("judgeable") else f"no: {r.get('not_judgeable') or 'no verdict on file'}"
        lines.append(f"| {' + '.join(r['pick'])} | {r['generated']:.2f} | {real} | {num(r.get('real_heldout'))} | "
                     f"{judged} | {r['colours_generated']['centre_rgb']} | {cr} |")
    lines.append(f"| **mean over {m['picks']} picks** | **{m['generated_mean']:.2f}** | "
                 f"**{num(m['real_mean'])}** | | | | |")
    if m["judgeable_picks"]:
        lines.append(f"| **mean over the {m['judgeable_picks']} judgeable picks** | "
                     f"**{m['generated_mean_judgeable']:.2f}** | **{num(m['real_mean_judgeable'])}** | "
                     f"**{num(m.get('real_heldout_mean_judgeable'))}** | | | |")
    return "\n".join(lines)

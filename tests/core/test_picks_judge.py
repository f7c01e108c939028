"""Issue 39: an evaluation that can judge every pick it lists. The held-out scores of the picks' attribute
classifier (recall, specificity, balanced accuracy, on hand-counted confusions), the rule for which picks it
can judge (on a hand-made table), k-fold splits, the colour-keeping augmentation, and the sheet of samples."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion_core.evaluation.attributes import augment, kfold_indices
from diffusion_core.evaluation.metrics import (JUDGE_MIN_BALANCED, JUDGE_MIN_POSITIVES, JUDGE_MIN_RECALL,
                                               attribute_scores, pick_verdict)
from diffusion_core.evaluation.picks import picks_sheet

ROOT = Path(__file__).resolve().parents[2]
ATTRS = ROOT / "checkpoints/classifier-emoji-attrs"


def _confusion(tp: int, fn: int, fp: int, tn: int) -> tuple[list[bool], list[bool]]:
    """(pred, truth) lists with exactly these counts."""
    pred = [True] * tp + [False] * fn + [True] * fp + [False] * tn
    truth = [True] * tp + [True] * fn + [False] * fp + [False] * tn
    return pred, truth


def test_scores_match_hand_counted_confusions():
    # attribute 0: tp 3, fn 1, fp 2, tn 4 -> recall 3/4, specificity 4/6, balanced (3/4 + 2/3) / 2 = 17/24,
    # precision 3/5, F1 2*3 / (2*3 + 2 + 1) = 2/3; attribute 1: never present, one false alarm in 10 -> recall
    # 0 (no positives), specificity 9/10, precision 0; attribute 2: all 10 right, 4 positives
    cols = [_confusion(3, 1, 2, 4), _confusion(0, 0, 1, 9), _confusion(4, 0, 0, 6)]
    pred = torch.tensor([c[0] for c in cols]).T
    truth = torch.tensor([c[1] for c in cols]).T
    s = attribute_scores(pred, truth)
    assert s["positives"].tolist() == [4, 0, 4]
    assert [s[k].tolist() for k in ("tp", "fn", "fp", "tn")] == [[3, 0, 4], [1, 0, 0], [2, 1, 0], [4, 9, 6]]
    want = {"recall": [3 / 4, 0.0, 1.0], "specificity": [4 / 6, 9 / 10, 1.0],
            "balanced_accuracy": [17 / 24, 9 / 20, 1.0], "precision": [3 / 5, 0.0, 1.0], "f1": [2 / 3, 0.0, 1.0]}
    for key, values in want.items():
        assert s[key].tolist() == pytest.approx(values, abs=1e-12), key


def _row(positives, recall, balanced):
    return {"positives": positives, "recall": recall, "balanced_accuracy": balanced}


# a hand-made held-out table: which attributes the classifier recognises, and how many real emoji show them
TABLE = {"heart": _row(139, 0.96, 0.97), "red": _row(12, JUDGE_MIN_RECALL, 0.95),
         "blue": _row(JUDGE_MIN_POSITIVES, 1.0, JUDGE_MIN_BALANCED), "purple": _row(3, 1.0, 1.0),
         "cat": _row(12, 0.7, 0.85), "monkey": _row(5, 0.95, 0.8), "woman": _row(625, 0.99, 0.99)}


def test_a_pick_is_judgeable_when_each_attribute_is():
    assert JUDGE_MIN_POSITIVES == 5 and JUDGE_MIN_RECALL == 0.9 and JUDGE_MIN_BALANCED == 0.9
    # each attribute recognised on its own: judgeable, whether or not real emoji have them together
    assert pick_verdict(("heart", "red"), TABLE) == ""          # red exactly at the recall bound
    assert pick_verdict(("heart", "blue"), TABLE) == ""         # blue exactly at the count and balance bounds
    assert pick_verdict(("woman",), TABLE) == ""
    # too few real examples, whatever the rates
    assert pick_verdict(("heart", "purple"), TABLE) == "purple has 3 real examples (fewer than 5)"
    assert pick_verdict(("cat",), TABLE) == "classifier recall 0.700 on cat (below 0.9)"
    assert pick_verdict(("monkey",), TABLE) == "classifier balanced accuracy 0.800 on monkey (below 0.9)"
    assert pick_verdict(("dog",), TABLE) == "the classifier has no held-out scores for dog"
    # every failing attribute is named, in the pick's order; a judgeable one adds nothing
    assert pick_verdict(("cat", "heart", "purple"), TABLE) == ("classifier recall 0.700 on cat (below 0.9); "
                                                             "purple has 3 real examples (fewer than 5)")
    assert pick_verdict(("heart", "cat"), TABLE) == "classifier recall 0.700 on cat (below 0.9)"


def test_kfold_holds_out_each_index_exactly_once():
    for n, k in ((23, 5), (3655, 5), (10, 10), (7, 2)):
        folds = kfold_indices(n, k, seed=3)
        assert len(folds) == k
        every = torch.cat(folds)
        assert sorted(every.tolist()) == list(range(n))             # covered once: no index twice, none missing
        sizes = [len(f) for f in folds]
        assert max(sizes) - min(sizes) <= 1
    assert [f.tolist() for f in kfold_indices(23, 5, 0)] == [f.tolist() for f in kfold_indices(23, 5, 0)]
    assert [f.tolist() for f in kfold_indices(23, 5, 0)] != [f.tolist() for f in kfold_indices(23, 5, 1)]


def test_augmentation_moves_and_zooms_but_keeps_colours():
    x = torch.ones(4, 3, 32, 32)                     # white background
    x[:, 0, 12:20, 12:20] = 1.0
    x[:, 1:, 12:20, 12:20] = -1.0                    # a red square in the middle
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(augment(x, g, 0.0, 0.0), x, atol=1e-5)      # no shift, no zoom: the image itself
    y = augment(x, g, 3.0, 0.15)
    assert y.min() >= -1 - 1e-5 and y.max() <= 1 + 1e-5
    assert torch.allclose(y[:, :, 0, :], torch.ones_like(y[:, :, 0, :]), atol=1e-5)   # the border stays white
    assert (y[:, 0] >= 1 - 1e-5).all()                # red stays full: no colour change
    assert torch.allclose(y[:, 1], y[:, 2], atol=1e-6)
    assert not torch.allclose(y, x, atol=1e-3)         # but the square moved or changed size


def test_sheet_rows_of_eight_cells_beside_a_label_strip():
    cell, label, pad = 16, 40, 2
    colours = torch.rand(3, 9, 3) * 2 - 1                 # row r, sample c: a solid colour
    images = [colours[r][:, :, None, None].expand(9, 3, 8, 8).clone() for r in range(3)]
    images[2] = images[2][:5]                               # a row with only 5 samples
    sheet = picks_sheet(images, ["cat", "heart + red\n0.50", "monkey"], cells=8, cell=cell, label_width=label,
                        pad=pad)
    assert sheet.size == (label + 8 * (cell + pad) + pad, 3 * (cell + pad) + pad)
    px = torch.from_numpy(np.array(sheet)).float()
    want8 = ((colours + 1) * 127.5).round()
    for r in range(3):
        top = pad + r * (cell + pad)
        for c in range(8):
            left = label + pad + c * (cell + pad)
            tile = px[top:top + cell, left:left + cell]
            expect = want8[r, c] if r < 2 or c < 5 else torch.full((3,), 255.0)   # missing samples: white
            assert (tile == expect).all(), (r, c)
            assert (px[top:top + cell, left + cell:left + cell + pad] == 255).all()   # the gap after it is white
        strip = px[top:top + cell, :label]
        assert (strip < 128).any(), f"row {r}: no text in its label strip"
    assert (px[:, label:label + pad] == 255).all()        # the label strip ends before the first cell


def test_sheet_scales_samples_to_the_cell():
    x = torch.zeros(2, 3, 32, 32)
    x[:, :, :16] = 1.0                                     # top half white, bottom half grey (0 -> 128)
    sheet = picks_sheet([x], ["face"], cells=8, cell=64, label_width=100, pad=2)
    px = torch.from_numpy(np.array(sheet)).float()
    left, top = 102, 2
    assert (px[top:top + 32, left:left + 64] == 255).all() and (px[top + 32:top + 64, left:left + 64] == 128).all()


@pytest.mark.skipif(not (ATTRS / "training.json").is_file(), reason="the picks' attribute classifier not trained")
def test_evaluate_picks_reports_which_picks_it_can_judge(tmp_path, make_model):
    from diffusion_core.checkpoint import read_json
    from diffusion_core.data.emoji import ATTRIBUTES
    from diffusion_core.evaluation.picks import SHEET_CELL, SHEET_CELLS, SHEET_LABEL, SHEET_PAD, evaluate_picks, format_table
    make_model(tmp_path / "m", unet=dict(num_labels=len(ATTRIBUTES), label_mask=True, in_channels=3, out_channels=3,
                                         image_size=32), label_names=ATTRIBUTES, multi_label=True)
    picks = (("woman",), ("heart", "purple"), ("Flags",))
    m = evaluate_picks(tmp_path / "m", None, per_pick=2, steps=1, picks=picks, progress=False,
                       sheet=tmp_path / "sheet.png")
    heldout = read_json(ATTRS / "training.json")["heldout_per_attribute"]
    rows = {tuple(r["pick"]): r for r in m["rows"]}
    assert Path(m["classifier"]).resolve() == ATTRS.resolve()      # the default: the picks' classifier
    for pick, r in rows.items():
        assert r["judgeable"] == (pick_verdict(pick, heldout) == "") and r["not_judgeable"] == pick_verdict(pick, heldout)
        assert r["real_heldout"] is None or 0 <= r["real_heldout"] <= 1
    assert not rows[("heart", "purple")]["judgeable"]          # 3 purple emoji: too few to judge
    assert "purple has 3 real examples" in rows[("heart", "purple")]["not_judgeable"]
    judged = [r for r in m["rows"] if r["judgeable"]]
    assert m["judgeable_picks"] == len(judged)
    if judged:      # the mean over the judgeable picks leaves the others out
        assert m["generated_mean_judgeable"] == pytest.approx(sum(r["generated"] for r in judged) / len(judged),
                                                               abs=1e-4)
    table = format_table(m)
    line = next(t for t in table.splitlines() if t.startswith("| heart + purple |"))
    assert "| no: " in line and "purple has 3 real examples" in line
    woman = next(t for t in table.splitlines() if t.startswith("| woman |"))
    assert ("| yes |" in woman) == rows[("woman",)]["judgeable"]
    from PIL import Image
    with Image.open(tmp_path / "sheet.png") as im:
        assert im.size == (SHEET_LABEL + SHEET_CELLS * (SHEET_CELL + SHEET_PAD) + SHEET_PAD,
                           len(picks) * (SHEET_CELL + SHEET_PAD) + SHEET_PAD)
    assert m["sheet"] == str(tmp_path / "sheet.png")

"""Procedural stickman -> figure pairs (diffusion_core.data.pose) and the pose metrics."""
import numpy as np
import pytest
from PIL import Image

from diffusion_core.data import pose as dp
from diffusion_core.evaluation import pose_metrics as pm


@pytest.fixture(scope="module")
def pairs():
    return dp.make_pairs(50, 32, seed=11, style="random")


def test_make_pairs_deterministic_and_independent_of_n():
    f1, s1 = dp.make_pairs(6, 32, seed=3)
    f2, s2 = dp.make_pairs(6, 32, seed=3)
    assert np.array_equal(f1, f2) and np.array_equal(s1, s2)
    f3, s3 = dp.make_pairs(3, 32, seed=3)
    assert np.array_equal(f3, f1[:3]) and np.array_equal(s3, s1[:3])
    f4, s4 = dp.make_pairs(6, 32, seed=4)
    assert not np.array_equal(f4, f1) and not np.array_equal(s4, s1)
    # the pose and figure of pair (seed, i) do not depend on the stickman style
    fc, _ = dp.make_pairs(3, 32, seed=3, style="clean")
    assert np.array_equal(fc, f3)


@pytest.mark.parametrize("size", [32, 64])
def test_shapes_dtypes_ranges(size):
    f, s = dp.make_pairs(4, size, seed=0)
    assert f.shape == (4, size, size, 3) and f.dtype == np.uint8
    assert s.shape == (4, size, size, 1) and s.dtype == np.uint8
    for i in range(4):
        assert s[i].max() >= 220 and s[i].min() <= 100     # light paper, dark strokes
        assert f[i].std() > 5                                # not a blank figure


@pytest.mark.parametrize("style", dp.STYLES)
def test_sticks_are_dark_on_light(style):
    _, s = dp.make_pairs(40, 32, seed=5, style=style)
    assert s.mean() > 180
    assert (s.reshape(40, -1).mean(1) > 150).all()
    img = dp.draw_stickman(dp.random_pose(np.random.default_rng(0)), 48, np.random.default_rng(1), style)
    assert img.mode == "L" and img.size == (48, 48)


def test_random_pose_plausible():
    rng = np.random.default_rng(0)
    for k in range(60):
        kind = dp.POSE_KINDS[k % len(dp.POSE_KINDS)]
        p = dp.random_pose(rng, kind)
        assert tuple(p) == dp.JOINTS
        xy = np.array([p[j] for j in dp.JOINTS])
        assert (xy > 0).all() and (xy < 1).all()
        assert p["head"][1] < p["neck"][1] < p["pelvis"][1]          # upright-ish
        height = xy[:, 1].max() - xy[:, 1].min()
        assert 0.4 < height < 0.9
        torso = np.hypot(*np.subtract(p["pelvis"], p["neck"]))
        for a, b in dp.LIMBS[2:]:                                    # limbs in proportion to the torso
            assert 0.4 < np.hypot(*np.subtract(p[a], p[b])) / torso < 0.95
    with pytest.raises(ValueError):
        dp.random_pose(rng, "flying")


def test_figures_vary_for_the_same_pose():
    pose = dp.random_pose(np.random.default_rng(7))
    imgs = [np.asarray(dp.draw_figure(pose, 32, np.random.default_rng(s)), dtype=float) for s in range(6)]
    for a in range(6):
        assert imgs[a].shape == (32, 32, 3)
        for b in range(a + 1, 6):
            assert np.abs(imgs[a] - imgs[b]).mean() > 5
    # ... but the silhouette follows the pose: the masks overlap strongly
    masks = [pm.figure_mask(im) for im in imgs]
    inter = np.logical_and(masks[0], masks[1]).sum()
    union = np.logical_or(masks[0], masks[1]).sum()
    assert inter / union > 0.5


def test_pose_adherence_matching_vs_mismatched(pairs):
    f, s = pairs
    n = len(f)
    match = np.array([pm.pose_adherence(f[i], s[i]) for i in range(n)])
    mism = np.array([pm.pose_adherence(f[(i + 7) % n], s[i]) for i in range(n)])
    assert np.nanmean(match) >= 0.9
    assert np.nanmean(mism) < 0.75
    assert np.nanmean(match) - np.nanmean(mism) > 0.25
    assert 0.0 <= np.nanmin(mism) and np.nanmax(match) <= 1.0


def test_pose_adherence_handdrawn_and_resize():
    f, s = dp.make_pairs(30, 32, seed=2, style="handdrawn")
    match = np.mean([pm.pose_adherence(f[i], s[i]) for i in range(30)])
    assert match >= 0.8
    # a 256 px drawing is resized to the figure's size
    pose = dp.random_pose(np.random.default_rng(9))
    big = np.asarray(dp.draw_stickman(pose, 128, np.random.default_rng(1), "clean"))
    fig = np.asarray(dp.draw_figure(pose, 32, np.random.default_rng(2)))
    assert pm.pose_adherence(fig, big) >= 0.9


def test_masks():
    assert not pm.pose_mask(np.full((16, 16), 255, np.uint8)).any()
    assert np.isnan(pm.pose_adherence(np.zeros((16, 16, 3), np.uint8), np.full((16, 16, 1), 250, np.uint8)))
    assert not pm.figure_mask(np.full((16, 16, 3), 200, np.uint8)).any()
    stick = np.full((16, 16), 255, np.uint8)
    stick[4:12, 7:9] = 150                                   # faint pencil still counts
    m = pm.pose_mask(stick)
    assert m.sum() == 16 and m[4:12, 7:9].all()
    fig = np.full((16, 16, 3), 230, np.uint8)
    fig[3:13, 6:10] = (200, 40, 40)
    assert pm.figure_mask(fig).sum() == 40
    assert pm.pose_adherence(fig, stick) == 1.0
    assert pm._thin(np.ones((7, 7), bool)).sum() <= 3          # thinning shrinks blobs


def test_handdrawn_differs_from_clean():
    _, clean = dp.make_pairs(10, 64, seed=1, style="clean")
    _, hand = dp.make_pairs(10, 64, seed=1, style="handdrawn")
    _, rand = dp.make_pairs(10, 64, seed=1, style="random")
    diff = np.abs(clean.astype(float) - hand.astype(float)).mean(axis=(1, 2, 3))
    assert (diff > 3).all()
    assert not np.array_equal(rand, clean)
    with pytest.raises(ValueError):
        dp.make_pairs(1, 32, style="oil-painting")


def test_write_examples(tmp_path):
    paths = dp.write_examples(tmp_path / "ex", n=3, size=96, seed=5)
    assert [p.name for p in paths] == ["pose_01.png", "pose_02.png", "pose_03.png"]
    for p in paths:
        img = Image.open(p)
        assert img.mode == "L" and img.size == (96, 96)
        a = np.asarray(img)
        assert a.mean() > 200 and a.min() < 60



def test_pose_precision_matching_vs_blob(pairs):
    """Precision: a figure of the drawn pose keeps its pixels near the strokes; a full-frame blob (which
    covers every stroke, so its adherence is 1) does not."""
    f, s = pairs
    n = len(f)
    match = np.nanmean([pm.pose_precision(f[i], s[i]) for i in range(n)])
    mism = np.nanmean([pm.pose_precision(f[(i + 7) % n], s[i]) for i in range(n)])
    assert match >= 0.8 and match - mism > 0.15
    blob = np.full_like(f[0], 200)
    blob[2:-2, 2:-2] = (20, 30, 200)
    assert pm.pose_adherence(blob, s[0]) > 0.95
    assert pm.pose_precision(blob, s[0]) < 0.6
    assert np.isnan(pm.pose_precision(np.full_like(f[0], 200), s[0]))

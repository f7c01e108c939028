"""Rendering a pose: ``draw_stickman`` (stickman.py: the conditioning image) and ``draw_figure`` (figure.py: the
target); ``make_pairs`` renders deterministic batches, ``write_examples`` the app's drawings."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .figure import MIN_BG_DISTANCE, draw_figure
from .poses import STYLES, random_pose
from .stickman import draw_stickman

__all__ = ["MIN_BG_DISTANCE", "draw_figure", "draw_stickman", "make_pairs", "write_examples"]


# ----------------------------------------------------------------------------------------------
# datasets
# ----------------------------------------------------------------------------------------------

def make_pairs(n: int, size: int = 32, seed: int = 0, style: str = "random") -> tuple[np.ndarray, np.ndarray]:
    """``n`` training pairs: ``figures`` uint8 (n, size, size, 3), ``sticks`` uint8 (n, size, size, 1).

    Pair i is drawn from ``np.random.default_rng([seed, i])`` only, so it does not depend on ``n``.
    That generator seeds three sub-generators (pose, stickman, figure), so for a given (seed, i)
    the pose and the figure are the same whatever the stickman ``style``.
    """
    if style not in STYLES:
        raise ValueError(f"unknown stickman style {style!r}; expected one of {STYLES}")
    figures = np.empty((n, size, size, 3), np.uint8)
    sticks = np.empty((n, size, size, 1), np.uint8)
    for i in range(n):
        s_pose, s_stick, s_fig = np.random.default_rng([seed, i]).integers(0, 2**63 - 1, 3)
        pose = random_pose(np.random.default_rng(s_pose))
        sticks[i, :, :, 0] = np.asarray(draw_stickman(pose, size, np.random.default_rng(s_stick), style))
        figures[i] = np.asarray(draw_figure(pose, size, np.random.default_rng(s_fig)))
    return figures, sticks


# ----------------------------------------------------------------------------------------------
# examples for the app
# ----------------------------------------------------------------------------------------------

def write_examples(folder: str | Path = "examples/stickmen", n: int = 8, size: int = 256, seed: int = 1234) -> list[Path]:
    """Write ``n`` hand-drawn-style stickman drawings (``"L"``, black on white, ``size`` px) as
    ``pose_01.png``, ``pose_02.png``, ... into ``folder``; pose kinds cycle through a varied list and
    the pen width is 1.2-3.5% of ``size`` (3-9 px at 256, like a sketch-pad brush).
    Returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    kinds = ("standing", "arms_up", "walking", "kicking", "jumping", "waving", "sitting", "arms_out",
             "running", "hands_on_hips", "crouching", "dancing")
    paths = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        pose = random_pose(rng, kinds[i % len(kinds)])
        img = draw_stickman(pose, size, rng, "handdrawn", stroke_width=size * rng.uniform(0.012, 0.035))
        p = folder / f"pose_{i + 1:02d}.png"
        img.save(p)
        paths.append(p)
    return paths

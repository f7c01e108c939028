"""How well a figure follows a stickman drawing: the masks of both (dark strokes; pixels away from the
background colour), the drawing's one-pixel skeleton (Zhang-Suen thinning), adherence (skeleton covered by
the figure) and precision (figure pixels near a stroke). Used by ``evaluate`` for the pose models."""
from __future__ import annotations

import numpy as np
from PIL import Image


def _gray(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 3:
        a = a[..., 0] if a.shape[-1] == 1 else a[..., :3].astype(np.float32).mean(-1)
    if a.ndim != 2:
        raise ValueError(f"expected an (H, W), (H, W, 1) or (H, W, 3) image, got shape {a.shape}")
    return a.astype(np.float32)


def pose_mask(stick: np.ndarray, threshold: int = 128) -> np.ndarray:
    """Bool (H, W): the dark stroke pixels of a stickman drawing.

    The grey image (channels averaged) is first stretched so that its median (the paper) maps to
    255 and its darkest pixel to 0 - so faint pencil, grey ink and thin antialiased strokes count
    too - and then thresholded: stroke = value < ``threshold``. A blank page gives an empty mask.
    """
    g = _gray(stick)
    lo, bg = float(g.min()), float(np.median(g))
    if bg - lo < 16:                          # no visible strokes
        return np.zeros(g.shape, bool)
    return (g - lo) * (255.0 / (bg - lo)) < threshold


def figure_mask(figure: np.ndarray, threshold: float = 35.0) -> np.ndarray:
    """Bool (H, W): pixels whose RGB colour is more than ``threshold`` (L2, 0..255 scale) away from
    the background colour, estimated as the per-channel median of the image's border pixels."""
    f = np.asarray(figure).astype(np.float32)
    if f.ndim == 2:
        f = f[..., None]
    border = np.concatenate([f[0], f[-1], f[:, 0], f[:, -1]], 0)
    bg = np.median(border, axis=0)
    return np.sqrt(((f - bg) ** 2).sum(-1)) > threshold


def _thin(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning (vectorised): one-pixel-wide skeleton of a bool mask."""
    img = np.pad(mask.astype(np.uint8), 1)
    while True:
        changed = False
        for step in (0, 1):
            c = img[1:-1, 1:-1]
            nb = [img[:-2, 1:-1], img[:-2, 2:], img[1:-1, 2:], img[2:, 2:],     # P2..P5
                  img[2:, 1:-1], img[2:, :-2], img[1:-1, :-2], img[:-2, :-2]]   # P6..P9
            B = sum(x.astype(np.int16) for x in nb)
            A = sum(((nb[k] == 0) & (nb[(k + 1) % 8] == 1)).astype(np.int16) for k in range(8))
            p2, p4, p6, p8 = nb[0], nb[2], nb[4], nb[6]
            if step == 0:
                m = ((p2 & p4 & p6) == 0) & ((p4 & p6 & p8) == 0)
            else:
                m = ((p2 & p4 & p8) == 0) & ((p2 & p6 & p8) == 0)
            rem = (c == 1) & (B >= 2) & (B <= 6) & (A == 1) & m
            if rem.any():
                c[rem] = 0
                changed = True
        if not changed:
            return img[1:-1, 1:-1].astype(bool)


def _dilate(mask: np.ndarray, r: int = 1) -> np.ndarray:
    out = mask.copy()
    for _ in range(r):
        p = np.pad(out, 1)
        out = (p[1:-1, 1:-1] | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]
               | p[:-2, :-2] | p[:-2, 2:] | p[2:, :-2] | p[2:, 2:])
    return out


def _stick_like(stick: np.ndarray, fig: np.ndarray) -> np.ndarray:
    """The drawing at the figure's height and width (LANCZOS-resized where they differ)."""
    st = np.asarray(stick)
    if st.shape[:2] != fig.shape[:2]:
        st = np.asarray(Image.fromarray(_gray(st).clip(0, 255).astype(np.uint8)).resize(
            (fig.shape[1], fig.shape[0]), Image.LANCZOS))
    return st


def pose_adherence(figure: np.ndarray, stick: np.ndarray, dilate: int = 0) -> float:
    """How well a figure follows a stickman drawing: the fraction of the drawing's skeleton covered
    by the figure.

    skeleton  = Zhang-Suen thinning of ``pose_mask(stick)`` (the one-pixel centre lines of the
                strokes, so thick and thin strokes weigh the same);
    covered   = ``figure_mask(figure)`` dilated by ``dilate`` pixels (3x3, default 1: tolerance for
                antialiasing and the rounding of thin limbs);
    adherence = |skeleton & covered| / |skeleton| in [0, 1]; 1.0 = every stroke lies on the body.

    ``figure``: (H, W, 3) uint8; ``stick``: (H, W) or (H, W, 1) uint8 of the same H, W (resized
    with LANCZOS otherwise). Returns NaN for a drawing without strokes. A figure rendered from the
    drawing's own pose scores ~0.97+ and one of an unrelated pose ~0.4 (see the tests).
    """
    fig = np.asarray(figure)
    st = _stick_like(stick, fig)
    skel = _thin(pose_mask(st))
    if not skel.any():
        return float("nan")
    cover = _dilate(figure_mask(fig), dilate)
    return float(cover[skel].mean())


def pose_precision(figure: np.ndarray, stick: np.ndarray, reach: int | None = None) -> float:
    """The other direction of :func:`pose_adherence`: the fraction of the figure's pixels (``figure_mask``)
    that lie within ``reach`` pixels (default: 1/16 of the image side, for clothing and hair around the
    limbs) of the drawing's strokes. Adherence alone rewards a figure that covers everything; this term
    penalises body parts (or background blotches) where nothing was drawn. NaN for an empty figure."""
    fig = np.asarray(figure)
    st = _stick_like(stick, fig)
    fm = figure_mask(fig)
    if not fm.any():
        return float("nan")
    near = _dilate(pose_mask(st), reach if reach is not None else max(1, fig.shape[0] // 16))
    return float(near[fm].mean())


def paired_difference(score, figures_a, figures_b, sticks, n: int) -> dict:
    """``score(figures_a[i], sticks[i]) - score(figures_b[i], sticks[i])`` over the first ``n`` pairs (drawings
    without strokes left out): the mean, its standard error, and how many pairs score lower / higher with a."""
    d = np.array([score(figures_a[i], sticks[i]) - score(figures_b[i], sticks[i]) for i in range(n)])
    d = d[np.isfinite(d)]
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return {"mean_difference": float(d.mean()), "standard_error": se, "lower": int((d < 0).sum()),
            "higher": int((d > 0).sum()), "n": int(len(d))}


def mean_over_pairs(score, figures, sticks, n: int, mean=np.mean) -> float:
    """``mean`` of ``score(figures[i], sticks[i])`` over the first ``n`` pairs (pose adherence / precision)."""
    return float(mean([score(figures[i], sticks[i]) for i in range(n)]))

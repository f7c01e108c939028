"""Stickman drawings, the conditioning images: dark strokes on a light background, in the "clean", "random"
(training) and held-out "handdrawn" styles. The order of the random draws is the data: a change of order is
a different data set."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .poses import HEAD_RADIUS, JOINTS, LIMBS, STYLES, Pose


def _line(draw: ImageDraw.ImageDraw, pts: np.ndarray, fill, width: float, caps: bool = True) -> None:
    w = max(1, int(round(width)))
    draw.line([tuple(q) for q in pts.tolist()], fill=fill, width=w, joint="curve" if len(pts) > 2 else None)
    if caps and w >= 3:
        r = w / 2.0
        for q in (pts[0], pts[-1]):
            draw.ellipse((q[0] - r, q[1] - r, q[0] + r, q[1] + r), fill=fill)


def _head_geometry(pose: Pose):
    head = np.asarray(pose["head"], dtype=float)
    neck = np.asarray(pose["neck"], dtype=float)
    d = np.linalg.norm(neck - head)
    return head, neck, max(d, 1e-6)


def _head(dr, c, rr, ink, dot: bool, w: float) -> None:
    """The head at ``c`` (pixels), radius ``rr``: a filled dot or a ring of stroke width ``w``."""
    if dot:
        dr.ellipse((c[0] - rr, c[1] - rr, c[0] + rr, c[1] + rr), fill=ink)
    else:
        dr.ellipse((c[0] - rr, c[1] - rr, c[0] + rr, c[1] + rr), outline=ink, width=max(1, int(round(w))))


def draw_stickman(pose: Pose, size: int, rng: np.random.Generator, style: str = "random",
                  stroke_width: float | None = None) -> Image.Image:
    """Render ``pose`` as a stickman drawing: an ``"L"`` image, light background, dark strokes.

    Drawn at 4x resolution and downsampled with LANCZOS (antialiased strokes). ``stroke_width``
    (output pixels) overrides the style's stroke width.

    ``"clean"``:     black (0) straight lines on white, width ``max(1.25, size / 24)`` px, ring head.
    ``"random"``:    the training style: stroke width log-uniform in [1, max(1, size/10)] px, grey
                     level 0..80, background white (70%) or 225..255 (paper), ring (65%) or filled
                     dot head of random radius, smooth wobble, joint offsets, occasional overshoot.
    ``"handdrawn"``: held-out style: base width log-uniform in [0.7, max(1, size/12)] px, each bone
                     a jittery polyline with smoothly varying pressure (width x0.65..1.35),
                     endpoints off their joints / short gaps, sometimes a retraced
                     stroke, head an open ring with a gap (or a filled dot), the whole drawing
                     rotated by 2..6 deg about its centre; near-black on pure white.
    """
    if style not in STYLES:
        raise ValueError(f"unknown stickman style {style!r}; expected one of {STYLES}")
    draw = {"clean": _clean, "random": _random, "handdrawn": _handdrawn}[style]
    return draw(pose, size, rng, stroke_width).resize((size, size), Image.LANCZOS)


def _jittered_bone(P: dict, a: str, b: str, rng, jit: float, hc, neck, r: float):
    """The ends of bone a -> b, each moved by N(0, jit); the head's bone starts on the edge of the head (centre
    ``hc``, radius ``r``) towards the neck."""
    pa = P[a] + rng.normal(0, jit, 2)
    pb = P[b] + rng.normal(0, jit, 2)
    if a == "head":
        v = neck - hc
        pa = hc + v / max(np.linalg.norm(v), 1e-6) * r
    return pa, pb


def _clean(pose: Pose, size: int, rng, stroke_width) -> Image.Image:
    S = 4 * size
    head, neck, hn = _head_geometry(pose)
    P = {j: np.asarray(pose[j], dtype=float) for j in JOINTS}
    img = Image.new("L", (S, S), 255)
    dr = ImageDraw.Draw(img)
    w = (stroke_width or max(1.25, size / 24.0)) * 4
    r = HEAD_RADIUS * hn
    for a, b in LIMBS:
        pa, pb = P[a], P[b]
        if a == "head":
            pa = head + (neck - head) / hn * r
        _line(dr, np.stack([pa, pb]) * S, 0, w)
    _head(dr, head * S, r * S, 0, False, w)
    return img


def _random(pose: Pose, size: int, rng, stroke_width) -> Image.Image:
    S = 4 * size
    U = rng.uniform
    head, neck, hn = _head_geometry(pose)
    P = {j: np.asarray(pose[j], dtype=float) for j in JOINTS}
    bg = 255 if rng.random() < 0.7 else int(rng.integers(225, 256))
    ink = int(rng.integers(0, 81))
    w = math.exp(U(0.0, math.log(max(1.0, size / 10.0)))) * 4
    if stroke_width:
        w = stroke_width * 4
    img = Image.new("L", (S, S), bg)
    dr = ImageDraw.Draw(img)
    amp = U(0.0, 0.012)                    # wobble amplitude (frame units)
    jit = U(0.0, 0.012)                    # joint offset std (frame units)
    p_over = U(0.0, 0.4)
    dot = rng.random() < 0.35
    r = hn * (U(0.45, 0.75) if dot else U(0.65, 0.9))
    hc = head + rng.normal(0, jit, 2)
    t = np.linspace(0.0, 1.0, 7)
    for a, b in LIMBS:
        pa, pb = _jittered_bone(P, a, b, rng, jit, hc, neck, r)
        if rng.random() < p_over:
            pb = pb + (pb - pa) * U(0.02, 0.1)
        v = pb - pa
        L = np.linalg.norm(v)
        if L < 1e-6:
            continue
        nrm = np.array([-v[1], v[0]]) / L
        off = np.sin(np.pi * t) * (U(-amp, amp) + U(-amp, amp) * np.sin(2 * np.pi * t + U(0, 6.3)))
        pts = pa[None] + t[:, None] * v[None] + off[:, None] * nrm[None]
        _line(dr, pts * S, ink, w)
    _head(dr, hc * S, r * S, ink, dot, w)
    return img


def _handdrawn(pose: Pose, size: int, rng, stroke_width) -> Image.Image:
    """The held-out style: the drawing rotated about its centre, every bone a pressure stroke off its joints,
    the head an open ring (or a dot)."""
    S = 4 * size
    U = rng.uniform
    head, neck, hn = _head_geometry(pose)
    P = {j: np.asarray(pose[j], dtype=float) for j in JOINTS}
    ink = int(rng.integers(0, 61))
    img = Image.new("L", (S, S), 255)
    dr = ImageDraw.Draw(img)
    w0 = (stroke_width if stroke_width else math.exp(U(math.log(0.7), math.log(max(1.0, size / 12.0))))) * 4
    rot = math.radians(U(2, 6) * rng.choice((-1.0, 1.0)))
    cs, sn = math.cos(rot), math.sin(rot)
    R = np.array([[cs, -sn], [sn, cs]])
    ctr = np.mean([P[j] for j in JOINTS], axis=0)
    P = {j: (q - ctr) @ R.T + ctr for j, q in P.items()}
    head, neck = P["head"], P["neck"]
    jit = U(0.006, 0.018)
    noise = U(0.002, 0.008)
    hc = head + rng.normal(0, jit * 0.5, 2)
    dot = rng.random() < 0.3
    r = hn * (U(0.45, 0.75) if dot else U(0.7, 0.95))
    for a, b in LIMBS:
        pa, pb = _jittered_bone(P, a, b, rng, jit, hc, neck, r)
        _pressure_stroke(dr, pa, pb, rng, noise, w0, ink, S)
    if dot:
        _head(dr, hc * S, r * S, ink, True, w0)
    else:
        _open_ring(dr, hc, r, rng, w0, ink, S)
    return img


def _pressure_stroke(dr, pa, pb, rng, noise: float, w0: float, ink, S: int) -> None:
    """A hand-drawn bone from ``pa`` to ``pb`` (frame units): a random-walk polyline that starts a little late
    and stops a little short or long, its width varying smoothly along it (pressure); sometimes retraced."""
    U = rng.uniform
    v = pb - pa
    L = np.linalg.norm(v)
    if L < 1e-6:
        return
    t0, t1 = U(-0.03, 0.07), U(0.94, 1.06)
    n = int(rng.integers(8, 16))
    t = np.linspace(t0, t1, n)
    nrm = np.array([-v[1], v[0]]) / L
    walk = np.cumsum(rng.normal(0, noise, n))
    walk -= np.linspace(0, 1, n) * walk[-1] * U(0.0, 1.0)
    pts = pa[None] + t[:, None] * v[None] + walk[:, None] * nrm[None]
    tm = (np.arange(n - 1) + 0.5) / (n - 1)
    press = 1.0 + U(0.1, 0.35) * np.sin(np.pi * tm * U(0.5, 2.0) + U(0, 6.3))
    for k in range(n - 1):
        _line(dr, pts[k:k + 2] * S, ink, w0 * press[k], caps=True)
    if rng.random() < 0.15:                # retraced stroke
        pts2 = pts + rng.normal(0, noise, (n, 2))
        _line(dr, pts2 * S, ink, w0 * 0.7)


def _open_ring(dr, hc, r: float, rng, w0: float, ink, S: int) -> None:
    """A hand-drawn head: an elliptic ring with a gap, its radius wandering."""
    U = rng.uniform
    a0 = U(0, 2 * np.pi)
    span = np.radians(U(290, 345))
    m = 24
    ang = a0 + np.linspace(0, span, m)
    rx, ry = r * U(0.85, 1.15), r * U(0.85, 1.15)
    rad = 1 + np.cumsum(rng.normal(0, 0.03, m))
    pts = hc[None] + np.stack([rx * rad * np.cos(ang), ry * rad * np.sin(ang)], 1)
    _line(dr, pts * S, ink, w0)

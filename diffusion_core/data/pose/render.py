"""Rendering a pose: ``draw_stickman`` (the conditioning image: dark strokes on a light background, in the
"clean", "random" and held-out "handdrawn" styles) and ``draw_figure`` (the target: a paper-doll person on a
pastel background); ``make_pairs`` renders deterministic batches, ``write_examples`` the app's drawings."""
from __future__ import annotations

import colorsys
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .poses import HEAD_RADIUS, JOINTS, LIMBS, STYLES, Pose, random_pose

# ----------------------------------------------------------------------------------------------
# stickman drawings
# ----------------------------------------------------------------------------------------------

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
    S = 4 * size
    U = rng.uniform
    head, neck, hn = _head_geometry(pose)
    P = {j: np.asarray(pose[j], dtype=float) for j in JOINTS}

    if style == "clean":
        img = Image.new("L", (S, S), 255)
        dr = ImageDraw.Draw(img)
        w = (stroke_width or max(1.25, size / 24.0)) * 4
        r = HEAD_RADIUS * hn
        for a, b in LIMBS:
            pa, pb = P[a], P[b]
            if a == "head":
                pa = head + (neck - head) / hn * r
            _line(dr, np.stack([pa, pb]) * S, 0, w)
        c = head * S
        rr = r * S
        dr.ellipse((c[0] - rr, c[1] - rr, c[0] + rr, c[1] + rr), outline=0, width=max(1, int(round(w))))
        return img.resize((size, size), Image.LANCZOS)

    if style == "random":
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
            pa = P[a] + rng.normal(0, jit, 2)
            pb = P[b] + rng.normal(0, jit, 2)
            if a == "head":
                v = neck - hc
                pa = hc + v / max(np.linalg.norm(v), 1e-6) * r
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
        c, rr = hc * S, r * S
        if dot:
            dr.ellipse((c[0] - rr, c[1] - rr, c[0] + rr, c[1] + rr), fill=ink)
        else:
            dr.ellipse((c[0] - rr, c[1] - rr, c[0] + rr, c[1] + rr), outline=ink, width=max(1, int(round(w))))
        return img.resize((size, size), Image.LANCZOS)

    # handdrawn (held out)
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
        pa = P[a] + rng.normal(0, jit, 2)
        pb = P[b] + rng.normal(0, jit, 2)
        if a == "head":
            v = neck - hc
            pa = hc + v / max(np.linalg.norm(v), 1e-6) * r
        v = pb - pa
        L = np.linalg.norm(v)
        if L < 1e-6:
            continue
        # start a little late / stop a little short or long (limbs off their joints)
        t0, t1 = U(-0.03, 0.07), U(0.94, 1.06)
        n = int(rng.integers(8, 16))
        t = np.linspace(t0, t1, n)
        nrm = np.array([-v[1], v[0]]) / L
        walk = np.cumsum(rng.normal(0, noise, n))
        walk -= np.linspace(0, 1, n) * walk[-1] * U(0.0, 1.0)
        pts = pa[None] + t[:, None] * v[None] + walk[:, None] * nrm[None]
        tm = (np.arange(n - 1) + 0.5) / (n - 1)  # pressure: width varies smoothly along the stroke
        press = 1.0 + U(0.1, 0.35) * np.sin(np.pi * tm * U(0.5, 2.0) + U(0, 6.3))
        for k in range(n - 1):
            _line(dr, pts[k:k + 2] * S, ink, w0 * press[k], caps=True)
        if rng.random() < 0.15:                # retraced stroke
            pts2 = pts + rng.normal(0, noise, (n, 2))
            _line(dr, pts2 * S, ink, w0 * 0.7)
    if dot:
        c, rr = hc * S, r * S
        dr.ellipse((c[0] - rr, c[1] - rr, c[0] + rr, c[1] + rr), fill=ink)
    else:
        a0 = U(0, 2 * np.pi)
        span = np.radians(U(290, 345))
        m = 24
        ang = a0 + np.linspace(0, span, m)
        rx, ry = r * U(0.85, 1.15), r * U(0.85, 1.15)
        rad = 1 + np.cumsum(rng.normal(0, 0.03, m))
        pts = hc[None] + np.stack([rx * rad * np.cos(ang), ry * rad * np.sin(ang)], 1)
        _line(dr, pts * S, ink, w0)
    return img.resize((size, size), Image.LANCZOS)


# ----------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------

_SKIN = np.array([(255, 224, 196), (241, 194, 150), (224, 172, 105), (198, 134, 66),
                  (141, 85, 36), (92, 51, 23)], dtype=float)
_HAIR = np.array([(20, 18, 18), (55, 38, 25), (100, 65, 35), (150, 95, 50), (215, 180, 115),
                  (165, 60, 30), (175, 175, 175), (235, 230, 220)], dtype=float)
_HAIR_P = np.array([0.28, 0.22, 0.15, 0.08, 0.11, 0.06, 0.06, 0.04])
_TROUSERS = np.array([(45, 65, 110), (70, 95, 145), (30, 30, 35), (90, 90, 95), (190, 165, 120),
                      (105, 75, 50), (60, 80, 55)], dtype=float)
MIN_BG_DISTANCE = 60.0     # every part colour is at least this far (RGB L2) from the background


def _hsv(h, s, v):
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v)) * 255.0


def _jitter(c, rng, amount=12.0):
    return np.clip(c + rng.normal(0, amount, 3), 0, 255)


def _col(c) -> tuple[int, int, int]:
    return tuple(int(round(float(x))) for x in c)


def _palette(rng: np.random.Generator) -> dict:
    U = rng.uniform
    t = U(0, len(_SKIN) - 1)
    k = min(int(t), len(_SKIN) - 2)
    skin = _jitter(_SKIN[k] + (t - k) * (_SKIN[k + 1] - _SKIN[k]), rng, 6)
    hair = _HAIR[rng.choice(len(_HAIR), p=_HAIR_P)]
    if rng.random() < 0.05:
        hair = _hsv(U(0, 1), U(0.5, 0.9), U(0.5, 0.9))        # dyed
    shirt = _hsv(U(0, 1), U(0.15, 0.9), U(0.25, 0.95))
    if rng.random() < 0.15:
        shirt = np.full(3, U(30, 245))                         # black / grey / white
    if rng.random() < 0.6:
        trousers = _jitter(_TROUSERS[rng.integers(len(_TROUSERS))], rng, 10)
    else:
        trousers = _hsv(U(0, 1), U(0.2, 0.8), U(0.2, 0.8))
    shoes = _hsv(U(0, 1), U(0.0, 0.7), U(0.08, 0.9)) if rng.random() < 0.4 else np.full(3, U(15, 80))
    hat = _hsv(U(0, 1), U(0.3, 0.9), U(0.2, 0.8))
    parts = {"skin": skin, "hair": _jitter(hair, rng, 8), "shirt": shirt, "trousers": trousers,
             "shoes": shoes, "hat": hat}
    for _ in range(40):
        bg = _hsv(U(0, 1), U(0.03, 0.3), U(0.85, 1.0))
        if min(np.linalg.norm(c - bg) for c in parts.values()) >= MIN_BG_DISTANCE:
            break
    else:                                                      # rare: darken the offending parts
        for name, c in parts.items():
            while np.linalg.norm(c - bg) < MIN_BG_DISTANCE:
                c = c * 0.8
            parts[name] = c
    parts["bg"] = bg
    return {k: _col(v) for k, v in parts.items()}


def _capsule(dr, p0, p1, width, fill):
    r = width / 2.0
    dr.line([tuple(p0), tuple(p1)], fill=fill, width=max(1, int(round(width))))
    for q in (p0, p1):
        dr.ellipse((q[0] - r, q[1] - r, q[0] + r, q[1] + r), fill=fill)


def _disc(dr, c, r, fill):
    dr.ellipse((c[0] - r, c[1] - r, c[0] + r, c[1] + r), fill=fill)


def draw_figure(pose: Pose, size: int, rng: np.random.Generator) -> Image.Image:
    """Render a paper-doll person in ``pose``: an RGB image, plain pastel background.

    Random per call: skin tone (light to dark brown), hair colour and style (short, long, bald,
    bun, afro, or a cap), shirt colour and sleeves (long / short / none), lower body (trousers,
    shorts, skirt or dress), shoe colour, body build (width x0.8..1.3) and background colour (kept
    at least ``MIN_BG_DISTANCE`` away from every part colour). Arms and legs are rounded capsules
    along the bones (elbow/hand and knee/foot exactly at the joints); upper arms and thighs start
    at shoulder / hip points next to the stickman's neck / pelvis joint. Drawn at 4x (2x above 128
    px) and downsampled with LANCZOS.
    """
    F = 4 if size <= 128 else 2
    S = F * size
    U = rng.uniform
    col = _palette(rng)
    P = {j: np.asarray(pose[j], dtype=float) * S for j in JOINTS}
    head, neck, pelvis = P["head"], P["neck"], P["pelvis"]
    T = max(np.linalg.norm(pelvis - neck), 1e-6)
    u = (pelvis - neck) / T                  # torso axis (down)
    n = np.array([u[1], -u[0]])              # towards the figure's left (image right when upright)
    hv = head - neck
    hn = max(np.linalg.norm(hv), 1e-6)
    v = hv / hn                              # head axis (up)
    hp = np.array([v[1], -v[0]])
    b = U(0.8, 1.3)
    arm_w, leg_w = 0.19 * T * b, 0.25 * T * b
    sw, hw = 0.52 * T * b, 0.46 * T * b      # shoulder / hip width
    r_head = HEAD_RADIUS * hn * U(1.0, 1.1)
    sleeves = rng.choice(("long", "short", "none"), p=(0.5, 0.4, 0.1))
    lower = rng.choice(("trousers", "shorts", "skirt", "dress"), p=(0.55, 0.17, 0.15, 0.13))
    hair = rng.choice(("short", "long", "bald", "bun", "afro", "cap"), p=(0.38, 0.27, 0.07, 0.1, 0.1, 0.08))
    shirt = col["shirt"]
    pants = shirt if lower == "dress" else col["trousers"]

    img = Image.new("RGB", (S, S), col["bg"])
    dr = ImageDraw.Draw(img)

    # long hair behind the head and shoulders
    if hair == "long":
        top = head + v * r_head * 0.3
        bot = neck + u * T * U(0.05, 0.35)
        hwid = r_head * U(1.0, 1.2)
        dr.polygon([tuple(top + hp * hwid), tuple(top - hp * hwid), tuple(bot - n * hwid * 0.95),
                    tuple(bot + n * hwid * 0.95)], fill=col["hair"])
        _disc(dr, head + v * r_head * 0.1, r_head * 1.12, col["hair"])

    # legs (skin under skirts/shorts), trousers, shoes
    hips = {"l": pelvis + n * hw * 0.25, "r": pelvis - n * hw * 0.25}
    for s in ("l", "r"):
        hip, knee, foot = hips[s], P[f"{s}_knee"], P[f"{s}_foot"]
        if lower == "trousers":
            _capsule(dr, hip, knee, leg_w, pants)
            _capsule(dr, knee, foot, leg_w * 0.9, pants)
        else:
            _capsule(dr, hip, knee, leg_w * 0.9, col["skin"])
            _capsule(dr, knee, foot, leg_w * 0.8, col["skin"])
            if lower == "shorts":
                _capsule(dr, hip, hip + (knee - hip) * U(0.5, 0.75), leg_w * 1.05, pants)
        # shoe: a short capsule from the foot, pointing outwards (away from the pelvis)
        side = np.sign(foot[0] - pelvis[0]) or 1.0
        shin = foot - knee
        sl = max(np.linalg.norm(shin), 1e-6)
        perp = np.array([shin[1], -shin[0]]) / sl
        if perp[0] * side < 0:
            perp = -perp
        _capsule(dr, foot, foot + perp * T * 0.2 * b, leg_w * 0.75, col["shoes"])
    # waistband over the legs' tops
    wb0, wb1 = pelvis - u * T * 0.12, pelvis + u * T * 0.06
    dr.polygon([tuple(wb0 + n * hw / 2), tuple(wb0 - n * hw / 2), tuple(wb1 - n * hw / 2),
                tuple(wb1 + n * hw / 2)], fill=pants)
    _capsule(dr, pelvis - n * hw * 0.25, pelvis + n * hw * 0.25, leg_w, pants)

    # torso (shirt)
    sh_c = neck + u * T * 0.1
    shoulders = {"l": sh_c + n * sw * 0.36, "r": sh_c - n * sw * 0.36}
    hip_top = pelvis - u * T * 0.05
    dr.polygon([tuple(sh_c + n * sw / 2), tuple(sh_c - n * sw / 2), tuple(hip_top - n * hw / 2),
                tuple(hip_top + n * hw / 2)], fill=shirt)
    _capsule(dr, shoulders["l"], shoulders["r"], arm_w * 1.3, shirt)
    # skirt / dress: a trapezoid from the waist to mid-thigh
    if lower in ("skirt", "dress"):
        top = pelvis - u * T * (0.15 if lower == "skirt" else 0.1)
        lk = hips["l"] + (P["l_knee"] - hips["l"]) * U(0.5, 0.9)
        rk = hips["r"] + (P["r_knee"] - hips["r"]) * U(0.5, 0.9)
        flare = leg_w * U(0.6, 1.2)
        sdir = lk - rk
        sdir = sdir / max(np.linalg.norm(sdir), 1e-6)
        dr.polygon([tuple(top + n * hw * 0.5), tuple(top - n * hw * 0.5), tuple(rk - sdir * flare),
                    tuple(lk + sdir * flare)], fill=pants)

    # neck and head
    _capsule(dr, neck + u * T * 0.08, head - v * r_head * 0.5, 0.16 * T * b + 1, col["skin"])
    if hair == "afro":
        _disc(dr, head + v * r_head * 0.2, r_head * 1.35, col["hair"])
    if hair in ("short", "long", "bun"):
        _disc(dr, head + v * r_head * 0.12, r_head * 1.06, col["hair"])
    if hair == "bun":
        _disc(dr, head + v * r_head * 1.15, r_head * 0.42, col["hair"])
    if hair in ("short", "long", "bun", "afro"):
        _disc(dr, head - v * r_head * 0.1, r_head * 0.92, col["skin"])
    else:
        _disc(dr, head, r_head, col["skin"])
    if hair == "cap":
        c0 = head + v * r_head * 0.15
        av = math.degrees(math.atan2(v[1], v[0]))          # direction "up the head" in PIL angles
        dr.pieslice((c0[0] - r_head * 1.05, c0[1] - r_head * 1.05, c0[0] + r_head * 1.05, c0[1] + r_head * 1.05),
                    start=av - 90, end=av + 90, fill=col["hat"])
        brim = float(rng.choice((-1.0, 1.0)))
        _capsule(dr, c0, c0 + hp * brim * r_head * 1.5, r_head * 0.25, col["hat"])
    if size >= 48:                           # eyes
        for e in (-1, 1):
            _disc(dr, head - v * r_head * 0.05 + hp * e * r_head * 0.35, max(1.0, r_head * 0.09), (25, 20, 20))

    # arms in front of the body
    for s in ("l", "r"):
        sh, el, ha = shoulders[s], P[f"{s}_elbow"], P[f"{s}_hand"]
        upper = shirt if sleeves == "long" else col["skin"]
        fore = shirt if sleeves == "long" else col["skin"]
        _capsule(dr, sh, el, arm_w, upper)
        _capsule(dr, el, ha, arm_w * 0.9, fore)
        if sleeves == "short":
            _capsule(dr, sh, sh + (el - sh) * 0.55, arm_w * 1.15, shirt)
        _disc(dr, ha, arm_w * 0.62, col["skin"])
    return img.resize((size, size), Image.LANCZOS)


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

"""Dressed figures, the pose model's targets: a paper-doll person on a pastel background, its skin, hair,
clothes and build drawn at random. The order of the random draws is the data: a change of order is a different
data set."""
from __future__ import annotations

import colorsys
import math
from types import SimpleNamespace

import numpy as np
from PIL import Image, ImageDraw

from .poses import HEAD_RADIUS, JOINTS, Pose

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
    px) and downsampled with LANCZOS. Painted back to front: long hair, legs, torso, head, arms.
    """
    F = 4 if size <= 128 else 2
    S = F * size
    col = _palette(rng)
    P = {j: np.asarray(pose[j], dtype=float) * S for j in JOINTS}
    g = _frame(P, rng)
    img = Image.new("RGB", (S, S), col["bg"])
    dr = ImageDraw.Draw(img)
    if g.hair == "long":
        _long_hair(dr, g, col, rng)
    hips = _legs(dr, g, P, col, rng)
    shoulders = _torso(dr, g, P, hips, col, rng)
    _head(dr, g, col, rng, size)
    _arms(dr, g, P, shoulders, col)
    return img.resize((size, size), Image.LANCZOS)


def _frame(P: dict, rng) -> SimpleNamespace:
    """The body's axes and proportions (pixels) and the random build, head size, sleeves, lower body and hair."""
    U = rng.uniform
    head, neck, pelvis = P["head"], P["neck"], P["pelvis"]
    T = max(np.linalg.norm(pelvis - neck), 1e-6)
    u = (pelvis - neck) / T                  # torso axis (down)
    n = np.array([u[1], -u[0]])              # towards the figure's left (image right when upright)
    hv = head - neck
    hn = max(np.linalg.norm(hv), 1e-6)
    v = hv / hn                              # head axis (up)
    hp = np.array([v[1], -v[0]])
    b = U(0.8, 1.3)
    r_head = HEAD_RADIUS * hn * U(1.0, 1.1)
    sleeves = rng.choice(("long", "short", "none"), p=(0.5, 0.4, 0.1))
    lower = rng.choice(("trousers", "shorts", "skirt", "dress"), p=(0.55, 0.17, 0.15, 0.13))
    hair = rng.choice(("short", "long", "bald", "bun", "afro", "cap"), p=(0.38, 0.27, 0.07, 0.1, 0.1, 0.08))
    return SimpleNamespace(head=head, neck=neck, pelvis=pelvis, T=T, u=u, n=n, v=v, hp=hp, b=b,
                           arm_w=0.19 * T * b, leg_w=0.25 * T * b, sw=0.52 * T * b, hw=0.46 * T * b,  # shoulder / hip
                           r_head=r_head, sleeves=sleeves, lower=lower, hair=hair)


def _pants(g, col):
    return col["shirt"] if g.lower == "dress" else col["trousers"]


def _long_hair(dr, g, col, rng) -> None:
    """Long hair, behind the head and shoulders."""
    U = rng.uniform
    top = g.head + g.v * g.r_head * 0.3
    bot = g.neck + g.u * g.T * U(0.05, 0.35)
    hwid = g.r_head * U(1.0, 1.2)
    dr.polygon([tuple(top + g.hp * hwid), tuple(top - g.hp * hwid), tuple(bot - g.n * hwid * 0.95),
                tuple(bot + g.n * hwid * 0.95)], fill=col["hair"])
    _disc(dr, g.head + g.v * g.r_head * 0.1, g.r_head * 1.12, col["hair"])


def _legs(dr, g, P, col, rng) -> dict:
    """Legs (skin under skirts and shorts), trousers, shoes and the waistband; returns the hip points."""
    U = rng.uniform
    pelvis, n, u, T, hw, leg_w, pants = g.pelvis, g.n, g.u, g.T, g.hw, g.leg_w, _pants(g, col)
    hips = {"l": pelvis + n * hw * 0.25, "r": pelvis - n * hw * 0.25}
    for s in ("l", "r"):
        hip, knee, foot = hips[s], P[f"{s}_knee"], P[f"{s}_foot"]
        if g.lower == "trousers":
            _capsule(dr, hip, knee, leg_w, pants)
            _capsule(dr, knee, foot, leg_w * 0.9, pants)
        else:
            _capsule(dr, hip, knee, leg_w * 0.9, col["skin"])
            _capsule(dr, knee, foot, leg_w * 0.8, col["skin"])
            if g.lower == "shorts":
                _capsule(dr, hip, hip + (knee - hip) * U(0.5, 0.75), leg_w * 1.05, pants)
        # shoe: a short capsule from the foot, pointing outwards (away from the pelvis)
        side = np.sign(foot[0] - pelvis[0]) or 1.0
        shin = foot - knee
        sl = max(np.linalg.norm(shin), 1e-6)
        perp = np.array([shin[1], -shin[0]]) / sl
        if perp[0] * side < 0:
            perp = -perp
        _capsule(dr, foot, foot + perp * T * 0.2 * g.b, leg_w * 0.75, col["shoes"])
    # waistband over the legs' tops
    wb0, wb1 = pelvis - u * T * 0.12, pelvis + u * T * 0.06
    dr.polygon([tuple(wb0 + n * hw / 2), tuple(wb0 - n * hw / 2), tuple(wb1 - n * hw / 2),
                tuple(wb1 + n * hw / 2)], fill=pants)
    _capsule(dr, pelvis - n * hw * 0.25, pelvis + n * hw * 0.25, leg_w, pants)
    return hips


def _torso(dr, g, P, hips, col, rng) -> dict:
    """The shirt, and a skirt or dress as a trapezoid from the waist to mid-thigh; returns the shoulder points."""
    U = rng.uniform
    pelvis, n, u, T, hw, sw, shirt = g.pelvis, g.n, g.u, g.T, g.hw, g.sw, col["shirt"]
    sh_c = g.neck + u * T * 0.1
    shoulders = {"l": sh_c + n * sw * 0.36, "r": sh_c - n * sw * 0.36}
    hip_top = pelvis - u * T * 0.05
    dr.polygon([tuple(sh_c + n * sw / 2), tuple(sh_c - n * sw / 2), tuple(hip_top - n * hw / 2),
                tuple(hip_top + n * hw / 2)], fill=shirt)
    _capsule(dr, shoulders["l"], shoulders["r"], g.arm_w * 1.3, shirt)
    if g.lower in ("skirt", "dress"):
        top = pelvis - u * T * (0.15 if g.lower == "skirt" else 0.1)
        lk = hips["l"] + (P["l_knee"] - hips["l"]) * U(0.5, 0.9)
        rk = hips["r"] + (P["r_knee"] - hips["r"]) * U(0.5, 0.9)
        flare = g.leg_w * U(0.6, 1.2)
        sdir = lk - rk
        sdir = sdir / max(np.linalg.norm(sdir), 1e-6)
        dr.polygon([tuple(top + n * hw * 0.5), tuple(top - n * hw * 0.5), tuple(rk - sdir * flare),
                    tuple(lk + sdir * flare)], fill=_pants(g, col))
    return shoulders


def _head(dr, g, col, rng, size: int) -> None:
    """Neck, hair (afro, short, long, bun), face, cap and eyes (from 48 px)."""
    head, v, hp, r_head, hair = g.head, g.v, g.hp, g.r_head, g.hair
    _capsule(dr, g.neck + g.u * g.T * 0.08, head - v * r_head * 0.5, 0.16 * g.T * g.b + 1, col["skin"])
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


def _arms(dr, g, P, shoulders, col) -> None:
    """Arms in front of the body: sleeves as the shirt, hands as discs."""
    arm_w, shirt = g.arm_w, col["shirt"]
    for s in ("l", "r"):
        sh, el, ha = shoulders[s], P[f"{s}_elbow"], P[f"{s}_hand"]
        upper = shirt if g.sleeves == "long" else col["skin"]
        fore = shirt if g.sleeves == "long" else col["skin"]
        _capsule(dr, sh, el, arm_w, upper)
        _capsule(dr, el, ha, arm_w * 0.9, fore)
        if g.sleeves == "short":
            _capsule(dr, sh, sh + (el - sh) * 0.55, arm_w * 1.15, shirt)
        _disc(dr, ha, arm_w * 0.62, col["skin"])

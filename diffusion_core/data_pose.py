"""Procedural stickman poses and paired training data: stickman drawing -> figure in that pose.

A *pose* is a dict ``joint -> (x, y)`` in image coordinates normalised to [0, 1]^2 (x to the right,
y downwards). The joints (``JOINTS``) are the ones a person draws in a stickman::

    head                 centre of the head circle
    neck                 where the arms and the body line meet (stickman shoulders)
    pelvis               where the legs meet the body line
    l_elbow, l_hand      the figure's left arm  (on the image's right in a front view)
    r_elbow, r_hand      the figure's right arm (on the image's left in a front view)
    l_knee, l_foot       left leg
    r_knee, r_foot       right leg

``LIMBS`` lists the bones drawn as lines. The head is a circle of radius
``HEAD_RADIUS * |head - neck|`` around ``head``; the (short) bone head -> neck is drawn from the
circle's edge to the neck.

Two renderers share a pose:

* ``draw_stickman`` - the conditioning image: dark strokes on a light background, like a user's
  upload or a browser sketch pad. Styles: ``"clean"`` (straight black lines, ring head),
  ``"random"`` (the training style: random stroke width / grey level / ring or dot head, smooth
  wobble, joint offsets, overshoot) and ``"handdrawn"`` (a held-out style: jittery polylines with
  varying pressure, limbs off their joints, ring heads with a gap, slight rotation).
* ``draw_figure`` - the target image: a paper-doll person (skin, hair, shirt, trousers / shorts /
  skirt / dress, shoes) whose limbs follow the bones, with random colours and body width on a
  plain pastel background.

``make_pairs`` renders deterministic batches (``evaluation.pose_metrics`` measures how well a generated
figure covers a stickman drawing). Everything is pure numpy + PIL ImageDraw (no scipy).
"""
from __future__ import annotations

import colorsys
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

JOINTS: tuple[str, ...] = (
    "head", "neck", "pelvis",
    "l_elbow", "l_hand", "r_elbow", "r_hand",
    "l_knee", "l_foot", "r_knee", "r_foot",
)
LIMBS: tuple[tuple[str, str], ...] = (
    ("head", "neck"), ("neck", "pelvis"),
    ("neck", "l_elbow"), ("l_elbow", "l_hand"),
    ("neck", "r_elbow"), ("r_elbow", "r_hand"),
    ("pelvis", "l_knee"), ("l_knee", "l_foot"),
    ("pelvis", "r_knee"), ("r_knee", "r_foot"),
)
HEAD_RADIUS = 0.8          # head circle radius as a fraction of |head - neck|
STYLES = ("clean", "random", "handdrawn")
POSE_KINDS: tuple[str, ...] = (
    "standing", "walking", "running", "arms_up", "arms_out", "waving", "hands_on_hips",
    "sitting", "crouching", "kicking", "jumping", "dancing",
)
_KIND_P = np.array([0.14, 0.12, 0.08, 0.10, 0.10, 0.08, 0.05, 0.08, 0.05, 0.08, 0.08, 0.04])
_KIND_P = _KIND_P / _KIND_P.sum()

Pose = dict[str, tuple[float, float]]


# ----------------------------------------------------------------------------------------------
# poses
# ----------------------------------------------------------------------------------------------

def _dir(deg: float) -> np.ndarray:
    """Unit vector at ``deg`` degrees from straight down, positive towards +x (image right)."""
    t = math.radians(deg)
    return np.array([math.sin(t), math.cos(t)])


def _angles(kind: str, rng: np.random.Generator):
    """Torso lean, arm angles {side: (upper, fore)} and leg angles {side: (thigh, shin)} in degrees.

    side +1 is the figure's left (image right), -1 its right. Angles are absolute bone directions
    (0 = down, 90 = towards +x, 180 = up).
    """
    U = rng.uniform
    d = float(rng.choice((-1.0, 1.0)))         # facing direction for side-view poses

    def std_arm(s):
        u = s * U(8, 35)
        return u, u + s * U(-15, 25)

    def std_leg(s, lo=2.0, hi=14.0):
        t = s * U(lo, hi)
        return t, t + s * U(-6, 4)

    lean = U(-4, 4)
    arms = {s: std_arm(s) for s in (1, -1)}
    legs = {s: std_leg(s) for s in (1, -1)}
    if kind == "walking":
        lean = -d * U(0, 6)
        front = float(rng.choice((-1.0, 1.0)))
        t = d * U(15, 32)
        legs[front] = (t, t - d * U(0, 15))
        t = -d * U(10, 28)
        legs[-front] = (t, t - d * U(5, 35))
        u = d * U(10, 35)
        arms[-front] = (u, u + d * U(5, 40))
        u = -d * U(10, 30)
        arms[front] = (u, u + d * U(0, 25))
    elif kind == "running":
        lean = -d * U(5, 15)
        front = float(rng.choice((-1.0, 1.0)))
        t = d * U(40, 75)
        legs[front] = (t, t - d * U(50, 90))
        t = -d * U(15, 40)
        legs[-front] = (t, t - d * U(40, 90))
        u = d * U(20, 60)
        arms[-front] = (u, u + d * U(50, 100))
        u = -d * U(20, 50)
        arms[front] = (u, u + d * U(40, 90))
    elif kind == "arms_up":
        for s in (1, -1):
            u = s * U(130, 178)
            arms[s] = (u, u + s * U(-25, 20))
            legs[s] = std_leg(s, 3, 25)
    elif kind == "arms_out":
        flex = rng.random() < 0.25
        for s in (1, -1):
            u = s * U(65, 115)
            arms[s] = (u, u + s * (U(70, 100) if flex else U(-30, 40)))
    elif kind == "waving":
        w = float(rng.choice((-1.0, 1.0)))
        arms[w] = (w * U(80, 140), w * U(150, 195))
    elif kind == "hands_on_hips":
        sides = (1, -1) if rng.random() < 0.7 else (float(rng.choice((-1.0, 1.0))),)
        for s in sides:
            arms[s] = (s * U(35, 60), -s * U(15, 45))
        legs = {s: std_leg(s, 5, 18) for s in (1, -1)}
    elif kind == "sitting":
        lean = d * U(0, 12)
        t0, s0 = d * U(70, 100), d * U(-15, 15)
        for s in (1, -1):
            legs[s] = (t0 + U(-6, 6), s0 + U(-8, 8))
            u = d * U(0, 40)
            arms[s] = (u, u + d * U(20, 80))
    elif kind == "crouching":
        lean = -d * U(10, 30)
        t0, s0 = d * U(50, 95), -d * U(5, 35)
        for s in (1, -1):
            legs[s] = (t0 + U(-8, 8), s0 + U(-8, 8))
            u = d * U(30, 90)
            arms[s] = (u, u + d * U(-20, 30))
    elif kind == "kicking":
        lean = d * U(0, 20)
        kick = float(rng.choice((-1.0, 1.0)))
        t = d * U(55, 110)
        legs[kick] = (t, t + d * U(-25, 10))
        t = -d * U(0, 12)
        legs[-kick] = (t, t + U(-5, 5))
        for s in (1, -1):
            u = s * U(45, 110)
            arms[s] = (u, u + s * U(-20, 30))
    elif kind == "jumping":
        star = rng.random() < 0.5
        for s in (1, -1):
            if star:
                t = s * U(20, 40)
                legs[s] = (t, t + s * U(-5, 10))
                u = s * U(115, 160)
                arms[s] = (u, u + s * U(-15, 15))
            else:
                legs[s] = (s * U(40, 80), -s * U(0, 25))
                u = s * U(100, 170)
                arms[s] = (u, u + s * U(-30, 30))
    elif kind == "dancing":
        lean = U(-12, 12)
        for s in (1, -1):
            u = s * U(-20, 175)
            arms[s] = (u, u + s * U(-40, 120))
            t = s * U(-10, 45)
            legs[s] = (t, t + s * U(-45, 15))
    elif kind != "standing":
        raise ValueError(f"unknown pose kind {kind!r}; expected one of {POSE_KINDS}")
    return lean, arms, legs


def random_pose(rng: np.random.Generator, kind: str | None = None) -> Pose:
    """A random, anatomically plausible stickman pose: ``joint -> (x, y)`` in [0, 1]^2 (y down).

    ``kind`` (one of ``POSE_KINDS``; random by default) picks the pose family: standing, walking,
    running, arms up / out, waving, hands on hips, sitting, crouching, kicking, jumping, dancing.
    Bone lengths vary slightly per pose; the whole figure gets a small random rotation (+-8 deg),
    is scaled so that its vertical extent (head top to lowest point) is 0.7-0.9 of the frame
    (less if it would otherwise be wider than 0.9) and is placed near the centre with a small
    random translation. The figure stays inside the frame with a margin for the body's width.
    """
    if kind is None:
        kind = str(rng.choice(POSE_KINDS, p=_KIND_P))
    lean, arms, legs = _angles(kind, rng)
    U = rng.uniform
    hn = U(0.30, 0.38)                       # |head - neck| in torso lengths
    ua, fa = U(0.52, 0.62), U(0.48, 0.58)
    th, sh = U(0.72, 0.84), U(0.70, 0.82)
    tilt = U(-15, 15)

    p = {"neck": np.zeros(2)}
    p["pelvis"] = _dir(lean)
    p["head"] = -hn * _dir(lean + tilt)
    for side, name in ((1, "l"), (-1, "r")):
        u, f = arms[side]
        p[f"{name}_elbow"] = p["neck"] + ua * _dir(u)
        p[f"{name}_hand"] = p[f"{name}_elbow"] + fa * _dir(f)
        t, s = legs[side]
        p[f"{name}_knee"] = p["pelvis"] + th * _dir(t)
        p[f"{name}_foot"] = p[f"{name}_knee"] + sh * _dir(s)

    rot = math.radians(U(-8, 8))
    c, s_ = math.cos(rot), math.sin(rot)
    R = np.array([[c, -s_], [s_, c]])
    pts = np.stack([p[j] for j in JOINTS]) @ R.T
    # extent including the head (with hair) and a margin for the rendered body's thickness
    r_head = 1.25 * HEAD_RADIUS * hn
    pad = 0.14
    lo = np.minimum(pts.min(0) - pad, pts[0] - r_head)
    hi = np.maximum(pts.max(0) + pad, pts[0] + r_head)
    ext = hi - lo
    scale = U(0.7, 0.9) / ext[1]
    scale = min(scale, 0.9 / ext[0])
    ext_s = ext * scale
    centre = np.empty(2)
    for k in range(2):
        slack = max(0.0, min(0.05, (1.0 - ext_s[k]) / 2 - 0.01))
        centre[k] = 0.5 + U(-slack, slack)
    pts = (pts - (lo + hi) / 2) * scale + centre
    return {j: (float(x), float(y)) for j, (x, y) in zip(JOINTS, pts)}


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

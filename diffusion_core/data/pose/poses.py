"""Stickman poses: a pose is a dict ``joint -> (x, y)`` in image coordinates normalised to [0, 1]^2 (x to the
right, y downwards); ``random_pose`` draws one of twelve kinds (standing, walking, ... dancing) with random
angles, proportions, scale and position."""
from __future__ import annotations

import math

import numpy as np

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


# A pose kind's angles: f(U, rng, d, lean, arms, legs) -> lean, edited in place in arms / legs. U = rng.uniform;
# d = the facing direction (+1 / -1) of side-view poses. Every kind starts from a standing figure (``_angles``).
# The order of the random draws is the data: a change of order is a different data set.

# walking and running: (lean, front thigh, front knee, back thigh, back knee, back arm, back elbow, front arm,
# front elbow) ranges in degrees, the legs and arms swinging in opposition
_STRIDES = {"walking": ((0, 6), (15, 32), (0, 15), (10, 28), (5, 35), (10, 35), (5, 40), (10, 30), (0, 25)),
            "running": ((5, 15), (40, 75), (50, 90), (15, 40), (40, 90), (20, 60), (50, 100), (20, 50), (40, 90))}
# sitting and crouching: lean (sign, range), thigh range, shin (sign, range), per-leg jitter of thigh and
# shin, upper arm and elbow ranges
_FOLDS = {"sitting": ((1, (0, 12)), (70, 100), (1, (-15, 15)), (6, 8), (0, 40), (20, 80)),
          "crouching": ((-1, (10, 30)), (50, 95), (-1, (5, 35)), (8, 8), (30, 90), (-20, 30))}


def _stride(kind):
    lean_r, ft, fk, bt, bk, ba, be, fa, fe = _STRIDES[kind]

    def angles(U, rng, d, lean, arms, legs):
        lean = -d * U(*lean_r)
        front = float(rng.choice((-1.0, 1.0)))
        t = d * U(*ft)
        legs[front] = (t, t - d * U(*fk))
        t = -d * U(*bt)
        legs[-front] = (t, t - d * U(*bk))
        u = d * U(*ba)
        arms[-front] = (u, u + d * U(*be))
        u = -d * U(*fa)
        arms[front] = (u, u + d * U(*fe))
        return lean
    return angles


def _fold(kind):
    (lean_sign, lean_r), thigh_r, (shin_sign, shin_r), (jt, js), arm_r, elbow_r = _FOLDS[kind]

    def angles(U, rng, d, lean, arms, legs):
        lean = lean_sign * d * U(*lean_r)
        t0, s0 = d * U(*thigh_r), shin_sign * d * U(*shin_r)
        for s in (1, -1):
            legs[s] = (t0 + U(-jt, jt), s0 + U(-js, js))
            u = d * U(*arm_r)
            arms[s] = (u, u + d * U(*elbow_r))
        return lean
    return angles


def _arms_up(U, rng, d, lean, arms, legs):
    for s in (1, -1):
        u = s * U(130, 178)
        arms[s] = (u, u + s * U(-25, 20))
        legs[s] = _std_leg(U, s, 3, 25)
    return lean


def _arms_out(U, rng, d, lean, arms, legs):
    flex = rng.random() < 0.25
    for s in (1, -1):
        u = s * U(65, 115)
        arms[s] = (u, u + s * (U(70, 100) if flex else U(-30, 40)))
    return lean


def _waving(U, rng, d, lean, arms, legs):
    w = float(rng.choice((-1.0, 1.0)))
    arms[w] = (w * U(80, 140), w * U(150, 195))
    return lean


def _hands_on_hips(U, rng, d, lean, arms, legs):
    sides = (1, -1) if rng.random() < 0.7 else (float(rng.choice((-1.0, 1.0))),)
    for s in sides:
        arms[s] = (s * U(35, 60), -s * U(15, 45))
    legs.update({s: _std_leg(U, s, 5, 18) for s in (1, -1)})
    return lean


def _kicking(U, rng, d, lean, arms, legs):
    lean = d * U(0, 20)
    kick = float(rng.choice((-1.0, 1.0)))
    t = d * U(55, 110)
    legs[kick] = (t, t + d * U(-25, 10))
    t = -d * U(0, 12)
    legs[-kick] = (t, t + U(-5, 5))
    for s in (1, -1):
        u = s * U(45, 110)
        arms[s] = (u, u + s * U(-20, 30))
    return lean


def _jumping(U, rng, d, lean, arms, legs):
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
    return lean


def _dancing(U, rng, d, lean, arms, legs):
    lean = U(-12, 12)
    for s in (1, -1):
        u = s * U(-20, 175)
        arms[s] = (u, u + s * U(-40, 120))
        t = s * U(-10, 45)
        legs[s] = (t, t + s * U(-45, 15))
    return lean


_KIND_ANGLES = {"standing": lambda U, rng, d, lean, arms, legs: lean, "walking": _stride("walking"),
                "running": _stride("running"), "arms_up": _arms_up, "arms_out": _arms_out, "waving": _waving,
                "hands_on_hips": _hands_on_hips, "sitting": _fold("sitting"), "crouching": _fold("crouching"),
                "kicking": _kicking, "jumping": _jumping, "dancing": _dancing}


def _std_leg(U, s, lo=2.0, hi=14.0):
    t = s * U(lo, hi)
    return t, t + s * U(-6, 4)


def _angles(kind: str, rng: np.random.Generator):
    """Torso lean, arm angles {side: (upper, fore)} and leg angles {side: (thigh, shin)} in degrees.

    side +1 is the figure's left (image right), -1 its right. Angles are absolute bone directions
    (0 = down, 90 = towards +x, 180 = up). A standing figure, then the kind's own angles (``_KIND_ANGLES``).
    """
    U = rng.uniform
    d = float(rng.choice((-1.0, 1.0)))         # facing direction for side-view poses

    def std_arm(s):
        u = s * U(8, 35)
        return u, u + s * U(-15, 25)

    lean = U(-4, 4)
    arms = {s: std_arm(s) for s in (1, -1)}
    legs = {s: _std_leg(U, s) for s in (1, -1)}
    if kind not in _KIND_ANGLES:
        raise ValueError(f"unknown pose kind {kind!r}; expected one of {POSE_KINDS}")
    lean = _KIND_ANGLES[kind](U, rng, d, lean, arms, legs)
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

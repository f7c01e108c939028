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

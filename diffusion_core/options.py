"""The names and limits of a sampling request, in one place, without importing torch: the samplers, the step
grids and the bounds that the pipeline enforces and the command line and the app show. What each sampler is lives in
``sampler_registry``; ``SAMPLERS`` and ``STUDENT_SAMPLERS`` here are its names, read from it when asked for."""
from __future__ import annotations

import math

SPACINGS = ("trailing", "leading", "linspace", "logsnr", "karras")
NOISE_LEVEL_SPACINGS = ("logsnr", "karras")      # grids in noise level: they need a Gaussian schedule
X0_RANGES = ("clip", "dynamic", "none")          # keeping x0_hat in [-1, 1]: clamp, dynamic thresholding, nothing
MAX_BATCH = 64
MAX_STEPS = 1000
MAX_GUIDANCE = 30.0             # classifier-free guidance scale (the command line and the app)
MAX_SEED = 2 ** 63 - 1 - 100_000    # image i uses seed + i, which torch's generators take up to 2^63 - 1
# The bounds of a sampling request's numbers, (lo, hi) inclusive: the pipeline's Request checks them and the command
# line and the app take theirs from here (the app's batch and seed limits are tighter: diffusion_app/settings.py).
BOUNDS = {"n": (1, MAX_BATCH), "steps": (1, MAX_STEPS), "seed": (0, MAX_SEED), "guidance": (0.0, MAX_GUIDANCE),
          "eta": (0.0, 1.0), "strength": (0.0, 1.0)}
BACKENDS = ("auto", "fp32", "bf16", "openvino")   # where the network runs (backends.py); auto measures and picks
BACKEND_ENV = "DIFFUSION_CORE_BACKEND"             # forces a backend for every load that does not name one


def __getattr__(name: str):
    """``SAMPLERS``: every registered sampler's name; ``STUDENT_SAMPLERS``: the distilled students' own rules
    (offered only by the students made for them). Read from ``sampler_registry`` at the time they are asked for."""
    if name in ("SAMPLERS", "STUDENT_SAMPLERS"):
        from .sampler_registry import sampler_names, student_samplers
        return sampler_names() if name == "SAMPLERS" else student_samplers()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def number(value, name: str, lo: float, hi: float, whole: bool = False) -> float | int:
    """A numeric input checked: a finite number (or a numeric string, as an API client or a form may send) in
    [lo, hi], whole where asked; otherwise a ValueError naming the input and its range. A whole number comes back as
    an int, exactly (a seed near 2^63 as text or int keeps its last digits)."""
    bounds = f"[{int(lo)}, {int(hi)}]" if whole else f"[{lo:g}, {hi:g}]"
    got = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    what = f"{name} must be a {'whole ' if whole else ''}number in {bounds}, got {got}"
    if isinstance(value, bool) or value is None:
        raise ValueError(what)
    if whole and isinstance(value, int):            # exact: a float holds a seed near 2^63 only to 2^10
        v = value
    elif whole and isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        v = int(value)
    else:
        try:
            v = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(what) from None
        if not math.isfinite(v) or (whole and v != int(v)):
            raise ValueError(what)
        v = int(v) if whole else v
    if not lo <= v <= hi:
        raise ValueError(what)
    return v

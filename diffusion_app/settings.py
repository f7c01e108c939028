"""The app's settings: limits, defaults, and the sampler menus read from the core's sampler registry (one place for
each: the app names no sampler itself)."""
from __future__ import annotations

import logging
from pathlib import Path


from diffusion_core import DEFAULT_SAMPLER, CheckpointError, ImageError, all_samplers  # noqa: F401


HERE = Path(__file__).resolve().parents[1]      # the repository (checkpoints/, examples/)
STICKMEN_DIR = HERE / "examples" / "stickmen"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

MAX_BATCH = 16                 # the app's own limit, below the library's MAX_BATCH: a shared server's batch
CARD_MEASUREMENTS = 4      # metrics lines shown on a model card; the rest fold into "N more measurements"
MAX_SEED = 2**31 - 1 - MAX_BATCH
MAX_UPSCALE_INPUT = 128          # side of an image handed to a super-resolution model
PREVIEW_PX = 256                 # previews are nearest-neighbour upscaled to about this size
GIF_MAX_FRAMES = 60
PREVIEW_GAP_BUSY_S = 0.5         # while other runs sample too, a run's previews come at most this often
STOP_WAIT_S = 2.0                # Stop's result waits at most this long for the run to end
ANY = "(any)"
DEGRADATIONS = ["noise", "blur", "pixelate", "mask"]
USER_ERRORS = (ImageError, CheckpointError, ValueError)
# learning tools
COMPARE_MAX_CELLS = 15           # one sampling run per cell; the guidance grid's defaults are 3 samplers x 5 scales
COMPARE_MAX_STEPS = 400          # summed over the cells
COMPARE_STEPS = [5, 10, 25, 50]
COMPARE_GUIDANCE = [0, 1, 2, 4, 7]
COMPARE_DEFAULT_STEPS = [5, 10, 25]
COMPARE_DEFAULT_GUIDANCE_STEPS = 10
CELL_PX = 128                    # a compare-grid cell (nearest-upscaled image) ...
CAPTION_LINES = 3                # ... with this many caption lines below it
LINE_PX = 15
GRID_GAP = 6
INTERP_MAX_FRAMES = 16
LIVE_MAX_IMAGES = 8               # Live mode: images per slider event (a student's few passes each)
INTERP_MAX_WORK = 1600           # frames x steps
TRAJ_MAX_FRAMES = 250            # GIF frames (more steps are subsampled evenly)
STATE_TTL_S = 2 * 3600           # a session's kept run and partial result expire this long after they were set
LIGHT = dict(concurrency_limit=4, concurrency_id="light")     # events that do not sample
# a page's load event, a model pick and its card: a class arriving sends 30-60 of them at once, and in the light
# lane's 4 slots they were served one visitor after another; not unlimited, because each may wait on a model's first
# load (Models' lock) in one of the 40 worker threads that every other handler and preview needs too
PICKS = dict(concurrency_limit=16, concurrency_id="picks")
LATEX = [{"left": "$$", "right": "$$", "display": True}]

log = logging.getLogger("diffusion_app")


# --- the sampler menus, built from the core's registry when asked for (a sampler registered later shows too) ---

def sampler_choices(names=None) -> list[tuple[str, str]]:
    """(label, name) of every sampler, or of those in ``names``, in the registry's order: the Generate menu."""
    return [(s.label, s.name) for s in all_samplers() if names is None or s.name in names]


def sampler_label(name) -> str:
    """A sampler's label ("DPM-Solver++ (2M)"); an unknown name as it is."""
    return next((s.label for s in all_samplers() if s.name == name), name)


def sampler_short(name) -> str:
    """A sampler's short label, for captions ("DPM++"); an unknown name as it is."""
    return next((s.short for s in all_samplers() if s.name == name), name)


def takes_eta(name) -> bool:
    """The sampler reads the eta option (the Generate tab's eta slider applies)."""
    return any(s.name == name and "eta" in s.params for s in all_samplers())


def compare_choices() -> list[tuple[str, str]]:
    """The Compare tab's rows: every sampler but the students' own rules, by short label."""
    return [(s.short, s.name) for s in all_samplers() if not s.student]


def compare_default_samplers() -> list[str]:
    """The rows both comparisons start with: the registry's featured samplers."""
    return [s.name for s in all_samplers() if s.featured and not s.student]


def branch_choices() -> list[tuple[str, str]]:
    """Samplers a run can be continued with from a kept x_t: those on a Gaussian noise schedule."""
    return [(s.label, s.name) for s in all_samplers() if s.gaussian]


def can_branch(name) -> bool:
    return name in [n for _, n in branch_choices()]


def deterministic_choices() -> list[tuple[str, str]]:
    """Samplers that draw no noise at some setting (the one the app then uses), on a Gaussian schedule, for any
    model (students' own rules left out): interpolation's menu, "DDIM (eta 0)"."""
    return [(s.deterministic_label(), s.name) for s in all_samplers()
            if s.gaussian and not s.student and s.can_be_deterministic()]


def sampler_names() -> list[str]:
    return [s.name for s in all_samplers()]

"""The app's settings: limits, defaults and the names shown for samplers (one place for each)."""
from __future__ import annotations

import logging
from pathlib import Path


from diffusion_core import CheckpointError, ImageError


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
ANY = "(any)"
SAMPLER_CHOICES = [("DDPM", "ddpm"), ("DDIM", "ddim"), ("DPM-Solver++ (2M)", "dpm++"), ("DPM-Solver++ (3M)", "dpm++3m"),
                   ("UniPC", "unipc"), ("Cold", "cold"), ("Student's own steps (progressive distillation)", "progressive")]
DETERMINISTIC_SAMPLERS = ("ddim", "dpm++", "dpm++3m", "unipc")
SAMPLER_NAMES = dict((v, k) for k, v in SAMPLER_CHOICES)
COMPARE_NAMES = {"ddpm": "DDPM", "ddim": "DDIM", "dpm++": "DPM++", "dpm++3m": "DPM++3M", "unipc": "UniPC", "cold": "Cold"}
DEGRADATIONS = ["noise", "blur", "pixelate", "mask"]
USER_ERRORS = (ImageError, CheckpointError, ValueError)
# learning tools
COMPARE_MAX_CELLS = 15           # one sampling run per cell; the guidance grid's defaults are 3 samplers x 5 scales
COMPARE_MAX_STEPS = 400          # summed over the cells
COMPARE_SAMPLERS = [("DDPM", "ddpm"), ("DDIM", "ddim"), ("DPM++", "dpm++"), ("DPM++ 3M", "dpm++3m"), ("UniPC", "unipc"),
                    ("Cold", "cold")]
COMPARE_STEPS = [5, 10, 25, 50]
COMPARE_GUIDANCE = [0, 1, 2, 4, 7]
COMPARE_DEFAULT_SAMPLERS = ["ddpm", "ddim", "dpm++"]     # the rows both comparisons start with
COMPARE_DEFAULT_STEPS = [5, 10, 25]
COMPARE_DEFAULT_GUIDANCE_STEPS = 10
CELL_PX = 128                    # a compare-grid cell (nearest-upscaled image) ...
CAPTION_LINES = 3                # ... with this many caption lines below it
LINE_PX = 15
GRID_GAP = 6
INTERP_MAX_FRAMES = 16
INTERP_MAX_WORK = 1600           # frames x steps
TRAJ_MAX_FRAMES = 250            # GIF frames (more steps are subsampled evenly)
STATE_TTL_S = 2 * 3600           # a session's kept run and partial result expire this long after they were set
LIGHT = dict(concurrency_limit=4, concurrency_id="light")     # events that do not sample
LATEX = [{"left": "$$", "right": "$$", "display": True}]

log = logging.getLogger("diffusion_app")

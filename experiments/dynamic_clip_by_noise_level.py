"""Issue 20, part 2: dynamic thresholding of x0_hat at some noise levels only, plain clipping at the others: at
which timesteps does dynamic thresholding change the skin tones and the picks followed?

    python experiments/dynamic_clip_by_noise_level.py MODEL VARIANT GUIDANCE
    # VARIANT: late (t < 500) | early (t >= 500) | mid (200 <= t < 800) | all; log of the run on a snapshot of
    # emoji at step 3400: docs/measurements/issue20-dynamic-by-noise-level-step3400.txt

MODEL is a model folder whose ``sampling.clip`` is ``dynamic`` (elsewhere every step clips as configured). The
variant swaps ``ClipX0.__call__`` for one that thresholds dynamically inside the timestep range only. Prints the
skin-tone luminance ratios ("woman" + each tone, generated / real, ``guidance_colours.tone_colours``) and the
mean picks followed (``evaluate_picks``, 8 per pick)."""
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))     # experiments/ itself is on the path as the script's folder
torch.set_num_threads(1)
from diffusion_core import denoisers, load  # noqa: E402
from diffusion_core.data import DataConfig, load_data  # noqa: E402
from diffusion_core.evaluation.picks import evaluate_picks  # noqa: E402
from guidance_colours import tone_colours  # noqa: E402

RANGES = {"late": (0, 500), "early": (500, 1000), "all": (0, 1000), "mid": (200, 800)}
plain = denoisers.ClipX0.__call__


def main() -> None:
    model, variant, g = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    lo, hi = RANGES[variant]

    def call(self, x_t, t, cond):
        if self.mode == "dynamic" and not (lo <= int(t[0]) < hi):
            self.mode = "clip"
            try:
                return plain(self, x_t, t, cond)
            finally:
                self.mode = "dynamic"
        return plain(self, x_t, t, cond)

    denoisers.ClipX0.__call__ = call
    pipe = load(model)
    real = load_data(DataConfig(source="emoji", split="all", image_size=32, channels=3))
    res = {k: v["luma_ratio"] for k, v in tone_colours(pipe, real, g).items()}
    m = evaluate_picks(model, per_pick=8, guidance=g, progress=False)
    print(variant, g, res, m["generated_mean"], m["generated_mean_judgeable"], flush=True)


if __name__ == "__main__":
    main()

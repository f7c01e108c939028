"""Issue 20, part 2: adaptive projected guidance (APG; Sadat, Hilliges & Weber 2024, "Eliminating
oversaturation and artifacts of high guidance scales in diffusion models", sec. 4) against plain
classifier-free guidance: skin-tone luminance ("woman" + each tone, the face's 8x8 centre, generated / real)
and the picks followed (evaluate_picks, 8 per pick).

    python experiments/apg_guidance_colours.py MODE GUIDANCE [ETA]      # MODE: cfg | apg

APG in x0 space: D = x0_c - x0_u; D_par = (<D, x0_c> / <x0_c, x0_c>) x0_c (per image, over C, H, W);
x0 = x0_c + (w - 1) (D - D_par + eta D_par); eps_hat recomputed from x_t. eta = 1 is plain CFG.
(No momentum and no norm threshold: the paper's two other parts.)"""
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))     # experiments/ itself is on the path as the script's folder
torch.set_num_threads(1)
from diffusion_core import denoisers, load  # noqa: E402
from diffusion_core.denoisers import Prediction, _bcast  # noqa: E402
from diffusion_core.evaluation.picks import evaluate_picks  # noqa: E402
from guidance_colours import tone_summary  # noqa: E402

mode, g = sys.argv[1], float(sys.argv[2])
eta = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
model = ROOT / "checkpoints" / "emoji"
sched = load(model).stages[0].schedule


def apg(self, x_t, t, cond):
    if self.scale == 1.0 or cond is None or not cond.has_guidable():
        return self.denoiser(x_t, t, cond)
    b = x_t.shape[0]
    both = self.denoiser(torch.cat([x_t, x_t]), torch.cat([t, t]), denoisers.cat_conditions(cond, cond.null()))
    x0_c, x0_u = both.x0_hat[:b], both.x0_hat[b:]
    d = x0_c - x0_u
    unit = x0_c.flatten(1) / x0_c.flatten(1).norm(dim=1, keepdim=True).clamp(min=1e-8)
    par = (d.flatten(1) * unit).sum(1, keepdim=True) * unit
    par = par.view_as(d)
    x0 = x0_c + (self.scale - 1) * (d - par + eta * par)
    ab = _bcast(sched.alpha_bar_at(t.cpu()).to(x_t.device), x_t)
    return Prediction(x0, (x_t - ab.sqrt() * x0) / (1 - ab).sqrt())


if mode == "apg":
    denoisers.ClassifierFreeGuidance.__call__ = apg
res, rgb, dist = tone_summary(load(model), g)
m = evaluate_picks(model, per_pick=8, guidance=g, progress=False)
print(mode, g, eta, "luma ratio", res, "mean RGB distance", round(dist, 1), "picks", m["generated_mean"],
      "judgeable", m["generated_mean_judgeable"], "rgb", rgb, flush=True)

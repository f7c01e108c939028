"""Issue 20, part 2: guidance that holds the colour picks at weight 1. Classifier-free guidance extrapolates
every picked attribute away from the unconditional model, the skin tone too (dark darker). With partial
labels the negative branch can instead be the colour picks alone (the skin tones and colour words, known and
present, everything else unknown):

    x0 = x0(colours) + w (x0(all picks) - x0(colours))
       = x0_u + 1 (x0(colours) - x0_u) + w (x0(all picks) - x0(colours))

so the colour attributes get the unguided model's weight and the other picks (woman, heart, ...) the guidance
scale w; with no colour picked it is plain CFG. Same cost (two passes per step). eps_hat recomputed from x_t.

    python experiments/held_colour_guidance.py MODE GUIDANCE [W_COLOUR]   # MODE: cfg | held | tones | split
    python experiments/held_colour_guidance.py interval GUIDANCE T_LO T_HI

(tones: only the skin tones held, the colour words guided like the other picks. split: the colour picks at a
weight W_COLOUR between 1 and w, three passes: x0 = x0_u + W_COLOUR (x0(colours) - x0_u) + w (x0(all) - x0(colours)).
interval (session 15): plain guidance at w for timesteps T_LO <= t <= T_HI, the conditional model alone (weight 1)
at the others: does guidance set which tone at high noise and the conditional model render it below?)

Prints the skin-tone luminance ratios ("woman" + each tone, the face's 8x8 centre, generated / real, 8
samples, DPM-Solver++ 20), the mean RGB distance over the five tones, and the picks followed
(evaluate_picks, 8 per pick)."""
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))     # experiments/ itself is on the path as the script's folder
torch.set_num_threads(1)
from diffusion_core import denoisers, load  # noqa: E402
from diffusion_core.conditioning import Condition  # noqa: E402
from diffusion_core.denoisers import Prediction, _bcast  # noqa: E402
from diffusion_core.evaluation.picks import evaluate_picks  # noqa: E402
from guidance_colours import COLOURS, tone_summary  # noqa: E402
from skin_tone_colours import TONES  # noqa: E402

mode, g = sys.argv[1], float(sys.argv[2])
w_colour = float(sys.argv[3]) if len(sys.argv) > 3 and mode != "interval" else 1.0
t_lo, t_hi = (int(sys.argv[3]), int(sys.argv[4])) if mode == "interval" else (0, 999)
model = ROOT / "checkpoints" / "emoji"
pipe0 = load(model)
sched, names = pipe0.stages[0].schedule, list(pipe0.config.label_names)
HELD = torch.zeros(len(names))
HELD[[names.index(a) for a in (TONES if mode == "tones" else TONES + COLOURS) if a in names]] = 1


def held(self, x_t, t, cond):
    if self.scale == 1.0 or cond is None or not cond.has_guidable():
        return self.denoiser(x_t, t, cond)
    b = x_t.shape[0]
    known = cond.known if cond.known is not None else torch.ones_like(cond.labels)
    keep = cond.labels * known * HELD.to(x_t.device)            # the colour picks (present and known)
    neg = Condition(labels=keep, known=keep, uncond=(keep.sum(1) == 0) | cond.uncond, image=cond.image)
    if mode == "split":
        conds = denoisers.cat_conditions(denoisers.cat_conditions(cond, neg), cond.null())
        out = self.denoiser(torch.cat([x_t] * 3), torch.cat([t] * 3), conds).x0_hat
        x0_all, x0_col, x0_u = out[:b], out[b:2 * b], out[2 * b:]
        x0 = x0_u + w_colour * (x0_col - x0_u) + self.scale * (x0_all - x0_col)
    else:
        both = self.denoiser(torch.cat([x_t, x_t]), torch.cat([t, t]), denoisers.cat_conditions(cond, neg))
        x0 = both.x0_hat[b:] + self.scale * (both.x0_hat[:b] - both.x0_hat[b:])
    ab = _bcast(sched.alpha_bar_at(t.cpu()).to(x_t.device), x_t)
    return Prediction(x0, (x_t - ab.sqrt() * x0) / (1 - ab).sqrt())


plain_cfg = denoisers.ClassifierFreeGuidance.__call__


def interval(self, x_t, t, cond):
    if self.scale == 1.0 or cond is None or not cond.has_guidable():
        return self.denoiser(x_t, t, cond)
    inside = (t >= t_lo) & (t <= t_hi)
    if bool(inside.all()):
        return plain_cfg(self, x_t, t, cond)
    assert not bool(inside.any()), "one timestep per call"
    return self.denoiser(x_t, t, cond)


if mode in ("held", "tones", "split"):
    denoisers.ClassifierFreeGuidance.__call__ = held
if mode == "interval":
    denoisers.ClassifierFreeGuidance.__call__ = interval
    w_colour = f"t in [{t_lo}, {t_hi}]"
res, rgb, dist = tone_summary(load(model), g)
print(mode, g, w_colour, "luma ratio", res, "mean RGB distance", round(dist, 1), "rgb", rgb, flush=True)
m = evaluate_picks(model, per_pick=8, guidance=g, progress=False)
print(mode, g, w_colour, "picks", m["generated_mean"], "judgeable", m["generated_mean_judgeable"], flush=True)
print(mode, g, w_colour, "per pick", {" + ".join(r["pick"]): r["generated"] for r in m["rows"]}, flush=True)

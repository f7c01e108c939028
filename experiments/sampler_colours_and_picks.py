"""Issue 20, session 15: the sampler's share in the colours and the picks. Per setting, "woman" + each skin tone
(32 samples, seed 0; the face's 8x8 centre; luminance ratio generated / real with its standard error, and the
mean RGB distance over the five tones, as `experiments/guidance_colours.py` measures them) and the 30 picks
(evaluate_picks, 8 per pick):

    python experiments/sampler_colours_and_picks.py THREADS [--tones-only] MODE:SAMPLER:STEPS:GUIDANCE ...
    # e.g. cfg:dpm++:20:3 cfg:ddpm:25:3 held:ddpm:25:3; log: docs/measurements/issue20-ddpm-vs-dpmpp.txt

MODE cfg is plain classifier-free guidance; held keeps the colour picks (skin tones, colour words) in the
negative branch, i.e. guides them at weight 1 (`held_colour_guidance.py`, written out again here); model is
the model as configured (since session 15 `emoji` holds those picks through `sampling.held_labels`, the same
formula in `denoisers.ClassifierFreeGuidance`: model and held give the same numbers).
"""
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))     # experiments/ itself is on the path as the script's folder
from diffusion_core import denoisers, load  # noqa: E402
from diffusion_core.conditioning import Condition  # noqa: E402
from diffusion_core.data import DataConfig, load_data  # noqa: E402
from diffusion_core.denoisers import Prediction, _bcast  # noqa: E402
from diffusion_core.evaluation.picks import evaluate_picks  # noqa: E402
from guidance_colours import COLOURS, LUMA  # noqa: E402
from skin_tone_colours import TONES  # noqa: E402

MODEL, N = ROOT / "checkpoints" / "emoji", 32


def main(threads: int, tones_only: bool, specs: list[str]) -> None:
    torch.set_num_threads(threads)
    pipe = load(MODEL)
    real = load_data(DataConfig(source="emoji", split="all", image_size=32, channels=3))
    names = list(pipe.config.label_names)
    labels = torch.from_numpy(real.labels) > 0.5
    held_mask = torch.zeros(len(names))
    held_mask[[names.index(a) for a in TONES + COLOURS if a in names]] = 1
    configured = denoisers.ClassifierFreeGuidance.__call__

    def plain(self, x_t, t, cond):
        self.held = None
        return configured(self, x_t, t, cond)

    def held(self, x_t, t, cond):
        if self.scale == 1.0 or cond is None or not cond.has_guidable():
            return self.denoiser(x_t, t, cond)
        b = x_t.shape[0]
        known = cond.known if cond.known is not None else torch.ones_like(cond.labels)
        keep = cond.labels * known * held_mask
        neg = Condition(labels=keep, known=keep, uncond=(keep.sum(1) == 0) | cond.uncond, image=cond.image)
        both = self.denoiser(torch.cat([x_t, x_t]), torch.cat([t, t]), denoisers.cat_conditions(cond, neg))
        x0 = both.x0_hat[b:] + self.scale * (both.x0_hat[:b] - both.x0_hat[b:])
        ab = _bcast(pipe.stages[0].schedule.alpha_bar_at(t.cpu()), x_t)
        return Prediction(x0, (x_t - ab.sqrt() * x0) / (1 - ab).sqrt())

    def face(images):       # per image: the mean RGB (0-255) of the central 8x8 pixels
        return ((images.clamp(-1, 1) + 1) * 127.5).round()[:, :, 12:20, 12:20].mean((2, 3))

    for spec in specs:
        mode, sampler, steps, g = spec.split(":")
        steps, g = int(steps), float(g)
        denoisers.ClassifierFreeGuidance.__call__ = {"held": held, "cfg": plain, "model": configured}[mode]
        row, dist = {}, []
        for tone in TONES:
            have = labels[:, [names.index("woman"), names.index(tone)]].all(1).nonzero().flatten()
            r = face(real.batch(have)["image"]).mean(0)
            xs = face(pipe.sample(N, sampler=sampler, steps=steps, guidance=g, labels=["woman", tone], seed=0))
            lum, real_lum = xs @ LUMA, float(r @ LUMA)
            row[tone.split()[0]] = f"{float(lum.mean()) / real_lum:.2f}±{float(lum.std()) / N ** 0.5 / real_lum:.2f}"
            dist.append(float((xs.mean(0) - r).norm()))
        print(spec, f"tones (n={N}, luminance ratio +- SE)", row, "mean RGB distance", round(sum(dist) / 5, 1), flush=True)
        if tones_only:
            continue
        m = evaluate_picks(MODEL, per_pick=8, sampler=sampler, steps=steps, guidance=g, progress=False)
        print(spec, "picks", m["generated_mean"], "judgeable", m["generated_mean_judgeable"], flush=True)
        print(spec, "per pick", {" + ".join(r["pick"]): r["generated"] for r in m["rows"]}, flush=True)


if __name__ == "__main__":
    args = sys.argv[2:]
    main(int(sys.argv[1]), "--tones-only" in args, [a for a in args if a != "--tones-only"])

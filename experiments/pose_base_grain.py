"""Where the pose cascades' background grain comes from (issue 40): the background's standard deviation (grey
levels 0-255, per channel, averaged; the background is every pixel two or more pixels away from the figure mask)
of real figures and of the base model's 32 px samples, per sampler, step count, guidance scale, and with guidance
only above a timestep (the classifier-free guidance class swapped at run time, as an experiment), with the pose
adherence of those samples.

    python experiments/pose_base_grain.py [--n 48]

The SR stages back-project exactly onto the base's 32 px output (conditioning.back_project), so whatever mottle the
base leaves in a flat background is in every later stage's output too.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from diffusion_core import denoisers
from diffusion_core.data import DataConfig, load_data
from diffusion_core.evaluation.pose_metrics import _dilate, figure_mask, pose_adherence
from diffusion_core.pipeline import load


def u8(x):
    return ((x.clamp(-1, 1) + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def background_std(x) -> float:
    figs = u8(x)
    masks = [~_dilate(figure_mask(f), 2) for f in figs]
    return float(np.mean([f[m].astype(np.float32).std(0).mean() for f, m in zip(figs, masks) if m.sum() > 10]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=48)
    n = ap.parse_args().n
    torch.set_num_threads(1)
    for size in (32, 128):
        real = load_data(DataConfig(source="pose", split="test", image_size=size, channels=3, pose_pairs=200))
        print(f"real figures at {size} px: background std {background_std(real.batch(torch.arange(n))['image']):.2f}")
    real = load_data(DataConfig(source="pose", split="test", image_size=32, channels=3, pose_pairs=200))
    cond = real.batch(torch.arange(n))["cond"]
    sticks = u8(cond)[..., 0]
    pipe = load("checkpoints/pose", "cpu")
    plain = denoisers.ClassifierFreeGuidance.__call__
    runs = [("ddpm", 25, g, 0) for g in (1.0, 2.0, 3.0)] + [("ddim", 25, 2.0, 0), ("dpm++", 20, 2.0, 0),
                                                          ("ddpm", 10, 2.0, 0), ("ddpm", 50, 2.0, 0)]
    runs += [("ddpm", 25, 2.0, lo) for lo in (100, 200, 400)]
    for sampler, steps, g, lo in runs:
        def call(self, x_t, t, c, lo=lo):     # guidance only where t >= lo (lo 0: everywhere, the package's rule)
            return self.denoiser(x_t, t, c) if int(t.max()) < lo else plain(self, x_t, t, c)
        denoisers.ClassifierFreeGuidance.__call__ = call
        t0 = time.time()
        x = pipe.sample(n, sampler=sampler, steps=steps, guidance=g, seed=0, cond_image=cond)
        adh = np.mean([pose_adherence(f, s) for f, s in zip(u8(x), sticks)])
        print(f"base {sampler} {steps} steps, guidance {g:g}" + (f" for t >= {lo}" if lo else "") +
              f": background std {background_std(x):.2f}, adherence {adh:.4f} ({time.time() - t0:.0f} s)", flush=True)
    denoisers.ClassifierFreeGuidance.__call__ = plain


if __name__ == "__main__":
    main()

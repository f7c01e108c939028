"""The pose cascades' last denoising step (issue 40): background grain and adherence for several ``denoise_t``
choices, set at run time on the loaded cascade's stages (``CascadeStage.denoise_t``; -1: none).

For held-out drawings (seed 0; the app's defaults: the base at DDPM 25 and guidance 2, the SR stages at their own
DDPM 10), each choice (base t, SR stages' t) runs the whole cascade. Per stage output: the background grain as
``pose_cascade_grain.py`` measures it (total std of the 8-bit image, grey levels; the std of the 32 px block means;
the std within the blocks), and the final image's pose adherence, area-downscaled to 32 px, paired against the base
figure of the run without any denoising step (mean difference; drawings lower / higher).

    python experiments/pose_final_denoise.py [--model checkpoints/pose-cascade-128] [--n 24] [--choices off,off 20,10]
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from diffusion_core.data import DataConfig, load_data
from diffusion_core.evaluation.pose_metrics import paired_difference, pose_adherence
from diffusion_core.pipeline import load
from pose_cascade_grain import grain, u8


def run(pipe, n: int, cond, base_t: int, sr_t: int) -> dict[int, torch.Tensor]:
    """Every stage's result (side -> images) with the base's denoise_t ``base_t`` and every SR stage's ``sr_t``."""
    for i, st in enumerate(pipe.stages):
        st.cascade = replace(st.cascade, denoise_t=base_t if i == 0 else sr_t)
    outs = {}
    for rec in pipe.stream(n, sampler="ddpm", steps=25, guidance=2.0, seed=0, cond_image=cond):
        if rec.index == rec.num_steps - 1:
            outs[rec.x_next.shape[-1]] = rec.x_next.clamp(-1, 1)
    return outs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="checkpoints/pose-cascade-128")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--choices", nargs="*", default=["off,off", "20,off", "20,6", "20,10", "20,20", "10,10", "40,10"],
                    help="BASE_T,SR_T pairs (off: no denoising step)")
    a = ap.parse_args()
    real = load_data(DataConfig(source="pose", split="test", image_size=32, channels=3, pose_pairs=200))
    cond = real.batch(torch.arange(a.n))["cond"]
    sticks = u8(cond)[..., 0]
    pipe = load(a.model, "cpu")
    plain = None
    print(f"{a.model}, {a.n} held-out drawings, seed 0, base DDPM 25 at guidance 2, SR stages DDPM 10", flush=True)
    for choice in a.choices:
        base_t, sr_t = (-1 if v == "off" else int(v) for v in choice.split(","))
        t0 = time.time()
        outs = run(pipe, a.n, cond, base_t, sr_t)
        if plain is None:
            plain = outs[32] if (base_t, sr_t) == (-1, -1) else run(pipe, a.n, cond, -1, -1)[32]
        down = u8(F.interpolate(outs[max(outs)], size=(32, 32), mode="area"))
        d = paired_difference(pose_adherence, down, u8(plain), sticks, a.n)
        per = " · ".join(f"{s} px {g[0]:.2f} ({g[1]:.2f} / {g[2]:.2f})"
                         for s, g in sorted((s, grain(x, plain)) for s, x in outs.items()))
        print(f"denoise_t base {base_t:>3}, SR {sr_t:>3}: {per} · adherence vs the plain base "
              f"{d['mean_difference']:+.4f} ({d['lower']} lower, {d['higher']} higher) ({time.time() - t0:.0f} s)",
              flush=True)


if __name__ == "__main__":
    main()

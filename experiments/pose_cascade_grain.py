"""Where the pose cascades' background grain comes from after the base (issue 40), and what back-projection does to
it: the 32 px base's mottle is matched exactly by every super-resolution stage (each is back-projected onto its
input down to the base's 32 px grid), and each stage adds its own grain inside those blocks.

For held-out drawings (seed 0; the base at the app's defaults, DDPM 25 at guidance 2), the cascade's later stages
run on the same base figures under several back-projection variants (``conditioning.back_project`` swapped at run
time in the pipeline's stage module, as an experiment):

- ``shipped``: as the package does it;
- ``none``: no back-projection at all (what the SR networks draw themselves);
- ``two-scale S``: figure pixels (the input's ``figure_mask``, dilated) matched as shipped, background pixels matched
  only at S times the shipped scale (their colour, not the base's pixel mottle);
- ``coarse S``: every pixel matched at S times the shipped scale.

Per stage output: the background std (grey levels 0-255, per channel, averaged; pixels two or more pixels away from
the figure mask, as ``pose_base_grain.py``), split into the std of the 32 px block means (the base's mottle, which
exact matching keeps) and the std within the blocks (the stage's own grain); and the final image's pose adherence,
area-downscaled to 32 px, paired against its base figure (mean difference, drawings lower / higher).

    python experiments/pose_cascade_grain.py [--model checkpoints/pose-cascade-128] [--n 24]
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from diffusion_core.conditioning import back_project
from diffusion_core.data import DataConfig, load_data
from diffusion_core.evaluation.pose_metrics import _dilate, figure_mask, paired_difference, pose_adherence
from diffusion_core.pipeline import load
import diffusion_core.pipeline.stage as stage_module


def u8(x):
    return ((x.clamp(-1, 1) + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def grain(x, low: torch.Tensor) -> tuple[float, float, float]:
    """Over the same background at every size (the 32 px base's pixels two or more pixels away from its figure
    mask, as ``pose_base_grain.py`` reads the base): the background std of the 8-bit image, then, in unrounded
    grey levels, the std of the 32 px block means and the std within the blocks."""
    k = x.shape[-1] // low.shape[-1]
    masks = [~_dilate(figure_mask(f), 2) for f in u8(low)]
    masks = [np.kron(m, np.ones((k, k), bool)) for m in masks]
    means = F.interpolate(F.avg_pool2d(x, k), scale_factor=k, mode="nearest") if k > 1 else x
    grey = lambda t: (t * 127.5).permute(0, 2, 3, 1).numpy()     # noqa: E731  (grey levels, unrounded)
    out = []
    for arr in (u8(x), grey(means), grey(x - means)):
        out.append(float(np.mean([a[m].astype(np.float32).std(0).mean() for a, m in zip(arr, masks) if m.sum() > 10])))
    return tuple(out)


def background_of(low: torch.Tensor, threshold: float = 35.0, grow: int = 1) -> torch.Tensor:
    """(n, 1, h, w) bool: the input's background (figure_mask's complement, the figure grown by ``grow`` px)."""
    figs = [figure_mask(f, threshold) for f in u8(low)]
    m = torch.from_numpy(np.stack([_dilate(f, grow) for f in figs]))[:, None]
    return ~m


def variant(name: str):
    kind, _, s = name.partition(" ")
    factor = int(s) if s else 1

    def bp(x, low_res, scale=1, **kw):
        if kind == "shipped":
            return back_project(x, low_res, scale, **kw)
        if kind == "none":
            return x
        coarse = back_project(x, low_res, scale * factor, **kw)
        if kind == "coarse":
            return coarse
        exact = back_project(x, low_res, scale, **kw)
        bg = F.interpolate(background_of(low_res).float(), size=x.shape[-2:], mode="nearest").bool()
        return torch.where(bg, coarse, exact)
    return bp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="checkpoints/pose-cascade-128")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--variants", nargs="*", default=["shipped", "none", "coarse 2", "two-scale 2", "two-scale 4"])
    ap.add_argument("--sr-steps", type=int, default=None, help="every SR stage's steps (default: its own)")
    ap.add_argument("--sr-sampler", default=None, help="every SR stage's sampler (default: its own)")
    ap.add_argument("--variance", default="posterior", help="DDPM's variance: posterior or beta")
    ap.add_argument("--aug", type=float, default=None, help="every SR stage's noise augmentation level")
    ap.add_argument("--sr-spacing", default=None, help="every SR stage's step grid (default: the request's, trailing)")
    a = ap.parse_args()
    n = a.n
    real = load_data(DataConfig(source="pose", split="test", image_size=32, channels=3, pose_pairs=200))
    cond = real.batch(torch.arange(n))["cond"]
    sticks = u8(cond)[..., 0]
    pipe = load(a.model, "cpu")
    if a.aug is not None:
        for st in pipe.stages[1:]:
            st.cascade = replace(st.cascade, aug_level=a.aug)
    if a.sr_spacing is not None:
        stage_request = pipe._stage_request
        pipe._stage_request = lambda r, i, x: (stage_request(r, i, x) if i == 0
                                               else replace(stage_request(r, i, x), spacing=a.sr_spacing))
    t0 = time.time()
    low = pipe.base.sample(n, sampler="ddpm", steps=25, guidance=2.0, seed=0, cond_image=cond)
    print(f"SR stages: steps {a.sr_steps or 'own'}, sampler {a.sr_sampler or 'own'}, variance {a.variance}, aug "
          f"{a.aug if a.aug is not None else 'own'}, spacing {a.sr_spacing or 'trailing'}")
    print(f"{a.model}, {n} held-out drawings; base 32 px (DDPM 25, guidance 2): grain {grain(low, low)[0]:.2f} "
          f"({time.time() - t0:.0f} s)", flush=True)
    for name in a.variants:
        stage_module.back_project = variant(name)
        t0 = time.time()
        outs = {}
        for rec in pipe.stream(n, low_res=low, seed=0, sr_steps=a.sr_steps, sr_sampler=a.sr_sampler,
                               variance=a.variance):
            if rec.index == rec.num_steps - 1:
                outs[rec.x_next.shape[-1]] = rec.x_next.clamp(-1, 1)
        stage_module.back_project = back_project
        final = outs[max(outs)]
        down = u8(F.interpolate(final, size=(32, 32), mode="area"))
        d = paired_difference(pose_adherence, down, u8(low), sticks, n)
        per = " · ".join(f"{s} px {g[0]:.2f} (blocks {g[1]:.2f}, within {g[2]:.2f})"
                         for s, g in sorted((s, grain(x, low)) for s, x in outs.items()))
        print(f"{name:>12}: {per} · adherence vs base {d['mean_difference']:+.4f} +- {d['standard_error']:.4f} "
              f"({d['lower']} lower, {d['higher']} higher) ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

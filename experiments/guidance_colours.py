"""Issue 20, part 2: do guided samples keep the emoji's colours? Generated vs real, per guidance scale and per
way of keeping x0_hat in range.

    python experiments/guidance_colours.py --model checkpoints/emoji [--n 16] [--guidance 1 2 3 4] [--sampler dpm++]
                                       [--clip clip dynamic rescale] [--out runs/evaluate/guidance-colours.json]

Two families of picks, each sampled with DPM-Solver++ 20 (or --sampler / --steps), seeds 0..n-1, the model's guidance
as configured (with its ``sampling.held_labels``):
* skin: "woman" + each of the five skin tones; measured on the central 8x8 pixels at 32 px (the face);
* colours: "heart" + each colour word that real hearts have; measured on the pixels that are not background
  (not all three channels above 235), i.e. the heart itself.
For each, the mean RGB (0-255) beside the same measure over the real emoji that have the picked attributes,
their Euclidean distance, the luminance ratio generated / real, the hue of the mean RGB (HSV, degrees), and the
fraction of measured pixels with a channel at 0 or 255 (clipped) against the real emoji's fraction.
"""
from __future__ import annotations

import argparse
import colorsys
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusion_core import load  # noqa: E402
from diffusion_core.data import DataConfig, load_data  # noqa: E402

from skin_tone_colours import TONES  # noqa: E402  (the five tones, defined once)

COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "brown", "black", "white")
LUMA = torch.tensor([0.299, 0.587, 0.114])


def measure(images: torch.Tensor, region: str) -> dict:
    """images (N, 3, 32, 32) in [-1, 1] -> mean RGB of the region, and the clipped fraction of its pixels."""
    x = ((images.clamp(-1, 1) + 1) * 127.5).round()
    if region == "centre":
        px = x[:, :, 12:20, 12:20].permute(0, 2, 3, 1).reshape(-1, 3)
    else:
        px = x.permute(0, 2, 3, 1).reshape(-1, 3)
        px = px[~(px > 235).all(1)]
    if len(px) == 0:
        return {"rgb": None, "clipped": None}
    clipped = ((px <= 0) | (px >= 255)).any(1).float().mean()
    rgb = [round(float(v), 1) for v in px.mean(0)]
    hue = colorsys.rgb_to_hsv(*(v / 255 for v in rgb))[0] * 360
    return {"rgb": rgb, "hue": round(hue, 1), "clipped": round(float(clipped), 4)}


def tone_colours(pipe, real, guidance: float, n: int = 8) -> dict:
    """"woman" + each skin tone, n samples (DPM-Solver++ 20, seed 0): per tone the luminance ratio generated /
    real of the face's 8x8 centre, the two mean RGBs and their distance. ``real``: all emoji (load_data)."""
    names = list(pipe.config.label_names)
    labels = torch.from_numpy(real.labels) > 0.5
    out = {}
    for tone in TONES:
        have = labels[:, [names.index("woman"), names.index(tone)]].all(1).nonzero().flatten()
        r = torch.tensor(measure(real.batch(have)["image"], "centre")["rgb"])
        x = pipe.sample(n, sampler="dpm++", steps=20, guidance=guidance, labels=["woman", tone], seed=0)
        m = torch.tensor(measure(x, "centre")["rgb"])
        out[tone] = {"luma_ratio": round(float(m @ LUMA / (r @ LUMA)), 3), "rgb": [round(float(v)) for v in m],
                     "real_rgb": [round(float(v)) for v in r], "distance": round(float((m - r).norm()), 1)}
    return out


def tone_summary(pipe, guidance: float) -> tuple[dict, dict, float]:
    """``tone_colours`` against all real emoji, as the measurement scripts of issue 20 print it: (luminance ratio
    per tone, (rgb, real rgb, distance) per tone, the mean distance over the tones)."""
    real = load_data(DataConfig(source="emoji", split="all", image_size=32, channels=3))
    tones = tone_colours(pipe, real, guidance)
    ratios = {k: v["luma_ratio"] for k, v in tones.items()}
    rgb = {k: (v["rgb"], v["real_rgb"], v["distance"]) for k, v in tones.items()}
    return ratios, rgb, sum(v[2] for v in rgb.values()) / len(rgb)


def rescaled_guidance(pipe, phi: float):
    """Patch classifier-free guidance with Lin et al. 2023's rescale (sec. 3.4, eq. 15-16) in x0 space:
    x0_r = x0_cfg * std(x0_c) / std(x0_cfg) per image, x0 = phi x0_r + (1 - phi) x0_cfg; eps_hat recomputed
    from x_t so the pair stays consistent. Returns the undo function."""
    from diffusion_core import denoisers
    from diffusion_core.denoisers import Prediction, _bcast
    cls, plain = denoisers.ClassifierFreeGuidance, denoisers.ClassifierFreeGuidance.__call__
    sched = pipe.stages[0].schedule

    def call(self, x_t, t, cond):
        if self.scale == 1.0 or cond is None or not cond.has_guidable():
            return self.denoiser(x_t, t, cond)
        b = x_t.shape[0]
        both = self.denoiser(torch.cat([x_t, x_t]), torch.cat([t, t]),
                             denoisers.cat_conditions(cond, cond.null()))
        x0_c, x0_u = both.x0_hat[:b], both.x0_hat[b:]
        x0 = x0_u + self.scale * (x0_c - x0_u)
        ratio = x0_c.flatten(1).std(1) / x0.flatten(1).std(1).clamp(min=1e-8)
        x0 = phi * x0 * _bcast(ratio, x0) + (1 - phi) * x0
        ab = _bcast(sched.alpha_bar_at(t.cpu()).to(x_t.device), x_t)
        return Prediction(x0, (x_t - ab.sqrt() * x0) / (1 - ab).sqrt())
    cls.__call__ = call
    return lambda: setattr(cls, "__call__", plain)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="checkpoints/emoji")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--sampler", default="dpm++")
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0])
    ap.add_argument("--clip", nargs="+", default=["clip", "dynamic"])
    ap.add_argument("--out", default="runs/evaluate/guidance-colours.json")
    args = ap.parse_args()
    pipe = load(args.model)
    names = list(pipe.config.label_names)
    real = load_data(DataConfig(source="emoji", split="all", image_size=32, channels=3))
    labels = torch.from_numpy(real.labels) > 0.5
    items = [(("woman", t), "centre") for t in TONES] + [(("heart", c), "object") for c in COLOURS]
    rows = []
    for picks, region in items:
        have = labels[:, [names.index(p) for p in picks]].all(1).nonzero().flatten()
        if len(have) == 0:
            continue
        row = {"picks": list(picks), "region": region, "real_count": len(have),
               "real": measure(real.batch(have)["image"], region)}
        for clip in args.clip:
            for g in args.guidance:
                undo = rescaled_guidance(pipe, float(clip[7:] or 0.7)) if clip.startswith("rescale") else None
                x = pipe.sample(args.n, sampler=args.sampler, steps=args.steps, guidance=g, labels=list(picks), seed=0,
                                clip="clip" if undo else clip)
                if undo:
                    undo()
                m = measure(x, region)
                if m["rgb"] is not None:
                    d = torch.tensor(m["rgb"]) - torch.tensor(row["real"]["rgb"])
                    m["distance"] = round(float(d.norm()), 1)
                    m["luma_ratio"] = round(float((torch.tensor(m["rgb"]) @ LUMA)
                                                  / (torch.tensor(row["real"]["rgb"]) @ LUMA)), 3)
                row[f"{clip}_g{g:g}"] = m
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {}
    for clip in args.clip:
        for g in args.guidance:
            k = f"{clip}_g{g:g}"
            for fam in ("centre", "object"):
                ds = [r[k]["distance"] for r in rows if r["region"] == fam and "distance" in r[k]]
                cl = [r[k]["clipped"] - r["real"]["clipped"] for r in rows if r["region"] == fam and r[k]["rgb"]]
                summary[f"{k}_{fam}"] = {"mean_distance": round(sum(ds) / len(ds), 1),
                                         "mean_extra_clipped": round(sum(cl) / len(cl), 4)}
    out = {"model": args.model, "n": args.n, "steps": args.steps, "sampler": args.sampler, "rows": rows,
           "summary": summary}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print("| keep x0 in range | guidance | skin: mean RGB distance | skin: extra clipped | hearts: mean RGB distance"
          " | hearts: extra clipped |")
    print("|---|---:|---:|---:|---:|---:|")
    for clip in args.clip:
        for g in args.guidance:
            a, b = summary[f"{clip}_g{g:g}_centre"], summary[f"{clip}_g{g:g}_object"]
            print(f"| {clip} | {g:g} | {a['mean_distance']} | {a['mean_extra_clipped']:.3f} | {b['mean_distance']}"
                  f" | {b['mean_extra_clipped']:.3f} |")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

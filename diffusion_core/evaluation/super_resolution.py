"""Super-resolution stages and cascades, scored: an SR stage against bicubic on held-out images (PSNR, SSIM,
sharpness); a cascade's output against its base's bicubic upscale (sharpness), every stage at its own defaults,
with the pose adherence of a pose cascade's figure at the base's size, and the time for one and four images."""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..provenance import training_source
from ..data import DataConfig, load_data
from .pose_metrics import mean_over_pairs, paired_difference


def _held_out_high_res(sr_dir: Path, n: int, size: int, seed: int) -> tuple[torch.Tensor, str]:
    """Held-out images at the SR model's output size, from the data its train_config.json names."""
    from ..data import to_tensor
    source = training_source(sr_dir) or "emoji"
    if source == "pose":
        from ..data.pose import make_pairs
        figs, _ = make_pairs(n, size, seed=seed + 777)
        return to_tensor(figs), f"{n} procedural figures (seed {seed + 777}, not the training seed)"
    if source == "emoji":
        data = load_data(DataConfig(source="emoji", split="test", image_size=size, channels=3))
        idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
        return data.batch(idx)["image"], f"{len(idx)} held-out emoji (test split: every 10th)"
    raise ValueError(f"{sr_dir}: no held-out recipe for data source {source!r}")


def evaluate_super_resolution(sr_dir: Path, n: int = 200, steps: int | None = None, sampler: str | None = None,
                              seed: int = 0, batch: int = 50, progress: bool = True) -> dict:
    """Super-resolution against bicubic upscaling on held-out images: downsample the truth (area) to the
    model's input size, upscale it both ways, and compare PSNR / SSIM / sharpness with the truth.
    Writes sr_examples.png (rows: input (nearest), bicubic, diffusion SR, truth)."""
    from ..images import grid
    from ..pipeline import load
    from ..quality import psnr, sharpness, ssim
    pipe = load(sr_dir)
    cfg = pipe.config
    if cfg.task != "super_resolution":
        raise ValueError(f"{sr_dir} is not a super-resolution model")
    hi_size = cfg.high_res
    steps, sampler = steps or cfg.sampling.steps, sampler or cfg.sampling.sampler     # the model's own defaults
    truth, what = _held_out_high_res(sr_dir, n, hi_size, seed)
    n = len(truth)
    low = F.interpolate(truth, size=(cfg.low_res, cfg.low_res), mode="area")
    bicubic = F.interpolate(low, size=(hi_size, hi_size), mode="bicubic", align_corners=False).clamp(-1, 1)
    t0 = time.time()
    outs = [pipe.sample(len(low[i:i + batch]), low_res=low[i:i + batch], sampler=sampler, steps=steps, seed=seed + i)
            for i in range(0, n, batch)]
    sr = torch.cat(outs)
    m = {"model": str(sr_dir), "n": n, "held_out": what, "sampler": sampler, "steps": steps, "seed": seed,
         "input": f"{cfg.low_res}x{cfg.low_res} (area downsampling of the truth)", "output": f"{hi_size}x{hi_size}",
         "sampling_s_per_image": round((time.time() - t0) / n, 4)}
    for name, img in (("bicubic", bicubic), ("sr", sr)):
        m[f"psnr_{name}"] = round(float(psnr(img, truth).mean()), 3)
        m[f"ssim_{name}"] = round(float(ssim(img, truth).mean()), 4)
        m[f"sharpness_{name}"] = round(float(sharpness(img).mean()), 4)
    m["sharpness_truth"] = round(float(sharpness(truth).mean()), 4)
    k = min(8, n)
    nearest = F.interpolate(low[:k], size=(hi_size, hi_size), mode="nearest")
    grid(torch.cat([nearest, bicubic[:k], sr[:k], truth[:k]]), nrow=k).save(Path(sr_dir) / "sr_examples.png")
    return m


def _held_out_conditions(cfg, n: int, seed: int):
    """The conditions of a cascade evaluation's n base samples: held-out emoji's label sets, or held-out
    stickmen drawn as evaluate_model draws them. Returns (stream keywords, the drawings or None, their real
    figures or None)."""
    size = cfg.unet.image_size
    if cfg.multi_label:
        held = load_data(DataConfig(source="emoji", split="test", image_size=size, channels=3))
        idx = torch.randint(len(held), (n,), generator=torch.Generator().manual_seed(seed))
        return {"labels": torch.from_numpy(held.labels[idx.numpy()])}, None, None
    if cfg.task == "pose":
        from ..data import to_tensor
        from ..data.pose import make_pairs
        real_figs, sticks = make_pairs(n, size, seed=seed + 777, style="handdrawn")     # as evaluate_model draws
        return {"cond_image": to_tensor(sticks)}, sticks, real_figs
    return {}, None, None


def _cascade_times(pipe, kw: dict, **options) -> dict:
    """Wall time of the whole cascade for one image and for four (the first one-image run warms up)."""
    timed = {}
    for k in (1, 1, 4):
        t1 = time.perf_counter()
        pipe.sample(k, **options, **{name: v[torch.arange(k) % len(v)] for name, v in kw.items()})
        timed[k] = round(time.perf_counter() - t1, 3)
    return {"seconds_one_image": timed[1], "seconds_four_images": timed[4], "threads_timed": torch.get_num_threads()}


def evaluate_cascade(cascade_dir: Path, n: int = 100, steps: int = 20, sampler: str = "dpm++",
                     guidance: float = 2.0, seed: int = 0, batch: int = 50) -> dict:
    """Is the cascade's output sharper than its base model's, upscaled, and does it keep what the base drew?
    n base samples (conditioned like held-out data: the labels of held-out emoji, or held-out stickmen drawn
    like evaluate's; ``steps`` and ``sampler`` are the base's) go through every super-resolution stage at its own
    steps and sampler (as the app runs them); the same base images are also upscaled
    bicubically. Sharpness (mean gradient magnitude) of both, beside held-out real images at the output size;
    for a pose base, the pose adherence of the final image (area-downscaled to the base's size) to the drawing,
    beside the base's own. Then the wall time of the whole cascade for one image and for four (the second
    one-image run is timed, the first warms up). Writes cascade_examples.png (rows: base (nearest), bicubic,
    cascade)."""
    from ..images import grid, to_uint8
    from ..pipeline import load
    from ..quality import sharpness
    from ..conditioning import back_projection_scale
    pipe = load(cascade_dir)
    if pipe.kind != "cascade":
        raise ValueError(f"{cascade_dir} is not a cascade folder")
    base = pipe.base
    cfg = base.config
    size, hi_size = cfg.unet.image_size, pipe.image_size
    kw, sticks, real_figs = _held_out_conditions(cfg, n, seed)
    t0 = time.time()
    low, high = [], []
    for start in range(0, n, batch):
        b = min(batch, n - start)
        part = {k: v[start:start + b] for k, v in kw.items()}
        x = base.sample(b, sampler=sampler, steps=steps, guidance=guidance, seed=seed + start, **part)
        low.append(x)
        high.append(pipe.sample(b, low_res=x, seed=seed + start))      # each stage at its own steps and sampler
    low, high = torch.cat(low), torch.cat(high)
    bicubic = F.interpolate(low, size=(hi_size, hi_size), mode="bicubic", align_corners=False).clamp(-1, 1)
    m = {"model": str(cascade_dir), "n": n, "sampler": sampler, "steps": steps, "guidance": guidance, "seed": seed,
         "stage_sizes": list(pipe.stage_sizes), "base_denoise_t": pipe.stages[0].cascade.denoise_t,
         "sr_stages": [{"sampler": st.run_sampler(), "steps": st.run_steps(),
                        "aug_level": st.cascade.aug_level, "denoise_t": st.cascade.denoise_t,
                        "match_scale": back_projection_scale(st.cascade.aug_level, st.cascade.match_scale or None)}
                       for st in pipe.stages[1:]],
         "sampling_s_per_image": round((time.time() - t0) / n, 4),
         "sharpness_cascade": round(float(sharpness(high).mean()), 4),
         "sharpness_base_bicubic": round(float(sharpness(bicubic).mean()), 4),
         "cascade_sharper_fraction": round(float((sharpness(high) > sharpness(bicubic)).float().mean()), 4)}
    if cfg.multi_label:
        real, what = _held_out_high_res(pipe.stages[-1].path, min(n, 200), hi_size, seed)
        m["sharpness_real"] = round(float(sharpness(real).mean()), 4)
        m["real"] = what
    if sticks is not None:
        from .pose_metrics import pose_adherence
        def down(x):
            return to_uint8(F.interpolate(x, size=(size, size), mode="area"))
        # the cascade's final image and, for the resampling alone, the base's bicubic upscale, both area-downscaled
        for key, figs in (("cascade", down(high)), ("base", to_uint8(low)), ("base_bicubic_round_trip", down(bicubic)),
                          ("real", real_figs)):
            m[f"pose_adherence_{key}"] = mean_over_pairs(pose_adherence, figs, sticks, n)
        # each drawing's final figure against its own base figure (the base samples are the cascade's input)
        m["pose_adherence_cascade_minus_base"] = paired_difference(pose_adherence, down(high), to_uint8(low), sticks, n)
    m.update(_cascade_times(pipe, kw, sampler=sampler, steps=steps, guidance=guidance, seed=seed))
    k = min(8, n)
    nearest = F.interpolate(low[:k], size=(hi_size, hi_size), mode="nearest")
    grid(torch.cat([nearest, bicubic[:k], high[:k]]), nrow=k).save(Path(cascade_dir) / "cascade_examples.png")
    return m

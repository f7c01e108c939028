"""Benchmark: sampling and training speed of our U-Net against ``diffusers``, measured in one run.

``python -m diffusion_core bench [--model checkpoints/fashion] [--out bench.json] [--threads N]`` (or ``python
benchmarks/bench.py ...``), from a checkout: the benchmark is not part of the library (it needs diffusers, a
development dependency, and sets the library's speed switches itself).

What is measured, on the same machine in the same process:

* sampling images/s of the fashion model (DDIM 50 and DPM-Solver++(2M) 20, guidance 2, batch 1 and 16),
  and the same work done by a ``diffusers`` reference: a ``UNet2DModel`` of the same widths, depth,
  attention levels, group norms and class conditioning, stepped by ``DDIMScheduler`` /
  ``DPMSolverMultistepScheduler`` with the same betas and timesteps, guidance by doubling the batch.
  Every row records how many U-Net rows it evaluated (in how many calls, at which batch sizes), so the
  two sides are checked to do the same work; ``sampling_ratio`` = our images/s / theirs (higher is better);
* time to the first streamed preview (``Pipeline.stream`` to its first record) at batch 16 and 1;
* one 64x64 image through a cascade (base 32 px + super-resolution 32 -> 64);
* training images/s (forward, MSE loss, backward, gradient clipping, AdamW, EMA update) at batch 64,
  for both U-Nets; ``training_ratio`` = ours / theirs;
* achieved GFLOP/s of our U-Net forward at batch 16 (FLOPs from ``FlopCounterMode``: convolutions,
  matmuls and attention) as a fraction of the measured float32 peak (``peak_fraction``): the better of a
  2048^2 ``torch.mm`` and a channels_last 3x3 convolution (on AMD Zen, MKL's sgemm reaches only about 40%
  of what oneDNN's convolutions reach, so ``torch.mm`` alone gave fractions above 1);
  ``peak_fraction_vs_mm`` is the fraction of the ``torch.mm`` rate alone.

``--nchw`` runs our U-Net in the NCHW layout (before the channels_last optimisation); ``--no-workers``
runs it without row workers (one batch split over the cores by each kernel, before ``parallel.py``).

Method: one untimed warm-up run per row, then the median of ``--repeats`` timed runs; the same seeds
and initial noise for both implementations; ``torch.set_num_threads(--threads)`` for everything.

Correctness: ``--write-reference`` stores ``Pipeline.sample(...)`` of the fashion model (settings in
the file's metadata) and ``--check`` samples again and reports the max abs difference (exit 1 when it
exceeds ``--tolerance``, default 0). A change of memory layout or operation order changes the rounding:
the channels_last / fused-AdaGN U-Net against a reference from the NCHW one differed by at most 9.5e-4
after 20 guided steps (9 of 16,384 pixels one 8-bit level apart); see docs/performance.md.

If ``--model`` is missing, a random-weight network of the same architecture stands in for it (timings
do not depend on the weights); its zero-initialised layers get small random values so that its
output, and hence the reference check, is not trivially constant.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import torch
import torch.nn as nn
import torch.nn.functional as F

if __package__ in (None, ""):        # run as a script: the repository root on the path, for diffusion_core
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusion_core.runtime import backends, parallel  # noqa: E402
from diffusion_core.config import DiffusionConfig, ModelConfig, UNetConfig, to_dict  # noqa: E402
from diffusion_core.options import BACKENDS as BACKEND_CHOICES  # noqa: E402
from diffusion_core.unet import UNet, _norm, count_parameters  # noqa: E402

FASHION_UNET = UNetConfig(base_channels=32, channel_mults=(1, 2, 2, 2), num_res_blocks=2, attention_resolutions=(8,),
                          num_labels=10, in_channels=1, out_channels=1, image_size=32)
TINY_UNET = UNetConfig(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(8,),
                       num_labels=10, in_channels=1, out_channels=1, image_size=16)
FASHION_LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot")
GUIDANCE = 2.0
TRAIN_LR = 5e-4
EMA_DECAY = 0.999
P_UNCOND = 0.1


# ------------------------------------------------------------------------------------------------
# options
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m diffusion_core bench",
        description="Sampling / training speed of our U-Net against diffusers on this machine, in one run. "
                    "Prints a table and writes JSON. --write-reference / --check compare sampling output "
                    "against a stored tensor instead.")
    p.add_argument("--model", default="checkpoints/fashion",
                   help="fashion model folder (default checkpoints/fashion; random weights of the same "
                        "architecture if it does not exist)")
    p.add_argument("--cascade", default="checkpoints/emoji-cascade",
                   help="cascade folder for the 64x64 timing (default checkpoints/emoji-cascade; a random-weight "
                        "RGB 32 px base + SR 32->64 cascade if it does not exist)")
    p.add_argument("--out", default="bench.json", help="JSON output (default bench.json)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch.set_num_threads (default: os.cpu_count() = %(default)s)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per row, the median is reported "
                                                             "(default 3, 1 with --quick)")
    p.add_argument("--batches", default="1,16", help="sampling batch sizes (default 1,16)")
    p.add_argument("--ddim-steps", type=int, default=None, help="DDIM steps (default 50)")
    p.add_argument("--dpm-steps", type=int, default=None, help="DPM-Solver++ steps (default 20)")
    p.add_argument("--train-batch", type=int, default=None, help="training batch size (default 64)")
    p.add_argument("--train-steps", type=int, default=None,
                   help="optimizer steps per timed training run (default 3, 2 with --quick)")
    p.add_argument("--flops-batch", type=int, default=16, help="batch of the GFLOP/s measurement (default 16)")
    p.add_argument("--mm-size", type=int, default=None, help="matmul size for the peak (default 2048)")
    p.add_argument("--sections", default="sampling,preview,cascade,training,flops,backends",
                   help="comma-separated subset of sampling,preview,cascade,training,flops,backends")
    p.add_argument("--quick", action="store_true", help="1 repeat and fewer training steps (same step counts)")
    p.add_argument("--tiny", action="store_true",
                   help="tiny networks (16 px, 8 base channels), few steps and small batches: for tests only")
    p.add_argument("--skip-diffusers", action="store_true", help="time our side only (no ratios)")
    p.add_argument("--nchw", action="store_true", help="our U-Net in NCHW memory instead of channels_last "
                   "(the layout before that optimisation)")
    p.add_argument("--no-workers", action="store_true",
                   help="no row workers (parallel.py): every kernel splits the whole batch over the threads")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                   help="the backend the 'backends' section reports as chosen (auto: measured, backends.choose); "
                        "the sampling / training rows against diffusers stay fp32 eager, like for like")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no table on stdout")
    g = p.add_argument_group("output check")
    g.add_argument("--reference", default="bench_reference.safetensors",
                   help="reference sampling output (default bench_reference.safetensors)")
    g.add_argument("--write-reference", action="store_true",
                   help="sample the fashion model and store the output as the reference, then exit")
    g.add_argument("--check", action="store_true",
                   help="sample with the reference's settings and compare (max abs diff), then exit: 0 if within "
                        "--tolerance, 1 if not")
    g.add_argument("--tolerance", type=float, default=0.0, help="allowed max abs difference for --check (default 0)")
    g.add_argument("--check-n", type=int, default=4, help="images in the reference (default 4)")
    return p


def _settings(args) -> dict:
    tiny, quick = args.tiny, args.quick
    s = {
        "repeats": args.repeats or (1 if quick or tiny else 3),
        "batches": ([1, 2] if tiny and args.batches == "1,16"
                    else [int(b) for b in str(args.batches).split(",") if b.strip()]),
        "ddim_steps": args.ddim_steps or (3 if tiny else 50),
        "dpm_steps": args.dpm_steps or (2 if tiny else 20),
        "train_batch": args.train_batch or (4 if tiny else 64),
        "train_steps": args.train_steps or (1 if tiny else 2 if quick else 3),
        "flops_batch": 2 if tiny and args.flops_batch == 16 else args.flops_batch,
        "mm_size": args.mm_size or (256 if tiny else 2048),
        "sr_steps": 2 if tiny else 20,
        "sections": [x.strip() for x in args.sections.split(",") if x.strip()],
    }
    bad = set(s["sections"]) - {"sampling", "preview", "cascade", "training", "flops", "backends"}
    if bad:
        raise ValueError(f"unknown section(s) {', '.join(sorted(bad))}")
    if s["repeats"] < 1 or not s["batches"] or min(s["batches"]) < 1 or max(s["batches"]) > 64:
        raise ValueError("repeats must be >= 1 and batch sizes in [1, 64]")
    if args.threads < 1:
        raise ValueError("--threads must be >= 1")
    return s


# ------------------------------------------------------------------------------------------------
# the machine
def machine_info(threads: int) -> dict:
    facts = backends.cpu_info()          # model name and flags, read once (/proc/cpuinfo)
    info = {"cpu": facts.model, "cpu_model": facts.model, "cpu_flags": list(facts.flags), "bf16_units": facts.bf16_units,
            "openvino": backends.openvino_version(),
            "cores": os.cpu_count(), "torch": torch.__version__, "threads": threads,
            "interop_threads": torch.get_num_interop_threads(), "python": platform.python_version(),
            "platform": platform.platform(), "mkldnn": bool(torch.backends.mkldnn.is_available())}
    try:
        info["usable_cores"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    try:
        info["loadavg_1m_at_start"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    try:
        import diffusers
        info["diffusers"] = diffusers.__version__
    except ImportError:
        info["diffusers"] = None
    return info


# ------------------------------------------------------------------------------------------------
# models
def randomize_zero_init(net: nn.Module, seed: int) -> nn.Module:
    """Give zero-initialised parameters (output convs, attention projections, null embedding) small random
    values, so that a random-weight network's output depends on its input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.is_floating_point() and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return net


def random_network(cfg: UNetConfig, seed: int, channels_last: bool = True) -> UNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = UNet(cfg, channels_last)
    return randomize_zero_init(net, seed + 1).eval()


def on_this_runtime(pipe, args):
    """The run's runtime settings on every network of ``pipe``: NCHW memory (--nchw) and no row workers
    (--no-workers) where asked; returns ``pipe``."""
    pipe.workers = 1 if args.no_workers else None
    for st in pipe.stages:
        for net in st.networks:
            net.set_channels_last(not args.nchw)
    return pipe


def fashion_pipeline(path: str, tiny: bool, seed: int = 0):
    """(pipeline, where its weights came from). Random weights when ``path`` does not exist (or --tiny)."""
    from diffusion_core.pipeline import Pipeline, Stage, load
    folder = Path(path)
    if folder.exists() and not tiny:
        pipe = load(folder)
        u = pipe.config.unet
        if pipe.kind != "model" or not u.num_labels or pipe.config.multi_label or pipe.config.task != "generate" \
                or pipe.config.diffusion.is_cold:
            raise ValueError(f"{folder}: the benchmark needs a single class-conditional Gaussian model")
        # whole batches: the same U-Net work as diffusers (the app pads to 8 rows for bit-identical seeds
        # across batch sizes; see docs/reliability.md)
        pipe.chunk = 0
        return pipe, str(folder)
    cfg = TINY_UNET if tiny else FASHION_UNET
    mcfg = ModelConfig(unet=cfg, diffusion=DiffusionConfig(schedule="cosine"), label_names=FASHION_LABELS,
                       description="random weights, fashion architecture")
    return Pipeline.of(Stage.of_network(mcfg, Path("<random>"), random_network(cfg, seed), chunk=0)), \
        ("random weights (tiny)" if tiny else f"random weights ({path} not found)")


def class_labels(n: int, num_labels: int) -> torch.Tensor:
    """Image i gets class i mod L (one-hot rows): the same classes for both implementations."""
    return torch.arange(n) % num_labels


def one_hot(n: int, num_labels: int) -> torch.Tensor:
    return F.one_hot(class_labels(n, num_labels), num_labels).float()


def diffusers_unet(cfg: UNetConfig):
    """diffusers ``UNet2DModel`` with our U-Net's shape: widths, blocks per level, attention at the same
    feature-map sizes (and in the middle), AdaGN scale-shift, dropout, class embedding with a null class,
    attention heads of the same width and the same GroupNorm group counts per width."""
    from diffusers import UNet2DModel
    if cfg.cond_channels or cfg.aug_level_embedding:
        raise ValueError("the diffusers reference covers class-conditional / unconditional models only")
    widths = tuple(cfg.base_channels * m for m in cfg.channel_mults)
    res = [cfg.image_size // 2 ** i for i in range(len(widths))]
    attn = [r in cfg.attention_resolutions for r in res]
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn))
    attn_width = widths[-1]          # the middle block always has attention; ours uses num_heads everywhere
    heads = cfg.num_heads if attn_width % cfg.num_heads == 0 else 1
    net = UNet2DModel(sample_size=cfg.image_size, in_channels=cfg.in_channels, out_channels=cfg.out_channels,
                      block_out_channels=widths, layers_per_block=cfg.num_res_blocks, down_block_types=down,
                      up_block_types=up, norm_num_groups=_norm(widths[0]).num_groups,
                      attention_head_dim=attn_width // heads, dropout=cfg.dropout,
                      resnet_time_scale_shift="scale_shift", add_attention=True,
                      num_class_embeds=cfg.num_labels + 1 if cfg.num_labels else None)
    for m in net.modules():          # diffusers takes one group count; ours depends on the width
        if isinstance(m, nn.GroupNorm):
            m.num_groups = _norm(m.num_channels).num_groups
    return net


def diffusers_scheduler(kind: str, diffusion: DiffusionConfig, clip: bool = True):
    """The diffusers scheduler that takes the same steps as our ``ddim`` / ``dpm++`` samplers (trailing
    spacing, the same betas, ending at alpha_bar = 1)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
    if diffusion.schedule == "cosine":
        betas = dict(beta_schedule="squaredcos_cap_v2")
    else:
        betas = dict(beta_schedule="linear", beta_start=diffusion.beta_1, beta_end=diffusion.beta_T)
    common = dict(num_train_timesteps=diffusion.T, prediction_type={"eps": "epsilon", "x0": "sample",
                                                                    "v": "v_prediction"}[diffusion.prediction],
                  timestep_spacing="trailing", **betas)
    if kind == "ddim":
        return DDIMScheduler(clip_sample=clip, clip_sample_range=1.0, set_alpha_to_one=True, **common)
    if kind == "dpm++":
        return DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero",
                                           **common)
    raise ValueError(kind)


def initial_noise(n: int, channels: int, size: int, seed: int) -> torch.Tensor:
    """x_T exactly as our pipeline draws it (image i from the stream seeded seed + i)."""
    from diffusion_core.samplers import make_generators, per_image_noise
    return per_image_noise((n, channels, size, size), make_generators(seed, n))


def diffusers_sample(unet, scheduler, n: int, steps: int, guidance: float, seed: int, cfg: UNetConfig) -> torch.Tensor:
    """The straightforward diffusers loop: CFG by doubling the batch, scheduler.step per timestep."""
    x = initial_noise(n, cfg.out_channels, cfg.image_size, seed) * scheduler.init_noise_sigma
    labels = class_labels(n, cfg.num_labels)
    both = torch.cat([labels, torch.full_like(labels, cfg.num_labels)])
    with torch.inference_mode():
        scheduler.set_timesteps(steps)
        for t in scheduler.timesteps:
            inp = scheduler.scale_model_input(torch.cat([x, x]), t)
            out = unet(inp, t, class_labels=both).sample
            c, u = out.chunk(2)
            eps = u + guidance * (c - u)
            x = scheduler.step(eps, t, x).prev_sample
    return x.clamp(-1, 1)


# ------------------------------------------------------------------------------------------------
# timing helpers
@contextlib.contextmanager
def count_calls(module: nn.Module):
    """Count forward calls of ``module``, the rows they evaluated and the batch sizes it saw."""
    rec = {"calls": 0, "rows": 0, "batches": set()}

    def hook(_m, inputs):
        rec["calls"] += 1
        rec["rows"] += int(inputs[0].shape[0])
        rec["batches"].add(int(inputs[0].shape[0]))
    h = module.register_forward_pre_hook(hook)
    try:
        yield rec
    finally:
        h.remove()


def timed(fn: Callable[[], object], repeats: int, warmup: Callable[[], object] | None = None) -> list[float]:
    (warmup or fn)()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _row(impl: str, task: str, times: list[float], images: int, **extra) -> dict:
    med = statistics.median(times)
    return {"impl": impl, "task": task, **extra, "seconds": med, "images_per_s": images / med,
            "times": [round(t, 6) for t in times]}


def _log(args, msg: str) -> None:
    if not args.quiet:
        print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# sections
def bench_sampling(args, s, pipe, ref) -> list[dict]:
    rows = []
    cfg = pipe.config.unet
    reps = s["repeats"]
    for sampler, steps in (("ddim", s["ddim_steps"]), ("dpm++", s["dpm_steps"])):
        for b in s["batches"]:
            labels = one_hot(b, cfg.num_labels)
            kw = dict(sampler=sampler, guidance=GUIDANCE, labels=labels, seed=args.seed)
            pipe.sample(b, steps=min(steps, 3), **kw)        # warm-up, not counted
            unet = sched = None
            if ref is not None:
                unet = ref["unet"]
                sched = diffusers_scheduler(sampler, pipe.config.diffusion)
                diffusers_sample(unet, sched, b, min(steps, 3), GUIDANCE, args.seed, cfg)
            # the two sides take turns, run by run, so that a slow spell of the machine hits both alike
            times, d_times = [], []
            with count_calls(pipe.net) as rec, \
                    (count_calls(unet) if unet is not None else contextlib.nullcontext({"rows": 0})) as d_rec:
                for _ in range(reps):
                    times += timed(lambda: pipe.sample(b, steps=steps, **kw), 1, warmup=lambda: None)
                    if unet is not None:
                        d_times += timed(lambda: diffusers_sample(unet, sched, b, steps, GUIDANCE, args.seed, cfg),
                                         1, warmup=lambda: None)
            # our row workers may split one evaluation into pieces: compare the rows evaluated per run
            rows_run = rec["rows"] // reps
            rows.append(_row("ours", "sample", times, b, sampler=sampler, steps=steps, batch=b, guidance=GUIDANCE,
                             unet_calls=rec["calls"] // reps, unet_rows=rows_run, unet_batch=sorted(rec["batches"])))
            _log(args, f"  ours      {sampler:5s} {steps:3d} steps batch {b:2d}: {statistics.median(times):.3f} s")
            if unet is None:
                continue
            d_rows = d_rec["rows"] // reps
            rows.append(_row("diffusers", "sample", d_times, b, sampler=sampler, steps=steps, batch=b,
                             guidance=GUIDANCE, unet_calls=d_rec["calls"] // reps, unet_rows=d_rows,
                             unet_batch=sorted(d_rec["batches"])))
            _log(args, f"  diffusers {sampler:5s} {steps:3d} steps batch {b:2d}: {statistics.median(d_times):.3f} s")
            if d_rows != rows_run:
                raise RuntimeError(f"unequal work for {sampler} batch {b}: ours {rows_run} rows in "
                                   f"{rows[-2]['unet_calls']} calls, diffusers {d_rows} rows in "
                                   f"{rows[-1]['unet_calls']} calls of the U-Net per run")
    return rows


def first_preview(pipe, b: int, kw: dict):
    """What the app waits for before its first preview: ``Pipeline.stream`` to its first record."""
    gen = pipe.stream(b, **kw)
    rec = next(gen)
    gen.close()
    return rec


def bench_preview(args, s, pipe) -> list[dict]:
    rows = []
    cfg = pipe.config.unet
    for b in sorted(s["batches"], reverse=True):
        kw = dict(sampler="dpm++", steps=s["dpm_steps"], guidance=GUIDANCE, labels=one_hot(b, cfg.num_labels),
                  seed=args.seed)
        times = timed(lambda: first_preview(pipe, b, kw), s["repeats"])
        rows.append(_row("ours", "first_preview", times, b, sampler="dpm++", steps=s["dpm_steps"], batch=b,
                         guidance=GUIDANCE))
        _log(args, f"  ours      first preview batch {b:2d}: {statistics.median(times):.3f} s")
    return rows


def bench_backends(args, s, pipe) -> tuple[list[dict], dict]:
    """DPM-Solver++ (``dpm_steps``), the largest batch, guided, once per backend available here (fp32 eager, bf16,
    OpenVINO), taking turns run by run; and the outputs' difference from fp32 for the same seed."""
    cfg = pipe.config.unet
    b = max(s["batches"])
    kw = dict(sampler="dpm++", steps=s["dpm_steps"], guidance=GUIDANCE, labels=one_hot(b, cfg.num_labels),
              seed=args.seed)
    chosen, request = dict(pipe.runners), pipe.backend_request
    runners, outputs, times = {}, {}, {}
    for name in backends.available("cpu"):
        pipe.set_backend(name)
        runners[name] = dict(pipe.runners)
        outputs[name] = pipe.sample(b, **kw)          # warm-up (export, compile), and the output compared
        times[name] = []
    for _ in range(s["repeats"]):
        for name in runners:
            pipe.runners = runners[name]
            times[name] += timed(lambda: pipe.sample(b, **kw), 1, warmup=lambda: None)
    pipe.runners, pipe.backend_request = chosen, request
    preview = statistics.median(timed(lambda: first_preview(pipe, b, kw), s["repeats"]))
    rows = []
    for name in runners:
        diff = (outputs[name] - outputs["fp32"]).abs()
        rows.append(_row("ours", "sample_backend", times[name], b, backend=name, sampler="dpm++",
                         steps=s["dpm_steps"], batch=b, guidance=GUIDANCE, max_abs_diff_vs_fp32=float(diff.max()),
                         rms_diff_vs_fp32=float(diff.pow(2).mean().sqrt())))
        _log(args, f"  {name:9s} dpm++ {s['dpm_steps']:3d} steps batch {b:2d}: {statistics.median(times[name]):.3f} s"
                   f" (rms diff vs fp32 {rows[-1]['rms_diff_vs_fp32']:.4f})")
    ips = {r["backend"]: r["images_per_s"] for r in rows}
    own = max((n for n in ips if n != "openvino"), key=ips.get)        # our fastest PyTorch backend
    info = {"backend": pipe.backend, "choice": [c.summary() for c in pipe.backend_choices],
            "sampling_vs_fp32": ips[pipe.backend] / ips["fp32"] if pipe.backend in ips else None,
            "fastest_pytorch_backend": own, "first_preview_chosen_s": preview,
            "sample_chosen_s": statistics.median(times[pipe.backend]) if pipe.backend in times else None,
            "sampling_vs_openvino": ips[own] / ips["openvino"] if "openvino" in ips else None,
            "chosen_vs_openvino": ips[pipe.backend] / ips["openvino"] if "openvino" in ips and pipe.backend in ips
            else None}
    return rows, info


def random_cascade(folder: Path, tiny: bool, seed: int) -> Path:
    """A random-weight cascade like the emoji one: RGB 32 px base with 52 attribute labels + SR 32 -> 64."""
    from diffusion_core.checkpoint import save_cascade, save_model
    if tiny:
        base = UNetConfig(in_channels=3, out_channels=3, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                          attention_resolutions=(8,), num_labels=4, image_size=16)
        sr = UNetConfig(in_channels=3, out_channels=3, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                        attention_resolutions=(), cond_channels=3, aug_level_embedding=True, image_size=32)
        low, high = 16, 32
    else:
        base = UNetConfig(in_channels=3, out_channels=3, base_channels=32, channel_mults=(1, 2, 2, 2),
                          num_res_blocks=2, attention_resolutions=(8,), num_labels=52, image_size=32)
        sr = UNetConfig(in_channels=3, out_channels=3, base_channels=32, channel_mults=(1, 2, 2, 2), num_res_blocks=2,
                        attention_resolutions=(), cond_channels=3, aug_level_embedding=True, image_size=64)
        low, high = 32, 64
    save_model(folder / "base", ModelConfig(unet=base, multi_label=True,
                                            label_names=tuple(f"attr{i}" for i in range(base.num_labels))),
               random_network(base, seed).state_dict())
    save_model(folder / "sr", ModelConfig(unet=sr, task="super_resolution", low_res=low, high_res=high),
               random_network(sr, seed + 7).state_dict())
    save_cascade(folder / "cascade", [{"path": "../base"}, {"path": "../sr", "aug_level": 0.1, "steps": 20}],
                 description="random weights")
    return folder / "cascade"


def bench_cascade(args, s) -> tuple[list[dict], dict]:
    from diffusion_core.pipeline import load
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.cascade)
        if folder.exists() and not args.tiny:
            source = str(folder)
        else:
            folder = random_cascade(Path(tmp), args.tiny, args.seed)
            source = "random weights (tiny)" if args.tiny else f"random weights ({args.cascade} not found)"
        pipe = load(folder)
    pipe.chunk = 0          # every stage
    on_this_runtime(pipe, args)
    base = pipe.base.config.unet
    labels = one_hot(1, base.num_labels) if base.num_labels else ()
    kw = dict(sampler="dpm++", steps=s["dpm_steps"], sr_steps=s["sr_steps"], guidance=GUIDANCE, labels=labels,
              seed=args.seed)
    size = pipe.image_size
    times = timed(lambda: pipe.sample(1, **kw), s["repeats"], warmup=lambda: pipe.sample(1, **{**kw, "steps": 2,
                                                                                             "sr_steps": 2}))
    row = _row("ours", "cascade", times, 1, sampler="dpm++", steps=s["dpm_steps"], sr_steps=s["sr_steps"], batch=1,
               guidance=GUIDANCE, size=size)
    _log(args, f"  ours      cascade 1 image {size}x{size}: {row['seconds']:.3f} s")
    return [row], {"source": source, "size": size, "stages": [to_dict(st.config.unet) for st in pipe.stages]}


def train_batch(cfg: UNetConfig, diffusion: DiffusionConfig, b: int, seed: int) -> dict:
    from diffusion_core.schedules import make_schedule
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand((b, cfg.in_channels, cfg.image_size, cfg.image_size), generator=g) * 2 - 1
    t = torch.randint(0, diffusion.T, (b,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    labels = torch.randint(0, cfg.num_labels, (b,), generator=g)
    drop = torch.rand(b, generator=g) < P_UNCOND
    x_t = make_schedule(diffusion.schedule, diffusion.T, diffusion.beta_1, diffusion.beta_T).q_sample(x0, t, eps)
    return {"x_t": x_t, "t": t, "eps": eps, "labels": labels, "drop": drop}


def train_step_fn(net: nn.Module, forward: Callable[[dict], torch.Tensor], batch: dict,
                  in_parts: bool = False, workers: int | None = None) -> Callable[[], float]:
    """One full optimisation step as in train.py: forward, MSE, backward, clip, AdamW, EMA update.
    ``in_parts``: forward and backward as row pieces on the CPU's cores, as train.py does (ours only)."""
    from torch.optim.swa_utils import AveragedModel

    from diffusion_core.training import adamw, backward_in_parts, ema_with_warmup
    net.train()
    opt = adamw(net.parameters(), TRAIN_LR)
    ema = AveragedModel(net, multi_avg_fn=ema_with_warmup(EMA_DECAY), use_buffers=True)
    params = list(net.parameters())
    b = batch["eps"].shape[0]

    def loss_of(start: int, stop: int) -> torch.Tensor:
        part = {k: v[start:stop] for k, v in batch.items()}
        return F.mse_loss(forward(part).float(), part["eps"])

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        if in_parts:
            loss = backward_in_parts(loss_of, b, params, workers=workers)
        else:
            loss = loss_of(0, b)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update_parameters(net)
        return loss.item()
    return step


def bench_training(args, s, cfg: UNetConfig, diffusion: DiffusionConfig, ref) -> list[dict]:
    from diffusion_core.conditioning import Condition
    b, k = s["train_batch"], s["train_steps"]
    batch = train_batch(cfg, diffusion, b, args.seed)
    nets = [("ours", random_network(cfg, args.seed, not args.nchw),
             lambda net, bt: net(bt["x_t"], bt["t"], Condition(labels=F.one_hot(bt["labels"], cfg.num_labels).float(),
                                                             uncond=bt["drop"])))]
    if ref is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            theirs = diffusers_unet(cfg)
        nets.append(("diffusers", theirs,
                     lambda net, bt: net(bt["x_t"], bt["t"],
                                         class_labels=torch.where(bt["drop"], cfg.num_labels, bt["labels"])).sample))
    def bf16(fwd):                      # train.py's amp: bf16 autocast, fp32 master weights and AdamW
        def run(net, bt):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return fwd(net, bt)
        return run
    nets.insert(1, ("ours-bf16", random_network(cfg, args.seed, not args.nchw), bf16(nets[0][2])))
    steps = {impl: train_step_fn(net, lambda bt, net=net, fwd=fwd: fwd(net, bt), batch,
                                 in_parts=impl.startswith("ours"), workers=1 if args.no_workers else None)
             for impl, net, fwd in nets}
    for step in steps.values():
        step()                                          # warm-up
    # the two sides take turns, run by run, so that a slow spell of the machine hits both alike
    times = {impl: [] for impl in steps}
    for _ in range(s["repeats"]):
        for impl, step in steps.items():
            times[impl] += timed(lambda: [step() for _ in range(k)], 1, warmup=lambda: None)
    rows = []
    for impl in steps:
        name, task = ("ours", "train_bf16") if impl == "ours-bf16" else (impl, "train")
        rows.append(_row(name, task, times[impl], b * k, batch=b, steps_per_run=k))
        _log(args, f"  {impl:9s} train batch {b}: {rows[-1]['images_per_s']:.1f} images/s")
    return rows


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of CPU flash attention (not in torch's flop registry): QK^T and PV, 2 b h L S (d + dv)."""
    b, h, lq, d = query_shape
    _, _, lk, dv = value_shape
    return 2 * b * h * lq * lk * d + 2 * b * h * lq * lk * dv


def flop_count(fn: Callable[[], object]) -> tuple[int, dict]:
    """FLOPs of ``fn()`` by operator (convolution, mm/addmm/bmm, attention including the CPU SDPA kernel)."""
    from torch.utils.flop_counter import FlopCounterMode
    custom = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        custom[op] = _sdpa_cpu_flops
    with FlopCounterMode(display=False, custom_mapping=custom) as mode:
        fn()
    by_op = {str(k): int(v) for k, v in mode.get_flop_counts().get("Global", {}).items()}
    return int(mode.get_total_flops()), by_op


def matmul_peak(n: int, reps: int, dtype: torch.dtype = torch.float32) -> dict:
    """``torch.mm`` of two n x n matrices of ``dtype`` (bf16: fp32 accumulation, what bf16 matrix units such as
    AVX-512 BF16 and AMX give) with the current thread count. The peak is the best of ``reps`` runs (a peak is
    what the machine can do; a median would count interference as slowness)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    times = []
    for _ in range(max(reps, 5)):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    flops = 2 * n ** 3
    return {"size": n, "dtype": str(dtype).replace("torch.", ""), "gflops": flops / min(times) / 1e9,
            "median_gflops": flops / statistics.median(times) / 1e9, "times": [round(t, 6) for t in times]}


def conv_peak(batch: int, channels: int, size: int, reps: int, dtype: torch.dtype = torch.float32) -> dict:
    """A 3x3 convolution of ``dtype`` in channels_last (oneDNN) with the current thread count, best of ``reps``.
    On AMD CPUs MKL's sgemm (torch.mm) does not reach the FMA peak that oneDNN's convolutions do, so the
    matmul alone can understate what the machine can do (and give a peak fraction above 1)."""
    x = torch.randn(batch, channels, size, size, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(channels, channels, 3, 3, dtype=dtype).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        F.conv2d(x, w, padding=1)
        times = []
        for _ in range(max(reps, 5)):
            t0 = time.perf_counter()
            F.conv2d(x, w, padding=1)
            times.append(time.perf_counter() - t0)
    flops = 2 * batch * channels * size * size * channels * 9
    return {"shape": [batch, channels, size, size], "dtype": str(dtype).replace("torch.", ""),
            "gflops": flops / min(times) / 1e9,
            "median_gflops": flops / statistics.median(times) / 1e9, "times": [round(t, 6) for t in times]}


def bench_flops(args, s, pipe, ref) -> dict:
    from diffusion_core.conditioning import Condition
    cfg = pipe.config.unet
    b = s["flops_batch"]
    x = initial_noise(b, cfg.in_channels, cfg.image_size, args.seed)
    t = torch.full((b,), pipe.config.diffusion.T // 2, dtype=torch.long)
    cond = Condition(labels=one_hot(b, cfg.num_labels), uncond=torch.zeros(b, dtype=torch.bool))
    net = pipe.net
    out = {"batch": b}
    impls = [("ours", lambda: net(x, t, cond))]
    if ref is not None:
        impls.append(("diffusers", lambda: ref["unet"](x, t, class_labels=class_labels(b, cfg.num_labels)).sample))
    reps = max(3, s["repeats"])
    for impl, fwd in impls:
        with torch.inference_mode():
            flops, by_op = flop_count(fwd)
            times = timed(fwd, reps)
        sec = statistics.median(times)
        out[impl] = {"flops_per_forward": flops, "flops_by_op": by_op, "seconds_per_forward": sec,
                     "gflops": flops / sec / 1e9, "times": [round(v, 6) for v in times]}
        _log(args, f"  {impl:9s} forward batch {b}: {flops / 1e9:.2f} GFLOP in {sec * 1e3:.1f} ms "
                   f"= {flops / sec / 1e9:.1f} GFLOP/s")
    out["matmul_peak"] = matmul_peak(s["mm_size"], reps)
    out["conv_peak"] = conv_peak(*((2, 32, 8) if args.tiny else (16, 256, 16)), reps)
    out["bf16_matmul_peak"] = matmul_peak(s["mm_size"], reps, dtype=torch.bfloat16)
    out["bf16_conv_peak"] = conv_peak(*((2, 32, 8) if args.tiny else (16, 256, 16)), reps, dtype=torch.bfloat16)
    out["fp32_peak_gflops"] = max(out["matmul_peak"]["gflops"], out["conv_peak"]["gflops"])
    # the peak is the best dtype's: on a CPU with bf16 matrix units the bf16 rates are this machine's limit
    out["peak_gflops"] = max(out["fp32_peak_gflops"], out["bf16_matmul_peak"]["gflops"],
                             out["bf16_conv_peak"]["gflops"])
    chosen = pipe.backend
    if chosen != "fp32":          # the U-Net as the chosen backend runs it: its rate against the best peak
        runner = pipe._runner(pipe.net)
        with torch.inference_mode():
            times = timed(lambda: runner(x, t, cond), reps)
        sec = statistics.median(times)
        out["chosen"] = {"backend": chosen, "seconds_per_forward": sec,
                         "gflops": out["ours"]["flops_per_forward"] / sec / 1e9}
    best = out.get("chosen", out["ours"])
    out["peak_fraction_fp32"] = out["ours"]["gflops"] / out["fp32_peak_gflops"]
    out["peak_fraction"] = best["gflops"] / out["peak_gflops"]
    out["peak_fraction_vs_mm"] = out["ours"]["gflops"] / out["matmul_peak"]["gflops"]
    _log(args, f"  peak: torch.mm {s['mm_size']}^2 {out['matmul_peak']['gflops']:.1f} GFLOP/s (bf16 "
               f"{out['bf16_matmul_peak']['gflops']:.1f}), 3x3 conv channels_last {out['conv_peak']['gflops']:.1f} "
               f"(bf16 {out['bf16_conv_peak']['gflops']:.1f}); U-Net ({chosen}) at {out['peak_fraction']:.1%} of the "
               f"best ({out['peak_fraction_vs_mm']:.1%} of fp32 torch.mm)")
    return out


# ------------------------------------------------------------------------------------------------
# reference check
def check_settings(args) -> dict:
    return {"n": args.check_n, "sampler": "dpm++", "steps": 20 if not args.tiny else 2, "guidance": GUIDANCE,
            "seed": args.seed}


def reference_sample(pipe, st: dict) -> torch.Tensor:
    return pipe.sample(st["n"], sampler=st["sampler"], steps=st["steps"], guidance=st["guidance"],
                       labels=one_hot(st["n"], pipe.config.unet.num_labels), seed=st["seed"])


def write_reference(args, pipe, source: str) -> int:
    from safetensors.torch import save_file
    st = check_settings(args)
    img = reference_sample(pipe, st)
    meta = {"settings": json.dumps(st), "model": source, "torch": torch.__version__, "threads": str(args.threads)}
    Path(args.reference).parent.mkdir(parents=True, exist_ok=True)
    save_file({"images": img.contiguous()}, args.reference, metadata=meta)
    print(f"wrote {args.reference}: {tuple(img.shape)} from {source} ({st['sampler']} {st['steps']} steps, "
          f"guidance {st['guidance']}, seed {st['seed']})")
    return 0


def check_reference(args, pipe, source: str) -> int:
    from safetensors import safe_open
    path = Path(args.reference)
    if not path.is_file():
        raise ValueError(f"{path}: no reference; write one with --write-reference")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        ref = f.get_tensor("images")
    st = json.loads(meta.get("settings", "{}")) or check_settings(args)
    if meta.get("model") and meta["model"] != source:
        print(f"warning: reference made with {meta['model']}, checking {source}", file=sys.stderr)
    img = reference_sample(pipe, st)
    if img.shape != ref.shape:
        diff = math.inf
    else:
        diff = float((img - ref).abs().max())
    ok = diff <= args.tolerance
    print(f"check {'OK' if ok else 'FAILED'}: max abs diff {diff:.3g} (tolerance {args.tolerance:g}) against "
          f"{path} ({st['sampler']} {st['steps']} steps, n={st['n']}, seed {st['seed']})")
    return 0 if ok else 1


# ------------------------------------------------------------------------------------------------
def _table(result: dict) -> str:
    rows = result["rows"]
    theirs = {(r["task"], r.get("sampler"), r.get("steps"), r["batch"]): r for r in rows if r["impl"] == "diffusers"}
    lines = [f"{'task':14s} {'config':22s} {'ours s':>9s} {'ours img/s':>11s} {'diffusers s':>12s} "
             f"{'diff. img/s':>12s} {'ratio':>7s}"] if rows else []
    for r in rows:
        if r["impl"] != "ours" or r["task"] == "sample_backend":      # those have their own lines, with the backend
            continue
        key = (r["task"], r.get("sampler"), r.get("steps"), r["batch"])
        cfg = (f"{r['sampler']} {r['steps']} b{r['batch']}" if r.get("sampler") else f"b{r['batch']}")
        if r["task"] == "cascade":
            cfg += f" {r['size']}px"
        d = theirs.get(key)
        dcols = (f"{d['seconds']:12.3f} {d['images_per_s']:12.2f} {r['images_per_s'] / d['images_per_s']:7.2f}"
                 if d else f"{'-':>12s} {'-':>12s} {'-':>7s}")
        lines.append(f"{r['task']:14s} {cfg:22s} {r['seconds']:9.3f} {r['images_per_s']:11.2f} {dcols}")
    f = result.get("flops")
    if f:
        lines.append(f"U-Net forward b{f['batch']}: {f['ours']['flops_per_forward'] / 1e9:.2f} GFLOP, "
                     f"{f['ours']['gflops']:.1f} GFLOP/s; peak {f['peak_gflops']:.1f} GFLOP/s (torch.mm "
                     f"{f['matmul_peak']['gflops']:.1f}, conv {f['conv_peak']['gflops']:.1f}) -> peak_fraction "
                     f"{f['peak_fraction']:.3f} (vs torch.mm alone {f['peak_fraction_vs_mm']:.3f})")
    p = result.get("params")
    if p:
        lines.append("parameters: ours {ours:,}".format(**p) + (", diffusers {diffusers:,} ({relative_diff:+.1%}, "
                                                                "within 15%: {within_15pct})".format(**p)
                                                                if p.get("diffusers") else ""))
    for r in rows:
        if r["task"] == "sample_backend":
            lines.append(f"backend {r['backend']:9s} dpm++ {r['steps']} b{r['batch']}: {r['seconds']:.3f} s, "
                         f"{r['images_per_s']:.2f} img/s, rms diff vs fp32 {r['rms_diff_vs_fp32']:.4f}")
    if result.get("backend"):
        lines.append(f"backend chosen: {result['backend']} on {result.get('cpu_model')} "
                     f"({', '.join(result.get('cpu_flags') or []) or 'no avx2'})")
    for k in ("sampling_ratio", "sampling_ratio_chosen", "training_ratio", "training_ratio_bf16",
              "training_bf16_vs_fp32", "sampling_vs_fp32", "sampling_vs_openvino"):
        if result.get(k) is not None:
            lines.append(f"{k}: {result[k]:.3f}")
    return "\n".join(lines)


def run_benchmark(args) -> dict:
    s = _settings(args)
    pipe, source = fashion_pipeline(args.model, args.tiny, args.seed)
    on_this_runtime(pipe, args)
    cfg = pipe.config.unet
    result = {"machine": machine_info(args.threads), "model": source, "unet": to_dict(cfg),
              "settings": {**s, "threads": args.threads, "quick": args.quick, "tiny": args.tiny,
                           "seed": args.seed, "guidance": GUIDANCE,
                           "layout": "nchw" if args.nchw else "channels_last",
                           "row_workers": parallel.workers(1 if args.no_workers else None)}, "notes": []}
    ref = None
    params = {"ours": count_parameters(pipe.net)}
    if not args.skip_diffusers:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            ref = {"unet": diffusers_unet(cfg).eval()}
        params["diffusers"] = count_parameters(ref["unet"])
        params["relative_diff"] = params["diffusers"] / params["ours"] - 1
        params["within_15pct"] = abs(params["relative_diff"]) <= 0.15
        result["notes"].append("diffusers DPM-Solver++ does not clip x0 (ours clips to [-1, 1]); DDIM clips on both "
                               "sides. Weights differ (random for diffusers), which does not change the work.")
    result["params"] = params
    rows = []
    if "sampling" in s["sections"]:
        _log(args, "sampling")
        rows += bench_sampling(args, s, pipe, ref)
    if "preview" in s["sections"]:
        _log(args, "first preview")
        rows += bench_preview(args, s, pipe)
    if "cascade" in s["sections"]:
        _log(args, "cascade")
        crow, cinfo = bench_cascade(args, s)
        rows += crow
        result["cascade"] = cinfo
        result["cascade_s"] = crow[0]["seconds"]
    if "training" in s["sections"]:
        _log(args, "training")
        rows += bench_training(args, s, cfg, pipe.config.diffusion, ref)
    # the rows above run fp32 eager against diffusers fp32, like for like; from here the chosen backend runs
    pipe.set_backend(args.backend)
    if "flops" in s["sections"]:
        _log(args, "GFLOP/s")
        result["flops"] = bench_flops(args, s, pipe, ref)
        result["peak_fraction"] = result["flops"]["peak_fraction"]
    if "backends" in s["sections"]:
        _log(args, "backends")
        brows, binfo = bench_backends(args, s, pipe)
        rows += brows
        result.update(binfo)
    result["rows"] = rows

    # headline numbers
    def find(impl, task, **kw):
        for r in rows:
            if r["impl"] == impl and r["task"] == task and all(r.get(k) == v for k, v in kw.items()):
                return r
        return None
    big = max(s["batches"])
    head = find("ours", "sample", sampler="dpm++", steps=s["dpm_steps"], batch=big)
    result["headline"] = {"sampler": "dpm++", "steps": s["dpm_steps"], "batch": big, "guidance": GUIDANCE}
    result["fashion16_dpm20_s"] = head["seconds"] if head else None
    ratios = {}
    for r in rows:
        if r["impl"] == "ours":
            d = find("diffusers", r["task"], sampler=r.get("sampler"), steps=r.get("steps"), batch=r["batch"])
            if d:
                name = f"{r['task']}_{r['sampler']}{r['steps']}" if r.get("sampler") else r["task"]
                ratios[f"{name}_b{r['batch']}"] = r["images_per_s"] / d["images_per_s"]
    result["ratios"] = ratios
    result["sampling_ratio"] = ratios.get(f"sample_dpm++{s['dpm_steps']}_b{big}")
    tr = find("ours", "train"), find("diffusers", "train")
    result["training_ratio"] = tr[0]["images_per_s"] / tr[1]["images_per_s"] if all(tr) else None
    chosen_row = find("ours", "sample_backend", backend=result.get("backend"), steps=s["dpm_steps"], batch=big)
    d_head = find("diffusers", "sample", sampler="dpm++", steps=s["dpm_steps"], batch=big)
    # the chosen backend against diffusers fp32 (sampling_ratio is fp32 against fp32)
    result["sampling_ratio_chosen"] = (chosen_row["images_per_s"] / d_head["images_per_s"]
                                       if chosen_row and d_head else None)
    tb = find("ours", "train_bf16")
    result["training_ratio_bf16"] = tb["images_per_s"] / tr[1]["images_per_s"] if tb and tr[1] else None
    result["training_bf16_vs_fp32"] = tb["images_per_s"] / tr[0]["images_per_s"] if tb and tr[0] else None
    pv = {r["batch"]: r["seconds"] for r in rows if r["task"] == "first_preview"}
    result["first_preview_s"] = pv.get(big)
    result["first_preview_b1_s"] = pv.get(min(s["batches"]))
    result.setdefault("peak_fraction", None)
    result.setdefault("backend", pipe.backend)
    for k in ("sampling_vs_fp32", "sampling_vs_openvino"):
        result.setdefault(k, None)
    result["cpu_model"], result["cpu_flags"] = result["machine"]["cpu_model"], result["machine"]["cpu_flags"]
    result.setdefault("cascade_s", None)
    try:
        result["machine"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    return result


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    old_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(args.threads)
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="diffusers")
            if args.write_reference or args.check:
                _settings(args)
                pipe, source = fashion_pipeline(args.model, args.tiny, args.seed)
                on_this_runtime(pipe, args)
                if args.write_reference:
                    return write_reference(args, pipe, source)
                return check_reference(args, pipe, source)
            result = run_benchmark(args)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
        if not args.quiet:
            print(_table(result))
            print(f"wrote {args.out}")
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, ImportError, RuntimeError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(old_threads)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Regenerate the figures of docs/LEARN.md with the project's own code and shipped models.

    python scripts/make_figures.py [--checkpoints checkpoints] [--out docs/figures] [--quick]
                                   [--only NAME ...] [--map NAME=FOLDER ...] [--device cpu]

Every figure is drawn from ``diffusion_core``'s public API (``load``, ``Pipeline.stream`` / ``.sample``,
``make_schedule``, ``make_degradation``, ``to_uint8``) with matplotlib (Agg) and fixed seeds, so two runs on
the same checkpoints give the same pictures (only the timings printed in ``samplers.png`` vary). A figure
whose model folder is missing is skipped with a note. ``--quick`` shrinks step counts and batch sizes (and
drops DDPM with 1000 steps) for a fast preview. ``--map fashion=tiny`` reads the model called ``fashion``
from another folder (relative to ``--checkpoints`` or absolute), e.g. to test on tiny fixture models:

    python tests/app_fixtures.py /tmp/ck
    python scripts/make_figures.py --checkpoints /tmp/ck --out /tmp/figs --quick \\
        --map fashion=tiny --map fashion-linear=tiny-linear --map fashion-cold=tiny-cold \\
        --map fashion-experts=tiny-ensemble --map emoji-cascade=tiny-cascade
"""
from __future__ import annotations

import argparse
import io
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from diffusion_core import (CheckpointError, load, make_degradation, make_schedule, sampler_info,  # noqa: E402
                            spaced_timesteps, to_uint8)

MAX_BYTES = 300_000           # every file in docs/figures stays below this
DPI = 100
SEED = 0                      # image i of a run uses seed SEED + i (diffusion_core.make_generators)
FIGURES = ("forward_noise", "schedules", "degradations", "reverse_ddim", "samplers", "guidance", "classes",
           "schedules_models", "cold", "experts", "cascade", "pose_cascade", "cascade128", "pose_cascade128")
PREFERRED_CLASS = ("Sneaker", "Ankle boot")
EMOJI_ATTRIBUTES = ("face", "heart", "cat", "flag", "star", "hand", "moon", "sun")


class Skip(Exception):
    """A figure cannot be drawn here (missing model or data); the message says why."""


# ----------------------------------------------------------------------------------------- settings
class Settings:
    def __init__(self, args):
        self.ck = Path(args.checkpoints)
        self.out = Path(args.out)
        self.quick = args.quick
        self.device = args.device
        self.map = {}
        for item in args.map:
            name, sep, folder = item.partition("=")
            if not sep or not name or not folder:
                raise SystemExit(f"--map expects NAME=FOLDER, got {item!r}")
            self.map[name] = folder
        q = self.quick
        self.reverse_steps = 20 if q else 50
        self.ddpm_steps = (100,) if q else (100, 1000)
        self.grid_steps = 10 if q else 20                # DPM-Solver++ steps for the sample grids
        self.class_seeds = 4 if q else 8
        self.guidance_seeds = 2 if q else 4
        self.compare_steps = (20, 5) if q else (50, 10)  # DDIM steps, schedules_models
        self.cold_steps = 10 if q else 20
        self.sr_steps = 10 if q else None                # None: the cascade's own setting
        self._cache = {}

    def folder(self, name: str) -> Path:
        f = Path(self.map.get(name, name))
        return f if f.is_absolute() else self.ck / f

    def has(self, name: str) -> bool:
        return (self.folder(name) / "config.json").is_file()

    def pipe(self, name: str):
        if name not in self._cache:
            if not self.has(name):
                raise Skip(f"no model folder {self.folder(name)}")
            try:
                self._cache[name] = load(self.folder(name), device=self.device)
            except CheckpointError as e:
                raise Skip(f"cannot load {self.folder(name)}: {e}") from None
        return self._cache[name]


# ----------------------------------------------------------------------------------------- helpers
def tile(images: torch.Tensor, ncol: int, pad: int = 2) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> one uint8 image, row-major, white gaps of ``pad`` pixels."""
    arr = to_uint8(images)
    if arr.ndim == 3:
        arr = arr[..., None]
    b, h, w, c = arr.shape
    nrow = math.ceil(b / ncol)
    out = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, np.uint8)
    for i in range(b):
        r, k = divmod(i, ncol)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = arr[i]
    return out[..., 0] if c == 1 else out


def show_grid(ax, images: torch.Tensor, ncol: int, row_labels=(), col_labels=(), pad: int = 2, fontsize=9):
    """Draw a grid of images on one axes, with row labels on the left and column labels on top."""
    img = tile(images, ncol, pad)
    h, w = images.shape[-2:]
    ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_yticks([pad + r * (h + pad) + h / 2 - 0.5 for r in range(len(row_labels))])
    ax.set_yticklabels(row_labels, fontsize=fontsize)
    ax.xaxis.tick_top()
    ax.set_xticks([pad + k * (w + pad) + w / 2 - 0.5 for k in range(len(col_labels))])
    ax.set_xticklabels(col_labels, fontsize=fontsize)
    ax.tick_params(length=0, pad=3)
    for s in ax.spines.values():
        s.set_visible(False)


def grid_figure(images, ncol, row_labels=(), col_labels=(), title="", cell=0.62, fontsize=9, caption=""):
    nrow = math.ceil(len(images) / ncol)
    fig, ax = plt.subplots(figsize=(ncol * cell + 1.6, nrow * cell + 0.8))
    show_grid(ax, images, ncol, row_labels, col_labels, fontsize=fontsize)
    if title:
        ax.set_title(title, fontsize=fontsize + 2, pad=22 if col_labels else 6)
    if caption:
        ax.text(0.5, -0.01, caption, transform=ax.transAxes, ha="center", va="top", fontsize=fontsize - 1,
                color="0.3")
    return fig


def save_png(fig, path: Path, note: str = "") -> None:
    """Save a figure, then make sure the file stays below MAX_BYTES (palette, then smaller)."""
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.15, facecolor="white",
                metadata={"Software": "scripts/make_figures.py (diffusion_core)", "Description": note})
    plt.close(fig)
    shrink_png(path)


def shrink_png(path: Path) -> None:
    if path.stat().st_size <= MAX_BYTES:
        return
    img = Image.open(path).convert("RGB")
    scale = 1.0
    while True:
        cur = img if scale == 1.0 else img.resize((int(img.width * scale), int(img.height * scale)), Image.LANCZOS)
        pal = cur.quantize(colors=128, method=Image.Quantize.MEDIANCUT)
        pal.save(path, optimize=True)
        if path.stat().st_size <= MAX_BYTES or scale < 0.4:
            break
        scale *= 0.85
    print(f"    (re-saved {path.name} with a palette{'' if scale == 1.0 else f' at {scale:.2f}x'}: "
          f"{path.stat().st_size // 1000} KB)")


# cascade figure: attribute sets as real emoji carry them (emoji group + words of the name)
EMOJI_LABEL_SETS = [("Smileys & Emotion", "face"), ("People & Body", "woman", "dark skin tone"),
                    ("Symbols", "heart"), ("People & Body", "man", "light skin tone"), ("Flags", "flag"),
                    ("People & Body", "hand", "medium skin tone")]


def label_tensor(pipe, names_or_idx, n: int):
    """Per-image one-/multi-hot label tensor (n, L) cycling over ``names_or_idx``; () if the model has none."""
    L = pipe.config.unet.num_labels
    if not L or not names_or_idx:
        return ()
    lab = torch.zeros(n, L)
    for i in range(n):
        item = names_or_idx[i % len(names_or_idx)]
        for j in (item if isinstance(item, (list, tuple)) else [item]):
            lab[i, j if isinstance(j, int) else pipe.config.label_names.index(j)] = 1.0
    return lab


def preferred_class(pipe) -> str | None:
    names = pipe.config.label_names
    if not names or pipe.config.multi_label:
        return None
    return next((c for c in PREFERRED_CLASS if c in names), names[0])


def spread_classes(pipe, n: int) -> list:
    """Up to n distinct class indices spread over the label list (one image per class)."""
    L = len(pipe.config.label_names)
    if not L:
        return []
    if pipe.config.multi_label:
        picks = [pipe.config.label_names.index(a) for a in EMOJI_ATTRIBUTES if a in pipe.config.label_names]
        return picks[:n] if picks else []
    return sorted({int(round(v)) for v in np.linspace(0, L - 1, min(n, L))})


def short(name: str) -> str:
    return name.replace("T-shirt/top", "T-shirt")


def timed_sample(pipe, n, **kw):
    """(images, seconds per image). One warm-up step is run first so the timing excludes one-time costs."""
    warm = dict(kw, steps=1)
    if torch.is_tensor(warm.get("labels")):
        warm["labels"] = warm["labels"][:1]
    next(iter(pipe.stream(1, **warm)))
    t0 = time.perf_counter()
    x = pipe.sample(n, **kw)
    return x, (time.perf_counter() - t0) / n


def fmt_time(s: float) -> str:
    return f"{s * 1000:.0f} ms/image" if s < 1 else f"{s:.2f} s/image"


def fashion_image(index_class: str = "Ankle boot") -> torch.Tensor:
    """One real Fashion-MNIST test image (1, 1, 32, 32) in [-1, 1]."""
    from diffusion_core.data import DataConfig, load_data, to_tensor
    try:
        data = load_data(DataConfig(source="fashion", split="test", limit=16))
    except (FileNotFoundError, OSError) as e:
        raise Skip(f"Fashion-MNIST test data not available ({e})") from None
    names = data.label_names
    idx = 0
    if data.labels is not None and index_class in names:
        hits = np.flatnonzero(data.labels[:, names.index(index_class)] > 0)
        idx = int(hits[0]) if len(hits) else 0
    return to_tensor(data.images[idx:idx + 1])


# ----------------------------------------------------------------------------------------- figures
def fig_forward_noise(S: Settings):
    x0 = fashion_image()
    ts = [0, 50, 150, 300, 450, 600, 800, 999]
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(SEED))
    fig, axes = plt.subplots(2, len(ts) + 1, figsize=(1.05 * (len(ts) + 1), 3.2), layout="constrained")
    for r, kind in enumerate(("linear", "cosine")):
        sched = make_schedule(kind, 1000)
        axes[r, 0].imshow(to_uint8(x0[0]), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        axes[r, 0].set_title("x_0", fontsize=9)
        axes[r, 0].set_ylabel(kind, fontsize=10)
        for k, t in enumerate(ts, start=1):
            xt = sched.q_sample(x0, torch.tensor([t]), eps)
            ab = float(sched.alpha_bar_at(t))
            axes[r, k].imshow(to_uint8(xt[0]), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            axes[r, k].set_title(f"t={t}\nᾱ={ab:.3f}" if ab >= 0.001 else f"t={t}\nᾱ={ab:.0e}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Forward process q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I), same ε in both rows (T = 1000)",
                 fontsize=10)
    save_png(fig, S.out / "forward_noise.png", "one Fashion-MNIST test image, linear vs cosine, seed 0")


def fig_schedules(S: Settings):
    T = 1000
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    x = (np.arange(T) + 1) / T
    for kind, style in (("linear", "-"), ("cosine", "--")):
        sched = make_schedule(kind, T)
        label = "linear (β from 1e-4 to 0.02)" if kind == "linear" else "cosine (s = 0.008)"
        a1.plot(x, sched.alpha_bar.numpy(), style, label=label, lw=2)
        a2.plot(x, sched.log_snr().numpy(), style, label=label, lw=2)
    a1.set_xlabel("diffusion step (t / T)")
    a1.set_ylabel("ᾱ_t")
    a1.set_title("ᾱ_t: the share of signal variance left")
    a2.set_xlabel("diffusion step (t / T)")
    a2.set_ylabel("log SNR = log(ᾱ_t / (1 − ᾱ_t))")
    a2.set_title("log signal-to-noise ratio")
    a2.axhline(0, color="0.6", lw=0.8)
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, S.out / "schedules.png", "make_schedule('linear'|'cosine', T=1000)")


def fig_degradations(S: Settings):
    x0 = fashion_image()
    T = S.pipe("fashion-cold").config.diffusion.T if S.has("fashion-cold") else 100
    ts = [-1] + [int(round(f * T)) - 1 for f in (0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(SEED))
    rows, labels = [], []
    for name, label in (("noise_fixed", "Gaussian noise\n(cosine, fixed ε)"), ("blur", "blur"),
                        ("pixelate", "pixelate"), ("mask", "mask")):
        deg = make_degradation(name, T, make_schedule("cosine", T))
        for t in ts:
            rows.append(deg(x0, torch.tensor([t]), noise if deg.needs_noise else None))
        labels.append(label)
    cols = ["x_0"] + [f"t={t}" for t in ts[1:]]
    fig = grid_figure(torch.cat(rows), len(ts), labels, cols, cell=0.85,
                      title=f"Cold Diffusion degradations D(x_0, t), T = {T} (make_degradation)")
    save_png(fig, S.out / "degradations.png", f"T={T}")


def fig_reverse_ddim(S: Settings):
    pipe = S.pipe("fashion")
    cls = preferred_class(pipe)
    steps = S.reverse_steps
    recs = list(pipe.stream(1, sampler="ddim", steps=steps, guidance=2.0, labels=[cls] if cls else (), seed=SEED))
    picks = sorted({int(round(v)) for v in np.linspace(0, len(recs) - 1, 10)})
    xt = torch.cat([recs[i].x_t for i in picks] + [recs[-1].x_next.clamp(-1, 1)])
    x0 = torch.cat([recs[i].x0_hat for i in picks] + [recs[-1].x_next.clamp(-1, 1)])
    cols = [f"{i + 1}\nt={recs[i].t}" for i in picks] + ["out\nt=-1"]
    what = f"class {cls!r}, " if cls else ""
    fig = grid_figure(torch.cat([xt, x0]), len(cols), ["x_t", "x̂_0"], cols, cell=0.85, fontsize=8,
                      title=f"Reverse process, DDIM (η = 0) {steps} steps, {what}guidance 2, seed {SEED}")
    save_png(fig, S.out / "reverse_ddim.png", f"fashion ddim {steps} guidance 2 {cls} seed {SEED}")
    save_gif(recs, S.out / "reverse_ddim.gif", f"DDIM {steps}")


def save_gif(recs, path: Path, what: str) -> None:
    """x_t | x0_hat side by side at every step; smaller (scale, frame stride) until it fits MAX_BYTES."""
    try:
        font = ImageFont.load_default(size=11)
    except TypeError:            # Pillow < 10.1
        font = ImageFont.load_default()
    for scale, stride in ((4, 1), (3, 1), (3, 2), (2, 2), (2, 3)):
        frames = []
        idx = list(range(0, len(recs), stride))
        if idx[-1] != len(recs) - 1:
            idx.append(len(recs) - 1)
        for i in idx:
            r = recs[i]
            a = Image.fromarray(to_uint8(r.x_t[0])).convert("L")
            b = Image.fromarray(to_uint8(r.x0_hat[0])).convert("L")
            w, h = a.width * scale, a.height * scale
            frame = Image.new("L", (2 * w + 6, h + 30), 255)
            frame.paste(a.resize((w, h), Image.NEAREST), (0, 30))
            frame.paste(b.resize((w, h), Image.NEAREST), (w + 6, 30))
            d = ImageDraw.Draw(frame)
            d.text((2, 1), f"{what}: step {i + 1}/{len(recs)}, t={r.t}", fill=0, font=font)
            d.text((2, 15), "x_t", fill=0, font=font)
            d.text((w + 8, 15), "x0_hat", fill=0, font=font)
            frames.append(frame)
        last = recs[-1].x_next[0]
        a = Image.fromarray(to_uint8(last)).convert("L")
        end = Image.new("L", frames[0].size, 255)
        end.paste(a.resize((a.width * scale, a.height * scale), Image.NEAREST), (0, 30))
        ImageDraw.Draw(end).text((2, 1), f"{what}: x_0 (done)", fill=0, font=font)
        frames.append(end)
        buf = io.BytesIO()
        durations = [90] * (len(frames) - 1) + [1500]
        frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0,
                       optimize=True)
        if buf.tell() <= MAX_BYTES:
            break
    path.write_bytes(buf.getvalue())


def fig_samplers(S: Settings):
    pipe = S.pipe("fashion")
    classes = spread_classes(pipe, 6)
    n = max(len(classes), 1) if classes else 6
    lab = label_tensor(pipe, classes, n)
    runs = [("ddpm", k) for k in S.ddpm_steps] + [("ddim", 10), ("ddim", 25), ("ddim", 50),
                                                  ("dpm++", 10), ("dpm++", 20)]
    imgs, rows = [], []
    for name, steps in runs:
        x, sec = timed_sample(pipe, n, sampler=name, steps=steps, guidance=2.0, labels=lab, seed=SEED)
        imgs.append(x)
        rows.append(f"{sampler_info(name).label}, {steps} steps\n{fmt_time(sec)}")
        print(f"    {name:6s} {steps:4d} steps: {fmt_time(sec)}")
    cols = [short(pipe.config.label_names[c]) for c in classes] if classes else [f"seed {SEED + i}" for i in range(n)]
    fig = grid_figure(torch.cat(imgs), n, rows, cols, cell=0.8, fontsize=8,
                      title=f"Same seeds ({SEED}..{SEED + n - 1}), guidance 2: samplers and step counts",
                      caption=f"wall time per image, batch of {n} on {S.device} with {torch.get_num_threads()} "
                              f"thread(s); DDPM uses the posterior variance; DDIM η = 0")
    save_png(fig, S.out / "samplers.png", "time per image measured while the figure was made")


def fig_guidance(S: Settings):
    pipe = S.pipe("fashion")
    cls = preferred_class(pipe)
    scales = (0.0, 1.0, 2.0, 4.0, 7.0)
    n = S.guidance_seeds
    per_scale = [pipe.sample(n, sampler="dpm++", steps=S.grid_steps, guidance=w, labels=[cls] if cls else (),
                             seed=SEED) for w in scales]
    # rows = seeds, columns = guidance scales
    imgs = torch.stack(per_scale, dim=1).flatten(0, 1)
    cols = [f"w = {w:g}" + (" (uncond.)" if w == 0 else " (cond.)" if w == 1 else "") for w in scales]
    fig = grid_figure(imgs, len(scales), [f"seed {SEED + i}" for i in range(n)], cols, cell=0.9, fontsize=8,
                      title=f"Classifier-free guidance, class {cls!r}, DPM-Solver++ {S.grid_steps} steps")
    save_png(fig, S.out / "guidance.png", f"guidance scales {scales}")


def fig_classes(S: Settings):
    pipe = S.pipe("fashion")
    names = pipe.config.label_names
    if not names:
        raise Skip("the fashion model has no class labels")
    n = S.class_seeds
    imgs = torch.cat([pipe.sample(n, sampler="dpm++", steps=S.grid_steps, guidance=2.0, labels=[c], seed=SEED)
                      for c in names])
    fig = grid_figure(imgs, n, [short(c) for c in names], [f"seed {SEED + i}" for i in range(n)], fontsize=8,
                      title=f"Every class, DPM-Solver++ {S.grid_steps} steps, guidance 2")
    save_png(fig, S.out / "classes.png", "classes")


def fig_schedules_models(S: Settings):
    pipes = [S.pipe("fashion"), S.pipe("fashion-linear")]
    classes = spread_classes(pipes[0], 8)
    n = len(classes) or 8
    imgs, rows = [], []
    for steps in S.compare_steps:
        for name, p in zip(("fashion", "fashion-linear"), pipes):
            imgs.append(p.sample(n, sampler="ddim", steps=steps, guidance=2.0, labels=label_tensor(p, classes, n),
                                 seed=SEED))
            rows.append(f"{name}\n({p.config.diffusion.schedule}), DDIM {steps}")
    cols = [short(pipes[0].config.label_names[c]) for c in classes] if classes else []
    fig = grid_figure(torch.cat(imgs), n, rows, cols, cell=0.8, fontsize=8,
                      title="Two models that differ in the noise schedule: same seeds, same sampler, guidance 2")
    save_png(fig, S.out / "schedules_models.png", "fashion vs fashion-linear")


def fig_cold(S: Settings):
    pipe = S.pipe("fashion-cold")
    classes = spread_classes(pipe, 8)
    n = len(classes) or 8
    lab = label_tensor(pipe, classes, n)
    steps = S.cold_steps
    deg = pipe.config.diffusion.degradation
    recs = list(pipe.stream(n, sampler="cold", steps=steps, improved=True, labels=lab, seed=SEED))
    naive = pipe.sample(n, sampler="cold", steps=steps, improved=False, labels=lab, seed=SEED)
    improved = recs[-1].x_next.clamp(-1, 1)
    picks = sorted({int(round(v)) for v in np.linspace(0, len(recs) - 1, 8)})
    seq = torch.cat([torch.cat([recs[i].x_t[:1] for i in picks] + [improved[:1]]),
                     torch.cat([recs[i].x0_hat[:1] for i in picks] + [improved[:1]])])
    seq_cols = [f"{i + 1}\nt={recs[i].t}" for i in picks] + ["out\nt=-1"]
    cmp_imgs = torch.cat([recs[0].x_t, naive, improved])
    cmp_cols = [short(pipe.config.label_names[c]) for c in classes] if classes else []
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(max(len(seq_cols), n) * 0.85 + 2.0, 6.0),
                                 gridspec_kw={"height_ratios": [2, 3]})
    show_grid(a1, seq, len(seq_cols), ["x_t", "x̂_0"], seq_cols, fontsize=8)
    a1.set_title(f"Improved sampling (Alg. 2), first image: {steps} steps, degradation {deg!r}", fontsize=10, pad=24)
    show_grid(a2, cmp_imgs, n, ["start x_T\n(degraded)", "naive\n(Alg. 1)", "improved\n(Alg. 2)"], cmp_cols,
              fontsize=8)
    a2.set_title(f"Same starts, naive vs improved, {steps} steps", fontsize=10, pad=24)
    fig.tight_layout()
    save_png(fig, S.out / "cold.png", f"fashion-cold {deg} {steps} steps")


def fig_experts(S: Settings):
    pipe = S.pipe("fashion-experts")
    if pipe.kind != "ensemble":
        raise Skip(f"{S.folder('fashion-experts')} is not an expert ensemble")
    T = pipe.config.diffusion.T
    steps = S.grid_steps
    ts = [int(t) for t in spaced_timesteps(T, steps, "trailing")[:-1]]
    ranges = [(lo, hi) for lo, hi, _ in pipe.stages[0].experts]
    classes = spread_classes(pipe, 8)
    n = len(classes) or 8
    imgs, rows = [], []
    for name in ("fashion-experts", "fashion"):
        if name == "fashion" and not S.has("fashion"):
            continue
        p = S.pipe(name)
        imgs.append(p.sample(n, sampler="dpm++", steps=steps, guidance=2.0, labels=label_tensor(p, classes, n),
                             seed=SEED))
        rows.append(f"{name}\n({'ensemble' if p.kind == 'ensemble' else 'one model'})")
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(max(n * 0.85 + 2, 8), 4.4), gridspec_kw={"height_ratios": [1, 4]})
    strip = np.array([[pipe.stages[0].expert_index(t) for t in range(T - 1, -1, -1)]])
    cmap = plt.get_cmap("tab10")
    a1.imshow(strip, aspect="auto", cmap=cmap, vmin=0, vmax=9, extent=(T - 0.5, -0.5, 0, 1), interpolation="nearest")
    for t in ts:
        a1.axvline(t, color="black", lw=0.6, ymin=0, ymax=0.35)
    a1.set_yticks([])
    a1.set_xlabel(f"t (sampling runs left to right; ticks: the {steps} DPM-Solver++ steps)", fontsize=8)
    a1.legend(handles=[Patch(color=cmap(i), label=f"expert {i}: t in [{lo}, {hi})") for i, (lo, hi) in
                       enumerate(ranges)], fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 1.6),
              ncol=len(ranges), frameon=False)
    cols = [short(pipe.config.label_names[c]) for c in classes] if classes else []
    show_grid(a2, torch.cat(imgs), n, rows, cols, fontsize=8)
    a2.set_title(f"Same seeds, DPM-Solver++ {steps} steps, guidance 2", fontsize=10, pad=24)
    fig.tight_layout()
    save_png(fig, S.out / "experts.png", "expert ensemble")


def fig_cascade(S: Settings):
    cascade_figure(S, "emoji-cascade", "cascade.png")


def fig_pose_cascade(S: Settings):
    cascade_figure(S, "pose-cascade", "pose_cascade.png")


def fig_cascade128(S: Settings):
    cascade_figure(S, "emoji-cascade-128", "cascade128.png")


def fig_pose_cascade128(S: Settings):
    cascade_figure(S, "pose-cascade-128", "pose_cascade128.png")


def cascade_figure(S: Settings, name: str, filename: str):
    if not S.has(name):
        raise Skip(f"no cascade folder {S.folder(name)}")
    pipe = S.pipe(name)
    if pipe.kind != "cascade":
        raise Skip(f"{S.folder(name)} is not a cascade")
    base = pipe.base
    n = 6
    sd = base.config.sampling       # the base's own sampler and guidance, as the app runs it
    kw = dict(sampler=sd.sampler, steps=S.grid_steps, guidance=sd.guidance, seed=SEED)
    if S.sr_steps:
        kw["sr_steps"] = min(S.sr_steps, pipe.stages[-1].run_steps())
    cond_rows, row_labels, cols = [], [], []
    if base.config.task == "pose":
        from diffusion_core.data import to_tensor
        from diffusion_core.data.pose import make_pairs
        _, sticks = make_pairs(n, base.config.unet.image_size, seed=1_000_003)   # the held-out (test) seed
        kw["cond_image"] = to_tensor(sticks)
        cond_rows.append(kw["cond_image"])
        row_labels.append("stickman")
    elif base.config.multi_label:     # label sets like real emoji have: a group and the name's words
        sets = [s for s in EMOJI_LABEL_SETS if all(a in base.config.label_names for a in s)][:n]
        kw["labels"] = label_tensor(base, sets, n)
        cols = [", ".join(sets[i % len(sets)][1:]) for i in range(n)] if sets else []   # the group left out
    else:
        picks = spread_classes(base, n)
        kw["labels"] = label_tensor(base, picks, n)
        cols = [short(base.config.label_names[picks[i % len(picks)]]) for i in range(n)] if picks else []
    last = {}
    for rec in pipe.stream(n, **kw):
        last[rec.stage] = rec
    low = last[0].x_next.clamp(-1, 1)
    high = last[max(last)].x_next.clamp(-1, 1)
    size = high.shape[-1]
    near = F.interpolate(low, size=(size, size), mode="nearest")
    bic = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)
    # every super-resolution stage's output, the earlier ones nearest-upscaled to the last one's size
    stages = [F.interpolate(last[k].x_next.clamp(-1, 1), size=(size, size), mode="nearest") for k in sorted(last)[1:]]
    rows = [F.interpolate(c, size=(size, size), mode="nearest") for c in cond_rows] + [near, bic] + stages
    if rows[0].shape[1] != high.shape[1]:
        rows = [r.expand(-1, high.shape[1], -1, -1) for r in rows]
    row_labels += [f"base {low.shape[-1]} px\n(nearest)", f"bicubic\n{size} px"]
    row_labels += [f"SR stage\n{last[k].x_next.shape[-1]} px" for k in sorted(last)[1:]]
    fig = grid_figure(torch.cat(rows), n, row_labels, cols, title=f"{name}: base stage, then super-resolution",
                      cell=1.1 if size <= 64 else 1.7, fontsize=8)
    save_png(fig, S.out / filename, name)


# ----------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--checkpoints", default=str(ROOT / "checkpoints"), help="folder of model folders")
    ap.add_argument("--out", default=str(ROOT / "docs" / "figures"), help="where the figures go")
    ap.add_argument("--quick", action="store_true", help="fewer steps and seeds, no 1000-step DDPM (a preview)")
    ap.add_argument("--only", nargs="+", choices=FIGURES, metavar="NAME", help=f"only these: {', '.join(FIGURES)}")
    ap.add_argument("--map", action="append", default=[], metavar="NAME=FOLDER",
                    help="read model NAME (fashion, fashion-linear, fashion-cold, fashion-experts, emoji-cascade,\n"
                         "pose-cascade) from FOLDER (relative to --checkpoints, or absolute)")
    ap.add_argument("--device", default="cpu", help="torch device (default cpu)")
    args = ap.parse_args(argv)
    S = Settings(args)
    S.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    makers = {name: globals()[f"fig_{name}"] for name in FIGURES}
    t_all = time.perf_counter()
    made, skipped = [], []
    for name in args.only or FIGURES:
        t0 = time.perf_counter()
        try:
            makers[name](S)
        except Skip as e:
            print(f"skip {name}: {e}")
            skipped.append(name)
            continue
        outs = sorted(S.out.glob(f"{name}.*"))
        print(f"made {', '.join(f'{p.name} ({p.stat().st_size // 1000} KB)' for p in outs)} "
              f"in {time.perf_counter() - t0:.1f} s")
        made.append(name)
    print(f"{len(made)} figures made, {len(skipped)} skipped, {time.perf_counter() - t_all:.0f} s in all -> {S.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

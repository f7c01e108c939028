"""Where the network runs: the runtime layer between a denoiser and the U-Net (DESIGN.md habit 12).

A *backend* turns a trained network into a callable with the network's own signature
``net(x_t, t, cond) -> output`` (float32 in, float32 out); the maths above it never sees which one runs.

* ``fp32``: the network itself, eager PyTorch in float32: the reference every other backend is held to.
* ``bf16``: a copy whose convolution and linear weights are stored in bfloat16, run under autocast (matrix
  products in bf16 with fp32 accumulation; group norm, softmax and the sinusoidal time embedding stay fp32),
  channels_last. Fast on CPUs with bf16 matrix units (AVX-512 BF16, AMX), slow elsewhere; on CUDA, autocast.
* ``openvino``: the network exported to OpenVINO IR (``ov.convert_model``), cached beside the model in
  ``.cache/`` and never committed, compiled for this CPU (bf16 inference precision where the CPU has bf16
  units, else fp32), evaluated in fixed ``chunk``-row requests over one stream per core.

``choose`` picks one at load: the candidates this machine can run well (capability check), kept only where a
fixed batch's output matches fp32 (``match_error`` <= ``MATCH_TOLERANCE``), then timed on a guided batch; the
fastest wins, and a faster backend must beat fp32 by ``MIN_SPEEDUP``. The choice is remembered per (network,
CPU, library versions) in the cache. ``DIFFUSION_CORE_BACKEND`` or an explicit name forces one.

ONNX Runtime is not offered: on the CPUs measured it ran fp32 only, slower than OpenVINO's bf16 and no faster
than eager fp32 (docs/performance.md).
"""
from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from .. import options
from ..conditioning import Condition
from . import parallel
from .machine import BackendError, CpuInfo, cpu_info, weights_key  # noqa: F401  (re-exported: backends.cpu_info ...)

CHOICES, ENV = options.BACKENDS, options.BACKEND_ENV
BACKENDS = tuple(b for b in CHOICES if b != "auto")
MATCH_TOLERANCE = 0.02      # rms(out - fp32) / rms(fp32) on the fixed batch; bf16 measures ~0.004 (docs/performance.md)
MIN_SPEEDUP = 1.05          # a backend replaces fp32 only when at least this much faster in the timing
CACHE_DIR = ".cache"        # inside a model folder (git-ignored); else ~/.cache/diffusion_core


def openvino_version() -> str | None:
    try:
        import openvino
    except ImportError:
        return None
    return openvino.get_version()


def requested_backend(name: str | None = None, default: str = "auto") -> str:
    """The backend asked for: ``name`` if given, else the environment variable, else ``default`` (the one place
    that order is written: the library defaults to fp32, the command line's sample and the app to auto)."""
    name = (name or os.environ.get(ENV, "") or default).strip().lower()
    if name not in CHOICES:
        raise BackendError(f"unknown backend {name!r} (choose from {', '.join(CHOICES)})")
    return name


def available(device: str = "cpu") -> list[str]:
    """Backends that can run on ``device`` here (whether they run well is ``candidates``)."""
    if device != "cpu":
        return ["fp32", "bf16"]
    return ["fp32", "bf16"] + (["openvino"] if openvino_version() else [])


def candidates(device: str = "cpu", info: CpuInfo | None = None) -> list[str]:
    """The backends ``auto`` considers: fp32 always; bf16 and OpenVINO where bf16 matrix units make them worth
    a try, OpenVINO in fp32 too (it fuses the small element-wise layers)."""
    info = info or cpu_info()
    out = ["fp32"]
    if device != "cpu":
        return out + ["bf16"]
    if info.bf16_units:
        out.append("bf16")
    if openvino_version():
        out.append("openvino")
    return out


# ---- the backends -----------------------------------------------------------------------------------------
class Bf16Net:
    """``net`` with its Conv2d / Linear weights stored in bfloat16, run under autocast; returns float32.

    Memory layout: ``channels_last`` True / False, or None to time both on this machine once (a few forward
    passes) and keep the faster. On an AMD Zen 4 (AVX-512 BF16, 2 threads, 32 guided rows) NCHW took 109 ms
    against 121 in channels_last: PyTorch's channels_last group norm is slow in bf16 (docs/performance.md).
    ``image_size``: the side the network runs at, where the layouts are timed (None: its config's). A
    super-resolution stage trained on 32 px crops runs at up to 256 px, where the order flips: one pose-sr256 row
    at 256 px took 0.20 s in channels_last and 0.56 s in NCHW (Zen 4, 2 threads), and timed at 32 px NCHW won."""

    name = "bf16"

    def __init__(self, net: nn.Module, channels_last: bool | None = None, image_size: int | None = None):
        self.net, self.image_size = copy.deepcopy(net).eval(), image_size
        for m in self.net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.to(torch.bfloat16)
        self.device_type = next(self.net.parameters()).device.type
        if hasattr(self.net, "set_channels_last"):
            if channels_last is None:
                channels_last = self._faster_layout()
            self.net.set_channels_last(channels_last)

    def _faster_layout(self) -> bool:
        if self.device_type != "cpu":
            return True
        side = self.image_size or self.net.cfg.image_size
        x, t, cond = probe_batch(self.net.cfg, rows=min(8, rows_at(8, side)), image_size=side)
        best = {}
        with torch.inference_mode():
            for layout in (True, False, True, False):
                if len(best) == 2 and max(best.values()) > 2 * min(best.values()):
                    break           # one layout is clearly slower: no second round (bf16 NCHW was 6x on an AVX2 EPYC)
                self.net.set_channels_last(layout)
                start = time.perf_counter()
                self(x, t, cond)                                # its first call: a warm-up
                first = time.perf_counter() - start
                if best and first > 4 * min(best.values()):
                    best[layout] = first    # even its warm-up took 4x the other's time: it is not timed again
                    break
                start = time.perf_counter()
                self(x, t, cond)
                best[layout] = min(best.get(layout, 1e9), time.perf_counter() - start)
        return best[True] <= best[False]

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition | None) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.net(x_t, t, cond).float()


def make(net: nn.Module, name: str, cache_dir: Path | None = None, chunk: int = 8,
         image_size: int | None = None) -> Callable:
    """The network as backend ``name`` runs it (fp32: the network itself), at ``image_size`` px (None: its config's)."""
    if name == "fp32":
        return net
    if name == "bf16":
        return Bf16Net(net, image_size=image_size)
    if name == "openvino":
        from .openvino_net import OpenVinoNet
        return OpenVinoNet(net, cache_dir or user_cache(), chunk)
    raise BackendError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")


def user_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "diffusion_core"


def cache_dir_for(folder: Path | None) -> Path:
    """``folder/.cache`` where the model folder is writable, else the user's cache."""
    if folder is not None and os.access(folder, os.W_OK):
        return Path(folder) / CACHE_DIR
    return user_cache()


# ---- the gate and the choice ------------------------------------------------------------------------------
def probe_batch(cfg, rows: int = 16, image_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor, Condition | None]:
    """A fixed, seeded batch for the match check and the timing: noisy inputs at timesteps across the schedule,
    half of the rows unconditional (as classifier-free guidance runs)."""
    g = torch.Generator().manual_seed(1234)
    side = image_size or cfg.image_size
    x = torch.randn(rows, cfg.in_channels, side, side, generator=g)
    t = torch.linspace(0, 999, rows).round().long()
    kw = {}
    if cfg.num_labels:
        kw["labels"] = (torch.rand(rows, cfg.num_labels, generator=g) < 0.2).float()
    if cfg.label_mask:
        kw["known"] = (torch.rand(rows, cfg.num_labels, generator=g) < 0.5).float()
    if cfg.cond_channels:
        kw["image"] = torch.rand(rows, cfg.cond_channels, side, side, generator=g) * 2 - 1
    if cfg.aug_level_embedding:
        kw["aug_level"] = torch.full((rows,), 0.1)
    if cfg.num_labels or (cfg.cond_channels and not cfg.aug_level_embedding):
        kw["uncond"] = torch.arange(rows) % 2 == 1
    return x, t, (Condition(**kw) if kw else None)


def match_error(runner: Callable, net: nn.Module, image_size: int | None = None) -> float:
    """rms(runner - fp32) / rms(fp32) of the network output on ``probe_batch``."""
    x, t, cond = probe_batch(net.cfg, rows_at(16, image_size or net.cfg.image_size), image_size)
    with torch.inference_mode():
        ref = net(x, t, cond)
        out = runner(x, t, cond)
    return float((out - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt().clamp_min(1e-12))


TIMING_ROWS = (8, 32)        # network rows timed: 4 and 16 guided images (the app's default batch, the bench's)
TIMING_SIDE = 32             # ... at this image side; a larger network is timed on as many pixels, not rows


def rows_at(rows: int, side: int) -> int:
    """``rows`` rows of a TIMING_SIDE-px network, as rows of a ``side``-px one costing as many pixels (at least 2,
    so row workers still split them): a 128 px super-resolution stage timed on 32 full rows took minutes."""
    return max(2, round(rows * (TIMING_SIDE / side) ** 2))


def time_runner(runner: Callable, cfg, chunk: int, repeats: int = 3, image_size: int | None = None) -> float:
    """Seconds per network row through ``ChunkedNet`` (workers, chunks) as sampling runs it: the median of
    ``repeats`` timings of each batch in TIMING_ROWS, per row, averaged over the batches (a small and a large
    batch count alike)."""
    from .chunked import ChunkedNet
    den = ChunkedNet(runner, chunk)
    per_row = []
    with torch.inference_mode():
        for rows in (rows_at(r, image_size or cfg.image_size) for r in TIMING_ROWS):
            x, t, cond = probe_batch(cfg, rows, image_size)
            den(x, t, cond)                              # warm-up: first-call allocations, kernel selection
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                den(x, t, cond)
                times.append(time.perf_counter() - start)
            per_row.append(sorted(times)[len(times) // 2] / rows)
    return sum(per_row) / len(per_row)


@dataclass(frozen=True)
class Choice:
    name: str                   # the backend that runs
    reason: str                 # one line: forced, or the measurement
    seconds: dict               # backend -> seconds per network row (time_runner; empty when forced)
    errors: dict                # backend -> match_error

    def summary(self) -> str:
        return f"{self.name} ({self.reason})"


def _choice_file(cache: Path) -> Path:
    return cache / "backend-choice.json"


def choose(net: nn.Module, requested_name: str = "auto", folder: Path | None = None, chunk: int = 8,
           image_size: int | None = None, measure: bool = True) -> tuple[Callable, Choice]:
    """The runner and the choice for ``net``: a forced backend as asked, or for auto the fastest candidate whose
    output matches fp32, measured here (and remembered in the cache for this network, CPU and versions, with the
    load it was measured under). ``measure`` False (a server: its visitors would wait, and the timings would
    measure their load): only a remembered choice is used, else fp32 until ``python -m diffusion_core backends``
    has measured this machine, ahead of time and idle."""
    name = requested_backend(requested_name)
    device = next(net.parameters()).device.type
    cache = cache_dir_for(folder)
    if name != "auto":
        if name not in available(device):
            raise BackendError(f"backend {name!r} is not available here (available: {', '.join(available(device))})")
        return make(net, name, cache, chunk, image_size), Choice(name, "forced", {}, {})
    info = cpu_info()
    key = json.dumps([weights_key(net), info.model, info.flags, torch.__version__, openvino_version(),
                      parallel.workers(), chunk, image_size, device])
    remembered = _read_choice(cache, key)
    if remembered is not None and remembered.name in available(device):
        return make(net, remembered.name, cache, chunk, image_size), remembered
    cands = candidates(device, info)
    if cands == ["fp32"]:                 # nothing else worth a try here: no measurement
        return net, Choice("fp32", f"the only candidate on {info.model}", {}, {})
    if not measure:
        return net, Choice("fp32", "auto: not measured on this machine yet (python -m diffusion_core backends "
                                   "measures it once, idle)", {}, {})
    busy, load = _busy(), _load()       # the 1-minute load before the timings (they add their own)
    seconds, errors, runners = {}, {}, {}
    for cand in cands:
        try:
            runner = make(net, cand, cache, chunk, image_size)
            errors[cand] = 0.0 if cand == "fp32" else match_error(runner, net, image_size)
            if errors[cand] > MATCH_TOLERANCE:
                continue
            seconds[cand] = time_runner(runner, net.cfg, chunk, image_size=image_size)
            runners[cand] = runner
        except Exception as err:          # a runtime that fails here is simply not chosen
            errors[cand] = float("nan")
            seconds.pop(cand, None)
            print(f"backend {cand} not usable here: {type(err).__name__}: {err}")
    best = min(seconds, key=seconds.get)
    if best != "fp32" and seconds["fp32"] / seconds[best] < MIN_SPEEDUP:
        best = "fp32"
    reason = ", ".join(f"{k} {v * 1000:.2f} ms" for k, v in seconds.items()) + f" per row on {info.model}"
    reason += f", measured at load {load:.2f}"
    if busy is not None:          # timings taken beside other work can pick the wrong backend: use, do not keep
        reason += f" (machine busy, load {busy:.1f}: not remembered)"
    choice = Choice(best, reason, seconds, errors)
    if busy is None:
        _write_choice(cache, key, choice)
    return runners[best], choice


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return float("nan")


def _busy() -> float | None:
    """The 1-minute load average when other work holds at least half of this process's workers' cores (a timing
    then measures the contention as much as the backend), else None."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    return load if load >= max(1.0, parallel.workers() / 2) else None


def _read_choice(cache: Path, key: str) -> Choice | None:
    try:
        data = json.loads(_choice_file(cache).read_text()).get(key)
    except (OSError, ValueError):
        return None
    return Choice(**data) if isinstance(data, dict) else None


def _write_choice(cache: Path, key: str, choice: Choice) -> None:
    try:
        path = _choice_file(cache)
        data = json.loads(path.read_text()) if path.is_file() else {}
        data[key] = {"name": choice.name, "reason": choice.reason, "seconds": choice.seconds, "errors": choice.errors}
        cache.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1))
    except (OSError, ValueError):
        pass

"""What the backends need to know of this machine and of a network: the CPU's vector / matrix units, a network's
weights hash (the cache key of exports and choices), and the error a backend that cannot run here raises."""
from __future__ import annotations

import hashlib
import platform
from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn


class BackendError(ValueError):
    """A backend that cannot run here (runtime missing, wrong device): the message says why."""


# ---- what this CPU has ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: tuple[str, ...]          # the ones that matter here: avx2, avx512f, avx512_bf16, amx_bf16, amx_tile

    @property
    def bf16_units(self) -> bool:
        """Whether the CPU multiplies bf16 matrices in hardware (AVX-512 BF16 dot products or AMX tiles)."""
        return "avx512_bf16" in self.flags or "amx_bf16" in self.flags


_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_info() -> CpuInfo:
    """Model name and the vector / matrix flags of this CPU (from /proc/cpuinfo on Linux)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return CpuInfo(model, tuple(f for f in _FLAGS if f in flags))


def weights_key(net: nn.Module) -> str:
    """A short hash of the network's weights (the cache key of its exports and of the choice)."""
    h = hashlib.sha256()
    for k, v in net.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]

"""What a sampling run is asked for (``SamplerSpec``) and what it yields after every step (``SampleStep``), and the
per-image noise streams that make a seed give the same image at any batch size."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..sampler_registry import sampler_info


@dataclass(frozen=True)
class SampleStep:
    """One step of a run. x_t: the state at t; x_next: at t_next; x0_hat/eps_hat: the denoiser at t.

    Tensors are (B, C, H, W), roughly in [-1, 1] (x_t is noisier). ``stage`` counts cascade stages.
    """

    index: int
    num_steps: int
    t: int
    t_next: int
    x_t: torch.Tensor
    x_next: torch.Tensor
    x0_hat: torch.Tensor
    eps_hat: torch.Tensor
    stage: int = 0
    noise: torch.Tensor | None = None    # the z a stochastic step drew (None for deterministic steps)


@dataclass(frozen=True)
class SamplerSpec:
    """Which update rule to use (a name in ``sampler_registry``), and its options."""

    name: str = "ddim"
    eta: float = 0.0                 # DDIM: 0 deterministic, 1 DDPM-like
    variance: str = "posterior"      # DDPM: posterior (beta_tilde) or beta
    improved: bool = True            # cold: Alg. 2 (True) or Alg. 1 (False)

    def __post_init__(self):
        sampler_info(self.name)         # an unknown name: a ValueError that lists the known ones
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")
        if self.variance not in ("posterior", "beta"):
            raise ValueError(f"variance must be posterior or beta, got {self.variance!r}")

    @property
    def stochastic(self) -> bool:
        info = sampler_info(self.name)
        return info.stochastic or (info.noise_param is not None and getattr(self, info.noise_param) > 0)

    @property
    def multistep(self) -> bool:
        """Uses the denoiser's earlier outputs (its steps depend on the whole grid)."""
        return sampler_info(self.name).multistep


def per_image_noise(shape: Sequence[int], generators: Sequence[torch.Generator], device=None,
                    dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise with one RNG stream per image, so a seed gives the same image at any
    batch size (as in NVlabs/edm). shape: (B, C, H, W); len(generators) == B."""
    if len(generators) != shape[0]:
        raise ValueError(f"need one generator per image: {len(generators)} for a batch of {shape[0]}")
    noise = torch.stack([torch.randn(tuple(shape[1:]), generator=g, dtype=torch.float32) for g in generators])
    return noise.to(device=device, dtype=dtype)


def make_generators(seed: int, n: int) -> list[torch.Generator]:
    """Image i of a run with seed s uses the stream seeded s + i."""
    return [torch.Generator().manual_seed(int(seed) + i) for i in range(n)]


def slerp(a: torch.Tensor, b: torch.Tensor, alpha: float, eps: float = 1e-6) -> torch.Tensor:
    """Spherical linear interpolation from ``a`` (alpha 0) to ``b`` (alpha 1) along the great circle
    between their directions (Shoemake 1985; how DDIM interpolates x_T, Song et al. 2021 sec. 5.3):
    sin((1-alpha) theta) / sin(theta) a + sin(alpha theta) / sin(theta) b, theta = angle(a, b).
    Unit vectors stay unit vectors; Gaussian noise keeps its typical norm (a lerp would shrink it
    towards the middle). Nearly parallel (or antiparallel, or zero) inputs fall back to the lerp.
    Endpoints are returned exactly."""
    alpha = float(alpha)
    if a.shape != b.shape:
        raise ValueError(f"slerp needs tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if alpha == 0.0:
        return a.clone()
    if alpha == 1.0:
        return b.clone()
    a64, b64 = a.double(), b.double()
    na, nb = float(a64.norm()), float(b64.norm())
    if na == 0.0 or nb == 0.0:
        return ((1 - alpha) * a64 + alpha * b64).to(a.dtype)
    cos = max(-1.0, min(1.0, float((a64 * b64).sum()) / (na * nb)))
    theta = math.acos(cos)
    s = math.sin(theta)
    if s < eps:
        return ((1 - alpha) * a64 + alpha * b64).to(a.dtype)
    return (math.sin((1 - alpha) * theta) / s * a64 + math.sin(alpha * theta) / s * b64).to(a.dtype)

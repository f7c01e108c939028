"""Samplers: stateless steps over a denoiser, and one generator that is the sampling loop.

Every step maps (x_t, t, t_next, prediction) to x_{t_next}; ``t_next = -1`` is the clean image
(alpha_bar = 1). ``sample_stream`` iterates explicit (t, t_next) pairs from one timesteps tensor and
yields a frozen ``SampleStep`` after every step; ``sample`` runs it to the end. A consumer that stops
iterating simply stops the loop: nothing is left running and no state leaks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from .conditioning import Condition
from .degradations import Degradation
from .denoisers import Denoiser, Prediction
from .schedules import Schedule, spaced_timesteps, timestep_pairs

SAMPLERS = ("ddpm", "ddim", "dpm++", "cold")


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


@dataclass(frozen=True)
class SamplerSpec:
    """Which update rule to use, and its options."""

    name: str = "ddim"
    eta: float = 0.0                 # DDIM: 0 deterministic, 1 DDPM-like
    variance: str = "posterior"      # DDPM: posterior (beta_tilde) or beta
    improved: bool = True            # cold: Alg. 2 (True) or Alg. 1 (False)

    def __post_init__(self):
        if self.name not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.name!r}; choose one of {', '.join(SAMPLERS)}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")
        if self.variance not in ("posterior", "beta"):
            raise ValueError(f"variance must be posterior or beta, got {self.variance!r}")

    @property
    def stochastic(self) -> bool:
        return self.name == "ddpm" or (self.name == "ddim" and self.eta > 0)


def _ab(schedule: Schedule, t: int) -> float:
    return float(schedule.alpha_bar_at(t))


def ddpm_step(schedule: Schedule, x_t, t: int, t_next: int, pred: Prediction, noise, variance: str = "posterior"):
    """Ancestral step from the posterior q(x_{t_next} | x_t, x0_hat) (DDPM eqs. 6-7, respaced as in
    Nichol & Dhariwal 2021 sec. 4): beta = 1 - ab_t / ab_next,
    mu = sqrt(ab_next) beta / (1 - ab_t) x0_hat + sqrt(1 - beta) (1 - ab_next) / (1 - ab_t) x_t,
    var = (1 - ab_next) / (1 - ab_t) beta (posterior) or beta ("beta" variance). No noise at t_next = -1."""
    ab_t, ab_next = _ab(schedule, t), _ab(schedule, t_next)
    beta = 1 - ab_t / ab_next
    mean = (math.sqrt(ab_next) * beta / (1 - ab_t)) * pred.x0_hat \
        + (math.sqrt(1 - beta) * (1 - ab_next) / (1 - ab_t)) * x_t
    if t_next < 0:
        return mean
    var = (1 - ab_next) / (1 - ab_t) * beta if variance == "posterior" else beta
    return mean + math.sqrt(var) * noise


def ddim_step(schedule: Schedule, x_t, t: int, t_next: int, pred: Prediction, noise, eta: float = 0.0):
    """DDIM (Song et al. 2021, eq. 12): x_next = sqrt(ab_next) x0_hat + sqrt(1 - ab_next - sigma^2) eps_hat + sigma z,
    sigma = eta sqrt((1 - ab_next) / (1 - ab_t)) sqrt(1 - ab_t / ab_next)  (eq. 16)."""
    ab_t, ab_next = _ab(schedule, t), _ab(schedule, t_next)
    sigma = eta * math.sqrt((1 - ab_next) / (1 - ab_t)) * math.sqrt(1 - ab_t / ab_next)
    x_next = math.sqrt(ab_next) * pred.x0_hat + math.sqrt(max(1 - ab_next - sigma ** 2, 0.0)) * pred.eps_hat
    if sigma > 0:
        x_next = x_next + sigma * noise
    return x_next


def dpmpp_2m_step(schedule: Schedule, x_t, t: int, t_next: int, pred: Prediction,
                  prev: tuple[int, torch.Tensor] | None):
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), in the data-prediction form.

    alpha = sqrt(ab), sigma = sqrt(1 - ab), lambda = log(alpha / sigma), h = lambda_next - lambda_t.
    x_next = (sigma_next / sigma_t) x_t - alpha_next (e^{-h} - 1) D, with D = x0_hat on the first step and
    D = (1 + 1/(2r)) x0_hat - 1/(2r) x0_prev, r = h_prev / h, after it. The last step (t_next = -1,
    sigma_next = 0) is first order and returns x0_hat, as in the reference implementation.
    """
    if t_next < 0:
        return pred.x0_hat
    ab_t, ab_next = _ab(schedule, t), _ab(schedule, t_next)
    alpha_next, sigma_t, sigma_next = math.sqrt(ab_next), math.sqrt(1 - ab_t), math.sqrt(1 - ab_next)
    lam = lambda ab: 0.5 * math.log(ab / (1 - ab))  # noqa: E731
    h = lam(ab_next) - lam(ab_t)
    if prev is None:
        d = pred.x0_hat
    else:
        t_prev, x0_prev = prev
        r = (lam(ab_t) - lam(_ab(schedule, t_prev))) / h
        d = (1 + 1 / (2 * r)) * pred.x0_hat - (1 / (2 * r)) * x0_prev
    return (sigma_next / sigma_t) * x_t - alpha_next * math.expm1(-h) * d


def cold_step(degradation: Degradation, x_t, t: int, t_next: int, pred: Prediction, fixed_noise,
              improved: bool = True):
    """Cold Diffusion sampling (Bansal et al. 2022).

    Alg. 1 (naive):    x_next = D(x0_hat, t_next)
    Alg. 2 (improved): x_next = x_t - D(x0_hat, t) + D(x0_hat, t_next)
    with D(x, -1) = x, so the last step of Alg. 2 returns x_t - D(x0_hat, t) + x0_hat.
    """
    b = x_t.shape[0]
    tn = torch.full((b,), t_next, dtype=torch.long, device=x_t.device)
    d_next = degradation(pred.x0_hat, tn, fixed_noise)
    if not improved:
        return d_next
    d_t = degradation(pred.x0_hat, torch.full((b,), t, dtype=torch.long, device=x_t.device), fixed_noise)
    return x_t - d_t + d_next


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


def sample_stream(denoiser: Denoiser, x_start: torch.Tensor, timesteps: torch.Tensor, spec: SamplerSpec,
                  schedule: Schedule | None = None, cond: Condition | None = None,
                  generators: Sequence[torch.Generator] | None = None, degradation: Degradation | None = None,
                  fixed_noise: torch.Tensor | None = None, stage: int = 0) -> Iterator[SampleStep]:
    """The sampling loop. Yields a SampleStep after each (t, t_next) pair of ``timesteps``.

    x_start: x at timesteps[0] (pure noise for generation, a noised image for img2img, a fully degraded
    image for cold sampling). Stochastic samplers draw their noise from ``generators`` (one per image).
    """
    if spec.name == "cold":
        if degradation is None:
            raise ValueError("the cold sampler needs a model trained with a cold degradation")
    elif schedule is None:
        raise ValueError(f"the {spec.name} sampler needs a Gaussian noise schedule (this model is a cold-diffusion model)")
    if spec.stochastic and generators is None:
        raise ValueError("a stochastic sampler needs generators")
    pairs = timestep_pairs(timesteps)
    x = x_start
    prev = None
    for i, (t, t_next) in enumerate(pairs):
        # inference mode is per thread: enter it for each step, never across a yield (a UI may resume
        # this generator on another worker thread)
        with torch.inference_mode():
            t_vec = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
            pred = denoiser(x, t_vec, cond)
            if spec.name == "cold":
                x_next = cold_step(degradation, x, t, t_next, pred, fixed_noise, spec.improved)
            elif spec.name == "dpm++":
                x_next = dpmpp_2m_step(schedule, x, t, t_next, pred, prev)
            else:
                noise = (per_image_noise(x.shape, generators, x.device, x.dtype)
                         if spec.stochastic and t_next >= 0 else None)
                if spec.name == "ddpm":
                    x_next = ddpm_step(schedule, x, t, t_next, pred, noise, spec.variance)
                else:
                    x_next = ddim_step(schedule, x, t, t_next, pred, noise, spec.eta)
            prev = (t, pred.x0_hat)
        yield SampleStep(i, len(pairs), t, t_next, x, x_next, pred.x0_hat, pred.eps_hat, stage)
        x = x_next


def sample(denoiser: Denoiser, x_start: torch.Tensor, timesteps: torch.Tensor, spec: SamplerSpec,
           **kwargs) -> torch.Tensor:
    """Run ``sample_stream`` to the end and return the final x_0 (B, C, H, W)."""
    last = None
    for last in sample_stream(denoiser, x_start, timesteps, spec, **kwargs):
        pass
    if last is None:
        raise ValueError("no sampling steps")
    return last.x_next


def noised_start(schedule: Schedule, x0: torch.Tensor, num_steps: int, strength: float, spacing: str,
                 generators: Sequence[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
    """img2img / SDEdit (Meng et al. 2022): noise x0 to t_start = round(strength * T) - 1 and return
    (x_{t_start}, timesteps from t_start down to -1). strength in (0, 1]."""
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    t_start = max(0, int(round(strength * schedule.T)) - 1)
    ts = spaced_timesteps(schedule.T, min(num_steps, t_start + 1), spacing, t_start=t_start)
    eps = per_image_noise(x0.shape, generators, x0.device, x0.dtype)
    t_vec = torch.full((x0.shape[0],), int(ts[0]), dtype=torch.long)
    return schedule.q_sample(x0, t_vec, eps), ts

"""Noise schedules and timestep spacing: pure functions over tensors.

Notation follows Ho et al. 2020 (DDPM) and Nichol & Dhariwal 2021 (improved DDPM):
``beta_t`` is the per-step variance, ``alpha_t = 1 - beta_t`` and
``alpha_bar_t = prod_{s<=t} alpha_s``, so that q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
(DDPM eq. 4). Timesteps are integers ``t in {0, ..., T-1}``; the special index ``t = -1`` stands for the
clean image (alpha_bar = 1) so that every sampler can iterate explicit ``(t, t_next)`` pairs that end
exactly at x_0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .options import NOISE_LEVEL_SPACINGS, SPACINGS  # noqa: F401 (re-exported)

KARRAS_RHO = 7.0    # Karras et al. 2022, eq. 5: "rho = 7"
# The noise-level grids stop at lambda = log(alpha / sigma_vp) = -5.1, i.e. sigma = e^5.1 ~ 164, the clipping DPM-Solver's
# code uses for the cosine schedule: there sigma(T-1) is ~2e4 (alpha_bar ~ 2e-9, from the clipped last betas) and
# an unclipped grid spends most steps on t = 990..999, where x_t is noise either way. The linear schedule ends at
# sigma = 158, below the cap, so it is unchanged.
SIGMA_MAX_GRID = math.exp(5.1)
SCHEDULES = ("linear", "cosine")


def linear_betas(T: int, beta_1: float = 1e-4, beta_T: float = 0.02) -> torch.Tensor:
    """DDPM's linear schedule (Ho et al. 2020, sec. 4): betas from beta_1 to beta_T. Shape (T,), float64."""
    return torch.linspace(beta_1, beta_T, T, dtype=torch.float64)


def cosine_alpha_bar(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021, eq. 17), with betas clipped at ``max_beta``.

    alpha_bar(t) = f(t) / f(0), f(t) = cos(((t/T + s) / (1 + s)) * pi/2)^2. Returns alpha_bar_t for
    t = 0..T-1 (i.e. the value after t+1 forward steps), shape (T,), float64.
    """
    steps = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos(((steps / T) + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return torch.cumprod(1 - betas, dim=0)


@dataclass(frozen=True)
class Schedule:
    """A discrete noise schedule. ``alpha_bar`` has shape (T,), float64, strictly decreasing in (0, 1)."""

    alpha_bar: torch.Tensor

    @property
    def T(self) -> int:
        return int(self.alpha_bar.shape[0])

    @property
    def betas(self) -> torch.Tensor:
        prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])
        return 1 - self.alpha_bar / prev

    def alpha_bar_at(self, t: torch.Tensor | int) -> torch.Tensor:
        """alpha_bar_t with alpha_bar_{-1} = 1 (the clean image). Accepts an int or an int tensor; float64."""
        t = torch.as_tensor(t, dtype=torch.long).cpu()     # the table lives on the CPU; so does the result
        padded = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar])
        return padded[t + 1]

    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) (Kingma et al. 2021), shape (T,)."""
        return self.alpha_bar / (1 - self.alpha_bar)

    def sigmas(self) -> torch.Tensor:
        """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), the noise level of x_t / sqrt(alpha_bar_t) (Karras et al.
        2022's sigma for a variance-preserving schedule), shape (T,), float64, increasing in t."""
        return ((1 - self.alpha_bar) / self.alpha_bar).sqrt()

    def log_snr(self) -> torch.Tensor:
        """lambda_t = log SNR(t), shape (T,)."""
        return torch.log(self.snr())

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Forward process x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (DDPM eq. 4).

        x0, eps: (B, C, H, W); t: (B,) long, any device. Returns x_t with x0's dtype and device.
        """
        ab = self.alpha_bar_at(t).view(-1, *([1] * (x0.dim() - 1)))   # float64: 1 - ab is exact near ab = 1
        return ab.sqrt().to(x0) * x0 + (1 - ab).sqrt().to(x0) * eps


def make_schedule(kind: str = "cosine", T: int = 1000, beta_1: float = 1e-4, beta_T: float = 0.02,
                  cosine_s: float = 0.008) -> Schedule:
    """Build a schedule by name. ``linear`` uses (beta_1, beta_T); ``cosine`` uses s."""
    if kind == "linear":
        if not (0 < beta_1 <= beta_T < 1):
            raise ValueError(f"linear schedule needs 0 < beta_1 <= beta_T < 1, got {beta_1}, {beta_T}")
        return Schedule(torch.cumprod(1 - linear_betas(T, beta_1, beta_T), dim=0))
    if kind == "cosine":
        return Schedule(cosine_alpha_bar(T, cosine_s))
    raise ValueError(f"unknown schedule {kind!r}; choose one of {SCHEDULES}")


def spaced_timesteps(T: int, num_steps: int, spacing: str = "trailing", t_start: int | None = None,
                     schedule: "Schedule | None" = None) -> torch.Tensor:
    """Descending timesteps for few-step sampling, followed by -1 (the clean image).

    Spacings as tabulated by Lin et al. 2024 ("Common diffusion noise schedules and sample steps are
    flawed", Table 2): ``linspace`` rounds linspace(0, T-1, K); ``leading`` takes multiples of T//K from 0;
    ``trailing`` counts down from T-1 in strides of T/K. Two more follow the noise level and need the
    ``schedule``: ``logsnr`` is uniform in log-SNR (Lu et al. 2022, DPM-Solver sec. 3.3) and ``karras`` uniform
    in sigma^(1/rho), rho = 7 (Karras et al. 2022, eq. 5), both from sigma at the top timestep to sigma at
    t = 0, each point taken to the nearest integer timestep (``timesteps_for_sigmas``). ``t_start`` (for
    img2img) restricts the grid to [0, t_start]. Returns a long tensor of shape (K+1,), strictly
    decreasing, last entry -1 (K can only shrink where two noise levels round to one timestep).
    """
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {SPACINGS}")
    top = T if t_start is None else int(t_start) + 1
    if not (1 <= num_steps <= top):
        raise ValueError(f"steps must be in [1, {top}], got {num_steps}")
    # Grids are exact integer ratios rounded half-to-even: a float arange/linspace can land an ulp off a
    # .5 tie, and a float arange can even return K+1 entries (T=1000, K=61 gave a duplicate -1).
    if spacing == "linspace":    # round(i (top-1) / (K-1)), i = 0..K-1
        ts = (torch.arange(num_steps, dtype=torch.float64) * (top - 1) / max(num_steps - 1, 1)).round().long()
    elif spacing == "leading":   # i * (top // K)
        ts = torch.arange(num_steps, dtype=torch.long) * (top // num_steps)
    elif spacing == "trailing":  # round(top (K-i) / K) - 1, i = 0..K-1
        ts = (torch.arange(num_steps, 0, -1, dtype=torch.float64) * top / num_steps).round().long() - 1
    else:
        if schedule is None:
            raise ValueError(f"the {spacing} spacing needs the noise schedule")
        ts = timesteps_for_sigmas(schedule, noise_level_grid(schedule, num_steps, spacing, top - 1))
    ts = torch.unique(ts).flip(0)  # strictly decreasing
    return torch.cat([ts, torch.tensor([-1], dtype=torch.long)])


def noise_level_grid(schedule: "Schedule", num_steps: int, spacing: str, t_max: int) -> torch.Tensor:
    """K noise levels sigma_i, i = 0..K-1, from sigma_max = min(sigma(t_max), SIGMA_MAX_GRID) down to sigma_min = sigma(0), with
    sigma = sqrt((1 - alpha_bar) / alpha_bar) (the noise of x_t / sqrt(alpha_bar); Karras et al. 2022, sec. 2).
    karras:  sigma_i = (sigma_max^(1/rho) + i/(K-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho   (eq. 5)
    logsnr:  log sigma_i = log sigma_max + i/(K-1) (log sigma_min - log sigma_max)  (log-SNR = -2 log sigma)
    Float64, shape (K,)."""
    sigma = schedule.sigmas()
    s_max, s_min = min(float(sigma[t_max]), SIGMA_MAX_GRID), float(sigma[0])
    ramp = torch.arange(num_steps, dtype=torch.float64) / max(num_steps - 1, 1)
    if spacing == "karras":
        inv = 1 / KARRAS_RHO
        return (s_max ** inv + ramp * (s_min ** inv - s_max ** inv)) ** KARRAS_RHO
    return torch.exp(math.log(s_max) + ramp * (math.log(s_min) - math.log(s_max)))


def timesteps_for_sigmas(schedule: "Schedule", sigmas: torch.Tensor) -> torch.Tensor:
    """The integer timesteps nearest to noise levels ``sigmas``: the fractional t at which log sigma(t),
    linearly interpolated between integer timesteps, equals log sigma_i, rounded half to even. (log sigma(t)
    is increasing in t.) Long tensor, same shape as ``sigmas``."""
    log_sigma = schedule.sigmas().log().numpy()
    frac = np.interp(sigmas.log().numpy(), log_sigma, np.arange(len(log_sigma), dtype=np.float64))
    return torch.from_numpy(np.round(frac)).long()


def timestep_pairs(timesteps: torch.Tensor) -> list[tuple[int, int]]:
    """Explicit (t, t_next) pairs from one descending timesteps tensor (DESIGN habit 2)."""
    ts = [int(v) for v in timesteps]
    return list(zip(ts[:-1], ts[1:]))

"""The one sampling loop: ``sample_stream`` iterates explicit (t, t_next) pairs and yields a frozen ``SampleStep``
after every step; ``sample`` runs it to the end; ``final_denoise`` adds a last denoising step; ``explain_step``
reads a recorded step's weights off its rule; img2img (SDEdit) starts from a noised image."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from ..conditioning import Condition
from ..degradations import Degradation
from ..denoisers import Denoiser, Prediction
from ..schedules import Schedule, spaced_timesteps, timestep_pairs
from .steps import make_step
from .spec import SampleStep, SamplerSpec, per_image_noise


def sample_stream(denoiser: Denoiser, x_start: torch.Tensor, timesteps: torch.Tensor, spec: SamplerSpec,
                  schedule: Schedule | None = None, cond: Condition | None = None,
                  generators: Sequence[torch.Generator] | None = None, degradation: Degradation | None = None,
                  fixed_noise: torch.Tensor | None = None, stage: int = 0) -> Iterator[SampleStep]:
    """The sampling loop. Yields a SampleStep after each (t, t_next) pair of ``timesteps``.

    x_start: x at timesteps[0] (pure noise for generation, a noised image for img2img, a fully degraded
    image for cold sampling). Stochastic samplers draw their noise from ``generators`` (one per image).
    """
    step = make_step(spec, timesteps, schedule, degradation, fixed_noise)
    if step.stochastic and generators is None:
        raise ValueError("a stochastic sampler needs generators")
    pairs = timestep_pairs(timesteps)
    x = x_start
    for i, (t, t_next) in enumerate(pairs):
        # inference mode is per thread: enter it for each step, never across a yield (a UI may resume
        # this generator on another worker thread)
        with torch.inference_mode():
            t_vec = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
            pred = denoiser(x, t_vec, cond)
            noise = per_image_noise(x.shape, generators, x.device, x.dtype) if step.stochastic and t_next >= 0 else None
            x_next = step(x, t, t_next, pred, noise)
        yield SampleStep(i, len(pairs), t, t_next, x, x_next, pred.x0_hat, pred.eps_hat, stage, noise)
        x = x_next


def final_denoise(records: Iterator[SampleStep], denoiser: Denoiser, t: int, schedule: Schedule,
                  cond: Condition | None = None, canvas: tuple[int, int] | None = None) -> Iterator[SampleStep]:
    """``records`` (a run), then one more step: its result x denoised once at timestep ``t``, taken as x_t =
    sqrt(alpha_bar_t) x, so that x = x_0 + sigma_t eps with sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), and
    replaced by the denoiser's E[x_0 | x_t] (Tweedie's formula; the last denoising step of Song et al. 2021 and
    Jolicoeur-Martineau et al. 2021, which removes the small noise a sampler leaves). Every record's ``num_steps``
    counts the added step. ``canvas``: the (H, W) the denoiser runs on when the records were cropped from it (the
    result is padded by edge replication to it, and the step cropped back)."""
    last = None
    for last in records:
        yield replace(last, num_steps=last.num_steps + 1)
    if last is None:
        return
    x = last.x_next
    h, w = x.shape[-2:]
    with torch.inference_mode():
        x_t = schedule.alpha_bar_at(t).sqrt().to(x.dtype) * x
        padded = x_t if canvas is None else F.pad(x_t, (0, canvas[1] - w, 0, canvas[0] - h), mode="replicate")
        pred = denoiser(padded, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device), cond)
    x0, eps = pred.x0_hat[..., :h, :w], pred.eps_hat[..., :h, :w]
    yield SampleStep(last.index + 1, last.num_steps + 1, t, -1, x_t, x0, x0, eps, last.stage)


@dataclass(frozen=True)
class StepExplanation:
    """Step ``index`` of a recorded run as x_next = sum(weights[k] * terms[k]).

    ``terms``: the named tensors the sampler's update combined (x_t as it used it, after UniC's correction for
    UniPC; x0_hat, eps_hat; ``x0_hat[t_k]``, the denoiser's output at an earlier t_k; ``noise``, the z of a
    stochastic step; cold's ``D(x0_hat,t)`` and ``D(x0_hat,t_next)``). ``weights``: their coefficients, read
    from the update itself on unit inputs (it is linear in them), so they cannot drift from the sampler.
    ``x_next``: the update applied to the terms, the sampler's own x_next. ``info``: the step's named scalars."""

    index: int
    t: int
    t_next: int
    weights: dict[str, float]
    terms: dict[str, torch.Tensor]
    x_next: torch.Tensor
    info: dict


def explain_step(spec: SamplerSpec, timesteps: torch.Tensor, records: Sequence[SampleStep], i: int,
                 schedule: Schedule | None = None, degradation: Degradation | None = None,
                 fixed_noise: torch.Tensor | None = None) -> StepExplanation:
    """Explain step ``i`` of ``records`` (a run of ``spec`` over ``timesteps``, at least its first i + 1 steps):
    the step object is replayed over the records, so multistep state is what the run had. A stochastic
    step needs its record's ``noise``."""
    step = make_step(spec, timesteps, schedule, degradation, fixed_noise)
    if step.stochastic and any(r.noise is None and r.t_next >= 0 for r in records[:i + 1]):
        raise ValueError("explaining a stochastic run needs the noise its steps drew (SampleStep.noise)")
    for rec in records[:i]:
        step(rec.x_t, rec.t, rec.t_next, Prediction(rec.x0_hat, rec.eps_hat), rec.noise)
    rec = records[i]
    t, t_next = int(rec.t), int(rec.t_next)
    terms = step.inputs(rec.x_t, t, t_next, Prediction(rec.x0_hat, rec.eps_hat), rec.noise)

    def unit(name):
        return {k: torch.full((1,), 1.0 if k == name else 0.0, dtype=torch.float64) for k in terms}

    weights = {k: float(step.rule(unit(k), t, t_next)) for k in terms}
    return StepExplanation(i, t, t_next, weights, terms, step.rule(terms, t, t_next), step.info(t, t_next))


def sample(denoiser: Denoiser, x_start: torch.Tensor, timesteps: torch.Tensor, spec: SamplerSpec,
           **kwargs) -> torch.Tensor:
    """Run ``sample_stream`` to the end and return the final x_0 (B, C, H, W)."""
    last = None
    for last in sample_stream(denoiser, x_start, timesteps, spec, **kwargs):
        pass
    if last is None:
        raise ValueError("no sampling steps")
    return last.x_next


def img2img_timesteps(T: int, num_steps: int, strength: float, spacing: str,
                      schedule: Schedule | None = None) -> torch.Tensor:
    """The grid of an img2img run (SDEdit, Meng et al. 2022; cold diffusion's too): it starts at
    t_start = round(strength * T) - 1 and takes at most t_start + 1 steps down to -1."""
    t_start = max(0, int(round(strength * T)) - 1)
    return spaced_timesteps(T, min(num_steps, t_start + 1), spacing, t_start=t_start, schedule=schedule)


def noised_start(schedule: Schedule, x0: torch.Tensor, num_steps: int, strength: float, spacing: str,
                 generators: Sequence[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
    """img2img / SDEdit (Meng et al. 2022): noise x0 to t_start = round(strength * T) - 1 and return
    (x_{t_start}, timesteps from t_start down to -1). strength in (0, 1]."""
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    ts = img2img_timesteps(schedule.T, num_steps, strength, spacing, schedule)
    eps = per_image_noise(x0.shape, generators, x0.device, x0.dtype)
    t_vec = torch.full((x0.shape[0],), int(ts[0]), dtype=torch.long)
    return schedule.q_sample(x0, t_vec, eps), ts

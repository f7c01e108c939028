"""Denoisers: callables ``(x_t, t, cond) -> Prediction(x0_hat, eps_hat)``.

A network's raw output (eps, x0 or v) becomes a Prediction through ``ModelDenoiser``; classifier-free
guidance, x0 clipping and expert routing are wrappers with the same call signature (DESIGN habit 1),
so every sampler works with every combination of them.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Protocol

import torch

from .conditioning import Condition, cat_conditions
from .options import X0_RANGES
from .schedules import Schedule


@dataclass(frozen=True)
class Prediction:
    """x0_hat: the denoiser's estimate of the clean image; eps_hat: of the noise in x_t.

    Both (B, C, H, W). For cold (deterministic) degradations eps_hat is the residual x_t - x0_hat.
    """

    x0_hat: torch.Tensor
    eps_hat: torch.Tensor


class Denoiser(Protocol):
    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition | None) -> Prediction: ...


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))


def prediction_from_output(out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, schedule: Schedule | None,
                           prediction: str) -> Prediction:
    """Convert a network output into (x0_hat, eps_hat) using x_t = sqrt(ab) x0 + sqrt(1-ab) eps (DDPM eq. 4).

    eps: x0_hat = (x_t - sqrt(1-ab) eps_hat) / sqrt(ab)                    (DDPM eq. 15)
    x0:  eps_hat = (x_t - sqrt(ab) x0_hat) / sqrt(1-ab)
    v:   v = sqrt(ab) eps - sqrt(1-ab) x0  =>  x0_hat = sqrt(ab) x_t - sqrt(1-ab) v,
         eps_hat = sqrt(1-ab) x_t + sqrt(ab) v                              (Salimans & Ho 2022, sec. 4)
    """
    if schedule is None:                       # cold diffusion: the network predicts x0 directly
        return Prediction(out, x_t - out)
    ab = _bcast(schedule.alpha_bar_at(t.cpu()).to(x_t.device), x_t)
    a, s = ab.sqrt(), (1 - ab).sqrt()
    if prediction == "eps":
        return Prediction((x_t - s * out) / a, out)
    if prediction == "x0":
        return Prediction(out, (x_t - a * out) / s)
    if prediction == "v":
        return Prediction(a * x_t - s * out, s * x_t + a * out)
    raise ValueError(f"unknown prediction type {prediction!r}")



def training_target(x0: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor, prediction: str) -> torch.Tensor:
    """What the network regresses at x_t = sqrt(ab) x0 + sqrt(1-ab) eps: the inverse of prediction_from_output.

    eps: eps (DDPM eq. 14);  x0: x0;  v: v = sqrt(ab) eps - sqrt(1-ab) x0 (Salimans & Ho 2022, sec. 4).
    ``alpha_bar``: (B,), broadcast over the image dimensions."""
    ab = _bcast(alpha_bar, x0)
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        return ab.sqrt() * eps - (1 - ab).sqrt() * x0
    raise ValueError(f"unknown prediction type {prediction!r}")


def min_snr_weight(snr: torch.Tensor, gamma: float, prediction: str) -> torch.Tensor:
    """Min-SNR-gamma loss weight (Hang et al. 2023) for each prediction type: the x0-space weight min(SNR, gamma)
    expressed for an eps loss (divide by SNR), an x0 loss (as is) or a v loss (divide by SNR + 1)."""
    clipped = snr.clamp(max=gamma)
    return {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}[prediction]

class ModelDenoiser:
    """Wraps a network ``net(x_t, t, cond) -> output`` (eps, x0 or v, as ``prediction`` says) into a Denoiser.
    How the network's rows are computed (fixed chunks, row workers, a backend) is the network callable's
    business: ``runtime.ChunkedNet`` wraps one with the same signature."""

    def __init__(self, net: Callable, schedule: Schedule | None, prediction: str = "eps"):
        self.net, self.schedule, self.prediction = net, schedule, prediction

    def __call__(self, x_t, t, cond):
        return prediction_from_output(self.net(x_t, t, cond), x_t, t, self.schedule, self.prediction)


class ClassifierFreeGuidance:
    """eps_tilde = eps_u + w (eps_c - eps_u)  (Ho & Salimans 2022, eq. 6, with w = 1 + their w).

    The conditional and unconditional passes run as one batch of 2B. The same affine combination is
    applied to x0_hat, which keeps (x0_hat, eps_hat) consistent with x_t. Scale 1 is the conditional
    model exactly (no second pass); scale 0 is the unconditional model.

    ``held`` (a (L,) 0/1 mask of attributes, for a model with partial labels): where a row picks some of these
    attributes, its second pass is not the null condition but those picks alone (known and present, everything
    else unknown), so they are guided at weight 1 and the other picks at w:
        x0 = x0(held picks) + w (x0(all picks) - x0(held picks))
    A row without a held pick, and a full label vector (``known`` None: every attribute specified), is guided as
    above. Guidance pushes every pick away from the unconditional model,
    and for a colour that overshoots: the emoji's dark skin tone comes out near-black (docs/models.md, issue 20).
    """

    def __init__(self, denoiser: Denoiser, scale: float | torch.Tensor, held: torch.Tensor | None = None):
        """``scale``: one w, or a (B,) tensor of one w per row (a distillation teacher's, Meng et al. 2023)."""
        self.denoiser, self.held = denoiser, held
        self.scale = scale if torch.is_tensor(scale) else float(scale)

    def negative(self, cond: Condition) -> Condition:
        """The condition of the second pass: the null condition, or per row the held picks alone."""
        if self.held is None or cond.labels is None or cond.known is None:
            return cond.null()
        keep = cond.labels * cond.known * self.held.to(cond.labels)
        has = keep.sum(1) > 0
        uncond = ~has if cond.uncond is None else cond.uncond | ~has
        return replace(cond, labels=torch.where(has[:, None], keep, cond.labels),
                       known=torch.where(has[:, None], keep, cond.known), uncond=uncond)

    def __call__(self, x_t, t, cond):
        if (not torch.is_tensor(self.scale) and self.scale == 1.0) or cond is None or not cond.has_guidable():
            return self.denoiser(x_t, t, cond)
        both = self.denoiser(torch.cat([x_t, x_t]), torch.cat([t, t]), cat_conditions(cond, self.negative(cond)))
        b = x_t.shape[0]
        w = _bcast(self.scale, x_t) if torch.is_tensor(self.scale) else self.scale
        x0_c, x0_u = both.x0_hat[:b], both.x0_hat[b:]
        eps_c, eps_u = both.eps_hat[:b], both.eps_hat[b:]
        return Prediction(x0_u + w * (x0_c - x0_u), eps_u + w * (eps_c - eps_u))


class GuidanceInput:
    """Guidance as an input (guided distillation, Meng et al. 2023): a network trained with ``unet.guidance_embedding``
    reads the scale w from the condition (``Condition.guidance``) and gives the guided prediction in one pass;
    ``ClassifierFreeGuidance``'s two passes are its teacher. Rows without a condition are passed on unchanged."""

    def __init__(self, denoiser: Denoiser, scale: float):
        self.denoiser, self.scale = denoiser, float(scale)

    def __call__(self, x_t, t, cond):
        if cond is None:
            return self.denoiser(x_t, t, cond)
        w = torch.full((x_t.shape[0],), self.scale, dtype=torch.float32, device=x_t.device)
        return self.denoiser(x_t, t, replace(cond, guidance=w))


class ClipX0:
    """Keep x0_hat in range: ``clip`` to [-1, 1], or ``dynamic`` thresholding (Saharia et al. 2022, sec. 2.3):
    s = max(1, quantile_p(|x0_hat|)) per image, x0_hat <- clamp(x0_hat, -s, s) / s. eps_hat is then
    recomputed from x_t so that the pair stays consistent."""

    def __init__(self, denoiser: Denoiser, schedule: Schedule | None, mode: str = "clip", p: float = 0.995):
        if mode not in X0_RANGES:
            raise ValueError(f"unknown clipping mode {mode!r}")
        self.denoiser, self.schedule, self.mode, self.p = denoiser, schedule, mode, p

    def __call__(self, x_t, t, cond):
        pred = self.denoiser(x_t, t, cond)
        if self.mode == "none":
            return pred
        x0 = pred.x0_hat
        if self.mode == "clip":
            x0 = x0.clamp(-1, 1)
        else:
            s = torch.quantile(x0.abs().flatten(1).float(), self.p, dim=1).clamp(min=1).to(x0.dtype)
            s = _bcast(s, x0)
            x0 = x0.clamp(-s, s) / s
        if self.schedule is None:
            return Prediction(x0, x_t - x0)
        ab = _bcast(self.schedule.alpha_bar_at(t.cpu()).to(x_t.device), x_t)
        return Prediction(x0, (x_t - ab.sqrt() * x0) / (1 - ab).sqrt())


class ExpertEnsemble:
    """eDiff-I (Balaji et al. 2022): each expert denoises the timesteps of its range [t_lo, t_hi).

    ``experts``: list of (t_lo, t_hi, denoiser). The ranges must tile [0, T) exactly.
    """

    def __init__(self, experts: list[tuple[int, int, Denoiser]], T: int):
        check_tiling([(lo, hi) for lo, hi, _ in experts], T)
        self.experts = sorted(experts, key=lambda e: e[0])
        self.T = T

    def expert_index(self, t: int) -> int:
        for i, (lo, hi, _) in enumerate(self.experts):
            if lo <= t < hi:
                return i
        raise ValueError(f"timestep {t} is outside [0, {self.T})")

    def __call__(self, x_t, t, cond):
        idx = torch.tensor([self.expert_index(int(v)) for v in t.tolist()])
        x0 = torch.empty_like(x_t)
        eps = torch.empty_like(x_t)
        for i in torch.unique(idx).tolist():
            sel = (idx == i).to(x_t.device)
            sub_cond = None if cond is None else cond.index(sel)
            pred = self.experts[i][2](x_t[sel], t[sel], sub_cond)
            x0[sel], eps[sel] = pred.x0_hat, pred.eps_hat
        return Prediction(x0, eps)


def check_tiling(ranges: list[tuple[int, int]], T: int) -> None:
    """Raise ValueError unless the [lo, hi) ranges tile [0, T) exactly (no gap, no overlap)."""
    if not ranges:
        raise ValueError("an ensemble needs at least one expert")
    rs = sorted(ranges)
    if rs[0][0] != 0:
        raise ValueError(f"expert ranges must start at 0, first starts at {rs[0][0]}")
    for (lo, hi), (lo2, _) in zip(rs, rs[1:]):
        if hi != lo2:
            kind = "gap" if hi < lo2 else "overlap"
            raise ValueError(f"expert ranges have a {kind} between [{lo}, {hi}) and [{lo2}, ...)")
    if rs[-1][1] != T:
        raise ValueError(f"expert ranges must end at T={T}, last ends at {rs[-1][1]}")
    for lo, hi in rs:
        if hi <= lo:
            raise ValueError(f"empty expert range [{lo}, {hi})")

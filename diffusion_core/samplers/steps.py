"""Each sampler's rule as a step object (``make_step``): its inputs, a rule linear in them, and its own state
(the multistep solvers' earlier x0_hat), so the sampling loop has no branch on the sampler's name. Which class runs
which sampler is the sampler's record in ``sampler_registry`` (``SamplerInfo.step``)."""
from __future__ import annotations

from typing import Sequence

import torch

from ..degradations import Degradation
from ..denoisers import Prediction
from ..sampler_registry import sampler_info
from ..schedules import Schedule
from .spec import SamplerSpec
from .updates import (_ab, _lam, cold_update, ddim_sigma, ddim_step, ddpm_step, ddpm_variance, dpm_step_size,
                      consistency_step, dpmpp_2m_step, dpmpp_3m_step, progressive_step, redegrade, unipc_correct,
                      unipc_step)


class Step:
    """One sampler's update rule as an object: ``step(x_t, t, t_next, pred, noise) -> x_next``. A step keeps
    what its rule needs from earlier steps (multistep solvers: the earlier x0_hat) and validates its own
    inputs, so the loop treats every sampler alike. ``stochastic``: it needs fresh noise for each t_next >= 0.

    A call is three parts, so that the same code that samples also explains a step (``explain_step``):
    ``inputs`` names the tensors the update combines (x_t, x0_hat, eps_hat, an earlier ``x0_hat[t_k]``, the
    ``noise``, cold's re-degraded images) without changing the state; ``rule`` is the update, linear in them;
    ``advance`` keeps what later steps need. ``info`` gives the step's named scalars (order, h, sigma...).
    ``build`` makes the step for one run from the request's ``SamplerSpec`` (``make_step`` calls it)."""

    stochastic = False

    @classmethod
    def build(cls, spec: SamplerSpec, timesteps: torch.Tensor, schedule: Schedule | None,
              degradation: Degradation | None, fixed_noise: torch.Tensor | None) -> "Step":
        """The step for one run over ``timesteps`` (a rule that reads only the schedule: ``cls(schedule)``)."""
        return cls(schedule)

    def inputs(self, x_t, t: int, t_next: int, pred: Prediction, noise) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def rule(self, v: dict[str, torch.Tensor], t: int, t_next: int) -> torch.Tensor:
        raise NotImplementedError

    def advance(self, v: dict[str, torch.Tensor], t: int, t_next: int, pred: Prediction) -> None:
        pass

    def info(self, t: int, t_next: int) -> dict:
        return {}

    def __call__(self, x_t, t: int, t_next: int, pred: Prediction, noise):
        v = self.inputs(x_t, t, t_next, pred, noise)
        x_next = self.rule(v, t, t_next)
        self.advance(v, t, t_next, pred)
        return x_next


def _with_noise(v: dict, noise, t_next: int) -> dict:
    return {**v, "noise": noise} if noise is not None and t_next >= 0 else v


class DDPMStep(Step):
    stochastic = True

    def __init__(self, schedule: Schedule, variance: str):
        self.schedule, self.variance = schedule, variance

    @classmethod
    def build(cls, spec, timesteps, schedule, degradation, fixed_noise):
        return cls(schedule, spec.variance)

    def inputs(self, x_t, t, t_next, pred, noise):
        return _with_noise({"x_t": x_t, "x0_hat": pred.x0_hat}, noise, t_next)

    def rule(self, v, t, t_next):
        return ddpm_step(self.schedule, v["x_t"], t, t_next, Prediction(v["x0_hat"], None), v.get("noise"),
                         self.variance)

    def info(self, t, t_next):
        beta, var = ddpm_variance(_ab(self.schedule, t), _ab(self.schedule, t_next), self.variance)
        return {"beta": beta, "variance": self.variance, "posterior_variance": var}


class DDIMStep(Step):
    def __init__(self, schedule: Schedule, eta: float):
        self.schedule, self.eta, self.stochastic = schedule, eta, eta > 0

    @classmethod
    def build(cls, spec, timesteps, schedule, degradation, fixed_noise):
        return cls(schedule, spec.eta)

    def inputs(self, x_t, t, t_next, pred, noise):
        return _with_noise({"x0_hat": pred.x0_hat, "eps_hat": pred.eps_hat}, noise, t_next)

    def rule(self, v, t, t_next):
        return ddim_step(self.schedule, None, t, t_next, Prediction(v["x0_hat"], v["eps_hat"]), v.get("noise"),
                         self.eta)

    def info(self, t, t_next):
        return {"eta": self.eta, "sigma": ddim_sigma(_ab(self.schedule, t), _ab(self.schedule, t_next), self.eta)}


class ConsistencyStep(Step):
    """A consistency-distilled student's own rule, ``consistency_step`` (Song et al. 2023, Alg. 1): the network's
    x0_hat is the consistency function f(x_t, t); each step but the last noises it afresh to the next time."""
    stochastic = True

    def __init__(self, schedule: Schedule):
        self.schedule = schedule

    def inputs(self, x_t, t, t_next, pred, noise):
        return _with_noise({"x0_hat": pred.x0_hat}, noise, t_next)

    def rule(self, v, t, t_next):
        return consistency_step(self.schedule, v["x0_hat"], t_next, v.get("noise"))

    def info(self, t, t_next):
        ab = _ab(self.schedule, t_next)
        return {"alpha_next": ab ** 0.5, "sigma_next": (1 - ab) ** 0.5}


class ProgressiveStep(Step):
    """A progressively distilled student's own rule, ``progressive_step`` (Salimans & Ho 2022, Alg. 2): DDIM from x_t
    and x0_hat, on the grid the student was distilled on."""

    def __init__(self, schedule: Schedule):
        self.schedule = schedule

    def inputs(self, x_t, t, t_next, pred, noise):
        return {"x_t": x_t, "x0_hat": pred.x0_hat}

    def rule(self, v, t, t_next):
        return progressive_step(self.schedule, v["x_t"], t, t_next, Prediction(v["x0_hat"], None))

    def info(self, t, t_next):
        ab_t, ab_s = _ab(self.schedule, t), _ab(self.schedule, t_next)
        return {"alpha_t": ab_t ** 0.5, "sigma_t": (1 - ab_t) ** 0.5, "alpha_next": ab_s ** 0.5,
                "sigma_next": (1 - ab_s) ** 0.5}


def _earlier(history: Sequence[tuple[int, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Earlier x0_hat as named inputs: ``x0_hat[t_k]`` is the x0_hat the denoiser gave at t_k."""
    return {f"x0_hat[{tk}]": x0 for tk, x0 in history}


def _history(v: dict, times: Sequence[int]) -> list[tuple[int, torch.Tensor]]:
    return [(tk, v[f"x0_hat[{tk}]"]) for tk in times]


def _order_near_the_end(timesteps: torch.Tensor, t_next: int, order: int, few: int | None) -> int:
    """``order``, capped by the number of steps left (this one included) on grids of fewer than ``few`` steps
    (``few`` None: on every grid): the last step is first order, the one before at most second order. This is
    the stabilising rule of the solvers' reference code ("lower_order_final": DPM-Solver below 15 steps,
    UniPC always); the step into t = -1 returns x0_hat either way."""
    ts = [int(v) for v in timesteps]
    steps = len(ts) - 1
    if few is not None and steps >= few:
        return order
    return min(order, steps - ts.index(t_next) + 1)


class _Multistep(Step):
    """A solver of order up to ``order`` that reuses the x0_hat of its last steps (``history``): its ``update``
    function gets the earlier (t_k, x0_hat_k) the order of this step needs, newest last."""

    few: int | None = None      # lower the order near the end on grids of fewer steps (None: on every grid)
    update = None               # the solver's step function (schedule, x_t, t, t_next, pred, history, order)

    def __init__(self, schedule: Schedule, timesteps: torch.Tensor, order: int, keep: int):
        self.schedule, self.timesteps, self.order, self.keep = schedule, timesteps, order, keep
        self.history: list[tuple[int, torch.Tensor]] = []      # (t_i, x0_hat_i), newest last, ``keep`` of them

    @classmethod
    def build(cls, spec, timesteps, schedule, degradation, fixed_noise):
        return cls(schedule, timesteps)

    def order_at(self, t_next: int) -> int:
        """The order of the step into t_next: capped near the end and by how many earlier points there are."""
        return min(_order_near_the_end(self.timesteps, t_next, self.order, self.few), len(self.history) + 1)

    def _used(self, t_next):
        k = self.order_at(t_next) - 1
        return [] if t_next < 0 or k == 0 else self.history[-k:]

    def corrected(self, x_t, t, pred):
        """x_t as the step uses it (a predictor-corrector solver corrects it first)."""
        return x_t

    def inputs(self, x_t, t, t_next, pred, noise):
        x_t = self.corrected(x_t, t, pred)
        if t_next < 0:
            return {"x0_hat": pred.x0_hat}
        return {"x_t": x_t, "x0_hat": pred.x0_hat, **_earlier(self._used(t_next))}

    def rule(self, v, t, t_next):
        hist = _history(v, [tk for tk, _ in self._used(t_next)])
        return type(self).update(self.schedule, v.get("x_t"), t, t_next, Prediction(v["x0_hat"], None), hist,
                                 len(hist) + 1)

    def advance(self, v, t, t_next, pred):
        self.history = (self.history + [(t, pred.x0_hat)])[-self.keep:]

    def info(self, t, t_next):
        return {"order": 1 if t_next < 0 else self.order_at(t_next)}


def _dpmpp_2m_update(schedule: Schedule, x_t, t: int, t_next: int, pred: Prediction,
                     history: Sequence[tuple[int, torch.Tensor]], order: int):
    """``dpmpp_2m_step`` with its earlier point given as a history (empty on the first step)."""
    return dpmpp_2m_step(schedule, x_t, t, t_next, pred, history[-1] if history else None)


class DPMpp2MStep(_Multistep):
    few = 0                     # second order to the end, on every grid (the step into t = -1 returns x0_hat)
    update = staticmethod(_dpmpp_2m_update)

    def __init__(self, schedule: Schedule, timesteps: torch.Tensor):
        super().__init__(schedule, timesteps, 2, keep=1)

    def info(self, t, t_next):
        if t_next < 0:
            return {"order": 1, "note": "last step: x_next = x0_hat (sigma_next = 0)"}
        used = self._used(t_next)
        h, r = dpm_step_size(self.schedule, t, t_next, used[0][0] if used else None)
        out = {"order": 2 if used else 1, "lambda_t": _lam(_ab(self.schedule, t)),
               "lambda_next": _lam(_ab(self.schedule, t_next)), "h": h}
        return {**out, "r": r, "t_prev": used[0][0]} if used else out


class DPMpp3MStep(_Multistep):
    few = 15
    update = staticmethod(dpmpp_3m_step)

    def __init__(self, schedule: Schedule, timesteps: torch.Tensor):
        super().__init__(schedule, timesteps, 3, keep=2)


class UniPCStep(_Multistep):
    """UniPC-bh2 (Zhao et al. 2023): predictor UniP-``order`` and, from the second step on, the corrector UniC
    applied to x_t with the denoiser's output at x_t before predicting x_next (Alg. 1-2). The state the
    next corrector redoes is the corrected x_t; the x0_hat kept is the one the denoiser gave at x_t."""

    update = staticmethod(unipc_step)

    def __init__(self, schedule: Schedule, timesteps: torch.Tensor, order: int = 2):
        if order not in (1, 2, 3):
            raise ValueError(f"UniPC order must be 1, 2 or 3, got {order}")
        super().__init__(schedule, timesteps, order, keep=order)
        self.last: tuple[torch.Tensor, int, int] | None = None   # (x_s, s, order) of the previous prediction

    def corrected(self, x_t, t, pred):
        """x_t as UniC corrects it with the denoiser's output at x_t (the recorded x_t on the first step)."""
        if self.last is None:
            return x_t
        x_s, s, used = self.last
        *earlier, (_, x0_s) = self.history
        return unipc_correct(self.schedule, x_s, s, x0_s, t, x_t, pred, earlier, used)

    def advance(self, v, t, t_next, pred):
        order = self.order_at(t_next)
        super().advance(v, t, t_next, pred)
        self.last = (v["x_t"], t, order) if t_next >= 0 else None

    def info(self, t, t_next):
        return {**super().info(t, t_next), "corrected": self.last is not None}


class ColdStep(Step):
    def __init__(self, degradation: Degradation, fixed_noise, improved: bool):
        self.degradation, self.fixed_noise, self.improved = degradation, fixed_noise, improved

    @classmethod
    def build(cls, spec, timesteps, schedule, degradation, fixed_noise):
        return cls(degradation, fixed_noise, spec.improved)

    def inputs(self, x_t, t, t_next, pred, noise):
        d_next = {"D(x0_hat,t_next)": redegrade(self.degradation, pred.x0_hat, t_next, self.fixed_noise)}
        if not self.improved:
            return d_next
        return {"x_t": x_t, "D(x0_hat,t)": redegrade(self.degradation, pred.x0_hat, t, self.fixed_noise), **d_next}

    def rule(self, v, t, t_next):
        return cold_update(v.get("x_t"), v.get("D(x0_hat,t)"), v["D(x0_hat,t_next)"], self.improved)

    def info(self, t, t_next):
        T = self.degradation.T
        return {"improved": self.improved, "degradation": self.degradation.name, "T": T,
                "severity_t": (t + 1) / T, "severity_next": max(t_next + 1, 0) / T}


def make_step(spec: SamplerSpec, timesteps: torch.Tensor, schedule: Schedule | None = None,
              degradation: Degradation | None = None, fixed_noise: torch.Tensor | None = None) -> Step:
    """The update rule ``spec`` names (its registry record's ``step`` class), for one run over ``timesteps``."""
    info = sampler_info(spec.name)
    if not info.gaussian and degradation is None:
        raise ValueError(f"the {spec.name} sampler needs a model trained with a cold degradation")
    if info.gaussian and schedule is None:
        raise ValueError(f"the {spec.name} sampler needs a Gaussian noise schedule (this model is a cold-diffusion model)")
    return info.step_class().build(spec, timesteps, schedule, degradation, fixed_noise)

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
from .options import SAMPLERS
from .schedules import Schedule, spaced_timesteps, timestep_pairs



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

    @property
    def multistep(self) -> bool:
        """Uses the denoiser's earlier outputs (its steps depend on the whole grid)."""
        return self.name in ("dpm++", "dpm++3m", "unipc")


def _ab(schedule: Schedule, t: int) -> float:
    return float(schedule.alpha_bar_at(t))


def ddpm_variance(ab_t: float, ab_next: float, variance: str = "posterior") -> tuple[float, float]:
    """(beta, sigma^2) of a respaced DDPM step: beta = 1 - ab_t / ab_next; sigma^2 = (1 - ab_next) / (1 - ab_t) beta
    (the posterior's beta_tilde, DDPM eq. 7) or beta itself ("beta" variance)."""
    beta = 1 - ab_t / ab_next
    return beta, ((1 - ab_next) / (1 - ab_t) * beta if variance == "posterior" else beta)


def ddpm_step(schedule: Schedule, x_t, t: int, t_next: int, pred: Prediction, noise, variance: str = "posterior"):
    """Ancestral step from the posterior q(x_{t_next} | x_t, x0_hat) (DDPM eqs. 6-7, respaced as in
    Nichol & Dhariwal 2021 sec. 4): beta = 1 - ab_t / ab_next,
    mu = sqrt(ab_next) beta / (1 - ab_t) x0_hat + sqrt(1 - beta) (1 - ab_next) / (1 - ab_t) x_t,
    var = (1 - ab_next) / (1 - ab_t) beta (posterior) or beta ("beta" variance). No noise at t_next = -1."""
    ab_t, ab_next = _ab(schedule, t), _ab(schedule, t_next)
    beta, var = ddpm_variance(ab_t, ab_next, variance)
    mean = (math.sqrt(ab_next) * beta / (1 - ab_t)) * pred.x0_hat \
        + (math.sqrt(1 - beta) * (1 - ab_next) / (1 - ab_t)) * x_t
    if t_next < 0:
        return mean
    return mean + math.sqrt(var) * noise


def ddim_sigma(ab_t: float, ab_next: float, eta: float) -> float:
    """DDIM's sigma_t(eta) = eta sqrt((1 - ab_next) / (1 - ab_t)) sqrt(1 - ab_t / ab_next) (Song et al. 2021, eq. 16)."""
    return eta * math.sqrt((1 - ab_next) / (1 - ab_t)) * math.sqrt(1 - ab_t / ab_next)


def ddim_step(schedule: Schedule, x_t, t: int, t_next: int, pred: Prediction, noise, eta: float = 0.0):
    """DDIM (Song et al. 2021, eq. 12): x_next = sqrt(ab_next) x0_hat + sqrt(1 - ab_next - sigma^2) eps_hat + sigma z,
    sigma = ``ddim_sigma`` (eq. 16)."""
    ab_t, ab_next = _ab(schedule, t), _ab(schedule, t_next)
    sigma = ddim_sigma(ab_t, ab_next, eta)
    x_next = math.sqrt(ab_next) * pred.x0_hat + math.sqrt(max(1 - ab_next - sigma ** 2, 0.0)) * pred.eps_hat
    if sigma > 0:
        x_next = x_next + sigma * noise
    return x_next


def _lam(ab: float) -> float:
    """lambda = log(alpha / sigma) = log(sqrt(ab) / sqrt(1 - ab)), half the log-SNR (Lu et al. 2022)."""
    return 0.5 * math.log(ab / (1 - ab))


def dpm_step_size(schedule: Schedule, t: int, t_next: int, t_prev: int | None = None) -> tuple[float, float | None]:
    """(h, r) of a multistep exponential-integrator step: h = lambda_next - lambda_t, and r = h_prev / h with
    h_prev = lambda_t - lambda_prev (None without an earlier step)."""
    h = _lam(_ab(schedule, t_next)) - _lam(_ab(schedule, t))
    return h, (None if t_prev is None else (_lam(_ab(schedule, t)) - _lam(_ab(schedule, t_prev))) / h)


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
    h, r = dpm_step_size(schedule, t, t_next, None if prev is None else prev[0])
    if prev is None:
        d = pred.x0_hat
    else:
        d = (1 + 1 / (2 * r)) * pred.x0_hat - (1 / (2 * r)) * prev[1]
    return (sigma_next / sigma_t) * x_t - alpha_next * math.expm1(-h) * d


def dpmpp_3m_step(schedule: Schedule, x_t, t: int, t_next: int, pred: Prediction,
                  history: Sequence[tuple[int, torch.Tensor]], order: int = 3):
    """DPM-Solver++(3M), the third-order multistep solver in data prediction (Lu et al. 2022, "DPM-Solver++",
    sec. 4 with the third-order multistep update of DPM-Solver's App. B). ``history`` holds the earlier
    (t_i, x0_hat_i), newest last; ``order`` is capped by how many there are (1: DDIM, 2: the 2M update).

    With lambda as in 2M, h = lambda_next - lambda_t, h_0 = lambda_t - lambda_1, h_1 = lambda_1 - lambda_2,
    r_0 = h_0 / h, r_1 = h_1 / h and the divided differences of the x0 estimates
      D1_0 = (x0_t - x0_1) / r_0,  D1_1 = (x0_1 - x0_2) / r_1,
      D1 = D1_0 + r_0 / (r_0 + r_1) (D1_0 - D1_1),  D2 = (D1_0 - D1_1) / (r_0 + r_1):
    x_next = (sigma_next / sigma_t) x_t - alpha_next (e^{-h} - 1) x0_t + alpha_next ((e^{-h} - 1) / h + 1) D1
             - alpha_next ((e^{-h} - 1 + h) / h^2 - 1/2) D2.
    The last step (t_next = -1, sigma_next = 0) is first order and returns x0_hat, as in 2M."""
    order = min(order, len(history) + 1)
    if t_next < 0 or order < 3:
        return dpmpp_2m_step(schedule, x_t, t, t_next, pred, history[-1] if order == 2 and history else None)
    (t_2, x0_2), (t_1, x0_1) = history[-2], history[-1]
    ab_t, ab_next = _ab(schedule, t), _ab(schedule, t_next)
    alpha_next, sigma_t, sigma_next = math.sqrt(ab_next), math.sqrt(1 - ab_t), math.sqrt(1 - ab_next)
    lam_t, lam_1, lam_2 = _lam(ab_t), _lam(_ab(schedule, t_1)), _lam(_ab(schedule, t_2))
    h = _lam(ab_next) - lam_t
    r_0, r_1 = (lam_t - lam_1) / h, (lam_1 - lam_2) / h
    d1_0, d1_1 = (pred.x0_hat - x0_1) / r_0, (x0_1 - x0_2) / r_1
    d1 = d1_0 + (r_0 / (r_0 + r_1)) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r_0 + r_1)
    phi_1 = math.expm1(-h)
    return ((sigma_next / sigma_t) * x_t - (alpha_next * phi_1) * pred.x0_hat + (alpha_next * (phi_1 / h + 1)) * d1
            - (alpha_next * ((phi_1 + h) / h ** 2 - 0.5)) * d2)


def _unipc_weights(h: float, rks: Sequence[float], corrector: bool) -> tuple[float, float, list[float]]:
    """UniPC's coefficients for step size h in lambda (Zhao et al. 2023, Alg. 1-2 with B(h) = e^h - 1, "bh2", in
    data prediction, where the exponential integrator runs over -h). Returns (phi_1, B, rho), with
    phi_1 = e^{-h} - 1 and rho solving R rho = b: R[i][k] = r_k^i for the p = len(rks) points (rks ends with
    1), b_i = g_{i+1} (i+1)! / B with g_1 = phi_1 / (-h) - 1 and g_{i+1} = g_i / (-h) - 1 / (i+1)!.
    The predictor uses the first p - 1 equations and unknowns; for p = 2 it takes rho = 1/2, and the
    corrector at p = 1 rho = 1/2, as the authors' code does."""
    hh = -h
    phi_1 = math.expm1(hh)
    big_b = phi_1                       # B(h) = e^{hh} - 1 ("bh2")
    g, fact, b = phi_1 / hh - 1, 1, []
    for i in range(1, len(rks) + 1):
        b.append(g * fact / big_b)
        fact *= i + 1
        g = g / hh - 1 / fact
    p = len(rks)
    if corrector:
        if p == 1:      # UniC-1
            return phi_1, big_b, [0.5]
        m, rhs = [[r ** i for r in rks] for i in range(p)], b
    else:
        if p == 1:
            return phi_1, big_b, []
        if p == 2:
            return phi_1, big_b, [0.5]
        m, rhs = [[r ** i for r in rks[:-1]] for i in range(p - 1)], b[:-1]
    rho = torch.linalg.solve(torch.tensor(m, dtype=torch.float64), torch.tensor(rhs, dtype=torch.float64))
    return phi_1, big_b, rho.tolist()


def _unipc_update(schedule: Schedule, x_s, s: int, x0_s, t: int, history, x0_t, order: int):
    """x at t from x at s (one step of the exponential integrator, with UniPC's correction terms):
    x_t = (sigma_t / sigma_s) x_s - alpha_t phi_1 x0_s - alpha_t B sum_k rho_k D_k, with
    D_k = (x0_k - x0_s) / r_k, r_k = (lambda_k - lambda_s) / h for the earlier points k (``history``, newest last)
    and, for the corrector (``x0_t`` given), the last term D = x0_t - x0_s with r = 1."""
    ab_s, ab_t = _ab(schedule, s), _ab(schedule, t)
    alpha_t, sigma_s, sigma_t = math.sqrt(ab_t), math.sqrt(1 - ab_s), math.sqrt(1 - ab_t)
    lam_s = _lam(ab_s)
    h = _lam(ab_t) - lam_s
    points = list(reversed(history))[:order - 1]
    rks = [(_lam(_ab(schedule, k)) - lam_s) / h for k, _ in points] + [1.0]
    d = [(x0_k - x0_s) / r for (_, x0_k), r in zip(points, rks)]
    if x0_t is not None:
        d.append(x0_t - x0_s)
    phi_1, big_b, rho = _unipc_weights(h, rks, corrector=x0_t is not None)
    x = (sigma_t / sigma_s) * x_s - (alpha_t * phi_1) * x0_s
    if rho:
        x = x - (alpha_t * big_b) * sum(r * dk for r, dk in zip(rho, d))
    return x


def unipc_step(schedule: Schedule, x_t, t: int, t_next: int, pred: Prediction,
               history: Sequence[tuple[int, torch.Tensor]], order: int = 2):
    """UniP, the predictor of UniPC (Zhao et al. 2023, Alg. 2, "bh2"), from x_t to t_next with the denoiser's
    x0_hat at t and ``order`` - 1 earlier (t_i, x0_hat_i) from ``history`` (newest last). Order 1 is DDIM;
    the last step (t_next = -1) returns x0_hat. The corrector is ``unipc_correct``."""
    if t_next < 0:
        return pred.x0_hat
    return _unipc_update(schedule, x_t, t, pred.x0_hat, t_next, history, None, min(order, len(history) + 1))


def unipc_correct(schedule: Schedule, x_s, s: int, x0_s, t: int, x_t, pred: Prediction,
                  history: Sequence[tuple[int, torch.Tensor]], order: int):
    """UniC, the corrector of UniPC (Zhao et al. 2023, Alg. 1): once the denoiser has seen x_t (predicted from
    x_s with ``order``), redo the step from x_s using its new x0_hat at t as one more point, at no extra
    network evaluation. ``history`` holds the points before s. Returns the corrected x_t (``x_t`` itself is
    not needed by the update: the corrector replaces it)."""
    return _unipc_update(schedule, x_s, s, x0_s, t, history, pred.x0_hat, order)


def cold_update(x_t, d_t, d_next, improved: bool = True):
    """Cold Diffusion's update from the re-degraded prediction (Bansal et al. 2022): Alg. 2 (improved)
    x_next = x_t - D(x0_hat, t) + D(x0_hat, t_next); Alg. 1 (naive) x_next = D(x0_hat, t_next)."""
    return x_t - d_t + d_next if improved else d_next


def redegrade(degradation: Degradation, x0_hat, t: int, fixed_noise) -> torch.Tensor:
    """D(x0_hat, t), with D(x, -1) = x."""
    return degradation(x0_hat, torch.full((x0_hat.shape[0],), t, dtype=torch.long, device=x0_hat.device), fixed_noise)


def cold_step(degradation: Degradation, x_t, t: int, t_next: int, pred: Prediction, fixed_noise,
              improved: bool = True):
    """Cold Diffusion sampling (Bansal et al. 2022): ``cold_update`` with D(x0_hat, t) and D(x0_hat, t_next).
    The last step of Alg. 2 returns x_t - D(x0_hat, t) + x0_hat."""
    d_next = redegrade(degradation, pred.x0_hat, t_next, fixed_noise)
    d_t = redegrade(degradation, pred.x0_hat, t, fixed_noise) if improved else None
    return cold_update(x_t, d_t, d_next, improved)


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


class Step:
    """One sampler's update rule as an object: ``step(x_t, t, t_next, pred, noise) -> x_next``. A step keeps
    what its rule needs from earlier steps (multistep solvers: the earlier x0_hat) and validates its own
    inputs, so the loop treats every sampler alike. ``stochastic``: it needs fresh noise for each t_next >= 0.

    A call is three parts, so that the same code that samples also explains a step (``explain_step``):
    ``inputs`` names the tensors the update combines (x_t, x0_hat, eps_hat, an earlier ``x0_hat[t_k]``, the
    ``noise``, cold's re-degraded images) without changing the state; ``rule`` is the update, linear in them;
    ``advance`` keeps what later steps need. ``info`` gives the step's named scalars (order, h, sigma...)."""

    stochastic = False

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

    def inputs(self, x_t, t, t_next, pred, noise):
        return _with_noise({"x0_hat": pred.x0_hat, "eps_hat": pred.eps_hat}, noise, t_next)

    def rule(self, v, t, t_next):
        return ddim_step(self.schedule, None, t, t_next, Prediction(v["x0_hat"], v["eps_hat"]), v.get("noise"),
                         self.eta)

    def info(self, t, t_next):
        return {"eta": self.eta, "sigma": ddim_sigma(_ab(self.schedule, t), _ab(self.schedule, t_next), self.eta)}


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
    """The update rule ``spec`` names, for one run over ``timesteps``."""
    if spec.name == "cold":
        if degradation is None:
            raise ValueError("the cold sampler needs a model trained with a cold degradation")
        return ColdStep(degradation, fixed_noise, spec.improved)
    if schedule is None:
        raise ValueError(f"the {spec.name} sampler needs a Gaussian noise schedule (this model is a cold-diffusion model)")
    if spec.name == "ddpm":
        return DDPMStep(schedule, spec.variance)
    if spec.name == "ddim":
        return DDIMStep(schedule, spec.eta)
    if spec.name == "dpm++":
        return DPMpp2MStep(schedule, timesteps)
    if spec.name == "dpm++3m":
        return DPMpp3MStep(schedule, timesteps)
    return UniPCStep(schedule, timesteps)


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

"""The update rules, each a short function named for its paper and written as its update equation, on one footing:
``(schedule, x_t, t, t_next, prediction, ...) -> x_{t_next}``, with ``t_next = -1`` the clean image (alpha_bar = 1).
DDPM (ancestral, posterior or beta variance), DDIM (eta), DPM-Solver++(2M) and (3M), UniPC-bh2 (predictor and
corrector), Cold Diffusion (Alg. 1 and 2), and a progressively distilled student's step with its inverse."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..degradations import Degradation
from ..denoisers import Prediction
from ..schedules import Schedule


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


def _alpha_sigma(schedule: Schedule, t, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha_t, sigma_t) = (sqrt(ab_t), sqrt(1 - ab_t)) in x's dtype and device, shaped to broadcast over x's rows:
    ``t`` is one timestep (an int) or one per row ((B,) long); t = -1 is the clean image (alpha 1, sigma 0)."""
    ab = schedule.alpha_bar_at(t).reshape(-1, *([1] * (x.dim() - 1)))
    return ab.sqrt().to(x.device, x.dtype), (1 - ab).sqrt().to(x.device, x.dtype)


def progressive_step(schedule: Schedule, x_t, t, t_next, pred: Prediction):
    """A progressively distilled student's step: deterministic DDIM in the x-prediction form of Salimans & Ho 2022
    (Alg. 2, the student's and the teacher's step): z_s = alpha_s x_hat + (sigma_s / sigma_t) (z_t - alpha_t x_hat),
    from z_t = x_t at t to z_s at s = t_next; at t_next = -1 (sigma_s = 0) it returns x_hat. ``t`` and ``t_next``:
    ints, or (B,) per-row timesteps (the distillation objective)."""
    a_t, s_t = _alpha_sigma(schedule, t, x_t)
    a_s, s_s = _alpha_sigma(schedule, t_next, x_t)
    return a_s * pred.x0_hat + (s_s / s_t) * (x_t - a_t * pred.x0_hat)


def progressive_target(schedule: Schedule, x_t, t, t_next, x_next):
    """The x_hat with which one ``progressive_step`` from x_t at t lands on ``x_next`` at t_next, the student's target
    in progressive distillation (Salimans & Ho 2022, Alg. 2):
    x_tilde = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t)."""
    a_t, s_t = _alpha_sigma(schedule, t, x_t)
    a_s, s_s = _alpha_sigma(schedule, t_next, x_t)
    return (x_next - (s_s / s_t) * x_t) / (a_s - (s_s / s_t) * a_t)


def consistency_step(schedule: Schedule, x0_hat, t_next: int, noise):
    """Multistep consistency sampling (Song et al. 2023, Alg. 1): the consistency function's output f(x_t, t) =
    x0_hat, noised afresh to the next time, x_t' = alpha_t' x0_hat + sigma_t' z with z ~ N(0, I); at t_next = -1
    x0_hat itself. One step from x_T is the one-step sample; each further step trades a network call for detail."""
    if t_next < 0:
        return x0_hat
    a, s = _alpha_sigma(schedule, t_next, x0_hat)
    return a * x0_hat + s * noise


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

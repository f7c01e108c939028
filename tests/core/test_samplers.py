"""Samplers against closed forms (Gaussian data), against diffusers' schedulers, and cold sampling.

For data x0 ~ N(mu, s^2) per dimension, q(x_t) = N(sqrt(ab) mu, ab s^2 + 1 - ab) and the ideal
denoiser is linear:  E[x0 | x_t] = mu + sqrt(ab) s^2 / (ab s^2 + 1 - ab) (x_t - sqrt(ab) mu).
The probability-flow ODE keeps the standardised value z = (x_t - sqrt(ab) mu) / sqrt(ab s^2 + 1 - ab)
constant, so the exact deterministic map between any two times is known.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from diffusion_core.degradations import make_degradation
from diffusion_core.denoisers import Prediction, prediction_from_output
from diffusion_core.samplers import (SampleStep, SamplerSpec, UniPCStep, cold_step, ddim_step, ddpm_step,
                                     dpmpp_2m_step, dpmpp_3m_step, explain_step, make_generators, make_step,
                                     per_image_noise, sample, sample_stream, unipc_correct, unipc_step)
from diffusion_core.schedules import Schedule, make_schedule, spaced_timesteps, timestep_pairs

MU, S = 0.3, 0.5


def gaussian_denoiser(schedule: Schedule, mu: float = MU, s: float = S):
    """The exact E[x0 | x_t] for x0 ~ N(mu, s^2), and the eps_hat that goes with it."""
    def denoise(x_t, t, cond):
        ab = schedule.alpha_bar_at(t).to(x_t).view(-1, *([1] * (x_t.dim() - 1)))
        x0_hat = mu + ab.sqrt() * s ** 2 / (ab * s ** 2 + 1 - ab) * (x_t - ab.sqrt() * mu)
        return Prediction(x0_hat, (x_t - ab.sqrt() * x0_hat) / (1 - ab).sqrt())
    return denoise


def exact_flow(schedule: Schedule, x: torch.Tensor, t0: int, t1: int) -> torch.Tensor:
    """Probability-flow ODE solution from time t0 to t1 (t1 = -1: the clean image)."""
    a0, a1 = float(schedule.alpha_bar_at(t0)), float(schedule.alpha_bar_at(t1))
    z = (x - math.sqrt(a0) * MU) / math.sqrt(a0 * S ** 2 + 1 - a0)
    return math.sqrt(a1) * MU + math.sqrt(a1 * S ** 2 + 1 - a1) * z


def loglog_slope(ks, errs) -> float:
    return -float(np.polyfit(np.log(ks), np.log(errs), 1)[0])


def x_T(seed=0, n=1, size=64):
    """n images of 1 x size x size = 4096 independent dimensions each, float64."""
    return torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---- single steps with exact predictions -------------------------------------------------------
@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_ddim_step_with_exact_prediction_is_exact(kind):
    """If (x0_hat, eps_hat) are the true (x0, eps) of x_t, deterministic DDIM lands exactly on
    q_sample(x0, t_next, eps) (Song et al. 2021, eq. 12): the update only re-weights x0 and eps."""
    sched = make_schedule(kind, 1000)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64), torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64)
    for t, t_next in [(999, 899), (500, 17), (10, 0), (99, -1)]:
        x_t = sched.q_sample(x0, torch.full((2,), t), eps)
        out = ddim_step(sched, x_t, t, t_next, Prediction(x0, eps), None, eta=0.0)
        assert torch.allclose(out, sched.q_sample(x0, torch.full((2,), t_next), eps), atol=1e-10)
        # DPM-Solver++ first step (D = x0_hat) is the same update (Lu et al. 2022, sec. 4.1)
        if t_next >= 0:
            assert torch.allclose(dpmpp_2m_step(sched, x_t, t, t_next, Prediction(x0, eps), None), out, atol=1e-10)
    assert torch.equal(dpmpp_2m_step(sched, x_t, 5, -1, Prediction(x0, eps), (7, x0 * 0)), x0)


def test_ddim_eta_one_equals_ddpm_posterior():
    """DDIM with eta = 1 has sigma^2 = beta_tilde and the DDPM posterior mean (Song et al. 2021, sec. 4.1)."""
    sched = make_schedule("cosine", 1000)
    ts = spaced_timesteps(1000, 25, "trailing")
    den = gaussian_denoiser(sched)
    kw = dict(schedule=sched)
    a = sample(den, x_T(1), ts, SamplerSpec("ddpm"), generators=make_generators(3, 1), **kw)
    b = sample(den, x_T(1), ts, SamplerSpec("ddim", eta=1.0), generators=make_generators(3, 1), **kw)
    assert torch.allclose(a, b, atol=1e-10)
    c = sample(den, x_T(1), ts, SamplerSpec("ddim", eta=0.5), generators=make_generators(3, 1), **kw)
    assert (a - c).abs().max() > 1e-3


# ---- convergence of the deterministic samplers --------------------------------------------------
STEPS = (10, 20, 40, 80)


def _flow_errors(kind, name, t0, t1):
    """Max error against the exact flow map from t0 to t1, for K uniform steps in t (integers, nested)."""
    sched = make_schedule(kind, 1000)
    x = x_T(0)
    den = gaussian_denoiser(sched)
    errs = []
    for K in STEPS:
        if t1 >= 0:     # an intermediate end time: no singular final step
            ts = torch.linspace(t0, t1, K + 1, dtype=torch.float64).round().long()
        else:           # the full run, as users sample it
            ts = spaced_timesteps(1000, K, "trailing")
        out = sample(den, x, ts, SamplerSpec(name), schedule=sched)
        errs.append((out - exact_flow(sched, x, int(ts[0]), t1)).abs().max().item())
    return errs


# (kind, t0, t1): the linear schedule from T-1; the cosine one from 979, because its last beta is
# clipped at 0.999 (alpha_bar drops 1000x in one step) and that kink is not a smooth ODE to integrate.
WINDOWS = [("linear", 999, 199), ("cosine", 979, 179)]


@pytest.mark.parametrize("kind, t0, t1", WINDOWS)
def test_ddim_is_first_order(kind, t0, t1):
    """Measured: errors 8.6e-2 .. 1.1e-2 (linear), slope 0.99; cosine slope 0.99."""
    errs = _flow_errors(kind, "ddim", t0, t1)
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert 0.9 < loglog_slope(STEPS, errs) < 1.1, errs


@pytest.mark.parametrize("kind, t0, t1", WINDOWS)
def test_dpmpp_2m_is_second_order(kind, t0, t1):
    """Measured: errors 2.3e-2 .. 3.5e-4 (linear), slope 2.02; cosine slope 2.07 (local 2.23, 2.04, 1.96)."""
    errs = _flow_errors(kind, "dpm++", t0, t1)
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert 1.8 < loglog_slope(STEPS, errs) < 2.3, errs
    ddim = _flow_errors(kind, "ddim", t0, t1)
    assert errs[-1] < ddim[-1] / 10


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_full_runs_converge_to_the_exact_map(kind):
    """Full runs ending at t = -1 with trailing spacing, as users sample. DDIM stays first order
    (measured slope 0.99 linear, 1.00 cosine). DPM++(2M)'s last step to sigma = 0 returns x0_hat =
    E[x0 | x_t] at t = T/K - 1, which differs from the ODE's end point by O(1 - alpha_bar) = O(1/K):
    that first-order floor dominates at large K (measured errors 3.4e-1, 7.7e-2, 3.1e-3, 4.8e-3 linear;
    8.7e-2, 5.3e-3, 3.0e-3, 1.6e-3 cosine), so we check it beats DDIM, not a slope."""
    ddim = _flow_errors(kind, "ddim", 999, -1)
    dpm = _flow_errors(kind, "dpm++", 999, -1)
    assert all(a > b for a, b in zip(ddim, ddim[1:])), ddim
    assert 0.9 < loglog_slope(STEPS, ddim) < 1.1, ddim
    assert all(d < c for d, c in zip(dpm, ddim)) and dpm[-1] < ddim[-1] / 5, (dpm, ddim)
    assert max(dpm[1:]) < 0.08 and dpm[-1] < 0.01, dpm
    # the floor: the final x0_hat step alone, taken from the exact state at the last t, errs by about as much
    sched = make_schedule(kind, 1000)
    x = x_T(0)
    t_last = int(spaced_timesteps(1000, STEPS[-1], "trailing")[-2])
    floor = (gaussian_denoiser(sched)(exact_flow(sched, x, 999, t_last), torch.tensor([t_last]), None).x0_hat
             - exact_flow(sched, x, 999, -1)).abs().max().item()
    assert 0.2 * floor < dpm[-1] < 3 * floor, (dpm[-1], floor)


# ---- stochastic samplers: the law of the output ----------------------------------------------------
def _output_law(schedule, ts, name, variance="posterior", eta=1.0):
    """Exact mean and std of a sampler's output for Gaussian data: every step is affine in x_t plus
    independent Gaussian noise, so (mean, var) propagate in closed form from x_T ~ N(0, 1)."""
    m, v = 0.0, 1.0
    for t, tn in timestep_pairs(ts):
        ab, abn = float(schedule.alpha_bar_at(t)), float(schedule.alpha_bar_at(tn))
        c = math.sqrt(ab) * S ** 2 / (ab * S ** 2 + 1 - ab)          # x0_hat = MU + c (x - sqrt(ab) MU)
        beta = 1 - ab / abn
        if name == "ddpm":
            A, B = math.sqrt(abn) * beta / (1 - ab), math.sqrt(1 - beta) * (1 - abn) / (1 - ab)
            var = 0.0 if tn < 0 else ((1 - abn) / (1 - ab) * beta if variance == "posterior" else beta)
        else:
            var = eta ** 2 * (1 - abn) / (1 - ab) * beta
            k = math.sqrt(max(1 - abn - var, 0.0) / (1 - ab))          # eps_hat = (x - sqrt(ab) x0_hat) / sqrt(1-ab)
            A, B = math.sqrt(abn) - k * math.sqrt(ab), k
        gain = A * c + B
        m, v = gain * m + A * MU * (1 - c * math.sqrt(ab)), gain ** 2 * v + var
    return m, math.sqrt(v)


@pytest.mark.parametrize("name, variance, eta", [("ddpm", "posterior", 0.0), ("ddpm", "beta", 0.0), ("ddim", "posterior", 1.0)])
def test_stochastic_samplers_match_their_law_and_the_data(name, variance, eta):
    """16384 samples (4 images x 4096 pixels, one RNG stream each). The sampled mean/std must agree with
    the closed-form law of the sampler to within 5 standard errors, and that law's bias against the data
    N(0.3, 0.5^2) shrinks with the number of steps. Measured std bias (linear, posterior variance):
    -0.1665 (10 steps), -0.0318 (100), -0.0039 (1000); with "beta" variance it changes sign
    (-0.006, +0.017 at 25, +0.007 at 100) and is +0.0008 at 1000."""
    sched = make_schedule("linear", 1000)
    den = gaussian_denoiser(sched)
    spec = SamplerSpec(name, eta=eta, variance=variance)
    x = x_T(11, n=4)
    n = x.numel()
    biases = []
    for K in (10, 100, 1000):
        ts = spaced_timesteps(1000, K, "trailing")
        m, sd = _output_law(sched, ts, name, variance, eta)
        out = sample(den, x, ts, spec, schedule=sched, generators=make_generators(100 + K, 4))
        emp_m, emp_sd = out.mean().item(), out.std().item()
        assert abs(emp_m - m) < 5 * sd / math.sqrt(n), (K, emp_m, m)
        assert abs(emp_sd - sd) < 5 * sd / math.sqrt(2 * n), (K, emp_sd, sd)
        biases.append(abs(sd - S))
        assert abs(m - MU) < 1e-3
        if K == 1000:
            assert abs(emp_m - MU) < 0.02 and abs(emp_sd - S) < 0.02, (emp_m, emp_sd)
    assert biases[2] < 0.005, biases
    if variance == "posterior":   # beta_tilde ignores the uncertainty of x0_hat: std too small, less so with more steps
        assert biases[0] > biases[1] > biases[2], biases


def test_ddim_eta_zero_law_and_determinism():
    sched = make_schedule("linear", 1000)
    ts = spaced_timesteps(1000, 50, "trailing")
    den = gaussian_denoiser(sched)
    a = sample(den, x_T(2), ts, SamplerSpec("ddim"), schedule=sched)
    b = sample(den, x_T(2), ts, SamplerSpec("ddim"), schedule=sched, generators=make_generators(9, 1))
    assert torch.equal(a, b)     # eta = 0 draws no noise at all
    m, sd = _output_law(sched, ts, "ddim", eta=0.0)
    assert abs(a.mean().item() - m) < 5 * sd / 64 and abs(a.std().item() - sd) < 5 * sd / 64 / math.sqrt(2)


# ---- against diffusers' schedulers ----------------------------------------------------------
BETA_SCHEDULE = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


def _diffusers(cls, kind, **kw):
    """A diffusers scheduler whose alpha_bar equals ours; returns (scheduler, our Schedule on its table).

    diffusers builds its betas in float32 (cosine: ``betas_for_alpha_bar``, the same formula and the same 0.999
    cap), so its alphas_cumprod equals ours up to float32 rounding (measured max relative 3.6e-7 linear,
    1.3e-5 cosine at t=999 where alpha_bar = 2.4e-9). We then run both on the identical table, in float64
    where the scheduler allows, so that the update formulas are compared and not the roundings."""
    sch = cls(num_train_timesteps=1000, beta_schedule=BETA_SCHEDULE[kind], **kw)
    ours = make_schedule(kind, 1000).alpha_bar
    theirs = sch.alphas_cumprod.double()
    assert torch.allclose(theirs, ours, rtol=3e-5, atol=0), ((theirs - ours).abs() / ours).max()
    sch.alphas_cumprod = theirs.clone()
    return sch, Schedule(theirs.clone())


def _xt_and_output(seed, shape=(2, 1, 4, 4)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


CASES = [(kind, spacing, K) for kind in ("linear", "cosine") for spacing in ("trailing", "leading", "linspace")
         for K in (10, 50)]


@pytest.mark.parametrize("kind, spacing, K", CASES)
@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_ddpm_step_matches_diffusers(kind, spacing, K, variance):
    from diffusers import DDPMScheduler
    sch, sched = _diffusers(DDPMScheduler, kind, clip_sample=False, timestep_spacing=spacing,
                            variance_type="fixed_small" if variance == "posterior" else "fixed_large")
    sch.set_timesteps(K)
    ts = spaced_timesteps(1000, K, spacing)
    assert torch.equal(sch.timesteps, ts[:-1])
    pairs = timestep_pairs(ts)
    for i in (0, 1, K // 2, K - 2, K - 1):
        t, t_next = pairs[i]
        x_t, out = _xt_and_output(i)
        pred = prediction_from_output(out, x_t, torch.full((2,), t), sched, "eps")
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
        ours = ddpm_step(sched, x_t, t, t_next, pred, noise, variance)
        theirs = sch.step(out, t, x_t, generator=torch.Generator().manual_seed(i)).prev_sample
        if t_next < 0 and t > 0 and variance == "beta":
            # diffusers adds noise whenever t > 0, so with fixed_large and a grid ending above 0 (trailing:
            # 99 -> clean) its last step adds noise of variance beta = 1 - alpha_bar_t to the final image.
            # DDPM (Ho et al. 2020, Alg. 2: z = 0 on the last step) and we add none.
            theirs = theirs - math.sqrt(1 - float(sched.alpha_bar_at(t))) * noise
        assert torch.allclose(ours, theirs, rtol=1e-10, atol=1e-10), (t, t_next, (ours - theirs).abs().max())


@pytest.mark.parametrize("kind, spacing, K", CASES)
@pytest.mark.parametrize("eta", [0.0, 0.3, 0.5, 1.0])
def test_ddim_step_matches_diffusers(kind, spacing, K, eta):
    """diffusers' DDIMScheduler does not read the next timestep from its list: it steps to t - T // K
    (and to ``final_alpha_cumprod`` = 1 below 0, set_alpha_to_one=True). That is our next timestep for
    leading spacing and for trailing when K divides T, but not for linspace (999 -> 899 while the list
    says 888 for K = 10): there we check the formula against ours at diffusers' t_prev, and that our loop
    instead goes to the listed timestep (DESIGN habit 2)."""
    from diffusers import DDIMScheduler
    sch, sched = _diffusers(DDIMScheduler, kind, clip_sample=False, set_alpha_to_one=True,
                            timestep_spacing=spacing, steps_offset=0)
    sch.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    sch.set_timesteps(K)
    ts = spaced_timesteps(1000, K, spacing)
    assert torch.equal(sch.timesteps, ts[:-1])
    mismatched = 0
    for i, (t, t_next) in enumerate(timestep_pairs(ts)):
        x_t, out = _xt_and_output(i)
        pred = prediction_from_output(out, x_t, torch.full((2,), t), sched, "eps")
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
        theirs = sch.step(out, t, x_t, eta=eta, variance_noise=noise).prev_sample
        their_next = t - 1000 // K
        their_next = their_next if their_next >= 0 else -1
        if their_next != t_next:
            mismatched += 1
        ours = ddim_step(sched, x_t, t, their_next, pred, noise, eta)
        assert torch.allclose(ours, theirs, rtol=1e-10, atol=1e-10), (t, their_next, (ours - theirs).abs().max())
    if spacing == "linspace":
        assert mismatched > 0
        if K == 10:
            assert ts[:3].tolist() == [999, 888, 777] and mismatched == K - 1
    else:
        assert mismatched == 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace"])
def test_dpmpp_2m_matches_diffusers(kind, spacing):
    """DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2). Its own linspace and
    leading grids use K+1 points and drop the last (our K+1-step grid without its final 0), so we hand
    it our timesteps. It keeps sigmas in float32 and upcasts the sample to float32, so the agreement is
    float32-level: measured max abs difference <= 8e-7 on unit-scale states, except on the cosine grids
    that start at t = 999, where alpha_bar = 2.4e-9 and the eps -> x0 conversion has condition number
    sigma/alpha = 2e4: diffusers' float32 then errs by ~8e-4 on the first step (ours is float64), and the
    ODE carries that difference along."""
    from diffusers import DPMSolverMultistepScheduler
    K = 10
    sch, sched = _diffusers(DPMSolverMultistepScheduler, kind, algorithm_type="dpmsolver++", solver_order=2,
                            timestep_spacing=spacing)
    ts = spaced_timesteps(1000, K, spacing)
    sch.set_timesteps(K)
    if spacing == "trailing":
        assert torch.equal(sch.timesteps, ts[:-1])
    else:
        assert torch.equal(sch.timesteps, spaced_timesteps(1000, K + 1, spacing)[:-2])
    sch.set_timesteps(timesteps=ts[:-1].tolist())
    assert torch.equal(sch.timesteps, ts[:-1])
    ill_conditioned = float(sched.alpha_bar_at(int(ts[0]))) < 1e-6
    tol = 2e-3 if ill_conditioned else 2e-6
    assert ill_conditioned == (kind == "cosine" and spacing != "leading")

    # (a) two consecutive steps with arbitrary model outputs, started mid-grid (well conditioned): first
    # order, then the 2M multistep update with r = h_prev / h
    begin = K // 2 - 1
    sch.set_begin_index(begin)
    x, _ = _xt_and_output(0)
    x_ours, x_theirs, prev = x.clone(), x.float(), None
    for i, (t, t_next) in enumerate(timestep_pairs(ts)[begin:begin + 2]):
        _, out = _xt_and_output(10 + i)
        pred = prediction_from_output(out, x_ours, torch.full((2,), t), sched, "eps")
        x_ours = dpmpp_2m_step(sched, x_ours, t, t_next, pred, prev)
        prev = (t, pred.x0_hat)
        x_theirs = sch.step(out.float(), t, x_theirs).prev_sample
        assert (x_ours - x_theirs).abs().max() < 2e-6 * max(1.0, x_ours.abs().max().item()), (i, (x_ours - x_theirs).abs().max())
    first_order = ddim_step(sched, x, *timestep_pairs(ts)[begin], prediction_from_output(
        _xt_and_output(10)[1], x, torch.full((2,), int(ts[begin])), sched, "eps"), None)
    assert (x_ours - dpmpp_2m_step(sched, first_order, *timestep_pairs(ts)[begin + 1], prediction_from_output(
        out, first_order, torch.full((2,), int(ts[begin + 1])), sched, "eps"), None)).abs().max() > 1e-3   # 2M != DDIM


    # (b) a whole run with the Gaussian denoiser as the model: every state agrees, and both end on x0_hat
    sch.set_timesteps(timesteps=ts[:-1].tolist())
    den = gaussian_denoiser(sched)
    x = x_T(5, size=8)
    x_theirs = x.float()
    for rec in sample_stream(den, x, ts, SamplerSpec("dpm++"), schedule=sched):
        eps = den(x_theirs.double(), torch.full((1,), rec.t), None).eps_hat
        x_theirs = sch.step(eps.float(), rec.t, x_theirs).prev_sample
        assert (rec.x_next - x_theirs).abs().max() < tol, (rec.t, (rec.x_next - x_theirs).abs().max())


# ---- DPM-Solver++(3M), UniPC and the noise-level grids --------------------------------------------

def _hand_grid(sch, ts, sched):
    """Give a diffusers multistep scheduler our grid: its timesteps and their sigmas (float32, as its own)."""
    sch.set_timesteps(len(ts) - 1)
    sigma = sched.sigmas()[ts[:-1]]
    sch.timesteps = ts[:-1].clone()
    sch.sigmas = torch.cat([sigma, torch.zeros(1, dtype=sigma.dtype)]).float()
    sch.num_inference_steps = len(ts) - 1


MULTISTEP = {"dpm++3m": ("DPMSolverMultistepScheduler", dict(algorithm_type="dpmsolver++", solver_order=3)),
             "unipc": ("UniPCMultistepScheduler", dict(solver_order=2))}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", ["dpm++3m", "unipc"])
@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace", "logsnr", "karras"])
@pytest.mark.parametrize("K", [5, 10, 20])
def test_multistep_solvers_match_diffusers(name, kind, spacing, K):
    """A whole run of the Gaussian denoiser on our grid, step by step against diffusers'
    DPMSolverMultistepScheduler(solver_order=3) and UniPCMultistepScheduler (bh2, corrector on, order 2), with
    their default "lower order at the end" rule. diffusers keeps sigmas in float32, so the agreement is float32
    level (measured <= 3.2e-5), except from t = 999 on the cosine schedule (alpha_bar = 2.4e-9, as for 2M:
    measured <= 1.8e-3). The solvers themselves differ from each other and from 2M by 0.02-0.5 on these runs."""
    import diffusers
    cls, kw = MULTISTEP[name]
    sch, sched = _diffusers(getattr(diffusers, cls), kind, **kw)
    ts = spaced_timesteps(1000, K, spacing, schedule=sched)
    _hand_grid(sch, ts, sched)
    tol = 3e-3 if float(sched.alpha_bar_at(int(ts[0]))) < 1e-6 else 1e-4
    den = gaussian_denoiser(sched)
    x = x_T(5, size=8)
    x_theirs = x.float()
    for rec in sample_stream(den, x, ts, SamplerSpec(name), schedule=sched):
        eps = den(x_theirs.double(), torch.full((1,), rec.t), None).eps_hat
        x_theirs = sch.step(eps.float(), rec.t, x_theirs).prev_sample
        assert (rec.x_next - x_theirs).abs().max() < tol, (rec.t, (rec.x_next - x_theirs).abs().max())
    if tol < 1e-3:      # not vacuous: the run is not 2M's
        other = sample(den, x, ts, SamplerSpec("dpm++"), schedule=sched)
        assert (rec.x_next - other).abs().max() > 10 * tol


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name, order", [("dpm++3m", 3), ("unipc", 2), ("unipc", 3)])
def test_multistep_coefficients_with_arbitrary_outputs_match_diffusers(name, order):
    """Four consecutive steps mid-grid with unrelated random model outputs (no denoiser structure to hide a
    wrong weight), from the same state: every weight of the 3rd-order and corrector updates is exercised."""
    import diffusers
    cls, kw = MULTISTEP[name]
    sch, sched = _diffusers(getattr(diffusers, cls), "linear", **{**kw, "solver_order": order})
    ts = spaced_timesteps(1000, 20, "logsnr", schedule=sched)
    _hand_grid(sch, ts, sched)
    begin = 6
    sch.set_begin_index(begin)
    step = make_step(SamplerSpec(name), ts, sched) if name == "dpm++3m" else UniPCStep(sched, ts, order)
    x, _ = _xt_and_output(0)
    x_ours, x_theirs = x.clone(), x.float()
    for i, (t, t_next) in enumerate(timestep_pairs(ts)[begin:begin + 4]):
        _, out = _xt_and_output(20 + i)
        pred = prediction_from_output(out, x_ours, torch.full((2,), t), sched, "eps")
        x_ours = step(x_ours, t, t_next, pred, None)
        x_theirs = sch.step(out.float(), t, x_theirs).prev_sample
        assert (x_ours - x_theirs).abs().max() < 2e-5 * max(1.0, x_ours.abs().max().item()), (i, (x_ours - x_theirs).abs().max())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_noise_level_grids(kind):
    """logsnr: uniform in log sigma (= -log-SNR / 2); karras: uniform in sigma^(1/7) (Karras et al. 2022, eq. 5);
    both from min(sigma(T-1), e^5.1) to sigma(0), sigma = sqrt((1 - alpha_bar) / alpha_bar), each level taken
    to a nearest integer timestep. Checked against the formulas written here, and for the linear schedule
    (below the e^5.1 cap) against diffusers' use_lu_lambdas / use_karras_sigmas timesteps."""
    from diffusers import DPMSolverMultistepScheduler
    sched = make_schedule(kind, 1000)
    sigma = ((1 - sched.alpha_bar) / sched.alpha_bar).sqrt()
    s_max, s_min = min(float(sigma[-1]), math.exp(5.1)), float(sigma[0])
    for K in (5, 10, 20):
        ramp = np.linspace(0, 1, K)
        want = {"logsnr": np.exp(np.log(s_max) + ramp * (np.log(s_min) - np.log(s_max))),
                "karras": (s_max ** (1 / 7) + ramp * (s_min ** (1 / 7) - s_max ** (1 / 7))) ** 7}
        for spacing, levels in want.items():
            ts = spaced_timesteps(1000, K, spacing, schedule=sched)
            assert ts[-1] == -1 and ts[-2] == 0 and (ts[:-1].diff() < 0).all()
            log_s = sigma.log()
            for t, level in zip(ts[:-1].tolist(), levels):     # no integer timestep is nearer in log sigma
                gap = max(abs(log_s[min(t + 1, 999)] - log_s[t]), abs(log_s[t] - log_s[max(t - 1, 0)]))
                assert abs(log_s[t] - math.log(level)) <= gap / 2 + 1e-9, (spacing, K, t, level)
            if kind == "linear":
                flag = "use_lu_lambdas" if spacing == "logsnr" else "use_karras_sigmas"
                sch = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="linear", **{flag: True})
                sch.set_timesteps(K)
                assert sch.timesteps.tolist() == ts[:-1].tolist(), (spacing, K)
    cosine_top = int(spaced_timesteps(1000, 10, "karras", schedule=make_schedule("cosine"))[0])
    assert cosine_top < 999 and float(sigma[cosine_top]) <= math.exp(5.1) * 1.05 if kind == "cosine" else True


def _local_errors(kind, t, steps_fn, sizes=(64, 32, 16, 8)):
    """One step of size D from the exact state at t, with the exact x0_hat at t + D and t + 2D as history,
    against the exact flow at t - D: the local error, for each step size D."""
    sched = make_schedule(kind, 1000)
    den = gaussian_denoiser(sched)
    x = x_T(0)
    exact = lambda s: exact_flow(sched, x, 999, s)                          # noqa: E731
    x0 = lambda s: den(exact(s), torch.tensor([s]), None).x0_hat             # noqa: E731
    errs = []
    for D in sizes:
        hist = [(t + 2 * D, x0(t + 2 * D)), (t + D, x0(t + D))]
        out = steps_fn(sched, den, exact(t), t, t - D, den(exact(t), torch.tensor([t]), None), hist)
        errs.append((out - exact(t - D)).abs().max().item())
    return errs


def _unipc_with_corrector(order):
    def run(sched, den, x_t, t, t_next, pred, hist):
        x_pred = unipc_step(sched, x_t, t, t_next, pred, hist, order)
        new = den(x_pred, torch.tensor([t_next]), None)
        return unipc_correct(sched, x_t, t, pred.x0_hat, t_next, x_pred, new, hist, order)
    return run


LOCAL = {   # name: (one step, local error order = global order + 1)
    "ddim": (lambda sched, den, x, t, tn, p, h: ddim_step(sched, x, t, tn, p, None), 2),
    "dpm++ (2M)": (lambda sched, den, x, t, tn, p, h: dpmpp_2m_step(sched, x, t, tn, p, h[-1]), 3),
    "UniP-2": (lambda sched, den, x, t, tn, p, h: unipc_step(sched, x, t, tn, p, h, 2), 3),
    "UniP-3": (lambda sched, den, x, t, tn, p, h: unipc_step(sched, x, t, tn, p, h, 3), 4),
    "UniPC-2 (with UniC)": (_unipc_with_corrector(2), 4),
    "UniPC-3 (with UniC)": (_unipc_with_corrector(3), 5),
}


@pytest.mark.parametrize("kind, t", [("linear", 500), ("cosine", 500), ("linear", 150)])
@pytest.mark.parametrize("name", list(LOCAL))
def test_local_error_order(kind, t, name):
    """On the closed-form Gaussian denoiser with exact history, a step of a p-th order method errs by
    O(D^(p+1)); UniC raises UniP's order by one (Zhao et al. 2023, Thm. 3.1). Measured slopes 2.03-2.10 (DDIM),
    3.02-3.07 (2M, UniP-2), 3.87-4.12 (UniP-3, UniPC-2), 5.01-5.22 (UniPC-3)."""
    fn, order = LOCAL[name]
    errs = _local_errors(kind, t, fn)
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert order - 0.25 < -loglog_slope((64, 32, 16, 8), errs) < order + 0.3, errs


def test_dpmpp_3m_is_the_reference_update_whose_second_difference_is_halved():
    """DPM-Solver++(3M) as DPM-Solver's code and diffusers write it (parity above) weights D2 = (D1_0 - D1_1) /
    (r0 + r1) ~ h^2 x0''/2 by -(phi_2/h - 1/2), while the third-order Taylor term of the exponential integrator is
    -(phi_2/h - 1/2) h^2 x0''. So it is locally third order in D (globally second) like 2M, only with a smaller
    error constant, and doubling its D2 weight gives the third-order integrator, which equals UniP-3 here (the
    same Taylor expansion over the same three points). Measured local slopes 3.26 / 2.28 / 3.64 (linear 500 /
    cosine 500 / linear 150) against 4.03 / 3.90 / 4.09 doubled."""
    for kind, t in (("linear", 500), ("linear", 150)):
        m3 = _local_errors(kind, t, lambda sched, den, x, t, tn, p, h: dpmpp_3m_step(sched, x, t, tn, p, h, 3),
                           sizes=(32, 16, 8, 4))
        m2 = _local_errors(kind, t, LOCAL["dpm++ (2M)"][0], sizes=(32, 16, 8, 4))
        p3 = _local_errors(kind, t, LOCAL["UniP-3"][0], sizes=(32, 16, 8, 4))
        assert 2.9 < -loglog_slope((32, 16, 8, 4), m3) < 3.8, m3
        assert all(a < b for a, b in zip(m3[-3:], m2[-3:])), (m3, m2)          # better than 2M at small steps
        assert p3[-1] < m3[-1] / 3, (p3, m3)                                 # and than it, the third-order step


@pytest.mark.parametrize("name", ["dpm++3m", "unipc"])
@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_multistep_full_runs_converge(name, kind):
    """Full runs as users sample (trailing grids to t = -1): errors fall with K and beat DDIM's at every K."""
    errs, ddim = _flow_errors(kind, name, 999, -1), _flow_errors(kind, "ddim", 999, -1)
    assert all(a > b for a, b in zip(errs, errs[1:])) or errs[-1] < 0.01, errs
    assert all(e < d for e, d in zip(errs, ddim)), (errs, ddim)


EXPLAINED = [("ddpm", {}), ("ddpm", {"variance": "beta"}), ("ddim", {}), ("ddim", {"eta": 0.5}), ("dpm++", {}),
             ("dpm++3m", {}), ("unipc", {}), ("cold", {}), ("cold", {"improved": False})]


@pytest.mark.parametrize("name,opts", EXPLAINED, ids=[f"{n}-{'-'.join(map(str, o.values())) or 'default'}"
                                                      for n, o in EXPLAINED])
@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace", "logsnr", "karras"])
def test_explained_step_rebuilds_every_step_of_every_sampler(name, opts, spacing):
    """``explain_step`` (the weights read from the update itself on unit inputs, the terms from replaying the
    records) rebuilds each step's x_next to float64 rounding, and its own x_next is the sampler's, bit for bit,
    for every sampler, spacing and the stochastic cases (DDPM, DDIM with eta > 0: the noise is a term).
    Where the paper gives the weights in closed form (DDPM eqs. 6-7, DDIM eqs. 12 and 16, DPM-Solver++(2M),
    Cold Diffusion Alg. 1-2) they are checked against it, written out here."""
    spec = SamplerSpec(name, **opts)
    if name == "cold":
        if spacing in ("logsnr", "karras"):
            pytest.skip("cold diffusion has no noise-level grid")
        T, sched, deg = 20, None, make_degradation("blur", 20)
        den = lambda x, t, c: Prediction(x * 0.5, x * 0.5)    # noqa: E731  any denoiser
        kw = dict(degradation=deg)
    else:
        T, sched, deg = 1000, make_schedule("cosine", 1000), None
        den, kw = gaussian_denoiser(sched), dict(schedule=sched)
    ts = spaced_timesteps(T, 7, spacing, schedule=sched)
    recs = list(sample_stream(den, x_T(2, n=2, size=8), ts, spec, generators=make_generators(5, 2), **kw))
    for i, rec in enumerate(recs):
        ex = explain_step(spec, ts, recs, i, **kw)
        assert torch.equal(ex.x_next, rec.x_next), i
        rebuilt = sum(w * ex.terms[k] for k, w in ex.weights.items())
        assert (rebuilt - rec.x_next).abs().max() < 1e-12, (i, ex.weights)
        assert ("noise" in ex.weights) == (spec.stochastic and rec.t_next >= 0 and ex.weights.get("noise", 1) != 0)
        if name == "cold":
            w = {"x_t": 1.0, "D(x0_hat,t)": -1.0, "D(x0_hat,t_next)": 1.0} if spec.improved else {"D(x0_hat,t_next)": 1.0}
            assert ex.weights == w
            assert torch.equal(ex.terms["D(x0_hat,t_next)"], deg(rec.x0_hat, torch.full((2,), rec.t_next), None))
            continue
        ab, ab_n = float(sched.alpha_bar_at(rec.t)), float(sched.alpha_bar_at(rec.t_next))
        beta = 1 - ab / ab_n
        if name == "ddpm":
            var = (1 - ab_n) / (1 - ab) * beta if spec.variance == "posterior" else beta
            want = {"x0_hat": math.sqrt(ab_n) * beta / (1 - ab), "x_t": math.sqrt(1 - beta) * (1 - ab_n) / (1 - ab)}
            if rec.t_next >= 0:
                want["noise"] = math.sqrt(var)
        elif name == "ddim":
            sigma = spec.eta * math.sqrt((1 - ab_n) / (1 - ab) * (1 - ab / ab_n))
            want = {"x0_hat": math.sqrt(ab_n), "eps_hat": math.sqrt(max(1 - ab_n - sigma ** 2, 0))}
            if sigma > 0:
                want["noise"] = sigma
        elif name == "dpm++":
            lam = lambda a: 0.5 * math.log(a / (1 - a))    # noqa: E731
            if rec.t_next < 0:
                want = {"x0_hat": 1.0}
            else:
                h = lam(ab_n) - lam(ab)
                c = -math.sqrt(ab_n) * math.expm1(-h)
                want = {"x_t": math.sqrt((1 - ab_n) / (1 - ab))}
                if i == 0:
                    want["x0_hat"] = c
                else:
                    r = (lam(ab) - lam(float(sched.alpha_bar_at(recs[i - 1].t)))) / h
                    want.update({"x0_hat": c * (1 + 1 / (2 * r)), f"x0_hat[{recs[i - 1].t}]": -c / (2 * r)})
                    assert torch.equal(ex.terms[f"x0_hat[{recs[i - 1].t}]"], recs[i - 1].x0_hat)
        else:
            order = (1 if i in (0, len(recs) - 1) else 2 if i == 1 or i == len(recs) - 2 or name == "unipc" else 3)
            assert ex.info["order"] == order
            assert {k for k in ex.weights if k.startswith("x0_hat[")} == \
                {f"x0_hat[{r.t}]" for r in recs[max(0, i - order + 1):i]} if rec.t_next >= 0 else True
            if name == "unipc" and 0 < i < len(recs) - 1:
                assert (ex.terms["x_t"] - rec.x_t).abs().max() > 1e-6           # the corrector moved it
            continue
        assert ex.weights.keys() == want.keys(), (i, ex.weights, want)
        assert all(abs(ex.weights[k] - w) < 1e-12 * max(1, abs(w)) for k, w in want.items()), (i, ex.weights, want)
        if "noise" in want:
            assert torch.equal(ex.terms["noise"], rec.noise)


def test_explaining_a_stochastic_step_needs_its_noise():
    sched = make_schedule("cosine", 1000)
    ts = spaced_timesteps(1000, 4, "trailing")
    recs = list(sample_stream(gaussian_denoiser(sched), x_T(2, size=8), ts, SamplerSpec("ddpm"), schedule=sched,
                              generators=make_generators(0, 1)))
    with pytest.raises(ValueError, match="noise"):
        explain_step(SamplerSpec("ddpm"), ts, [replace(r, noise=None) for r in recs], 1, schedule=sched)


@pytest.mark.parametrize("model", ["fashion", "fashion-linear"])
@pytest.mark.slow
def test_first_step_of_every_solver_and_grid_is_finite_on_the_shipped_models(model):
    """At t = T - 1 the cosine schedule has alpha_bar = 2.4e-9: eps -> x0 multiplies the network's error by 2e4.
    The first step of every sampler on every grid, guided, stays finite and in a sane range."""
    from pathlib import Path

    from diffusion_core import SPACINGS, load
    folder = Path(__file__).resolve().parents[2] / "checkpoints" / model
    pipe = load(folder)
    for sampler in pipe.samplers:      # every Gaussian sampler (a student's own rule is offered to students only)
        for spacing in SPACINGS:
            rec = next(pipe.stream(2, sampler=sampler, steps=10, spacing=spacing, guidance=4.0, labels=["Bag"], seed=1))
            assert torch.isfinite(rec.x_next).all() and rec.x_next.abs().max() < 6, (sampler, spacing)
            assert rec.x0_hat.abs().max() <= 1.0 + 1e-6, (sampler, spacing)


# ---- noise plumbing ---------------------------------------------------------------------------
def test_per_image_noise_uses_one_stream_per_image():
    gens = make_generators(41, 3)
    noise = per_image_noise((3, 2, 4, 4), gens)
    for i in range(3):
        assert torch.equal(noise[i], torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(41 + i)))
    assert torch.equal(per_image_noise((1, 2, 4, 4), make_generators(42, 1))[0], noise[1])
    with pytest.raises(ValueError, match="one generator per image"):
        per_image_noise((2, 1, 4, 4), make_generators(0, 3))


def test_sampler_spec_and_stream_refusals():
    with pytest.raises(ValueError, match="unknown sampler"):
        SamplerSpec("euler")
    with pytest.raises(ValueError, match="eta"):
        SamplerSpec("ddim", eta=1.5)
    sched = make_schedule("linear", 100)
    den = gaussian_denoiser(sched)
    ts = spaced_timesteps(100, 5)
    with pytest.raises(ValueError, match="needs generators"):
        next(sample_stream(den, x_T(0, size=4), ts, SamplerSpec("ddpm"), schedule=sched))
    with pytest.raises(ValueError, match="noise schedule"):
        next(sample_stream(den, x_T(0, size=4), ts, SamplerSpec("ddim")))
    with pytest.raises(ValueError, match="cold degradation"):
        next(sample_stream(den, x_T(0, size=4), ts, SamplerSpec("cold")))


def test_stream_records_chain():
    sched = make_schedule("cosine", 1000)
    ts = spaced_timesteps(1000, 6, "leading")
    recs = list(sample_stream(gaussian_denoiser(sched), x_T(3, size=8), ts, SamplerSpec("dpm++"), schedule=sched))
    assert [r.index for r in recs] == list(range(6)) and all(r.num_steps == 6 for r in recs)
    assert [(r.t, r.t_next) for r in recs] == timestep_pairs(ts)
    assert all(isinstance(r, SampleStep) for r in recs)
    for a, b in zip(recs, recs[1:]):
        assert torch.equal(a.x_next, b.x_t)


# ---- cold diffusion (Bansal et al. 2022) --------------------------------------------------------
COLD = ["blur", "pixelate", "mask", "noise_fixed"]


def _image(seed=0, n=2, c=3, size=16):
    """Smooth-ish images in [-1, 1] (a random low-frequency pattern plus a little detail)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.nn.functional.interpolate(torch.rand(n, c, 4, 4, generator=g) * 2 - 1, size=size, mode="bilinear",
                                          align_corners=False)
    return (low + 0.2 * torch.randn(n, c, size, size, generator=g)).clamp(-1, 1)


@pytest.mark.parametrize("name", COLD)
@pytest.mark.parametrize("improved", [True, False])
def test_cold_sampling_with_perfect_predictor_recovers_x0(name, improved):
    T = 50
    deg = make_degradation(name, T, make_schedule("linear", T))
    x0 = _image()
    fixed = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))

    def perfect(x_t, t, cond):      # knows the answer whatever it is shown
        return Prediction(x0, x_t - x0)

    for K in (1, 7, T):
        ts = spaced_timesteps(T, K, "trailing")
        x_start = deg(x0, torch.full((2,), T - 1), fixed)
        recs = list(sample_stream(perfect, x_start, ts, SamplerSpec("cold", improved=improved),
                                  degradation=deg, fixed_noise=fixed))
        assert torch.allclose(recs[-1].x_next, x0, atol=1e-6), (name, K)
        for r in recs:     # every intermediate state is exactly D(x0, t_next)
            assert torch.allclose(r.x_next, deg(x0, torch.full((2,), r.t_next), fixed), atol=1e-6)


def test_cold_improved_step_formula():
    """Alg. 2: x_next = x_t - D(x0_hat, t) + D(x0_hat, t_next); Alg. 1: x_next = D(x0_hat, t_next)."""
    deg = make_degradation("blur", 20)
    x_t, x0_hat = _image(1), _image(2)
    pred = Prediction(x0_hat, x_t - x0_hat)
    d = lambda t: deg(x0_hat, torch.full((2,), t))   # noqa: E731
    assert torch.allclose(cold_step(deg, x_t, 9, 4, pred, None, True), x_t - d(9) + d(4))
    assert torch.allclose(cold_step(deg, x_t, 9, -1, pred, None, True), x_t - d(9) + x0_hat)
    assert torch.equal(cold_step(deg, x_t, 9, 4, pred, None, False), d(4))


@pytest.mark.parametrize("name", COLD)
def test_degradation_identity_at_minus_one_and_monotone(name):
    T = 40
    deg = make_degradation(name, T, make_schedule("linear", T))
    x0 = _image(3)
    fixed = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4))
    assert torch.equal(deg(x0, torch.full((2,), -1), fixed), x0)
    dist = [(deg(x0, torch.full((2,), t), fixed) - x0).pow(2).mean().item() for t in range(T)]
    if name == "pixelate":
        # Pixel grids of sizes that do not divide 16 are not nested (adaptive pooling), so the distance may
        # wobble between them; the block size itself shrinks monotonically, and over the sizes that divide
        # 16 (nested partitions: averaging over a coarser one can only move further from x0) it grows.
        sizes = [max(1, round(16 ** (1 - (t + 1) / T))) for t in range(T)]
        assert sizes == sorted(sizes, reverse=True) and sizes[-1] == 1
        blocks = [deg(x0, torch.full((2,), t), fixed)[0, 0].unique().numel() for t in range(T)]
        assert all(b <= min(a, sz * sz) for a, b, sz in zip(blocks, blocks[1:], sizes[1:])), blocks
        assert dist[-1] == max(dist)
        dist = [d for d, sz in zip(dist, sizes) if 16 % sz == 0]
        assert len(dist) >= 4
    assert all(b >= a - 1e-7 for a, b in zip(dist, dist[1:])), dist
    assert dist[-1] > 3 * max(dist[0], 1e-6)
    # a mixed batch of severities is degraded image by image
    mixed = deg(x0, torch.tensor([-1, T - 1]), fixed)
    assert torch.equal(mixed[0], x0[0])
    assert torch.allclose(mixed[1], deg(x0[1:], torch.tensor([T - 1]), fixed[1:])[0])
    if name == "mask":
        assert deg(x0, torch.full((2,), T - 1), fixed).abs().max() == 0      # fully masked
    if name == "noise_fixed":
        ab = float(make_schedule("linear", T).alpha_bar_at(T - 1))
        assert torch.allclose(deg(x0, torch.full((2,), T - 1), fixed), math.sqrt(ab) * x0 + math.sqrt(1 - ab) * fixed,
                              atol=1e-6)


# ------------------------------------------------------------------------------------------------ slerp
def test_slerp_endpoints_norm_and_fallback():
    """slerp (Shoemake 1985), how Live and Interpolate blend two seeds' x_T: exact endpoints, on the unit sphere at
    constant angular speed, a lerp for (nearly) parallel inputs, finite for antiparallel ones."""
    from diffusion_core import slerp
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 8, 8, generator=g), torch.randn(3, 8, 8, generator=g)
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)
    ua, ub = a / a.norm(), b / b.norm()
    theta = math.acos(float((ua * ub).sum()))
    for alpha in (0.1, 0.25, 0.5, 0.9):
        m = slerp(ua, ub, alpha)
        assert abs(float(m.norm()) - 1) < 1e-5                       # stays on the unit sphere
        assert abs(math.acos(min(1.0, float((ua * m).sum()))) - alpha * theta) < 1e-4   # constant speed
    lerp_mid = 0.5 * (ua + ub)
    assert float(lerp_mid.norm()) < 0.9                             # a lerp would shrink it
    near = ua + 1e-9 * ub                                            # nearly parallel: falls back to lerp
    m = slerp(ua, near, 0.5)
    assert torch.isfinite(m).all() and torch.allclose(m, 0.5 * (ua + near), atol=1e-7)
    m = slerp(ua, -ua, 0.3)                                      # antiparallel: no division by ~0
    assert torch.isfinite(m).all()
    with pytest.raises(ValueError):
        slerp(a, b[:2], 0.5)

"""Schedules and timestep spacing against hand-computed values and the papers' formulas."""
from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from diffusion_core.samplers import noised_start, make_generators
from diffusion_core.schedules import Schedule, cosine_alpha_bar, make_schedule, spaced_timesteps, timestep_pairs


# ---- linear (Ho et al. 2020) ---------------------------------------------------------------------
@pytest.mark.parametrize("T, beta_1, beta_T", [(1000, 1e-4, 0.02), (1000, 5e-3, 9e-3), (50, 5e-3, 9e-3)])
def test_linear_betas_endpoints_and_alpha_bar(T, beta_1, beta_T):
    s = make_schedule("linear", T, beta_1, beta_T)
    assert s.T == T and s.alpha_bar.dtype == torch.float64
    betas = s.betas
    assert betas[0].item() == pytest.approx(beta_1, rel=1e-10)
    assert betas[-1].item() == pytest.approx(beta_T, rel=1e-10)
    # equally spaced
    step = (beta_T - beta_1) / (T - 1)
    assert torch.allclose(betas[1:] - betas[:-1], torch.full((T - 1,), step, dtype=torch.float64), atol=1e-12)
    # alpha_bar_t = prod_{s<=t} (1 - beta_s), written out for a few t
    for t in (0, 1, T // 2, T - 1):
        expected = math.prod(1 - (beta_1 + k * step) for k in range(t + 1))
        assert s.alpha_bar[t].item() == pytest.approx(expected, rel=1e-10)


def test_linear_rejects_bad_betas():
    with pytest.raises(ValueError, match="beta_1 <= beta_T"):
        make_schedule("linear", 100, 0.02, 1e-4)
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule("sigmoid", 100)


# ---- cosine (Nichol & Dhariwal 2021, eq. 17) -------------------------------------------------------
def _f(t: float, T: int, s: float = 0.008) -> float:
    return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2


@pytest.mark.parametrize("T", [1000, 100])
def test_cosine_alpha_bar_matches_formula_and_clips_last_beta(T):
    s = make_schedule("cosine", T)
    ab = s.alpha_bar
    # alpha_bar after t+1 forward steps is f(t+1)/f(0) (telescoping product of 1 - beta) wherever no beta
    # was clipped; only the very last beta (f(T) ~ 0 makes it ~1) hits the 0.999 cap.
    unclipped = [1 - _f(t + 1, T) / _f(t, T) for t in range(T)]
    assert max(unclipped[:-1]) < 0.999 and unclipped[-1] > 0.999
    for t in (0, 1, T // 3, T // 2, T - 2):
        assert ab[t].item() == pytest.approx(_f(t + 1, T) / _f(0, T), rel=1e-9)
    assert s.betas[-1].item() == pytest.approx(0.999, rel=1e-9)
    assert ab[-1].item() == pytest.approx(ab[-2].item() * (1 - 0.999), rel=1e-9)
    assert s.betas.max().item() <= 0.999 + 1e-12
    # cosine_alpha_bar's max_beta is the cap
    assert (1 - cosine_alpha_bar(T, max_beta=0.5) / torch.cat([torch.ones(1, dtype=torch.float64),
                                                               cosine_alpha_bar(T, max_beta=0.5)[:-1]])).max() <= 0.5 + 1e-12


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_alpha_bar_at_snr_and_q_sample(kind):
    s = make_schedule(kind, 1000)
    assert s.alpha_bar_at(-1).item() == 1.0
    assert s.alpha_bar_at(0).item() == s.alpha_bar[0].item()
    assert s.alpha_bar_at(999).item() == s.alpha_bar[-1].item()
    t = torch.tensor([-1, 0, 500, 999])
    assert torch.equal(s.alpha_bar_at(t), torch.cat([torch.ones(1, dtype=torch.float64), s.alpha_bar[[0, 500, 999]]]))
    ab = s.alpha_bar
    assert ((ab[1:] < ab[:-1]).all() and (ab > 0).all() and (ab < 1).all())
    snr, log_snr = s.snr(), s.log_snr()
    assert (snr[1:] < snr[:-1]).all() and (log_snr[1:] < log_snr[:-1]).all()
    assert torch.allclose(log_snr, torch.log(ab / (1 - ab)), rtol=1e-12)
    # betas <-> alpha_bar round trip
    assert torch.allclose(Schedule(torch.cumprod(1 - s.betas, 0)).alpha_bar, ab, rtol=1e-12)
    # q_sample: x_t = sqrt(ab) x0 + sqrt(1-ab) eps (DDPM eq. 4); t = -1 leaves x0 untouched
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 1, 2, 2, generator=g), torch.randn(4, 1, 2, 2, generator=g)
    x_t = s.q_sample(x0, t, eps)
    for i, tv in enumerate(t.tolist()):
        a = float(s.alpha_bar_at(tv))
        assert torch.allclose(x_t[i], math.sqrt(a) * x0[i] + math.sqrt(1 - a) * eps[i], atol=1e-6)
    assert torch.equal(x_t[0], x0[0])


# ---- spacing (Lin et al. 2024, Table 2) ---------------------------------------------------------
def test_spacings_hand_written():
    T = 1000
    assert spaced_timesteps(T, 10, "trailing").tolist() == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99, -1]
    assert spaced_timesteps(T, 10, "leading").tolist() == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0, -1]
    assert spaced_timesteps(T, 10, "linspace").tolist() == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0, -1]
    # trailing with a non-integer stride: round(1000 (K - i) / K) - 1
    assert spaced_timesteps(T, 3, "trailing").tolist() == [999, 666, 332, -1]
    assert spaced_timesteps(T, 6, "trailing").tolist() == [999, 832, 666, 499, 332, 166, -1]
    # leading with a remainder: multiples of 1000 // 3 = 333
    assert spaced_timesteps(T, 3, "leading").tolist() == [666, 333, 0, -1]
    # linspace rounding, exact ties round half to even: i * 999/6 = 0, 166.5, 333, 499.5, 666, 832.5, 999
    assert spaced_timesteps(T, 7, "linspace").tolist() == [999, 832, 666, 500, 333, 166, 0, -1]
    assert spaced_timesteps(T, 4, "linspace").tolist() == [999, 666, 333, 0, -1]
    # every training step
    assert spaced_timesteps(T, T, "trailing").tolist() == list(range(999, -2, -1))
    assert timestep_pairs(spaced_timesteps(T, 4, "trailing")) == [(999, 749), (749, 499), (499, 249), (249, -1)]


def test_spacings_with_t_start_for_img2img():
    T = 1000
    assert spaced_timesteps(T, 6, "trailing", t_start=599).tolist() == [599, 499, 399, 299, 199, 99, -1]
    assert spaced_timesteps(T, 6, "leading", t_start=599).tolist() == [500, 400, 300, 200, 100, 0, -1]
    # i * 599/5 = 0, 119.8, 239.6, 359.4, 479.2, 599
    assert spaced_timesteps(T, 6, "linspace", t_start=599).tolist() == [599, 479, 359, 240, 120, 0, -1]
    assert spaced_timesteps(T, 1, "trailing", t_start=0).tolist() == [0, -1]


@pytest.mark.parametrize("T", [1000, 999, 37])
def test_spacings_always_k_steps_strictly_decreasing_to_minus_one(T):
    """Regression: a float arange for trailing gave K+1 entries for some K (T=1000, K=61 ended in
    [15, -1, -1], a (-1, -1) step that divides by zero)."""
    for spacing in ("trailing", "leading", "linspace"):
        for K in range(1, T + 1):
            ts = spaced_timesteps(T, K, spacing)
            assert len(ts) == K + 1, (spacing, K)
            assert ts[-1] == -1 and 0 <= ts[-2] and ts[0] < T, (spacing, K)
            assert (ts[:-1] > ts[1:]).all(), (spacing, K)
    for t_start in (0, 5, 598, T - 1):
        t_start = min(t_start, T - 1)
        for K in sorted({k for k in (1, 2, 7, t_start + 1) if k <= t_start + 1}):
            for spacing in ("trailing", "leading", "linspace"):
                ts = spaced_timesteps(T, K, spacing, t_start=t_start)
                assert len(ts) == K + 1 and ts[0] <= t_start and (ts[:-1] > ts[1:]).all() and ts[-1] == -1
            assert spaced_timesteps(T, K, "trailing", t_start=t_start)[0] == t_start
            if K >= 2:   # linspace(0, top-1, 1) is [0], as in diffusers
                assert spaced_timesteps(T, K, "linspace", t_start=t_start)[0] == t_start


def test_spacing_errors():
    with pytest.raises(ValueError, match="unknown spacing"):
        spaced_timesteps(1000, 10, "cubic")
    with pytest.raises(ValueError, match="the karras spacing needs the noise schedule"):
        spaced_timesteps(1000, 10, "karras")
    with pytest.raises(ValueError, match=r"steps must be in \[1, 1000\]"):
        spaced_timesteps(1000, 0)
    with pytest.raises(ValueError, match=r"steps must be in \[1, 1000\]"):
        spaced_timesteps(1000, 1001)
    with pytest.raises(ValueError, match=r"steps must be in \[1, 100\]"):
        spaced_timesteps(1000, 101, t_start=99)


def _has_tie(T: int, K: int, spacing: str) -> bool:
    """Does the exact grid hit an x.5 value, where rounding depends on float noise in numpy's arange?"""
    if spacing == "trailing":
        return any(Fraction(T * (K - i), K).denominator == 2 for i in range(K))
    if spacing == "linspace":
        return any(Fraction((T - 1) * i, max(K - 1, 1)).denominator == 2 for i in range(K))
    return False


@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace"])
def test_spacing_matches_diffusers(spacing):
    """Our grid equals diffusers' DDIM/DDPM ``set_timesteps`` for every K in 1..1000, except (a) exact .5
    ties, which numpy's float arange/linspace rounds by float noise (ours rounds exact ratios half to
    even) and (b) K where diffusers' own float arange for trailing returns K+1 entries ending in -1
    (e.g. K=61): there its first K entries are ours."""
    from diffusers import DDIMScheduler, DDPMScheduler
    T = 1000
    ddim = DDIMScheduler(num_train_timesteps=T, timestep_spacing=spacing)
    ddpm = DDPMScheduler(num_train_timesteps=T, timestep_spacing=spacing)
    exact, ties, extra = 0, 0, 0
    for K in range(1, T + 1):
        ours = spaced_timesteps(T, K, spacing)[:-1]
        ddim.set_timesteps(K)
        ddpm.set_timesteps(K)
        assert torch.equal(ddim.timesteps, ddpm.timesteps)
        theirs = ddim.timesteps
        if torch.equal(theirs, ours):
            exact += 1
        elif len(theirs) == K + 1:
            assert spacing == "trailing" and theirs[-1] == -1
            extra += 1
            if not _has_tie(T, K, spacing):
                assert torch.equal(theirs[:K], ours), K
        else:
            assert _has_tie(T, K, spacing), K
            assert len(theirs) == K and (theirs - ours).abs().max() <= 1
            ties += 1
    assert exact >= 800, (exact, ties, extra)
    for K in (1, 2, 4, 5, 10, 20, 25, 50, 100, 250, 500, 1000):   # the usual step counts match exactly
        ddim.set_timesteps(K)
        assert torch.equal(ddim.timesteps, spaced_timesteps(T, K, spacing)[:-1]), K


def test_img2img_start_is_round_strength_T_minus_one():
    s = make_schedule("linear", 1000)
    x0 = torch.zeros(2, 1, 4, 4)
    for strength, t0 in ((0.6, 599), (1.0, 999), (0.25, 249), (0.0004, 0), (0.3337, 333)):
        x_t, ts = noised_start(s, x0, 50, strength, "trailing", make_generators(0, 2))
        assert ts[0] == t0 and ts[-1] == -1
        assert len(ts) == min(50, t0 + 1) + 1
        # x0 = 0, so x_t is exactly sqrt(1 - ab_t0) times image i's own noise stream
        eps = torch.stack([torch.randn(1, 4, 4, generator=g) for g in make_generators(0, 2)])
        assert torch.allclose(x_t, math.sqrt(1 - float(s.alpha_bar_at(t0))) * eps, atol=1e-6)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="strength"):
            noised_start(s, x0, 50, bad, "trailing", make_generators(0, 2))

"""Denoisers: output parameterisations, classifier-free guidance, x0 clipping and expert routing."""
from __future__ import annotations

import pytest
import torch

from diffusion_core.conditioning import Condition
from diffusion_core.denoisers import (ClassifierFreeGuidance, ClipX0, ExpertEnsemble, ModelDenoiser, Prediction,
                                      check_tiling, prediction_from_output)
from diffusion_core.schedules import make_schedule


def _bcast(v, x):
    return v.to(x).view(-1, *([1] * (x.dim() - 1)))


# ---- eps / x0 / v ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_prediction_round_trip_against_q_sample(kind):
    """x_t = q_sample(x0, t, eps); feeding the exact eps, x0 or v = sqrt(ab) eps - sqrt(1-ab) x0
    (Salimans & Ho 2022) must give back (x0, eps)."""
    sched = make_schedule(kind, 1000)
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    x0 = torch.randn(6, 2, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(6, 2, 4, 4, generator=g, dtype=torch.float64)
    x_t = sched.q_sample(x0, t, eps)
    ab = _bcast(sched.alpha_bar_at(t), x0)
    v = ab.sqrt() * eps - (1 - ab).sqrt() * x0
    for kind_out, out in (("eps", eps), ("x0", x0), ("v", v)):
        pred = prediction_from_output(out, x_t, t, sched, kind_out)
        # the cosine schedule's alpha_bar_999 = 2.4e-9 makes eps -> x0 ill-conditioned (1/sqrt(ab) = 2e4)
        atol = 1e-9 if kind_out == "eps" and kind == "cosine" else 1e-11
        assert torch.allclose(pred.x0_hat, x0, atol=atol), kind_out
        assert torch.allclose(pred.eps_hat, eps, atol=1e-9), kind_out
    # ModelDenoiser applies the same conversion to a network's output
    den = ModelDenoiser(lambda x, tt, c: v, sched, "v")
    assert torch.allclose(den(x_t, t, None).x0_hat, x0, atol=1e-11)
    with pytest.raises(ValueError, match="unknown prediction"):
        prediction_from_output(eps, x_t, t, sched, "score")


def test_prediction_without_schedule_is_cold_x0():
    x_t, out = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    pred = prediction_from_output(out, x_t, torch.tensor([3, 4]), None, "x0")
    assert torch.equal(pred.x0_hat, out) and torch.equal(pred.eps_hat, x_t - out)


# ---- classifier-free guidance (Ho & Salimans 2022) -------------------------------------------------
class CountingDenoiser:
    """eps = 0.5 x + labels-dependent offset (zero when unconditional); records each call's batch size."""

    def __init__(self, sched):
        self.sched, self.calls = sched, []
        self.w = torch.linspace(-1, 1, 3)

    def __call__(self, x_t, t, cond):
        self.calls.append(x_t.shape[0])
        if cond.labels is None:
            off = torch.full((x_t.shape[0],), 0.25)
        else:
            off = torch.where(cond.uncond, torch.full((x_t.shape[0],), 0.25), cond.labels @ self.w)
        eps = 0.5 * x_t + off.view(-1, 1, 1, 1)
        return prediction_from_output(eps, x_t, t, self.sched, "eps")


def _cond(b=3):
    labels = torch.eye(3)[torch.arange(b) % 3]
    return Condition(labels=labels, uncond=torch.zeros(b, dtype=torch.bool))


def test_cfg_scale_one_is_the_conditional_model_and_scale_w_is_the_affine_combination():
    sched = make_schedule("cosine", 1000)
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 500, 900])
    cond = _cond()
    inner = CountingDenoiser(sched)
    c = inner(x, t, cond)
    u = inner(x, t, cond.null())
    assert not torch.allclose(c.eps_hat, u.eps_hat)
    inner.calls.clear()

    one = ClassifierFreeGuidance(inner, 1.0)(x, t, cond)
    assert inner.calls == [3]                        # scale 1: no unconditional pass
    assert torch.equal(one.eps_hat, c.eps_hat) and torch.equal(one.x0_hat, c.x0_hat)

    for w in (0.0, 2.5, 7.0):
        inner.calls.clear()
        out = ClassifierFreeGuidance(inner, w)(x, t, cond)
        assert inner.calls == [6]                    # one batched pass of 2B
        assert torch.allclose(out.eps_hat, u.eps_hat + w * (c.eps_hat - u.eps_hat), atol=1e-6)
        assert torch.allclose(out.x0_hat, u.x0_hat + w * (c.x0_hat - u.x0_hat), atol=1e-5)
        ab = _bcast(sched.alpha_bar_at(t), x)        # the pair stays consistent with x_t
        assert torch.allclose(ab.sqrt() * out.x0_hat + (1 - ab).sqrt() * out.eps_hat, x, atol=1e-5)
    # nothing to guide: passes straight through
    inner.calls.clear()
    ClassifierFreeGuidance(inner, 3.0)(x, t, Condition(uncond=torch.ones(3, dtype=torch.bool)))
    assert inner.calls == [3]


def test_cfg_with_a_labelled_unet_matches_two_separate_passes(tiny_net):
    cfg, net = tiny_net(seed=1, num_labels=3)
    sched = make_schedule("linear", 100)
    den = ModelDenoiser(net, sched, "eps")
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([5, 60])
    cond = _cond(2)
    c, u = den(x, t, cond), den(x, t, cond.null())
    assert (c.eps_hat - u.eps_hat).abs().max() > 1e-3
    out = ClassifierFreeGuidance(den, 4.0)(x, t, cond)
    assert torch.allclose(out.eps_hat, u.eps_hat + 4.0 * (c.eps_hat - u.eps_hat), atol=1e-5)


# ---- x0 clipping -------------------------------------------------------------------------------
def _wild(sched, scale=3.0):
    def den(x_t, t, cond):
        x0 = scale * torch.randn(x_t.shape, generator=torch.Generator().manual_seed(5), dtype=x_t.dtype)
        ab = _bcast(sched.alpha_bar_at(t), x_t)
        return Prediction(x0, (x_t - ab.sqrt() * x0) / (1 - ab).sqrt())
    return den


@pytest.mark.parametrize("mode", ["clip", "dynamic"])
def test_clip_x0_keeps_range_and_consistency(mode):
    sched = make_schedule("linear", 1000)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([20, 700])
    raw = _wild(sched)(x, t, None)
    out = ClipX0(_wild(sched), sched, mode)(x, t, None)
    assert out.x0_hat.abs().max() <= 1.0 + 1e-12
    ab = _bcast(sched.alpha_bar_at(t), x)
    assert torch.allclose(ab.sqrt() * out.x0_hat + (1 - ab).sqrt() * out.eps_hat, x, atol=1e-10)
    if mode == "clip":
        assert torch.equal(out.x0_hat, raw.x0_hat.clamp(-1, 1))
    else:   # Saharia et al. 2022: s = max(1, p-quantile of |x0|) per image, then clamp to [-s, s] and divide by s
        for i in range(2):
            s = max(1.0, torch.quantile(raw.x0_hat[i].abs().flatten().float(), 0.995).item())
            assert torch.allclose(out.x0_hat[i], raw.x0_hat[i].clamp(-s, s) / s, atol=1e-6)
        assert (out.x0_hat.abs() == 1).any()          # the extreme values saturate at exactly +-1
    # an x0 already in range is left alone by both modes
    tame = ClipX0(_wild(sched, scale=0.2), sched, mode)(x, t, None)
    assert torch.equal(tame.x0_hat, _wild(sched, scale=0.2)(x, t, None).x0_hat)
    # cold models: eps is the residual
    cold = ClipX0(lambda xx, tt, cc: Prediction(3 * xx, -2 * xx), None, mode)(x, t, None)
    assert cold.x0_hat.abs().max() <= 1 and torch.equal(cold.eps_hat, x - cold.x0_hat)


def test_clip_x0_none_and_bad_mode():
    sched = make_schedule("linear", 100)
    den = _wild(sched)
    x, t = torch.randn(1, 1, 4, 4), torch.tensor([3])
    assert torch.equal(ClipX0(den, sched, "none")(x, t, None).x0_hat, den(x, t, None).x0_hat)
    with pytest.raises(ValueError, match="clipping mode"):
        ClipX0(den, sched, "soft")


# ---- expert ensembles (eDiff-I) ----------------------------------------------------------------
class Tagged:
    """An expert that answers with its own tag and records what it saw."""

    def __init__(self, tag):
        self.tag, self.seen = tag, []

    def __call__(self, x_t, t, cond):
        self.seen.append((t.tolist(), None if cond is None else cond.labels[:, 0].tolist()))
        return Prediction(torch.full_like(x_t, float(self.tag)), x_t + self.tag)


def test_expert_routing_at_boundaries_and_in_mixed_batches():
    experts = [Tagged(i) for i in range(3)]
    ens = ExpertEnsemble([(700, 1000, experts[2]), (0, 300, experts[0]), (300, 700, experts[1])], 1000)
    for t, i in [(0, 0), (299, 0), (300, 1), (699, 1), (700, 2), (999, 2)]:
        assert ens.expert_index(t) == i
    for bad in (-1, 1000):
        with pytest.raises(ValueError, match="outside"):
            ens.expert_index(bad)
    t = torch.tensor([999, 0, 300, 299, 700, 699])
    x = torch.zeros(6, 1, 2, 2)
    cond = Condition(labels=torch.arange(6.0)[:, None].repeat(1, 2), uncond=torch.zeros(6, dtype=torch.bool))
    out = ens(x, t, cond)
    assert out.x0_hat[:, 0, 0, 0].tolist() == [2, 0, 1, 0, 2, 1]
    assert out.eps_hat[:, 0, 0, 0].tolist() == [2, 0, 1, 0, 2, 1]
    # each expert is called once, with exactly its images (in batch order) and their conditions
    assert experts[0].seen == [([0, 299], [1.0, 3.0])]
    assert experts[1].seen == [([300, 699], [2.0, 5.0])]
    assert experts[2].seen == [([999, 700], [0.0, 4.0])]


@pytest.mark.parametrize("ranges, T, message", [
    ([(0, 400), (500, 1000)], 1000, r"gap between \[0, 400\) and \[500"),
    ([(0, 600), (500, 1000)], 1000, r"overlap between \[0, 600\) and \[500"),
    ([(100, 1000)], 1000, "must start at 0, first starts at 100"),
    ([(0, 500), (500, 900)], 1000, "must end at T=1000, last ends at 900"),
    ([(0, 500), (500, 1100)], 1000, "must end at T=1000, last ends at 1100"),
    ([], 1000, "at least one expert"),
    ([(0, 0), (0, 1000)], 1000, r"empty expert range \[0, 0\)"),
])
def test_check_tiling_refusals(ranges, T, message):
    with pytest.raises(ValueError, match=message):
        check_tiling(ranges, T)
    with pytest.raises(ValueError, match=message):
        ExpertEnsemble([(lo, hi, Tagged(0)) for lo, hi in ranges], T)


def test_check_tiling_accepts_exact_tilings():
    check_tiling([(0, 1000)], 1000)
    check_tiling([(500, 1000), (0, 250), (250, 500)], 1000)

"""Pipeline: one RNG stream per image, the streaming contract, img2img and cold models."""
from __future__ import annotations

import math

import pytest
import torch

from diffusion_core import load, save_model
from diffusion_core.samplers import make_generators, per_image_noise
from diffusion_core.schedules import spaced_timesteps, timestep_pairs


class PerImage(torch.nn.Module):
    """Runs the network one image at a time. CPU BLAS picks a different GEMM kernel for a batch of 1 than
    for a batch of 4, so a batched Linear layer is not bitwise batch-invariant (measured: ~2e-7 differences
    in the U-Net's time embedding); with this wrapper the test sees only the pipeline's RNG plumbing."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, t, cond=None):
        return torch.cat([self.net(x[i:i + 1], t[i:i + 1], None if cond is None else cond.index(slice(i, i + 1)))
                          for i in range(x.shape[0])])


@pytest.fixture
def pipe(tmp_path, make_model):
    make_model(tmp_path / "m", seed=7, unet=dict(num_labels=3), label_names=("red", "green", "blue"))
    return load(tmp_path / "m")


SEED_CASES = [dict(sampler="ddpm"), dict(sampler="ddpm", variance="beta"), dict(sampler="ddim"),
              dict(sampler="ddim", eta=0.7), dict(sampler="dpm++"), dict(sampler="ddpm", guidance=3.0, labels=["green"])]


@pytest.mark.parametrize("kw", SEED_CASES)
def test_image_i_of_seed_s_is_image_0_of_seed_s_plus_i(pipe, kw):
    pipe.net = PerImage(pipe.net)
    batch = pipe.sample(4, steps=6, seed=11, **kw)
    for i in range(4):
        assert torch.equal(batch[i:i + 1], pipe.sample(1, steps=6, seed=11 + i, **kw)), i
    assert not torch.equal(batch[0], batch[1])


@pytest.mark.parametrize("kw", [dict(sampler="ddpm"), dict(sampler="dpm++", guidance=3.0, labels=["green"])])
def test_seed_contract_bit_exact_with_the_real_batched_network(pipe, kw):
    """No PerImage wrapper: the pipeline's fixed evaluation batch makes the images bit-identical
    across batch sizes 1, 3, 5 and 11 (with CFG: 2, 6, 10 and 22 network rows)."""
    assert pipe.chunk > 0
    big = pipe.sample(11, steps=6, seed=11, **kw)
    for n, first in ((1, 0), (1, 7), (3, 2), (5, 6)):
        assert torch.equal(big[first:first + n], pipe.sample(n, steps=6, seed=11 + first, **kw)), (n, first)


def test_whole_batch_mode_differs_only_by_rounding(pipe):
    pipe.chunk = 0
    batch = pipe.sample(4, sampler="ddpm", steps=6, seed=11)
    for i in range(4):
        assert torch.allclose(batch[i:i + 1], pipe.sample(1, sampler="ddpm", steps=6, seed=11 + i), atol=1e-5)


def test_img2img_seed_contract(pipe):
    pipe.net = PerImage(pipe.net)
    init = torch.rand(1, 8, 8) * 2 - 1
    batch = pipe.sample(3, sampler="ddpm", steps=5, seed=2, init_image=init, strength=0.5)
    for i in range(3):
        assert torch.equal(batch[i:i + 1], pipe.sample(1, sampler="ddpm", steps=5, seed=2 + i, init_image=init, strength=0.5))


# ---- streaming -------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++"])
@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace"])
def test_stream_records(pipe, sampler, spacing):
    K = 5
    recs = list(pipe.stream(2, sampler=sampler, steps=K, spacing=spacing, seed=4))
    assert [r.index for r in recs] == list(range(K)) and all(r.num_steps == K for r in recs)
    assert [(r.t, r.t_next) for r in recs] == timestep_pairs(spaced_timesteps(pipe.config.diffusion.T, K, spacing))
    for a, b in zip(recs, recs[1:]):
        assert torch.equal(a.x_next, b.x_t)
    # the start is each image's own standard-normal draw, and the last record is the result
    assert torch.equal(recs[0].x_t, per_image_noise((2, 1, 8, 8), make_generators(4, 2)))
    assert torch.equal(recs[-1].x_next.clamp(-1, 1), pipe.sample(2, sampler=sampler, steps=K, spacing=spacing, seed=4))
    assert recs[-1].t_next == -1 and all(r.stage == 0 for r in recs)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++"])
def test_breaking_out_of_a_stream_leaks_nothing(pipe, sampler):
    fresh = list(pipe.stream(2, sampler=sampler, steps=6, seed=9))
    it = pipe.stream(2, sampler=sampler, steps=6, seed=9)
    first = []
    for rec in it:
        first.append(rec)
        if len(first) == 2:
            break
    for a, b in zip(first, fresh):
        assert torch.equal(a.x_next, b.x_next)
    again = pipe.sample(2, sampler=sampler, steps=6, seed=9)
    assert torch.equal(again, fresh[-1].x_next.clamp(-1, 1))
    it.close()
    assert torch.equal(pipe.sample(2, sampler=sampler, steps=6, seed=9), again)


@pytest.mark.parametrize("strength, steps, t0, K", [(0.6, 10, 59, 10), (1.0, 10, 99, 10), (0.05, 10, 4, 5),
                                                      (0.333, 4, 32, 4)])
def test_img2img_starts_at_round_strength_T_minus_one(pipe, strength, steps, t0, K):
    T = pipe.config.diffusion.T
    assert t0 == round(strength * T) - 1
    init = torch.rand(1, 8, 8) * 2 - 1
    recs = list(pipe.stream(2, sampler="ddim", steps=steps, seed=1, init_image=init, strength=strength))
    ts = spaced_timesteps(T, K, "trailing", t_start=t0)
    assert recs[0].t == t0 and len(recs) == K
    assert [(r.t, r.t_next) for r in recs] == timestep_pairs(ts)
    ab = float(pipe.stages[0].schedule.alpha_bar_at(t0))
    eps = per_image_noise((2, 1, 8, 8), make_generators(1, 2))
    assert torch.allclose(recs[0].x_t, math.sqrt(ab) * init + math.sqrt(1 - ab) * eps, atol=1e-6)


@pytest.mark.parametrize("spacing, first, grid", [
    ("trailing", 59, [59, 53, 47, 41, 35, 29, 23, 17, 11, 5]),      # round(60 (10 - i) / 10) - 1
    ("leading", 54, [54, 48, 42, 36, 30, 24, 18, 12, 6, 0]),        # i * (60 // 10)
    ("linspace", 59, [59, 52, 46, 39, 33, 26, 20, 13, 7, 0])])      # round(i 59 / 9)
def test_img2img_noise_level_is_that_of_the_grids_first_timestep(pipe, spacing, first, grid):
    """strength 0.6 of T = 100: t_start = 59, and the grid is restricted to [0, 59] (Lin et al. 2024, Table 2,
    with 60 in place of T). Leading spacing's grid does not start at t_start, so the image must be noised
    to alpha_bar at the grid's first timestep, 54, not at 59 (SDEdit, Meng et al. 2022: x_t ~ q(x_t | x0))."""
    init = torch.rand(1, 8, 8) * 2 - 1
    recs = list(pipe.stream(2, sampler="ddim", steps=10, seed=1, init_image=init, strength=0.6, spacing=spacing))
    assert [r.t for r in recs] == grid and recs[0].t == first and recs[-1].t_next == -1
    betas = torch.linspace(1e-4, 0.02, 100, dtype=torch.float64)         # the fixture's linear schedule
    ab = float(torch.prod(1 - betas[:first + 1]))
    eps = per_image_noise((2, 1, 8, 8), make_generators(1, 2))
    assert torch.allclose(recs[0].x_t, math.sqrt(ab) * init + math.sqrt(1 - ab) * eps, atol=1e-6)


def test_stream_argument_errors(pipe):
    for kw, msg in ((dict(n=0), "batch size"), (dict(n=65), "batch size"), (dict(steps=0), "steps"),
                    (dict(steps=1001), "steps"), (dict(sampler="cold"), "does not apply"),
                    (dict(labels=["purple"]), "unknown label 'purple'"), (dict(labels=["red", "blue"]), "one class"),
                    (dict(spacing="cubic"), "unknown spacing")):
        with pytest.raises(ValueError, match=msg):
            next(pipe.stream(**{"n": 1, **kw}))


@pytest.mark.parametrize("kw", [dict(sampler="ddpm"), dict(sampler="ddim", eta=0.7), dict(sampler="dpm++3m", spacing="karras"),
                                dict(sampler="unipc", guidance=3.0, labels=["green"])])
def test_x_start_of_start_noise_reproduces_the_plain_run(pipe, kw):
    """``start_noise(n, seed)`` is the x_T a run of that seed starts from, and handing it back as ``x_start``
    gives the same run bit for bit, stochastic samplers included (their step noise stays the seed's)."""
    recs = list(pipe.stream(3, steps=5, seed=4, **kw))
    assert torch.equal(pipe.start_noise(3, 4), recs[0].x_t)
    again = list(pipe.stream(3, steps=5, seed=4, x_start=pipe.start_noise(3, 4), **kw))
    assert all(torch.equal(a.x_next, b.x_next) for a, b in zip(recs, again)) and len(recs) == len(again)
    other = pipe.start_noise(3, 5)
    assert not torch.equal(pipe.sample(3, steps=5, seed=4, x_start=other, **kw), recs[-1].x_next)


@pytest.mark.parametrize("spacing", ["trailing", "karras"])
def test_branching_from_a_step_with_the_same_settings_continues_the_run(pipe, spacing):
    """Continuing from step k's x_t at t_start = t_k with the steps that were left: on a trailing grid (T/K a
    whole number) the remaining grid is the original's tail, so deterministic DDIM lands on the same image bit
    for bit; on a grid in noise level it starts at t_k and ends at the clean image."""
    T = pipe.config.diffusion.T
    steps = 10 if T % 10 == 0 else 4
    recs = list(pipe.stream(2, sampler="ddim", steps=steps, spacing=spacing, seed=9, guidance=2.0, labels=["red"]))
    k = steps // 2
    branch = list(pipe.stream(2, sampler="ddim", steps=steps - k, spacing=spacing, seed=9, guidance=2.0, labels=["red"],
                              x_start=recs[k].x_t, t_start=recs[k].t))
    assert branch[0].t == recs[k].t and branch[-1].t_next == -1 and torch.equal(branch[0].x_t, recs[k].x_t)
    if spacing == "trailing":
        assert [r.t for r in branch] == [r.t for r in recs[k:]]
        assert torch.equal(branch[-1].x_next, recs[-1].x_next)
    changed = pipe.sample(2, sampler="ddim", steps=steps - k, spacing=spacing, seed=9, guidance=5.0, labels=["red"],
                          x_start=recs[k].x_t, t_start=recs[k].t)
    assert not torch.equal(changed, recs[-1].x_next)


def test_x_start_argument_errors(pipe):
    x = pipe.start_noise(1, 0)
    for kw, msg in ((dict(x_start=x, t_start=pipe.config.diffusion.T), "t_start must"), (dict(t_start=3), "needs x_start"),
                    (dict(x_start=x[..., :4]), "shape"), (dict(x_start=x, init_image=x[0]), "not with img2img")):
        with pytest.raises(ValueError, match=msg):
            next(pipe.stream(1, **kw))


def test_labels_and_guidance_change_the_result(pipe):
    plain = pipe.sample(2, sampler="ddim", steps=4, seed=0)
    red = pipe.sample(2, sampler="ddim", steps=4, seed=0, labels=["RED"])
    assert torch.equal(red, pipe.sample(2, sampler="ddim", steps=4, seed=0, labels=["0"]))
    assert not torch.equal(plain, red)
    assert not torch.equal(red, pipe.sample(2, sampler="ddim", steps=4, seed=0, labels=["red"], guidance=4.0))


# ---- cold models ----------------------------------------------------------------------------
def test_cold_prior_starts_from_the_asked_class(tmp_path, make_model):
    """With the prior's classes stored, a class-conditional cold run starts from a degraded image of that
    class (a blurred blob keeps its class's outline, so a random start overrides the label); without a
    label, or without stored classes, any prior image."""
    cfg, net = make_model(tmp_path / "c", unet=dict(num_labels=3), diffusion=dict(degradation="blur",
                                                                                  prediction="x0", T=20),
                          label_names=("a", "b", "c"))
    prior = torch.stack([torch.full((1, 8, 8), v) for v in (-0.9, -0.8, 0.1, 0.2, 0.7, 0.8)])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    save_model(tmp_path / "c", cfg, net.state_dict(), extra={"prior": prior, "prior_labels": labels})
    pipe = load(tmp_path / "c")
    assert torch.equal(pipe.stages[0].prior_labels, labels)
    for cls in range(3):
        recs = list(pipe.stream(8, sampler="cold", steps=2, seed=cls, labels=[cls]))
        allowed = {round(float(v), 3) for v in prior[labels == cls][:, 0, 0, 0]}
        assert {round(float(v), 3) for v in recs[0].x_t[:, 0, 0, 0]} <= allowed
    any_start = list(pipe.stream(32, sampler="cold", steps=2, seed=0))[0].x_t[:, 0, 0, 0]
    assert len({round(float(v), 3) for v in any_start}) > 3           # no label: the whole prior
    save_model(tmp_path / "d", cfg, net.state_dict(), extra={"prior": prior})
    old = load(tmp_path / "d")
    assert old.stages[0].prior_labels is None
    assert len({round(float(v), 3) for v in list(old.stream(32, sampler="cold", steps=2, seed=0, labels=[1]))[0]
                .x_t[:, 0, 0, 0]}) > 3                                 # no stored classes: any prior image


@pytest.mark.parametrize("degradation", ["blur", "pixelate", "mask", "noise_fixed"])
def test_cold_pipeline(tmp_path, make_model, degradation):
    cfg, net = make_model(tmp_path / "c", diffusion=dict(degradation=degradation, prediction="x0", T=20))
    prior = torch.rand(3, 1, 8, 8) * 2 - 1
    save_model(tmp_path / "c", cfg, net.state_dict(), extra={"prior": prior})
    pipe = load(tmp_path / "c")
    assert pipe.samplers == ("cold",)
    with pytest.raises(ValueError, match="does not apply"):
        next(pipe.stream(1, sampler="ddim"))
    recs = list(pipe.stream(2, sampler="cold", steps=4, seed=3))
    assert [(r.t, r.t_next) for r in recs] == timestep_pairs(spaced_timesteps(20, 4, "trailing"))
    fixed = per_image_noise((2, 1, 8, 8), make_generators(3, 2))
    if degradation == "noise_fixed":     # x_T = D(0, T-1) with each image's fixed draw
        ab = float(pipe.stages[0].schedule.alpha_bar_at(19))
        assert torch.allclose(recs[0].x_t, math.sqrt(1 - ab) * fixed, atol=1e-6)
    else:                                # a stored fully degraded image, picked by each image's stream
        for i in range(2):
            assert any(torch.equal(recs[0].x_t[i], p) for p in prior)
    out = pipe.sample(2, sampler="cold", steps=4, seed=3)
    assert torch.equal(out, recs[-1].x_next.clamp(-1, 1))
    # img2img starts from D(x0, t_start)
    init = torch.rand(1, 8, 8) * 2 - 1
    recs = list(pipe.stream(2, sampler="cold", steps=4, seed=3, init_image=init, strength=0.5))
    assert recs[0].t == 9
    want = pipe.stages[0].degradation(init.expand(2, -1, -1, -1), torch.full((2,), 9), fixed)
    assert torch.allclose(recs[0].x_t, want, atol=1e-6)


@pytest.mark.parametrize("hw", [(1, 1), (3, 3), (33, 33), (5, 3), (75, 100)])
def test_super_resolution_takes_any_input_size(tmp_path, make_model, hw):
    """The U-Net halves the size len(channel_mults) - 1 times, so an SR input whose upscaled side is not a
    multiple of that is sampled on an edge-padded canvas and cropped back; non-square inputs stay non-square
    (odd sides failed with "Sizes of tensors must match", 100x75 came back square)."""
    make_model(tmp_path / "sr", seed=21, task="super_resolution", low_res=8, high_res=16,
               unet=dict(in_channels=3, out_channels=3, cond_channels=3, aug_level_embedding=True, image_size=16,
                         channel_mults=(1, 2, 2)))
    sr = load(tmp_path / "sr")
    low = torch.rand(2, 3, *hw) * 2 - 1
    recs = list(sr.stream(2, low_res=low, steps=3, sampler="dpm++", seed=4, aug_level=0.1))
    assert all(r.x_next.shape == (2, 3, 2 * hw[0], 2 * hw[1]) for r in recs)
    assert all(r.x_t.shape == r.x0_hat.shape == r.eps_hat.shape == r.x_next.shape for r in recs)
    assert torch.isfinite(recs[-1].x_next).all()
    one = sr.sample(1, low_res=low[1:], steps=3, sampler="dpm++", seed=5, aug_level=0.1)
    assert torch.equal(one[0], recs[-1].x_next[1].clamp(-1, 1))        # the seed contract holds on a canvas too


def test_x0_range_is_the_models_sampling_default(tmp_path, make_model):
    """``diffusion.x0_range`` in a model's config picks how sampling keeps x0_hat in range when the caller does
    not say (issue 20: dynamic thresholding keeps guided dark skin tones brown where clipping turns them black);
    an explicit ``clip=`` still wins, and configs without the field keep clipping, as every model did before."""
    from diffusion_core import ConfigError, DiffusionConfig
    for name, rng in (("clip", "clip"), ("dyn", "dynamic")):
        make_model(tmp_path / name, unet=dict(num_labels=2), label_names=("a", "b"), diffusion=dict(x0_range=rng))
    clip, dyn = load(tmp_path / "clip"), load(tmp_path / "dyn")
    kw = dict(sampler="ddim", steps=4, guidance=6.0, labels=["a"], seed=0)
    a, b = clip.sample(2, **kw), dyn.sample(2, **kw)
    assert not torch.equal(a, b)                       # the two ways differ on this network...
    assert torch.equal(b, clip.sample(2, clip="dynamic", **kw))      # ... and the config's way is the one used
    assert torch.equal(a, dyn.sample(2, clip="clip", **kw))
    assert DiffusionConfig().x0_range == "clip"
    with pytest.raises(ConfigError, match="x0_range"):
        DiffusionConfig(x0_range="soft")


def test_sampling_defaults_in_a_config_are_checked():
    from diffusion_core import ConfigError
    from diffusion_core.config import SamplingDefaults
    assert SamplingDefaults() == SamplingDefaults("dpm++", 25, "trailing", 2.0, "")   # the app's defaults before
    for bad in (dict(sampler="euler"), dict(spacing="cosine"), dict(steps=0), dict(steps=5000), dict(guidance=-1.0),
                dict(why="x" * 3000)):
        with pytest.raises(ConfigError):
            SamplingDefaults(**bad)


def test_one_low_res_image_gives_a_batch_of_super_resolved_samples(tmp_path, make_model):
    """A super-resolution model asked for n samples of one low-resolution image (a batch of one, as the app sends
    it) samples each with its own seed (issue 18: IndexError at the app's default batch of 4)."""
    make_model(tmp_path / "sr", unet=dict(cond_channels=1, image_size=8), task="super_resolution", low_res=4,
               high_res=8)
    sr = load(tmp_path / "sr")
    low = torch.rand(1, 1, 4, 4) * 2 - 1
    x = sr.sample(3, low_res=low, steps=3, seed=5)
    assert x.shape == (3, 1, 8, 8) and not torch.equal(x[0], x[1])
    assert torch.equal(x[1], sr.sample(1, low_res=low, steps=3, seed=6)[0])       # image i uses seed + i
    with pytest.raises(ValueError, match="2 low-resolution images for a batch of 3"):
        sr.sample(3, low_res=low.expand(2, -1, -1, -1), steps=3)


@pytest.mark.parametrize("aug_level", [0.0, 0.3])
def test_super_resolution_output_downsamples_back_to_its_input(tmp_path, make_model, aug_level):
    """Issue 21: an SR stage trained on crops gets low frequencies wrong on the whole canvas (emoji 64 -> 128
    came back on a lavender-tinted white). Its result is back-projected onto its input (Irani & Peleg 1991,
    written out here): x <- x + bicubic_up(target - area_down(x)), twice, target = the input itself, or for a
    noise-augmented input (a cascade's later stage) the input area-averaged to 1/4 of its size, so that the
    base's speckle is not drawn back in; then four rounds of x <- clip(x) + nearest_up(target - area_down(clip(x))),
    after which the result downsamples to the target exactly (session 15: the bicubic rounds alone left a residual
    that cost a 128 px cascade a few pixels of its base's figure). Only the result changes: every earlier record is
    the sampler's own."""
    make_model(tmp_path / "sr", seed=21, task="super_resolution", low_res=8, high_res=16,
               unet=dict(in_channels=3, out_channels=3, cond_channels=3, aug_level_embedding=True, image_size=16,
                         channel_mults=(1, 2, 2)))
    sr = load(tmp_path / "sr")
    low = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    recs = list(sr.stream(2, low_res=low, steps=4, sampler="ddim", seed=4, aug_level=aug_level))
    side = 8 if aug_level == 0 else 2
    target = torch.nn.functional.adaptive_avg_pool2d(low, side)
    x = recs[-1].x0_hat      # DDIM's last step (to alpha_bar = 1) returns x0_hat
    pool = torch.nn.functional.adaptive_avg_pool2d
    for _ in range(2):
        x = x + torch.nn.functional.interpolate(target - pool(x, side), size=(16, 16), mode="bicubic",
                                                align_corners=False)
    for _ in range(4):
        x = x.clamp(-1, 1)
        x = x + (target - pool(x, side)).repeat_interleave(16 // side, -2).repeat_interleave(16 // side, -1)
    assert torch.allclose(recs[-1].x_next, x, atol=1e-5)
    assert torch.allclose(pool(recs[-1].x_next, side), target, atol=1e-5)        # downsamples to its input exactly
    before = (torch.nn.functional.adaptive_avg_pool2d(recs[-1].x0_hat, side) - target).abs().mean()
    after = (torch.nn.functional.adaptive_avg_pool2d(recs[-1].x_next, side) - target).abs().mean()
    assert after < 0.2 * before
    for r in recs[:-1]:
        assert torch.equal(r.x_next, recs[recs.index(r) + 1].x_t)


def test_a_large_model_runs_fewer_rows_per_call_and_keeps_the_seed_contract(tmp_path, make_model):
    """The network runs on fixed batches (EVAL_CHUNK rows at 32 px) so that image i of a batch is image 0 of seed
    + i. A 128 px super-resolution stage padded one image to 8 rows: 8x the work of the image. A model's chunk now
    scales with 1 / side^2 (never below 2, never above 8), and the seed contract still holds bit for bit. From 128 px
    up a row runs alone (chunk 1, on every thread: test_parallel's ``-k alone``)."""
    from diffusion_core.pipeline import EVAL_CHUNK, eval_chunk
    assert [eval_chunk(s) for s in (8, 16, 32, 64, 128, 256, 512)] == [EVAL_CHUNK] * 3 + [2, 1, 1, 1]
    make_model(tmp_path / "sr", seed=21, task="super_resolution", low_res=32, high_res=64,
               unet=dict(in_channels=3, out_channels=3, cond_channels=3, aug_level_embedding=True, image_size=64,
                         channel_mults=(1, 2)))
    sr = load(tmp_path / "sr")
    assert sr.chunk == 2
    rows = []
    net = sr.net
    sr.net = lambda x, t, cond=None: rows.append(x.shape[0]) or net(x, t, cond)
    low = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    one = sr.sample(1, low_res=low, steps=2, seed=7)
    assert set(rows) == {2}                       # one image: 2 rows per call, not 8
    sr.net = net
    three = sr.sample(3, low_res=low, steps=2, seed=6)
    assert torch.equal(three[1], one[0])


def test_a_request_is_frozen_and_checked_against_the_bounds_the_cli_takes(run_main):
    """Issue 19: every sampling option is one frozen Request, checked against options.BOUNDS when made (before
    any network runs); the command line refuses the same numbers with the same limits."""
    from dataclasses import FrozenInstanceError
    from diffusion_core.options import BOUNDS
    from diffusion_core.pipeline import Request
    r = Request(4, sampler="dpm++", steps=20, guidance=3.0, labels=("Bag",))
    with pytest.raises(FrozenInstanceError):
        r.steps = 5
    for name in ("n", "steps", "seed", "guidance"):
        lo, hi = BOUNDS[name]
        Request(**{name: lo})
        Request(**{name: hi})
        for bad in (lo - 1, hi + 1):
            with pytest.raises(ValueError, match=f"{'guidance scale' if name == 'guidance' else ''}.*must be"):
                Request(**{name: bad})
    assert BOUNDS["guidance"] == (0.0, 30.0) and BOUNDS["steps"] == (1, 1000)
    for opt, bad in (("--guidance", "30.5"), ("--steps", "1001")):
        out = run_main("sample", "--model", "nowhere", opt, bad)
        lo, hi = BOUNDS[opt[2:]]
        assert out.returncode != 0 and f"must be in [{lo}, {hi}]" in out.stderr, out.stderr


def test_a_request_is_the_one_check_of_a_runs_numbers():
    """Issue 35: the Request checks and types every number of a run, whatever sent it: a form's float that holds a
    whole number, an API client's text; fractions, booleans, NaN, None and text that is no number are refused with
    the option's name and range. A seed near 2^63 keeps its last digits (a float holds it only to 2^10)."""
    from diffusion_core.options import BOUNDS
    from diffusion_core.pipeline import Request
    r = Request("4", steps=25.0, seed="9223372036854675000", guidance="2", eta=0.5, strength="0.3")
    assert (r.n, r.steps, r.seed, r.guidance, r.eta, r.strength) == (4, 25, 9223372036854675000, 2.0, 0.5, 0.3)
    assert all(type(v) is int for v in (r.n, r.steps, r.seed)) and type(r.guidance) is float
    assert Request(1, seed=2 ** 62 + 1).seed == 2 ** 62 + 1
    for field, name, whole in (("n", "batch size", True), ("steps", "steps", True), ("seed", "seed", True),
                               ("guidance", "guidance scale", False), ("eta", "eta", False),
                               ("strength", "strength", False)):
        lo, hi = BOUNDS[field]
        kind = "a whole number" if whole else "a number"
        for bad in ((2.5, True, float("nan"), None, "many", hi + 1) if whole else
                    (True, float("nan"), float("inf"), None, "lots", hi + 1, lo - 1)):
            with pytest.raises(ValueError, match=rf"^{name} must be {kind} in \[.*\], got "):
                Request(**{field: bad})
    with pytest.raises(ValueError, match=r"strength must be in \(0, 1\] for img2img"):
        Request(1, init_image=torch.zeros(1, 8, 8), strength=0)


def test_prepare_reads_each_input_at_the_size_and_channels_its_stage_takes(tmp_path):
    """``Pipeline.prepare``, the one reader of input files for the app and the CLI (issue 35): each input is
    centre-cropped square and resized to its stage's size, in its stage's channels. A 48 x 16 RGB picture, flat grey
    in its middle 32 columns and white in its 8-column side bands, must read as that grey everywhere (grey / 127.5
    - 1): the bands cropped away, and far enough from the crop that no resampling filter reaches them."""
    import sys
    from pathlib import Path

    from PIL import Image
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from app_fixtures import build_checkpoints
    root = build_checkpoints(tmp_path / "ckpt")
    pic = Image.new("RGB", (48, 16), (255, 255, 255))
    pic.paste((100, 100, 100), (8, 0, 40, 16))
    pic.save(tmp_path / "in.png")
    grey = 100 / 127.5 - 1
    cases = [("tiny-sr", "low_res", (1, 1, 8, 8)),             # a super-resolution model: its low_res side (8)
             ("tiny-cascade", "low_res", (1, 1, 16, 16)),      # a cascade's first SR stage: the base's size (16)
             ("tiny-pose", "cond_image", (1, 16, 16)),         # a stickman: the cond channels (1)
             ("tiny-attr", "init_image", (3, 16, 16))]         # img2img: the model's own channels (3)
    for model, name, shape in cases:
        x = load(root / model).prepare(**{name: tmp_path / "in.png"})[name]
        assert tuple(x.shape) == shape and torch.allclose(x, torch.full(shape, grey), atol=1e-6), (model, x.shape)
    assert load(root / "tiny").prepare() == {}
    with pytest.raises(ValueError, match="neither a super-resolution model nor a cascade"):
        load(root / "tiny").prepare(low_res=tmp_path / "in.png")


def test_a_run_is_refused_when_asked_for_not_at_its_first_step(pipe, tmp_path, make_model):
    """Everything the core refuses a run for (the sampler, its grid, the work) is said when the run is asked for
    (``stream`` / ``run`` return no generator), before any step: the app asks before a visitor waits for a turn,
    and no longer checks the sampler a second time itself (issue 35)."""
    for kw, msg in ((dict(sampler="cold"), "sampler 'cold' does not apply to"), (dict(n=64, steps=5), None)):
        if msg is None:
            assert pipe.stream(**kw) is not None
            continue
        with pytest.raises(ValueError, match=msg):
            pipe.stream(1, **kw)
    cfg, net = make_model(tmp_path / "c", diffusion=dict(degradation="blur", prediction="x0", T=20))
    save_model(tmp_path / "c", cfg, net.state_dict(), extra={"prior": torch.rand(3, 1, 8, 8) * 2 - 1})
    cold = load(tmp_path / "c")
    with pytest.raises(ValueError, match="sampler 'ddim' does not apply to c "):
        cold.stream(1, sampler="ddim")
    with pytest.raises(ValueError, match="the karras spacing follows a Gaussian noise schedule"):
        cold.stream(1, sampler="cold", spacing="karras")

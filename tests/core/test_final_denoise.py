"""The last denoising step (issue 40): ``samplers.final_denoise`` against Tweedie's formula written out here for
Gaussian data; ``conditioning.match_edges`` against a hand-made edge; and a cascade whose manifest sets
``denoise_t``: the step is the last of each stage's steps, it runs on the back-projected result of a
super-resolution stage and without guidance, and the result is matched again where its input has edges."""
import torch
import torch.nn.functional as F

from diffusion_core import load, save_cascade
from diffusion_core.conditioning import match_edges
from diffusion_core.denoisers import Prediction
from diffusion_core.samplers import SampleStep, final_denoise
from diffusion_core.schedules import make_schedule

MU, S = 0.3, 0.5        # the data: x0 ~ N(MU, S^2), every pixel independent


class GaussianDenoiser:
    """The exact denoiser of N(MU, S^2) data in the package's (VP) form: E[x0 | x_t] for x_t = sqrt(ab) x0 +
    sqrt(1 - ab) eps, the linear regression of x0 on x_t. It records the inputs' shapes."""

    def __init__(self, schedule):
        self.schedule, self.shapes = schedule, []

    def __call__(self, x_t, t, cond):
        self.shapes.append(tuple(x_t.shape))
        ab = self.schedule.alpha_bar_at(t).float().view(-1, 1, 1, 1)
        x0 = MU + ab.sqrt() * S ** 2 / (ab * S ** 2 + 1 - ab) * (x_t - ab.sqrt() * MU)
        return Prediction(x0, (x_t - ab.sqrt() * x0) / (1 - ab).sqrt())


def _run(h=6, w=6):
    """Two recorded steps of some run, ending at x (2, 1, h, w)."""
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(2, 1, h, w, generator=g) for _ in range(3)]
    return [SampleStep(i, 2, t, t_next, xs[i], xs[i + 1], xs[i + 1], xs[i], stage=1)
            for i, (t, t_next) in enumerate([(80, 40), (40, -1)])]


def test_the_last_step_is_tweedies_posterior_mean_of_the_result():
    """Taken as a noisy observation y = x0 + sigma n with sigma^2 = (1 - ab_t) / ab_t, the result y is replaced by
    Tweedie's E[x0 | y] = y + sigma^2 grad log p(y), for N(MU, S^2) data y - sigma^2 (y - MU) / (S^2 + sigma^2)
    (the variance-exploding form, independent of the code's scaling by sqrt(ab)). The run's own records pass
    through, each counting the added step; the step is recorded at t, ending at -1."""
    sched = make_schedule("linear", 100)
    records, den = _run(), GaussianDenoiser(sched)
    out = list(final_denoise(iter(records), den, 30, sched))
    assert len(out) == 3 and [r.num_steps for r in out] == [3, 3, 3] and [r.index for r in out] == [0, 1, 2]
    assert all(torch.equal(a.x_next, b.x_next) for a, b in zip(out, records))
    y, ab = records[-1].x_next, float(sched.alpha_bar[30])
    sigma2 = (1 - ab) / ab
    last = out[-1]
    assert (last.t, last.t_next, last.stage) == (30, -1, 1)
    torch.testing.assert_close(last.x_next, y - sigma2 * (y - MU) / (S ** 2 + sigma2))
    torch.testing.assert_close(last.x_t, ab ** 0.5 * y)
    assert torch.equal(last.x0_hat, last.x_next)
    # it moves the result toward the data's mean by the shrinkage S^2 / (S^2 + sigma^2), not more
    assert 0 < (last.x_next - MU).abs().mean() < (y - MU).abs().mean()


def test_a_cropped_run_is_denoised_on_its_canvas_and_cropped_back():
    """Records cropped from a padded canvas (a super-resolution stage's odd sizes) are padded back to the canvas for
    the denoiser and the step cropped to the records' size."""
    sched = make_schedule("linear", 100)
    records, den = _run(6, 5), GaussianDenoiser(sched)
    last = list(final_denoise(iter(records), den, 30, sched, canvas=(8, 8)))[-1]
    assert den.shapes == [(2, 1, 8, 8)] and last.x_next.shape == (2, 1, 6, 5)
    y, ab = records[-1].x_next, float(sched.alpha_bar[30])
    torch.testing.assert_close(last.x_next, y - (1 - ab) / ab * (y - MU) / (S ** 2 + (1 - ab) / ab))


def _cascade(folder, make_model, denoise=(30, 10)):
    make_model(folder / "base", seed=20, unet=dict(in_channels=3, out_channels=3, num_labels=3),
               label_names=("a", "b", "c"))
    make_model(folder / "sr", seed=21, task="super_resolution", low_res=8,
               unet=dict(in_channels=3, out_channels=3, cond_channels=3, aug_level_embedding=True, image_size=16))
    save_cascade(folder / "casc", [{"path": "../base", "denoise_t": denoise[0]},
                                   {"path": "../sr", "aug_level": 0.2, "steps": 3, "match_scale": 1,
                                    "denoise_t": denoise[1]}])
    return load(folder / "casc")


def test_a_cascades_denoise_t_is_the_last_of_each_stages_steps(tmp_path, make_model):
    """With ``denoise_t`` set, a stage of 4 steps runs 3 sampler steps and the denoising step (as many network calls
    and records as without). The base's step is unguided (the guided denoiser gives another image); the
    super-resolution stage's runs on its back-projected result, whose area average is the base's image exactly."""
    pipe = _cascade(tmp_path, make_model)
    kw = dict(sampler="ddpm", steps=4, labels=["b"], guidance=3.0, seed=7)
    recs = list(pipe.stream(2, **kw))
    base, sr = [r for r in recs if r.stage == 0], [r for r in recs if r.stage == 1]
    assert len(base) == 4 and len(sr) == 3
    assert [(r.t, r.t_next) for r in (base[-1], sr[-1])] == [(30, -1), (10, -1)]
    assert base[-2].t_next == -1 and sr[-2].t_next == -1        # the sampler's own last steps end at the clean image
    st0, st1 = pipe.stages
    ab0, ab1 = (float(st.schedule.alpha_bar_at(t)) for st, t in ((st0, 30), (st1, 10)))
    assert torch.equal(base[-1].x_t, (torch.tensor(ab0, dtype=torch.float64).sqrt().float() * base[-2].x_next))
    cond = st0.condition(2, ["b"])
    t = torch.full((2,), 30)
    with torch.inference_mode():
        plain, guided = st0.denoiser(1.0)(base[-1].x_t, t, cond).x0_hat, st0.denoiser(3.0)(base[-1].x_t, t, cond).x0_hat
    assert torch.equal(base[-1].x_next, plain) and not torch.allclose(plain, guided)
    low = base[-1].x_next
    torch.testing.assert_close(F.avg_pool2d(sr[-2].x_next, 2), low, atol=1e-5, rtol=0)
    torch.testing.assert_close(sr[-1].x_t, ab1 ** 0.5 * sr[-2].x_next)
    assert not torch.equal(sr[-1].x0_hat, sr[-2].x_next)
    assert torch.equal(sr[-1].x_next, match_edges(sr[-1].x0_hat, low, 1))     # the denoised result, edges matched
    assert not torch.equal(sr[-1].x_next, sr[-1].x0_hat)


def test_match_edges_matches_the_blocks_at_an_edge_and_leaves_flat_ones():
    """A 4 x 4 target, -0.5 in columns 0-1 and +0.5 in columns 2-3 (a step of 127 grey levels), so that the 3x3
    neighbourhoods of columns 1 and 2 span the step and those of columns 0 and 3 (edges replicated) are flat. x at
    twice the size, off the target everywhere: after ``match_edges`` the 2 x 2 blocks of columns 1 and 2 average to
    the target exactly, and the pixels of columns 0 and 3 are x's. A step of 6 grey levels (under EDGE_SPAN's 8)
    is no edge: nothing moves."""
    target = torch.tensor([-0.5, -0.5, 0.5, 0.5]).repeat(1, 3, 4, 1)
    g = torch.Generator().manual_seed(1)
    x = F.interpolate(target, scale_factor=2, mode="nearest") + 0.1 * torch.randn(1, 3, 8, 8, generator=g) + 0.05
    out = match_edges(x, target, 1)
    blocks = F.avg_pool2d(out, 2)
    torch.testing.assert_close(blocks[..., 1:3], target[..., 1:3], atol=1e-6, rtol=0)
    assert torch.equal(out[..., 0:2], x[..., 0:2]) and torch.equal(out[..., 6:8], x[..., 6:8])
    assert (blocks[..., 0] - target[..., 0]).abs().min() > 1e-3        # the flat blocks were not matched
    small = target * (6 / 127.0)
    x_small = F.interpolate(small, scale_factor=2, mode="nearest") + 0.1 * torch.randn(1, 3, 8, 8, generator=g)
    assert torch.equal(match_edges(x_small, small, 1), x_small)


def test_without_denoise_t_a_cascade_runs_as_before(tmp_path, make_model):
    """denoise_t -1 (the default) leaves the run alone: every step is the sampler's, and the result is bit for bit the
    one of a manifest that does not name it."""
    a = _cascade(tmp_path, make_model, denoise=(-1, -1))
    save_cascade(tmp_path / "plain", [{"path": "../base"},      # the same stages, denoise_t not named
                                      {"path": "../sr", "aug_level": 0.2, "steps": 3, "match_scale": 1}])
    b = load(tmp_path / "plain")
    kw = dict(sampler="ddpm", steps=4, labels=["b"], guidance=3.0, seed=7)
    ra, rb = list(a.stream(2, **kw)), list(b.stream(2, **kw))
    assert [(r.t, r.t_next) for r in ra] == [(r.t, r.t_next) for r in rb] and ra[3].t_next == -1
    assert torch.equal(ra[-1].x_next, rb[-1].x_next)

"""Consistency distillation (Song et al. 2023; issue 38's second method) against closed forms on Gaussian data.

For x0 ~ N(mu, s^2) per dimension the teacher's deterministic DDIM step with the exact denoiser is affine in z_t
(``test_distill.ddim_map``), so the end of its DDIM chain on a grid from any grid point t_k is affine too: the exact
consistency function of that teacher, f(z, t_k) = A_k z + B_k, composed here step by step from the end. A student
that is f reproduces the teacher's N-step DDIM in one step, and the objective is zero for it."""
from __future__ import annotations

import pytest
import torch

from diffusion_core import load
from diffusion_core.config import Distilled
from diffusion_core.denoisers import Prediction
from diffusion_core.samplers import SamplerSpec, consistency_step, make_generators, sample
from diffusion_core.schedules import make_schedule, spaced_timesteps
from diffusion_core.training import Trainer, consistency_loss, load_train_config
from test_distill import alpha_sigma, ddim_map, tiny_teacher
from test_samplers import MU, S, gaussian_denoiser, x_T


def consistency_function(sched, grid: list[int]):
    """The teacher's exact consistency function on ``grid`` (descending, ending at -1): f(z, t_k) = A_k z + B_k, the
    composition of the DDIM maps t_k -> t_k+1 -> ... -> -1, as a denoiser whose x0_hat is f."""
    maps, acc = {}, (1.0, 0.0)                      # at -1: f(z) = z
    for t, s in reversed(list(zip(grid, grid[1:]))):
        a, b = ddim_map(sched, t, s)                # z_s = a z_t + b
        acc = (acc[0] * a, acc[0] * b + acc[1])     # f(z_t) = A (a z_t + b) + B
        maps[t] = acc

    nan = (float("nan"), float("nan"))     # off the grid: no value (a target there must not be used)

    def denoise(x_t, t, cond):
        p = torch.tensor([maps.get(int(v), nan)[0] for v in t], dtype=x_t.dtype).view(-1, 1, 1, 1)
        q = torch.tensor([maps.get(int(v), nan)[1] for v in t], dtype=x_t.dtype).view(-1, 1, 1, 1)
        ab = sched.alpha_bar_at(t).to(x_t).view(-1, 1, 1, 1)
        x0 = p * x_t + q
        return Prediction(x0, (x_t - ab.sqrt() * x0) / (1 - ab).sqrt())
    return denoise


def test_consistency_step_noises_the_consistency_output_to_the_next_time():
    sched = make_schedule("cosine", 1000)
    x0 = x_T(1, n=2, size=4)
    z = x_T(2, n=2, size=4)
    for s in (749, 0):
        a, sig = alpha_sigma(sched, s)
        torch.testing.assert_close(consistency_step(sched, x0, s, z), a * x0 + sig * z, rtol=1e-12, atol=1e-12)
    assert torch.equal(consistency_step(sched, x0, -1, None), x0)     # the last step: f itself


@pytest.mark.parametrize("n", [2, 8])
def test_the_exact_consistency_function_gives_the_teachers_n_step_ddim_in_one_step(n):
    sched = make_schedule("cosine", 1000)
    grid = spaced_timesteps(1000, n, "trailing")
    x = x_T(3, n=2, size=8)
    one = sample(consistency_function(sched, grid.tolist()), x, spaced_timesteps(1000, 1, "trailing"),
                 SamplerSpec("consistency"), schedule=sched, generators=make_generators(0, 2))
    teacher = sample(gaussian_denoiser(sched), x, grid, SamplerSpec("ddim"), schedule=sched)
    torch.testing.assert_close(one, teacher, rtol=1e-9, atol=1e-9)
    # and the teacher's own single step is another image (the test can tell them apart)
    single = sample(gaussian_denoiser(sched), x, spaced_timesteps(1000, 1, "trailing"), SamplerSpec("ddim"),
                    schedule=sched)
    assert (single - teacher).abs().max() > 1e-3


def _pairs(grid, idx):
    i = torch.tensor(idx)
    return grid[i], grid[i + 1]


def test_the_objective_is_zero_for_the_exact_consistency_function_and_the_end_anchors_it():
    sched = make_schedule("cosine", 1000)
    grid = spaced_timesteps(1000, 8, "trailing")
    g = torch.Generator().manual_seed(0)
    t, t_next = _pairs(grid, [0, 3, 5, 7, 7, 2])          # two rows at the last pair (t' = -1)
    x0 = MU + S * torch.randn(6, 1, 8, 8, generator=g, dtype=torch.float64)
    eps = torch.randn(6, 1, 8, 8, generator=g, dtype=torch.float64)
    exact, f = gaussian_denoiser(sched), consistency_function(sched, grid.tolist())
    assert float(consistency_loss(f, exact, sched, x0, eps, None, t, t_next)) < 1e-20
    # the teacher's denoiser is not its consistency function (except at the last pair, where both are x0_hat)
    assert float(consistency_loss(exact, exact, sched, x0, eps, None, t, t_next)) > 1e-4

    def shifted(x_t, t, cond):      # f + 0.01 everywhere: consistent with itself, off only against the clean end
        p = f(x_t, t, cond)
        return Prediction(p.x0_hat + 0.01, p.eps_hat)
    loss = float(consistency_loss(shifted, exact, sched, x0, eps, None, t, t_next))
    assert loss == pytest.approx(1e-4 * 2 / 6, rel=1e-6)


@pytest.mark.slow
def test_a_consistency_student_trains_exports_and_samples_with_its_own_rule(tmp_path):
    teacher, sets = tiny_teacher(tmp_path)
    tr = Trainer(load_train_config(None, sets + [f"out_dir={tmp_path / 'cd'}", "distill.method=consistency",
                                                 "distill.student_steps=2"]), progress=False)
    assert tr.cfg.distill.rounds == 1
    grid4 = spaced_timesteps(1000, 4, "trailing").tolist()       # the teacher's N = start_steps = 4 steps
    assert [g.tolist() for g in tr.distill.grids()] == [grid4, grid4]
    x0, t, eps, cond = tr.make_batch()
    assert set(t.tolist()) <= set(spaced_timesteps(1000, 4, "trailing").tolist()[:-1])
    folder = tr.run()
    pipe = load(folder)
    assert pipe.config.distilled == Distilled(str(teacher), "consistency", 2, (1.0, 4.0))
    assert (pipe.config.sampling.sampler, pipe.config.sampling.steps) == ("consistency", 2)
    assert "consistency" in pipe.samplers and "progressive" not in pipe.samplers
    batch = pipe.sample(3, sampler="consistency", steps=2, labels=["3"], guidance=2.0, seed=5)
    for i in range(3):       # image i of a batch is image 0 of seed + i, with the fresh noise of each step too
        assert torch.equal(batch[i], pipe.sample(1, sampler="consistency", steps=2, labels=["3"], guidance=2.0,
                                                 seed=5 + i)[0])

"""Few-step students (issue 38): progressive distillation (Salimans & Ho 2022) with guidance as an input of the
student (Meng et al. 2023), against closed forms on Gaussian data, and end to end on a tiny teacher.

For x0 ~ N(mu, s^2) per dimension the exact denoiser is x0_hat(z) = mu + c_t (z - alpha_t mu) with
c_t = alpha_t s^2 / (alpha_t^2 s^2 + sigma_t^2) (tests/core/test_samplers.py). A deterministic DDIM step t -> s in the
x-form z_s = alpha_s x0_hat + (sigma_s / sigma_t)(z_t - alpha_t x0_hat) is then affine in z_t, so the teacher's two
steps t -> t' -> t'' are one affine map, and the perfect student is the x0_hat that takes one step there. The
formulas are written out here with plain floats, apart from the package's code."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from diffusion_core import load
from diffusion_core.conditioning import Condition
from diffusion_core.config import ConfigError, Distilled, ModelConfig, SamplingDefaults, from_dict, to_dict
from diffusion_core.denoisers import ClassifierFreeGuidance, Prediction
from diffusion_core.samplers import SamplerSpec, progressive_step, progressive_target, sample
from diffusion_core.schedules import make_schedule, spaced_timesteps
from diffusion_core.training import Trainer, distillation_loss, load_train_config
from diffusion_core.unet import UNet, load_parent_state
from test_samplers import MU, S, gaussian_denoiser, x_T
from test_train import TINY, write_idx

ROOT = Path(__file__).resolve().parents[2]


# ---- the closed forms ----------------------------------------------------------------------------
def alpha_sigma(sched, t: int) -> tuple[float, float]:
    ab = float(sched.alpha_bar_at(t))
    return math.sqrt(ab), math.sqrt(1 - ab)


def ddim_map(sched, t: int, s: int) -> tuple[float, float]:
    """(A, B) of the teacher's exact DDIM step z_s = A z_t + B with the exact Gaussian denoiser."""
    a_t, s_t = alpha_sigma(sched, t)
    a_s, s_s = alpha_sigma(sched, s)
    c = a_t * S ** 2 / (a_t ** 2 * S ** 2 + s_t ** 2)
    k = a_s - s_s * a_t / s_t                   # the weight of x0_hat in the step
    return s_s / s_t + k * c, k * (MU - c * a_t * MU)


def perfect_student(sched, grid: list[int]):
    """The exact two-step DDIM map of each pair (t, t'') of the student ``grid`` (its midpoint t' on the teacher's
    grid of twice the steps) expressed as one student step: x0_hat(z_t) = (z_t'' - (sigma''/sigma_t) z_t) /
    (alpha'' - (sigma''/sigma_t) alpha_t)."""
    teacher = spaced_timesteps(sched.T, 2 * (len(grid) - 1), "trailing").tolist()
    maps = {}
    for i, (t, t2) in enumerate(zip(grid, grid[1:])):
        t1 = teacher[2 * i + 1]
        (a1, b1), (a2, b2) = ddim_map(sched, t, t1), ddim_map(sched, t1, t2)
        a_t, s_t = alpha_sigma(sched, t)
        a_2, s_2 = alpha_sigma(sched, t2)
        d = a_2 - s_2 / s_t * a_t
        maps[t] = ((a2 * a1 - s_2 / s_t) / d, (a2 * b1 + b2) / d)      # x0_hat = P z_t + Q

    def denoise(x_t, t, cond):
        p = torch.tensor([maps[int(v)][0] for v in t], dtype=x_t.dtype).view(-1, 1, 1, 1)
        q = torch.tensor([maps[int(v)][1] for v in t], dtype=x_t.dtype).view(-1, 1, 1, 1)
        ab = sched.alpha_bar_at(t).to(x_t).view(-1, 1, 1, 1)
        x0 = p * x_t + q
        return Prediction(x0, (x_t - ab.sqrt() * x0) / (1 - ab).sqrt())
    return denoise


# ---- the student's rule -------------------------------------------------------------------------
def test_progressive_step_is_deterministic_ddim_and_the_target_inverts_it():
    """z_s = alpha_s x0 + (sigma_s / sigma_t)(z_t - alpha_t x0) is DDIM's eq. 12 at eta 0 written with x0 alone
    (Salimans & Ho 2022, Alg. 2); progressive_target is the x0 that makes one step land on a given z_s."""
    sched = make_schedule("cosine", 1000)
    x = x_T(1, n=2, size=4)
    x0 = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for t, s in ((999, 749), (500, 300), (249, -1)):
        a_t, s_t = alpha_sigma(sched, t)
        a_s, s_s = alpha_sigma(sched, s)
        z_s = progressive_step(sched, x, t, s, Prediction(x0, None))
        torch.testing.assert_close(z_s, a_s * x0 + s_s * (x - a_t * x0) / s_t, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(progressive_target(sched, x, t, s, z_s), x0, rtol=1e-9, atol=1e-9)
    # per-row timesteps, as the objective uses them
    t, s = torch.tensor([999, 500]), torch.tensor([749, -1])
    rows = progressive_step(sched, x, t, s, Prediction(x0, None))
    for i in range(2):
        torch.testing.assert_close(rows[i:i + 1], progressive_step(sched, x[i:i + 1], int(t[i]), int(s[i]),
                                                                   Prediction(x0[i:i + 1], None)), rtol=0, atol=1e-14)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_a_perfect_student_reproduces_the_teachers_two_step_ddim_in_one_step(steps):
    """The student's own sampler on its grid of K steps with the perfect student equals the teacher's deterministic
    DDIM on the grid of 2K steps with the exact denoiser, from the same x_T."""
    sched = make_schedule("cosine", 1000)
    grid = spaced_timesteps(1000, steps, "trailing")
    x = x_T(3, n=2, size=8)
    student = sample(perfect_student(sched, grid.tolist()), x, grid, SamplerSpec("progressive"), schedule=sched)
    teacher = sample(gaussian_denoiser(sched), x, spaced_timesteps(1000, 2 * steps, "trailing"), SamplerSpec("ddim"),
                     schedule=sched)
    torch.testing.assert_close(student, teacher, rtol=1e-9, atol=1e-9)
    # and it is not the teacher's own K-step run (the test can tell students apart)
    one = sample(gaussian_denoiser(sched), x, grid, SamplerSpec("ddim"), schedule=sched)
    assert (one - teacher).abs().max() > 1e-3


def test_the_objective_is_zero_for_the_perfect_student_and_positive_for_a_wrong_one():
    sched = make_schedule("cosine", 1000)
    grid = spaced_timesteps(1000, 4, "trailing")
    teacher_grid = spaced_timesteps(1000, 8, "trailing")
    g = torch.Generator().manual_seed(0)
    i = torch.tensor([0, 1, 2, 3, 0, 3])
    t, t_mid, t_next = grid[i], teacher_grid[2 * i + 1], grid[i + 1]
    x0 = MU + S * torch.randn(6, 1, 8, 8, generator=g, dtype=torch.float64)
    eps = torch.randn(6, 1, 8, 8, generator=g, dtype=torch.float64)
    exact = gaussian_denoiser(sched)
    loss = distillation_loss(perfect_student(sched, grid.tolist()), exact, sched, x0, eps, None, t, t_mid, t_next)
    assert float(loss) < 1e-20
    # the teacher itself as the student: one of its steps is not two
    assert float(distillation_loss(exact, exact, sched, x0, eps, None, t, t_mid, t_next)) > 1e-3
    wrong = perfect_student(sched, grid.tolist())

    def off(x_t, t, cond):
        p = wrong(x_t, t, cond)
        return Prediction(p.x0_hat + 0.01, p.eps_hat)
    loss = float(distillation_loss(off, exact, sched, x0, eps, None, t, t_mid, t_next))
    snr = sched.alpha_bar_at(t) / (1 - sched.alpha_bar_at(t))
    assert loss == pytest.approx(1e-4 * float(snr.clamp(min=1).mean()), rel=1e-6)   # truncated-SNR weighting


# ---- guidance as an input -------------------------------------------------------------------------
def test_per_row_guidance_scales_are_each_rows_own_guidance(tiny_net):
    cfg, net = tiny_net(num_labels=3)
    from diffusion_core.denoisers import ModelDenoiser
    den = ModelDenoiser(net, make_schedule("linear", 100), "eps")
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([90, 50, 10])
    cond = Condition(labels=torch.eye(3), uncond=torch.zeros(3, dtype=torch.bool))
    w = torch.tensor([1.0, 2.5, 4.0])
    rows = ClassifierFreeGuidance(den, w)(x, t, cond).x0_hat
    for i in range(3):
        one = ClassifierFreeGuidance(den, float(w[i]))(x[i:i + 1], t[i:i + 1], cond.index(slice(i, i + 1))).x0_hat
        torch.testing.assert_close(rows[i:i + 1], one, rtol=1e-5, atol=1e-6)


def test_the_guidance_embedding_starts_at_zero_so_the_student_is_its_teacher(tiny_net):
    """A student grown from its teacher (load_parent_state) gives bit-identical outputs at every w, before
    training; the embedding is a typed config field, and networks without it keep their tensors."""
    cfg, teacher = tiny_net(num_labels=3)
    student = UNet(replace(cfg.unet, guidance_embedding=True)).eval()
    load_parent_state(student, cfg.unet, teacher.state_dict())
    assert {k for k in student.state_dict() if k not in teacher.state_dict()} == \
        {f"guidance_mlp.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([99, 60, 30, 0])
    labels = torch.eye(3)[[0, 1, 2, 0]]
    with torch.no_grad():
        ref = teacher(x, t, Condition(labels=labels, uncond=torch.tensor([False, False, False, True])))
        for w in (None, torch.ones(4), torch.tensor([0.0, 1.5, 4.0, 30.0])):
            out = student(x, t, Condition(labels=labels, uncond=torch.tensor([False, False, False, True]), guidance=w))
            assert torch.equal(out, ref)
        torch.nn.init.normal_(student.guidance_mlp[2].weight, std=0.5)       # as after training: w matters
        out = {w: student(x, t, Condition(labels=labels, guidance=torch.full((4,), w))) for w in (1.0, 3.0)}
        assert not torch.equal(out[1.0], ref) and not torch.equal(out[1.0], out[3.0])
        assert torch.equal(student(x, t, Condition(labels=labels)), out[1.0])          # no scale given: w = 1
    assert from_dict(type(cfg.unet), to_dict(student.cfg)).guidance_embedding is True


def test_old_configs_load_unchanged_and_a_students_record_is_checked():
    folder = ROOT / "checkpoints" / "fashion"
    raw = json.loads((folder / "config.json").read_text())
    assert "distilled" not in raw and "guidance_embedding" not in raw["unet"]
    cfg = from_dict(ModelConfig, raw)
    assert not cfg.unet.guidance_embedding and cfg.distilled == Distilled()
    pipe = load(folder)
    assert not any(k.startswith("guidance_mlp") for k in pipe.net.state_dict())
    assert "progressive" not in pipe.samplers         # a student's rule is offered to students only
    student = replace(cfg, unet=replace(cfg.unet, guidance_embedding=True),
                      sampling=SamplingDefaults("progressive", 4), distilled=Distilled("checkpoints/fashion",
                                                                                       "progressive", 4, (1.0, 4.0)))
    assert from_dict(ModelConfig, to_dict(student)) == student
    with pytest.raises(ConfigError, match="student's own rule"):
        replace(cfg, sampling=SamplingDefaults("progressive", 4))
    with pytest.raises(ConfigError, match="guidance_embedding"):
        replace(student, unet=cfg.unet)
    with pytest.raises(ConfigError, match="distilled.sampler"):
        Distilled("checkpoints/fashion", "ddim", 4)
    with pytest.raises(ConfigError, match="needs its teacher"):
        Distilled(steps=4)


# ---- end to end on a tiny teacher -----------------------------------------------------------------
def tiny_teacher(tmp_path) -> tuple[Path, list[str]]:
    """A tiny class-conditional teacher trained 2 steps on a tiny IDX set; the sets of a distillation run from it."""
    data = ["data.source=idx", f"data.path={write_idx(tmp_path / 'idx')}"]
    teacher = Trainer(load_train_config(None, TINY + data + [f"out_dir={tmp_path / 'teacher'}", "steps=2"]),
                      progress=False).run()
    return teacher, TINY + data + [f"distill.teacher={teacher}", "distill.start_steps=4", "distill.student_steps=1",
                                   "distill.guidance=[1,4]", "steps=4", "unet.dropout=0.0"]


class StopAfter(Trainer):
    """A run stopped (as by SIGTERM) after ``stop`` steps: it saves its state and does not export."""

    stop = 3

    def train_step(self):
        loss = super().train_step()
        if self.step + 1 >= self.stop:
            self.stop_requested = True
        return loss


@pytest.mark.slow
def test_distilled_student_trains_resumes_exports_and_samples_with_its_own_rule(tmp_path, run_main):
    teacher, sets = tiny_teacher(tmp_path)
    straight = Trainer(load_train_config(None, sets + [f"out_dir={tmp_path / 'a'}"]), progress=False)
    assert straight.distill.round == 0 and straight.cfg.distill.rounds == 2
    student = straight.net.state_dict()
    for k, v in load(teacher).net.state_dict().items():          # the student starts from the teacher's weights
        assert torch.equal(student[k], v), k
    folder = straight.run()
    assert straight.distill.round == 1         # steps 2-3: the second round (2 -> 1 steps) ...
    assert straight.distill.teacher_net.cfg.guidance_embedding     # ... whose teacher is the round-0 student
    stopped = StopAfter(load_train_config(None, sets + [f"out_dir={tmp_path / 'b'}"]), progress=False)
    stopped.run()
    assert stopped.step == 3 and not (tmp_path / "b" / "model").exists()
    resumed = Trainer(load_train_config(None, sets + [f"out_dir={tmp_path / 'b'}"]), resume=True, progress=False)
    assert resumed.step == 3 and resumed.distill.round == 1       # the round-1 teacher came from the state
    for (k, v), w in zip(resumed.distill.teacher_net.state_dict().items(),
                         stopped.distill.teacher_net.state_dict().values()):
        assert torch.equal(v, w), k
    resumed.run()
    for (k, v), w in zip(straight.net.state_dict().items(), resumed.net.state_dict().values()):
        assert torch.equal(v, w), k
    # the exported student: its config records teacher and sampler; it loads and samples with its own rule
    pipe = load(folder)
    cfg = pipe.config
    assert cfg.distilled == Distilled(str(teacher), "progressive", 1, (1.0, 4.0))
    assert (cfg.sampling.sampler, cfg.sampling.steps, cfg.diffusion.prediction) == ("progressive", 1, "v")
    assert cfg.unet.guidance_embedding and "progressive" in pipe.samplers
    record = json.loads((folder / "training.json").read_text())
    assert record["teacher"]["path"] == str(teacher) and record["teacher"]["training"]["steps"] == 2
    recs = list(pipe.stream(3, sampler="progressive", steps=1, labels=["3"], guidance=2.0, seed=5))
    assert [(r.t, r.t_next) for r in recs] == [(999, -1)]
    # image i of a batch is image 0 of seed + i
    batch = pipe.sample(3, sampler="progressive", steps=1, labels=["3"], guidance=2.5, seed=5)
    for i in range(3):
        assert torch.equal(batch[i], pipe.sample(1, sampler="progressive", steps=1, labels=["3"], guidance=2.5,
                                                 seed=5 + i)[0])
    # a student distilled further: its teacher (a student) takes w as an input, no CFG
    further = Trainer(load_train_config(None, sets + [f"out_dir={tmp_path / 'c'}", f"distill.teacher={folder}",
                                                      "distill.start_steps=2", "steps=1"]), progress=False)
    x0, t, eps, cond = further.make_batch()
    assert cond.guidance is not None and set(t.tolist()) == {999}
    assert not isinstance(further.distill.teacher(further.schedule, cond).denoiser, ClassifierFreeGuidance)
    assert load(further.run()).config.distilled.teacher == str(folder)
    # the CLI samples a student with its own rule and steps by default
    r = run_main("sample", "--model", str(folder), "--n", "2", "--label", "3", "--out", str(tmp_path / "out"),
                 "--backend", "fp32", "--no-progress")
    assert r.returncode == 0, r.stderr
    params = json.loads(Image.open(tmp_path / "out" / "00000.png").text["parameters"])
    assert (params["sampler"], params["steps"]) == ("progressive", 1)


def test_a_students_guidance_is_its_network_input_in_one_pass(tmp_path, make_model):
    """Sampling a guided student passes w to the network (Condition.guidance) instead of running CFG's two passes."""
    cfg, _ = make_model(tmp_path / "s", unet={"num_labels": 3, "guidance_embedding": True},
                        sampling=SamplingDefaults("progressive", 2),
                        distilled=Distilled("teacher", "progressive", 2, (1.0, 4.0)), label_names=("a", "b", "c"))
    pipe = load(tmp_path / "s")
    seen = []
    net = pipe.net
    forward = net.forward

    def spy(x, t, cond=None):
        seen.append((x.shape[0], None if cond is None or cond.guidance is None else cond.guidance.tolist()))
        return forward(x, t, cond)
    net.forward = spy
    pipe.sample(2, sampler="progressive", steps=2, labels=["b"], guidance=3.0, seed=0)
    assert seen and all(w is not None and set(w) == {3.0} for _, w in seen)

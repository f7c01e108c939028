"""Progressive distillation (Salimans & Ho 2022) of a shipped model into a few-step student, with guidance as an input
of the student (guided distillation, Meng et al. 2023).

The student's one DDIM step t -> t'' is trained to land where the teacher's two DDIM steps t -> t' -> t'' land
(``distillation_loss``, their Alg. 2). Round r halves the steps: its teacher samples on
``spaced_timesteps(T, start_steps / 2^r, "trailing")``, its student on every other point of that grid (trailing grids
of K and 2K steps nest). Round 0's teacher is the shipped model guided by classifier-free guidance at a scale w
drawn per example from ``distill.guidance``; the student reads w through its guidance embedding (zero at the start,
so it starts as its teacher) and, from round 1 on, the teacher is the student of the round before (its EMA
weights), which takes w as an input too. The student predicts v (``distill.prediction``; Salimans & Ho sec. 4: with
eps prediction x0_hat = (x_t - sigma eps_hat) / alpha is lost at alpha ~ 0, where a few-step student starts)."""
from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import torch

from ..checkpoint import load_network
from ..config import ConfigError, Distilled, ModelConfig, SamplingDefaults
from ..data import ImageData
from ..denoisers import ClassifierFreeGuidance, ClipX0, Denoiser, ModelDenoiser
from ..samplers import progressive_step, progressive_target
from ..schedules import Schedule, spaced_timesteps
from ..unet import UNet, load_parent_state
from .config import TrainConfig
from .objective import training_batch

# a method's name is also its student's own sampler (samplers.progressive_step, samplers.consistency_step)


def distillation_loss(student: Denoiser, teacher: Denoiser, schedule: Schedule, x0, eps, cond, t, t_mid, t_next):
    """Progressive distillation's loss (Salimans & Ho 2022, Alg. 2) of one batch, each row at its own (t, t', t''):
    z_t = alpha_t x + sigma_t eps; two teacher DDIM steps z_t -> z_t' -> z_t'' (``progressive_step``); the target
    x_tilde that takes one student step from z_t to z_t'' (``progressive_target``); the loss
    max(SNR_t, 1) ||x_tilde - x_hat_student(z_t)||^2 ("truncated SNR" weighting, their sec. 4), the squared error
    averaged over pixels, then over rows. x0, eps: (B, C, H, W); t, t_mid, t_next: (B,) long, t > t_mid > t_next >= -1."""
    x_t = schedule.q_sample(x0, t, eps)
    with torch.no_grad():
        x_mid = progressive_step(schedule, x_t, t, t_mid, teacher(x_t, t, cond))
        x_next = progressive_step(schedule, x_mid, t_mid, t_next, teacher(x_mid, t_mid, cond))
        x_tilde = progressive_target(schedule, x_t, t, t_next, x_next)
    err = (student(x_t, t, cond).x0_hat - x_tilde).pow(2).mean(dim=(1, 2, 3))   # float32 under bf16 autocast
    ab = schedule.alpha_bar_at(t).to(err.device)
    return ((ab / (1 - ab)).clamp(min=1.0).to(err.dtype) * err).mean()


def consistency_loss(student: Denoiser, teacher: Denoiser, schedule: Schedule, x0, eps, cond, t, t_next):
    """Consistency distillation's loss (Song et al. 2023, Alg. 2) of one batch, each row at its own pair t > t' of
    adjacent points of the teacher's grid: z_t = alpha_t x + sigma_t eps; one teacher DDIM step (the ODE solver)
    z_t -> z_hat_t'; the target f_theta-(z_hat_t', t'), the student itself without gradient (theta- = stopgrad theta,
    as Song & Dhariwal 2023 find better than an EMA target), and at t' = -1 the step's clean end z_hat_-1 (the
    boundary condition f(x, 0) = x); the loss ||f_theta(z_t, t) - target||^2, averaged over pixels, then rows. The
    student's consistency function is its x0_hat. t, t_next: (B,) long, t > t_next >= -1."""
    x_t = schedule.q_sample(x0, t, eps)
    with torch.no_grad():
        x_prev = progressive_step(schedule, x_t, t, t_next, teacher(x_t, t, cond))       # DDIM, eta 0
        end = (t_next < 0).view(-1, *([1] * (x0.dim() - 1)))
        target = torch.where(end, x_prev, student(x_prev, t_next.clamp(min=0), cond).x0_hat)
    return (student(x_t, t, cond).x0_hat - target).pow(2).mean(dim=(1, 2, 3)).mean()


def round_grids(T: int, start_steps: int, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(student grid, teacher grid) of round r: the teacher's trailing grid of start_steps / 2^r steps and the student's
    of half as many, whose points are the teacher's even ones (each ends at -1)."""
    n = start_steps // 2 ** r
    return spaced_timesteps(T, n // 2, "trailing"), spaced_timesteps(T, n, "trailing")


def consistency_grid(T: int, start_steps: int) -> torch.Tensor:
    """Consistency distillation's grid of N = start_steps teacher steps (trailing, ending at -1): the pairs (t, t')
    of the loss are its adjacent points."""
    return spaced_timesteps(T, start_steps, "trailing")


def student_config(cfg: TrainConfig, teacher: ModelConfig) -> ModelConfig:
    """The student's ModelConfig: the teacher's, with the guidance embedding, the student's prediction type, its own
    sampler and steps as the sampling default, and the record of its teacher (``ModelConfig.distilled``)."""
    d = cfg.distill
    w = teacher.sampling.guidance
    if d.guidance:
        w = min(max(w, d.guidance[0]), d.guidance[1])
    paper = {"progressive": "progressive distillation, Salimans & Ho 2022",
             "consistency": "consistency distillation, Song et al. 2023"}[d.method]
    why = (f"a student distilled from {d.teacher} ({paper}) samples with its own "
           f"rule: {d.student_steps} step{'s' * (d.student_steps != 1)}, one U-Net pass each"
           + (f", guidance an input of the network, trained for w in [{d.guidance[0]:g}, {d.guidance[1]:g}]"
              if d.guidance else ""))
    return replace(teacher, unet=replace(teacher.unet, guidance_embedding=bool(d.guidance)),
                   diffusion=replace(teacher.diffusion, prediction=d.prediction),
                   sampling=SamplingDefaults(d.method, d.student_steps, "trailing", w, why),
                   distilled=Distilled(d.teacher, d.method, d.student_steps, d.guidance),
                   description=cfg.description or f"{teacher.description}; distilled to {d.student_steps} steps")


class Distillation:
    """A distillation run's teacher and rounds. Round 0's teacher is the model folder ``distill.teacher``; at the
    start of each later round the student's EMA weights become the teacher and the student starts from them
    (``at_step``). The teacher of the current round is saved with the training state (``state_tensors``)."""

    def __init__(self, cfg: TrainConfig, device):
        self.cfg, self.d, self.device = cfg, cfg.distill, device
        try:
            self.teacher_cfg, net = load_network(Path(self.d.teacher), device)
        except ValueError as e:
            raise ConfigError(f"distill.teacher: {e}") from None
        self.teacher_net = net.eval().requires_grad_(False)
        self.round = 0
        t = self.teacher_cfg
        if t.diffusion.is_cold or t.task != "generate" or t.diffusion.t_range:
            raise ConfigError(f"distill.teacher {self.d.teacher}: only a Gaussian model that generates over every t "
                              f"can be distilled")
        if self.d.guidance and not t.unet.num_labels:
            raise ConfigError(f"distill.guidance needs a teacher with labels to guide; {self.d.teacher} has none "
                              f"(set distill.guidance=[])")
        if self.d.start_steps > t.diffusion.T:
            raise ConfigError(f"distill.start_steps must be at most the teacher's T = {t.diffusion.T}")

    def student_config(self, data: ImageData) -> ModelConfig:
        t = self.teacher_cfg
        if tuple(data.label_names if t.unet.num_labels else ()) != tuple(t.label_names) or \
                (self.cfg.data.image_size, self.cfg.data.channels) != (t.unet.image_size, t.unet.in_channels):
            raise ConfigError(f"distill.teacher {self.d.teacher}: its data (labels, image size, channels) differs from "
                              f"this run's data section")
        return student_config(self.cfg, t)

    def init_student(self, net: UNet) -> None:
        """The student starts from the teacher's weights (its guidance embedding at zero: the teacher's outputs)."""
        load_parent_state(net, self.teacher_cfg.unet, self.teacher_net.state_dict())

    # ---- rounds ---------------------------------------------------------------------------------
    def round_at(self, step: int) -> int:
        """The round that optimisation step ``step`` (0-based) belongs to: cfg.steps split evenly over the rounds."""
        return min(step * self.d.rounds // self.cfg.steps, self.d.rounds - 1)

    def at_step(self, step: int, net: UNet, ema_module: UNet) -> None:
        """Before step ``step``: on entering a new round the student's EMA weights become the teacher, and the
        student starts from them."""
        r = self.round_at(step)
        if r == self.round:
            return
        self.teacher_net = copy.deepcopy(ema_module).eval().requires_grad_(False)
        net.load_state_dict(ema_module.state_dict())
        self.round = r

    def grids(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(the grid t is drawn on, the teacher's grid): progressive, the round's (``round_grids``); consistency,
        the teacher's grid of N steps for both (``consistency_grid``)."""
        if self.d.method == "consistency":
            g = consistency_grid(self.teacher_cfg.diffusion.T, self.d.start_steps)
            return g, g
        return round_grids(self.teacher_cfg.diffusion.T, self.d.start_steps, self.round)

    # ---- the objective ---------------------------------------------------------------------------
    def batch(self, data: ImageData, g: torch.Generator):
        """x0, eps and the condition as ``training_batch`` draws them, t drawn on this round's student grid (not its
        last point, -1) and the guidance scale w ~ U[w_min, w_max] per example (Meng et al. 2023)."""
        x0, _, eps, cond = training_batch(self.cfg, data, g, 0, self.teacher_cfg.diffusion.T)
        student, _ = self.grids()
        b = x0.shape[0]
        t = student[torch.randint(len(student) - 1, (b,), generator=g)]
        if self.d.guidance and cond is not None:
            lo, hi = self.d.guidance
            cond = replace(cond, guidance=lo + (hi - lo) * torch.rand(b, generator=g))
        return x0, t, eps, cond

    def teacher(self, schedule: Schedule, cond) -> Denoiser:
        """This round's teacher as a denoiser: round 0 the shipped model, guided per row at the batch's w (or not
        at all without ``distill.guidance``; a student distilled further takes w as its input); later rounds the
        previous student, w its input. x0 kept in range as the
        teacher samples (``diffusion.x0_range``)."""
        t = self.teacher_cfg
        if self.round == 0:
            den = ModelDenoiser(self.teacher_net, schedule, t.diffusion.prediction)
            if cond is not None and cond.guidance is not None and not t.unet.guidance_embedding:
                den = ClassifierFreeGuidance(den, cond.guidance.to(self.device))   # else w is the teacher's input
        else:
            den = ModelDenoiser(self.teacher_net, schedule, self.d.prediction)
        clip = self.teacher_cfg.diffusion.x0_range
        return ClipX0(den, schedule, clip) if clip != "none" else den

    def loss(self, model, schedule: Schedule, x0, t, eps, cond) -> torch.Tensor:
        """``distillation_loss`` of the student ``model`` (its raw network, v-prediction) on rows at t of this round's
        student grid: t' and t'' are the next points of the teacher's and the student's grid."""
        dev = self.device
        student, teacher = self.grids()
        pos = {int(v): i for i, v in enumerate(student.tolist())}
        i = torch.tensor([pos[int(v)] for v in t.tolist()])
        x0, eps, t = x0.to(dev), eps.to(dev), t.to(dev)
        cond = cond.to(dev) if cond is not None else None
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.cfg.amp):
            if self.d.method == "consistency":
                return consistency_loss(ModelDenoiser(model, schedule, self.d.prediction), self.teacher(schedule, cond),
                                        schedule, x0, eps, cond, t, student[i + 1].to(dev))
            return distillation_loss(ModelDenoiser(model, schedule, self.d.prediction), self.teacher(schedule, cond),
                                     schedule, x0, eps, cond, t, teacher[2 * i + 1].to(dev), student[i + 1].to(dev))

    # ---- state -----------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The round, and from round 1 on the teacher's weights (the student's EMA when the round began)."""
        out = {"distill.round": torch.tensor(self.round)}
        if self.round:
            out.update({f"distill.teacher.{k}": v for k, v in self.teacher_net.state_dict().items()})
        return out

    def load_state(self, tensors: dict[str, torch.Tensor], student_cfg: ModelConfig) -> None:
        self.round = int(tensors.get("distill.round", torch.tensor(0)))
        if self.round:
            net = UNet(student_cfg.unet).to(self.device)
            net.load_state_dict({k[len("distill.teacher."):]: v for k, v in tensors.items()
                                 if k.startswith("distill.teacher.")})
            self.teacher_net = net.eval().requires_grad_(False)


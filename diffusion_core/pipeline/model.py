"""The ``Pipeline``: a loaded model (one network, an expert ensemble, or a cascade of stages) and
``Pipeline.stream``, the one streaming generator the CLI and the app sample with."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from ..conditioning import Condition, augment_low_res, back_project, back_projection_scale, picks_condition, picks_meaning, resolve_labels
from ..config import ModelConfig
from ..degradations import Degradation, make_degradation
from ..denoisers import ClassifierFreeGuidance, ClipX0, ExpertEnsemble, ModelDenoiser
from ..runtime import ChunkedNet, backends
from ..options import MAX_BATCH, MAX_SEED, MAX_STEPS, NOISE_LEVEL_SPACINGS, SAMPLERS, SPACINGS
from ..samplers import (SampleStep, SamplerSpec, img2img_timesteps, make_generators, noised_start, per_image_noise,
                       sample_stream)
from ..schedules import Schedule, make_schedule, spaced_timesteps

# The network always runs on batches of exactly this many rows (CFG's two passes count as two rows per
# image), padded where needed: CPU kernels round differently for different batch sizes, so a fixed
# evaluation batch makes image i of seed s bit-identical to image 0 of seed s+i whatever the batch size
# (measured on this CPU: batches of 4..12 share kernels with 1 thread, 4/8/12+ with 2; 8 is inside both).
# Set Pipeline.chunk = 0 to run whole batches at once (not invariant). With row workers on a CPU the fixed
# chunks cost little: each worker runs its consecutive chunks as one call where that is verified bit-identical
# (ChunkedNet._merges).
EVAL_CHUNK = 8


def eval_chunk(side: int) -> int:
    """The fixed network batch of a model drawing ``side``-px images: EVAL_CHUNK rows at 32 px, fewer for a larger
    image (as many pixels, ``backends.rows_at``), never below 2. A 128 px super-resolution stage padded one image
    to 8 rows (8x the work); 2 rows stay bit-identical however the batch is split here (1 row did not: one
    image then runs on 2 threads, a batch's rows on 1 each, and the kernels round differently)."""
    return min(EVAL_CHUNK, backends.rows_at(EVAL_CHUNK, side))


@dataclass
class Pipeline:
    """kind: model | ensemble | cascade. ``config`` is the (first) model's config; for an ensemble,
    ``experts`` lists (t_lo, t_hi, net); for a cascade, ``stages`` lists pipelines and their options."""

    kind: str
    config: ModelConfig
    path: Path
    net: torch.nn.Module | None = None
    experts: list = field(default_factory=list)
    stages: list = field(default_factory=list)      # [(Pipeline, {"aug_level":..., "steps":...})]
    prior: torch.Tensor | None = None               # cold: fully degraded training images (N, C, H, W)
    prior_labels: torch.Tensor | None = None        # cold: their class indices (N,), to start from the asked class
    description: str = ""
    chunk: int = EVAL_CHUNK                         # network batch; fixed => images independent of batch size
    runners: dict = field(default_factory=dict)     # id(net) -> (runner, backends.Choice): where each network runs
    backend_request: str = "fp32"                   # what set_backend was asked for (auto, or a name)

    # ---- what the model is ------------------------------------------------------------------
    @property
    def base(self) -> "Pipeline":
        return self.stages[0][0] if self.kind == "cascade" else self

    @property
    def schedule(self) -> Schedule | None:
        d = self.config.diffusion
        return make_schedule(d.schedule, d.T, d.beta_1, d.beta_T)

    @property
    def degradation(self) -> Degradation | None:
        d = self.config.diffusion
        return make_degradation(d.degradation, d.T, self.schedule) if d.is_cold else None

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.base.config.label_names

    @property
    def picks_meaning(self) -> str:
        """What picked labels ask of this model (``conditioning.picks_meaning``); "" for a model without labels."""
        cfg = self.base.config
        return picks_meaning(cfg.multi_label, cfg.unet.label_mask) if cfg.unet.num_labels else ""

    @property
    def image_size(self) -> int:
        """Side of the output images: the last of ``stage_sizes``."""
        return self.stage_sizes[-1]

    @property
    def stage_sizes(self) -> tuple[int, ...]:
        """Side of each stage's output: a model's image (a super-resolution model's high resolution, not its
        training crops); for a cascade, the base's image, then each super-resolution stage's input times its
        factor high_res // low_res, as ``stream`` upsamples it."""
        if self.kind != "cascade":
            return (self.config.high_res or self.config.unet.image_size,)
        sizes = [self.stages[0][0].config.unet.image_size]
        for stage, _ in self.stages[1:]:
            sizes.append(sizes[-1] * stage.config.sr_factor)
        return tuple(sizes)

    @property
    def channels(self) -> int:
        return self.config.unet.out_channels

    @property
    def samplers(self) -> tuple[str, ...]:
        return ("cold",) if self.base.config.diffusion.is_cold else tuple(x for x in SAMPLERS if x != "cold")

    # ---- where the networks run (backends.py) -------------------------------------------------
    def set_backend(self, name: str | None = None) -> "Pipeline":
        """Run every network of this pipeline (experts, stages) on backend ``name``: fp32 | bf16 | openvino, or
        auto (measured here, ``backends.choose``); None: the ``DIFFUSION_CORE_BACKEND`` variable, else fp32."""
        name = backends.requested_backend(name, default="fp32")
        if self.kind == "cascade":
            for stage, _ in self.stages:
                stage.set_backend(name)
        else:
            size = self.config.high_res or self.config.unet.image_size
            self.runners = {id(net): backends.choose(net, name, self.path, self.chunk, image_size=size)
                            for net in self.networks}
        self.backend_request = name         # only once every network runs there (a failed switch keeps the old)
        return self

    @property
    def networks(self) -> list:
        """The networks this pipeline (not its cascade stages) evaluates."""
        return [net for _, _, net in self.experts] if self.kind == "ensemble" else [self.net] if self.net is not None else []

    @property
    def backend_choices(self) -> list:
        """The backends.Choice of every network, stages included, in order."""
        if self.kind == "cascade":
            return [c for stage, _ in self.stages for c in stage.backend_choices]
        return [self.runners[id(net)][1] if id(net) in self.runners else backends.Choice("fp32", "default", {}, {})
                for net in self.networks]

    @property
    def backend(self) -> str:
        """The backend(s) running this pipeline's networks, e.g. "bf16" or "fp32 + openvino"."""
        return " + ".join(dict.fromkeys(c.name for c in self.backend_choices)) or "fp32"

    def _runner(self, net):
        return self.runners[id(net)][0] if id(net) in self.runners else net

    def expert_index(self, t: int) -> int | None:
        if self.kind != "ensemble":
            return None
        return ExpertEnsemble([(lo, hi, None) for lo, hi, _ in self.experts], self.config.diffusion.T).expert_index(t)

    def denoiser(self, guidance: float = 1.0, clip: str | None = None):
        """The denoiser this pipeline samples with: model (or expert ensemble) -> CFG -> x0 kept in range
        (``clip``: clip | dynamic | none; None = the model's ``diffusion.x0_range``)."""
        d = self.config.diffusion
        clip = clip or d.x0_range
        sched = None if d.is_cold else self.schedule
        if self.kind == "ensemble":
            den = ExpertEnsemble([(lo, hi, ModelDenoiser(ChunkedNet(self._runner(net), self.chunk), sched, d.prediction))
                                  for lo, hi, net in self.experts], d.T)
        elif self.kind == "model":
            den = ModelDenoiser(ChunkedNet(self._runner(self.net), self.chunk), sched, d.prediction)
        else:
            raise ValueError("a cascade has one denoiser per stage; use its stages")
        if guidance != 1.0:
            den = ClassifierFreeGuidance(den, guidance)
        return ClipX0(den, sched, clip) if clip != "none" else den

    # ---- conditions -------------------------------------------------------------------------
    def condition(self, n: int, labels: Sequence = (), cond_image: torch.Tensor | None = None,
                  device="cpu") -> Condition | None:
        """The condition of ``n`` images. labels: names or indices picked by the user (with a ``label_mask``
        model: these present, every other attribute unknown; otherwise the full vector, everything else
        absent), or an (n, L) tensor of full label vectors (every attribute known); none: unconditional."""
        cfg = self.config
        lab = known = None
        if cfg.unet.num_labels and torch.is_tensor(labels):     # per-image label vectors (n, L)
            if tuple(labels.shape) != (n, cfg.unet.num_labels):
                raise ValueError(f"label tensor must have shape ({n}, {cfg.unet.num_labels}), got {tuple(labels.shape)}")
            lab = labels.float()
        elif cfg.unet.num_labels:
            idx = resolve_labels(labels, cfg.label_names) if labels else []
            if idx:             # none chosen: sample unconditionally
                picks = picks_condition(idx, cfg.unet.num_labels, n, cfg.multi_label, cfg.unet.label_mask)
                lab, known = picks.labels, picks.known
        elif labels is not None and len(labels):
            raise ValueError("this model takes no labels")
        img = None
        if cfg.unet.cond_channels and cfg.task != "super_resolution":
            if cond_image is None:
                raise ValueError("this model needs a conditioning image (a stickman drawing)")
            img = cond_image if cond_image.dim() == 4 and len(cond_image) == n else \
                (cond_image if cond_image.dim() == 4 else cond_image[None]).expand(n, -1, -1, -1)
        if lab is None and img is None:
            if cfg.unet.num_labels:
                return Condition(uncond=torch.ones(n, dtype=torch.bool)).to(device)
            return None
        return Condition(labels=lab, image=img, uncond=torch.zeros(n, dtype=torch.bool), known=known).to(device)

    # ---- sampling ---------------------------------------------------------------------------
    def stream(self, n: int = 1, *, sampler: str = "ddim", steps: int = 50, spacing: str = "trailing",
               eta: float = 0.0, guidance: float = 1.0, labels: Sequence = (), cond_image: torch.Tensor | None = None,
               init_image: torch.Tensor | None = None, strength: float = 0.6, seed: int = 0, clip: str | None = None,
               low_res: torch.Tensor | None = None, sr_steps: int | None = None, sr_sampler: str | None = None,
               variance: str = "posterior", improved: bool = True, aug_level: float = 0.0,
               match_scale: int | None = None, x_start: torch.Tensor | None = None, t_start: int | None = None,
               device="cpu") -> Iterator[SampleStep]:
        """Generate ``n`` images, yielding every step. Images in [-1, 1]; image i uses seed + i.

        labels: class / attribute names or indices; cond_image: (C, H, W) stickman in [-1, 1];
        init_image: (C, H, W) or (n, C, H, W) for img2img with ``strength``; low_res: (n, C, h, w) input of
        a super-resolution model; its result is back-projected onto low_res at 1/``match_scale`` of its size
        (None: ``back_projection_scale``'s rule). A cascade runs its base then each SR stage (``stage`` in the
        records).

        x_start: the state to start from, (n, C, H, W), at ``t_start`` (default T - 1: the x_T of generation,
        e.g. a slerp of two seeds' ``start_noise``); the grid then runs from t_start down to the clean image in
        at most t_start + 1 steps. With it a run can continue from any recorded x_t ("branch from a step") with
        other settings. The seed's RNG streams are used as in a plain run (so x_start = start_noise(n, seed)
        reproduces it for every sampler). Gaussian models that generate from noise only.
        """
        if not 1 <= n <= MAX_BATCH:
            raise ValueError(f"batch size must be in [1, {MAX_BATCH}], got {n}")
        if not 1 <= steps <= MAX_STEPS:
            raise ValueError(f"steps must be in [1, {MAX_STEPS}], got {steps}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed must be a whole number in [0, {MAX_SEED}], got {seed!r}")
        if x_start is not None and (self.kind == "cascade" or self.config.diffusion.is_cold):
            raise ValueError("x_start needs one Gaussian model (not a cascade or a cold-diffusion model)")
        if self.kind == "cascade":
            yield from self._stream_cascade(n, sampler=sampler, steps=steps, spacing=spacing, eta=eta,
                                            guidance=guidance, labels=labels, cond_image=cond_image,
                                            init_image=init_image, strength=strength, seed=seed, clip=clip,
                                            sr_steps=sr_steps, sr_sampler=sr_sampler, variance=variance,
                                            device=device, low_res=low_res)
            return
        cfg = self.config
        spec = SamplerSpec(sampler, eta=eta, variance=variance, improved=improved)
        if spec.name not in self.samplers:
            raise ValueError(f"sampler {sampler!r} does not apply to this model (use {', '.join(self.samplers)})")
        gens = make_generators(seed, n)
        s = cfg.unet.image_size
        cond = self.condition(n, labels, cond_image, device)
        hw, crop_to = (s, s), None
        if cfg.task == "super_resolution":
            low_res, cond, hw, crop_to = self._sr_input(n, low_res, seed, aug_level, device)
        den = self.denoiser(guidance, clip)
        if cfg.diffusion.is_cold:
            yield from self._stream_cold(den, n, steps, spacing, gens, cond, init_image, strength, improved, device)
            return
        x_start, ts = self._start(n, hw, steps, spacing, gens, init_image, strength, x_start, t_start, device)
        records = sample_stream(den, x_start, ts, spec, schedule=self.schedule, cond=cond, generators=gens)
        if cfg.task != "super_resolution":
            yield from records
            return
        yield from self._sr_records(records, low_res, crop_to, back_projection_scale(aug_level, match_scale), device)

    def _sr_input(self, n, low_res, seed, aug_level, device):
        """A super-resolution model's input: ``low_res`` as (n, C, h, w), its bicubic upscale (on a canvas padded
        to a size the U-Net can halve, by edge replication) noise-augmented at ``aug_level`` as the condition.
        Returns (low_res, cond, canvas (H, W), the output size to crop the records to, or None)."""
        cfg = self.config
        if low_res is None:
            raise ValueError("a super-resolution model needs a low-resolution input image")
        if low_res.dim() == 3:
            low_res = low_res[None]
        if low_res.shape[0] == 1 and n > 1:      # one input, n samples of it (image i: seed + i)
            low_res = low_res.expand(n, -1, -1, -1)
        if low_res.shape[0] != n:
            raise ValueError(f"{low_res.shape[0]} low-resolution images for a batch of {n}: give one or {n}")
        out_hw = (low_res.shape[-2] * cfg.sr_factor, low_res.shape[-1] * cfg.sr_factor)
        up = F.interpolate(low_res.to(device), size=out_hw, mode="bicubic", align_corners=False).clamp(-1, 1)
        # the U-Net halves the size len(channel_mults) - 1 times: any other size is sampled on a canvas
        # padded (by edge replication) to a multiple of that, and the records are cropped back to out_hw
        m = 2 ** (len(cfg.unet.channel_mults) - 1)
        canvas = (-(-out_hw[0] // m) * m, -(-out_hw[1] // m) * m)
        if canvas != out_hw:
            up = F.pad(up, (0, canvas[1] - out_hw[1], 0, canvas[0] - out_hw[0]), mode="replicate")
        if aug_level > 0:
            up = augment_low_res(up, aug_level, per_image_noise(up.shape, make_generators(seed + 99_991, n), device))
        cond = Condition(image=up, aug_level=torch.full((n,), float(aug_level), device=device),
                         uncond=torch.zeros(n, dtype=torch.bool, device=device))
        return low_res, cond, canvas, (out_hw if canvas != out_hw else None)

    def _start(self, n, hw, steps, spacing, gens, init_image, strength, x_start, t_start, device):
        """The state a Gaussian run starts from and its timestep grid: x_T from the seed's noise (generation), the
        noised ``init_image`` (img2img, SDEdit), or a given ``x_start`` at ``t_start`` (branching from a step)."""
        cfg, sched = self.config, self.schedule
        T, c = cfg.diffusion.T, cfg.unet.out_channels
        if x_start is not None:
            if init_image is not None or cfg.task == "super_resolution":
                raise ValueError("x_start is the state of a generation from noise: not with img2img or super-resolution")
            t0 = T - 1 if t_start is None else t_start
            if isinstance(t0, bool) or not isinstance(t0, int) or not 0 <= t0 < T:
                raise ValueError(f"t_start must be a whole number in [0, {T - 1}], got {t_start!r}")
            if tuple(x_start.shape) != (n, c, *hw):
                raise ValueError(f"x_start must have shape {(n, c, *hw)}, got {tuple(x_start.shape)}")
            per_image_noise((n, c, *hw), gens, device)      # the draw a plain run makes: step noise stays the seed's
            return x_start.to(device), spaced_timesteps(T, min(steps, t0 + 1), spacing, t_start=t0, schedule=sched)
        if t_start is not None:
            raise ValueError("t_start needs x_start, the state at t_start")
        if init_image is not None:
            x0 = init_image if init_image.dim() == 4 else init_image[None].expand(n, -1, -1, -1)
            return noised_start(sched, x0.to(device), steps, strength, spacing, gens)
        ts = spaced_timesteps(T, steps, spacing, schedule=sched)
        return per_image_noise((n, c, *hw), gens, device), ts      # = start_noise(n, seed) for generation

    @staticmethod
    def _sr_records(records, low_res, crop_to, scale: int, device):
        """A super-resolution run's records, cropped from the padded canvas to the output size; the result
        back-projected onto its (un-augmented) input at 1/``scale`` of its size (``conditioning.back_project``)."""
        for rec in records:
            if crop_to is not None:
                h, w = crop_to
                rec = replace(rec, x_t=rec.x_t[..., :h, :w], x_next=rec.x_next[..., :h, :w],
                              x0_hat=rec.x0_hat[..., :h, :w], eps_hat=rec.eps_hat[..., :h, :w],
                              noise=None if rec.noise is None else rec.noise[..., :h, :w])
            if rec.index == rec.num_steps - 1:      # the result downsamples back to its input (un-augmented)
                rec = replace(rec, x_next=back_project(rec.x_next, low_res.to(device), scale))
            yield rec

    def _stream_cold(self, den, n, steps, spacing, gens, cond, init_image, strength, improved, device):
        if spacing in NOISE_LEVEL_SPACINGS:
            raise ValueError(f"the {spacing} spacing follows a Gaussian noise schedule; a cold-diffusion model takes "
                             f"{', '.join(x for x in SPACINGS if x not in NOISE_LEVEL_SPACINGS)}")
        deg = self.degradation
        T = self.config.diffusion.T
        c, s = self.config.unet.out_channels, self.config.unet.image_size
        fixed = per_image_noise((n, c, s, s), gens, device)
        if init_image is not None:
            x0 = init_image if init_image.dim() == 4 else init_image[None].expand(n, -1, -1, -1)
            ts = img2img_timesteps(T, steps, strength, spacing)
            x_start = deg(x0.to(device), torch.full((n,), int(ts[0]), dtype=torch.long), fixed)
        else:
            ts = spaced_timesteps(T, steps, spacing)
            x_start = self.cold_prior(n, gens, fixed, device, cond)
        yield from sample_stream(den, x_start, ts, SamplerSpec("cold", improved=improved), cond=cond,
                                 degradation=deg, fixed_noise=fixed)

    def cold_prior(self, n, gens, fixed, device, cond=None):
        """Start of cold generation: the fully degraded state. For noise it is the fixed draw itself;
        otherwise one of the stored fully degraded training images (``prior.safetensors``), chosen by
        each image's RNG stream (Bansal et al. sample x_T from degraded data). A deterministic
        degradation keeps much of the image (a blurred blob still has its class's outline), so when the
        prior's classes are stored and a class is asked for, the start is a degraded image of that class."""
        deg = self.degradation
        T = self.config.diffusion.T
        if deg.needs_noise:
            return deg(torch.zeros_like(fixed), torch.full((n,), T - 1, dtype=torch.long), fixed)
        if self.prior is None or len(self.prior) == 0:
            raise ValueError("this cold model has no prior.safetensors to start generation from; use img2img")
        pools = [torch.arange(len(self.prior))] * n
        labels = cond.labels if cond is not None else None
        if self.prior_labels is not None and labels is not None and not self.config.multi_label:
            for i in range(n):
                if labels[i].sum() > 0:
                    match = (self.prior_labels == int(labels[i].argmax())).nonzero().flatten()
                    pools[i] = match if len(match) else pools[i]
        idx = [int(pool[torch.randint(len(pool), (1,), generator=g)]) for pool, g in zip(pools, gens)]
        return self.prior[idx].to(device)

    def _stream_cascade(self, n, *, sr_steps, sr_sampler, low_res=None, **kw):
        """The base stage, then each super-resolution stage on the previous one's output. Given ``low_res``
        (n, C, h, w), the base stage is skipped and the super-resolution stages start from it."""
        seed = kw["seed"]
        x = low_res
        for i, (stage, opts) in enumerate(self.stages):
            if i == 0 and low_res is not None:
                continue
            if i == 0:
                gen = stage.stream(n, **kw)
            else:
                sk = dict(kw)
                sk.update(labels=(), cond_image=None, init_image=None, guidance=1.0, eta=0.0,
                          steps=self.stage_steps(stage, opts, sr_steps),
                          sampler=self.stage_sampler(stage, opts, sr_sampler),
                          seed=seed + 10_000 * i, aug_level=opts.get("aug_level", 0.0),
                          match_scale=opts.get("match_scale"))
                gen = stage.stream(n, low_res=x, **sk)
            last = None
            for rec in gen:
                last = rec
                yield replace(rec, stage=i)
            x = last.x_next

    @staticmethod
    def stage_steps(stage: "Pipeline", opts: dict, sr_steps: int | None = None) -> int:
        """Steps of a cascade's super-resolution stage: the request's ``sr_steps``, else the cascade's for this
        stage, else the stage model's own default (``sampling`` in its config; config.SR_SAMPLING if none)."""
        return sr_steps or opts.get("steps") or stage.config.sampling.steps

    @staticmethod
    def stage_sampler(stage: "Pipeline", opts: dict, sr_sampler: str | None = None) -> str:
        """Sampler of a cascade's super-resolution stage: the request's ``sr_sampler``, else the cascade's for this
        stage, else the stage model's own default."""
        return sr_sampler or opts.get("sampler") or stage.config.sampling.sampler

    def run_steps(self, steps: int, sr_steps: int | None = None) -> int:
        """Sampling steps that one ``stream(steps=steps)`` takes: ``steps``, plus every super-resolution stage's for
        a cascade (a work limit that counts only ``steps`` let a cascade's comparison run 79 s)."""
        if self.kind != "cascade":
            return steps
        return steps + sum(self.stage_steps(stage, opts, sr_steps) for stage, opts in self.stages[1:])

    def start_noise(self, n: int = 1, seed: int = 0, device="cpu") -> torch.Tensor:
        """The x_T that ``stream(n, seed=seed)`` starts a generation from: image i is drawn from the RNG stream
        seeded seed + i, (n, C, H, W)."""
        c, s = self.config.unet.out_channels, self.config.unet.image_size
        return per_image_noise((n, c, s, s), make_generators(seed, n), device)

    def sample(self, n: int = 1, **kw) -> torch.Tensor:
        """Run ``stream`` to the end: (n, C, H, W) in [-1, 1] (clamped)."""
        last = None
        for last in self.stream(n, **kw):
            pass
        return last.x_next.clamp(-1, 1)

    def upscale(self, low_res: torch.Tensor, steps: int | None = None, sampler: str | None = None, seed: int = 0,
                aug_level: float | None = None) -> torch.Tensor:
        """Super-resolve (n, C, h, w) images with the last SR stage (cascade) or this SR model; steps and
        sampler default to that model's own (``sampling`` in its config)."""
        sr = self.stages[-1][0] if self.kind == "cascade" else self
        if sr.config.task != "super_resolution":
            raise ValueError("this model has no super-resolution stage")
        steps, sampler = steps or sr.config.sampling.steps, sampler or sr.config.sampling.sampler
        if aug_level is None:
            aug_level = self.stages[-1][1].get("aug_level", 0.0) if self.kind == "cascade" else 0.0
        return sr.sample(low_res.shape[0], low_res=low_res, steps=steps, sampler=sampler, seed=seed,
                         aug_level=aug_level)

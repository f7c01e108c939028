"""``Stage``: one network, or experts routed by timestep, with its config: what one sampling pass runs. A model
folder is one stage, an expert ensemble one stage with routed experts, a cascade several (``Pipeline``)."""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from ..checkpoint import CascadeStage, work_problem
from ..conditioning import (Condition, augment_low_res, back_project, back_projection_scale, labels_to_vector,
                            match_edges, picks_condition, resolve_labels)
from ..config import ModelConfig
from ..degradations import Degradation, make_degradation
from ..denoisers import ClassifierFreeGuidance, ClipX0, ExpertEnsemble, GuidanceInput, ModelDenoiser
from ..runtime import ChunkedNet, RowMemory, SharedNet, backends
from ..options import SPACINGS
from ..sampler_registry import all_samplers, sampler_info
from ..samplers import (SampleStep, SamplerSpec, final_denoise, img2img_timesteps, make_generators, noised_start,
                       per_image_noise, sample_stream)
from ..schedules import Schedule, make_schedule, spaced_timesteps
from .request import Request

# The network always runs on batches of exactly this many rows (CFG's two passes count as two rows per
# image), padded where needed: CPU kernels round differently for different batch sizes, so a fixed
# evaluation batch makes image i of seed s bit-identical to image 0 of seed s+i whatever the batch size
# (measured on this CPU: batches of 4..12 share kernels with 1 thread, 4/8/12+ with 2; 8 is inside both).
# Set chunk = 0 to run whole batches at once (not invariant). With row workers on a CPU the fixed
# chunks cost little: each worker runs its consecutive chunks as one call where that is verified bit-identical
# (ChunkedNet._merges).
EVAL_CHUNK = 8
ALONE_SIDE = 128    # from this side up, every row runs alone on all the intra-op threads (ChunkedNet's chunk 1)


def eval_chunk(side: int) -> int:
    """The fixed network batch of a model drawing ``side``-px images: EVAL_CHUNK rows at 32 px, fewer for a larger
    image (as many pixels, ``backends.rows_at``), never below 2. A 128 px super-resolution stage padded one image
    to 8 rows (8x the work); 2 rows stay bit-identical however the batch is split here (1 row did not: one
    image then runs on 2 threads, a batch's rows on 1 each, and the kernels round differently).
    From ALONE_SIDE up, 1: each row alone on the caller's threads, one after another (ChunkedNet never hands
    1-row chunks to row workers, so every row sees the same kernels). On 2 cores (AMD EPYC Zen 4, fp32) one 256 px
    row took 0.32 s on 2 threads, against 0.76 s for the padded 2-row chunk; at 128 px one figure's stage took
    0.87 s alone against 1.53 s padded, and 4 rows about the same either way (docs/models.md). At 64 px a 4-row
    batch was 23% slower alone, so smaller sides keep row workers."""
    if side >= ALONE_SIDE:
        return 1
    return min(EVAL_CHUNK, backends.rows_at(EVAL_CHUNK, side))


def sr_canvas(cfg: ModelConfig, low_hw: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """A super-resolution model's output size for a ``low_hw`` input (sr_factor times it), and the canvas its network
    runs on: the output padded to a size the U-Net can halve len(channel_mults) - 1 times."""
    out_hw = (low_hw[0] * cfg.sr_factor, low_hw[1] * cfg.sr_factor)
    m = 2 ** (len(cfg.unet.channel_mults) - 1)
    return out_hw, (-(-out_hw[0] // m) * m, -(-out_hw[1] // m) * m)


@dataclass
class Stage:
    """``experts``: (t_lo, t_hi, net) routed by timestep (``routed``: an eDiff-I ensemble), or one network for
    every t. ``cascade``: this stage's entry in a cascade's manifest, how the cascade runs it (when it is not the
    first: aug_level, steps, sampler, match_scale; any stage: denoise_t; unset: CascadeStage's defaults)."""

    config: ModelConfig
    path: Path
    experts: list
    routed: bool = False
    cascade: CascadeStage = CascadeStage("")
    prior: torch.Tensor | None = None               # cold: fully degraded training images (N, C, H, W)
    prior_labels: torch.Tensor | None = None        # cold: their class indices (N,), to start from the asked class
    description: str = ""
    chunk: int = EVAL_CHUNK                         # network batch; fixed => images independent of batch size
    runners: dict = field(default_factory=dict)     # id(net) -> (runner, backends.Choice): where each network runs
    backend_request: str = "fp32"                   # what set_backend was asked for (auto, or a name)
    workers: int | None = None                      # row workers on a CPU (runtime.parallel; None: the default)
    row_memory: RowMemory | None = None             # rows' outputs kept across ticks (runtime/shared.py; a server's)
    shared: dict = field(default_factory=dict, repr=False)   # id(net) -> (key, SharedNet): one per network, so
    # concurrent runs of this stage share each network call (runtime/shared.py)
    _shared_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def of_network(cls, config: ModelConfig, path: Path, net, **kw) -> "Stage":
        return cls(config, Path(path), [(0, config.diffusion.T, net)], **kw)

    # ---- what the stage is ------------------------------------------------------------------
    @property
    def net(self):
        """The network of an unrouted stage (None for an expert ensemble)."""
        return None if self.routed else self.experts[0][2]

    @net.setter
    def net(self, value):
        if self.routed:
            raise ValueError("an expert ensemble has one network per expert")
        self.experts = [(*self.experts[0][:2], value)]

    @property
    def networks(self) -> list:
        return [net for _, _, net in self.experts]

    @property
    def schedule(self) -> Schedule:
        d = self.config.diffusion
        return make_schedule(d.schedule, d.T, d.beta_1, d.beta_T)

    @property
    def degradation(self) -> Degradation | None:
        d = self.config.diffusion
        return make_degradation(d.degradation, d.T, self.schedule) if d.is_cold else None

    @property
    def samplers(self) -> tuple[str, ...]:
        """The samplers that apply: cold's for a cold model; else the Gaussian ones, a distilled student's own rule
        only on that student (``config.distilled.sampler``)."""
        cold, own = self.config.diffusion.is_cold, self.config.distilled.sampler
        return tuple(s.name for s in all_samplers() if s.gaussian != cold and (not s.student or s.name == own))

    @property
    def size(self) -> int:
        """Side of this stage's images (a super-resolution model's high resolution, not its training crops)."""
        return self.config.output_size

    def run_steps(self, sr_steps: int | None = None) -> int:
        """Steps of this stage as a cascade's super-resolution stage: the request's ``sr_steps``, else the
        cascade's for this stage, else the stage model's own default (``sampling`` in its config)."""
        return sr_steps or self.cascade.steps or self.config.sampling.steps

    def run_sampler(self, sr_sampler: str | None = None) -> str:
        """Sampler of this stage as a cascade's super-resolution stage: the request's, else the cascade's for this
        stage, else the stage model's own default."""
        return sr_sampler or self.cascade.sampler or self.config.sampling.sampler

    def expert_index(self, t: int) -> int | None:
        if not self.routed:
            return None
        return ExpertEnsemble([(lo, hi, None) for lo, hi, _ in self.experts], self.config.diffusion.T).expert_index(t)

    # ---- where the networks run (backends.py) -------------------------------------------------
    def set_backend(self, name: str, measure: bool = True) -> None:
        self.runners = {id(net): backends.choose(net, name, self.path, self.chunk, image_size=self.size,
                                                 measure=measure) for net in self.networks}
        self.backend_request = name

    @property
    def backend_choices(self) -> list:
        return [self.runners[id(net)][1] if id(net) in self.runners else backends.Choice("fp32", "default", {}, {})
                for net in self.networks]

    def runner(self, net):
        return self.runners[id(net)][0] if id(net) in self.runners else net

    def shared_net(self, net) -> SharedNet:
        """The one ``SharedNet`` of ``net`` as this stage runs it now (backend, chunk, workers): every run of this
        stage calls the network through it, so concurrent runs share each network call."""
        runner = self.runner(net)
        key = (id(runner), self.chunk, self.workers, self.row_memory)
        with self._shared_lock:
            hit = self.shared.get(id(net))
            if hit is None or hit[0] != key:
                hit = self.shared[id(net)] = (key, SharedNet(ChunkedNet(runner, self.chunk, self.workers),
                                                             memory=self.row_memory))
        return hit[1]

    def denoiser(self, guidance: float = 1.0, clip: str | None = None, hold: bool = True, cancelled=None):
        """model (or routed experts) -> CFG (holding the config's ``sampling.held_labels`` at weight 1 unless
        ``hold`` is False) -> x0 kept in range (``clip``: clip | dynamic | none; None = the model's
        ``diffusion.x0_range``). The networks are called through their ``shared_net``; ``cancelled`` (a callable):
        once it returns True, the run's next network call raises ``runtime.Cancelled`` uncomputed."""
        d = self.config.diffusion
        clip = clip or d.x0_range
        sched = None if d.is_cold else self.schedule
        nets = [(lo, hi, functools.partial(self.shared_net(net), cancelled=cancelled)) for lo, hi, net in self.experts]
        dens = [(lo, hi, ModelDenoiser(net, sched, d.prediction)) for lo, hi, net in nets]
        den = ExpertEnsemble(dens, d.T) if self.routed else dens[0][2]
        if self.config.unet.guidance_embedding:       # a guided student: w is an input, one pass
            den = GuidanceInput(den, guidance)
        elif guidance != 1.0:
            den = ClassifierFreeGuidance(den, guidance, self.held_mask() if hold else None)
        return ClipX0(den, sched, clip) if clip != "none" else den

    def held_mask(self) -> torch.Tensor | None:
        """(L,) 1 at the attributes the model's config guides at weight 1 (``sampling.held_labels``), or None."""
        names, held = self.config.label_names, self.config.sampling.held_labels
        if not held:
            return None
        return labels_to_vector(resolve_labels(held, names), len(names), 1, True)[0]

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
    def run_size(self, r: Request) -> tuple[tuple[int, int], tuple[int, int]] | None:
        """(the output size, the canvas the network runs on) of this stage's run of ``r``: the size the request
        makes, not the config's: a super-resolution input's size times the factor, an init_image's size; None
        without the input a super-resolution model needs (``stream`` refuses it)."""
        cfg = self.config
        if cfg.task == "super_resolution":
            return None if r.low_res is None else sr_canvas(cfg, tuple(r.low_res.shape[-2:]))
        hw = tuple(r.init_image.shape[-2:]) if r.init_image is not None else (cfg.unet.image_size,) * 2
        return hw, hw

    def check_work(self, r: Request) -> tuple[int, int] | None:
        """Refuse a run of ``r`` whose network work is over the bounds (``checkpoint.work_problem``, estimated
        from the config at the canvas the request makes): one image's pass, the passes of one step (the batch,
        guidance's second pass) and the rows of one network call (``chunk``). ValueError naming this folder;
        returns the output size (None: the request lacks its input, refused when run). The sampler and its grid are
        checked first (``spec``), so that everything a run can be refused for is said before it starts."""
        self.spec(r)
        sizes = self.run_size(r)
        if sizes is None:
            return None
        (h, w), canvas = sizes
        guided = r.guidance != 1.0 and not self.config.unet.guidance_embedding      # CFG: two passes per image
        rows = r.n * (2 if guided else 1)
        problem = work_problem(self.config.unet, canvas, rows, min(rows, self.chunk) if self.chunk > 0 else rows)
        if problem:
            raise ValueError(f"{self.path}: a request of {r.n}{' guided' if guided else ''} image"
                             f"{'s' if r.n > 1 else ''}{' (2 network passes each)' if guided else ''}: {problem}")
        return h, w

    def spec(self, r: Request) -> SamplerSpec:
        """The sampler of request ``r``, refused (ValueError) where it or its grid does not apply to this stage."""
        spec = SamplerSpec(r.sampler, eta=r.eta, variance=r.variance, improved=r.improved)
        if spec.name not in self.samplers:
            raise ValueError(f"sampler {r.sampler!r} does not apply to {self.path.name} (use {', '.join(self.samplers)})")
        grids = sampler_info(spec.name).grids
        if r.spacing in SPACINGS and r.spacing not in grids:
            why = "follows a Gaussian noise schedule; a cold-diffusion model" if self.config.diffusion.is_cold else \
                f"does not apply to the {spec.name} sampler, which"
            raise ValueError(f"the {r.spacing} spacing {why} takes {', '.join(grids)}")
        return spec

    def stream(self, r: Request) -> Iterator[SampleStep]:
        """This stage's run of request ``r``, every step."""
        cfg = self.config
        spec = self.spec(r)
        gens = make_generators(r.seed, r.n)
        s = cfg.unet.image_size
        cond = self.condition(r.n, r.labels, r.cond_image, r.device)
        hw, crop_to, low_res = (s, s), None, r.low_res
        if cfg.task == "super_resolution":
            low_res, cond, hw, crop_to = self._sr_input(r)
        den = self.denoiser(r.guidance, r.clip, r.hold, r.cancelled)
        if cfg.diffusion.is_cold:
            yield from self._stream_cold(den, r, spec, gens, cond)
            return
        t_d = self.cascade.denoise_t if r.steps > 1 else -1     # the last of the steps denoises the result
        x_start, ts = self._start(r if t_d < 0 else replace(r, steps=r.steps - 1), hw, gens)
        records = sample_stream(den, x_start, ts, spec, schedule=self.schedule, cond=cond, generators=gens)
        scale = back_projection_scale(r.aug_level, r.match_scale)
        if cfg.task == "super_resolution":
            records = self._sr_records(records, low_res, crop_to, scale, r.device)
        if t_d >= 0:        # unguided: guidance's push would put back the grain the step removes (docs/models.md)
            records = final_denoise(records, self.denoiser(1.0, r.clip, r.hold, r.cancelled), t_d, self.schedule,
                                    cond, hw if crop_to is not None else None)
            if cfg.task == "super_resolution":      # the input's edges matched again, its flat parts left denoised
                records = self._last_matched(records, low_res, scale, r.device)
        yield from records

    def _sr_input(self, r: Request):
        """A super-resolution model's input: ``r.low_res`` as (n, C, h, w), its bicubic upscale (on a canvas padded
        to a size the U-Net can halve, by edge replication) noise-augmented at ``r.aug_level`` as the condition.
        Returns (low_res, cond, canvas (H, W), the output size to crop the records to, or None)."""
        cfg, n, low_res, device = self.config, r.n, r.low_res, r.device
        if low_res is None:
            raise ValueError("a super-resolution model needs a low-resolution input image")
        if low_res.dim() == 3:
            low_res = low_res[None]
        if low_res.shape[0] == 1 and n > 1:      # one input, n samples of it (image i: seed + i)
            low_res = low_res.expand(n, -1, -1, -1)
        if low_res.shape[0] != n:
            raise ValueError(f"{low_res.shape[0]} low-resolution images for a batch of {n}: give one or {n}")
        out_hw, canvas = sr_canvas(cfg, tuple(low_res.shape[-2:]))
        up = F.interpolate(low_res.to(device), size=out_hw, mode="bicubic", align_corners=False).clamp(-1, 1)
        # the U-Net halves the size len(channel_mults) - 1 times: any other size is sampled on a canvas
        # padded (by edge replication) to a multiple of that, and the records are cropped back to out_hw
        if canvas != out_hw:
            up = F.pad(up, (0, canvas[1] - out_hw[1], 0, canvas[0] - out_hw[0]), mode="replicate")
        if r.aug_level > 0:
            up = augment_low_res(up, r.aug_level, per_image_noise(up.shape, make_generators(r.seed + 99_991, n), device))
        cond = Condition(image=up, aug_level=torch.full((n,), float(r.aug_level), device=device),
                         uncond=torch.zeros(n, dtype=torch.bool, device=device))
        return low_res, cond, canvas, (out_hw if canvas != out_hw else None)

    def _start(self, r: Request, hw, gens):
        """The state a Gaussian run starts from and its timestep grid: x_T from the seed's noise (generation), the
        noised ``init_image`` (img2img, SDEdit), or a given ``x_start`` at ``t_start`` (branching from a step)."""
        cfg, sched, n, device = self.config, self.schedule, r.n, r.device
        T, c = cfg.diffusion.T, cfg.unet.out_channels
        if r.x_start is not None:
            if r.init_image is not None or cfg.task == "super_resolution":
                raise ValueError("x_start is the state of a generation from noise: not with img2img or super-resolution")
            t0 = T - 1 if r.t_start is None else r.t_start
            if isinstance(t0, bool) or not isinstance(t0, int) or not 0 <= t0 < T:
                raise ValueError(f"t_start must be a whole number in [0, {T - 1}], got {r.t_start!r}")
            if tuple(r.x_start.shape) != (n, c, *hw):
                raise ValueError(f"x_start must have shape {(n, c, *hw)}, got {tuple(r.x_start.shape)}")
            per_image_noise((n, c, *hw), gens, device)      # the draw a plain run makes: step noise stays the seed's
            return r.x_start.to(device), spaced_timesteps(T, min(r.steps, t0 + 1), r.spacing, t_start=t0, schedule=sched)
        if r.t_start is not None:
            raise ValueError("t_start needs x_start, the state at t_start")
        if r.init_image is not None:
            x0 = r.init_image if r.init_image.dim() == 4 else r.init_image[None].expand(n, -1, -1, -1)
            return noised_start(sched, x0.to(device), r.steps, r.strength, r.spacing, gens)
        ts = spaced_timesteps(T, r.steps, r.spacing, schedule=sched)
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

    @staticmethod
    def _last_matched(records, low_res, scale: int, device):
        """The records, the last one's result matched to its input where the input has edges (``match_edges``)."""
        for rec in records:
            if rec.index == rec.num_steps - 1:
                rec = replace(rec, x_next=match_edges(rec.x_next, low_res.to(device), scale))
            yield rec

    def _stream_cold(self, den, r: Request, spec: SamplerSpec, gens, cond):
        deg, n, device = self.degradation, r.n, r.device
        T = self.config.diffusion.T
        c, s = self.config.unet.out_channels, self.config.unet.image_size
        fixed = per_image_noise((n, c, s, s), gens, device)
        if r.init_image is not None:
            x0 = r.init_image if r.init_image.dim() == 4 else r.init_image[None].expand(n, -1, -1, -1)
            ts = img2img_timesteps(T, r.steps, r.strength, r.spacing)
            x_start = deg(x0.to(device), torch.full((n,), int(ts[0]), dtype=torch.long), fixed)
        else:
            ts = spaced_timesteps(T, r.steps, r.spacing)
            x_start = self.cold_start(n, gens, fixed, device, cond)
        yield from sample_stream(den, x_start, ts, spec, cond=cond,
                                 degradation=deg, fixed_noise=fixed)

    def cold_start(self, n, gens, fixed, device, cond=None):
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

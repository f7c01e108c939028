"""The ``Pipeline``: the stages of a loaded model (a model or an expert ensemble is one stage, a cascade several)
and ``Pipeline.stream``, the one streaming generator the CLI and the app sample with."""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Iterator

import torch

from ..conditioning import picks_meaning
from ..config import ModelConfig
from ..runtime import backends
from ..samplers import SampleStep, make_generators, per_image_noise
from .request import Request
from .stage import Stage


@dataclass
class Pipeline:
    """``stages``: the first generates (from noise, a label, a drawing); each later one is a super-resolution model
    run on the previous one's output as its ``cascade`` entry says. ``path``: the folder it was loaded from.

    What one stage has (its schedule, degradation, experts, condition, denoiser, cold prior) is asked of that stage,
    ``pipe.stages[0]``; the pipeline answers for the whole: its kind, config (the first stage's), sizes, samplers,
    backend, chunk and workers (set on every stage), and the sampling entry points."""

    stages: list[Stage]
    path: Path
    description: str = ""
    backend_request: str = "fp32"                   # what set_backend was asked for (auto, or a name)

    @classmethod
    def of(cls, stage: Stage) -> "Pipeline":
        """A pipeline of one stage (a model or an ensemble folder, or one stage of a cascade)."""
        return cls([stage], stage.path, stage.description, stage.backend_request)

    # ---- what the model is ------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """model | ensemble | cascade: what folder this is (checkpoint.folder_kind)."""
        return "cascade" if len(self.stages) > 1 else "ensemble" if self.stages[0].routed else "model"

    @cached_property
    def base(self) -> "Pipeline":
        """The first stage alone (the pipeline itself when it has one stage), made once: it shares the Stage, so
        chunk, workers and backend changes reach it (``set_backend`` makes it again, for its ``backend_request``)."""
        return self if len(self.stages) == 1 else self.stage(0)

    def stage(self, i: int) -> "Pipeline":
        """Stage ``i`` as a pipeline of its own (e.g. a cascade's super-resolution model, to run it alone)."""
        return Pipeline.of(self.stages[i])

    @property
    def _only(self) -> Stage:
        """The stage of a one-stage pipeline; what a cascade has per stage is asked of its stages."""
        if len(self.stages) != 1:
            raise ValueError("a cascade has one network, schedule and denoiser per stage; use its stages")
        return self.stages[0]

    @property
    def config(self) -> ModelConfig:
        """The (first) stage's config."""
        return self.stages[0].config

    @property
    def net(self):
        return self._only.net

    @net.setter
    def net(self, value):
        self._only.net = value

    @property
    def chunk(self) -> int:
        return self.stages[0].chunk

    @chunk.setter
    def chunk(self, value: int):
        """The network batch of every stage (0: whole batches, not batch-size invariant)."""
        for st in self.stages:
            st.chunk = value

    @property
    def workers(self) -> int | None:
        return self.stages[0].workers

    @workers.setter
    def workers(self, value: int | None):
        """Row workers of every stage on a CPU (``runtime.parallel``; None: the machine's default, 1: none)."""
        for st in self.stages:
            st.workers = value

    @property
    def row_memory(self):
        return self.stages[0].row_memory

    @row_memory.setter
    def row_memory(self, memory):
        """The ``runtime.RowMemory`` every stage's shared networks keep their rows' outputs in (None: none)."""
        for st in self.stages:
            st.row_memory = memory

    @property
    def picks_meaning(self) -> str:
        """What picked labels ask of this model (``conditioning.picks_meaning``); "" for a model without labels."""
        cfg = self.config
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
        if len(self.stages) == 1:
            return (self.stages[0].size,)
        sizes = [self.stages[0].config.unet.image_size]
        for st in self.stages[1:]:
            sizes.append(sizes[-1] * st.config.sr_factor)
        return tuple(sizes)

    @property
    def samplers(self) -> tuple[str, ...]:
        return self.stages[0].samplers

    # ---- where the networks run (backends.py) -------------------------------------------------
    def set_backend(self, name: str | None = None, measure: bool = True) -> "Pipeline":
        """Run every network of this pipeline (experts, stages) on backend ``name``: fp32 | bf16 | openvino, or
        auto (measured here, ``backends.choose``; ``measure`` False: a choice measured before, else fp32); None:
        the ``DIFFUSION_CORE_BACKEND`` variable, else fp32."""
        name = backends.requested_backend(name, default="fp32")
        for st in self.stages:
            st.set_backend(name, measure)
        self.backend_request = name         # only once every network runs there (a failed switch keeps the old)
        self.__dict__.pop("base", None)     # the cached base was made with the old backend_request
        return self

    @property
    def runners(self) -> dict:
        return self._only.runners

    @runners.setter
    def runners(self, value: dict):
        self._only.runners = value

    def _runner(self, net):
        return self._only.runner(net)

    @property
    def backend_choices(self) -> list:
        """The backends.Choice of every network, stages included, in order."""
        return [c for st in self.stages for c in st.backend_choices]

    @property
    def backend(self) -> str:
        """The backend(s) running this pipeline's networks, e.g. "bf16" or "fp32 + openvino"."""
        return " + ".join(dict.fromkeys(c.name for c in self.backend_choices)) or "fp32"

    # ---- sampling ---------------------------------------------------------------------------
    def stream(self, n: int = 1, **options) -> Iterator[SampleStep]:
        """Generate ``n`` images, yielding every step: ``options`` are those of a ``Request`` (its docstring says
        each). A cascade runs its base, then each super-resolution stage on the previous output (``stage`` in the
        records); given ``low_res``, its base is skipped. A request whose work is over the bounds is refused here,
        before the first step (``check_work``)."""
        return self.run(Request(n, **options))

    def run(self, r: Request) -> Iterator[SampleStep]:
        """``stream`` of a made request."""
        if r.x_start is not None and (len(self.stages) > 1 or self.config.diffusion.is_cold):
            raise ValueError("x_start needs one Gaussian model (not a cascade or a cold-diffusion model)")
        self.check_work(r)
        if len(self.stages) == 1:
            return self.stages[0].stream(r)
        return self._stream_cascade(r)

    def check_work(self, r: Request) -> None:
        """Refuse ``r`` (ValueError naming the stage's folder) where the network work of any stage it runs is over
        the bounds (``Stage.check_work``), before any network call: each stage at the size the request makes it, a
        cascade's later stages on the images the one before makes (a large low_res input grows every stage)."""
        if len(self.stages) == 1:
            self.stages[0].check_work(r)
            return
        x = r.low_res
        for i, st in enumerate(self.stages):       # as _stream_cascade runs them
            if i == 0 and r.low_res is not None:
                continue
            h, w = st.check_work(self._stage_request(r, i, x))
            x = torch.empty((r.n, st.config.unet.out_channels, h, w), device="meta")   # only its size is read

    def _stage_request(self, r: Request, i: int, x: torch.Tensor | None) -> Request:
        """Stage ``i``'s request in a cascade run of ``r``, ``x`` the images the stage before made."""
        if i == 0:
            return replace(r, low_res=None)
        st = self.stages[i]
        return replace(r, labels=(), cond_image=None, init_image=None, guidance=1.0, eta=0.0, low_res=x,
                       steps=st.run_steps(r.sr_steps), sampler=st.run_sampler(r.sr_sampler),
                       seed=r.seed + 10_000 * i, aug_level=st.cascade.aug_level,
                       match_scale=st.cascade.match_scale or None)

    def _stream_cascade(self, r: Request) -> Iterator[SampleStep]:
        x = r.low_res
        for i, st in enumerate(self.stages):
            if i == 0 and r.low_res is not None:
                continue
            req = self._stage_request(r, i, x)
            last = None
            for rec in st.stream(req):
                last = rec
                yield replace(rec, stage=i)
            x = last.x_next

    def prepare(self, cond_image=None, init_image=None, low_res=None) -> dict:
        """Image inputs (a path, PIL image or array each; None for none) as ``Request`` options, each read
        (``images.load_image``: checked, centre-cropped square, resized) at the size and channels its stage takes: a
        pose model's stickman ``cond_image`` (C, H, W), an img2img ``init_image`` (C, H, W), and a ``low_res`` input
        (1, C, h, w) of a super-resolution model or of a cascade's first super-resolution stage (its base skipped).
        The app and the CLI both read their files through this."""
        from ..images import load_image
        base = self.base.config
        out = {}
        if cond_image is not None:
            out["cond_image"] = load_image(cond_image, base.unet.image_size, base.unet.cond_channels or 1)
        if init_image is not None:
            out["init_image"] = load_image(init_image, base.unet.image_size, base.unet.out_channels)
        if low_res is not None:
            sr = self.stages[1].config if len(self.stages) > 1 else base
            if sr.task != "super_resolution":
                raise ValueError(f"{self.path}: neither a super-resolution model nor a cascade takes a low_res input")
            side = base.unet.image_size if len(self.stages) > 1 else sr.low_res
            out["low_res"] = load_image(low_res, side, sr.unet.out_channels)[None]
        return out

    def run_steps(self, steps: int, sr_steps: int | None = None) -> int:
        """Sampling steps that one ``stream(steps=steps)`` takes: ``steps``, plus every super-resolution stage's for
        a cascade (a work limit that counts only ``steps`` let a cascade's comparison run 79 s)."""
        return steps + sum(st.run_steps(sr_steps) for st in self.stages[1:])

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
        sr = self.stages[-1]
        if sr.config.task != "super_resolution":
            raise ValueError("this model has no super-resolution stage")
        steps, sampler = steps or sr.config.sampling.steps, sampler or sr.config.sampling.sampler
        if aug_level is None:
            aug_level = sr.cascade.aug_level if len(self.stages) > 1 else 0.0
        return Pipeline.of(sr).sample(low_res.shape[0], low_res=low_res, steps=steps, sampler=sampler, seed=seed,
                                      aug_level=aug_level)

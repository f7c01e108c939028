"""The runs the Learn tab looks at: each session's last Generate run (``KeptRun``), under one byte budget."""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from diffusion_core import Request, make_generators

from .settings import sampler_label


@dataclass
class Progress:
    """What changes while a kept run samples: every base step's t, kept or not (a multistep solver's weights depend
    on the whole grid, its order drops near the end), the last one's t_next; whether the run finished (not
    stopped) and whether the byte budget stopped keeping its steps."""

    grid: list[int] = field(default_factory=list)
    grid_end: int | None = None
    done: bool = False
    capped: bool = False


@dataclass(frozen=True)
class KeptRun:
    """A Generate run as the Learn tab explains and branches it: its first image, base stage only. Made from the
    run's own ``Request`` when it starts (``kept_run``): what ran is read from it, never restated. ``steps``
    (``SampleStep`` records of image 0) and ``progress`` fill in as it samples."""

    model: str
    request: Request
    task: str                               # the base model's: generate, pose, super_resolution
    summary: str                            # "model fashion · DDIM · 25 steps (trailing) · ... · first image"
    schedule: object | None = None          # a Gaussian base's noise schedule
    degradation: object | None = None       # a cold base's operator ...
    fixed_noise: torch.Tensor | None = None     # ... and, where it adds noise, image 0's fixed draw
    experts: tuple[tuple[int, int], ...] = ()   # an ensemble's [lo, hi) timestep ranges
    steps: list = field(default_factory=list)
    progress: Progress = field(default_factory=Progress)

    @property
    def timesteps(self) -> torch.Tensor:
        """The run's grid: every base step's t, then the last t_next."""
        if self.progress.grid:
            return torch.tensor(self.progress.grid + [self.progress.grid_end])
        return torch.tensor([r.t for r in self.steps] + [self.steps[-1].t_next])

    @property
    def img2img(self) -> bool:
        return self.request.init_image is not None


def kept_run(pipe, model: str, request: Request) -> KeptRun:
    """The record of a Generate run of ``pipe`` (the ``model`` folder) with ``request``, before its first step."""
    base, r = pipe.base, request
    d = base.config.diffusion
    summary = (f"model {model} · {sampler_label(r.sampler)} · {r.steps} steps ({r.spacing}) · guidance "
               f"{r.guidance:g} · seed {r.seed} · first image" + (" · base stage of the cascade"
                                                                 if pipe.kind == "cascade" else ""))
    kw = {}
    if d.is_cold:
        kw["degradation"] = deg = pipe.stages[0].degradation
        if deg.needs_noise:     # the run's fixed draw for image 0 (the stream seeds image i with seed + i)
            c, s = base.config.unet.out_channels, base.config.unet.image_size
            kw["fixed_noise"] = torch.randn((c, s, s), generator=make_generators(r.seed, 1)[0])[None]
    else:
        kw["schedule"] = pipe.stages[0].schedule
    if pipe.kind == "ensemble":
        kw["experts"] = tuple((lo, hi) for lo, hi, _ in pipe.stages[0].experts)
    return KeptRun(model, r, base.config.task, summary, **kw)


class KeptRuns:
    """The runs the Learn tab explains (each session's last Generate run: the first image's steps), kept in the
    server under one byte budget for all sessions together. The least recently used runs are dropped first, and a
    run that alone would pass the budget keeps its first steps. A session's gr.State holds only the key (the steps
    themselves in a gr.State grew the server by ~36 KB a step at 32 px for every session, without limit)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._runs: OrderedDict[str, tuple[KeptRun, int]] = OrderedDict()     # key -> (run, bytes accounted)
        self._total = 0
        self._lock = threading.Lock()

    def __deepcopy__(self, memo) -> "KeptRuns":
        """The one store every session shares, never copied: Gradio deep-copies the page's config for every page
        it serves, and the config names ``drop`` (a gr.State's delete_callback), so a copy took every kept run's
        tensors with it: after 30 runs a page took 10 s and the next class could not open the app."""
        return self

    def put(self, key: str, run: KeptRun) -> None:
        with self._lock:
            self._pop(key)
            self._runs[key] = (run, 0)

    def get(self, key) -> KeptRun | None:
        with self._lock:
            hit = self._runs.get(key) if isinstance(key, str) else None
            if hit is None:
                return None
            self._runs.move_to_end(key)
            return hit[0]

    def grow(self, key: str, run: KeptRun, nbytes: int) -> bool:
        """Account ``nbytes`` more to ``run``, dropping the least recently used other runs to stay in the budget;
        False (nothing accounted) if ``run`` is no longer the one kept under ``key`` or would alone pass the budget."""
        with self._lock:
            hit = self._runs.get(key)
            if hit is None or hit[0] is not run or hit[1] + nbytes > self.max_bytes:
                return False
            self._runs[key] = (run, hit[1] + nbytes)
            self._total += nbytes
            self._runs.move_to_end(key)
            while self._total > self.max_bytes:
                self._pop(next(iter(self._runs)))
            return True

    def drop(self, key) -> None:
        """Forget ``key``'s run (the gr.State's delete_callback: the session expired or closed)."""
        with self._lock:
            self._pop(key)

    def _pop(self, key) -> None:
        hit = self._runs.pop(key, None) if isinstance(key, str) else None
        if hit is not None:
            self._total -= hit[1]

    @property
    def nbytes(self) -> int:
        return self._total

"""``Request``: every option of one sampling run, frozen, with its bounds checked when it is made."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..options import BOUNDS


@dataclass(frozen=True)
class Request:
    """One run of ``Pipeline.stream``. Images in [-1, 1]; image i uses seed + i.

    labels: class / attribute names or indices (with a ``label_mask`` model the picks, every other attribute
    unknown), or an (n, L) tensor of full label vectors; cond_image: (C, H, W) stickman in [-1, 1];
    init_image: (C, H, W) or (n, C, H, W) for img2img with ``strength``; low_res: (n, C, h, w) input of a
    super-resolution model (or of a cascade's first super-resolution stage, skipping its base); its result is
    back-projected onto low_res at 1/``match_scale`` of its size (None: ``back_projection_scale``'s rule);
    sr_steps / sr_sampler: a cascade's super-resolution stages (None: each stage's own); x_start: the state to
    start from at ``t_start`` (default T - 1), (n, C, H, W), for one Gaussian model generating from noise;
    hold: guide the picks the model's config holds (``sampling.held_labels``) at weight 1 (False: every pick
    at the guidance scale, plain classifier-free guidance); cancelled: a callable checked while the run's rows wait
    for the shared network (``runtime.SharedNet``): once it returns True the run raises ``runtime.Cancelled``.

    Checked here: n, steps, seed and guidance against ``options.BOUNDS``. The sampler's own options (sampler,
    eta, variance), the spacing and the strength are checked by what uses them (``SamplerSpec``,
    ``spaced_timesteps``, ``noised_start``)."""

    n: int = 1
    sampler: str = "ddim"
    steps: int = 50
    spacing: str = "trailing"
    eta: float = 0.0
    guidance: float = 1.0
    labels: Sequence | torch.Tensor = ()
    cond_image: torch.Tensor | None = None
    init_image: torch.Tensor | None = None
    strength: float = 0.6
    seed: int = 0
    clip: str | None = None
    low_res: torch.Tensor | None = None
    sr_steps: int | None = None
    sr_sampler: str | None = None
    variance: str = "posterior"
    improved: bool = True
    aug_level: float = 0.0
    match_scale: int | None = None
    x_start: torch.Tensor | None = None
    t_start: int | None = None
    hold: bool = True
    device: str | torch.device = "cpu"
    cancelled: Callable[[], bool] | None = None     # once True, the run's next network call raises runtime.Cancelled

    def __post_init__(self):
        lo, hi = BOUNDS["n"]
        if not lo <= self.n <= hi:
            raise ValueError(f"batch size must be in [{lo}, {hi}], got {self.n}")
        lo, hi = BOUNDS["steps"]
        if not lo <= self.steps <= hi:
            raise ValueError(f"steps must be in [{lo}, {hi}], got {self.steps}")
        lo, hi = BOUNDS["seed"]
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not lo <= self.seed <= hi:
            raise ValueError(f"seed must be a whole number in [{lo}, {hi}], got {self.seed!r}")
        lo, hi = BOUNDS["guidance"]
        if not lo <= self.guidance <= hi:
            raise ValueError(f"guidance scale must be in [{lo:g}, {hi:g}], got {self.guidance}")

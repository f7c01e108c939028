"""``Request``: every option of one sampling run, frozen, with its bounds checked when it is made."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..options import BOUNDS, number


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

    Checked here, the one place a run's numbers are checked: n, steps, seed, guidance, eta and strength against
    ``options.BOUNDS`` (text and floats that hold whole numbers are taken, as their type). The names (sampler,
    spacing, variance) and what depends on the model are checked when the run is asked for (``Stage.check_work``)."""

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
        """Each number checked and made its type here, once, whatever sent it (a form's float, an API client's text:
        ``options.number``); the app and the command line keep only their own tighter limits."""
        for field, name, whole in (("n", "batch size", True), ("steps", "steps", True), ("seed", "seed", True),
                                   ("guidance", "guidance scale", False), ("eta", "eta", False),
                                   ("strength", "strength", False)):
            value = number(getattr(self, field), name, *BOUNDS[field], whole=whole)
            object.__setattr__(self, field, value if whole else float(value))
        if self.init_image is not None and self.strength == 0:
            raise ValueError("strength must be in (0, 1] for img2img, got 0")

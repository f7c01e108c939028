"""What each sampler *is*, one record per sampler: its name and labels, whether it is stochastic or multistep, the
options it reads, the grids it takes, the update rule that runs it and how its step is explained. The pipeline's
checks, ``make_step``, the command line and the app's menus, checks and explanations are all read from here, so a
new sampler is its update rule (a ``samplers.Step``) plus one ``register_sampler`` call, and nothing in the app.

Torch-free (``--help`` and the app's menus read it without importing torch); a record names its rule as
``"module:Class"``, imported on first use (``SamplerInfo.step_class``)."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from .options import NOISE_LEVEL_SPACINGS, SPACINGS
from .sampler_texts import FORMULAS, NOTES

Row = tuple[str, "float | str"]     # (quantity, value) of an explained step: a float is shown to 6 digits


def _no_rows(num: dict) -> list:
    return []


@dataclass(frozen=True)
class SamplerInfo:
    """One sampler. ``rows(numbers)``: the explained step's own quantities as (label, value) rows, from the
    numbers ``samplers.explain_step`` gives (its ``info``); ``formula`` (TeX) and ``note`` explain the rule."""

    name: str                       # as requests, configs, links and the command line spell it
    label: str                      # menus: "DPM-Solver++ (2M)"
    short: str                      # captions and the Compare menu: "DPM++"
    step: str                       # its update rule, a samplers.Step subclass: "module:Class"
    formula: str
    note: str
    rows: Callable[[dict], list[Row]] = _no_rows
    gaussian: bool = True           # runs on a Gaussian noise schedule (False: a cold-diffusion degradation)
    stochastic: bool = False        # draws fresh noise at every step but the last
    noise_param: str | None = None  # stochastic when this option is above 0 (DDIM's eta), deterministic at 0
    multistep: bool = False         # reuses the denoiser's earlier outputs (its steps depend on the whole grid)
    params: tuple[str, ...] = ()    # the SamplerSpec options it reads (eta, variance, improved)
    grids: tuple[str, ...] = SPACINGS   # the timestep spacings it takes
    student: bool = False           # a distilled student's own rule: offered only on the student made for it
    featured: bool = False          # one of the few a first comparison shows (the Compare grid's first rows)

    def step_class(self):
        """The ``samplers.Step`` subclass that runs this sampler (imported here, on first use)."""
        module, _, cls = self.step.partition(":")
        return getattr(importlib.import_module(module), cls)

    def can_be_deterministic(self) -> bool:
        """Some setting of it draws no noise (DDIM at eta 0): a seed's x_T then fixes the image."""
        return not self.stochastic

    def deterministic_label(self) -> str:
        """Its label as a menu of deterministic samplers shows it: "DDIM (eta 0)"."""
        return f"{self.label} ({self.noise_param} 0)" if self.noise_param else self.label


_REGISTRY: dict[str, SamplerInfo] = {}
DEFAULT_SAMPLER = "dpm++"           # a model's sampler unless its config names another; what menus start at


def register_sampler(info: SamplerInfo) -> SamplerInfo:
    """Add a sampler (after the others, in menus too). A name already taken is refused."""
    if info.name in _REGISTRY:
        raise ValueError(f"a sampler named {info.name!r} is already registered")
    unknown = [g for g in info.grids if g not in SPACINGS]
    if unknown:
        raise ValueError(f"sampler {info.name!r}: unknown grids {', '.join(unknown)}")
    _REGISTRY[info.name] = info
    return info


def unregister_sampler(name: str) -> None:
    """Remove a sampler that ``register_sampler`` added (a test's toy)."""
    if name == DEFAULT_SAMPLER:
        raise ValueError(f"{name!r} is the default sampler")
    del _REGISTRY[name]


def all_samplers() -> tuple[SamplerInfo, ...]:
    """Every registered sampler, in registry order (the order menus show)."""
    return tuple(_REGISTRY.values())


def sampler_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def student_samplers() -> tuple[str, ...]:
    """The distilled students' own rules (``SamplerInfo.student``)."""
    return tuple(s.name for s in _REGISTRY.values() if s.student)


def sampler_info(name: str) -> SamplerInfo:
    """The record of ``name``; an unknown name is a ValueError that lists the known ones."""
    info = _REGISTRY.get(name) if isinstance(name, str) else None
    if info is None:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(_REGISTRY)}")
    return info


# --- the explained step's own quantities (the numbers are those of the rule's ``info``) ---

def _ddpm_rows(num: dict) -> list[Row]:
    return [("`beta` = 1 - alpha_bar_t / alpha_bar_t'", num["beta"]),
            (f"`sigma^2` ({num['variance']} variance)", num["posterior_variance"]),
            ("`sigma` (std of the added noise)", num["sigma"])]


def _ddim_rows(num: dict) -> list[Row]:
    return [("`eta`", num["eta"]), ("`sigma_t(eta)`", num["sigma"])]


def _dpmpp_2m_rows(num: dict) -> list[Row]:
    if "h" not in num:          # the last step: x_next = x0_hat
        return []
    rows = [("`lambda_t`", num["lambda_t"]), ("`lambda_t'`", num["lambda_next"]),
            ("`h` = lambda_t' - lambda_t", num["h"])]
    if num.get("order") == 2:
        return rows + [("`r` = h_prev / h", num["r"]), ("previous step", f"t = {num['t_prev']}")]
    return rows + [("order", "1 (first step: D = x0_hat)")]


def _order_rows(num: dict) -> list[Row]:
    rows = [("order of this step", str(num["order"]))]
    return rows + [("`x_t` used", "x_t after UniC's correction")] if num.get("corrected") else rows


def _progressive_rows(num: dict) -> list[Row]:
    return [("`alpha_t`", num["alpha_t"]), ("`sigma_t`", num["sigma_t"]), ("`alpha_t'`", num["alpha_next"]),
            ("`sigma_t'`", num["sigma_next"])]


def _consistency_rows(num: dict) -> list[Row]:
    return [("`alpha_t'`", num["alpha_next"]), ("`sigma_t'`", num["sigma_next"])]


def _cold_rows(num: dict) -> list[Row]:
    return [("degradation", num["degradation"]), ("severity at t", num["severity_t"]),
            ("severity at t'", num["severity_next"])]


_STEPS = "diffusion_core.samplers.steps"
for _info in (
    SamplerInfo("ddpm", "DDPM", "DDPM", f"{_STEPS}:DDPMStep", FORMULAS["ddpm"], NOTES["ddpm"], _ddpm_rows,
                stochastic=True, params=("variance",), featured=True),
    SamplerInfo("ddim", "DDIM", "DDIM", f"{_STEPS}:DDIMStep", FORMULAS["ddim"], NOTES["ddim"], _ddim_rows,
                noise_param="eta", params=("eta",), featured=True),
    SamplerInfo("dpm++", "DPM-Solver++ (2M)", "DPM++", f"{_STEPS}:DPMpp2MStep", FORMULAS["dpm++"], NOTES["dpm++"],
                _dpmpp_2m_rows, multistep=True, featured=True),
    SamplerInfo("dpm++3m", "DPM-Solver++ (3M)", "DPM++ 3M", f"{_STEPS}:DPMpp3MStep", FORMULAS["dpm++3m"],
                NOTES["dpm++3m"], _order_rows, multistep=True),
    SamplerInfo("unipc", "UniPC", "UniPC", f"{_STEPS}:UniPCStep", FORMULAS["unipc"], NOTES["unipc"], _order_rows,
                multistep=True),
    SamplerInfo("cold", "Cold", "Cold", f"{_STEPS}:ColdStep", FORMULAS["cold"], NOTES["cold"], _cold_rows,
                gaussian=False, params=("improved",),
                grids=tuple(s for s in SPACINGS if s not in NOISE_LEVEL_SPACINGS)),
    # a distilled student's own few-step rule (Salimans & Ho 2022): offered only by the students it was distilled
    # for (``ModelConfig.distilled``), whose default it is
    # (its short name stays the bare name a branch's caption showed before the registry)
    SamplerInfo("progressive", "Student's own steps (progressive distillation)", "progressive",
                f"{_STEPS}:ProgressiveStep", FORMULAS["progressive"], NOTES["progressive"], _progressive_rows,
                student=True),
    SamplerInfo("consistency", "Student's own steps (consistency distillation)", "consistency",
                f"{_STEPS}:ConsistencyStep", FORMULAS["consistency"], NOTES["consistency"], _consistency_rows,
                stochastic=True, student=True),
):
    register_sampler(_info)

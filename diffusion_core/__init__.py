"""diffusion_core: a compact, from-scratch diffusion-model package.

Public API (the app and the CLI use only these):
    load(folder) -> Pipeline        single model, expert ensemble or cascade
    Pipeline.stream(n, sampler=..., steps=..., guidance=..., labels=..., seed=...) -> iterator of SampleStep
    Pipeline.sample(n, ...) -> (n, C, H, W) tensor in [-1, 1]
    Pipeline.run(Request(n, ...)): the stream of a request made (and checked) beforehand

The names below are imported from their modules on first use (PEP 562), so ``python -m diffusion_core --help``
and ``import diffusion_core`` do not import torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "checkpoint": ("SAMPLER_KINDS", "CheckpointError", "atomic_write_bytes", "part_outside", "read_json",
                   "save_cascade", "save_ensemble", "save_model"),
    "conditioning": ("Condition",),
    "config": ("SR_SAMPLING", "ConfigError", "DiffusionConfig", "ModelConfig", "UNetConfig"),
    "data": ("DataConfig", "load_data"),
    "degradations": ("make_degradation",),
    "denoisers": ("ClassifierFreeGuidance", "ClipX0", "ExpertEnsemble", "ModelDenoiser", "Prediction"),
    "images": ("ImageError", "grid", "load_image", "load_whole", "open_image", "output_problem", "to_mode", "to_pil",
               "to_uint8"),
    "runtime.backends": ("BackendError", "available", "requested_backend"),
    "runtime.shared": ("Cancelled", "RowMemory"),
    "options": ("BACKEND_ENV", "BACKENDS", "BOUNDS", "MAX_BATCH", "MAX_GUIDANCE", "MAX_SEED", "MAX_STEPS", "SAMPLERS",
                "SPACINGS", "number"),
    "pipeline": ("Pipeline", "Request", "load"),
    "provenance": ("read_config", "training_source"),
    "sampler_registry": ("DEFAULT_SAMPLER", "SamplerInfo", "all_samplers", "register_sampler", "sampler_info",
                         "unregister_sampler"),
    "samplers": ("SampleStep", "SamplerSpec", "StepExplanation", "explain_step", "make_generators", "sample", "sample_stream",
                 "slerp"),
    "schedules": ("Schedule", "make_schedule", "spaced_timesteps", "timestep_pairs"),
    "unet": ("UNet", "network_cost"),
}
if TYPE_CHECKING:     # what tools (type checkers, IDEs) see; tests/core/test_public_api.py keeps it equal to _EXPORTS
    from .checkpoint import (SAMPLER_KINDS, CheckpointError, atomic_write_bytes, part_outside, read_json, save_cascade,
                             save_ensemble, save_model)
    from .conditioning import Condition
    from .config import SR_SAMPLING, ConfigError, DiffusionConfig, ModelConfig, UNetConfig
    from .data import DataConfig, load_data
    from .degradations import make_degradation
    from .denoisers import ClassifierFreeGuidance, ClipX0, ExpertEnsemble, ModelDenoiser, Prediction
    from .images import ImageError, grid, load_image, load_whole, open_image, output_problem, to_mode, to_pil, to_uint8
    from .runtime.backends import BackendError, available, requested_backend
    from .runtime.shared import Cancelled, RowMemory
    from .options import (BACKEND_ENV, BACKENDS, BOUNDS, MAX_BATCH, MAX_GUIDANCE, MAX_SEED, MAX_STEPS, SAMPLERS, SPACINGS,
                          number)
    from .pipeline import Pipeline, Request, load
    from .provenance import read_config, training_source
    from .sampler_registry import (DEFAULT_SAMPLER, SamplerInfo, all_samplers, register_sampler, sampler_info,
                                   unregister_sampler)
    from .samplers import (SampleStep, SamplerSpec, StepExplanation, explain_step, make_generators, sample, sample_stream,
                           slerp)
    from .schedules import Schedule, make_schedule, spaced_timesteps, timestep_pairs
    from .unet import UNet, network_cost

_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)
__version__ = "0.1.0"


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'diffusion_core' has no attribute {name!r}")
    mod = importlib.import_module(f".{module}", __name__)
    value = getattr(mod, name)
    if name in vars(mod):       # kept; not a name its module makes when asked (options.SAMPLERS follows the registry)
        globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))

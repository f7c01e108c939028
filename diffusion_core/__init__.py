"""diffusion_core: a compact, from-scratch diffusion-model package.

Public API (the app and the CLI use only these):
    load(folder) -> Pipeline        single model, expert ensemble or cascade
    Pipeline.stream(n, sampler=..., steps=..., guidance=..., labels=..., seed=...) -> iterator of SampleStep
    Pipeline.sample(n, ...) -> (n, C, H, W) tensor in [-1, 1]
"""
from .checkpoint import CheckpointError, save_cascade, save_ensemble, save_model
from .conditioning import Condition
from .config import ConfigError, DiffusionConfig, ModelConfig, UNetConfig
from .degradations import make_degradation
from .denoisers import ClassifierFreeGuidance, ClipX0, ExpertEnsemble, ModelDenoiser, Prediction
from .images import ImageError, grid, load_image, to_pil, to_uint8
from .pipeline import Pipeline, load
from .samplers import (SAMPLERS, SampleStep, SamplerSpec, explain_multistep, make_generators, sample,
                       sample_stream)
from .schedules import SPACINGS, Schedule, make_schedule, spaced_timesteps, timestep_pairs
from .unet import UNet

__all__ = [
    "CheckpointError", "ClassifierFreeGuidance", "ClipX0", "Condition", "ConfigError", "DiffusionConfig",
    "ExpertEnsemble", "ImageError", "ModelConfig", "ModelDenoiser", "Pipeline", "Prediction", "SAMPLERS",
    "SPACINGS", "SampleStep", "SamplerSpec", "Schedule", "UNet", "UNetConfig", "explain_multistep", "grid", "load", "load_image",
    "make_degradation", "make_generators", "make_schedule", "sample", "sample_stream", "save_cascade",
    "save_ensemble", "save_model", "spaced_timesteps", "timestep_pairs", "to_pil", "to_uint8",
]
__version__ = "0.1.0"

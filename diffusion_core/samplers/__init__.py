"""Samplers: stateless steps over a denoiser, and one generator that is the sampling loop.

Every step maps (x_t, t, t_next, prediction) to x_{t_next}; ``t_next = -1`` is the clean image
(alpha_bar = 1). ``sample_stream`` iterates explicit (t, t_next) pairs from one timesteps tensor and
yields a frozen ``SampleStep`` after every step; ``sample`` runs it to the end. A consumer that stops
iterating simply stops the loop: nothing is left running and no state leaks.

Modules: ``updates`` (the update equations), ``steps`` (each rule as a step object, ``make_step``), ``loop`` (the
sampling loop, ``final_denoise``, ``explain_step``, img2img), ``spec`` (the request and the record, per-image noise).
"""
from .loop import (StepExplanation, explain_step, final_denoise, img2img_timesteps, noised_start, sample,
                   sample_stream)
from .steps import (ColdStep, ConsistencyStep, DDIMStep, DDPMStep, DPMpp2MStep, DPMpp3MStep, ProgressiveStep, Step,
                    UniPCStep, make_step)
from .spec import SampleStep, SamplerSpec, make_generators, per_image_noise, slerp
from .updates import (cold_step, cold_update, consistency_step, ddim_sigma, ddim_step, ddpm_step, ddpm_variance,
                      dpm_step_size, dpmpp_2m_step, dpmpp_3m_step, progressive_step, progressive_target, redegrade,
                      unipc_correct, unipc_step)

__all__ = ["StepExplanation", "explain_step", "final_denoise", "img2img_timesteps", "noised_start", "sample",
           "sample_stream", "ColdStep", "ConsistencyStep", "consistency_step", "DDIMStep", "DDPMStep", "DPMpp2MStep",
           "DPMpp3MStep", "ProgressiveStep", "Step", "UniPCStep", "make_step",
           "SampleStep", "SamplerSpec", "make_generators", "per_image_noise", "slerp", "cold_step", "cold_update",
           "ddim_sigma", "ddim_step", "ddpm_step", "ddpm_variance", "dpm_step_size", "dpmpp_2m_step", "dpmpp_3m_step",
           "progressive_step", "progressive_target", "redegrade", "unipc_correct", "unipc_step"]

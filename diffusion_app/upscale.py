"""Upscale an image with a super-resolution model."""
from __future__ import annotations

import time

import gradio as gr
from PIL import Image
import torch

from diffusion_core import BOUNDS, SR_SAMPLING, load_image, open_image

from .base import AppBase
from .inputs import number, user_error
from .render import as_pil_uint8, save_png, upscale_nearest
from .settings import MAX_UPSCALE_INPUT, PREVIEW_PX, SAMPLER_NAMES, USER_ERRORS, log


class UpscaleTab(AppBase):
    def upscale(self, model, image, sr_steps=SR_SAMPLING.steps, seed=0):
        """Super-resolve one image with the model's SR stage (cascade), the model itself (SR model), or a
        stand-alone SR model with matching channels. Returns (before nearest-upsampled, after) and a note."""
        try:
            pipe = self.models.get(model)
            sr_name, sr = self.upscaler_for(model, pipe)
            if sr is None:
                raise ValueError(f"no super-resolution model is available for {model!r}")
            if image is None:
                raise ValueError("select an image in the gallery (or upload one) to upscale")
            sr_steps = int(number(sr_steps, "SR steps", *BOUNDS["steps"], whole=True))
            sr_cfg = sr.stages[-1].config
            img = open_image(image)
            side = min(min(img.size), MAX_UPSCALE_INPUT)
            low = load_image(img, side, sr_cfg.unet.out_channels)[None]
            t0 = time.time()
            with torch.inference_mode():
                out = sr.upscale(low, steps=sr_steps, seed=int(seed or 0))[0].clamp(-1, 1)
        except USER_ERRORS as e:
            raise user_error(e) from None
        except Exception as e:
            log.exception("upscaling failed")
            raise gr.Error(f"upscaling failed: {type(e).__name__}: {e}") from None
        after = as_pil_uint8(out)
        before = as_pil_uint8(low[0]).resize(after.size, Image.Resampling.NEAREST)
        path = save_png(after, self._run_dir(model) / "upscaled.png",
                        {"model": sr_name, "upscale_of": model, "steps": sr_steps, "seed": int(seed or 0)})
        target = max(PREVIEW_PX, after.width)
        sampler = SAMPLER_NAMES.get(sr_cfg.sampling.sampler, sr_cfg.sampling.sampler)
        note = (f"{low.shape[-1]} px → {after.width} px with {sr_name} ({sr_steps} {sampler} steps, "
                f"{time.time() - t0:.1f} s)")
        return (upscale_nearest(before, target), upscale_nearest(after, target)), path, note

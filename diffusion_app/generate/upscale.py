"""Upscale an image with a super-resolution model."""
from __future__ import annotations

import time

import gradio as gr
from PIL import Image
import torch

from diffusion_core import BOUNDS, SR_SAMPLING, load_whole, open_image

from ..base import AppBase
from ..inputs import number, user_error
from ..render import as_pil_uint8, save_png, upscale_nearest
from ..settings import MAX_UPSCALE_INPUT, PREVIEW_PX, USER_ERRORS, log, sampler_label
from .presets import data_source


def size_text(w: int, h: int) -> str:
    return f"{w} px" if w == h else f"{w}×{h} px"


class UpscaleTab(AppBase):
    def upscaler_for_input(self, name, sr, side: int):
        """The super-resolution model for an input ``side`` px long: ``sr`` (``upscaler_for``'s, named ``name``)
        where its last stage was trained on inputs of that size (``low_res``), else a stand-alone SR model of the
        same family (channels and training data) that was, e.g. pose-sr256 for a 128 px figure, which went through
        pose-sr128, a 64 -> 128 px model, before (issue 40); else ``sr``."""
        last = sr.stages[-1]
        if last.config.low_res == side:
            return name, sr
        family = data_source(last.path)
        for n in self.models.sr_models(last.config.unet.out_channels):
            if self.models.config(n).low_res == side and data_source(self.models.folder(n)) == family:
                try:
                    return n, self.models.get(n)
                except USER_ERRORS:     # a broken folder: keep the model's own upscaler
                    continue
        return name, sr

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
            # the whole image, its shape kept (a non-square one was centre-cropped without a word: 20x14 came
            # out as 28 px); only an image larger than MAX_UPSCALE_INPUT is scaled down, and the note says so
            img = open_image(image)
            w, h = img.size
            sr_name, sr = self.upscaler_for_input(sr_name, sr, min(max(w, h), MAX_UPSCALE_INPUT))
            sr_cfg = sr.stages[-1].config
            low = load_whole(img, MAX_UPSCALE_INPUT, sr_cfg.unet.out_channels)[None]
            scaled = ("" if (w, h) == (low.shape[-1], low.shape[-2]) else
                      f"; the {size_text(w, h)} input was scaled down to {size_text(low.shape[-1], low.shape[-2])} "
                      f"(at most {MAX_UPSCALE_INPUT} px a side)")
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
        sampler = sampler_label(sr_cfg.sampling.sampler)
        note = (f"{size_text(low.shape[-1], low.shape[-2])} → {size_text(after.width, after.height)} with {sr_name} "
                f"({sr_steps} {sampler} steps, {time.time() - t0:.1f} s)" + scaled)
        return (upscale_nearest(before, target), upscale_nearest(after, target)), path, note

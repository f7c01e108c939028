"""The Forward process tab: q(x_t | x_0) and cold degradations on any image."""
from __future__ import annotations

import functools
import math
import random
import threading

import gradio as gr
import numpy as np
from PIL import Image
import torch

from diffusion_core import load_image, make_degradation, make_schedule, open_image

from ..base import AppBase
from ..inputs import number, user_error
from ..render import as_pil_uint8, is_gray, labelled, upscale_nearest
from ..settings import DEGRADATIONS, FASHION_DIR, PREVIEW_PX, USER_ERRORS, log


class ForwardTab(AppBase):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._fashion = None        # the dataset examples, read once (fashion_example)
        self._fashion_lock = threading.Lock()

    def fashion_example(self, index=None):
        """A Fashion-MNIST test image (random unless ``index``) as a PNG path; a pattern without the data."""
        if FASHION_DIR.is_dir():
            try:
                with self._fashion_lock:
                    if self._fashion is None:
                        from diffusion_core import DataConfig, load_data
                        self._fashion = load_data(DataConfig(source="fashion", split="test", limit=1000))
                data = self._fashion
                i = random.randrange(len(data)) if index is None else int(index) % len(data)
                arr = data.images[i, ..., 0]
                name = data.label_names[int(data.labels[i].argmax())] if data.labels is not None else ""
                path = self.out_dir / f"fashion-test-{i}.png"
                Image.fromarray(arr).save(path)
                return str(path), f"Fashion-MNIST test image #{i} ({name})"
            except (OSError, ValueError) as e:
                log.warning("Fashion-MNIST unavailable: %s", e)
        path = self.out_dir / "pattern.png"
        Image.fromarray(self.pattern()).save(path)
        return str(path), "generated test pattern (Fashion-MNIST not installed)"

    @staticmethod
    def pattern(size: int = 32) -> np.ndarray:
        yy, xx = np.mgrid[0:size, 0:size]
        r = np.hypot(yy - size / 2 + 0.5, xx - size / 2 + 0.5)
        img = np.where(r < size * 0.3, 230, 30).astype(np.uint8)
        img[(yy // 4 + xx // 4) % 2 == 0] //= 2
        return img

    def upload_note(self, image) -> str:
        """The caption of an uploaded x_0 (it kept the last dataset example's caption, issue 18)."""
        if image is None:
            return ""
        try:
            img = open_image(image)
        except USER_ERRORS as e:
            raise user_error(e) from None
        side = self._forward_x0(img).shape[-1]
        return (f"your image ({img.width}x{img.height} px, {'grey' if is_gray(img) else 'colour'}), used as a "
                f"{side}x{side} x_0")

    def _forward_x0(self, image) -> torch.Tensor:
        if image is None:
            image, _ = self.fashion_example(index=0)
        img = open_image(image)
        ch = 1 if is_gray(img) else 3
        size = min(64, max(8, min(img.size)))
        return load_image(img, size, ch)[None]

    def forward(self, image=None, schedule="cosine", degradation="noise", t=250):
        """q(x_t | x_0) at t, and a strip of x_t at 8 values of t (one fixed noise draw)."""
        try:
            t = int(number(t, "t", 0, 999, whole=True))
            if degradation not in DEGRADATIONS:
                raise ValueError(f"unknown degradation {degradation!r}; choose {', '.join(DEGRADATIONS)}")
            sched = make_schedule(schedule, 1000)
            x0 = self._forward_x0(image)
            eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
            if degradation == "noise":
                def q(tt):
                    return sched.q_sample(x0, torch.full((1,), tt, dtype=torch.long), eps)
            else:
                deg = make_degradation(degradation, 1000, sched)

                def q(tt):
                    return deg(x0, torch.full((1,), tt, dtype=torch.long), eps)
            xt = q(t)
            ts = [-1] + [round(1000 * k / 8) - 1 for k in range(1, 9)]
            cells = [upscale_nearest(as_pil_uint8((x0 if tt < 0 else q(tt))[0]).convert("RGB"), 80) for tt in ts]
            strip = labelled(cells, ["x_0" if tt < 0 else f"t = {tt}" for tt in ts], gap=4, size=12)
        except USER_ERRORS as e:
            raise user_error(e) from None
        ab = float(sched.alpha_bar_at(t))
        if degradation == "noise":
            info = (f"**t = {t}**, {schedule} schedule: alpha_bar = {ab:.4f}, sqrt(alpha_bar) = {math.sqrt(ab):.3f}, "
                    f"noise std = {math.sqrt(1 - ab):.3f}, log-SNR = {math.log(ab / (1 - ab)):.2f}")
        else:
            info = (f"**t = {t}**, {degradation}: severity {(t + 1) / 1000:.3f} of full degradation "
                    "(cold diffusion; the noise schedule does not apply)")
        return upscale_nearest(as_pil_uint8(xt[0]).convert("RGB"), PREVIEW_PX), strip, info

    @staticmethod
    def schedule_plot(t=250, schedule="cosine"):
        """alpha_bar(t) and log-SNR(t), linear vs cosine (Nichol & Dhariwal 2021, Fig. 5), t marked, as the page's
        plot. Drawn and encoded once per (t, schedule) and kept: every visitor's new page asks for the default one,
        and drawing it cost the server 0.2-0.3 s each time (a class opening the page at once waited for 30 of them)."""
        return _schedule_plot(int(t), str(schedule))


@functools.lru_cache(maxsize=64)
def _schedule_plot(t: int, schedule: str):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(8, 3.2), dpi=100, layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    T = 1000
    tt = np.arange(T) / T
    for kind, color in (("linear", "tab:blue"), ("cosine", "tab:orange")):
        s = make_schedule(kind, T)
        lw = 2.5 if kind == schedule else 1.2
        ax1.plot(tt, s.alpha_bar.numpy(), color=color, lw=lw, label=kind)
        ax2.plot(tt, s.log_snr().numpy(), color=color, lw=lw, label=kind)
    for ax in (ax1, ax2):
        ax.axvline(t / T, color="gray", ls="--", lw=1)
        ax.set_xlabel("diffusion step (t/T)")
        ax.grid(alpha=0.3)
        ax.legend()
    ax1.set_title("alpha_bar(t)")
    ax2.set_title("log SNR(t) = log(alpha_bar / (1 - alpha_bar))")
    return _PLOT.postprocess(fig)       # the encoded PNG (gr.Plot passes it through as it is)


_PLOT = gr.Plot(format="png", render=False)     # the page's plot component's format (ui_forward.py)

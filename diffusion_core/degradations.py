"""Forward processes behind one interface (Bansal et al. 2022, "Cold Diffusion").

A degradation D(x_0, t) maps a clean image to its degraded version at severity t in {0..T-1};
D(x_0, -1) = x_0. Gaussian diffusion is one instance (with the noise draw held fixed, as cold
diffusion's "noise" degradation does); blur, pixelate and mask are deterministic ones.
Images: (B, C, H, W) in [-1, 1].
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .schedules import Schedule


class Degradation:
    """D(x0, t, noise). ``t``: (B,) long in [-1, T). ``noise`` is used only by the noise degradation."""

    name = "base"
    needs_noise = False

    def __init__(self, T: int):
        self.T = T

    def __call__(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.long, device=x0.device).expand(x0.shape[0])
        out = x0.clone()
        for tv in torch.unique(t).tolist():      # severities are shared by whole groups of the batch
            if tv < 0:
                continue
            sel = t == tv
            out[sel] = self.apply(x0[sel], int(tv), None if noise is None else noise[sel])
        return out

    def apply(self, x0: torch.Tensor, t: int, noise: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def severity(self, t: int) -> float:
        """Fraction of the way to full degradation, in (0, 1]."""
        return (t + 1) / self.T


class FixedNoise(Degradation):
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) z with one noise draw z held fixed."""

    name = "noise_fixed"
    needs_noise = True

    def __init__(self, T: int, schedule: Schedule):
        super().__init__(T)
        self.schedule = schedule

    def apply(self, x0, t, noise):
        if noise is None:
            raise ValueError("the noise degradation needs its fixed noise draw")
        ab = float(self.schedule.alpha_bar_at(t))
        return math.sqrt(ab) * x0 + math.sqrt(1 - ab) * noise


class Blur(Degradation):
    """Gaussian blur with standard deviation growing linearly to ``sigma_max`` pixels (Bansal et al. sec. 4.1)."""

    name = "blur"

    def __init__(self, T: int, sigma_max: float = 8.0):
        super().__init__(T)
        self.sigma_max = sigma_max

    def apply(self, x0, t, noise):
        sigma = self.sigma_max * self.severity(t)
        h = x0.shape[-1]
        radius = min(int(math.ceil(3 * sigma)), h - 1)
        if radius < 1:
            return x0
        xs = torch.arange(-radius, radius + 1, dtype=x0.dtype, device=x0.device)
        k = torch.exp(-0.5 * (xs / sigma) ** 2)
        k = k / k.sum()
        # separable, as weighted sums of shifted copies rather than conv2d: every pixel's arithmetic is then the
        # same at any batch size (a batched conv2d rounds differently, ~1e-7, which broke the seed contract: image
        # i of a batch was not bit for bit image 0 of seed + i for a blur model)
        hgt, wid = x0.shape[-2:]
        out = F.pad(x0, (radius, radius, 0, 0), mode="reflect")
        out = sum(k[j] * out[..., j:j + wid] for j in range(2 * radius + 1))
        out = F.pad(out, (0, 0, radius, radius), mode="reflect")
        return sum(k[j] * out[..., j:j + hgt, :] for j in range(2 * radius + 1))


class Pixelate(Degradation):
    """Average-pool to a size shrinking geometrically from H to 1 pixel, then nearest-upsample."""

    name = "pixelate"

    def apply(self, x0, t, noise):
        h = x0.shape[-1]
        size = max(1, int(round(h ** (1 - self.severity(t)))))
        if size >= h:
            return x0
        small = F.adaptive_avg_pool2d(x0, size)
        return F.interpolate(small, size=x0.shape[-2:], mode="nearest")


class Mask(Degradation):
    """Masking from the border inward: pixels farther than r(t) from the centre are set to 0 (grey)."""

    name = "mask"

    def apply(self, x0, t, noise):
        h, w = x0.shape[-2:]
        yy, xx = torch.meshgrid(torch.arange(h, device=x0.device), torch.arange(w, device=x0.device), indexing="ij")
        d = torch.maximum((yy - (h - 1) / 2).abs(), (xx - (w - 1) / 2).abs())   # Chebyshev distance
        r = (1 - self.severity(t)) * (max(h, w) / 2)
        keep = (d < r).to(x0.dtype)
        return x0 * keep


def make_degradation(name: str, T: int, schedule: Schedule | None = None) -> Degradation:
    if name == "noise_fixed":
        if schedule is None:
            raise ValueError("noise_fixed needs a schedule")
        return FixedNoise(T, schedule)
    if name == "blur":
        return Blur(T)
    if name == "pixelate":
        return Pixelate(T)
    if name == "mask":
        return Mask(T)
    raise ValueError(f"unknown degradation {name!r}; choose noise_fixed, blur, pixelate or mask")

"""Image-quality measures for evaluation: PSNR, SSIM, sharpness and nearest training neighbours.

All functions take float tensors (N, C, H, W) in [-1, 1] (the package's image range).

* PSNR = 10 log10(MAX^2 / MSE) with MAX = 1 on images mapped to [0, 1].
* SSIM (Wang et al. 2004, eq. 13) with their constants K1 = 0.01, K2 = 0.03, an 11x11 Gaussian window of
  sigma 1.5, averaged over channels and positions ("valid" windows only).
* Sharpness: mean gradient magnitude |grad x| of the [0, 1] image (finite differences); a blurry upscale
  has less of it than the true high-resolution image.
* Memorisation: the nearest training image to each sample by RMS pixel distance; a sample closer than
  ``threshold`` (in [0, 1] units) to a training image counts as a near-copy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _unit(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1) / 2).clamp(0, 1)


def psnr(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB."""
    mse = (_unit(x) - _unit(ref)).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size, dtype=torch.float64) - (size - 1) / 2) ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).float()


def ssim(x: torch.Tensor, ref: torch.Tensor, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM (channels averaged)."""
    a, b = _unit(x).double(), _unit(ref).double()      # float64: var = E[a^2] - mu^2 cancels badly in float32
    c = a.shape[1]
    w = _gaussian_window(size, sigma).double().to(a.device)[None, None].repeat(c, 1, 1, 1)

    def blur(v):
        return F.conv2d(v, w, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1).float()


def sharpness(x: torch.Tensor) -> torch.Tensor:
    """Per-image mean gradient magnitude of the [0, 1] image."""
    u = _unit(x)
    gx = u[..., :, 1:] - u[..., :, :-1]
    gy = u[..., 1:, :] - u[..., :-1, :]
    return (gx[..., :-1, :].pow(2) + gy[..., :, :-1].pow(2)).sqrt().flatten(1).mean(1)


def nearest_neighbours(samples: torch.Tensor, train: torch.Tensor, batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """(index, RMS distance in [0, 1] units) of each sample's nearest training image."""
    s = _unit(samples).flatten(1)
    best_d = torch.full((len(s),), float("inf"))
    best_i = torch.zeros(len(s), dtype=torch.long)
    for start in range(0, len(train), batch):
        t = _unit(train[start:start + batch]).flatten(1)
        d = torch.cdist(s.double(), t.double()).float() / s.shape[1] ** 0.5
        v, i = d.min(1)
        better = v < best_d
        best_d[better], best_i[better] = v[better], i[better] + start
    return best_i, best_d

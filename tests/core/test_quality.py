"""Quality measures against closed forms and known orderings."""
import math

import torch
import torch.nn.functional as F

from diffusion_core.quality import nearest_neighbours, psnr, sharpness, ssim


def test_psnr_closed_form():
    ref = torch.zeros(2, 3, 8, 8)                   # 0.5 grey in [0, 1]
    x = ref + 0.2                                   # +0.1 in [0, 1] units: MSE 0.01 -> 20 dB
    assert torch.allclose(psnr(x, ref), torch.full((2,), 20.0), atol=1e-4)


def test_ssim_identity_and_ordering():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    assert torch.allclose(ssim(ref, ref), torch.ones(4), atol=1e-5)
    mild = (ref + 0.05 * torch.randn(ref.shape, generator=g)).clamp(-1, 1)
    strong = (ref + 0.5 * torch.randn(ref.shape, generator=g)).clamp(-1, 1)
    assert (ssim(strong, ref) < ssim(mild, ref)).all() and (ssim(mild, ref) < 1).all()
    c = torch.full_like(ref, 0.3)                   # constants: SSIM = luminance term only
    mu_a, mu_b = 0.65, 0.5
    want = (2 * mu_a * mu_b + 1e-4) / (mu_a ** 2 + mu_b ** 2 + 1e-4)
    assert math.isclose(float(ssim(c, torch.zeros_like(ref))[0]), want, rel_tol=1e-4)


def test_sharpness_blur_lowers_it():
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    blurred = F.interpolate(F.interpolate(x, size=(8, 8), mode="area"), size=(32, 32), mode="bicubic")
    assert (sharpness(blurred) < sharpness(x)).all()
    assert torch.allclose(sharpness(torch.zeros(1, 1, 8, 8)), torch.zeros(1))


def test_nearest_neighbours_finds_copies():
    train = torch.rand(50, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    samples = torch.cat([train[[7, 31]], torch.zeros(1, 3, 8, 8)])
    idx, dist = nearest_neighbours(samples, train, batch=16)
    assert idx[:2].tolist() == [7, 31] and torch.allclose(dist[:2], torch.zeros(2), atol=1e-6)
    assert dist[2] > 0.05

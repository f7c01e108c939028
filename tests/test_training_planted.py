"""Training-path bugs from issue 36, each against an independent reference written out here:

* the learning-rate warm-up: Adam's first step moves every parameter with a gradient by exactly the step's
  learning rate (m_hat = g, v_hat = g^2, so the update is lr g / (|g| + eps)); with the optimizer's moments
  cleared before each step, every step is a first step and its size reads off the learning rate applied, which
  must follow the linear warm-up lr * min(1, (k + 1) / warmup);
* gradient clipping before the optimizer step: the same first-step closed form with the clipped gradient, and
  the bound it implies, ||update|| <= lr ||g|| / eps <= lr * grad_clip / eps;
* the loss is the mean over the batch: for a network that outputs zeros, mean(eps^2) (Gaussian diffusion with
  the eps target) or mean(|x0|) (cold diffusion's L1), whatever the batch size;
* ``reset_ema``: after a resume with it, the next update copies the weights (the warm-up's first update);
* a horizontal flip flips an image and its conditioning image together;
* super-resolution crops: the low-res condition is cut at the target's offset, and it is the Gaussian
  conditioning augmentation of Ho et al. 2021 (z = sqrt(1 - a^2) up + a noise, noise ~ N(0, I)).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import randomize
from diffusion_core.data import load_data
from diffusion_core.training import Trainer, load_train_config
from diffusion_core.training.objective import diffusion_loss

TINY = ["unet.base_channels=8", "unet.channel_mults=[1,2]", "unet.num_res_blocks=1", "unet.attention_resolutions=[]",
        "unet.dropout=0", "batch_size=4", "checkpoint_every=1000", "sample_every=0", "log_every=1000",
        "sample_steps=2", "sample_images=2", "threads=1"]
ADAM_EPS = 1e-8         # torch.optim.AdamW's default eps


def image_folder(root, n=4, size=8, channels=1, cond=False, seed=0):
    """n random (asymmetric) images in root/imgs, with conditioning images of the same names in root/cond when
    ``cond``. Returns the --set lines for the data."""
    rng = np.random.default_rng(seed)
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    if cond:
        (root / "cond").mkdir(parents=True, exist_ok=True)
    shape = (size, size, channels) if channels == 3 else (size, size)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / "imgs" / f"{i}.png")
        if cond:
            Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(root / "cond" / f"{i}.png")
    sets = ["data.source=folder", f"data.path={root / 'imgs'}", f"data.image_size={size}",
            f"data.channels={channels}", "data.labels=none"]
    return sets + ([f"data.cond_folder={root / 'cond'}"] if cond else [])


def make_trainer(tmp_path, *sets, data=None, **kw) -> Trainer:
    data = image_folder(tmp_path / "data") if data is None else data
    return Trainer(load_train_config(None, TINY + data + [f"out_dir={tmp_path / 'run'}", *sets]), progress=False,
                   workers=1, **kw)


def first_adam_step(tr: Trainer):
    """One train_step of ``tr`` as Adam's first step (moments cleared, step counter at 0): (the parameters
    before, the parameters after, the gradients the step used as left in .grad)."""
    tr.opt.state.clear()
    params = list(tr.net.parameters())
    before = [p.detach().clone() for p in params]
    tr.train_step()
    after = [p.detach().clone() for p in params]
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]
    return before, after, grads


# ---- 1. learning-rate warm-up -----------------------------------------------------------------

def test_learning_rate_warm_up_is_applied_step_by_step(tmp_path):
    """Linear warm-up over W steps: step k (from 0) trains with lr * min(1, (k + 1) / W). Read off the update
    itself: each step here is Adam's first (moments cleared), which moves a parameter with gradient g by
    lr_k * g / (|g| + eps), i.e. by lr_k wherever |g| >> eps (weight decay 0, no clipping)."""
    lr, warmup = 1e-2, 4
    tr = make_trainer(tmp_path, f"lr={lr}", f"warmup={warmup}", "weight_decay=0", "grad_clip=0")
    randomize(tr.net, seed=1).train()           # a zero-initialised output layer would leave most gradients 0
    for k in range(warmup + 3):
        tr.step = k
        before, after, grads = first_adam_step(tr)
        expected = lr * min(1.0, (k + 1) / warmup)
        g = torch.cat([x.flatten() for x in grads])
        moved = torch.cat([(b - a).flatten() for b, a in zip(before, after)])
        big = g.abs() > 1e-4                    # g / (|g| + eps) = sign(g) to 1e-4
        assert big.sum() > 100
        assert torch.allclose(moved[big], expected * torch.sign(g[big]), rtol=2e-4, atol=0), \
            (k, expected, moved[big].abs().median().item())


def test_zero_warm_up_trains_at_the_full_rate_from_the_first_step(tmp_path):
    lr = 3e-3
    tr = make_trainer(tmp_path, f"lr={lr}", "warmup=0", "weight_decay=0", "grad_clip=0")
    randomize(tr.net, seed=1).train()
    before, after, grads = first_adam_step(tr)
    g = torch.cat([x.flatten() for x in grads])
    moved = torch.cat([(b - a).flatten() for b, a in zip(before, after)])
    big = g.abs() > 1e-4
    assert torch.allclose(moved[big], lr * torch.sign(g[big]), rtol=2e-4, atol=0)


# ---- 2. gradient clipping before the step -----------------------------------------------------

@pytest.mark.parametrize("clip", [1e-9, 1e-7])
def test_gradient_clipping_limits_the_applied_update(tmp_path, clip):
    """With grad_clip = c the step uses a gradient of total norm <= c. Adam's first step on gradient g moves each
    parameter by lr g / (|g| + eps) exactly, so the whole update has norm <= lr ||g|| / eps <= lr c / eps. A
    clip after the step leaves .grad clipped but moved every parameter by lr (norm lr sqrt(N))."""
    lr = 1e-2
    tr = make_trainer(tmp_path, f"lr={lr}", "warmup=0", "weight_decay=0", f"grad_clip={clip}")
    randomize(tr.net, seed=2).train()
    before, after, grads = first_adam_step(tr)
    g = torch.cat([x.flatten() for x in grads]).double()
    moved = torch.cat([(b - a).flatten() for b, a in zip(before, after)]).double()
    assert g.norm() <= clip * (1 + 1e-4)                    # what .grad holds was clipped
    assert moved.norm() <= lr * clip / ADAM_EPS * (1 + 1e-3), (moved.norm().item(), lr * clip / ADAM_EPS)
    expected = lr * g / (g.abs() + ADAM_EPS)                # Adam's first step on the clipped gradient
    assert torch.allclose(moved, expected, rtol=1e-3, atol=lr * 1e-5), (moved - expected).abs().max().item()


# ---- 3. the loss is a mean over the batch -----------------------------------------------------

class Zeros(torch.nn.Module):
    def forward(self, x_t, t, cond=None):
        return torch.zeros_like(x_t)


@pytest.mark.parametrize("b", [1, 3, 16])
def test_loss_is_the_batch_mean(tmp_path, b):
    """A network that outputs 0: the eps-target loss is mean(eps^2) over batch and pixels, the same number for any
    batch size (a loss summed over the batch grows with it and would scale the learning rate by b)."""
    tr = make_trainer(tmp_path, "diffusion.prediction=eps", "min_snr_gamma=0", "diffusion.T=100")
    g = torch.Generator().manual_seed(b)
    x0 = torch.rand((b, 1, 8, 8), generator=g) * 2 - 1
    eps = torch.randn((b, 1, 8, 8), generator=g)
    t = torch.randint(0, 100, (b,), generator=g)
    got = diffusion_loss(Zeros(), x0, t, eps, None, cfg=tr.cfg, schedule=tr.schedule, degradation=None,
                         device=torch.device("cpu"))
    assert got.item() == pytest.approx(float((eps.double() ** 2).mean()), rel=1e-5)
    tr.model = Zeros()                  # through the trainer's own loss too
    assert tr.loss(x0, t, eps, None).item() == pytest.approx(float((eps.double() ** 2).mean()), rel=1e-5)


@pytest.mark.parametrize("b", [1, 5])
def test_cold_loss_is_the_batch_mean(tmp_path, b):
    """Cold diffusion's L1 loss (Bansal et al. 2022) of a network that outputs 0 is mean(|x0|)."""
    tr = make_trainer(tmp_path, "diffusion.degradation=blur", "diffusion.prediction=x0", "diffusion.T=20")
    g = torch.Generator().manual_seed(b)
    x0 = torch.rand((b, 1, 8, 8), generator=g) * 2 - 1
    eps = torch.randn((b, 1, 8, 8), generator=g)
    t = torch.randint(0, 20, (b,), generator=g)
    tr.model = Zeros()
    assert tr.loss(x0, t, eps, None).item() == pytest.approx(float(x0.double().abs().mean()), rel=1e-5)

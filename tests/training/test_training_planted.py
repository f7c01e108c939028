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


# ---- 4. --reset-ema -----------------------------------------------------------------------------

def _ema_matches_net(tr: Trainer) -> bool:
    ema = tr.ema.module.state_dict()
    return all(torch.equal(v, ema[k]) for k, v in tr.net.state_dict().items())


def test_reset_ema_restarts_the_average_from_the_current_weights(tmp_path):
    """After a resume with reset_ema the average holds no update (n_averaged = 0), so the next one copies the
    weights (AveragedModel's first update; the warm-up (1 + n) / (10 + n) starts again): after one more step the
    EMA equals the weights exactly. Without it, a 0.999 average of 3 steps is not the weights."""
    sets = ("ema_decay=0.999", "lr=1e-2", "warmup=0")
    make_trainer(tmp_path, "steps=2", *sets).run()
    kept = make_trainer(tmp_path, "steps=3", *sets, resume=True)
    assert kept.step == 2 and int(kept.ema.n_averaged) == 2
    kept.train_step()
    assert not _ema_matches_net(kept)                       # the control: the average is not the weights
    tr = make_trainer(tmp_path, "steps=3", *sets, resume=True, reset_ema=True)
    assert tr.step == 2 and int(tr.ema.n_averaged) == 0     # the state's 2 updates are forgotten
    tr.run()
    assert int(tr.ema.n_averaged) == 1 and _ema_matches_net(tr)
    again = make_trainer(tmp_path, "steps=3", *sets, resume=True)     # and that is what was saved
    assert again.step == 3 and int(again.ema.n_averaged) == 1 and _ema_matches_net(again)


def test_reset_ema_on_the_command_line(tmp_path, run_main):
    """``train --resume --reset-ema``: the saved state's EMA is the weights of its last step, one update."""
    from safetensors.torch import load_file
    data = image_folder(tmp_path / "data")
    out = tmp_path / "run"
    sets = [a for s in TINY + data + ["ema_decay=0.999", "lr=1e-2", "warmup=0"] for a in ("--set", s)]
    assert run_main("train", *sets, "--set", "steps=2", "--out", out, "--no-progress").returncode == 0
    r = run_main("train", *sets, "--set", "steps=3", "--out", out, "--no-progress", "--resume", "--reset-ema")
    assert r.returncode == 0, r.stderr
    state = load_file(str(out / "train_state.safetensors"))
    assert int(state["ema.n_averaged"]) == 1
    model = {k[6:]: v for k, v in state.items() if k.startswith("model.")}
    assert model and all(torch.equal(v, state[f"ema.{k}"]) for k, v in model.items())


# ---- 5. flips ---------------------------------------------------------------------------------

def _as_tensor(a: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) -> (N, C, H, W) in [-1, 1], written out here."""
    return torch.from_numpy(a.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)


@pytest.mark.parametrize("source", ["pose", "folder"])
def test_a_flip_mirrors_the_image_and_its_conditioning_image_together(tmp_path, source):
    """With data.hflip each training row is a pair (image i, conditioning image i) of the data set, both as
    stored or both mirrored left-right: never a mirrored stickman under an unmirrored figure. Both happen."""
    if source == "pose":
        data = ["data.source=pose", "data.pose_pairs=6", "data.image_size=16", "data.channels=3"]
        sets = ["task=pose"]
    else:
        data = image_folder(tmp_path / "data", n=6, cond=True)
        sets = []
    tr = make_trainer(tmp_path, "data.hflip=true", "p_uncond=0", "batch_size=64", *sets, data=data)
    images, conds = _as_tensor(tr.data.images), _as_tensor(tr.data.cond)
    assert not torch.equal(images, images.flip(-1)) and not torch.equal(conds, conds.flip(-1))
    x0, _, _, c = tr.make_batch()
    assert c is not None and c.image is not None and not c.uncond.any()
    seen = set()
    for j in range(x0.shape[0]):
        found = [(i, f) for i in range(len(images)) for f in (False, True)
                 if torch.allclose(x0[j], images[i].flip(-1) if f else images[i], atol=1e-6)]
        assert len(found) == 1, (j, found)                  # one image of the data set, one orientation
        i, f = found[0]
        want = conds[i].flip(-1) if f else conds[i]
        assert torch.allclose(c.image[j], want, atol=1e-6), (j, i, "flipped" if f else "as stored")
        seen.add(f)
    assert seen == {False, True}


# ---- 6, 7. super-resolution crops and noise augmentation ------------------------------------------

def _sr_trainer(tmp_path, *sets):
    """Super-resolution on a data set of one random 16 px RGB image (so every row is that image): the
    trainer and the image as (3, 16, 16) in [-1, 1]."""
    data = image_folder(tmp_path / "data", n=1, size=16, channels=3)
    tr = make_trainer(tmp_path, "task=super_resolution", "low_res=8", *sets, data=data)
    return tr, _as_tensor(tr.data.images)[0]


def _bicubic_of_area(img: torch.Tensor) -> torch.Tensor:
    """The low-res condition of a 16 px image before augmentation: 2x2 block means (area downsampling written
    out), bicubically upsampled back to 16 px and clipped to the image range."""
    low = img.reshape(3, 8, 2, 8, 2).mean(dim=(2, 4))
    return F.interpolate(low[None], size=(16, 16), mode="bicubic", align_corners=False).clamp(-1, 1)[0]


def test_a_super_resolution_crop_cuts_its_condition_at_the_same_place(tmp_path):
    """With crop = 8, each row's target is the 8 px window of the image at some offset (y, x), found here by
    search; its condition must be the same window of the whole image's upsampled low-res version (no noise:
    aug_max = 0). Offsets differ between rows, in both directions."""
    tr, img = _sr_trainer(tmp_path, "crop=8", "aug_max=0", "batch_size=48")
    up = _bicubic_of_area(img)
    x0, _, _, c = tr.make_batch()
    assert x0.shape == (48, 3, 8, 8) and c.image.shape == (48, 3, 8, 8)
    offsets = []
    for j in range(x0.shape[0]):
        at = [(y, x) for y in range(9) for x in range(9) if torch.allclose(x0[j], img[:, y:y + 8, x:x + 8], atol=1e-6)]
        assert len(at) == 1, (j, at)
        y, x = at[0]
        assert torch.allclose(c.image[j], up[:, y:y + 8, x:x + 8], atol=1e-5), (j, y, x)
        offsets.append((y, x))
    assert len({y for y, _ in offsets}) > 3 and len({x for _, x in offsets}) > 3
    assert any(y != x for y, x in offsets)          # a transposed window would be caught


def test_without_crops_the_condition_is_the_whole_upsampled_image(tmp_path):
    tr, img = _sr_trainer(tmp_path, "aug_max=0", "batch_size=4")
    x0, _, _, c = tr.make_batch()
    assert torch.allclose(x0, img.expand(4, -1, -1, -1), atol=1e-6)
    assert torch.allclose(c.image, _bicubic_of_area(img).expand(4, -1, -1, -1), atol=1e-5)


def test_noise_augmentation_formula():
    """Ho et al. 2021 (Cascaded Diffusion Models, sec. 3.2), Gaussian conditioning augmentation as a
    variance-preserving forward process: z = sqrt(1 - a^2) x + a n, per image level a in [0, 1]."""
    from diffusion_core.conditioning import augment_low_res
    g = torch.Generator().manual_seed(0)
    x = torch.rand((4, 3, 5, 6), generator=g) * 2 - 1
    n = torch.randn((4, 3, 5, 6), generator=g)
    levels = [0.0, 0.1, 0.5, 1.0]
    got = augment_low_res(x, torch.tensor(levels), n)
    for i, a in enumerate(levels):
        assert torch.allclose(got[i], math.sqrt(1 - a * a) * x[i] + a * n[i], atol=1e-6), a
    assert torch.allclose(augment_low_res(x, 0.3, n), math.sqrt(1 - 0.09) * x + 0.3 * n, atol=1e-6)


def test_training_conditions_are_noise_augmented_at_their_recorded_level(tmp_path):
    """The training batch's condition at level a (the level the network is told, c.aug_level) is
    sqrt(1 - a^2) up + a n with n ~ N(0, I) independent of up: the residual (z - sqrt(1 - a^2) up) / a over the
    rows with a > 0.3 has mean 0, variance 1 and no correlation with up (a wrong coefficient on up leaves a
    multiple of up in it). The levels are uniform on [0, aug_max)."""
    aug_max = 0.9
    tr, img = _sr_trainer(tmp_path, f"aug_max={aug_max}", "batch_size=400")
    up = _bicubic_of_area(img)
    _, _, _, c = tr.make_batch()
    a = c.aug_level.double()
    assert 0 <= a.min() and a.max() < aug_max and abs(a.mean().item() - aug_max / 2) < 0.05
    rows = a > 0.3
    assert rows.sum() > 150
    a_r = a[rows].view(-1, 1, 1, 1)
    u = up.double().expand(int(rows.sum()), -1, -1, -1)
    res = (c.image[rows].double() - (1 - a_r ** 2).sqrt() * u) / a_r
    assert abs(res.mean().item()) < 0.01 and abs(res.std().item() - 1) < 0.01, (res.mean(), res.std())
    corr = ((res - res.mean()) * (u - u.mean())).mean() / (res.std() * u.std())
    assert abs(corr.item()) < 0.01, corr

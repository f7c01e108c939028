"""The objective, as the papers write it: what one training step draws (``training_batch``) and the loss of
the network's output on it (``diffusion_loss``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..conditioning import Condition, augment_low_res, drop_condition, hide_labels
from ..data import ImageData
from ..denoisers import min_snr_weight, training_target
from .config import TrainConfig


def sample_weights(labels, power: float, mix: float = 1.0) -> torch.Tensor | None:
    """Attribute-balanced sampling of multi-hot ``labels`` (N, L): image i is drawn with probability
    proportional to max over its attributes a of (N / n_a) ** power, n_a the number of images with a (an image
    without attributes: 1), so an image is weighted by its rarest attribute. power 0: uniform (None); 1: every
    attribute's rarest images as likely as the commonest. Rare kinds (cat, a red heart) are then seen often
    enough to be learnt, while the common ones are still seen far more than each rare one.
    ``mix`` < 1 draws only that share balanced and the rest uniformly: the probabilities (1 - mix) / N +
    mix w_i / sum(w), so the data's own label mix stays in the stream (a balanced stream raised FID, and a
    uniform phase after it forgot the rare kinds: docs/models.md)."""
    if power <= 0 or labels is None:
        return None
    present = torch.as_tensor(labels) > 0.5
    n_a = present.sum(dim=0).clamp(min=1).double()
    per_attr = (present.shape[0] / n_a) ** power
    w = torch.where(present, per_attr, torch.zeros_like(per_attr)).amax(dim=1)
    w = torch.where(present.any(dim=1), w, torch.ones_like(w))
    return w if mix >= 1 else (1 - mix) / len(w) + mix * w / w.sum()


def training_batch(cfg: TrainConfig, data: ImageData, g: torch.Generator, t_lo: int, t_hi: int):
    """One batch of the objective's random variables, all from the generator ``g``: x_0 (data, uniformly or
    attribute-balanced (``sample_weights``), flipped at random), t ~ U[t_lo, t_hi), eps ~ N(0, I) and the condition: for super-resolution the downsampled x_0,
    upsampled back and noise-augmented at a random level (Ho et al. 2021), on random crops; else the labels /
    conditioning image, with attributes hidden (partial labels) and the whole condition dropped with
    probability p_uncond (classifier-free guidance, Ho & Salimans 2022). Returns (x0, t, eps, cond)."""
    b = cfg.batch_size
    weights = sample_weights(data.labels, cfg.balance, cfg.balance_mix) if data.multi_label else None
    idx = (torch.randint(len(data), (b,), generator=g) if weights is None
           else torch.multinomial(weights, b, replacement=True, generator=g))
    flip = torch.rand(b, generator=g) < 0.5 if cfg.data.hflip else None
    batch = data.batch(idx, flip)
    x0 = batch["image"]
    cond = None
    if cfg.task == "super_resolution":
        low = F.interpolate(x0, size=(cfg.low_res, cfg.low_res), mode="area")
        up = F.interpolate(low, size=x0.shape[-2:], mode="bicubic", align_corners=False).clamp(-1, 1)
        aug = torch.rand(b, generator=g) * cfg.aug_max
        up = augment_low_res(up, aug, torch.randn(up.shape, generator=g))
        if cfg.crop and cfg.crop < x0.shape[-1]:
            ys = torch.randint(x0.shape[-2] - cfg.crop + 1, (b,), generator=g)
            xs = torch.randint(x0.shape[-1] - cfg.crop + 1, (b,), generator=g)
            x0 = torch.stack([x0[i, :, y:y + cfg.crop, x:x + cfg.crop] for i, (y, x) in enumerate(zip(ys, xs))])
            up = torch.stack([up[i, :, y:y + cfg.crop, x:x + cfg.crop] for i, (y, x) in enumerate(zip(ys, xs))])
        cond = Condition(image=up, aug_level=aug, uncond=torch.zeros(b, dtype=torch.bool))
    else:
        labels = batch.get("labels")
        image = batch.get("cond")
        known = hide_labels(labels, cfg.label_hiding, g) if labels is not None and cfg.unet.label_mask else None
        if labels is not None or image is not None:
            cond = drop_condition(Condition(labels=labels, image=image, uncond=torch.zeros(b, dtype=torch.bool),
                                            known=known), cfg.p_uncond, g)
    t = torch.randint(t_lo, t_hi, (b,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    return x0, t, eps, cond


def diffusion_loss(model, x0, t, eps, cond, *, cfg: TrainConfig, schedule, degradation, device) -> torch.Tensor:
    """The training loss of one batch. Gaussian diffusion: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps
    (DDPM eq. 4, ``Schedule.q_sample``), the network's output regressed on the eps / x0 / v target
    (``denoisers.training_target``, beside ``prediction_from_output``) with the squared error, per image
    weighted by min-SNR-gamma (Hang et al. 2023) when set. Cold diffusion: x_t = D(x_0, t), the output
    regressed on x_0 with an L1 loss (Bansal et al. 2022). bf16 autocast when ``cfg.amp``."""
    d = cfg.diffusion
    dev = device
    x0, t, eps = x0.to(dev), t.to(dev), eps.to(dev)
    cond = cond.to(dev) if cond is not None else None
    if d.is_cold:
        x_t = degradation(x0, t, eps)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.amp):
            out = model(x_t, t, cond)
        return (out.float() - x0).abs().mean()      # Bansal et al. 2022 train with an L1 loss
    x_t = schedule.q_sample(x0, t, eps)                          # DDPM eq. 4
    ab = schedule.alpha_bar_at(t.cpu()).to(dev, torch.float32)
    target = training_target(x0, eps, ab, d.prediction)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.amp):
        out = model(x_t, t, cond)
    per = (out.float() - target).pow(2).mean(dim=(1, 2, 3))
    if cfg.min_snr_gamma > 0:
        per = per * min_snr_weight(ab / (1 - ab), cfg.min_snr_gamma, d.prediction)
    return per.mean()

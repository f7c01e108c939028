"""The training maths against the papers' formulas, written out here independently of the package.

* the forward process and the eps / x0 / v targets (Ho et al. 2020 eq. 4; Salimans & Ho 2022 sec. 4): a
  network that outputs the exact target has zero loss, for every prediction type, at any timestep;
* min-SNR-gamma weighting (Hang et al. 2023): whatever the prediction type, the weighted loss of a network
  whose x0 estimate is off by delta is min(SNR, gamma) * mean(delta^2);
* classifier-free guidance dropout (Ho & Salimans 2022): a fraction p of a large batch is unconditional,
  for labels, conditioning images and both;
* the EMA of the weights, warm-up included, against its closed form;
* training timesteps cover [t_lo, t_hi - 1] exactly and uniformly, for the full range and expert ranges;
* one end-to-end run: a tiny model trained for a few seconds learns a data set whose answer is known.

The schedules are computed here from their definitions (numpy, float64), not with ``diffusion_core``.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion_core import load
from diffusion_core.training import Trainer, load_train_config

TINY = ["unet.base_channels=8", "unet.channel_mults=[1,2]", "unet.num_res_blocks=1", "unet.attention_resolutions=[]",
        "batch_size=4", "checkpoint_every=1000", "sample_every=0", "log_every=1000", "sample_steps=2",
        "sample_images=4", "threads=1"]


def reference_alpha_bar(kind: str, T: int = 1000) -> np.ndarray:
    """alpha_bar_t, t = 0..T-1, from the papers: DDPM's linear betas 1e-4..0.02 (Ho et al. 2020, sec. 4), or the
    cosine schedule f(t) = cos^2(((t/T + s) / (1 + s)) pi/2), beta_t = min(1 - f(t+1)/f(t), 0.999), s = 0.008
    (Nichol & Dhariwal 2021, eq. 17 and the clipping below it); alpha_bar_t = prod_{s <= t} (1 - beta_s)."""
    if kind == "linear":
        betas = np.linspace(1e-4, 0.02, T, dtype=np.float64)
    else:
        f = np.cos(((np.arange(T + 1) / T) + 0.008) / 1.008 * np.pi / 2) ** 2
        betas = np.minimum(1 - f[1:] / f[:-1], 0.999)
    return np.cumprod(1 - betas)


def folder_data(root, n_per_class=6, size=8, labels=True, cond=False):
    """Two classes of tiny grey images ("top": upper half bright, "left": left half bright), optionally paired
    with conditioning images of the same name in ``root/cond``. Returns the --set lines for the data."""
    rng = np.random.default_rng(0)
    imgs = root / "imgs"
    for cls in ("left", "top"):
        (imgs / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            a = np.full((size, size), 30, np.uint8)
            if cls == "top":
                a[: size // 2] = 220
            else:
                a[:, : size // 2] = 220
            a = np.clip(a.astype(int) + rng.integers(-10, 11, a.shape), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(imgs / cls / f"{cls}{i}.png")
            if cond:
                (root / "cond" / cls).mkdir(parents=True, exist_ok=True)
                Image.fromarray(255 - a).save(root / "cond" / cls / f"{cls}{i}.png")
    sets = ["data.source=folder", f"data.path={imgs}", f"data.image_size={size}", "data.channels=1",
            f"data.labels={'subfolder' if labels else 'none'}"]
    return sets + ([f"data.cond_folder={root / 'cond'}"] if cond else [])


def trainer(tmp_path, *sets, labels=True, cond=False) -> Trainer:
    data = folder_data(tmp_path, labels=labels, cond=cond)
    return Trainer(load_train_config(None, TINY + data + [f"out_dir={tmp_path / 'run'}", *sets]), progress=False)


# ---- the objective ----------------------------------------------------------------------------

TIMESTEPS = [0, 1, 2, 17, 250, 500, 731, 900, 998, 999]


class Oracle(torch.nn.Module):
    """A 'network' that knows x0 and eps. It checks that it is handed DDPM's x_t = sqrt(ab) x0 + sqrt(1-ab) eps,
    then answers with the output (eps, x0 or v) whose x0 estimate is x0 + delta (delta = 0: the exact target).
    Outputs follow the papers: eps_hat = (x_t - sqrt(ab) x0_hat) / sqrt(1-ab); v = sqrt(ab) eps - sqrt(1-ab) x0,
    so x0_hat = sqrt(ab) x_t - sqrt(1-ab) v_hat, i.e. v_hat = (sqrt(ab) x_t - x0_hat) / sqrt(1-ab)."""

    def __init__(self, ab: np.ndarray, x0, eps, delta, prediction):
        super().__init__()
        self.ab, self.x0, self.eps, self.delta, self.prediction = ab, x0.double(), eps.double(), delta, prediction

    def forward(self, x_t, t, cond=None):
        ab = torch.from_numpy(self.ab[t.numpy()]).view(-1, 1, 1, 1)
        a, s = ab.sqrt(), (1 - ab).sqrt()
        expected = a * self.x0 + s * self.eps
        assert torch.allclose(x_t.double(), expected, atol=1e-5), "x_t is not DDPM's forward process (eq. 4)"
        if self.delta is None:      # the exact target
            out = {"eps": self.eps, "x0": self.x0, "v": a * self.eps - s * self.x0}[self.prediction]
        else:
            x0_hat = self.x0 + self.delta
            xt = x_t.double()
            out = {"eps": (xt - a * x0_hat) / s, "x0": x0_hat, "v": (a * xt - x0_hat) / s}[self.prediction]
        return out.float()


def _inputs(n, seed=0, shape=(1, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand((n, *shape), generator=g) * 2 - 1
    eps = torch.randn((n, *shape), generator=g)
    delta = 0.1 * torch.randn((n, *shape), generator=g, dtype=torch.float64)
    return x0, eps, delta


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_exact_target_has_zero_loss(tmp_path, kind, prediction):
    tr = trainer(tmp_path, f"diffusion.schedule={kind}", f"diffusion.prediction={prediction}")
    ab = reference_alpha_bar(kind)
    g = torch.Generator().manual_seed(1)
    t = torch.cat([torch.tensor(TIMESTEPS), torch.randint(0, 1000, (22,), generator=g)])
    x0, eps, _ = _inputs(len(t))
    tr.model = Oracle(ab, x0, eps, None, prediction)
    loss = tr.loss(x0, t, eps, None)
    assert loss.item() < 1e-11, loss.item()          # zero up to float32 rounding of the target
    # and not zero when the network is off (the check above is not vacuous)
    tr.model = Oracle(ab, x0, eps, torch.full_like(x0, 0.1, dtype=torch.float64), prediction)
    assert tr.loss(x0, t, eps, None).item() > 1e-4


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("gamma", [0.0, 5.0])
def test_loss_in_terms_of_the_x0_error(tmp_path, kind, prediction, gamma):
    """With x0_hat = x0 + delta, the per-image squared error of each output is a known multiple of
    mean(delta^2): eps: SNR, x0: 1, v: SNR + 1 (since 1 / (1 - ab) = SNR + 1). min-SNR-gamma (Hang et al.
    2023, eq. 9 and sec. 3.4) weights each so that every prediction type's loss is min(SNR, gamma) mean(delta^2).
    Checked image by image (a batch of one), so a weight that is wrong for some SNRs cannot average out."""
    tr = trainer(tmp_path, f"diffusion.schedule={kind}", f"diffusion.prediction={prediction}",
                 f"min_snr_gamma={gamma}")
    ab = reference_alpha_bar(kind)
    t_all = torch.tensor(TIMESTEPS)
    x0, eps, delta = _inputs(len(t_all), seed=2)
    for i, t in enumerate(t_all.tolist()):
        snr = ab[t] / (1 - ab[t])
        mse = float(delta[i].pow(2).mean())
        if gamma > 0:
            expected = min(snr, gamma) * mse
        else:
            expected = {"eps": snr, "x0": 1.0, "v": snr + 1}[prediction] * mse
        tr.model = Oracle(ab, x0[i:i + 1], eps[i:i + 1], delta[i:i + 1], prediction)
        got = tr.loss(x0[i:i + 1], t_all[i:i + 1], eps[i:i + 1], None).item()
        assert got == pytest.approx(expected, rel=2e-3), (t, snr, got, expected)


# ---- guidance dropout -------------------------------------------------------------------------

@pytest.mark.parametrize("labels, cond", [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("p", [0.1, 0.3])
def test_guidance_dropout_rate(tmp_path, labels, cond, p):
    """Each training image's condition is dropped with probability p: in 20,000 draws the fraction is within
    5 binomial standard deviations (0.011 at p = 0.3) of p. The draws are independent of the label."""
    tr = trainer(tmp_path, f"p_uncond={p}", "batch_size=20000", labels=labels, cond=cond)
    _, _, _, c = tr.make_batch()
    assert (c.labels is not None) == labels and (c.image is not None) == cond
    n = c.uncond.numel()
    frac = c.uncond.float().mean().item()
    assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n), frac
    if labels:      # dropped at the same rate in each class
        for k in range(2):
            rows = c.labels[:, k] == 1
            assert abs(c.uncond[rows].float().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / int(rows.sum()))
    tr0 = trainer(tmp_path / "p0", "p_uncond=0", "batch_size=2000", labels=labels, cond=cond)
    assert not tr0.make_batch()[3].uncond.any()


def test_a_dropped_condition_is_the_null_condition(tmp_path):
    """What the network sees for an unconditional row: the labels' embedding is replaced by the null
    embedding and the conditioning image by zeros, i.e. exactly the network called without a condition."""
    tr = trainer(tmp_path, "p_uncond=0.5", "batch_size=64", cond=True)
    x0, t, eps, c = tr.make_batch()
    assert c.uncond.any() and (~c.uncond).any()
    net = tr.net.eval()
    torch.manual_seed(0)
    for p in net.parameters():       # the U-Net zero-initialises its output layers: give it real weights
        p.data.normal_(0, 0.3)
    with torch.no_grad():
        out = net(x0, t, c)
        alone = net(x0, t, None)
    assert torch.allclose(out[c.uncond], alone[c.uncond], atol=1e-5)
    assert not torch.allclose(out[~c.uncond], alone[~c.uncond], atol=1e-3)


# ---- EMA --------------------------------------------------------------------------------------

def test_ema_equals_its_closed_form_with_warmup(tmp_path):
    """The k-th update (k >= 2) uses decay d_k = min(decay, k / (9 + k)) (the warm-up (1 + n) / (10 + n) of n
    earlier updates); the first copies the weights. So after K updates with weights w_1..w_K the average is
    sum_k c_k w_k with c_1 = prod_{j>=2} d_j and c_k = (1 - d_k) prod_{j>k} d_j; the c_k sum to 1."""
    decay, K = 0.6, 25                         # warm-up while k / (9 + k) < 0.6, i.e. k <= 13
    tr = trainer(tmp_path, f"ema_decay={decay}")
    params = [p for p in tr.net.parameters()]
    g = torch.Generator().manual_seed(3)
    history = []
    for _ in range(K):
        w = [torch.randn(p.shape, generator=g) for p in params]
        with torch.no_grad():
            for p, v in zip(params, w):
                p.copy_(v)
        history.append(w)
        tr.ema.update_parameters(tr.net)
    d = [None, None] + [min(decay, k / (9 + k)) for k in range(2, K + 1)]     # d[k], k = 2..K
    assert d[2] < decay and d[13] < decay <= d[14]
    c = [math.prod(d[2:])] + [(1 - d[k]) * math.prod(d[k + 1:]) for k in range(2, K + 1)]
    assert sum(c) == pytest.approx(1.0)
    for i, e in enumerate(tr.ema.module.parameters()):
        expected = sum(ck * history[k][i] for k, ck in enumerate(c))
        assert torch.allclose(e, expected, atol=1e-5), i
    assert int(tr.ema.n_averaged) == K


def test_the_loop_updates_the_ema_once_per_step_and_exports_it(tmp_path):
    tr = trainer(tmp_path, "steps=3", "ema_decay=0.5")
    model = load(tr.run())
    assert int(tr.ema.n_averaged) == 3
    ema = tr.ema.module.state_dict()
    for k, v in model.net.state_dict().items():
        assert torch.allclose(v, ema[k].half().float()), k          # the export holds the EMA, in fp16
    assert any(not torch.equal(v, tr.net.state_dict()[k]) for k, v in ema.items() if v.is_floating_point())


# ---- timesteps --------------------------------------------------------------------------------

@pytest.mark.parametrize("t_range", [None, (0, 20), (20, 50), (7, 8)])
def test_training_timesteps_cover_the_range_uniformly(tmp_path, t_range):
    sets = ["diffusion.T=50", "batch_size=10000"]
    if t_range:
        sets.append(f"diffusion.t_range=[{t_range[0]},{t_range[1]}]")
    lo, hi = t_range or (0, 50)
    t = trainer(tmp_path, *sets).make_batch()[1]
    counts = torch.bincount(t, minlength=50)
    assert counts[:lo].sum() == 0 and counts[hi:].sum() == 0           # nothing outside [t_lo, t_hi - 1]
    expected = len(t) / (hi - lo)
    sd = math.sqrt(expected * (1 - 1 / (hi - lo)))
    assert ((counts[lo:hi] - expected).abs() < 5 * sd + 1).all(), counts[lo:hi]    # every t, evenly


# ---- end to end ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_tiny_model_learns_a_known_answer(tmp_path):
    """Two classes, each one fixed pattern (plus +-10 grey levels of noise): 'top' (upper half bright) and
    'left' (left half bright), 8x8. A 180k-parameter U-Net trained for 250 steps (about 10 s on one core)
    must give, for each class asked, samples whose mean image is within 0.15 (mean absolute difference, on
    the [-1, 1] scale) of that class's mean training image and far (> 0.5) from the other class's."""
    data = folder_data(tmp_path, n_per_class=8)
    cfg = load_train_config(None, data + [
        "unet.base_channels=16", "unet.channel_mults=[1,2]", "unet.num_res_blocks=1", "unet.attention_resolutions=[]",
        "unet.dropout=0", "steps=250", "batch_size=32", "lr=2e-3", "warmup=20", "ema_decay=0.99", "p_uncond=0.1",
        "checkpoint_every=1000", "sample_every=0", "log_every=100", "sample_steps=2", "sample_images=4", "threads=1",
        f"out_dir={tmp_path / 'run'}"])
    pipe = load(Trainer(cfg, progress=False).run())
    means = {}
    for name in ("left", "top"):
        files = sorted((tmp_path / "imgs" / name).glob("*.png"))
        means[name] = torch.tensor(np.stack([np.asarray(Image.open(f), np.float32) for f in files])).mean(0) / 127.5 - 1
    for name, other in (("left", "top"), ("top", "left")):
        x = pipe.sample(16, sampler="ddim", steps=20, labels=[name], guidance=1.0, seed=0)[:, 0]
        err = (x.mean(0) - means[name]).abs().mean().item()
        far = (x.mean(0) - means[other]).abs().mean().item()
        assert err < 0.15 and far > 0.5, (name, err, far)


@pytest.mark.parametrize("amp", [False, True])
def test_amp_runs_the_network_in_bf16_on_the_cpu_and_keeps_fp32_weights(tmp_path, amp):
    """``amp``: bf16 autocast around the network (CPU too), the loss and the master weights in fp32."""
    tr = trainer(tmp_path, f"amp={str(amp).lower()}", "device=cpu")
    seen = []
    hook = tr.net.conv_in.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    x0, eps, _ = _inputs(4)
    loss = tr.loss(x0, torch.tensor([10, 200, 500, 900]), eps, None)
    hook.remove()
    assert seen == [torch.bfloat16 if amp else torch.float32]
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(p.dtype == torch.float32 for p in tr.net.parameters())
    assert tr.net.conv_in.weight.grad.dtype == torch.float32

"""The U-Net's speed-ups change memory layout and operation order, never the function: channels_last vs
NCHW, the fused AdaGN vs its textbook form, the in-place sampling path vs the autograd path. Its attention
and timestep embedding are checked against their definitions, written out in the tests."""
import math

import pytest
import torch
import torch.nn.functional as F

from diffusion_core.conditioning import Condition
from diffusion_core.unet import ResBlock, UNet


def _inputs(cfg, b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, cfg.unet.in_channels, cfg.unet.image_size, cfg.unet.image_size, generator=g)
    t = torch.randint(0, 100, (b,), generator=g)
    labels = F.one_hot(torch.arange(b) % cfg.unet.num_labels, cfg.unet.num_labels).float()
    return x, t, Condition(labels=labels, uncond=torch.tensor([False, True, False])[:b])


def test_channels_last_is_the_default_and_gives_the_nchw_result(tiny_net):
    cfg, net = tiny_net(num_labels=4)
    assert net.channels_last and net.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    x, t, cond = _inputs(cfg)
    with torch.no_grad():
        fast = net(x, t, cond)
        net.set_channels_last(False)
        assert net.conv_in.weight.is_contiguous()
        plain = net(x, t, cond)
    assert fast.is_contiguous() and fast.shape == x.shape
    assert torch.allclose(fast, plain, atol=1e-5, rtol=1e-5), (fast - plain).abs().max()   # up to rounding


def test_state_dict_is_contiguous_and_loads_into_either_layout(tiny_net):
    cfg, net = tiny_net(num_labels=4)
    sd = net.state_dict()
    assert all(v.is_contiguous() for v in sd.values())
    other = UNet(cfg.unet).set_channels_last(False)
    other.load_state_dict(sd)
    x, t, cond = _inputs(cfg)
    with torch.no_grad():
        assert torch.allclose(other.eval()(x, t, cond), net(x, t, cond), atol=1e-5)


def test_sampling_path_equals_autograd_path(tiny_net):
    """Under no_grad the blocks reuse buffers in place; with autograd on they must not. Same numbers."""
    cfg, net = tiny_net(num_labels=4)
    x, t, cond = _inputs(cfg)
    with torch.inference_mode():
        fast = net(x, t, cond)
    slow = net(x, t, cond)
    assert torch.equal(fast, slow.detach())
    slow.square().mean().backward()                     # and the autograd path still differentiates
    assert net.conv_in.weight.grad is not None and torch.isfinite(net.conv_in.weight.grad).all()


def test_fused_adagn_matches_its_textbook_form():
    """ResBlock's AdaGN, GN(h) gamma (1 + s) + beta (1 + s) + shift, equals norm2(h) (1 + s) + shift."""
    torch.manual_seed(0)
    block = ResBlock(8, 16, 32, dropout=0.0).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    x, emb = torch.randn(2, 8, 6, 6), torch.randn(2, 32)
    with torch.no_grad():
        h = block.conv1(F.silu(block.norm1(x)))
        scale, shift = block.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = block.norm2(h) * (1 + scale) + shift
        want = block.skip(x) + block.conv2(F.silu(h))
        got = block(x, emb)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


@pytest.mark.slow
def test_shipped_model_gives_the_images_of_the_code_before_the_speed_ups():
    """tests/data/fashion_dpm20_before_speedups.safetensors was written by the code before any speed-up
    (commit 4ceebcd: NCHW, AdaGN as three ops, nn.Dropout, no row workers) from checkpoints/fashion with 1
    thread. The current code must give the same images up to float rounding (measured here: 4e-4 max;
    the tolerance leaves room for another CPU's kernels)."""
    from pathlib import Path

    import pytest
    from safetensors import safe_open

    from diffusion_core.pipeline import load
    root = Path(__file__).resolve().parents[2]
    if not (root / "checkpoints" / "fashion" / "model.safetensors").is_file():
        pytest.skip("checkpoints/fashion is not present")
    with safe_open(str(root / "tests" / "data" / "fashion_dpm20_before_speedups.safetensors"), "pt") as f:
        before, meta = f.get_tensor("images"), f.metadata()
    assert meta["code"] == "4ceebcd"
    now = load(root / "checkpoints" / "fashion").sample(
        4, sampler="dpm++", steps=20, guidance=2.0, seed=7,
        labels=F.one_hot(torch.tensor([0, 7, 8, 3]), 10).float())
    assert (now - before).abs().max() < 5e-3
    to8 = lambda x: ((x + 1) * 127.5).round()   # noqa: E731
    assert (to8(now) - to8(before)).abs().max() <= 1


# ---- the layers against their definitions, written out here -----------------------------------

def test_attention_is_softmax_of_scaled_dot_products_over_the_keys():
    """Self-attention (Vaswani et al. 2017, eq. 1) over the H*W positions, per head: out = softmax(Q K^T /
    sqrt(d)) V, softmax over the keys; Q, K, V from a 1x1 conv of the group-normed input (channels ordered
    q | k | v, each split into heads), then a 1x1 output projection and the residual. Written with explicit
    loops over heads and query positions, on a non-square input (rows and columns cannot be swapped)."""
    from diffusion_core.unet import Attention
    torch.manual_seed(0)
    ch, heads, b, h, w = 8, 2, 2, 3, 5
    att = Attention(ch, heads)
    for p in att.parameters():
        p.data.normal_(0, 0.5)
    x = torch.randn(b, ch, h, w, dtype=torch.float64)
    att = att.double()
    d = ch // heads
    normed = F.group_norm(x, att.norm.num_groups, att.norm.weight, att.norm.bias, att.norm.eps)
    qkv = torch.einsum("oc,bchw->bohw", att.qkv.weight[:, :, 0, 0], normed) + att.qkv.bias[None, :, None, None]
    q, k, v = (qkv[:, i * ch:(i + 1) * ch].reshape(b, ch, h * w) for i in range(3))    # (B, C, HW)
    out = torch.zeros(b, ch, h * w, dtype=torch.float64)
    for n in range(b):
        for head in range(heads):
            rows = slice(head * d, (head + 1) * d)
            for i in range(h * w):                      # query position i
                scores = torch.stack([(q[n, rows, i] * k[n, rows, j]).sum() for j in range(h * w)]) / math.sqrt(d)
                weights = torch.exp(scores - scores.max())
                weights = weights / weights.sum()       # softmax over the keys j
                out[n, rows, i] = (weights[None, :] * v[n, rows, :]).sum(1)
    proj = torch.einsum("oc,bcn->bon", att.proj.weight[:, :, 0, 0], out) + att.proj.bias[None, :, None]
    expected = x + proj.reshape(b, ch, h, w)
    with torch.no_grad():
        got = att(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(got, expected, atol=1e-10), (got - expected).abs().max()


def _sinusoidal(t: list[int], dim: int) -> torch.Tensor:
    """Sinusoidal embedding (Vaswani et al. 2017, sec. 3.5, as in DDPM): for i < dim/2,
    freq_i = 10000^(-i / (dim/2)); emb(t) = [cos(t freq_0), ..., cos(t freq_{dim/2-1}), sin(t freq_0), ...]."""
    out = torch.zeros(len(t), dim, dtype=torch.float64)
    for r, tv in enumerate(t):
        for i in range(dim // 2):
            freq = 10000.0 ** (-i / (dim // 2))
            out[r, i], out[r, dim // 2 + i] = math.cos(tv * freq), math.sin(tv * freq)
    return out


def test_timestep_embedding_is_its_formula_and_feeds_the_time_mlp(tiny_net):
    """The embedding matches the formula; the U-Net's embedding of an unconditional call is
    time_mlp(emb(t)) with dim = base_channels, plus the null embedding and nothing else."""
    from diffusion_core.unet import timestep_embedding
    t = [0, 1, 7, 250, 999]
    for dim in (8, 16, 64):
        got = timestep_embedding(torch.tensor(t), dim).double()
        assert torch.allclose(got, _sinusoidal(t, dim), atol=2e-4), dim      # float32 rounding of t * freq
    cfg, net = tiny_net(num_labels=3)
    with torch.no_grad():
        mlp = net.time_mlp(_sinusoidal(t, cfg.unet.base_channels).float())
        emb = net.embed(torch.tensor(t), None, len(t))
    assert torch.allclose(emb, mlp + net.null_emb, atol=1e-4)

"""The U-Net (Ronneberger et al. 2015, as used by Ho et al. 2020 and Dhariwal & Nichol 2021).

* time t enters through a sinusoidal embedding (Vaswani et al. 2017) and an MLP;
* labels (one-/multi-hot) are projected and added to that embedding; the null condition has its own
  learned embedding; with ``label_mask`` the ``known`` mask is projected too (partial attribute sets); every residual block reads the embedding through adaptive group norm
  (scale-and-shift, Dhariwal & Nichol 2021 sec. 3);
* a conditioning image (stickman drawing, or an upsampled low-res image for super-resolution) is
  concatenated to x_t as extra input channels (Saharia et al. 2021, SR3);
* self-attention at chosen resolutions, softmax over keys (``scaled_dot_product_attention``).

Input x_t: (B, in_channels, H, W), H and W divisible by 2**(len(channel_mults)-1). Output: same shape
with ``out_channels``.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from .conditioning import Condition, resize_cond_image
from .config import UNetConfig

GUIDANCE_EMBED_SCALE = 100.0   # w enters the sinusoidal embedding as 100 w: w in [0, 10] spans t's range [0, 1000]


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (B,) timesteps (float or int) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def _norm(ch: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least 4 channels each."""
    groups = math.gcd(ch, 32)
    while groups > 1 and ch // groups < 4:
        groups //= 2
    return nn.GroupNorm(groups, ch)


def dropout_mask(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The scaled keep-mask of inverted dropout (Srivastava et al. 2014): 1/(1-p) where kept, 0 where dropped.

    ``F.dropout`` draws one float Bernoulli per element, a third of a training step's time on CPU. Here one
    64-bit draw from the generator serves four elements: each keeps its element when its 15 random bits
    are >= round(p 2^15) (the lane's 16th bit is not random in the top lane, so it is masked off). p is
    rounded to a multiple of 2^-15 (0.1 -> 0.100006) and the scale uses the rounded p, so E[mask] = 1.
    The mask has x's memory layout (channels_last stays channels_last). ``generator``: None = torch's global one."""
    cut = round(p * 2 ** 15)
    n = x.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(generator=generator)
    bits = bits.view(torch.int16)[:n]
    mask = (bits & 0x7FFF).ge_(cut).to(x.dtype).mul_(2 ** 15 / (2 ** 15 - cut))
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        b, c, h, w = x.shape
        return mask.view(b, h, w, c).permute(0, 3, 1, 2)
    return mask.view(x.shape)


# The dropout masks' generator of the current thread of work (None: torch's global one). Set with ``dropout_seeded``
# by whoever runs the training step: one seeded stream per row worker (runtime/parallel.py), so which thread
# draws first changes no mask, and torch's global generator is left to the user.
DROPOUT_GENERATOR: ContextVar[torch.Generator | None] = ContextVar("diffusion_core_dropout_generator", default=None)


@contextmanager
def dropout_seeded(seed: int, device="cpu"):
    """Dropout masks drawn inside this block come from a generator on ``device`` seeded with ``seed``."""
    token = DROPOUT_GENERATOR.set(torch.Generator(device=device).manual_seed(int(seed)))
    try:
        yield
    finally:
        DROPOUT_GENERATOR.reset(token)


class Dropout(nn.Module):
    """Inverted dropout with ``dropout_mask`` (identity in eval mode or at p = 0); same role as ``nn.Dropout``."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * dropout_mask(x, self.p, DROPOUT_GENERATOR.get())

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)     # AdaGN scale and shift
        self.norm2 = _norm(cout)
        self.dropout = Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        inplace = not torch.is_grad_enabled()      # sampling: no autograd, reuse fresh buffers
        h = self.conv1(F.silu(self.norm1(x), inplace=inplace))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        # AdaGN: norm2(h) (1 + scale) + shift, with the norm's own affine (gamma, beta) folded into the
        # per-sample scale and shift: GN(h) gamma (1 + s) + beta (1 + s) + shift, one pass over h
        gamma, beta = self.norm2.weight[:, None, None], self.norm2.bias[:, None, None]
        h = torch.addcmul(torch.addcmul(shift, beta, 1 + scale), F.group_norm(h, self.norm2.num_groups,
                                                                              eps=self.norm2.eps),
                          gamma * (1 + scale))
        h = self.conv2(self.dropout(F.silu(h, inplace=inplace)))
        return h.add_(self.skip(x)) if inplace else self.skip(x) + h


class Attention(nn.Module):
    def __init__(self, ch: int, heads: int):
        super().__init__()
        self.heads = heads if ch % heads == 0 else 1
        self.norm = _norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # tokens (B, HW, 3C): free for a channels_last x_t, one copy otherwise
        qkv = self.qkv(self.norm(x)).permute(0, 2, 3, 1).reshape(b, h * w, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)          # each (B, heads, HW, d)
        out = F.scaled_dot_product_attention(q, k, v)          # softmax(q k^T / sqrt(d)) over the keys
        out = out.transpose(1, 2).reshape(b, h, w, c).permute(0, 3, 1, 2)   # (B, C, H, W), channels_last
        return x + self.proj(out)


def _contiguous_state(module, state_dict, prefix, local_metadata) -> None:
    """state_dict() hands out standard (contiguous) tensors whatever the runtime memory layout."""
    for k, v in state_dict.items():
        if k.startswith(prefix) and torch.is_tensor(v) and not v.is_contiguous():
            state_dict[k] = v.contiguous()


class UNet(nn.Module):
    def __init__(self, cfg: UNetConfig, channels_last: bool = True):
        """``channels_last``: the memory layout (``set_channels_last``; a runtime choice, not part of the config)."""
        super().__init__()
        self.cfg = cfg
        ch = cfg.base_channels
        emb_dim = 4 * ch
        self.emb_dim = emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_proj = nn.Linear(cfg.num_labels, emb_dim, bias=False) if cfg.num_labels else None
        # label_mask: W [labels * known; known] as two projections, the second zero at initialisation, so a
        # network grown from one without the mask (``load_parent_state``) starts with its exact outputs
        self.known_proj = nn.Linear(cfg.num_labels, emb_dim, bias=False) if cfg.label_mask else None
        if self.known_proj is not None:
            nn.init.zeros_(self.known_proj.weight)
        self.null_emb = nn.Parameter(torch.zeros(emb_dim)) if (cfg.num_labels or cfg.cond_channels) else None
        self.aug_mlp = (nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
                        if cfg.aug_level_embedding else None)
        self.conv_in = nn.Conv2d(cfg.in_channels + cfg.cond_channels, ch, 3, padding=1)

        self.down = nn.ModuleList()
        chans = [ch]
        cur, res = ch, cfg.image_size
        for level, mult in enumerate(cfg.channel_mults):
            for _ in range(cfg.num_res_blocks):
                block = nn.ModuleList([ResBlock(cur, ch * mult, emb_dim, cfg.dropout)])
                cur = ch * mult
                if res in cfg.attention_resolutions:
                    block.append(Attention(cur, cfg.num_heads))
                self.down.append(block)
                chans.append(cur)
            if level != len(cfg.channel_mults) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(cur, cur, 3, stride=2, padding=1)]))
                chans.append(cur)
                res //= 2
        self.mid = nn.ModuleList([ResBlock(cur, cur, emb_dim, cfg.dropout), Attention(cur, cfg.num_heads),
                                  ResBlock(cur, cur, emb_dim, cfg.dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mults))):
            for i in range(cfg.num_res_blocks + 1):
                block = nn.ModuleList([ResBlock(cur + chans.pop(), ch * mult, emb_dim, cfg.dropout)])
                cur = ch * mult
                if res in cfg.attention_resolutions:
                    block.append(Attention(cur, cfg.num_heads))
                if level != 0 and i == cfg.num_res_blocks:
                    block.append(nn.Upsample(scale_factor=2, mode="nearest"))
                    block.append(nn.Conv2d(cur, cur, 3, padding=1))
                    res *= 2
                self.up.append(block)
        self.norm_out = _norm(cur)
        self.conv_out = nn.Conv2d(cur, cfg.out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        # guided distillation (Meng et al. 2023): w enters like t, a sinusoidal embedding and an MLP added to the time
        # embedding; its last layer starts at zero, so a student grown from its teacher (``load_parent_state``) starts
        # with the teacher's exact outputs. Built last, so every other layer is initialised as without it.
        self.guidance_mlp = (nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
                             if cfg.guidance_embedding else None)
        if self.guidance_mlp is not None:
            nn.init.zeros_(self.guidance_mlp[2].weight)
            nn.init.zeros_(self.guidance_mlp[2].bias)
        self.set_channels_last(channels_last)
        self.register_state_dict_post_hook(_contiguous_state)

    def set_channels_last(self, on: bool = True) -> "UNet":
        """Keep conv weights and activations in channels_last (NHWC) memory, where oneDNN's CPU
        convolutions are about 1.4x faster than in NCHW (docs/performance.md). Only the memory layout
        changes, not the values; weights are saved contiguous. A runtime choice, not part of the config."""
        self.channels_last = bool(on)
        return self.to(memory_format=torch.channels_last if on else torch.contiguous_format)

    def embed(self, t: torch.Tensor, cond: Condition | None, batch: int) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.cfg.base_channels))
        if self.null_emb is not None:
            uncond = cond.uncond if cond is not None and cond.uncond is not None else None
            if self.label_proj is not None:
                labels = cond.labels if cond is not None and cond.labels is not None else None
                if labels is None:
                    uncond = torch.ones(batch, dtype=torch.bool, device=t.device)
                    label_emb = 0.0
                else:
                    label_emb = self.label_embedding(labels.to(emb.dtype), cond.known)
            else:
                label_emb = 0.0
            if uncond is None:
                uncond = torch.zeros(batch, dtype=torch.bool, device=t.device)
            emb = emb + torch.where(uncond[:, None], self.null_emb[None].expand(batch, -1),
                                    label_emb if torch.is_tensor(label_emb) else torch.zeros_like(emb))
        if self.aug_mlp is not None:
            aug = cond.aug_level if cond is not None and cond.aug_level is not None else torch.zeros(batch, device=t.device)
            emb = emb + self.aug_mlp(timestep_embedding(aug * 1000, self.cfg.base_channels))
        if self.guidance_mlp is not None:
            w = cond.guidance if cond is not None and cond.guidance is not None else torch.ones(batch, device=t.device)
            emb = emb + self.guidance_mlp(timestep_embedding(w * GUIDANCE_EMBED_SCALE, self.cfg.base_channels))
        return emb

    def label_embedding(self, labels: torch.Tensor, known: torch.Tensor | None) -> torch.Tensor:
        """(B, emb_dim) from labels (B, L) in {0, 1} and the known mask (B, L) in {0, 1} (None: all known).
        With ``label_mask``: W_l (labels * known) + W_k known, so an unknown attribute adds nothing, a known
        absent one adds its column of W_k, a known present one both columns. Without it, the mask cannot be
        expressed: an unknown attribute reads as absent (labels * known)."""
        if known is None:
            known = torch.ones_like(labels) if self.known_proj is not None else None
        else:
            known = known.to(labels.dtype)
            labels = labels * known
        emb = self.label_proj(labels)
        return emb if self.known_proj is None else emb + self.known_proj(known)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        """x: (B, in_channels, H, W); t: (B,) timesteps; cond: labels / image / uncond mask."""
        b = x.shape[0]
        emb = self.embed(t, cond, b)
        if self.cfg.cond_channels:
            if cond is None or cond.image is None:
                img = torch.zeros(b, self.cfg.cond_channels, *x.shape[-2:], dtype=x.dtype, device=x.device)
            else:
                img = resize_cond_image(cond.image.to(x.dtype), x.shape[-2:])
                if cond.uncond is not None and cond.aug_level is None:
                    img = img * (~cond.uncond).to(x.dtype)[:, None, None, None]
            x = torch.cat([x, img], dim=1)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h = self.conv_in(x)
        hs = [h]
        for block in self.down:
            for layer in block:
                h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        for block in self.up:
            h = torch.cat([h, hs.pop()], dim=1)
            for layer in block:
                h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return self.conv_out(F.silu(self.norm_out(h))).contiguous()


def load_parent_state(net: UNet, parent_cfg: UNetConfig, state: dict[str, torch.Tensor]) -> None:
    """Initialise ``net`` from a parent network's weights. The configs must be equal except that ``net`` may
    add ``label_mask`` or ``guidance_embedding`` to a parent without them: every parent tensor is copied and
    ``known_proj`` and the last layer of ``guidance_mlp`` keep their zero initialisation, so on fully known labels
    ``net`` computes exactly the parent's output (W_k 1 = 0; the guidance embedding adds 0)."""
    added = {name: prefix for name, prefix in (("label_mask", "known_proj."), ("guidance_embedding", "guidance_mlp."))
             if getattr(net.cfg, name) and not getattr(parent_cfg, name)}
    if parent_cfg != replace(net.cfg, **{name: False for name in added}):
        raise ValueError("parent network config differs from this run's (only adding unet.label_mask or "
                         "unet.guidance_embedding is allowed)")
    new = {k for k in net.state_dict() if k.startswith(tuple(added.values()))}
    expected = set(net.state_dict())
    if set(state) != expected - new:
        raise ValueError(f"parent weights do not match its config (missing: {sorted(expected - new - set(state))[:3]}; "
                         f"unexpected: {sorted(set(state) - expected)[:3]})")
    net.load_state_dict({**net.state_dict(), **state})


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def network_cost(cfg: UNetConfig, side: int | tuple[int, int]) -> tuple[float, float]:
    """(FLOPs, bytes) of one forward pass of the U-Net of ``cfg`` on one ``side`` x ``side`` image (``side`` may be
    (H, W)), estimated from the config alone (nothing is built): FLOPs of the convolutions and attention (a
    multiply-add counts 2; norms and the embedding MLPs left out), and float32 activation memory: the skip
    connections the up path keeps, plus the largest layer's input, output and attention scores (heads x
    tokens^2). It walks the layers in the order ``UNet.__init__`` builds them; tests/core/test_hostile_round3.py checks
    it against torch's flop counter."""
    ch, res = cfg.base_channels, cfg.image_size
    h, w = (side, side) if isinstance(side, int) else side
    flops, skips, peak = 0.0, 0.0, 0.0

    def layer(cin: int, cout: int, k: int, hw: int, scores: float = 0.0) -> None:
        nonlocal flops, peak
        flops += 2.0 * k * k * cin * cout * hw
        peak = max(peak, (cin + cout) * hw + scores)

    def res_block(cin: int, cout: int, hw: int) -> None:
        layer(cin, cout, 3, hw)
        layer(cout, cout, 3, hw)
        if cin != cout:
            layer(cin, cout, 1, hw)

    def attention(c: int, hw: int) -> None:
        nonlocal flops
        heads = cfg.num_heads if c % cfg.num_heads == 0 else 1
        layer(c, 3 * c, 1, hw, scores=heads * float(hw) ** 2)
        layer(c, c, 1, hw)
        flops += 4.0 * hw * hw * c          # q k^T and the weighted sum of v

    layer(cfg.in_channels + cfg.cond_channels, ch, 3, h * w)
    chans, cur = [ch], ch
    skips += ch * h * w
    for level, mult in enumerate(cfg.channel_mults):
        for _ in range(cfg.num_res_blocks):
            res_block(cur, ch * mult, h * w)
            cur = ch * mult
            if res in cfg.attention_resolutions:
                attention(cur, h * w)
            chans.append(cur)
            skips += cur * h * w
        if level != len(cfg.channel_mults) - 1:
            h, w, res = -(-h // 2), -(-w // 2), res // 2
            layer(cur, cur, 3, h * w)
            chans.append(cur)
            skips += cur * h * w
    res_block(cur, cur, h * w)
    attention(cur, h * w)
    res_block(cur, cur, h * w)
    for level, mult in reversed(list(enumerate(cfg.channel_mults))):
        for i in range(cfg.num_res_blocks + 1):
            res_block(cur + chans.pop(), ch * mult, h * w)
            cur = ch * mult
            if res in cfg.attention_resolutions:
                attention(cur, h * w)
            if level != 0 and i == cfg.num_res_blocks:
                h, w, res = h * 2, w * 2, res * 2
                layer(cur, cur, 3, h * w)
    layer(cur, cfg.out_channels, 3, h * w)
    return flops, 4.0 * (skips + peak)

"""Shared fixtures for the diffusion_core tests: offline, single-threaded, tiny networks."""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"
# the networks run as fp32 eager, the reference, unless a test names a backend: "auto" would measure this CPU and
# could pick bf16, changing outputs that tests compare bit for bit
os.environ.setdefault("DIFFUSION_CORE_BACKEND", "fp32")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)   # tiny tensors: threads only add overhead (and another job may be training)

from diffusion_core import DiffusionConfig, ModelConfig, UNet, UNetConfig, save_model  # noqa: E402

TINY_UNET = dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(4,),
                 num_heads=1, dropout=0.0, image_size=8)


def randomize(net: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> torch.nn.Module:
    """Overwrite every parameter with N(0, scale^2): the U-Net zero-initialises its output layers, so a
    fresh one predicts exactly 0 and would hide mistakes in checkpoint and pipeline tests."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return net.eval()


def tiny_config(unet: dict | None = None, diffusion: dict | None = None, **model) -> ModelConfig:
    return ModelConfig(unet=UNetConfig(**{**TINY_UNET, **(unet or {})}),
                       diffusion=DiffusionConfig(**{"schedule": "linear", "T": 100, **(diffusion or {})}), **model)


@pytest.fixture
def tiny_net():
    """tiny_net(seed=0, **UNetConfig overrides) -> (ModelConfig, U-Net with random weights, in eval mode)."""
    def make(seed=0, **unet):
        cfg = tiny_config(unet)
        return cfg, randomize(UNet(cfg.unet), seed)
    return make


@pytest.fixture
def make_model():
    """make_model(folder, unet={...}, diffusion={...}, seed=0, half=True, **ModelConfig fields) -> (cfg, net):
    a tiny U-Net with random weights saved as a model folder; ``net`` holds exactly the saved weights."""
    def make(folder, *, unet=None, diffusion=None, seed=0, half=True, **model):
        cfg = tiny_config(unet, diffusion, **model)
        net = randomize(UNet(cfg.unet), seed)
        if half:    # the folder stores fp16; round the reference net the same way
            with torch.no_grad():
                for p in net.parameters():
                    p.copy_(p.half().float())
        save_model(folder, cfg, net.state_dict(), half=half)
        return cfg, net
    return make

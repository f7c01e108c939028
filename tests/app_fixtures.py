"""Tiny random-weight checkpoints for the app's tests (built with the package's public API).

``build_checkpoints(root)`` writes, in well under a second:

* ``tiny``          10-class single-label model (Fashion-MNIST-like names), 1 channel, 16 px, with
                    training.json / metrics.json / samples.png beside it
* ``tiny-linear``   ``tiny`` with a linear noise schedule (same U-Net config and labels: a "schedules" pair)
* ``tiny-attr``     multi-label model with 4 attributes, RGB, 16 px
* ``tiny-sr``       super-resolution model 8 -> 16 px (noise-augmentation embedding)
* ``tiny-cascade``  cascade: ../tiny then ../tiny-sr (aug_level 0.1)
* ``tiny-pose``     stickman -> RGB figure model (cond_channels 1)
* ``tiny-ensemble`` two experts splitting [0, 1000)
* ``tiny-cold``     cold-diffusion (blur) model with a stored prior

Weights are random; the zero-initialised output layers are perturbed so outputs are not constant.
"""
from __future__ import annotations

import pytest

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from diffusion_core import (DiffusionConfig, ModelConfig, UNet, UNetConfig, save_cascade, save_ensemble,  # noqa: E402
                            save_model)

FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot")
ATTRS = ("red", "round", "smiling", "animal")


def tiny_unet(**kw) -> UNetConfig:
    base = dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(), image_size=16,
                dropout=0.0)
    base.update(kw)
    return UNetConfig(**base)


def _weights(cfg: UNetConfig, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():        # the network's own initialisation seeded too: same weights every run
        torch.manual_seed(seed)
        net = UNet(cfg)
    sd = net.state_dict()
    for k, v in sd.items():
        if v.is_floating_point():
            sd[k] = v + torch.randn(v.shape, generator=g) * 0.02
    return sd


def _model(folder: Path, cfg: ModelConfig, seed: int, extra=None) -> Path:
    return save_model(folder, cfg, _weights(cfg.unet, seed), extra=extra)


def build_checkpoints(root) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)

    tiny = ModelConfig(unet=tiny_unet(num_labels=10), label_names=FASHION_NAMES,
                       description="tiny class-conditional test model (random weights)")
    _model(root / "tiny", tiny, 1)
    (root / "tiny" / "training.json").write_text(json.dumps(
        {"command": "python -m diffusion_core train --config tiny.json", "steps": 12, "wall_time_s": 3.5,
         "data": "Fashion-MNIST (test fixture)", "processes": 1}))
    (root / "tiny" / "metrics.json").write_text(json.dumps({"fid": 123.4, "loss": {"val": 0.05}}))
    from PIL import Image
    Image.new("L", (36, 36), 200).save(root / "tiny" / "samples.png")

    linear = ModelConfig(unet=tiny_unet(num_labels=10), label_names=FASHION_NAMES,
                         diffusion=DiffusionConfig(schedule="linear"),
                         description="tiny class-conditional test model, linear schedule (random weights)")
    _model(root / "tiny-linear", linear, 7)

    attr = ModelConfig(unet=tiny_unet(num_labels=len(ATTRS), in_channels=3, out_channels=3), label_names=ATTRS,
                       multi_label=True, description="tiny multi-label RGB test model")
    _model(root / "tiny-attr", attr, 2)

    sr = ModelConfig(unet=tiny_unet(cond_channels=1, aug_level_embedding=True), task="super_resolution", low_res=8,
                     description="tiny super-resolution test model 8 -> 16")
    _model(root / "tiny-sr", sr, 3)

    (root / "tiny-cascade").mkdir(exist_ok=True)
    save_cascade(root / "tiny-cascade", [{"path": "../tiny"}, {"path": "../tiny-sr", "aug_level": 0.1, "steps": 3}],
                 description="tiny cascade: tiny then tiny-sr")

    pose = ModelConfig(unet=tiny_unet(cond_channels=1, in_channels=3, out_channels=3), task="pose",
                       description="tiny stickman -> figure test model")
    _model(root / "tiny-pose", pose, 4)

    ens = root / "tiny-ensemble"
    for i, (lo, hi) in enumerate([(0, 500), (500, 1000)]):
        cfg = ModelConfig(unet=tiny_unet(), diffusion=DiffusionConfig(t_range=(lo, hi)),
                          description=f"expert {i}")
        _model(ens / f"expert{i}", cfg, 10 + i)
    save_ensemble(ens, [("expert0", 0, 500), ("expert1", 500, 1000)], T=1000, description="tiny two-expert ensemble")

    cold = ModelConfig(unet=tiny_unet(), diffusion=DiffusionConfig(degradation="blur", prediction="x0"),
                       description="tiny cold (blur) test model")
    prior = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1
    _model(root / "tiny-cold", cold, 6, extra={"prior": prior})
    return root


def add_students(root) -> Path:
    """Two tiny progressive-distillation students beside ``build_checkpoints``' models: ``tiny-4step`` (teacher
    tiny) and ``tiny-1step`` (teacher tiny-4step), guidance an input of the network, v prediction."""
    from diffusion_core.config import Distilled, SamplingDefaults
    root = Path(root)
    for name, teacher, steps, seed in (("tiny-4step", "checkpoints/tiny", 4, 21),
                                       ("tiny-1step", "checkpoints/tiny-4step", 1, 22)):
        cfg = ModelConfig(unet=tiny_unet(num_labels=10, guidance_embedding=True), label_names=FASHION_NAMES,
                          diffusion=DiffusionConfig(prediction="v"), sampling=SamplingDefaults("progressive", steps),
                          distilled=Distilled(teacher, "progressive", steps, (1.0, 4.0)),
                          description=f"tiny {steps}-step student")
        _model(root / name, cfg, seed)
    return root


def start_app_process(env: dict, log=None):
    """``python app.py`` in its own process with ``env`` (GRADIO_SERVER_PORT set), its output to ``log`` (an open
    file) or discarded; returns (process, url) once the page answers. A process that exits first, or a page that
    does not answer within 120 s, fails the test. The app's own starter (``diffusion_app.process``), which the
    benchmarks use too; imported here when called, so that the core's tests do not import Gradio."""
    from diffusion_app.process import start_server
    return start_server(env, log, timeout_s=120)


def free_port() -> int:
    from diffusion_app.process import free_port as free
    return free()


def launch_app(checkpoints_dir) -> tuple[object, str]:
    """Build the app on ``checkpoints_dir`` and serve it in this process on a free port: (demo, url)."""
    import diffusion_app as app
    demo = app.build_demo(str(checkpoints_dir))
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, **app.LAUNCH_KW)
    return demo, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def server(app_server):
    """The app on tiny checkpoints, one for the session (conftest.app_server): (url, checkpoints folder)."""
    return app_server


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client
    return Client(server[0], verbose=False)


if __name__ == "__main__":
    print(build_checkpoints(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny-checkpoints"))

"""Upscale picks the super-resolution model trained on the input's size (issue 40): a 128 px pose figure goes
through pose-sr256 (128 -> 256), not the cascade's last stage pose-sr128 (64 -> 128). Tiny random models here:
tiny-sr (8 -> 16) and tiny-sr32 (16 -> 32) of one family."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app_fixtures import _model, build_checkpoints, tiny_unet
from diffusion_core import ModelConfig


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = build_checkpoints(tmp_path_factory.mktemp("upscale-sizes"))
    sr32 = ModelConfig(unet=tiny_unet(cond_channels=1, aug_level_embedding=True, image_size=32),
                       task="super_resolution", low_res=16, description="tiny super-resolution 16 -> 32")
    _model(root / "tiny-sr32", sr32, 31)
    from diffusion_app.application import DiffusionApp
    return DiffusionApp(root)


def image(tmp_path, side: int) -> str:
    p = tmp_path / f"in{side}.png"
    Image.fromarray(np.random.default_rng(side).integers(0, 256, (side, side), dtype=np.uint8)).save(p)
    return str(p)


@pytest.mark.parametrize("model", ["tiny", "tiny-cascade"])
@pytest.mark.parametrize("side,sr,out", [(8, "tiny-sr", 16), (16, "tiny-sr32", 32)])
def test_upscale_uses_the_model_trained_on_the_inputs_size(app, tmp_path, model, side, sr, out):
    (before, after), path, note = app.upscale(model, image(tmp_path, side), 2, 0)
    assert Image.open(path).size == (out, out)
    expect = {"tiny-sr": "tiny-cascade" if model == "tiny-cascade" else "tiny-sr"}.get(sr, sr)
    assert note.startswith(f"{side} px → {out} px with {expect} ("), note


def test_a_size_no_model_was_trained_on_keeps_the_models_own_upscaler(app, tmp_path):
    _, path, note = app.upscale("tiny", image(tmp_path, 12), 2, 0)
    assert note.startswith("12 px → 24 px with tiny-sr ("), note


def test_another_familys_model_is_not_taken_for_the_size(tmp_path):
    root = build_checkpoints(tmp_path / "cp")
    sr32 = ModelConfig(unet=tiny_unet(cond_channels=1, aug_level_embedding=True, image_size=32),
                       task="super_resolution", low_res=16, description="an emoji-trained 16 -> 32 model")
    _model(root / "other-sr32", sr32, 32)
    (root / "other-sr32" / "train_config.json").write_text('{"data": {"source": "emoji"}}')
    (root / "tiny-sr" / "train_config.json").write_text('{"data": {"source": "pose"}}')
    from diffusion_app.application import DiffusionApp
    _, path, note = DiffusionApp(root).upscale("tiny", image(tmp_path, 16), 2, 0)
    assert note.startswith("16 px → 32 px with tiny-sr ("), note


def test_a_three_stage_cascade_streams_each_stage_by_name_in_order(app):
    """Issue 40: the app streams every stage of a cascade by name (pose-cascade-256 has four); here tiny (16 px),
    tiny-sr (8 -> 16, run on the base's downsampled output) and tiny-sr32 (16 -> 32)."""
    import re

    from diffusion_core import save_cascade
    root = app.models.root
    save_cascade(root / "tiny-cascade3", [{"path": "../tiny"}, {"path": "../tiny-sr", "aug_level": 0.1, "steps": 2},
                                          {"path": "../tiny-sr32", "aug_level": 0.1, "steps": 2}],
                 description="tiny three-stage cascade")
    seen = []
    for out in app.generate("tiny-cascade3", sampler="ddim", steps=3, seed=0, batch_size=1, preview_every=1):
        m = re.search(r"stage (\d)/3 \((base|super-resolution): ([\w-]+)", str(out[1]))
        if m and (not seen or seen[-1] != m.groups()):
            seen.append(m.groups())
    assert seen == [("1", "base", "tiny"), ("2", "super-resolution", "tiny-sr"), ("3", "super-resolution", "tiny-sr32")]
    assert "Done" in str(out[1])

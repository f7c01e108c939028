"""Live mode and the distillation lesson (issue 38): a student's images follow the sliders; the blend's ends are
Generate's images; the lesson puts teacher and students on the same noise. Tiny random students, in process."""
from __future__ import annotations

import base64
import io
import math

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

from app_fixtures import add_students, build_checkpoints
from diffusion_core import grid


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = add_students(build_checkpoints(tmp_path_factory.mktemp("live")))
    from diffusion_app.application import DiffusionApp
    return DiffusionApp(root)


def slerp_reference(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """Shoemake's slerp written out: sin((1-a) theta)/sin theta * a + sin(a theta)/sin theta * b."""
    a64, b64 = a.double().flatten(), b.double().flatten()
    theta = math.acos(float(a64 @ b64 / (a64.norm() * b64.norm())))
    out = (math.sin((1 - alpha) * theta) * a64 + math.sin(alpha * theta) * b64) / math.sin(theta)
    return out.reshape(a.shape).float()


def test_live_blend_ends_are_the_generate_images_and_its_middle_is_each_images_slerp(app):
    pipe = app.models.get("tiny-4step")
    run = dict(sampler="progressive", steps=4, spacing="trailing", guidance=2.0, labels=["Sneaker"])
    x0, _ = app.live_images("tiny-4step", "Sneaker", None, 2.0, 4, 5, 9, 0.0, 3)
    assert torch.equal(x0, pipe.sample(3, seed=5, **run))          # blend 0: Generate's images of seed 5
    x1, _ = app.live_images("tiny-4step", "Sneaker", None, 2.0, 4, 5, 9, 1.0, 3)
    assert torch.equal(x1, pipe.sample(3, seed=9, **run))          # blend 1: those of seed B
    # blend 0.3: image i from slerp(noise of seed 5 + i, noise of seed 9 + i), each image's own great circle
    za, zb = pipe.start_noise(3, 5), pipe.start_noise(3, 9)
    x_T = torch.stack([slerp_reference(za[i], zb[i], 0.3) for i in range(3)])
    xm, caption = app.live_images("tiny-4step", "Sneaker", None, 2.0, 4, 5, 9, 0.3, 3)
    assert torch.allclose(xm, pipe.sample(3, seed=5, x_start=x_T, **run), atol=1e-5)
    assert "seed 5 → 9 at 0.30" in caption and "Sneaker" in caption and "4 steps" in caption


def test_live_follows_guidance_and_class_and_runs_the_students_own_rule(app):
    a, _ = app.live_images("tiny-4step", "Sneaker", None, 1.0, 4, 0, 1, 0.0, 2)
    b, _ = app.live_images("tiny-4step", "Sneaker", None, 4.0, 4, 0, 1, 0.0, 2)
    c, _ = app.live_images("tiny-4step", "Bag", None, 1.0, 4, 0, 1, 0.0, 2)
    assert not torch.equal(a, b) and not torch.equal(a, c)
    pipe = app.models.get("tiny-4step")
    ddim = pipe.sample(2, sampler="ddim", steps=4, guidance=1.0, labels=["Sneaker"], seed=0)
    assert not torch.equal(a, ddim)      # the student's rule, not DDIM on the same grid
    # more steps than twice the student's are capped, and the caption says so
    _, caption = app.live_images("tiny-1step", None, None, 2.0, 25, 0, 1, 0.0, 1)
    assert "2 steps (asked 25; Live runs at most 2)" in caption


def test_live_html_carries_the_images_as_one_png(app):
    html = app.live(True, "tiny-4step", "Sneaker", None, 2.0, 4, 5, 9, 0.0, 3)
    src = html.split('src="data:image/png;base64,')[1].split('"')[0]
    png = Image.open(io.BytesIO(base64.b64decode(src))).convert("L")
    x, _ = app.live_images("tiny-4step", "Sneaker", None, 2.0, 4, 5, 9, 0.0, 3)
    expect = grid(x.clamp(-1, 1), nrow=3, padding=1).convert("L")
    assert png.size == expect.size == (3 * 16 + 4, 18)
    assert np.array_equal(np.asarray(png), np.asarray(expect))
    assert app.live(False, "tiny-4step") is not None and "data:" not in str(app.live(False, "tiny-4step"))


def test_live_is_offered_to_students_only(app):
    group, check, view = app.live_available("tiny")
    assert group["visible"] is False and check["value"] is False and view["visible"] is False
    group, check, view = app.live_available("tiny-4step")
    assert group["visible"] is True and view["visible"] is True
    with pytest.raises(gr.Error, match="distilled student"):
        app.live(True, "tiny", "Sneaker")
    with pytest.raises(gr.Error, match="batch size"):
        app.live(True, "tiny-4step", batch_size=99)


def test_the_lesson_finds_teacher_and_students_along_the_chain_and_starts_every_row_from_one_noise(app):
    assert app.students_of("tiny") == ("tiny", ["tiny-4step", "tiny-1step"])
    assert app.students_of("tiny-1step") == ("tiny", ["tiny-4step", "tiny-1step"])   # 1step <- 4step <- tiny
    with pytest.raises(ValueError, match="no distilled student"):
        app.students_of("tiny-attr")
    img, note = app.lesson("tiny-1step", "Sneaker", 3, 2)
    # rows: the teacher, the 4-step student at 4 and 2 steps, the 1-step student: 4 strips of 2 images
    strip = round(448 / (2 * 16 + 3)) * (2 * 16 + 3)
    assert img.size[0] >= strip and img.size[1] == 4 * (strip * 18 // (2 * 16 + 3) + 20)
    assert "seed 3" in note and "same noise" in note


def test_live_runs_on_generates_backend(app):
    x, caption = app.live_images("tiny-4step", "Sneaker", None, 2.0, 4, 5, 9, 0.0, 2, "bf16")
    assert caption.endswith("· bf16")
    pipe = app.models.get("tiny-4step", "bf16")
    assert torch.equal(x, pipe.sample(2, sampler="progressive", steps=4, guidance=2.0, labels=["Sneaker"], seed=5))
    with pytest.raises(ValueError, match="unknown backend"):
        app.live_images("tiny-4step", "Sneaker", None, 2.0, 4, 5, 9, 0.0, 2, "gpu")
    _, caption = app.live_images("tiny-4step", "Sneaker", None, 2.0, 4, 5, 9, 0.0, 2)
    assert caption.endswith("· fp32")

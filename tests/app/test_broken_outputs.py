"""Issue 37 item 13 in the app: a network whose output overflows gave flat black squares under "Done" (Generate)
and in Live. Both now refuse with the reason that ``output_problem`` gives, and show no images."""
from __future__ import annotations

import gradio as gr
import pytest
import torch

from app_fixtures import add_students, build_checkpoints


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = add_students(build_checkpoints(tmp_path_factory.mktemp("broken")))
    from diffusion_app.application import DiffusionApp
    a = DiffusionApp(root)
    # no row memory: these tests change a loaded network in place (a hook), which the memory cannot see; it would
    # answer the same request again with the sound network's rows (a folder changed on disk is loaded anew)
    a.models.rows.max_bytes = 0
    return a


@pytest.fixture
def overflowing(app):
    """Every network of ``model`` answers 3e38 everywhere (as weights near the float limit make it)."""
    hooks = []

    def make(model):
        for net in app.models.get(model).stages[0].networks:
            hooks.append(net.register_forward_hook(lambda mod, args, out: torch.full_like(out, 3e38)))
    yield make
    for h in hooks:
        h.remove()


def test_generate_refuses_images_from_an_overflowing_network(app, overflowing):
    outs = list(app.generate("tiny", "ddim", 3, class_label="Coat", seed=1, batch_size=2))      # a sound network
    assert "Done" in outs[-1][1] and len(outs[-1][2]) == 2
    overflowing("tiny")
    got = []
    with pytest.raises(gr.Error) as err:
        for out in app.generate("tiny", "ddim", 3, class_label="Coat", seed=1, batch_size=2):
            got.append(out)
    assert err.value.message == "tiny: 2 of 2 images have NaN or inf values: the network's output is broken"
    assert not any("Done" in str(o[1]) for o in got)


def test_live_refuses_images_from_an_overflowing_network(app, overflowing):
    assert "data:image/png" in app.live(True, "tiny-4step", "Sneaker", None, 2.0, 4, 5, 9, 0.0, 3)
    overflowing("tiny-4step")
    with pytest.raises(gr.Error) as err:
        app.live(True, "tiny-4step", "Sneaker", None, 2.0, 4, 5, 9, 0.0, 3)
    assert "the network's output is broken" in err.value.message and "3 of 3 images" in err.value.message

"""Issue 34: a visitor's page opens set for the default model, and asks the server for one light event, not four.

A class of 30 opening the page at once queued 120 light events (the Generate tab's controls, its card, the Forward
tab's images and plot) and waited seconds for them before Generate was usable. The page is now built with them."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest

from diffusion_app.generate.cards import Cards
from diffusion_app.generate.presets import examples_for
from diffusion_app.layout import build_demo
from diffusion_app.settings import sampler_choices


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from app_fixtures import build_checkpoints
    return build_demo(build_checkpoints(tmp_path_factory.mktemp("ckpt")))


def props(demo, elem_id: str) -> dict:
    return next(c["props"] for c in demo.config["components"] if c.get("props", {}).get("elem_id") == elem_id)


def loaded_fn(demo):
    return next(f for f in demo.fns.values() if getattr(f, "name", None) == "loaded")


def test_the_page_opens_with_the_default_models_controls_examples_and_card(demo):
    app = demo.app_state
    model = app.models.default()
    pipe = app.models.get(model)
    ex = examples_for(pipe, model)
    sd = Cards.sampling_defaults(pipe)
    assert props(demo, "model")["value"] == model
    for i, e in enumerate(ex[:3]):                      # the model's own examples, shown but not usable yet
        p = props(demo, f"example-{i}")
        assert p["value"] == f"▶ {e['title']}" and p["visible"] is not False and p["interactive"] is False
    assert props(demo, "steps")["value"] == sd.steps
    assert props(demo, "model-card")["value"].startswith(f"### {model}")
    # the sampler list is every sampler (what an API call is checked against); the page's, the model's, on load
    sampler = next(c["props"] for c in demo.config["components"] if c.get("props", {}).get("label") == "Sampler")
    assert sampler["value"] == sd.sampler
    assert [tuple(c) for c in sampler["choices"]] == [tuple(c) for c in sampler_choices()]


def test_one_server_event_on_open_and_the_forward_tab_built_in(demo):
    cfg = demo.config
    ids = {c["id"]: c.get("props", {}).get("elem_id") for c in cfg["components"]}
    on_load = [d for d in cfg["dependencies"] if any(t[1] == "load" for t in d["targets"])]
    server = [d for d in on_load if d.get("backend_fn")]
    assert len(server) == 1, [d.get("api_name") for d in server]
    # the other: the page's own script, which makes Generate and the examples usable without a link
    browser = [d for d in on_load if not d.get("backend_fn")]
    assert len(browser) == 1 and {ids[o] for o in browser[0]["outputs"]} == {"generate-btn", "example-0", "example-1",
                                                                            "example-2"}
    assert props(demo, "generate-btn")["interactive"] is False
    for elem_id in ("fwd-out", "fwd-strip", "schedule-plot"):
        assert props(demo, elem_id).get("value"), elem_id


def test_without_a_link_the_load_event_sends_only_the_models_sampler_list(demo):
    app = demo.app_state
    model = app.models.default()
    out = loaded_fn(demo).fn(model, "(any)", [], model, SimpleNamespace(query_params={}))
    updates = [o for o in out if isinstance(o, dict) and set(o) - {"__type__"}]
    assert updates == [gr.update(choices=sampler_choices(app.models.get(model).samplers))]


def test_a_link_sets_its_settings_and_then_makes_generate_usable(demo):
    app = demo.app_state
    model = app.models.default()
    out = loaded_fn(demo).fn(model, "(any)", [], model, SimpleNamespace(query_params={"model": [model], "seed": ["5"]}))
    assert {"__type__": "update", "value": 5} in out
    assert out[-1] == gr.update(interactive=True, value="Generate")
    assert sum(isinstance(o, dict) and o.get("interactive") is True for o in out) == 4    # Generate, 3 examples

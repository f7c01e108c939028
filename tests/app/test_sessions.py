"""A session's copy of the page's config, built when read (diffusion_app/sessions.py): against Gradio's own
SessionState, which builds it eagerly, after the same events."""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gradio as gr                      # noqa: E402
import numpy as np                       # noqa: E402
import pytest                            # noqa: E402
from gradio import state_holder          # noqa: E402

from diffusion_app import sessions       # noqa: E402
from diffusion_app.sessions import LazySessionState   # noqa: E402

GradioSessionState = LazySessionState.__mro__[1]       # Gradio's own class, whatever install() has done since


@pytest.fixture(scope="module")
def demo():
    with gr.Blocks() as d:
        text = gr.Textbox("hello", label="Text", elem_id="text")
        slider = gr.Slider(0, 10, value=3, step=1, label="Steps")
        drop = gr.Dropdown(["a", "b", "c"], value="a", label="Pick")
        image = gr.Image(label="Picture")
        state = gr.State({"kept": 1})
        button = gr.Button("Go")
        button.click(lambda *a: a, [text, slider, drop, state], [text, slider, drop, state])
    d.ids = dict(text=text._id, slider=slider._id, drop=drop._id, image=image._id, state=state._id,
                 button=button._id)
    return d


def _events(s, ids):
    """What Blocks.postprocess_data does to a session after events: values set, a component replaced by an update,
    a config rebuilt, a state written, a value set after a rebuild and one set on a component never read."""
    s._update_value_in_config(ids["text"], "typed")
    s[ids["slider"]] = gr.Slider(0, 20, value=7, step=1, label="Steps (more)")
    s._update_config(ids["slider"])
    s._update_value_in_config(ids["slider"], 9)
    s[ids["state"]] = {"kept": 2}
    s._update_value_in_config(ids["drop"], "c")
    s[ids["drop"]] = gr.Dropdown(["x", "y"], value="y", label="Pick again")
    s._update_value_in_config(ids["image"], {"path": "a.png", "url": None})


def _configs(s) -> dict:
    return {k: v for k, v in s.config_values.items()}


def test_a_lazy_session_holds_what_gradios_eager_one_holds_after_the_same_events(demo):
    eager, lazy = GradioSessionState(demo), LazySessionState(demo)
    assert _configs(lazy) == _configs(eager)                      # at the start
    eager, lazy = GradioSessionState(demo), LazySessionState(demo)
    _events(eager, demo.ids)
    _events(lazy, demo.ids)
    got, want = _configs(lazy), _configs(eager)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == want[k], k
    assert want[demo.ids["slider"]]["props"]["value"] == 9 and want[demo.ids["text"]]["props"]["value"] == "typed"
    assert lazy[demo.ids["state"]] == eager[demo.ids["state"]] == {"kept": 2}
    # the deep-link route's reader
    assert [c for c in lazy.components] == [c for c in eager.components]


def test_read_one_at_a_time_between_events_it_still_matches(demo):
    """A config read early (built then) and changed after: the later events reach it as they reach Gradio's."""
    eager, lazy = GradioSessionState(demo), LazySessionState(demo)
    ids = demo.ids
    assert lazy.config_values[ids["text"]] == eager.config_values[ids["text"]]
    assert lazy.config_values[ids["slider"]] == eager.config_values[ids["slider"]]     # built before its update
    assert ids["slider"] in lazy.config_values and len(lazy.config_values) == len(eager.config_values)
    _events(eager, ids)
    _events(lazy, ids)
    assert lazy.config_values[ids["text"]] == eager.config_values[ids["text"]]
    assert lazy.config_values.get(ids["slider"]) == eager.config_values.get(ids["slider"])
    assert _configs(lazy) == _configs(eager)


def test_a_config_set_or_deleted_whole_replaces_the_one_still_to_be_built(demo):
    lazy, ids = LazySessionState(demo), demo.ids
    lazy._update_value_in_config(ids["text"], "typed")           # pending, with a value
    lazy.config_values[ids["text"]] = {"set": "whole"}
    assert lazy.config_values[ids["text"]] == {"set": "whole"}
    del lazy.config_values[ids["slider"]]                          # never built
    assert ids["slider"] not in lazy.config_values
    assert len(lazy.config_values) == len(GradioSessionState(demo).config_values) - 1
    built = dict(lazy.config_values.items())
    assert ids["slider"] not in built and built[ids["text"]] == {"set": "whole"}


@pytest.mark.parametrize("read", ["copy", "eq", "pop", "setdefault", "iter", "values"])
def test_every_way_of_reading_it_sees_the_configs_not_yet_built(demo, read):
    eager, lazy = GradioSessionState(demo), LazySessionState(demo)
    _events(eager, demo.ids)
    _events(lazy, demo.ids)
    e, z, k = eager.config_values, lazy.config_values, demo.ids["drop"]
    if read == "copy":
        assert z.copy() == e.copy()
    elif read == "eq":
        assert z == e
    elif read == "pop":
        assert z.pop(k) == e.pop(k) and k not in z and z.pop(k, "gone") == "gone"
    elif read == "setdefault":
        assert z.setdefault(k, None) == e.setdefault(k, None)
    elif read == "iter":
        assert sorted(z) == sorted(e)
    else:
        assert list(z.values()) == [z[i] for i in z] and len(list(z.values())) == len(e)


def test_a_lazy_session_builds_no_config_until_one_is_read(demo, monkeypatch):
    built = []
    real = type(demo.default_config).config_for_block

    def counting(*a, **kw):
        built.append(a[0])
        return real(*a, **kw)
    monkeypatch.setattr(type(demo.default_config), "config_for_block", staticmethod(counting))
    lazy = LazySessionState(demo)
    _events(lazy, demo.ids)
    assert built == []
    assert lazy.config_values[demo.ids["text"]]["props"]["value"] == "typed" and built == [demo.ids["text"]]
    GradioSessionState(demo)
    assert len(built) > len(demo.ids)                          # Gradio's builds every one at the start


def test_it_sets_every_attribute_gradios_session_sets(demo):
    """A later Gradio that adds a field to SessionState.__init__ must not meet sessions without it."""
    assert set(vars(GradioSessionState(demo))) <= set(vars(LazySessionState(demo)))


def test_the_app_installs_it_for_every_new_session(tmp_path):
    from diffusion_app.layout import build_demo
    build_demo(tmp_path)
    assert state_holder.SessionState is LazySessionState
    holder = state_holder.StateHolder()
    with gr.Blocks() as d:
        gr.Textbox()
    holder.set_blocks(d)
    assert isinstance(holder["a-visitor"], LazySessionState)
    assert np.isfinite(len(holder["a-visitor"].config_values))
    sessions.install()

"""Issue 34: an output left as it is (``gr.skip()``) is sent without rebuilding its component (diffusion_app/skips.py).
Compared against Gradio's own ``postprocess_data`` on the same predictions: the same outputs, byte for byte."""
from __future__ import annotations

import asyncio
import json
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
from gradio.state_holder import SessionState  # noqa: E402

from diffusion_app import skips  # noqa: E402


def _page():
    with gr.Blocks() as demo:
        slider, drop = gr.Slider(0, 10, value=3), gr.Dropdown(choices=["x", "y"], value="x")
        html, state, text = gr.HTML("hi"), gr.State(1), gr.Textbox("t")
        btn = gr.Button()
        btn.click(lambda: None, None, [slider, drop, html, state, text])
        btn.click(lambda: None, None, [slider])
    return demo, [slider, drop, html, state, text]


def predictions():
    """Fresh each time: Gradio's postprocess takes the value out of an update dict it is given."""
    return [
    [gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()],
    [gr.update(value=5), gr.skip(), "<b>x</b>", 2, gr.skip()],
    [gr.skip(), gr.update(choices=["z"], value="z"), gr.skip(), gr.skip(), "new"],
    (4, gr.skip(), gr.update(visible=False), gr.skip(), gr.update()),      # a tuple; gr.update() is a skip too
    ]


def _outputs(wrapped: bool, fn_index: int = 0, predictions=predictions):
    demo, blocks = _page()
    state = SessionState(demo)
    post = skips._postprocess_data if wrapped else skips._original
    sent, instances = [], []
    for p in predictions():
        before = {b._id: state[b._id] if b._id in state else None for b in blocks}
        sent.append(json.dumps(asyncio.run(post(demo, demo.fns[fn_index], p, state)), sort_keys=True, default=str))
        instances.append([state[b._id] is before[b._id] if b._id in state else None for b in blocks])
    return sent, instances


def test_skipped_outputs_are_sent_as_gradio_sends_them_without_a_rebuild():
    plain, plain_kept = _outputs(False)
    fast, fast_kept = _outputs(True)
    assert fast == plain
    # Gradio rebuilt every prop-updated output; now a skipped one keeps its instance (HTML and state as before)
    assert plain_kept[0][:2] == [False, False] and fast_kept[0][:2] == [True, True]
    assert fast_kept[1][1] is True and fast_kept[1][4] is not False and fast_kept[2][0] is True
    assert plain_kept[0][2] == fast_kept[0][2] is False          # HTML: Gradio's own path, rebuilt
    assert fast_kept[3][1] is True and fast_kept[3][4] is True   # the tuple's skip and gr.update()


def test_a_one_output_event_is_left_to_gradio():
    assert _outputs(True, 1, lambda: [gr.skip(), 7]) == _outputs(False, 1, lambda: [gr.skip(), 7])

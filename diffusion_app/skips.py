"""An output left as the page shows it (``gr.skip()``), sent without rebuilding its component (issue 34).

For every prop update an event returns, Gradio's ``Blocks.postprocess_data`` builds a new instance of the output's
component for the visitor's session (its constructor arguments, again), even for ``gr.skip()``, which changes
nothing: about 0.45 ms each on the event loop (``inspect.getfullargspec`` and the constructor). A visitor's page
load returns 23 skips and an example's first event one more, so a class of 30 arriving at once queued ~700 such
rebuilds on the one thread that serves everyone's requests.

``install()`` wraps ``postprocess_data``: an output whose prediction is exactly ``gr.skip()`` is handed to Gradio as
its "nothing to send" marker (``FINISHED_ITERATING``, which it passes over) and given back, afterwards, the update
Gradio sends for a skip, ``{"__type__": "update"}``: what reaches the page is the same, byte for byte. The one thing
left undone is the rebuild itself, whose only effect is on the session's copy of the component: an identical
instance (the same constructor arguments), and in the session's config copy (sessions.py) the value reset to the
component's initial one, which only a deep link reads and which was wrong after a skip anyway. Left to Gradio as
before: HTML outputs (Gradio sends their skip as ``{"props": {...}, "__type__": "update"}``), state outputs,
single-output events and validators. ``tests/app/test_skips.py`` compares the wrapped and unwrapped outputs.
"""
from __future__ import annotations

import gradio as gr
from gradio import components
from gradio.blocks import Blocks

SKIP = gr.skip()


def _plain_skip(block, value) -> bool:
    return (type(value) is dict and value == SKIP and not block.stateful
            and not isinstance(block, components.HTML))


async def _postprocess_data(self, block_fn, predictions, state):
    outputs = block_fn.outputs
    if (block_fn.is_validator_function or len(outputs) < 2 or block_fn.batch
            or not isinstance(predictions, (list, tuple)) or len(predictions) != len(outputs)):
        return await _original(self, block_fn, predictions, state)
    skipped = [i for i, (block, value) in enumerate(zip(outputs, predictions)) if _plain_skip(block, value)]
    if not skipped:
        return await _original(self, block_fn, predictions, state)
    predictions = list(predictions)
    for i in skipped:
        predictions[i] = components._Keywords.FINISHED_ITERATING
    output = await _original(self, block_fn, predictions, state)
    for i in skipped:
        output[i] = dict(SKIP)
    return output


_original = Blocks.postprocess_data


def install() -> None:
    """Every ``Blocks`` from now on sends a skipped output without rebuilding its component (idempotent)."""
    Blocks.postprocess_data = _postprocess_data

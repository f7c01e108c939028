"""Live mode's events (issue 38): with a distilled student, dragging guidance or the blend, or changing the class,
attributes, steps or a seed, redraws the images; and Learn's distillation lesson."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ..settings import LIGHT
from ..zerogpu import gpu_task
from .live import LIVE_OFF


def wire_live(app, g: SimpleNamespace, l: SimpleNamespace) -> None:
    """``g``: the Generate page, ``l``: the Learn page. Live's events run outside the queue (queue=False: no queue
    round trip per slider event; a student's update is a few network passes) with trigger_mode "always_last": while
    one update runs, the page sends only the latest value after it, so a drag never builds a backlog."""
    local = dict(api_visibility="private", queue=False, show_progress="hidden")
    g.model.change(app.live_available, [g.model], [g.live_group, g.live_on, g.live_view], **local)
    inputs = [g.live_on, g.model, g.class_label, g.attributes, g.guidance, g.steps, g.seed, g.live_seed_b,
              g.live_blend, g.batch_size, g.backend]
    live = dict(fn=gpu_task(app.live), inputs=inputs, outputs=[g.live_view], trigger_mode="always_last", **local)
    # switched off: the view says how to use it (the last images would look live while nothing follows the sliders)
    g.live_on.change(lambda on: gr.skip() if on else LIVE_OFF, [g.live_on], [g.live_view], **local).then(**live)
    for box in (g.guidance, g.live_blend, g.steps, g.batch_size, g.seed, g.live_seed_b, g.class_label, g.attributes,
                g.backend):
        box.input(**live)
    # the API's Live endpoint (/live): the same handler, for scripts and the browser benchmark
    live_api = gr.Button(visible=False)
    live_api.click(gpu_task(app.live), inputs, [g.live_view], api_name="live", **LIGHT)
    l.lesson_btn.click(gpu_task(app.lesson), [g.model, g.class_label, l.lesson_seed], [l.lesson_img, l.lesson_note],
                       api_name="distillation_lesson", concurrency_id="sampling")

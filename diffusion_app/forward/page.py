"""The Forward process tab's page: an image noised (or degraded) to any t, and the schedules compared."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from ..inputs import Radio, SafeImage, Slider, page_parts
from ..settings import DEGRADATIONS, LIGHT


def forward_page(app) -> SimpleNamespace:
    """Build the tab's components (inside its ``gr.Tab``); returns them by name. The page opens with the default
    image noised at t = 250 and the schedules' plot, made once here: every visitor's page asked for them on load,
    two queued events each, and a class opening the page at once waited for 60 of them (issue 34)."""
    out, strip, info = app.forward()
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            fwd_image = SafeImage(label="x_0 (upload, or an example)", type="filepath",
                                  image_mode=None, sources=["upload", "clipboard"], height=220,
                                  elem_classes="dc-pixel", elem_id="fwd-image")
            example_btn = gr.Button("Dataset example")
            example_note = gr.Markdown()
            fwd_schedule = Radio(["linear", "cosine"], value="cosine", label="Noise schedule")
            fwd_deg = Radio(DEGRADATIONS, value="noise", label="Degradation",
                               info="noise = Gaussian diffusion; the rest are cold-diffusion operators")
            fwd_t = Slider(0, 999, value=250, step=1, label="t")
        with gr.Column(scale=2):
            fwd_out = gr.Image(out, label="x_t ~ q(x_t | x_0)", type="pil", format="png", height=280,
                               interactive=False, elem_id="fwd-out", elem_classes="dc-result")
            fwd_info = gr.Markdown(info)
            fwd_strip = gr.Image(strip, label="x_t at 8 values of t", show_label=False, type="pil",
                                 format="png", height=150, interactive=False, elem_id="fwd-strip",
                                 elem_classes="dc-result")
    gr.Markdown("**Linear vs cosine schedule** (Nichol & Dhariwal 2021, Fig. 5): the cosine schedule "
                "destroys information more slowly; the dashed line marks t.")
    sched_plot = gr.Plot(app.schedule_plot(), show_label=False, format="png", elem_id="schedule-plot")
    return page_parts(locals())


def wire_forward(app, f: SimpleNamespace) -> None:
    fwd_inputs = [f.fwd_image, f.fwd_schedule, f.fwd_deg, f.fwd_t]
    fwd_outputs = [f.fwd_out, f.fwd_strip, f.fwd_info]
    gr.on([f.fwd_schedule.change, f.fwd_deg.change, f.fwd_t.change, f.fwd_image.change], app.forward, fwd_inputs,
          fwd_outputs, api_name="forward", show_progress="hidden", trigger_mode="always_last", **LIGHT)
    gr.on([f.fwd_t.change, f.fwd_schedule.change], app.schedule_plot, [f.fwd_t, f.fwd_schedule], [f.sched_plot],
          api_name="schedule_plot", show_progress="hidden", trigger_mode="always_last", **LIGHT)
    f.example_btn.click(app.fashion_example, None, [f.fwd_image, f.example_note], api_visibility="private", **LIGHT)
    f.fwd_image.upload(app.upload_note, [f.fwd_image], [f.example_note], api_visibility="private", **LIGHT)
    f.fwd_image.clear(lambda: "", None, [f.example_note], api_visibility="private", queue=False)

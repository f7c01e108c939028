"""The page: the four tabs, each built and wired by its package's ``page`` module, and the launch settings."""
from __future__ import annotations

import os

import gradio as gr
import torch

from .application import DiffusionApp
from .assets import ABOUT, ARM_SKETCH_JS, CSS
from .forward.page import forward_page, wire_forward
from .generate.live_page import wire_live
from .generate.page import generate_page, wire_generate
from .inputs import check_input_count
from .learn.page import learn_page, wire_learn


def build_demo(checkpoints_dir=None) -> gr.Blocks:
    app = DiffusionApp(checkpoints_dir)
    threads = os.environ.get("DIFFUSION_THREADS")
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    with gr.Blocks(title="diffusion_core", delete_cache=(3600, 7200)) as demo:
        demo.app_state = app     # for tests and introspection
        gr.Markdown("# diffusion_core · from-scratch diffusion models")
        with gr.Tabs():
            with gr.Tab("Generate", id="generate"):
                g = generate_page(app)
            with gr.Tab("Forward process", id="forward"):
                f = forward_page()
            with gr.Tab("Learn", id="learn"):
                l = learn_page()
            with gr.Tab("About", id="about"):
                gr.Markdown(ABOUT)
        wire_generate(app, demo, g, l)
        wire_forward(app, demo, f)
        wire_learn(app, g, l)
        wire_live(app, g, l)
    demo.validate_inputs = check_input_count     # an API call short of inputs: one line, not {"error": null}
    # Generate is not limited here: the app's waiting room admits its runs (waiting.py). The rest: the Learn tab's
    # sampling tools (DIFFUSION_CONCURRENCY at once, default 2: each runs up to 15 sampling runs) and light events
    demo.queue(default_concurrency_limit=int(os.environ.get("DIFFUSION_CONCURRENCY", "2")),
               max_size=int(os.environ.get("DIFFUSION_QUEUE", "256")))
    return demo


# state_session_capacity: sessions whose state Gradio keeps, least recently used dropped first (Gradio's default,
# 10,000, lets them take ~7 GB: each holds ~0.7 MB, measured, mostly its own copy of the page's config with the
# last outputs)
LAUNCH_KW = dict(theme=gr.themes.Soft(), css=CSS, js=ARM_SKETCH_JS, max_file_size="32mb",
                 state_session_capacity=int(os.environ.get("DIFFUSION_SESSIONS", "200")))


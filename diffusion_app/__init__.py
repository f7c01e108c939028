"""The Gradio app for diffusion_core, as a package: one module per tab or concern, each readable in one sitting.

    settings     limits, defaults, the sampler menus (read from the core's sampler registry)
    inputs       components that check what a browser or an API client sends; the error wrapper
    models       the model catalogue (folders under the checkpoints directory)
    render       previews, labelled strips, comparison grids, PNGs with their settings, the status line
    runs         each session's last Generate run, kept for the Learn tab under one byte budget
    explain      a sampler step written out with its numbers (from ``diffusion_core.explain_step``)
    zerogpu      ``spaces.GPU`` where the app runs on Hugging Face ZeroGPU
    base         the state every tab shares
    cards, generate, upscale, forward, learn, compare     the handlers, one class per tab
    application  ``DiffusionApp``: those classes joined into the object the page calls
    layout       the page: tabs, controls, events (``build_demo``) and its CSS / JS

It uses ``diffusion_core`` only through the names ``diffusion_core/__init__.py`` exports and the package never
imports Gradio. ``app.py`` at the repository's root is the launcher (and a Space's entry point).
"""
from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"

from .application import DiffusionApp  # noqa: E402
from .layout import LAUNCH_KW, build_demo  # noqa: E402

__all__ = ["DiffusionApp", "LAUNCH_KW", "build_demo"]

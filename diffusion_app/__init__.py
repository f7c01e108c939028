"""The Gradio app for diffusion_core, as a package: a package per tab (its page, its handlers and their state), and
the modules the tabs share, each readable in one sitting.

    generate/    the Generate tab: sampling with previews and the waiting room, model cards and examples, settings
                 links, upscaling, Live mode (its __init__ lists the modules)
    learn/       the Learn tab: explain a step, trajectory, interpolation, comparisons, branching
    forward/     the Forward process tab
    settings     limits, defaults, the sampler menus (read from the core's sampler registry)
    inputs       components that check what a browser or an API client sends; the error wrapper
    outputs      the long outputs of the events by name (``Shown``, ``Controls``)
    models       the model catalogue (folders under the checkpoints directory)
    render       previews, labelled strips, comparison grids, PNGs with their settings, the status line
    runs         each session's last Generate run (``KeptRun``), kept for the Learn tab under one byte budget
    waiting      the waiting room: admission, places and wait estimates
    zerogpu      ``spaces.GPU`` where the app runs on Hugging Face ZeroGPU
    base         the state every tab shares
    application  ``DiffusionApp``: the tabs' handler classes joined into the object the page calls
    layout       the page: the tabs, each built and wired by its package's ``page``, and the launch settings

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

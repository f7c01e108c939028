"""The app's handlers, one class per tab joined into one object that the page calls."""
from __future__ import annotations

from .branch import BranchTab
from .cards import Cards
from .compare import CompareTab
from .forward import ForwardTab
from .generate import GenerateTab
from .learn import LearnTab
from .live import LiveTab
from .upscale import UpscaleTab


class DiffusionApp(Cards, GenerateTab, UpscaleTab, ForwardTab, LearnTab, CompareTab, BranchTab, LiveTab):
    """Every handler of the page (each a method of its tab's class, all sharing ``AppBase``'s state)."""

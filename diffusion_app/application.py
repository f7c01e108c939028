"""The app's handlers: the classes of the tab packages (generate/, learn/, forward/) joined into one object that
the page calls."""
from __future__ import annotations

from .forward.handlers import ForwardTab
from .generate.cards import Cards
from .generate.live import LiveTab
from .generate.sampling import GenerateTab
from .generate.upscale import UpscaleTab
from .learn.branch import BranchTab
from .learn.compare import CompareTab
from .learn.handlers import LearnTab


class DiffusionApp(Cards, GenerateTab, UpscaleTab, ForwardTab, LearnTab, CompareTab, BranchTab, LiveTab):
    """Every handler of the page: each a method of its tab's class, in its tab's package. A class makes its own state
    in its ``__init__``; what the tabs share (the models, the kept runs, the output folder) is ``AppBase``'s."""

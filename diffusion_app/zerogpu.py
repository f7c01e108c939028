"""Hugging Face ZeroGPU: where the `spaces` package is importable, GPU work runs inside `spaces.GPU`."""
from __future__ import annotations

import os


def on_zero_gpu() -> bool:
    """Whether this app runs on Hugging Face ZeroGPU hardware (the Space sets SPACES_ZERO_GPU) with the ``spaces``
    package: a GPU is attached only while a function decorated with ``spaces.GPU`` runs."""
    if not os.environ.get("SPACES_ZERO_GPU"):
        return False
    try:
        import spaces  # noqa: F401
    except ImportError:
        return False
    return True


def gpu_task(fn, duration=120):
    """``fn`` wrapped with ``spaces.GPU(duration=...)`` on ZeroGPU (the GPU is held for its call, the models run on
    CUDA there); ``fn`` itself everywhere else, so the CPU path is unchanged. Used for every handler that samples.
    ``duration``: seconds, or a callable given ``fn``'s arguments that returns them (the work asked for: a short
    run does not reserve two minutes of a visitor's GPU quota)."""
    if not on_zero_gpu():
        return fn
    import spaces
    return spaces.GPU(duration=duration)(fn)

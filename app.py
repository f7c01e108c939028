"""Gradio app for diffusion_core: generate with live previews, explore the forward process.

    python app.py                       # serves checkpoints/ on http://127.0.0.1:7860
    DIFFUSION_CHECKPOINTS=dir python app.py

Environment: DIFFUSION_CHECKPOINTS (model folders, default ``checkpoints``), GRADIO_SERVER_NAME /
GRADIO_SERVER_PORT, DIFFUSION_CONCURRENCY (sampling runs at once, default 1), DIFFUSION_QUEUE (queued
requests, default 16), DIFFUSION_DEVICE (default cpu; cuda on ZeroGPU), DIFFUSION_THREADS (torch CPU threads),
OMP_WAIT_POLICY (default PASSIVE here), DIFFUSION_KEPT_RUNS_MB (the Learn tab's kept runs, all sessions together,
default 128), DIFFUSION_SESSIONS (sessions whose state is kept, default 200), DIFFUSION_MODELS_MB (loaded models' weights,
default 1024), DIFFUSION_ROW_MEMORY_MB (rows' outputs kept for runs that ask for them again, default 64).

This file is the launcher (and a Hugging Face Space's entry point); the app itself is the ``diffusion_app``
package, one module per tab or concern, which uses only ``diffusion_core``'s public API.

API endpoints (``gradio_client``): /generate (streaming), /forward, /schedule_plot, /upscale, /model_card; the Learn tab's /explain_step, /compare, /compare_guidance, /interpolate, /trajectory.
"""
from __future__ import annotations

import atexit
import gc
import logging
import os
import shutil
import signal
import tempfile
import time

if "GRADIO_TEMP_DIR" not in os.environ:     # Gradio's cache of served files (1,235 files stayed after a SIGTERM):
    os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="gradio_cache_")    # this process's own, removed at exit
    atexit.register(shutil.rmtree, os.environ["GRADIO_TEMP_DIR"], ignore_errors=True)

# OpenMP's waiting threads sleep instead of spinning (libgomp spins by default). A Space's 2 vCPUs are shared: with
# any other work on them (another visitor's request, a build, a neighbour), spinning threads took the cores from the
# threads with work. Measured on a 2-core Xeon with a training and a test run beside it: 4 images of the 4-step
# student took 4.0-11.9 s with spinning threads, 0.26-0.79 s with sleeping ones (1 thread: 0.84-1.08 s). Set before
# torch loads its OpenMP runtime; an OMP_WAIT_POLICY given in the environment is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from diffusion_app import LAUNCH_KW, build_demo  # noqa: E402
from diffusion_app.layout import app_kwargs  # noqa: E402


def freeze_startup_objects() -> None:
    """Move the objects that live as long as the server (torch, Gradio, the page, matplotlib: ~500k) out of the
    cyclic garbage collector's reach. Left in, they made its full collections so rare that each request's cyclic
    garbage (a matplotlib figure holds ~0.6 MB of drawing buffers) piled up: +85 MB over 200 /explain_step calls of
    one session. Frozen, that memory is freed as it goes and a full collection takes ~60 ms instead of ~250 ms."""
    from matplotlib.figure import Figure  # noqa: F401  (imported by the first plot otherwise: freeze it too)
    gc.collect()
    gc.freeze()


FILES_GRACE_S = 3.0
STOP_SIGNALS: list[int] = []     # the signals that asked the process to stop


def exit_on_sigterm(signum, frame):
    """SIGTERM (a Space or a service manager stopping the app; the default action kills the process at once). While
    the app starts there is nothing to stop: the process exits like Ctrl-C. Once it serves, the handler only notes
    the signal, and the main thread's loop stops the server (stop_and_exit). Raised from here, the SystemExit could
    land inside a __del__ or a weakref callback that Python runs between two bytecodes of the main thread, where it
    is ignored: the server closed and the process exited 0 (2 of 6 starts under load)."""
    STOP_SIGNALS.append(signum)
    if getattr(globals().get("demo"), "app_state", None) is None:
        raise SystemExit(128 + signum)      # (ignored there too, the loop stops the app once it serves)


def stop_and_exit(blocks, signum: int) -> None:
    """The sampling runs in flight are stopped and given a few seconds to end (exiting under them gave their clients
    "cannot schedule new futures after shutdown" or aborted the process), then the process exits like Ctrl-C, so
    the atexit cleanup runs and the app's temp folder of generated files and Gradio's cache go with it."""
    logging.getLogger("diffusion_app").info("SIGTERM: the server is stopping")
    blocks.app_state.stop_runs()
    jobs = getattr(getattr(blocks, "_queue", None), "active_jobs", [])
    for _ in range(100):        # and Gradio's queue sends their last outputs (up to 5 s more)
        if not any(jobs):
            break
        time.sleep(0.05)
    time.sleep(FILES_GRACE_S)   # and their clients fetch the files those outputs name (the last status says
                                # "the server is stopping"; a client that found the server gone lost it)
    try:        # the server stops taking requests before atexit removes the files it serves (a preview's GET
        blocks.close(verbose=False)     # still in flight found its file gone: a FileNotFoundError traceback)
    except Exception:       # noqa: BLE001 (exiting anyway)
        logging.getLogger("diffusion_app").exception("closing the server")
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    demo = build_demo()
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), prevent_thread_lock=True,
                app_kwargs=app_kwargs(), **LAUNCH_KW)
    freeze_startup_objects()
    try:        # Gradio's block_thread, which also ends when a signal was noted
        while demo.is_running and not STOP_SIGNALS:
            time.sleep(0.1)
    except KeyboardInterrupt:
        demo.close()
    if STOP_SIGNALS:
        stop_and_exit(demo, STOP_SIGNALS[0])

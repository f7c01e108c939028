"""What every tab shares: the model catalogue, the kept runs, the output folder, labels and seeds."""
from __future__ import annotations

import atexit
import hashlib
import os
import random
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


from .inputs import as_list, number
from .models import Models
from .runs import KeptRun, KeptRuns
from .settings import ANY, HERE, MAX_SEED, USER_ERRORS
from .waiting import WaitingRoom
from .zerogpu import on_zero_gpu


class AppBase:
    def __init__(self, checkpoints_dir=None, device=None):
        root = checkpoints_dir or os.environ.get("DIFFUSION_CHECKPOINTS") or str(HERE / "checkpoints")
        self.models = Models(root, device or os.environ.get("DIFFUSION_DEVICE") or ("cuda" if on_zero_gpu() else "cpu"))
        self.out_dir = Path(tempfile.mkdtemp(prefix="diffusion_app_"))
        atexit.register(shutil.rmtree, self.out_dir, ignore_errors=True)
        self._stops: dict[str, threading.Event] = {}
        self.stopping = threading.Event()        # set when the server is shutting down (stop_runs)
        # sampling runs admitted at once, and the waiting line behind them (waiting.py says why these bounds)
        self.waiting = WaitingRoom(int(os.environ.get("DIFFUSION_SLOTS", "32")),
                                   int(os.environ.get("DIFFUSION_WAITING", "1000")))
        # the threads that step admitted runs (a waiting run holds none): one per slot, and a few for waiting
        # runs' status lines and closing runs whose visitors left
        self.sampling_pool = ThreadPoolExecutor(self.waiting.slots + 4, thread_name_prefix="sampling")
        self._cards: dict[str, tuple[tuple, tuple]] = {}      # model -> (what it was made from, (markdown, samples))
        self.runs = KeptRuns(int(float(os.environ.get("DIFFUSION_KEPT_RUNS_MB", "128")) * 2**20))
        self._fashion = None
        self._fashion_lock = threading.Lock()

    def stop_runs(self, grace_s: float = 10.0) -> bool:
        """The server is stopping (SIGTERM): mark it so, ask every sampling run in flight to stop at its next step,
        and wait up to ``grace_s`` seconds for them to end. True when none is left. A run still inside the network
        when the interpreter shut down failed with "cannot schedule new futures after shutdown" or aborted it."""
        self.stopping.set()
        deadline = time.monotonic() + grace_s
        while self._stops and time.monotonic() < deadline:
            for ev in list(self._stops.values()):
                ev.set()
            time.sleep(0.05)
        return not self._stops

    def servable(self, path: Path) -> str:
        """A file of the models folder as Gradio serves it: Gradio moves into its cache only files under the
        working or the temp folder (or its allowed_paths), so a file elsewhere (DIFFUSION_CHECKPOINTS anywhere on
        the machine) is served as a copy in this app's temp folder."""
        path = Path(path).resolve()
        if any(path.is_relative_to(Path(d).resolve()) for d in (os.getcwd(), tempfile.gettempdir())):
            return str(path)
        copy = self.out_dir / "served" / f"{hashlib.sha256(str(path).encode()).hexdigest()[:20]}{path.suffix}"
        copy.parent.mkdir(exist_ok=True)
        shutil.copyfile(path, copy)
        return str(copy)

    def upscaler_for(self, name, pipe):
        if pipe.kind == "cascade":
            return name, pipe
        if pipe.config.task == "super_resolution":
            return name, pipe
        for n in self.models.sr_models(pipe.config.unet.out_channels, base=name):
            try:
                return n, self.models.get(n)
            except USER_ERRORS:         # a broken SR folder is skipped, never failing this model's card
                continue
        return None, None

    def _labels(self, pipe, model, class_label=ANY, attributes=None) -> list:
        """The labels of the Generate controls for ``pipe``, checked against the model's names."""
        cfg = pipe.base.config
        if cfg.multi_label:
            labels = as_list(attributes)
        else:
            labels = [] if class_label in (None, "", ANY) else [class_label]
        if labels and not cfg.unet.num_labels:
            raise ValueError(f"model {model!r} takes no labels (got {', '.join(map(str, labels))})")
        if labels:   # resolve now so a bad label fails before any work, with the model's names
            pipe.stages[0].condition(1, labels)
        return labels

    @staticmethod
    def _seed(seed) -> int:
        """-1 (or nothing) for a random seed, else a whole number in [0, MAX_SEED]."""
        seed = -1 if seed is None else int(number(seed, "seed", -1, MAX_SEED, whole=True))
        if seed < 0:
            seed = random.randint(0, MAX_SEED)
        if seed > MAX_SEED:
            raise ValueError(f"seed must be in [0, {MAX_SEED}] (or -1 for random), got {seed}")
        return seed

    @staticmethod
    def _needs_plain_generation(pipe, model, what):
        cfg = pipe.base.config
        if cfg.task == "super_resolution":
            raise ValueError(f"{what} needs a model that generates from noise; {model!r} is a super-resolution "
                             "model (it needs a low-resolution input)")
        if cfg.task == "pose":
            raise ValueError(f"{what} needs a model that generates from noise alone; {model!r} needs a stickman "
                             "drawing (use Generate)")

    def _run_dir(self, model: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(model))[:40]
        return Path(tempfile.mkdtemp(prefix=f"{time.strftime('%H%M%S')}-{safe}-", dir=self.out_dir))

    def _run_or_error(self, key) -> KeptRun:
        run = self.runs.get(key)
        if run is None and key is not None:
            raise ValueError(f"this session's last run is no longer kept (the server keeps the last runs of all "
                             f"sessions, up to {self.runs.max_bytes / 2**20:g} MB): run Generate again")
        if run is None or not run.steps:
            raise ValueError("no Generate run to look at yet: run Generate first (this session keeps the steps of "
                             "its last run, first image)")
        return run

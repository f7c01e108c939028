"""What every tab shares: the model catalogue, the kept runs, the output folder, labels and seeds (a tab's own
state is made by its class, in its package)."""
from __future__ import annotations

import atexit
import hashlib
import os
import random
import shutil
import tempfile
import time
from pathlib import Path


from .inputs import as_list, number
from .models import Models
from .runs import KeptRun, KeptRuns
from .settings import ANY, HERE, MAX_SEED, USER_ERRORS
from .zerogpu import on_zero_gpu


class AppBase:
    def __init__(self, checkpoints_dir=None, device=None):
        root = checkpoints_dir or os.environ.get("DIFFUSION_CHECKPOINTS") or str(HERE / "checkpoints")
        self.models = Models(root, device or os.environ.get("DIFFUSION_DEVICE") or ("cuda" if on_zero_gpu() else "cpu"))
        self.out_dir = Path(tempfile.mkdtemp(prefix="diffusion_app_"))
        atexit.register(shutil.rmtree, self.out_dir, ignore_errors=True)
        # each session's last Generate run, which the Learn tab explains (each tab's own state is in its package)
        self.runs = KeptRuns(int(float(os.environ.get("DIFFUSION_KEPT_RUNS_MB", "128")) * 2**20))

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
        return random.randint(0, MAX_SEED) if seed < 0 else seed

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

"""The model catalogue: the folders under the checkpoints directory, loaded on demand and cached."""
from __future__ import annotations

import os
import threading
from pathlib import Path


from diffusion_core import (BACKENDS, SAMPLER_KINDS, BackendError, CheckpointError, Pipeline, RowMemory, load,
                            part_outside, read_config, read_json, requested_backend)

from .settings import log


class Models:
    """The model folders under ``root`` (each sub-folder with a config.json), loaded lazily and cached.

    The scan is cached too: a config.json is read again only when its size or time changes (a request stats the
    folders; it used to parse every config.json). A folder whose config.json cannot be read, or whose load failed,
    stays listed as broken with its one-line reason and never affects the others; a failed load is not retried
    until the folder's files change. A folder whose files change on disk (a training run re-exporting) is reloaded
    on next use."""

    def __init__(self, root, device="cpu", backend=None, budget_bytes: int | None = None,
                 row_memory_bytes: int | None = None):
        self.root = Path(root)
        # the outputs of rows the networks computed lately, for runs that ask for them again (a class pressing one
        # example: runtime/shared.py), every loaded model's in one budget: $DIFFUSION_ROW_MEMORY_MB, default 64
        self.rows = RowMemory(row_memory_bytes if row_memory_bytes is not None else
                              float(os.environ.get("DIFFUSION_ROW_MEMORY_MB", "64")) * 2**20)
        # loaded pipelines are kept up to this many bytes of network weights (pipeline_bytes), the least recently
        # used dropped first (loading every folder once held 4.8 GB): $DIFFUSION_MODELS_MB, default 1024
        self.budget = int(budget_bytes if budget_bytes is not None else
                          float(os.environ.get("DIFFUSION_MODELS_MB", "1024")) * 2**20)
        self.device = device
        # where networks run unless a request names one: $DIFFUSION_CORE_BACKEND, else fp32: the images of a seed
        # differ between backends, and fp32 is the one every machine runs, so a link reproduces them anywhere.
        # auto is never measured here (visitors would wait, and the timings would measure their load): it uses
        # the choice `python -m diffusion_core backends` recorded on this machine, else fp32.
        self.backend = requested_backend(backend, default="fp32")
        self._cache: dict[str, tuple[tuple, object]] = {}
        self._failed: dict[str, tuple[tuple, str]] = {}         # name -> (signature, reason) of a failed load
        self._scanned: dict[str, tuple[tuple, bool, object, str | None]] = {}   # name -> (stat, listed, config, error)
        self._lock = threading.Lock()

    def _scan(self) -> dict[str, tuple[tuple, bool, object, str | None]]:
        out = {}
        folders = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")) \
            if self.root.is_dir() else []
        for p in folders:
            try:
                st = (p / "config.json").stat()
            except OSError:
                continue
            stat = (st.st_mtime_ns, st.st_size)
            hit = self._scanned.get(p.name)
            if hit is None or hit[0] != stat:
                try:        # bounded in size and depth; a folder of another kind (a training state) is not listed
                    listed = read_json(p / "config.json").get("kind", "model") in SAMPLER_KINDS
                    hit = (stat, listed, read_config(p) if listed else None, None)     # typed, checked as loading does
                except CheckpointError as e:
                    hit = (stat, True, None, str(e))               # listed, as broken with the reason
            out[p.name] = hit
        self._scanned = out
        return out

    def names(self) -> list[str]:
        return [n for n, (_, listed, _, _) in self._scan().items() if listed]

    def broken(self, name) -> str | None:
        """Why ``name`` cannot be used (one line, paths relative to the models folder), or None as far as known:
        its config.json is unreadable, or loading it failed and its files have not changed since."""
        hit = self._scanned.get(name)
        reason = hit[3] if hit else None
        failed = self._failed.get(name)
        if reason is None and failed is not None and failed[0] == self.signature(name):
            reason = failed[1]
        if reason is None:
            return None
        reason = self.unrooted(reason)
        line = reason.splitlines()[0] if reason.strip() else "unknown error"
        return line if len(line) <= 160 else line[:157] + "..."

    def unrooted(self, text: str) -> str:
        """``text`` with the models folder's path as its name ("ckpt/"): a visitor never sees the server's paths."""
        for root in (str(self.root.resolve()), str(self.root.absolute())):
            text = text.replace(f"{root}/", "").replace(root, f"{self.root.name}/")
        return text

    def choices(self) -> list[tuple[str, str]]:
        """(label, name) for the model list: a broken folder is labelled "name (broken: reason)"."""
        out = []
        for n in self.names():
            why = self.broken(n)
            out.append((f"{n} (broken: {why})" if why else n, n))
        return out

    def default(self) -> str | None:
        names = self.names()
        good = [n for n in names if self.broken(n) is None] or names
        return "fashion" if "fashion" in good else (good[0] if good else None)

    def folder(self, name) -> Path:
        names = self.names()
        if not names:
            raise ValueError(f"no models found in {self.root.name}/ (each model is a sub-folder with config.json; "
                             "train one with `python -m diffusion_core train ...`)")
        if not isinstance(name, str) or name not in names:
            raise ValueError(f"unknown model {name!r}; available: {', '.join(names)}")
        return self.root / name

    def signature(self, name) -> tuple:
        """What decides whether ``name`` must be loaded again: its JSON files and weights, with their times."""
        folder = self.root / name
        try:
            files = list(folder.glob("*.json")) + list(folder.rglob("*.safetensors"))
            return tuple(sorted((str(p), p.stat().st_mtime_ns) for p in files if p.is_file()))
        except OSError:
            return ()

    def is_ready(self, name, backend=None) -> bool:
        """Whether ``get(name, backend)`` returns at once (loaded, files unchanged, backend already chosen)."""
        hit = self._cache.get(name)
        return bool(hit) and hit[0] == self.signature(name) and hit[1].backend_request == (backend or self.backend)

    @staticmethod
    def check_backend(backend: str | None) -> None:
        """A backend a visitor may ask for (None: the catalogue's default); a ValueError naming the choices."""
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")

    def get(self, name: str, backend: str | None = None) -> Pipeline:
        """The loaded pipeline of ``name``, its networks on ``backend`` (None: this catalogue's default)."""
        self.check_backend(backend)
        folder = self.folder(name)
        sig = self.signature(name)
        backend = backend or self.backend
        with self._lock:
            hit = self._cache.pop(name, None)
            if hit and hit[0] == sig:
                self._cache[name] = hit             # most recently used last
                if hit[1].backend_request != backend:
                    hit[1].set_backend(backend, measure=False)
                return hit[1]
            failed = self._failed.get(name)
            if failed and failed[0] == sig:
                raise CheckpointError(self.unrooted(failed[1]))
            self._cache.pop(name, None)
            try:
                outside = part_outside(folder, self.root)   # the app serves the models folder, nothing beyond it
                if outside:
                    raise CheckpointError(outside)
                pipe = load(folder, device=self.device, backend=backend, measure=False)
            except BackendError:
                raise       # the backend asked for cannot run here: the folder is fine, nothing to remember
            except CheckpointError as e:
                self._failed[name] = (sig, str(e))
                raise CheckpointError(self.unrooted(str(e))) from None
            except Exception as e:      # a folder never takes the app down: it is listed as broken with this
                log.exception("loading %s failed", folder)
                self._failed[name] = (sig, f"{folder}: {type(e).__name__}: {e}")
                raise CheckpointError(self.unrooted(self._failed[name][1])) from None
            self._failed.pop(name, None)
            pipe.row_memory = self.rows
            self._cache[name] = (sig, pipe)
            self._evict(keep=name)
            return pipe

    def _evict(self, keep: str) -> None:
        """Drop the least recently used pipelines (not ``keep``) while the loaded weights exceed the budget; a run
        in flight keeps its own reference, so it finishes; the next request loads the folder again."""
        sizes = {n: pipeline_bytes(p) for n, (_, p) in self._cache.items()}
        for name in list(self._cache):
            if sum(sizes.values()) <= self.budget:
                break
            if name != keep:
                del self._cache[name]
                sizes.pop(name)
                log.info("model cache: dropped %s (least recently used; budget %d MB)", name, self.budget >> 20)

    def loaded(self) -> list:
        """The pipelines loaded now."""
        return [pipe for _, pipe in list(self._cache.values())]

    def config(self, name):
        """The typed config.json of a listed folder, from the scan (core ``read_config``: a ModelConfig, an
        EnsembleManifest or a CascadeManifest, told apart by ``kind``); None for an unreadable or unknown one."""
        hit = self._scanned.get(name) or self._scan().get(name)
        return hit[2] if hit else None

    def sr_models(self, channels: int, base: str | None = None) -> list[str]:
        """Stand-alone super-resolution models with ``channels`` output channels (config.json only); those that a
        cascade here runs after ``base`` first (pose -> pose-sr, not the emoji one that also takes RGB)."""
        out, paired = [], set()
        for n in self.names():
            c = self.config(n)
            if getattr(c, "kind", None) == "model" and c.task == "super_resolution" and c.unet.out_channels == channels:
                out.append(n)
            if getattr(c, "kind", None) == "cascade" and Path(c.stages[0].path).name == base:
                paired.update(Path(st.path).name for st in c.stages[1:])
        return sorted(out, key=lambda n: n not in paired)


def pipeline_bytes(pipe) -> int:
    """Bytes of a loaded pipeline's network weights (parameters and buffers of every stage's networks), twice
    that for a network that also runs on another backend (a bf16 copy, an OpenVINO model)."""
    total = 0
    for st in pipe.stages:
        for net in st.networks:
            size = sum(t.numel() * t.element_size() for t in list(net.parameters()) + list(net.buffers()))
            total += size * (2 if st.runners.get(id(net), (None, None))[0] not in (None, net) else 1)
    return total

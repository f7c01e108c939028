"""A training run's state on disk: model, EMA, optimizer, step, wall time and RNG streams in one safetensors file,
written atomically with the previous one kept; read back with checks (a truncated file, a changed network);
the folder locked while a run writes it, and the debris of killed writes cleaned at a restart."""
from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..checkpoint import atomic_save_tensors, atomic_write_bytes
from ..config import ConfigError, from_dict, to_dict
from .config import TrainConfig

STATE = "train_state.safetensors"
PREV_STATE = "train_state.prev.safetensors"     # the checkpoint before the last one (a hard link: no copy)
LOCK = ".train.lock"
# What a resumed run may not change: the network, the forward process and what the data is (a model trained as
# cosine / eps and resumed as linear / v would continue silently, then be exported as the new one).
RESUME_FIXED = ("task", "unet", "diffusion", "low_res", "crop", "data.source", "data.image_size", "data.channels",
                "distill")


def _resume_view(config: dict) -> dict:
    """A training config as check_resume compares it: fields added since the state was written take their
    defaults (a state from before ``diffusion.x0_range`` existed resumes), and sampling defaults are left out
    (``diffusion.x0_range`` does not change what the network learns)."""
    try:
        config = to_dict(from_dict(TrainConfig, config))
    except (ConfigError, TypeError, ValueError):
        config = json.loads(json.dumps(config))
    if isinstance(config.get("diffusion"), dict):
        config["diffusion"].pop("x0_range", None)
    return config


class CheckpointState:
    """The Trainer's state methods (a mixin): its net, ema, opt, gen, dropout_gen, step, wall, out, rank and
    saved_step go to and come from ``out / STATE``; ``ema_reset``: the EMA restarted since the state was read."""

    ema_reset = False

    def state_tensors(self) -> tuple[dict, dict]:
        tensors = {f"model.{k}": v for k, v in self.net.state_dict().items()}
        tensors.update({f"ema.{k}": v for k, v in self.ema.module.state_dict().items()})
        tensors["ema.n_averaged"] = self.ema.n_averaged
        opt = self.opt.state_dict()
        for pid, st in opt["state"].items():
            for k, v in st.items():
                tensors[f"opt.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
        tensors["rng.dropout"] = self.dropout_gen.get_state()
        tensors["rng.data"] = self.gen.get_state()
        if getattr(self, "distill", None) is not None:     # a distillation's round and teacher
            tensors.update(self.distill.state_tensors())
        meta = {"step": str(self.step), "wall": repr(self.wall), "config": json.dumps(to_dict(self.cfg)),
                "param_groups": json.dumps(opt["param_groups"])}
        return tensors, meta

    def save_state(self, final: bool = False) -> None:
        """Write the training state atomically, keeping the one before as PREV_STATE. A failed periodic write
        (disk full, quota, file too large) keeps the previous checkpoint, warns and lets training go on (the
        next checkpoint tries again); a failed final write raises OSError with a one-line reason. Weights that
        are no longer finite are never saved (FloatingPointError)."""
        if self.rank != 0:
            return
        bad = next((k for k, v in self.net.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
        if bad is not None:
            kept = (f"the last good checkpoint, step {self.saved_step}, is kept in {self.out / STATE}"
                    if self.saved_step is not None else "no checkpoint was written")
            raise FloatingPointError(f"weights became NaN or inf at step {self.step} ({bad}); not saved; {kept} "
                                     f"(try a lower lr)")
        if final and self.saved_step == self.step and not self.ema_reset and (self.out / STATE).is_file():
            return      # this very step is on disk (a resume past the end; a checkpoint at the last step): writing
            # it again could only fail (a full disk), and then no --resume could ever export it
        tensors, meta = self.state_tensors()
        tmp = self.out / f".{PREV_STATE}.link"
        try:
            if (self.out / STATE).is_file() and self.saved_step != self.step:     # the current state becomes the
                # previous one, without a copy (not when it is this very step, written again at the end)
                tmp.unlink(missing_ok=True)
                os.link(self.out / STATE, tmp)
                os.replace(tmp, self.out / PREV_STATE)
            atomic_save_tensors({k: v.detach().cpu() for k, v in tensors.items()}, self.out / STATE, metadata=meta)
        except OSError as e:
            try:
                tmp.unlink(missing_ok=True)     # a link made before the disk filled up
            except OSError:
                pass
            kept = f"the previous checkpoint (step {self.saved_step}) is kept" if self.saved_step is not None \
                else "no checkpoint has been written yet"
            msg = f"could not write {self.out / STATE} at step {self.step} ({e.strerror or e}); {kept}"
            if final:
                raise OSError(msg) from None
            print(f"\nwarning: {msg}; training goes on and tries again at the next checkpoint", file=sys.stderr)
            return
        self.saved_step = self.step

    def read_state(self, path: Path) -> tuple[dict, dict]:
        """(tensors, metadata) of a training state file, or a one-line ConfigError naming it (and the previous
        good state, where there is one) when it is truncated, garbage or incomplete."""
        from safetensors import SafetensorError, safe_open
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(path))
            missing = [k for k in ("rng.data", "ema.n_averaged") if k not in tensors]
            missing += [] if "rng.dropout" in tensors or "rng.torch" in tensors else ["rng.dropout"]
            missing += [k for k in ("step", "wall", "config", "param_groups") if k not in meta]
            if missing:
                raise ValueError(f"no {', '.join(missing)}")
            config = json.loads(meta["config"])
            if not 0 <= int(meta["step"]) <= 10 ** 9 or not 0 <= float(meta["wall"]) < float("inf"):
                raise ValueError(f"step {meta['step']}, wall time {meta['wall']} in its metadata")
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            prev = self.out / PREV_STATE
            hint = (f"; the previous checkpoint is {prev}: rename it to {STATE} to resume from it"
                    if prev.is_file() and prev != path else "")
            raise ConfigError(f"{path}: not a usable training state ({str(e).splitlines()[0][:100]}){hint}") from None
        return tensors, {**meta, "config": config}

    def check_resume(self, old: dict) -> None:
        """Refuse to resume with a different network, forward process or data shape (RESUME_FIXED), naming the
        first field that differs."""
        new, old = _resume_view(to_dict(self.cfg)), _resume_view(old)
        for key in RESUME_FIXED:
            a, b = old, new
            for part in key.split("."):
                a, b = (a or {}).get(part), (b or {}).get(part)
            if a is not None and a != b:
                diff = key
                if isinstance(a, dict) and isinstance(b, dict):
                    diff = next(f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
                    a, b = a.get(diff.rsplit(".", 1)[1]), b.get(diff.rsplit(".", 1)[1])
                raise ConfigError(f"{self.out / STATE}: cannot resume with {diff} = {b!r}; the state was trained with "
                                  f"{a!r} (start a new out_dir to train it that way)")

    def load_state(self) -> None:
        tensors, meta = self.read_state(self.out / STATE)
        self.check_resume(meta["config"])
        self.net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.ema.module.load_state_dict({k[4:]: v for k, v in tensors.items()
                                         if k.startswith("ema.") and k != "ema.n_averaged"})
        self.ema.n_averaged.copy_(tensors["ema.n_averaged"])
        state = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, pid, name = k.split(".", 2)
                state.setdefault(int(pid), {})[name] = v
        self.opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
        # a checkpoint written before the trainer had its own dropout stream saved torch's global one
        self.dropout_gen.set_state(tensors["rng.dropout"] if "rng.dropout" in tensors else tensors["rng.torch"])
        self.gen.set_state(tensors["rng.data"])
        if getattr(self, "distill", None) is not None:
            self.distill.load_state(tensors, self.mcfg)
        if self.rank:   # every rank keeps its own data stream
            self.gen.manual_seed(self.cfg.seed * 1000 + self.rank + 1 + int(meta["step"]))
        self.step = int(meta["step"])
        self.wall = float(meta["wall"])
        self.saved_step = self.step


def lock_folder(out: Path):
    """Hold an exclusive lock on ``out`` while a training writes it (released when the file is closed or the
    process dies, kill -9 included). A second training of the same folder stops with a one-line message."""
    import fcntl
    f = open(out / LOCK, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise ConfigError(f"{out}: another training is writing this folder; wait for it to finish or use another "
                          f"out_dir") from None
    return f


def clean_debris(out: Path, step: int) -> None:
    """At a (re)start, with the folder locked: remove the temporary files of writes that were killed, and cut
    log.csv back to the resumed step (rows after it were trained again, and would repeat in the log and plot)."""
    for tmp in [*out.glob(".*.tmp"), *out.glob(".*.link")]:
        tmp.unlink(missing_ok=True)
    log = out / "log.csv"
    if log.is_file():
        rows = list(csv.reader(log.read_text().splitlines()))
        keep = rows[:1] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= step]
        if len(keep) != len(rows):
            text = io.StringIO()
            csv.writer(text).writerows(keep)
            atomic_write_bytes(log, text.getvalue().encode())

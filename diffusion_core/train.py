"""The training loop: one command for every model we ship (base, linear/cosine, experts, cold, SR, pose).

* objectives: eps / x0 / v prediction (Ho et al. 2020; Salimans & Ho 2022), optional min-SNR-gamma
  weighting (Hang et al. 2023), label dropout for classifier-free guidance (Ho & Salimans 2022),
  cold diffusion with any degradation and an L1 loss (Bansal et al. 2022);
* experts: timesteps drawn from [t_lo, t_hi) and initialised from a parent checkpoint (eDiff-I);
* super-resolution: the low-res condition is the downsampled target, upsampled back and noise-augmented
  (Ho et al. 2021), trained on random crops;
* AdamW + linear warmup, gradient clipping, EMA weights (torch.optim.swa_utils.AveragedModel);
* atomic checkpoints (model, EMA, optimizer, step, RNG) every N steps and on SIGINT/SIGTERM; --resume;
* DistributedDataParallel when launched by torchrun (gloo on CPU, nccl on CUDA).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import shlex
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.optim.swa_utils import AveragedModel

from . import parallel
from .checkpoint import atomic_save_tensors, atomic_write_bytes, load_network, save_model, write_json
from .conditioning import Condition, LabelHiding, augment_low_res, drop_condition, hide_labels
from .config import ConfigError, DiffusionConfig, ModelConfig, UNetConfig, from_dict, to_dict
from .data import DataConfig, ImageData, load_data
from .degradations import make_degradation
from .denoisers import min_snr_weight, training_target
from .schedules import make_schedule
from .unet import UNet, count_parameters, load_parent_state

STATE = "train_state.safetensors"
PREV_STATE = "train_state.prev.safetensors"     # the checkpoint before the last one (a hard link: no copy)
LOCK = ".train.lock"
# (field, lo, hi) of TrainConfig's numbers; a 0 in checkpoint_every or log_every divided by zero
TRAIN_BOUNDS = (("steps", 1, 10 ** 9), ("batch_size", 1, 65536), ("lr", 0.0, 1.0), ("warmup", 0, 10 ** 9),
                ("weight_decay", 0.0, 1.0), ("grad_clip", 0.0, 1e6), ("ema_decay", 0.0, 1.0), ("p_uncond", 0.0, 1.0),
                ("min_snr_gamma", 0.0, 1e6), ("low_res", 0, 1024), ("crop", 0, 1024), ("aug_max", 0.0, 1.0),
                ("seed", 0, 2 ** 31 - 1), ("threads", 0, 1024), ("checkpoint_every", 1, 10 ** 9),
                ("sample_every", 0, 10 ** 9), ("log_every", 1, 10 ** 9), ("sample_steps", 1, 1000))
# What a resumed run may not change: the network, the forward process and what the data is (a model trained as
# cosine / eps and resumed as linear / v would continue silently, then be exported as the new one).
RESUME_FIXED = ("task", "unet", "diffusion", "low_res", "crop", "data.source", "data.image_size", "data.channels")
PARENT_RECORD = "parent_training.json"


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


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs. Every field has a default; ``--set key=value`` overrides any."""

    out_dir: str = "runs/default"
    task: str = "generate"              # generate | super_resolution | pose
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    steps: int = 10000                  # optimizer steps in total (the run stops there)
    batch_size: int = 64                # per process
    lr: float = 5e-4
    warmup: int = 500
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    p_uncond: float = 0.1               # label / image dropout for classifier-free guidance
    label_hiding: LabelHiding = field(default_factory=LabelHiding)   # partial labels (only with unet.label_mask)
    min_snr_gamma: float = 0.0          # 0: off; 5 is the paper's choice
    low_res: int = 0                    # super-resolution: size of the low-res input
    crop: int = 0                       # super-resolution: train on random crops of this size (0: full)
    aug_max: float = 0.2                # super-resolution: max noise-augmentation level of the condition
    parent: str = ""                    # initialise from this checkpoint folder (experts branch from the base;
                                        # a label_mask network from one without, unet.load_parent_state)
    seed: int = 0
    threads: int = 0                    # torch threads per process (0: leave torch's default)
    device: str = "auto"                # auto | cpu | cuda
    amp: bool = False                   # bf16 autocast (CPU and CUDA), fp32 master weights and optimizer
    checkpoint_every: int = 500
    sample_every: int = 1000
    log_every: int = 50
    sample_steps: int = 25
    description: str = ""

    def __post_init__(self):
        if self.task not in ("generate", "super_resolution", "pose"):
            raise ConfigError(f"task must be generate, super_resolution or pose, got {self.task!r}")
        if self.task == "super_resolution" and not (0 < self.low_res < self.data.image_size):
            raise ConfigError("super_resolution needs 0 < low_res < data.image_size")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")
        for name, lo, hi in TRAIN_BOUNDS:
            v = getattr(self, name)
            if not lo <= v <= hi:
                raise ConfigError(f"{name} must be in [{lo}, {hi}], got {v}")


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(data: dict, sets: list[str]) -> dict:
    """``--set a.b=value``: value is parsed as JSON when possible, else taken as a string."""
    data = json.loads(json.dumps(data))
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {p} is not a section")
        node[parts[-1]] = parse_value(value)
    return data


def load_train_config(path: str | None, sets: list[str]) -> TrainConfig:
    data = {}
    if path:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
    return from_dict(TrainConfig, apply_overrides(data, sets))


def model_config(cfg: TrainConfig, data: ImageData) -> ModelConfig:
    """The ModelConfig saved with the weights; label names and channels come from the data."""
    c = cfg.data.channels
    cond_ch = 0
    if cfg.task == "super_resolution":
        cond_ch = c
    elif cfg.task == "pose" or data.cond is not None:
        cond_ch = data.cond.shape[-1] if data.cond is not None else 1
    num_labels = 0 if data.labels is None or cfg.task == "super_resolution" else data.labels.shape[1]
    unet = replace(cfg.unet, in_channels=c, out_channels=c, num_labels=num_labels, cond_channels=cond_ch,
                   aug_level_embedding=cfg.task == "super_resolution",
                   image_size=cfg.crop or cfg.data.image_size)
    return ModelConfig(unet=unet, diffusion=cfg.diffusion, label_names=data.label_names if num_labels else (),
                       multi_label=data.multi_label and num_labels > 0, task=cfg.task, low_res=cfg.low_res,
                       high_res=cfg.data.image_size if cfg.task == "super_resolution" else 0,
                       description=cfg.description or data.description)


# ------------------------------------------------------------------------------------------------
class Trainer:
    def __init__(self, cfg: TrainConfig, command: str = "", resume: bool = False, progress: bool = True,
                 reset_ema: bool = False):
        self.cfg, self.command, self.progress = cfg, command, progress
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        dev = cfg.device
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        if dev == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda requested but CUDA is not available")
        if self.world > 1:
            import torch.distributed as dist
            if not dist.is_initialized():
                dist.init_process_group("nccl" if dev == "cuda" else "gloo")
            if dev == "cuda":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        self.device = torch.device(dev if dev == "cpu" else f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.out = Path(cfg.out_dir)
        self.data = load_data(cfg.data)
        self.mcfg = model_config(cfg, self.data)
        with torch.random.fork_rng(devices=[]):     # torch's global generator is left as it was
            torch.manual_seed(cfg.seed)     # the network's initialisation (identical on every rank)
            self.net = UNet(self.mcfg.unet).to(self.device)
        if cfg.parent:
            pcfg, pnet = load_network(Path(cfg.parent))
            try:
                load_parent_state(self.net, pcfg.unet, pnet.state_dict())
            except ValueError as e:
                raise ConfigError(f"{cfg.parent}: {e}") from None
        self.ema = AveragedModel(self.net, multi_avg_fn=ema_with_warmup(cfg.ema_decay), use_buffers=True)
        self.opt = adamw(self.net.parameters(), cfg.lr, cfg.weight_decay)
        self.model = self.net
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel
            self.model = DistributedDataParallel(self.net, device_ids=None if dev == "cpu" else [self.device.index])
        d = cfg.diffusion
        self.schedule = make_schedule(d.schedule, d.T, d.beta_1, d.beta_T)
        self.degradation = make_degradation(d.degradation, d.T, self.schedule) if d.is_cold else None
        self.t_lo, self.t_hi = (d.t_range[0], d.t_range[1]) if d.t_range else (0, d.T)
        self.gen = torch.Generator().manual_seed(cfg.seed * 1000 + self.rank + 1)   # data + noise stream
        self.dropout_gen = torch.Generator().manual_seed(cfg.seed * 1000 + 500 + self.rank)  # dropout masks' seeds
        self.step, self.wall = 0, 0.0
        self.saved_step: int | None = None        # the step of the last checkpoint on disk
        self.stop_requested = False
        if resume and (self.out / STATE).is_file():
            self.load_state()
            if reset_ema:   # restart the average from the current weights (warmup applies again)
                self.ema.n_averaged.zero_()
        elif resume and self.rank == 0:
            print(f"no {self.out / STATE} yet; starting from scratch", file=sys.stderr)

    # ---- one optimisation step ------------------------------------------------------------------
    def make_batch(self):
        cfg, g = self.cfg, self.gen
        b = cfg.batch_size
        idx = torch.randint(len(self.data), (b,), generator=g)
        flip = torch.rand(b, generator=g) < 0.5 if cfg.data.hflip else None
        batch = self.data.batch(idx, flip)
        x0 = batch["image"]
        cond = None
        if cfg.task == "super_resolution":
            low = F.interpolate(x0, size=(cfg.low_res, cfg.low_res), mode="area")
            up = F.interpolate(low, size=x0.shape[-2:], mode="bicubic", align_corners=False).clamp(-1, 1)
            aug = torch.rand(b, generator=g) * cfg.aug_max
            up = augment_low_res(up, aug, torch.randn(up.shape, generator=g))
            if cfg.crop and cfg.crop < x0.shape[-1]:
                ys = torch.randint(x0.shape[-2] - cfg.crop + 1, (b,), generator=g)
                xs = torch.randint(x0.shape[-1] - cfg.crop + 1, (b,), generator=g)
                x0 = torch.stack([x0[i, :, y:y + cfg.crop, x:x + cfg.crop] for i, (y, x) in enumerate(zip(ys, xs))])
                up = torch.stack([up[i, :, y:y + cfg.crop, x:x + cfg.crop] for i, (y, x) in enumerate(zip(ys, xs))])
            cond = Condition(image=up, aug_level=aug, uncond=torch.zeros(b, dtype=torch.bool))
        else:
            labels = batch.get("labels")
            image = batch.get("cond")
            known = hide_labels(labels, cfg.label_hiding, g) if labels is not None and cfg.unet.label_mask else None
            if labels is not None or image is not None:
                cond = drop_condition(Condition(labels=labels, image=image, uncond=torch.zeros(b, dtype=torch.bool),
                                                known=known), cfg.p_uncond, g)
        t = torch.randint(self.t_lo, self.t_hi, (b,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        return x0, t, eps, cond

    def loss(self, x0, t, eps, cond) -> torch.Tensor:
        d = self.cfg.diffusion
        dev = self.device
        x0, t, eps = x0.to(dev), t.to(dev), eps.to(dev)
        cond = cond.to(dev) if cond is not None else None
        if d.is_cold:
            x_t = self.degradation(x0, t, eps)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.cfg.amp):
                out = self.model(x_t, t, cond)
            return (out.float() - x0).abs().mean()      # Bansal et al. 2022 train with an L1 loss
        x_t = self.schedule.q_sample(x0, t, eps)                          # DDPM eq. 4
        ab = self.schedule.alpha_bar_at(t.cpu()).to(dev, torch.float32)
        target = training_target(x0, eps, ab, d.prediction)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.cfg.amp):
            out = self.model(x_t, t, cond)
        per = (out.float() - target).pow(2).mean(dim=(1, 2, 3))
        if self.cfg.min_snr_gamma > 0:
            per = per * min_snr_weight(ab / (1 - ab), self.cfg.min_snr_gamma, d.prediction)
        return per.mean()

    def lr_at(self, step: int) -> float:
        return self.cfg.lr * min(1.0, (step + 1) / max(1, self.cfg.warmup))

    # ---- state ----------------------------------------------------------------------------------
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
        tensors, meta = self.state_tensors()
        try:
            if (self.out / STATE).is_file() and self.saved_step != self.step:     # the current state becomes the
                # previous one, without a copy (not when it is this very step, written again at the end)
                tmp = self.out / f".{PREV_STATE}.link"
                tmp.unlink(missing_ok=True)
                os.link(self.out / STATE, tmp)
                os.replace(tmp, self.out / PREV_STATE)
            atomic_save_tensors({k: v.detach().cpu() for k, v in tensors.items()}, self.out / STATE, metadata=meta)
        except OSError as e:
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
            int(meta["step"])
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
        if self.rank:   # every rank keeps its own data stream
            self.gen.manual_seed(self.cfg.seed * 1000 + self.rank + 1 + int(meta["step"]))
        self.step = int(meta["step"])
        self.wall = float(meta["wall"])
        self.saved_step = self.step

    # ---- outputs --------------------------------------------------------------------------------
    def sample_grid(self, path: Path, n: int = 64) -> None:
        from .images import grid
        from .pipeline import Pipeline
        pipe = Pipeline("model", self.mcfg, self.out, net=self.ema.module.eval())
        kw = {}
        cond_img = None
        if self.mcfg.unet.num_labels and not self.mcfg.multi_label:
            labels = [i % self.mcfg.unet.num_labels for i in range(n)]
        else:
            labels = None
        imgs = []
        if self.cfg.task == "super_resolution":
            idx = torch.arange(min(n, len(self.data)))
            hi = self.data.batch(idx)["image"]
            low = F.interpolate(hi, size=(self.cfg.low_res, self.cfg.low_res), mode="area")
            out = pipe.sample(len(idx), low_res=low, sampler="dpm++", steps=self.cfg.sample_steps, seed=0)
            up = F.interpolate(low, size=hi.shape[-2:], mode="nearest")
            grid(torch.cat([up[:16], out[:16], hi[:16]]), nrow=16).save(path)
            self.net.train()
            return
        sampler = "cold" if self.mcfg.diffusion.is_cold else "ddim"
        if self.mcfg.diffusion.is_cold and pipe.prior is None:     # start from the asked class, as exported
            pipe.prior, pipe.prior_labels = cold_prior(self.data, self.degradation, self.cfg.diffusion.T)
        for i in range(n):
            if self.data.cond is not None:
                cond_img = self.data.batch(torch.tensor([i % len(self.data)]))["cond"][0]
            if labels is not None:
                kw = {"labels": [labels[i]], "guidance": 2.0}
            elif self.mcfg.multi_label:
                lab = self.data.labels[i % len(self.data)]
                kw = {"labels": [int(j) for j in lab.nonzero()[0]], "guidance": 2.0}
            imgs.append(pipe.sample(1, sampler=sampler, steps=self.cfg.sample_steps, seed=i, cond_image=cond_img, **kw))
        out = torch.cat(imgs)
        if self.data.cond is not None:
            conds = self.data.batch(torch.arange(n) % len(self.data))["cond"]
            conds = conds.expand(-1, out.shape[1], -1, -1)
            out = torch.cat([torch.stack([c, o]) for c, o in zip(conds[:32], out[:32])])
        grid(out, nrow=8).save(path)
        self.net.train()

    def export(self, folder: Path) -> Path:
        """EMA weights + config + the record of how they were made, into a checkpoint folder."""
        extra = None
        if self.cfg.diffusion.is_cold and not self.degradation.needs_noise:
            prior, labels = cold_prior(self.data, self.degradation, self.cfg.diffusion.T)
            extra = {"prior": prior.half(), **({"prior_labels": labels} if labels is not None else {})}
        save_model(folder, self.mcfg, self.ema.module.state_dict(), half=True, extra=extra)
        write_json(folder / "train_config.json", to_dict(self.cfg))
        runs = (self.out / "commands.txt").read_text().splitlines() if (self.out / "commands.txt").exists() else []
        record = {"command": self.command, "all_commands": runs, "steps": self.step, "wall_time_s": round(self.wall, 1),
                  "images_seen": self.step * self.cfg.batch_size * self.world, "processes": self.world,
                  "parameters": count_parameters(self.net), "data": self.data.description,
                  "device": str(self.device), "torch": torch.__version__,
                  "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        if self.cfg.parent:     # the lineage: how the starting weights were made, as recorded at the first start
            lineage = self.out / PARENT_RECORD
            record["parent"] = {"path": self.cfg.parent,
                                "training": json.loads(lineage.read_text()) if lineage.is_file() else None}
        write_json(folder / "training.json", record)
        return folder

    # ---- the loop -------------------------------------------------------------------------------
    def run(self) -> Path:
        cfg = self.cfg
        lock = None
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            lock = lock_folder(self.out)
            clean_debris(self.out, self.step)
            if self.step >= cfg.steps:
                print(f"{self.out / STATE} is at step {self.step}, at or past steps = {cfg.steps}: nothing to train; "
                      f"exporting step {self.step}", file=sys.stderr)
            write_json(self.out / "train_config.json", to_dict(cfg))
            (self.out / "samples").mkdir(exist_ok=True)
            parent_record = Path(cfg.parent) / "training.json"
            if cfg.parent and parent_record.is_file() and not (self.out / PARENT_RECORD).exists():
                # kept from the first start: the parent folder may be replaced (retrained in place) before export
                atomic_write_bytes(self.out / PARENT_RECORD, parent_record.read_bytes())
            with open(self.out / "commands.txt", "a") as f:     # every (re)start of this run, in order
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} step {self.step}: {self.command}\n")
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)} \
            if threading_main() else {}
        log_path = self.out / "log.csv"
        new_log = not log_path.exists()
        bar = None
        if self.progress and self.rank == 0:
            from tqdm import tqdm
            bar = tqdm(total=cfg.steps, initial=self.step, unit="step", dynamic_ncols=True, mininterval=2.0)
        self.net.train()
        t_last, n_last, loss_acc, loss_n = time.time(), 0, 0.0, 0
        try:
            logf = open(log_path, "a", newline="") if self.rank == 0 else None
            writer = csv.writer(logf) if logf else None
            if writer and new_log:
                writer.writerow(["step", "loss", "lr", "images_per_s", "wall_s"])
            while self.step < cfg.steps and not self.stop_requested:
                t0 = time.time()
                for group in self.opt.param_groups:
                    group["lr"] = self.lr_at(self.step)
                self.opt.zero_grad(set_to_none=True)
                x0, t, eps, cond = self.make_batch()
                if self.world > 1 or self.device.type != "cpu":    # DDP reduces once per backward
                    seed = int(torch.randint(2 ** 62, (1,), generator=self.dropout_gen))
                    with parallel.seeded(seed, self.device):
                        loss = self.loss(x0, t, eps, cond)
                    loss.backward()
                else:   # one piece of the batch per CPU core (parallel.py)
                    loss = backward_in_parts(lambda a, b: self.loss(x0[a:b], t[a:b], eps[a:b],
                                                                    cond.index(slice(a, b)) if cond is not None else None),
                                             x0.shape[0], list(self.net.parameters()), generator=self.dropout_gen)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss.item()} at step {self.step}; stopping. The last good "
                                             f"checkpoint is kept in {self.out / STATE} (try a lower lr)")
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
                self.opt.step()
                self.ema.update_parameters(self.net)
                self.step += 1
                self.wall += time.time() - t0
                loss_acc += loss.item()
                loss_n += 1
                n_last += cfg.batch_size * self.world
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    ips = n_last / max(time.time() - t_last, 1e-9)
                    if writer:
                        writer.writerow([self.step, f"{loss_acc / loss_n:.5f}", f"{self.lr_at(self.step):.2e}",
                                         f"{ips:.1f}", f"{self.wall:.1f}"])
                        logf.flush()
                    if bar:
                        bar.set_postfix(loss=f"{loss_acc / loss_n:.4f}", img_s=f"{ips:.0f}")
                    t_last, n_last, loss_acc, loss_n = time.time(), 0, 0.0, 0
                if bar:
                    bar.update(1)
                if self.step % cfg.checkpoint_every == 0:
                    self.save_state()
                if self.rank == 0 and cfg.sample_every and self.step % cfg.sample_every == 0:
                    self.sample_grid(self.out / "samples" / f"step{self.step:07d}.png")
            self.save_state(final=True)
            if self.world > 1:
                self.check_ranks_agree()
            if self.rank == 0 and not self.stop_requested:
                export = self.export(self.out / "model")
                self.sample_grid(export / "samples.png")
                plot_loss(log_path, export / "loss.png")
            if self.world > 1:      # leave together: no rank tears down gloo while another still uses it
                import torch.distributed as dist
                dist.barrier()
                dist.destroy_process_group()
        finally:
            if bar:
                bar.close()
            if self.rank == 0 and logf:
                logf.close()
            if lock is not None:
                lock.close()
            for s, h in old.items():
                signal.signal(s, h)
        return self.out / "model"

    def check_ranks_agree(self) -> None:
        """DDP keeps replicas identical; verify it: every rank's parameter checksum is gathered on rank 0."""
        import torch.distributed as dist
        flat = torch.cat([p.detach().double().flatten().cpu() for p in self.net.parameters()])
        mine = torch.stack([flat.sum(), (flat * torch.arange(1, len(flat) + 1, dtype=torch.float64)).sum()])
        gathered = [torch.zeros_like(mine) for _ in range(self.world)]
        dist.all_gather(gathered, mine.to(self.device) if self.device.type == "cuda" else mine)
        sums = [g.cpu().tolist() for g in gathered]
        if self.rank == 0:
            write_json(self.out / "ddp_check.json", {"world_size": self.world, "param_checksums": sums,
                                                     "identical": all(s == sums[0] for s in sums)})

    def _on_signal(self, signum, frame):
        self.stop_requested = True
        print(f"\nsignal {signum}: saving a checkpoint at the end of this step, then stopping", file=sys.stderr)


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
    for tmp in out.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    log = out / "log.csv"
    if log.is_file():
        rows = list(csv.reader(log.read_text().splitlines()))
        keep = rows[:1] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= step]
        if len(keep) != len(rows):
            text = io.StringIO()
            csv.writer(text).writerows(keep)
            atomic_write_bytes(log, text.getvalue().encode())


def backward_in_parts(loss_of: Callable[[int, int], torch.Tensor], b: int, params: list[torch.Tensor],
                      min_rows: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gradient of the mean loss over b rows into ``p.grad``, computed as row pieces on the CPU's cores.

    ``loss_of(start, stop)`` is the mean loss over rows [start, stop). Each worker (``parallel.run_pieces``)
    takes the gradient of (stop - start) / b times its piece's loss with its own dropout generator, seeded
    from ``generator`` (the trainer's dropout stream; None: torch's global one), so a run is reproducible; the
    pieces' gradients are summed in piece order. The sum of the pieces is the full batch's mean loss and
    gradient (up to rounding). One piece (one core, or a small batch): plain ``backward()``. Returns the loss,
    detached."""
    w = parallel.workers()
    ranges = parallel.split_rows(b, w, min_rows, max_rows=parallel.TRAIN_PIECE_ROWS if w > 1 else None)
    seeds = torch.randint(2 ** 62, (len(ranges),), generator=generator).tolist()
    if len(ranges) == 1:
        with parallel.seeded(seeds[0]):
            loss = loss_of(0, b)
        loss.backward()
        return loss.detach()

    def piece(start: int, stop: int, seed: int):
        with parallel.seeded(seed):
            loss = loss_of(start, stop) * ((stop - start) / b)
            return loss.detach(), torch.autograd.grad(loss, params, allow_unused=True)

    results = parallel.run_pieces(piece, [(s, e, seed) for (s, e), seed in zip(ranges, seeds)], grad=True)
    used = [i for i in range(len(params)) if any(r[1][i] is not None for r in results)]
    grads = [[r[1][i] for r in results if r[1][i] is not None] for i in used]
    if all(len(g) == len(results) for g in grads):      # one foreach call per piece, in piece order
        total = torch._foreach_add(*[[g[k] for g in grads] for k in (0, 1)])
        for k in range(2, len(results)):
            torch._foreach_add_(total, [g[k] for g in grads])
    else:                                               # a parameter unused by some piece
        total = [sum(g[1:], g[0]) for g in grads]
    for i, g in zip(used, total):
        p = params[i]
        g = in_layout_of(p, g)      # backward() gives gradients their parameter's layout, autograd.grad does not
        p.grad = g if p.grad is None else p.grad + g
    return sum(r[0] for r in results)


def in_layout_of(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``t`` (shaped like parameter ``p``) with ``p``'s strides, copied only if they differ: the fused AdamW
    kernel walks a parameter, its gradient and its moments as flat memory (see ``adamw``)."""
    return t if t.stride() == p.stride() else torch.empty_like(p).copy_(t)


def adamw(params, lr: float, weight_decay: float = 0.01) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019) with torch's fused kernel: one pass over all parameters instead of a
    dozen small ops per tensor (3.5 ms a step for the fashion U-Net's 2.4M parameters on 2 cores, against 8.9).
    The kernel walks a parameter, its gradient and its moments as flat memory, so all must share the
    parameter's layout (channels_last convolutions): moments loaded from a checkpoint are contiguous and
    gave wrong steps. ``load_state_dict`` therefore gives them their parameter's layout (and keeps the fused
    kernel for a state saved by the unfused optimizer); ``backward_in_parts`` checks the gradients."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)

    def keep_fused(opt, state_dict):        # on copies: the caller's dict stays as it was
        return {**state_dict, "param_groups": [{**g, "fused": True, "foreach": None}
                                               for g in state_dict["param_groups"]]}

    def moments_like_parameters(opt):
        for p, st in opt.state.items():
            for k, v in st.items():
                if torch.is_tensor(v) and v.shape == p.shape:
                    st[k] = in_layout_of(p, v)

    opt.register_load_state_dict_pre_hook(keep_fused)
    opt.register_load_state_dict_post_hook(moments_like_parameters)
    return opt


def cold_prior(data, degradation, T: int, n: int = 256) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n fully degraded training images (seeded; Bansal et al.'s generation starts from degraded data), and
    their class indices when the data has one class per image (one-hot labels), else None."""
    g = torch.Generator().manual_seed(12345)
    idx = torch.randint(len(data), (n,), generator=g)
    b = data.batch(idx)
    x0 = b["image"]
    prior = degradation(x0, torch.full((n,), T - 1, dtype=torch.long), torch.randn(x0.shape, generator=g))
    labels = b.get("labels")
    single = labels is not None and labels.dim() == 2 and bool((labels.sum(1) == 1).all())
    return prior, (labels.argmax(1).long() if single else None)


def ema_with_warmup(decay: float):
    """EMA update for AveragedModel with the usual warmup: decay_n = min(decay, (1 + n) / (10 + n)).

    Without it a 0.999 EMA still holds 37% of the random initialisation after 1,000 steps, and its samples
    are noise; with it the average tracks the weights from the start."""
    @torch.no_grad()
    def update(ema_params, params, num_averaged):
        d = min(decay, (1.0 + float(num_averaged)) / (10.0 + float(num_averaged)))
        if torch.is_floating_point(ema_params[0]):
            torch._foreach_lerp_(ema_params, params, 1.0 - d)
        else:
            for e, p in zip(ema_params, params):
                e.copy_(p)
    return update


def threading_main() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def plot_loss(csv_path: Path, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = list(csv.DictReader(open(csv_path)))
    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    loss = [float(r["loss"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, loss)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["python", "-m", "diffusion_core"] + sys.argv[1:])


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, reset_ema: bool = False) -> Path:
    return Trainer(cfg, command_line(), resume, progress, reset_ema).run()

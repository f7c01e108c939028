"""A training run's settings: ``TrainConfig`` (every field has a default; ``--set key=value`` overrides any),
read from JSON with overrides, and the ``ModelConfig`` the weights are saved with."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..checkpoint import work_problem
from ..conditioning import LabelHiding
from ..config import MAX_JSON_DEPTH, ConfigError, DiffusionConfig, ModelConfig, UNetConfig, from_dict, parse_json
from ..data import DataConfig, ImageData

# (field, lo, hi) of TrainConfig's numbers; a 0 in checkpoint_every or log_every divided by zero
TRAIN_BOUNDS = (("steps", 1, 10 ** 9), ("batch_size", 1, 65536), ("lr", 0.0, 1.0), ("warmup", 0, 10 ** 9),
                ("weight_decay", 0.0, 1.0), ("grad_clip", 0.0, 1e6), ("ema_decay", 0.0, 1.0), ("p_uncond", 0.0, 1.0),
                ("min_snr_gamma", 0.0, 1e6), ("low_res", 0, 1024), ("crop", 0, 1024), ("aug_max", 0.0, 1.0),
                ("seed", 0, 2 ** 31 - 1), ("threads", 0, 1024), ("checkpoint_every", 1, 10 ** 9),
                ("sample_every", 0, 10 ** 9), ("log_every", 1, 10 ** 9), ("sample_steps", 1, 1000),
                ("sample_images", 1, 64), ("balance", 0.0, 1.0), ("balance_mix", 0.0, 1.0))

@dataclass(frozen=True)
class DistillConfig:
    """Distillation of a shipped model into a few-step student: progressive (Salimans & Ho 2022) or consistency
    distillation (Song et al. 2023), with guidance as the student's input (Meng et al. 2023); ``training/distill.py``.
    Empty ``teacher``: an ordinary run. The student's network, forward process and labels are the teacher's (the
    run's unet and diffusion sections are not used)."""

    teacher: str = ""                   # the teacher's model folder; the student starts from its weights
    method: str = "progressive"         # progressive | consistency
    start_steps: int = 64               # progressive: round 0's teacher grid, spaced_timesteps(T, start_steps,
                                        # "trailing"); consistency: the grid of the teacher's ODE steps (N)
    student_steps: int = 4              # the student's default steps; progressive: each round halves the steps,
                                        # down to this: log2(start / student) rounds; consistency: one round
    guidance: tuple[float, ...] = (1.0, 4.0)   # w ~ U[w_min, w_max] per example, an input of the student; []: none
    prediction: str = "v"               # the student's output (Salimans & Ho sec. 4: eps fails at few steps)

    @property
    def rounds(self) -> int:
        """log2(start_steps / student_steps), the rounds of halving (cfg.steps is split evenly over them); 1 for
        consistency distillation."""
        if self.method == "consistency":
            return 1
        return max(self.start_steps // self.student_steps, 1).bit_length() - 1

    def __post_init__(self):
        if not self.teacher:
            return
        if self.method not in ("progressive", "consistency"):
            raise ConfigError(f"distill.method must be progressive or consistency, got {self.method!r}")
        if not 1 <= self.student_steps < self.start_steps <= 4096 or (
                self.method == "progressive" and self.start_steps != self.student_steps * 2 ** self.rounds):
            raise ConfigError(f"distill.start_steps must be student_steps times a power of 2 (at most 4096), got "
                              f"{self.start_steps} and {self.student_steps}")
        if self.guidance and (len(self.guidance) != 2 or not 0 <= self.guidance[0] <= self.guidance[1] <= 30):
            raise ConfigError(f"distill.guidance must be [w_min, w_max] within [0, 30], got {list(self.guidance)}")
        if self.prediction not in ("x0", "v"):
            raise ConfigError(f"distill.prediction must be x0 or v, got {self.prediction!r}")


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
    balance: float = 0.0                # multi-label data: attribute-balanced sampling (objective.sample_weights)
    balance_mix: float = 1.0            # with balance: the share of draws balanced, the rest uniform (the data's mix)
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
    sample_images: int = 64             # images in each preview grid and in the exported samples.png
    description: str = ""
    distill: DistillConfig = field(default_factory=DistillConfig)   # a few-step student of a shipped model

    def __post_init__(self):
        if self.distill.teacher and (self.parent or self.task != "generate"):
            raise ConfigError("distill: a student starts from its teacher (no parent) and generates (task generate)")
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
        side = self.crop or self.data.image_size
        try:            # the network trains at this size (model_config); an impossible one is refused there
            too_much = work_problem(replace(self.unet, image_size=side), side)
        except ConfigError:
            too_much = None
        if too_much:
            raise ConfigError(f"unet: {too_much}")


MAX_TRAIN_CONFIG_BYTES = 1_000_000     # a training config is a few hundred bytes


def parse_value(text: str, key: str = "value"):
    """A ``--set`` value: JSON when it parses as JSON, else the text itself; nesting deeper than MAX_JSON_DEPTH
    is a ConfigError naming the key."""
    try:
        return parse_json(text, f"--set {key}")
    except ConfigError as e:
        if "nested too deeply" in str(e):
            raise
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
        if len(parts) >= MAX_JSON_DEPTH:
            raise ConfigError(f"--set {key[:60]}: a key of {len(parts)} parts; config keys have at most 3")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {p} is not a section")
        node[parts[-1]] = parse_value(value, key.strip())
    return data


def load_train_config(path: str | None, sets: list[str]) -> TrainConfig:
    data = {}
    if path:
        try:
            if Path(path).stat().st_size > MAX_TRAIN_CONFIG_BYTES:
                raise ConfigError(f"{path}: {Path(path).stat().st_size:,} bytes, more than a config file can be "
                                  f"({MAX_TRAIN_CONFIG_BYTES:,})")
            data = parse_json(Path(path).read_text(), str(path))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text file") from None
    try:
        return from_dict(TrainConfig, apply_overrides(data, sets))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None


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

"""Frozen, typed configs saved as JSON beside safetensors weights (DESIGN habit 4).

Unknown keys are rejected with a message naming them; missing keys take the defaults; types are
checked, so a config file can never smuggle in something other than plain data.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field

from .options import MAX_GUIDANCE, MAX_STEPS, SPACINGS, X0_RANGES
from .sampler_registry import DEFAULT_SAMPLER, sampler_names, student_samplers

CONFIG_VERSION = 1
MAX_JSON_DEPTH = 16             # configs nest 3 levels; 5,000 levels made the JSON parser recurse out of the stack


class ConfigError(ValueError):
    """A config (or checkpoint) is malformed. The message is one line and names the problem."""


def json_depth(value, limit: int = MAX_JSON_DEPTH + 1) -> int:
    """Nesting depth of parsed JSON, counted up to ``limit`` (without recursion)."""
    depth, level = 0, [value]
    while level and depth < limit:
        depth += 1
        level = [v for x in level if isinstance(x, (dict, list)) for v in (x.values() if isinstance(x, dict) else x)]
    return depth


def parse_json(text: str, where: str):
    """JSON text -> its value; a one-line ConfigError naming ``where`` for text that is not JSON or nests deeper
    than MAX_JSON_DEPTH (the parser itself recurses: 100,000 levels ended in a RecursionError traceback)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}: not valid JSON ({e})") from None
    except RecursionError:
        raise ConfigError(f"{where}: JSON nested too deeply (more than {MAX_JSON_DEPTH} levels)") from None
    if json_depth(data) > MAX_JSON_DEPTH:
        raise ConfigError(f"{where}: JSON nested too deeply (more than {MAX_JSON_DEPTH} levels)")
    return data


def _check_type(name: str, value, tp):
    origin = typing.get_origin(tp)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        (inner, *_rest) = typing.get_args(tp)
        return tuple(_check_type(f"{name}[{i}]", v, inner) for i, v in enumerate(value))
    if origin is typing.Union or origin is getattr(__import__("types"), "UnionType", None):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _check_type(name, value, args[0])
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, prefix=name + ".")
    raise ConfigError(f"{name}: unsupported type {tp}")


def from_dict(cls, data, prefix: str = ""):
    """Build dataclass ``cls`` from a plain dict, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or cls.__name__}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(prefix + k for k in unknown)} "
                          f"(allowed: {', '.join(sorted(names))})")
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in data]
    if missing:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: missing key(s) {', '.join(missing)}")
    kwargs = {k: _check_type(prefix + k, v, hints[k]) for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{prefix or cls.__name__}: {e}") from None
    return obj


def to_dict(obj) -> dict:
    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        return v
    return conv(obj)


# Bounds of the U-Net's size fields, checked before anything is built. They are far above every model here (and
# the channel bounds above any image: RGB plus a conditioning image); together with checkpoint.MAX_PARAMETERS they
# keep a hostile config.json from allocating gigabytes.
MAX_IMAGE_SIDE = 1024      # the largest image a model is trained at or makes (unet.image_size, low_res, high_res)
UNET_BOUNDS = (("in_channels", 1, 16), ("out_channels", 1, 16), ("base_channels", 1, 1024), ("num_res_blocks", 1, 16),
               ("num_heads", 1, 64), ("num_labels", 0, 10_000), ("cond_channels", 0, 16), ("image_size", 4, MAX_IMAGE_SIDE))


@dataclass(frozen=True)
class UNetConfig:
    """The U-Net's shape. Parameter count grows with ``base_channels**2 * sum(mults**2) * blocks``."""

    in_channels: int = 1            # channels of x_t
    out_channels: int = 1           # channels of the prediction
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (8,)   # feature-map sizes that get self-attention
    num_heads: int = 4
    dropout: float = 0.1
    num_labels: int = 0             # length of the one-/multi-hot label vector (0: unconditional)
    label_mask: bool = False        # also read which labels are known (Condition.known): partial attribute sets
    cond_channels: int = 0          # channels of a conditioning image concatenated to the input
    aug_level_embedding: bool = False   # SR: embed the noise-augmentation level of the condition
    guidance_embedding: bool = False    # the guidance scale w is an input (guided distillation, Meng et al. 2023)
    image_size: int = 32            # the size the network is trained at (it is fully convolutional)

    def __post_init__(self):
        if self.base_channels * max(self.channel_mults or (1,)) > 4096 or len(self.channel_mults) > 8 \
                or self.num_res_blocks > 16 or self.image_size > 4096:
            raise ConfigError("unet: absurd network size requested "
                              f"(base_channels={self.base_channels}, mults={self.channel_mults}, "
                              f"blocks={self.num_res_blocks}, image_size={self.image_size})")
        if not self.channel_mults or min(self.channel_mults) < 1 or self.base_channels < 1:
            raise ConfigError("unet: channel_mults and base_channels must be positive")
        if self.base_channels % 8 and self.base_channels >= 8:
            raise ConfigError("unet: base_channels must be a multiple of 8 (GroupNorm groups)")
        for name, lo, hi in UNET_BOUNDS:
            v = getattr(self, name)
            if not lo <= v <= hi:
                raise ConfigError(f"unet.{name} must be in [{lo}, {hi}], got {v}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"unet.dropout must be in [0, 1), got {self.dropout}")
        if any(not 1 <= r <= self.image_size for r in self.attention_resolutions):
            raise ConfigError(f"unet.attention_resolutions must be feature-map sizes in [1, image_size], "
                              f"got {list(self.attention_resolutions)}")


@dataclass(frozen=True)
class DiffusionConfig:
    """The forward process and what the network predicts."""

    schedule: str = "cosine"        # linear | cosine
    T: int = 1000
    beta_1: float = 1e-4
    beta_T: float = 0.02
    prediction: str = "eps"         # eps | x0 | v
    degradation: str = "noise"      # noise (Gaussian diffusion) or a cold degradation: blur | pixelate | mask | noise_fixed
    t_range: tuple[int, ...] = ()   # expert: [t_lo, t_hi) this model was trained on; () = all
    x0_range: str = "clip"          # how sampling keeps x0_hat in [-1, 1] by default: clip | dynamic | none

    def __post_init__(self):
        if self.schedule not in ("linear", "cosine"):
            raise ConfigError(f"diffusion.schedule must be linear or cosine, got {self.schedule!r}")
        if self.prediction not in ("eps", "x0", "v"):
            raise ConfigError(f"diffusion.prediction must be eps, x0 or v, got {self.prediction!r}")
        if not (1 <= self.T <= 100000):
            raise ConfigError(f"diffusion.T must be in [1, 100000], got {self.T}")
        if self.degradation not in ("noise", "noise_fixed", "blur", "pixelate", "mask"):
            raise ConfigError(f"diffusion.degradation unknown: {self.degradation!r}")
        if self.degradation != "noise" and self.prediction != "x0":
            raise ConfigError("cold diffusion (degradation other than 'noise') needs prediction 'x0'")
        if self.x0_range not in X0_RANGES:
            raise ConfigError(f"diffusion.x0_range must be one of {', '.join(X0_RANGES)}, got {self.x0_range!r}")
        if self.t_range and (len(self.t_range) != 2 or not 0 <= self.t_range[0] < self.t_range[1] <= self.T):
            raise ConfigError(f"diffusion.t_range must be [t_lo, t_hi) within [0, T], got {list(self.t_range)}")
        if self.schedule == "linear" and not 0 < self.beta_1 <= self.beta_T < 1:     # the betas are variances
            bad = "beta_1" if not 0 < self.beta_1 < 1 or self.beta_1 > self.beta_T else "beta_T"
            raise ConfigError(f"diffusion.{bad} out of range: a linear schedule needs 0 < beta_1 <= beta_T < 1, "
                              f"got beta_1 = {self.beta_1}, beta_T = {self.beta_T}")

    @property
    def is_cold(self) -> bool:
        return self.degradation != "noise"


@dataclass(frozen=True)
class SamplingDefaults:
    """How the app samples this model until the user changes it, and why (shown in the model card): chosen
    per model from measurements (for ``fashion``, the solver table in docs/models.md)."""

    sampler: str = DEFAULT_SAMPLER
    steps: int = 25
    spacing: str = "trailing"
    guidance: float = 2.0
    why: str = ""
    held_labels: tuple[str, ...] = ()   # picks guided at weight 1, the others at the guidance scale
                                        # (``denoisers.ClassifierFreeGuidance``; a model with unet.label_mask)

    def __post_init__(self):
        if self.sampler not in sampler_names():
            raise ConfigError(f"sampling.sampler must be one of {', '.join(sampler_names())}, got {self.sampler!r}")
        if self.spacing not in SPACINGS:
            raise ConfigError(f"sampling.spacing must be one of {', '.join(SPACINGS)}, got {self.spacing!r}")
        if not 1 <= self.steps <= MAX_STEPS:
            raise ConfigError(f"sampling.steps must be in [1, {MAX_STEPS}], got {self.steps}")
        if not 0 <= self.guidance <= 30:
            raise ConfigError(f"sampling.guidance must be in [0, 30], got {self.guidance}")
        if len(self.why) > 2000:
            raise ConfigError("sampling.why is longer than 2,000 characters")


# A super-resolution model's defaults when its config names none. Ancestral DDPM removes the grain that a
# deterministic solver leaves on flat backgrounds: on 32 held-out images each (20 DPM-Solver++ steps -> 10 DDPM
# steps, back-projected) SSIM pose-sr 0.930 -> 0.982 (bicubic 0.944), emoji-sr 0.946 -> 0.965 (bicubic 0.906);
# emoji-sr128 (8 images) 0.977 -> 0.982 (bicubic 0.948); 10 steps matched 20 and cost half.
SR_SAMPLING = SamplingDefaults("ddpm", 10, "trailing", 1.0,
                               "super-resolution stages sample with ancestral DDPM, 10 steps: on held-out images its "
                               "output has the SSIM of 20 DDPM steps and above bicubic's, where DPM-Solver++ (20 steps) "
                               "leaves grain on flat backgrounds (docs/models.md, super-resolution)")


@dataclass(frozen=True)
class Distilled:
    """A distilled student's record; empty for every other model. ``teacher``: the model folder it was distilled
    from, as the training config named it; ``sampler``: its own few-step rule (``sampler_registry.student_samplers``) on the
    grid it was distilled on, ``spaced_timesteps(T, steps, "trailing")``; ``guidance``: [w_min, w_max], the
    guidance scales its guidance embedding was trained on (() without one)."""

    teacher: str = ""
    sampler: str = ""
    steps: int = 0
    guidance: tuple[float, ...] = ()

    def __post_init__(self):
        if not self.teacher:
            if self.sampler or self.steps or self.guidance:
                raise ConfigError("distilled: a student's record needs its teacher")
            return
        if self.sampler not in student_samplers():
            raise ConfigError(f"distilled.sampler must be one of {', '.join(student_samplers())}, got {self.sampler!r}")
        if not 1 <= self.steps <= MAX_STEPS:
            raise ConfigError(f"distilled.steps must be in [1, {MAX_STEPS}], got {self.steps}")
        if self.guidance and (len(self.guidance) != 2 or not 0 <= self.guidance[0] <= self.guidance[1] <= MAX_GUIDANCE):
            raise ConfigError(f"distilled.guidance must be [w_min, w_max] within [0, {MAX_GUIDANCE:g}], "
                              f"got {list(self.guidance)}")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild and sample a trained model from its folder."""

    version: int = CONFIG_VERSION
    kind: str = "model"
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    label_names: tuple[str, ...] = ()   # names of the label vector's entries
    multi_label: bool = False           # multi-hot attributes (True) or one class (False)
    task: str = "generate"              # generate | super_resolution | pose
    low_res: int = 0                    # super-resolution: size of the low-res input ...
    high_res: int = 0                   # ... and of the output (the network itself may train on crops)
    description: str = ""
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)   # the app's defaults for this model
    distilled: Distilled = field(default_factory=Distilled)              # a student: its teacher and own sampler

    @property
    def output_size(self) -> int:
        """Side of the images this model makes: a super-resolution model's high resolution (it may train on
        smaller crops), else the U-Net's image size."""
        return self.high_res or self.unet.image_size

    def _check_student(self) -> None:
        d = self.distilled
        if self.sampling.sampler in student_samplers() and self.sampling.sampler != d.sampler:
            raise ConfigError(f"sampling.sampler {self.sampling.sampler!r} is a distilled student's own rule; this "
                              f"model's is {d.sampler or 'none (it is not a student)'}")
        if d.guidance and not self.unet.guidance_embedding:
            raise ConfigError("distilled.guidance needs a network that takes the guidance scale (unet.guidance_embedding)")

    @property
    def sr_factor(self) -> int:
        """How many times a super-resolution model enlarges its input, high_res // low_res (1 for other tasks);
        the network is fully convolutional, so any input size is enlarged by this factor."""
        if self.task != "super_resolution":
            return 1
        return max(1, self.output_size // max(self.low_res, 1))

    def __post_init__(self):
        if self.version != CONFIG_VERSION:
            raise ConfigError(f"config version {self.version} is not supported (expected {CONFIG_VERSION})")
        if self.kind != "model":
            raise ConfigError(f"kind must be 'model' here, got {self.kind!r}")
        if self.label_names and len(self.label_names) != self.unet.num_labels:
            raise ConfigError(f"label_names has {len(self.label_names)} names but unet.num_labels is "
                              f"{self.unet.num_labels}")
        if self.task not in ("generate", "super_resolution", "pose"):
            raise ConfigError(f"task must be generate, super_resolution or pose, got {self.task!r}")
        for name in ("low_res", "high_res"):
            if not 0 <= getattr(self, name) <= MAX_IMAGE_SIDE:
                raise ConfigError(f"{name} must be in [0, {MAX_IMAGE_SIDE}], got {getattr(self, name)}")
        if self.task == "super_resolution" and not 1 <= self.low_res < self.output_size:
            raise ConfigError(f"low_res must be in [1, {self.output_size - 1}] for a super-resolution model (it "
                              f"enlarges low_res px to high_res = {self.output_size} px), got {self.low_res}")
        if self.task == "super_resolution" and self.sampling == SamplingDefaults():     # none given
            object.__setattr__(self, "sampling", SR_SAMPLING)
        if self.unet.label_mask and not self.unet.num_labels:
            raise ConfigError("unet.label_mask needs a model with labels (unet.num_labels > 0)")
        if self.sampling.held_labels and not self.unet.label_mask:
            raise ConfigError("sampling.held_labels needs a model with partial labels (unet.label_mask)")
        self._check_student()
        unknown = [a for a in self.sampling.held_labels if a not in self.label_names]
        if unknown:
            raise ConfigError(f"sampling.held_labels: {', '.join(map(repr, unknown))} not in label_names")

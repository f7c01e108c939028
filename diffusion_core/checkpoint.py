"""Checkpoints on disk: ``config.json`` + ``model.safetensors`` per model; nothing is ever unpickled.

Folder kinds (the ``kind`` key of config.json):
* ``model``:    one network (config.json, model.safetensors, optional prior.safetensors for cold models)
* ``ensemble``: expert sub-folders with their timestep ranges, which must tile [0, T)
* ``cascade``:  stage folders (paths relative to the cascade folder): a base model then super-resolution
"""
from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import (CONFIG_VERSION, MAX_JSON_DEPTH, ConfigError, ModelConfig, from_dict, json_depth,  # noqa: F401
                     to_dict)
from .unet import UNet, network_cost

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
PRIOR = "prior.safetensors"
MAX_PARAMETERS = 200_000_000    # 0.8 GB in fp32: 80x the largest shipped network; checked on the config, before allocating
# the work of one network pass per image, estimated from the config (unet.network_cost): parameters do not bound it
# (attention at 1,024 px: 46k parameters, past 300 s a step); ~85x / ~150x emoji-sr128's (1.2e10 FLOPs, 28 MB)
MAX_STEP_FLOPS = 1e12
MAX_ACTIVATION_BYTES = 4 * 2 ** 30
# a request's step (every image, both passes of guidance): 10 one-image limits, 1.6x the shipped models' largest step
# at the largest batch (pose-sr256: 64 images of 256 px, 2 passes each, 6.4e12 FLOPs; 2e12 refused evaluating it);
# one network call (its chunk of rows): two one-image limits, so every model that loads samples one guided image
MAX_REQUEST_STEP_FLOPS = 10 * MAX_STEP_FLOPS
MAX_REQUEST_ACTIVATION_BYTES = 2 * MAX_ACTIVATION_BYTES
MAX_WEIGHT = 1e4                # |weight|: the shipped networks' largest is 1.6; 3e38 made every output overflow
MAX_CONFIG_BYTES = 1_000_000    # a config.json is a few hundred bytes; a 100 MB description would be read per request
MAX_CASCADE_STAGES = 4          # base + 3 super-resolution stages (32 -> 256 px); each stage costs a full sampling run
MAX_CASCADE_SIZE = 512          # output side of a cascade
MAX_EXPERTS = 16
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()        # read once, at import (os.umask can only be read by setting it)


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded; the message is one line naming the file and the problem."""


SAMPLER_KINDS = ("model", "ensemble", "cascade")      # the config.json kinds that ``load`` samples from


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write to a temporary file in the same folder, fsync if ``durable``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~UMASK)        # mkstemp makes 0600; the file gets a normal file's mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if os.environ.get("DIFFUSION_FAULT_PAUSE_BEFORE_RENAME"):     # fault injection for the kill -9 test
            import time
            time.sleep(float(os.environ["DIFFUSION_FAULT_PAUSE_BEFORE_RENAME"]))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove_stale_temps(path: Path) -> None:
    """Remove what killed ``atomic_write_bytes`` calls for ``path`` left behind (its ``.NAME.*.tmp`` files). Call
    it where a run that writes ``path`` (re)starts, as the only writer of ``path``."""
    path = Path(path)
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        tmp.unlink(missing_ok=True)


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> None:
    from safetensors.torch import save
    atomic_write_bytes(Path(path), save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata))


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path: Path, expect: type = dict) -> dict:
    """A JSON object (or list: ``expect``) from ``path``, refusing files over MAX_CONFIG_BYTES or MAX_JSON_DEPTH deep."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise CheckpointError(f"{path}: {size:,} bytes, more than a config file can be ({MAX_CONFIG_BYTES:,})")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: JSON nested too deeply") from None
    if not isinstance(data, expect):
        raise CheckpointError(f"{path}: expected a JSON {'list' if expect is list else 'object'}")
    if json_depth(data) > MAX_JSON_DEPTH:
        raise CheckpointError(f"{path}: JSON nested more than {MAX_JSON_DEPTH} levels deep")
    return data


def save_model(folder, config: ModelConfig, state_dict: dict[str, torch.Tensor], half: bool = True,
               extra: dict[str, torch.Tensor] | None = None) -> Path:
    """Write config.json and model.safetensors (fp16 by default) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu() for k, v in state_dict.items()}
    atomic_save_tensors(tensors, folder / WEIGHTS, metadata={"format": "pt"})
    if extra:
        atomic_save_tensors({k: v.detach().cpu() for k, v in extra.items()}, folder / PRIOR)
    write_json(folder / CONFIG, to_dict(config))
    return folder


def refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(f"{path}: pickle-based checkpoints are never loaded (they can run arbitrary code); "
                              f"convert it with `python -m diffusion_core convert {path} --config CONFIG.json --out DIR`")


def load_model_config(folder: Path) -> ModelConfig:
    data = read_json(folder / CONFIG)
    try:
        return from_dict(ModelConfig, data)
    except ConfigError as e:
        raise CheckpointError(f"{folder / CONFIG}: {e}") from None


def network_shapes(unet_cfg) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor the U-Net of ``unet_cfg`` holds, found by building it on the meta device:
    exact, and nothing is allocated."""
    with torch.device("meta"):
        net = UNet(unet_cfg)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def work_problem(unet_cfg, side, rows: int = 1, at_once: int = 1) -> str | None:
    """Why the network of ``unet_cfg`` on ``side`` px images (an int, or (H, W)) is too much work, estimated from the
    config (``unet.network_cost``), or None: one pass over MAX_STEP_FLOPS or MAX_ACTIVATION_BYTES; or ``rows``
    passes per step over MAX_REQUEST_STEP_FLOPS, or the ``at_once`` passes of one network call over
    MAX_REQUEST_ACTIVATION_BYTES (a request's batch, guidance's second pass)."""
    flops, nbytes = network_cost(unet_cfg, side)
    h, w = (side, side) if isinstance(side, int) else side
    px = f"{h} px" if h == w else f"{h}x{w} px"
    gib = 2 ** 30
    over = ([f"{flops:.2g} FLOPs (limit {MAX_STEP_FLOPS:.0g})"] if flops > MAX_STEP_FLOPS else []) + \
        ([f"{nbytes / gib:.3g} GiB of activations (limit {MAX_ACTIVATION_BYTES / gib:g} GiB)"]
         if nbytes > MAX_ACTIVATION_BYTES else [])
    if over:
        return f"one network pass at {px} needs an estimated {' and '.join(over)} per image"
    over = ([f"{rows * flops:.2g} FLOPs (limit {MAX_REQUEST_STEP_FLOPS:.0g} per step)"]
            if rows * flops > MAX_REQUEST_STEP_FLOPS else []) + \
        ([f"{at_once * nbytes / gib:.3g} GiB of activations in one network call of {at_once} passes (limit "
          f"{MAX_REQUEST_ACTIVATION_BYTES / gib:g} GiB)"] if at_once * nbytes > MAX_REQUEST_ACTIVATION_BYTES else [])
    return f"{rows} network passes per step at {px} need an estimated {' and '.join(over)}" if over else None


def load_network(folder: Path, device="cpu") -> tuple[ModelConfig, UNet]:
    """Build the U-Net from config.json and load model.safetensors into it, strictly.

    Everything is checked before memory is taken: the config's size (exact parameter count, limit
    MAX_PARAMETERS) and work per image (``work_problem``), then the weights file's header (names, shapes, dtypes) against the config; only then are
    the tensors read and the network built."""
    folder = Path(folder)
    cfg = load_model_config(folder)
    expected = network_shapes(cfg.unet)
    n_params = sum(math.prod(shape) for shape in expected.values())
    if n_params > MAX_PARAMETERS:
        raise CheckpointError(f"{folder / CONFIG}: network too large ({n_params:.2e} parameters, limit "
                              f"{MAX_PARAMETERS:.0e})")
    too_much = work_problem(cfg.unet, cfg.output_size)
    if too_much:
        raise CheckpointError(f"{folder / CONFIG}: unet: {too_much}")
    wpath = folder / WEIGHTS
    if not wpath.is_file():
        pickles = [p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES] if folder.is_dir() else []
        if pickles:
            refuse_pickle(folder / pickles[0])
        raise CheckpointError(f"{wpath}: missing")
    check_weights_header(wpath, expected)
    try:
        tensors = load_file(str(wpath))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{wpath}: unreadable or truncated safetensors file ({str(e).splitlines()[0][:120]})") from None
    for k, v in tensors.items():
        if not torch.isfinite(v).all():
            raise CheckpointError(f"{wpath}: tensor {k} contains NaN or inf")
        if v.numel() and float(v.abs().max()) > MAX_WEIGHT:
            raise CheckpointError(f"{wpath}: tensor {k} holds values up to {float(v.abs().max()):.2g}; trained "
                                  f"weights stay far below {MAX_WEIGHT:.0g} (the network's output would overflow)")
    net = UNet(cfg.unet)
    net.load_state_dict({k: v.float() for k, v in tensors.items()})
    net.eval().to(device)
    return cfg, net


def check_weights_header(wpath: Path, expected: dict[str, tuple[int, ...]]) -> None:
    """Names, shapes and dtypes of a safetensors file (its header only) against the network's."""
    from safetensors import safe_open
    try:
        with safe_open(str(wpath), "pt") as f:
            found = {k: f.get_slice(k) for k in f.keys()}
            shapes = {k: tuple(sl.get_shape()) for k, sl in found.items()}
            dtypes = {k: sl.get_dtype() for k, sl in found.items()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{wpath}: unreadable or truncated safetensors file ({str(e).splitlines()[0][:120]})") from None
    check_shapes(wpath, shapes, expected)
    for k in shapes:
        if dtypes[k] not in ("F16", "BF16", "F32"):
            raise CheckpointError(f"{wpath}: tensor {k} is {dtypes[k]}; weights must be float16, bfloat16 or float32")


def check_shapes(where, shapes: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]],
                 config: str = "config.json") -> None:
    """Tensor names and shapes against the network's (``network_shapes``); CheckpointError naming ``where``."""
    missing = sorted(set(expected) - set(shapes))
    unknown = sorted(set(shapes) - set(expected))
    if missing or unknown:
        raise CheckpointError(f"{where}: weights do not match {config} "
                              f"(missing: {', '.join(missing[:3]) or '-'}; unexpected: {', '.join(unknown[:3]) or '-'})")
    for k, shape in shapes.items():
        if shape != expected[k]:
            raise CheckpointError(f"{where}: tensor {k} has shape {shape}, config needs {expected[k]}")


def load_prior(folder: Path) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """A cold model's start images (N, C, H, W) and, when stored, their class indices (N,)."""
    path = Path(folder) / PRIOR
    if not path.is_file():
        return None, None
    try:
        tensors = load_file(str(path))
        prior, labels = tensors["prior"].float(), tensors.get("prior_labels")
    except Exception as e:
        raise CheckpointError(f"{path}: unreadable ({str(e).splitlines()[0][:120]})") from None
    if labels is not None and (labels.dim() != 1 or len(labels) != len(prior)):
        raise CheckpointError(f"{path}: prior_labels must hold one class index per prior image")
    return prior, (labels.long() if labels is not None else None)


def folder_kind(folder: Path) -> str:
    folder = Path(folder)
    if folder.is_file():
        refuse_pickle(folder)
        raise CheckpointError(f"{folder}: expected a checkpoint folder with {CONFIG}")
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    data = read_json(folder / CONFIG)
    kind = data.get("kind", "model")
    if kind not in SAMPLER_KINDS:
        raise CheckpointError(f"{folder / CONFIG}: unknown kind {kind!r} (model, ensemble or cascade)")
    if data.get("version", CONFIG_VERSION) != CONFIG_VERSION:
        raise CheckpointError(f"{folder / CONFIG}: config version {data.get('version')} is not supported")
    return kind


def relative_path(path: str, what: str) -> None:
    """A manifest names its experts and stages relative to its own folder; an absolute path is refused (it pointed
    a copied or served folder at any model on the machine). The app serves only folders under its root."""
    if Path(path).is_absolute():
        raise ConfigError(f"{what} path {path!r} must be relative to the manifest's folder, not absolute")


@dataclass(frozen=True)
class ExpertEntry:
    """One expert of an ensemble: its folder (relative to the ensemble's) and the timesteps [t_lo, t_hi) it denoises."""

    path: str
    t_lo: int
    t_hi: int

    def __post_init__(self):
        relative_path(self.path, "expert")


@dataclass(frozen=True)
class EnsembleManifest:
    """config.json of an eDiff-I expert ensemble (Balaji et al. 2022): experts tiling [0, T)."""

    experts: tuple[ExpertEntry, ...]
    T: int = 0                      # 0: the experts' own T (older files do not record it)
    description: str = ""
    version: int = CONFIG_VERSION
    kind: str = "ensemble"

    def __post_init__(self):
        if (self.version, self.kind) != (CONFIG_VERSION, "ensemble"):
            raise ConfigError(f"expected kind 'ensemble', version {CONFIG_VERSION}")
        if not 1 <= len(self.experts) <= MAX_EXPERTS:
            raise ConfigError(f"an ensemble needs a non-empty 'experts' list of at most {MAX_EXPERTS}, "
                              f"got {len(self.experts)}")
        if self.T:
            self.check_tiling(self.T)

    def check_tiling(self, T: int) -> None:
        """The experts' [t_lo, t_hi) must tile [0, T) exactly (ConfigError otherwise)."""
        from .denoisers import check_tiling
        try:
            check_tiling([(e.t_lo, e.t_hi) for e in self.experts], T)
        except ValueError as e:
            raise ConfigError(str(e)) from None


@dataclass(frozen=True)
class CascadeStage:
    """One stage of a cascade: its folder (relative to the cascade's); for a super-resolution stage its input's noise
    level (Ho et al. 2021), if set its own steps / sampler and the scale its result is matched back to its input at
    (``conditioning.back_project``); for any stage, a last denoising step's timestep (``samplers.final_denoise``)."""

    path: str
    aug_level: float = 0.0
    steps: int = 0                  # 0: the request's super-resolution steps, else the stage model's own
    sampler: str = ""               # "": the request's super-resolution sampler, else the stage model's own
    match_scale: int = 0            # back-projection target: the input at 1/match_scale (0: back_projection_scale's)
    denoise_t: int = -1             # >= 0: the run's last step denoises its result once more at this timestep

    def __post_init__(self):
        from .sampler_registry import sampler_names
        relative_path(self.path, "stage")
        if not 0.0 <= self.aug_level <= 1.0:
            raise ConfigError(f"stage {self.path}: aug_level must be in [0, 1], got {self.aug_level}")
        if not 0 <= self.steps <= 1000:
            raise ConfigError(f"stage {self.path}: steps must be in [0, 1000], got {self.steps}")
        if self.sampler and self.sampler not in sampler_names():
            raise ConfigError(f"stage {self.path}: unknown sampler {self.sampler!r}")
        if not 0 <= self.match_scale <= 8:
            raise ConfigError(f"stage {self.path}: match_scale must be in [0, 8], got {self.match_scale}")
        if not -1 <= self.denoise_t < 1000:
            raise ConfigError(f"stage {self.path}: denoise_t must be -1 (none) or in [0, 1000), got {self.denoise_t}")


@dataclass(frozen=True)
class CascadeManifest:
    """config.json of a cascade: a base model, then super-resolution stages (Ho et al. 2021)."""

    stages: tuple[CascadeStage, ...]
    description: str = ""
    version: int = CONFIG_VERSION
    kind: str = "cascade"

    def __post_init__(self):
        if (self.version, self.kind) != (CONFIG_VERSION, "cascade"):
            raise ConfigError(f"expected kind 'cascade', version {CONFIG_VERSION}")
        if not 2 <= len(self.stages) <= MAX_CASCADE_STAGES:
            raise ConfigError(f"a cascade needs 2 to {MAX_CASCADE_STAGES} stages (a base and super-resolution "
                              f"stages), got {len(self.stages)}")


def part_outside(folder: Path, root: Path, depth: int = 2) -> str | None:
    """The first expert or stage of the ensemble / cascade ``folder`` (and of an ensemble that is a cascade's
    stage) whose folder lies outside ``root`` once resolved, as "FOLDER/config.json: stage 1 (../../x) is outside
    ROOT"; None when every part is inside (a model folder has none). Where models are served from one folder
    (the app), a manifest must not reach the rest of the machine through "../"."""
    folder, root = Path(folder), Path(root).resolve()
    data = read_json(folder / CONFIG)
    what = {"cascade": ("stages", "stage"), "ensemble": ("experts", "expert")}.get(data.get("kind"))
    items = data.get(what[0]) if what else None
    for i, item in enumerate(items if isinstance(items, list) else []):
        path = item.get("path") if isinstance(item, dict) else None
        if not isinstance(path, str):
            continue
        part = (folder / path).resolve()
        if not part.is_relative_to(root):
            return f"{folder / CONFIG}: {what[1]} {i} ({path}) is outside {root}"
        if depth > 1 and (part / CONFIG).is_file() and (inner := part_outside(part, root, depth - 1)):
            return inner
    return None


def read_manifest(folder: Path, cls):
    """The typed manifest (EnsembleManifest or CascadeManifest) of ``folder``; CheckpointError naming the file."""
    path = Path(folder) / CONFIG
    try:
        return from_dict(cls, read_json(path))
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None


def write_manifest(folder: Path, manifest) -> None:
    write_json(Path(folder) / CONFIG, to_dict(manifest))


def save_ensemble(folder, experts: list[tuple[str, int, int]], T: int, description: str = "") -> None:
    """experts: (sub-folder name, t_lo, t_hi). The experts' own folders must already be inside ``folder``."""
    try:
        manifest = EnsembleManifest(tuple(ExpertEntry(p, lo, hi) for p, lo, hi in experts), T, description)
    except (ConfigError, ValueError) as e:
        raise CheckpointError(f"{Path(folder) / CONFIG}: {e}") from None
    write_manifest(folder, manifest)


def save_cascade(folder, stages: list[dict], description: str = "") -> None:
    """stages: [{"path": "../emoji"}, {"path": "../emoji-sr", "aug_level": 0.1, "steps": 20}, ...]."""
    try:
        manifest = CascadeManifest(tuple(from_dict(CascadeStage, st) for st in stages), description)
    except ConfigError as e:
        raise CheckpointError(f"{Path(folder) / CONFIG}: {e}") from None
    write_manifest(folder, manifest)

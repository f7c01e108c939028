"""Checkpoints on disk: ``config.json`` + ``model.safetensors`` per model; nothing is ever unpickled.

Folder kinds (the ``kind`` key of config.json):
* ``model``:    one network (config.json, model.safetensors, optional prior.safetensors for cold models)
* ``ensemble``: expert sub-folders with their timestep ranges, which must tile [0, T)
* ``cascade``:  stage folders (paths relative to the cascade folder): a base model then super-resolution
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import CONFIG_VERSION, ConfigError, ModelConfig, from_dict, to_dict
from .unet import UNet

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
PRIOR = "prior.safetensors"
MAX_PARAMETERS = 200_000_000
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl")


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded; the message is one line naming the file and the problem."""


SAMPLER_KINDS = ("model", "ensemble", "cascade")      # the config.json kinds that ``load`` samples from


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if os.environ.get("DIFFUSION_FAULT_PAUSE_BEFORE_RENAME"):     # fault injection for the kill -9 test
            import time
            time.sleep(float(os.environ["DIFFUSION_FAULT_PAUSE_BEFORE_RENAME"]))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> None:
    from safetensors.torch import save
    atomic_write_bytes(Path(path), save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata))


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
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


def estimate_parameters(cfg) -> int:
    """Rough upper bound of the U-Net's size, checked before allocating anything."""
    u = cfg.unet
    c = u.base_channels * max(u.channel_mults)
    return int(len(u.channel_mults) * (2 * u.num_res_blocks + 1) * 2 * 9 * c * c * 2)


def load_network(folder: Path, device="cpu") -> tuple[ModelConfig, UNet]:
    """Build the U-Net from config.json and load model.safetensors into it, strictly."""
    folder = Path(folder)
    cfg = load_model_config(folder)
    if estimate_parameters(cfg) > MAX_PARAMETERS:
        raise CheckpointError(f"{folder / CONFIG}: network too large (about {estimate_parameters(cfg):.2e} "
                              f"parameters, limit {MAX_PARAMETERS:.0e})")
    wpath = folder / WEIGHTS
    if not wpath.is_file():
        pickles = [p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES] if folder.is_dir() else []
        if pickles:
            refuse_pickle(folder / pickles[0])
        raise CheckpointError(f"{wpath}: missing")
    try:
        tensors = load_file(str(wpath))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{wpath}: unreadable or truncated safetensors file ({str(e).splitlines()[0][:120]})") from None
    net = UNet(cfg.unet)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unknown = sorted(set(tensors) - set(expected))
    if missing or unknown:
        raise CheckpointError(f"{wpath}: weights do not match config.json "
                              f"(missing: {', '.join(missing[:3]) or '-'}; unexpected: {', '.join(unknown[:3]) or '-'})")
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise CheckpointError(f"{wpath}: tensor {k} has shape {tuple(v.shape)}, config needs {tuple(expected[k].shape)}")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"{wpath}: tensor {k} contains NaN or inf")
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()})
    net.eval().to(device)
    return cfg, net


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


def save_ensemble(folder, experts: list[tuple[str, int, int]], T: int, description: str = "") -> None:
    """experts: (sub-folder name, t_lo, t_hi). The experts' own folders must already be inside ``folder``."""
    from .denoisers import check_tiling
    check_tiling([(lo, hi) for _, lo, hi in experts], T)
    write_json(Path(folder) / CONFIG, {"version": CONFIG_VERSION, "kind": "ensemble", "T": T,
                                       "description": description,
                                       "experts": [{"path": p, "t_lo": lo, "t_hi": hi} for p, lo, hi in experts]})


def save_cascade(folder, stages: list[dict], description: str = "") -> None:
    """stages: [{"path": "../emoji"}, {"path": "../emoji-sr", "aug_level": 0.1, "steps": 20}, ...]."""
    write_json(Path(folder) / CONFIG, {"version": CONFIG_VERSION, "kind": "cascade", "description": description,
                                       "stages": stages})


def check_number(name: str, v, lo: float, hi: float, path: Path) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        raise CheckpointError(f"{path}: {name} must be a number in [{lo}, {hi}], got {v!r}")
    return float(v)

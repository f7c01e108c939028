"""What a model folder says about itself, read without loading a network: its config.json, typed by its kind
(``read_config``), and where its weights came from, from the training config saved beside them
(``train_config.json``, written by ``python -m diffusion_core train``). One reader for each fact, so the app and
the evaluators cannot read the same file two ways."""
from __future__ import annotations

from pathlib import Path

from .checkpoint import (CascadeManifest, CheckpointError, EnsembleManifest, folder_kind, load_model_config,
                         read_json, read_manifest)
from .config import ModelConfig

TRAIN_CONFIG = "train_config.json"


def training_source(folder: str | Path) -> str | None:
    """The data source the model in ``folder`` was trained on (``data.source`` of its train_config.json, e.g.
    "fashion", "emoji", "pose"), or None where the folder has no train_config.json or it names no source.

    Raises CheckpointError (one line naming the file) when the file is there but unreadable: not JSON, not an
    object, too large, or with a ``data`` / ``data.source`` of the wrong type."""
    path = Path(folder) / TRAIN_CONFIG
    if not path.is_file():
        return None
    data = read_json(path).get("data", {})
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: 'data' must be an object, not {type(data).__name__}")
    source = data.get("source")
    if source is None:
        return None
    if not isinstance(source, str):
        raise CheckpointError(f"{path}: 'data.source' must be a string, not {type(source).__name__}")
    return source


def read_config(folder: str | Path) -> ModelConfig | EnsembleManifest | CascadeManifest:
    """The config.json of ``folder`` as its kind's typed config (a model's ModelConfig, an ensemble's or a
    cascade's manifest), checked as loading checks it; no weights are read. CheckpointError (one line naming the
    file) for a folder that is not one, an unknown kind or version, or a config that does not hold."""
    kind = folder_kind(Path(folder))
    if kind == "model":
        return load_model_config(Path(folder))
    return read_manifest(folder, EnsembleManifest if kind == "ensemble" else CascadeManifest)

"""Where a model folder's weights came from, read from the training config saved beside them
(``train_config.json``, written by ``python -m diffusion_core train``). One reader for each fact, so the app and
the evaluators cannot read the same file two ways."""
from __future__ import annotations

from pathlib import Path

from .checkpoint import CheckpointError, read_json

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

"""What every source becomes: ``ImageData`` (in-memory uint8 arrays, labels, conditioning images), chosen by a
``DataConfig``; ``to_tensor`` is the one place images are scaled to [-1, 1]."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import ConfigError


@dataclass(frozen=True)
class DataConfig:
    source: str = "fashion"         # fashion | idx | emoji | pose | folder
    path: str = ""                  # folder for idx / folder sources
    split: str = "train"            # train | test (| all for emoji)
    image_size: int = 32
    channels: int = 1
    labels: str = "auto"            # auto | none | subfolder | file   (folder source)
    labels_file: str = ""           # CSV with a filename column, or CelebA list_attr_celeba.txt
    cond_folder: str = ""           # paired conditioning images matched by file name
    limit: int = 0                  # use at most this many images (0: all)
    hflip: bool = False             # random horizontal flips
    pose_pairs: int = 20000         # pose source: number of generated pairs
    seed: int = 0

    def __post_init__(self):
        if self.source not in ("fashion", "idx", "emoji", "pose", "folder"):
            raise ConfigError(f"data.source must be fashion, idx, emoji, pose or folder, got {self.source!r}")
        if self.channels not in (1, 3):
            raise ConfigError(f"data.channels must be 1 or 3, got {self.channels}")
        if not 4 <= self.image_size <= 1024:
            raise ConfigError(f"data.image_size must be in [4, 1024], got {self.image_size}")


@dataclass
class ImageData:
    """images: uint8 (N, H, W, C); labels: float32 (N, L) or None; cond: uint8 (N, H, W, Cc) or None."""

    images: np.ndarray
    labels: np.ndarray | None
    label_names: tuple[str, ...]
    multi_label: bool
    cond: np.ndarray | None = None
    description: str = ""
    skipped: int = 0
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx: torch.Tensor, hflip: torch.Tensor | None = None) -> dict:
        """Batch as tensors: image (B, C, H, W) in [-1, 1], labels (B, L), cond (B, Cc, H, W) in [-1, 1]."""
        i = idx.numpy()
        out = {"image": to_tensor(self.images[i])}
        if self.labels is not None:
            out["labels"] = torch.from_numpy(self.labels[i])
        if self.cond is not None:
            out["cond"] = to_tensor(self.cond[i])
        if hflip is not None and hflip.any():
            for k in ("image", "cond"):
                if k in out:
                    out[k][hflip] = out[k][hflip].flip(-1)
        return out


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, H, W) in [-1, 1]: the one place images are normalised."""
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()

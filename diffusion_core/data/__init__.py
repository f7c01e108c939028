"""Datasets: every source becomes in-memory uint8 arrays, normalised to [-1, 1] in one place.

Sources (``DataConfig.source``):
* ``fashion``: Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (IDX files), 10 classes,
  padded 28 -> 32 with the background colour;
* ``idx``: any folder of IDX files (same layout as MNIST: train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]);
* ``emoji``: Noto Color Emoji rendered from Debian's fonts, multi-label attributes (``data/emoji.py``);
* ``pose``: procedurally generated (stickman drawing -> figure) pairs (``data/pose/``);
* ``folder``: any folder of images, recursively; labels from sub-folder names, a CSV file, or CelebA's
  ``list_attr_celeba.txt``; optional folder of paired conditioning images matched by file name.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .dataset import DataConfig, ImageData, to_tensor
from .folder import IMAGE_SUFFIXES, load_folder, read_labels_file
from .idx import FASHION_CLASSES, FASHION_DIR, load_idx_folder, read_idx

__all__ = ["DataConfig", "ImageData", "to_tensor", "IMAGE_SUFFIXES", "load_folder", "read_labels_file",
           "FASHION_CLASSES", "FASHION_DIR", "load_idx_folder", "read_idx", "load_data"]


def load_data(cfg: DataConfig) -> ImageData:
    """Load a data source as in-memory arrays."""
    if cfg.source in ("fashion", "idx"):
        data = load_idx_folder(cfg.path or FASHION_DIR, cfg.split, cfg.image_size,
                               FASHION_CLASSES if cfg.source == "fashion" else ())
        if cfg.channels == 3:
            data.images = np.repeat(data.images, 3, axis=-1)
    elif cfg.source == "emoji":
        from .emoji import load_emoji
        imgs, labs, names = load_emoji(cfg.image_size, cache_dir=str(Path.home() / ".cache" / "diffusion_core"))
        data = ImageData(imgs, labs, tuple(names), True,
                         description=f"Noto Color Emoji ({len(imgs)} images, {len(names)} attributes)")
        if cfg.split == "test":   # held-out: every 10th emoji; "train" uses the rest, "all" everything
            data = _subset(data, np.arange(len(data)) % 10 == 0)
        elif cfg.split == "train":
            data = _subset(data, np.arange(len(data)) % 10 != 0)
    elif cfg.source == "pose":
        from .pose import make_pairs
        seed = cfg.seed + (1_000_003 if cfg.split == "test" else 0)
        figs, sticks = make_pairs(cfg.pose_pairs, cfg.image_size, seed=seed)
        data = ImageData(figs, None, (), False, cond=sticks,
                         description=f"procedural stickman pairs ({cfg.pose_pairs}, seed {seed})")
    else:
        data = load_folder(cfg)
    if cfg.channels == 1 and data.images.shape[-1] == 3:
        data.images = np.round(data.images @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)[..., None]
    if cfg.limit and len(data) > cfg.limit:
        data = _subset(data, np.arange(len(data)) < cfg.limit)
    return data


def _subset(d: ImageData, mask: np.ndarray) -> ImageData:
    return ImageData(d.images[mask], None if d.labels is None else d.labels[mask], d.label_names, d.multi_label,
                     None if d.cond is None else d.cond[mask], d.description + " [subset]", d.skipped, d.extra)

"""IDX files (the MNIST layout: train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]), Fashion-MNIST from
the Debian package ``dataset-fashion-mnist`` among them: padded 28 -> 32 with the background colour."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ..images import open_image, to_mode
from .dataset import ImageData

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzipped or not."""
    raw = gzip.open(path).read() if str(path).endswith(".gz") else Path(path).read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[raw[2]]
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim)]
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: truncated IDX file")
    return data.reshape(dims)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder}: no {stem}[.gz] (is the dataset-fashion-mnist package installed?)")


def load_idx_folder(folder, split: str, size: int, names=FASHION_CLASSES) -> ImageData:
    folder = Path(folder)
    prefix = "train" if split == "train" else "t10k"
    imgs = read_idx(_find(folder, f"{prefix}-images-idx3-ubyte"))
    labs = read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    h = imgs.shape[1]
    if size > h:   # pad with the background (black for MNIST-like data)
        p = (size - h) // 2
        imgs = np.pad(imgs, ((0, 0), (p, size - h - p), (p, size - h - p)))
    elif size < h:
        imgs = np.stack([np.asarray(to_mode(open_image(im), 1).resize((size, size), 1)) for im in imgs])
    n_cls = int(labs.max()) + 1
    names = tuple(names) if len(names) == n_cls else tuple(str(i) for i in range(n_cls))
    onehot = np.eye(n_cls, dtype=np.float32)[labs]
    return ImageData(imgs[..., None], onehot, names, False,
                     description=f"IDX {folder} ({split}, {len(imgs)} images, {n_cls} classes, padded to {size})")

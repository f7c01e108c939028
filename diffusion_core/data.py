"""Datasets: every source becomes in-memory uint8 arrays, normalised to [-1, 1] in one place.

Sources (``DataConfig.source``):
* ``fashion``: Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (IDX files), 10 classes,
  padded 28 -> 32 with the background colour;
* ``idx``: any folder of IDX files (same layout as MNIST: train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]);
* ``emoji``: Noto Color Emoji rendered from Debian's fonts, multi-label attributes (see data_emoji.py);
* ``pose``: procedurally generated (stickman drawing -> figure) pairs (see data_pose.py);
* ``folder``: any folder of images, recursively; labels from sub-folder names, a CSV file, or CelebA's
  ``list_attr_celeba.txt``; optional folder of paired conditioning images matched by file name.
"""
from __future__ import annotations

import csv
import gzip
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError
from .images import ImageError, open_image, to_mode

log = logging.getLogger("diffusion_core")

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


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


def load_folder(cfg: DataConfig) -> ImageData:
    """Any folder of images, recursively. Unreadable files are skipped and counted (never crash)."""
    root = Path(cfg.path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such image folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if cfg.limit:
        files = files[: cfg.limit]
    mode = cfg.labels
    if mode == "auto":
        mode = "file" if cfg.labels_file else ("subfolder" if any(p.parent != root for p in files) else "none")
    attr_names, attr_table = (), {}
    if mode == "file":
        attr_names, attr_table = read_labels_file(Path(cfg.labels_file))
    classes = sorted({p.parent.relative_to(root).as_posix() for p in files}) if mode == "subfolder" else []
    images, labels, conds, skipped = [], [], [], 0
    from .images import pil_to_tensor  # noqa: F401  (same conversion as user uploads)
    for p in files:
        try:
            img = _load_uint8(p, cfg.image_size, cfg.channels)
            cond = None
            if cfg.cond_folder:
                cp = _match(Path(cfg.cond_folder), p.relative_to(root))
                if cp is None:
                    raise ImageError("no paired conditioning image")
                cond = _load_uint8(cp, cfg.image_size, 1)
            if mode == "file":
                if p.name not in attr_table:
                    raise ImageError("not in the labels file")
                lab = attr_table[p.name]
            elif mode == "subfolder":
                lab = np.eye(len(classes), dtype=np.float32)[classes.index(p.parent.relative_to(root).as_posix())]
            else:
                lab = None
        except (ImageError, OSError, ValueError) as e:
            skipped += 1
            log.warning("skipping %s: %s", p, e)
            continue
        images.append(img)
        labels.append(lab)
        conds.append(cond)
    if skipped:
        log.warning("skipped %d unreadable or unmatched file(s) under %s", skipped, root)
    if not images:
        raise ValueError(f"{root}: no usable images found ({skipped} skipped)")
    lab_arr = np.stack(labels).astype(np.float32) if labels[0] is not None else None
    names = tuple(attr_names) if mode == "file" else tuple(classes) if mode == "subfolder" else ()
    return ImageData(np.stack(images), lab_arr, names, mode == "file",
                     cond=np.stack(conds) if cfg.cond_folder else None, skipped=skipped,
                     description=f"folder {root} ({len(images)} images, {skipped} skipped, labels: {mode})")


def _load_uint8(path: Path, size: int, channels: int) -> np.ndarray:
    from PIL import Image, ImageOps
    img = to_mode(open_image(path), channels)
    img = ImageOps.fit(img, (size, size), method=Image.Resampling.LANCZOS)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def _match(folder: Path, rel: Path) -> Path | None:
    for cand in [folder / rel] + [folder / rel.with_suffix(s) for s in IMAGE_SUFFIXES]:
        if cand.is_file():
            return cand
    hits = [p for p in folder.glob(rel.stem + ".*") if p.suffix.lower() in IMAGE_SUFFIXES]
    return hits[0] if hits else None


def read_labels_file(path: Path) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    """Multi-label attributes from a CSV (a ``filename`` column, then 0/1 or -1/1 columns) or from CelebA's
    ``list_attr_celeba.txt`` (line 1: count, line 2: attribute names, then ``file v1 v2 ...`` with -1/1)."""
    text = Path(path).read_text().splitlines()
    if not text:
        raise ValueError(f"{path}: empty labels file")
    if text[0].strip().isdigit():      # CelebA format
        names = tuple(text[1].split())
        table = {}
        for line in text[2:]:
            parts = line.split()
            if len(parts) != len(names) + 1:
                continue
            table[parts[0]] = (np.array([float(v) for v in parts[1:]]) > 0).astype(np.float32)
        return names, table
    rows = list(csv.reader(text))
    header = [h.strip() for h in rows[0]]
    if "filename" not in header:
        raise ValueError(f"{path}: CSV needs a 'filename' column")
    fi = header.index("filename")
    names = tuple(h for i, h in enumerate(header) if i != fi)
    table = {}
    for r in rows[1:]:
        if len(r) != len(header):
            continue
        table[r[fi].strip()] = (np.array([float(v) for i, v in enumerate(r) if i != fi]) > 0).astype(np.float32)
    return names, table


def load_data(cfg: DataConfig) -> ImageData:
    """Load a data source as in-memory arrays."""
    if cfg.source in ("fashion", "idx"):
        data = load_idx_folder(cfg.path or FASHION_DIR, cfg.split, cfg.image_size,
                               FASHION_CLASSES if cfg.source == "fashion" else ())
        if cfg.channels == 3:
            data.images = np.repeat(data.images, 3, axis=-1)
    elif cfg.source == "emoji":
        from .data_emoji import load_emoji
        imgs, labs, names = load_emoji(cfg.image_size, cache_dir=str(Path.home() / ".cache" / "diffusion_core"))
        data = ImageData(imgs, labs, tuple(names), True,
                         description=f"Noto Color Emoji ({len(imgs)} images, {len(names)} attributes)")
        if cfg.split == "test":   # held-out: every 10th emoji; "train" uses the rest, "all" everything
            data = _subset(data, np.arange(len(data)) % 10 == 0)
        elif cfg.split == "train":
            data = _subset(data, np.arange(len(data)) % 10 != 0)
    elif cfg.source == "pose":
        from .data_pose import make_pairs
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

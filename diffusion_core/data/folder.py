"""Any folder of images, recursively: labels from sub-folder names, a CSV file with a ``filename`` column, or
CelebA's ``list_attr_celeba.txt``; an optional folder of paired conditioning images matched by file name.
Unreadable or unmatched files are skipped and counted."""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from ..images import ImageError, open_image, to_mode
from .dataset import DataConfig, ImageData

log = logging.getLogger("diffusion_core")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


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
    from ..images import pil_to_tensor  # noqa: F401  (same conversion as user uploads)
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

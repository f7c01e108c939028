"""Pictures for the page: previews, labelled strips, comparison grids, PNGs with their settings, status."""
from __future__ import annotations

import functools
import hashlib
import json
import math
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo
import torch

from diffusion_core import grid, to_pil

from .settings import CAPTION_LINES, CELL_PX, GRID_GAP, LINE_PX, PREVIEW_PX


def upscale_nearest(img: Image.Image, target: int = PREVIEW_PX) -> Image.Image:
    f = max(1, round(target / max(img.size)))
    return img.resize((img.width * f, img.height * f), Image.Resampling.NEAREST) if f > 1 else img


def batch_grid(x: torch.Tensor, target: int = PREVIEW_PX) -> Image.Image:
    """(B, C, H, W) in [-1, 1] -> one RGB grid image, nearest-upscaled to about ``target`` px."""
    x = x.detach().float().cpu()
    n = x.shape[0]
    # square-ish grids (2x2 for 4 images): the preview shows two of them side by side in a 300 px high box, where
    # a row of four made 64 px tiles (issue 18)
    nrow = n if n <= 2 else math.ceil(math.sqrt(n))
    g = grid(x, nrow=nrow, padding=1 if x.shape[0] > 1 else 0)
    return upscale_nearest(g.convert("RGB"), target)


@functools.lru_cache(maxsize=8)
def caption_font(size: int = 13):
    """Pillow's default font at ``size`` (loaded once per size: loading costs ~10 ms, every preview uses it)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):      # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def labelled(images: list[Image.Image], captions: list[str], gap: int = 8, size: int = 13) -> Image.Image:
    """Images side by side with a caption below each (white background)."""
    foot = size + 8
    w = sum(im.width for im in images) + gap * (len(images) - 1)
    h = max(im.height for im in images) + foot
    out = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    font = caption_font(size)
    x = 0
    for im, cap in zip(images, captions):
        out.paste(im.convert("RGB"), (x, 0))
        draw.text((x + im.width / 2, h - foot / 2), cap, fill=(40, 40, 40), font=font, anchor="mm")
        x += im.width + gap
    return out


PREVIEWS_KEPT = 16      # side_by_side's last pictures (a 4-image preview is about 0.5 MB)
_previews: "OrderedDict[bytes, Image.Image]" = OrderedDict()
_previews_lock = threading.Lock()


def _digest(*tensors: torch.Tensor) -> bytes:
    """A digest of the tensors' shapes, dtypes and exact bits."""
    h = hashlib.blake2b(digest_size=20)
    for x in tensors:
        x = x.detach().cpu().contiguous()
        h.update(repr((tuple(x.shape), str(x.dtype))).encode())
        h.update(x.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.digest()


def side_by_side(x_t: torch.Tensor, x0_hat: torch.Tensor) -> Image.Image:
    """x_t | x0_hat, labelled: the live preview. The last PREVIEWS_KEPT pictures are kept by their tensors' bits and
    given again (the same object, not to be changed) for the same tensors: a class pressing one example runs in
    step with each other (runtime/shared.py), and 30 visitors rendered and encoded the same picture (13 ms each)."""
    key = _digest(x_t, x0_hat)
    with _previews_lock:
        if key in _previews:
            _previews.move_to_end(key)
            return _previews[key]
    img = labelled([batch_grid(x_t), batch_grid(x0_hat)], ["x_t", "x0_hat (predicted clean image)"])
    with _previews_lock:
        _previews[key] = img
        while len(_previews) > PREVIEWS_KEPT:
            _previews.popitem(last=False)
    return img


def as_pil_uint8(x: torch.Tensor) -> Image.Image:
    return to_pil(x.detach().float().cpu().clamp(-1, 1))


def is_gray(img: Image.Image) -> bool:
    if img.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
        return True
    if img.mode == "P":
        pal = np.asarray(img.convert("RGB"))
        return bool((pal[..., 0] == pal[..., 1]).all() and (pal[..., 1] == pal[..., 2]).all())
    return False


NAME_MAX = 255      # bytes in a file name (Linux, macOS); a model folder's name alone may be 250 characters


def fitting_path(path: Path) -> Path:
    """``path`` with its file name cut to NAME_MAX bytes where longer: the start of its stem, a hash of the whole
    name (names stay distinct) and its suffix (ENAMETOOLONG otherwise)."""
    path = Path(path)
    if len(path.name.encode()) <= NAME_MAX:
        return path
    digest = hashlib.sha256(path.name.encode()).hexdigest()[:12]
    keep = NAME_MAX - len(path.suffix.encode()) - len(digest) - 1
    return path.with_name(f"{path.stem.encode()[:keep].decode(errors='ignore')}-{digest}{path.suffix}")


def save_png(img: Image.Image, path: Path, meta: dict) -> str:
    path = fitting_path(path)
    info = PngInfo()
    info.add_text("parameters", json.dumps(meta))
    img.save(path, pnginfo=info)
    return str(path)


def html_status(text: str, frac: float | None = None) -> str:
    bar = ""
    if frac is not None:
        pct = max(0.0, min(1.0, frac)) * 100
        bar = (f'<div class="dc-bar"><div class="dc-fill" style="width:{pct:.1f}%"></div></div>')
    return f'<div class="dc-status">{text}</div>{bar}'


def fmt_duration(s: float) -> str:
    s = float(s)
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def eta_seconds(elapsed: float, done: float, min_elapsed: float = 1.0) -> float | None:
    """Seconds left when a fraction ``done`` of the work took ``elapsed`` seconds at a steady rate; None until
    there is something to extrapolate from (under ``min_elapsed`` seconds, or nothing done) or when finished."""
    if elapsed < min_elapsed or not 0 < done < 1:
        return None
    return elapsed * (1 - done) / done


def cell_image(x: torch.Tensor, px: int = CELL_PX) -> Image.Image:
    """(C, H, W) or (1, C, H, W) in [-1, 1] -> an RGB image of exactly px x px (nearest)."""
    x = x[0] if x.dim() == 4 else x
    return as_pil_uint8(x).convert("RGB").resize((px, px), Image.Resampling.NEAREST)


def grid_size(rows: int, cols: int) -> tuple[int, int]:
    """(width, height) of a ``compose_grid`` image."""
    cap = CAPTION_LINES * LINE_PX + 4
    return GRID_GAP + cols * (CELL_PX + GRID_GAP), GRID_GAP + rows * (CELL_PX + cap + GRID_GAP)


def compose_grid(cells: list[list[tuple[Image.Image, list[str]]]]) -> Image.Image:
    """rows x cols of (CELL_PX image, caption lines) on white, each caption below its cell."""
    rows, cols = len(cells), max(len(r) for r in cells)
    w, h = grid_size(rows, cols)
    out = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    font = caption_font(12)
    cap = CAPTION_LINES * LINE_PX + 4
    for r, row in enumerate(cells):
        for c, (img, lines) in enumerate(row):
            x = GRID_GAP + c * (CELL_PX + GRID_GAP)
            y = GRID_GAP + r * (CELL_PX + cap + GRID_GAP)
            out.paste(img.convert("RGB").resize((CELL_PX, CELL_PX), Image.Resampling.NEAREST), (x, y))
            for k, line in enumerate(lines[:CAPTION_LINES]):
                while line and draw.textlength(line, font=font) > CELL_PX:
                    line = line[:-2] + "…" if len(line) > 2 else ""
                draw.text((x + CELL_PX / 2, y + CELL_PX + 2 + LINE_PX * k + LINE_PX / 2), line,
                          fill=(40, 40, 40), font=font, anchor="mm")
    return out


def framed(img: Image.Image, text: str, size: int = 12) -> Image.Image:
    """``img`` with a white band below it carrying ``text`` (GIF frames: every frame differs)."""
    band = size + 8
    out = Image.new("RGB", (img.width, img.height + band), (255, 255, 255))
    out.paste(img.convert("RGB"), (0, 0))
    ImageDraw.Draw(out).text((img.width / 2, img.height + band / 2), text, fill=(40, 40, 40), font=caption_font(size),
                             anchor="mm")
    return out

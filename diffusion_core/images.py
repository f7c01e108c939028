"""Image conversion in one place: PIL/arrays <-> tensors in [-1, 1], and validation of user images."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

MAX_PIXELS = 4096 * 4096


class ImageError(ValueError):
    """A user-supplied image cannot be used; the message says why in one line."""


def open_image(src, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open a path, bytes, numpy array or PIL image safely; refuse non-images and huge images."""
    if isinstance(src, Image.Image):
        img = src
    elif isinstance(src, np.ndarray):
        if src.ndim not in (2, 3) or src.size == 0:
            raise ImageError(f"expected an image array, got shape {src.shape}")
        arr = src
        if arr.dtype != np.uint8:
            arr = np.clip(arr.astype(np.float64) * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
    else:
        try:
            data = src if isinstance(src, (bytes, bytearray)) else Path(src).read_bytes()
        except OSError as e:
            raise ImageError(f"cannot read image file: {e.strerror or e}") from None
        try:
            Image.MAX_IMAGE_PIXELS = max_pixels
            img = Image.open(io.BytesIO(data))      # reads the header only
            w, h = img.size
            if w * h > max_pixels:                  # refused before decoding (Pillow only refuses above 2x)
                raise ImageError(f"image too large: {w}x{h} (limit {max_pixels} pixels)")
            img.load()
        except ImageError:
            raise
        except Image.DecompressionBombError:
            raise ImageError(f"image too large (limit {max_pixels} pixels)") from None
        except Exception:
            raise ImageError("not a readable image file (PNG, JPEG, WebP, GIF or BMP expected)") from None
    w, h = img.size
    if w == 0 or h == 0:
        raise ImageError("image is empty (0 pixels)")
    if w * h > max_pixels:
        raise ImageError(f"image too large: {w}x{h} (limit {max_pixels} pixels)")
    return img


def to_mode(img: Image.Image, channels: int, background=(255, 255, 255)) -> Image.Image:
    """Convert any mode (palette, CMYK, 16-bit, alpha) to L or RGB, compositing transparency onto white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.max() > 255 else 255
        img = Image.fromarray((arr / hi * 255).clip(0, 255).astype(np.uint8))
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray((np.clip(arr if arr.max() > 1 else arr * 255, 0, 255)).astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, background + (255,))
        img = Image.alpha_composite(bg, img)
    return img.convert("L" if channels == 1 else "RGB")


def pil_to_tensor(img: Image.Image, size: int | None, channels: int) -> torch.Tensor:
    """PIL image -> (C, size, size) float tensor in [-1, 1]. Non-square images are centre-cropped."""
    img = to_mode(img, channels)
    if size is not None:
        img = ImageOps.fit(img, (size, size), method=Image.Resampling.BICUBIC if min(img.size) < size
                           else Image.Resampling.LANCZOS)
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))


def load_image(src, size: int | None, channels: int) -> torch.Tensor:
    """Open + validate + convert: (C, size, size) in [-1, 1]."""
    return pil_to_tensor(open_image(src), size, channels)


def load_whole(src, max_side: int, channels: int, min_side: int = 4) -> torch.Tensor:
    """Open + validate + convert the whole image, its shape kept: (C, H, W) in [-1, 1], scaled down (Lanczos) so
    its longer side is at most ``max_side``; no crop. Refuses an image whose shorter side is (or would become)
    below ``min_side`` pixels."""
    img = to_mode(open_image(src), channels)
    w, h = img.size
    scale = min(1.0, max_side / max(w, h))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if min(size) < min_side:
        raise ImageError(f"image too thin: {w}x{h} px (each side at least {min_side} px"
                         + (f" after scaling the longer side to {max_side} px)" if scale < 1 else ")"))
    if size != (w, h):
        img = img.resize(size, Image.Resampling.LANCZOS)
    return pil_to_tensor(img, None, channels)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) or (B, C, H, W) in [-1, 1] -> uint8 array (H, W[, C]) or (B, H, W[, C])."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    arr = x.numpy()
    if arr.ndim == 3:
        arr = arr.transpose(1, 2, 0)
        return arr[..., 0] if arr.shape[-1] == 1 else arr
    arr = arr.transpose(0, 2, 3, 1)
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def to_pil(x: torch.Tensor) -> Image.Image:
    """(C, H, W) in [-1, 1] -> PIL image (L or RGB)."""
    return Image.fromarray(to_uint8(x))


def grid(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> Image.Image:
    """(B, C, H, W) in [-1, 1] -> one PIL grid image (torchvision's make_grid)."""
    from torchvision.utils import make_grid
    g = make_grid(images.detach().float().cpu().clamp(-1, 1), nrow=nrow, padding=padding, pad_value=1.0)
    if images.shape[1] == 1:
        g = g[:1]
    return to_pil(g)


def output_problem(x: torch.Tensor, eps_finite: torch.Tensor | None = None) -> str | None:
    """Why generated images (N, C, H, W), before they are clamped to [-1, 1], are not pictures: values that are
    NaN or inf, a network output (``eps_finite``: per image, whether every step's output was finite) that was
    not, or images saturated flat (every value at or beyond -1, or every value at or beyond 1, as when the
    network's output overflows: clamped, they were all black and looked like a result); None when they are fine.
    An untrained network's images may be all at +-1 with both signs: noise to look at, not a broken output."""
    x = x.detach().flatten(1)
    bad = ~torch.isfinite(x).all(1)
    if eps_finite is not None:
        bad |= ~eps_finite
    if bad.any():
        return f"{int(bad.sum())} of {len(x)} images have NaN or inf values"
    flat = (x >= 1).all(1) | (x <= -1).all(1)
    if flat.any():
        return f"{int(flat.sum())} of {len(x)} images are saturated (every value at -1 or every value at 1)"
    return None

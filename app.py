"""Gradio app for diffusion_core: generate with live previews, explore the forward process.

    python app.py                       # serves checkpoints/ on http://127.0.0.1:7860
    DIFFUSION_CHECKPOINTS=dir python app.py

Environment: DIFFUSION_CHECKPOINTS (model folders, default ``checkpoints``), GRADIO_SERVER_NAME /
GRADIO_SERVER_PORT, DIFFUSION_CONCURRENCY (sampling runs at once, default 1), DIFFUSION_QUEUE (queued
requests, default 16), DIFFUSION_DEVICE (default cpu; cuda on ZeroGPU), DIFFUSION_THREADS (torch CPU threads),
DIFFUSION_KEPT_RUNS_MB (the Learn tab's kept runs, all sessions together, default 128), DIFFUSION_SESSIONS
(sessions whose state is kept, default 200).

Only the package's public API is used (``from diffusion_core import ...``); the package never imports
Gradio. API endpoints (``gradio_client``): /generate (streaming), /forward, /schedule_plot, /upscale,
/model_card; the Learn tab's /explain_step, /compare, /compare_guidance, /interpolate, /trajectory.
"""
from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"

import atexit  # noqa: E402
import base64  # noqa: E402
import signal  # noqa: E402
import functools  # noqa: E402
import gc  # noqa: E402
import html  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections import OrderedDict  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402
from PIL.PngImagePlugin import PngInfo  # noqa: E402
from pydantic import ConfigDict, ValidationError  # noqa: E402

from diffusion_core import (BACKEND_ENV, BACKENDS, MAX_GUIDANCE, MAX_STEPS, SAMPLER_KINDS, SPACINGS,  # noqa: E402
                            BackendError,
                            CheckpointError, ImageError, SampleStep,
                            SamplerSpec, explain_step, grid, load, load_image, make_degradation, make_generators,
                            make_schedule, open_image, read_json, to_mode, to_pil)

log = logging.getLogger("diffusion_app")

HERE = Path(__file__).resolve().parent
STICKMEN_DIR = HERE / "examples" / "stickmen"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

MAX_BATCH = 16                 # the app's own limit, below the library's MAX_BATCH: a shared server's batch
CARD_MEASUREMENTS = 4      # metrics lines shown on a model card; the rest fold into "N more measurements"
MAX_SEED = 2**31 - 1 - MAX_BATCH
MAX_UPSCALE_INPUT = 128          # side of an image handed to a super-resolution model
PREVIEW_PX = 256                 # previews are nearest-neighbour upscaled to about this size
GIF_MAX_FRAMES = 60
ANY = "(any)"
SAMPLER_CHOICES = [("DDPM", "ddpm"), ("DDIM", "ddim"), ("DPM-Solver++ (2M)", "dpm++"), ("DPM-Solver++ (3M)", "dpm++3m"),
                   ("UniPC", "unipc"), ("Cold", "cold")]
DETERMINISTIC_SAMPLERS = ("ddim", "dpm++", "dpm++3m", "unipc")
SAMPLER_NAMES = dict((v, k) for k, v in SAMPLER_CHOICES)
COMPARE_NAMES = {"ddpm": "DDPM", "ddim": "DDIM", "dpm++": "DPM++", "dpm++3m": "DPM++3M", "unipc": "UniPC", "cold": "Cold"}
DEGRADATIONS = ["noise", "blur", "pixelate", "mask"]
USER_ERRORS = (ImageError, CheckpointError, ValueError)
# learning tools
COMPARE_MAX_CELLS = 15           # one sampling run per cell; the guidance grid's defaults are 3 samplers x 5 scales
COMPARE_MAX_STEPS = 400          # summed over the cells
COMPARE_SAMPLERS = [("DDPM", "ddpm"), ("DDIM", "ddim"), ("DPM++", "dpm++"), ("DPM++ 3M", "dpm++3m"), ("UniPC", "unipc"),
                    ("Cold", "cold")]
COMPARE_STEPS = [5, 10, 25, 50]
COMPARE_GUIDANCE = [0, 1, 2, 4, 7]
COMPARE_DEFAULT_SAMPLERS = ["ddpm", "ddim", "dpm++"]     # the rows both comparisons start with
COMPARE_DEFAULT_STEPS = [5, 10, 25]
COMPARE_DEFAULT_GUIDANCE_STEPS = 10
CELL_PX = 128                    # a compare-grid cell (nearest-upscaled image) ...
CAPTION_LINES = 3                # ... with this many caption lines below it
LINE_PX = 15
GRID_GAP = 6
INTERP_MAX_FRAMES = 16
INTERP_MAX_WORK = 1600           # frames x steps
TRAJ_MAX_FRAMES = 250            # GIF frames (more steps are subsampled evenly)
STATE_TTL_S = 2 * 3600           # a session's kept run and partial result expire this long after they were set
LATEX = [{"left": "$$", "right": "$$", "display": True}]


def read_image(src, label: str) -> Image.Image:
    """The app's one guarded image decoder: every image input (uploads, the sketch pad's background, layers and
    composite, the upscale input, the forward tab) is decoded here, under the package's pixel limit (open_image:
    the size is checked from the header, before decoding). A bad file is a one-line gr.Error naming the input."""
    try:
        return open_image(src)
    except ImageError as e:
        raise gr.Error(f"{label}: {e}", print_exception=False) from None


def _file_source(payload):
    """The path (or, for a data: URL, the bytes) of an uploaded image, not decoded; None for no image."""
    if payload is None:
        return None
    if isinstance(payload, (bytes, bytearray, memoryview)):     # a sketch layer held in Gradio's blob storage
        return bytes(payload)
    url = getattr(payload, "url", None) or ""
    if not payload.path and url.startswith("data:"):
        try:
            return base64.b64decode(url.split(",", 1)[1], validate=True)
        except (ValueError, IndexError):
            return b""          # read_image says it is not a readable image
    return payload.path


class _Template:
    """Mixin for a component that extends a Gradio one: Gradio names a template component's frontend after
    ``__class__.__base__``, which is a mixin here; name the Gradio component it extends instead (else the page
    fetches a custom component and breaks). gr.Sketchpad is itself a template of gr.ImageEditor."""

    def get_block_name(self) -> str:
        return next(c for c in type(self).__mro__ if c.__module__.startswith("gradio.components.")).__name__.lower()

    def get_block_class(self) -> str:
        return self.get_block_name()


class _CheckedPayload(_Template):
    """Mixin for file components: a payload of the wrong shape (a string, a number, a dict without a file) is a
    one-line gr.Error naming the input, not a pydantic traceback (Gradio validates the payload before
    ``preprocess``, against ``data_model``: here a subclass of the component's own model that says what is wrong)."""

    @property
    def data_model(self):
        base = next(c.__dict__["data_model"] for c in type(self).__mro__[1:]
                    if isinstance(c.__dict__.get("data_model"), type))
        return _checked_model(base, getattr(self, "label", None) or "image", self.expected)


@functools.lru_cache(maxsize=32)     # one class per input, not per session (a session's label update copies it)
def _checked_model(base, label: str, expected: str):
    """``base`` (a Gradio payload model) whose validation error is a one-line gr.Error naming the input."""
    class Checked(base):
        model_config = ConfigDict(title=base.__name__)      # the API schema keeps the model's own name

        @classmethod
        def model_validate(cls, obj, *a, **kw):
            try:
                return super().model_validate(obj, *a, **kw)
            except ValidationError:
                raise gr.Error(f"{label}: expected {expected}, got {type(obj).__name__} {str(obj)[:40]!r}",
                               print_exception=False) from None
    return Checked


class SafeImage(_CheckedPayload, gr.Image):
    """gr.Image whose upload is decoded by ``read_image`` (the pixel limit, a clear message for a text file or a
    bomb) and handed to the handler as a checked PIL image. Rendered by the frontend as a plain Image."""

    is_template = True
    expected = "an image file"

    def preprocess(self, payload):
        src = _file_source(payload)
        return None if src is None else read_image(src, self.label or "Image")


MAX_SKETCH_LAYERS = 4       # the app's sketch pad sends one (layers=False); an API client could send thousands


class SafeSketchpad(_CheckedPayload, gr.Sketchpad):
    """gr.Sketchpad whose background, layers and composite are each decoded by ``read_image`` (Gradio's own
    preprocessing decoded them under Pillow's default limit, ~179 MP: a 13000x13000 sketch cost 2.6 GB). The
    handler receives {"background", "layers", "composite"} as PIL images (None where absent)."""

    is_template = True
    expected = "a dict with 'background', 'layers' and 'composite' image files"

    def convert_and_format_image(self, file, flatten_on_white=False):
        src = _file_source(file)
        return None if src is None else read_image(src, self.label or "Sketch")

    def preprocess(self, payload):
        if payload is not None and len(payload.layers or []) > MAX_SKETCH_LAYERS:
            raise gr.Error(f"{self.label}: at most {MAX_SKETCH_LAYERS} layers, got {len(payload.layers)}",
                           print_exception=False)
        return super().preprocess(payload)


class LabelChecks(gr.CheckboxGroup):
    """CheckboxGroup whose choices change with the model: validation happens in the handler (which knows
    the model), so API clients may pass any attribute names and get a clear message for unknown ones."""

    is_template = True

    def preprocess(self, payload):
        return [str(v) for v in as_list(payload)]


class NumberChecks(gr.CheckboxGroup):
    """CheckboxGroup of numbers (step counts, guidance scales) whose API callers may pass other values too:
    the handler checks them (range, whole numbers) and says what is wrong."""

    is_template = True

    def preprocess(self, payload):
        return as_list(payload)


def as_list(value) -> list:
    """A list input as an API client may send it: None is empty, and one value (a string such as "woman", or a
    number) is a list of that one value, never read letter by letter."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple, set)) else [value]


def _named_error(label, e: gr.Error) -> gr.Error:
    return gr.Error(f"{label}: {e.message}", print_exception=False)


class _NamedErrors(_Template):
    """Mixin: a component whose error names the control ("Sampler: Value x is not in the list of choices.")."""

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except gr.Error as e:
            raise _named_error(self.label, e) from None


class _CheckedNumber(_Template):
    """Mixin for Slider and Number: the value goes through ``number`` (type, finiteness, range, and whole where the
    control steps by whole numbers) before Gradio's own preprocessing, so text, None, NaN or inf from an API client
    get a message naming the control and its range (Gradio's check failed on them with its generic error)."""

    def preprocess(self, payload):
        if payload is None and isinstance(self, gr.Number):
            return None         # an empty Number field: the handler's default (-1 or nothing: a random seed)
        whole = getattr(self, "precision", None) == 0 or getattr(self, "step", None) == 1
        name = re.sub(r"\s*\(.*?\)", "", self.label or "value").strip()      # "Seed (-1 = random)" -> "Seed"
        try:
            v = number(payload, name, self.minimum, self.maximum, whole=whole)
        except ValueError as e:
            raise gr.Error(str(e), print_exception=False) from None
        return super().preprocess(int(v) if whole else v)


class Slider(_CheckedNumber, gr.Slider):
    is_template = True


class Number(_CheckedNumber, gr.Number):
    is_template = True


class Radio(_NamedErrors, gr.Radio):
    is_template = True


class Dropdown(_NamedErrors, gr.Dropdown):
    is_template = True


class Choices(_NamedErrors, gr.CheckboxGroup):
    """CheckboxGroup whose API callers may send one value (or None) instead of a list: made a list first, then
    Gradio's own check of the choices (a string was checked letter by letter)."""

    is_template = True

    def preprocess(self, payload):
        return super().preprocess(as_list(payload))


def number(value, name: str, lo: float, hi: float, whole: bool = False) -> float:
    """A numeric input checked once, for every endpoint: a finite number (or a numeric string, as an API client
    may send) in [lo, hi], whole where asked; otherwise a ValueError naming the input and its range (None, text,
    NaN and inf used to surface as Gradio's generic error or {"error": null})."""
    bounds = f"[{int(lo)}, {int(hi)}]" if whole else f"[{lo:g}, {hi:g}]"
    got = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    what = f"{name} must be a {'whole ' if whole else ''}number in {bounds}, got {got}"
    if isinstance(value, bool) or value is None:
        raise ValueError(what)
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(what) from None
    if not math.isfinite(v) or not lo <= v <= hi or (whole and v != int(v)):
        raise ValueError(what)
    return v


def on_zero_gpu() -> bool:
    """Whether this app runs on Hugging Face ZeroGPU hardware (the Space sets SPACES_ZERO_GPU) with the ``spaces``
    package: a GPU is attached only while a function decorated with ``spaces.GPU`` runs."""
    if not os.environ.get("SPACES_ZERO_GPU"):
        return False
    try:
        import spaces  # noqa: F401
    except ImportError:
        return False
    return True


def gpu_task(fn, duration: int = 120):
    """``fn`` wrapped with ``spaces.GPU(duration=...)`` on ZeroGPU (the GPU is held for its call, the models run on
    CUDA there); ``fn`` itself everywhere else, so the CPU path is unchanged. Used for every handler that samples."""
    if not on_zero_gpu():
        return fn
    import spaces
    return spaces.GPU(duration=duration)(fn)


def _number(v, default=None):
    """``v`` when it is a real number (not a bool), else ``default``."""
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else default


def user_error(e: Exception) -> gr.Error:
    msg = str(e).strip() or type(e).__name__
    return gr.Error(msg, print_exception=False)      # a user mistake: a message, not a server traceback


# ---------------------------------------------------------------------------------------------------
# models on disk
# ---------------------------------------------------------------------------------------------------
class Models:
    """The model folders under ``root`` (each sub-folder with a config.json), loaded lazily and cached.

    The scan is cached too: a config.json is read again only when its size or time changes (a request stats the
    folders; it used to parse every config.json). A folder whose config.json cannot be read, or whose load failed,
    stays listed as broken with its one-line reason and never affects the others; a failed load is not retried
    until the folder's files change. A folder whose files change on disk (a training run re-exporting) is reloaded
    on next use."""

    def __init__(self, root, device="cpu", backend=None):
        self.root = Path(root)
        self.device = device
        # where networks run unless a request names one: $DIFFUSION_CORE_BACKEND, else auto (measured at first load)
        self.backend = backend or os.environ.get(BACKEND_ENV) or "auto"
        self._cache: dict[str, tuple[tuple, object]] = {}
        self._failed: dict[str, tuple[tuple, str]] = {}         # name -> (signature, reason) of a failed load
        self._scanned: dict[str, tuple[tuple, bool, dict, str | None]] = {}   # name -> (stat, listed, config, error)
        self._lock = threading.Lock()

    def _scan(self) -> dict[str, tuple[tuple, bool, dict, str | None]]:
        out = {}
        folders = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")) \
            if self.root.is_dir() else []
        for p in folders:
            try:
                st = (p / "config.json").stat()
            except OSError:
                continue
            stat = (st.st_mtime_ns, st.st_size)
            hit = self._scanned.get(p.name)
            if hit is None or hit[0] != stat:
                try:
                    raw = read_json(p / "config.json")          # bounded in size and depth
                    hit = (stat, raw.get("kind", "model") in SAMPLER_KINDS, raw, None)
                except CheckpointError as e:
                    hit = (stat, True, {}, str(e))                 # listed, as broken with the reason
            out[p.name] = hit
        self._scanned = out
        return out

    def names(self) -> list[str]:
        return [n for n, (_, listed, _, _) in self._scan().items() if listed]

    def broken(self, name) -> str | None:
        """Why ``name`` cannot be used (one line, paths relative to the models folder), or None as far as known:
        its config.json is unreadable, or loading it failed and its files have not changed since."""
        hit = self._scanned.get(name)
        reason = hit[3] if hit else None
        failed = self._failed.get(name)
        if reason is None and failed is not None and failed[0] == self.signature(name):
            reason = failed[1]
        if reason is None:
            return None
        line = reason.replace(f"{self.root}/", "").splitlines()[0] if reason.strip() else "unknown error"
        return line if len(line) <= 160 else line[:157] + "..."

    def choices(self) -> list[tuple[str, str]]:
        """(label, name) for the model list: a broken folder is labelled "name (broken: reason)"."""
        out = []
        for n in self.names():
            why = self.broken(n)
            out.append((f"{n} (broken: {why})" if why else n, n))
        return out

    def default(self) -> str | None:
        names = self.names()
        good = [n for n in names if self.broken(n) is None] or names
        return "fashion" if "fashion" in good else (good[0] if good else None)

    def folder(self, name) -> Path:
        names = self.names()
        if not names:
            raise ValueError(f"no models found in {self.root} (each model is a sub-folder with config.json; "
                             "train one with `python -m diffusion_core train ...`)")
        if not isinstance(name, str) or name not in names:
            raise ValueError(f"unknown model {name!r}; available: {', '.join(names)}")
        return self.root / name

    def signature(self, name) -> tuple:
        """What decides whether ``name`` must be loaded again: its JSON files and weights, with their times."""
        folder = self.root / name
        try:
            files = list(folder.glob("*.json")) + list(folder.rglob("*.safetensors"))
            return tuple(sorted((str(p), p.stat().st_mtime_ns) for p in files if p.is_file()))
        except OSError:
            return ()

    def is_ready(self, name, backend=None) -> bool:
        """Whether ``get(name, backend)`` returns at once (loaded, files unchanged, backend already chosen)."""
        hit = self._cache.get(name)
        return bool(hit) and hit[0] == self.signature(name) and hit[1].backend_request == (backend or self.backend)

    def get(self, name, backend=None):
        """The loaded pipeline of ``name``, its networks on ``backend`` (None: this catalogue's default)."""
        folder = self.folder(name)
        sig = self.signature(name)
        backend = backend or self.backend
        with self._lock:
            hit = self._cache.get(name)
            if hit and hit[0] == sig:
                if hit[1].backend_request != backend:
                    hit[1].set_backend(backend)
                return hit[1]
            failed = self._failed.get(name)
            if failed and failed[0] == sig:
                raise CheckpointError(failed[1])
            self._cache.pop(name, None)
            try:
                pipe = load(folder, device=self.device, backend=backend)
            except BackendError:
                raise       # the backend asked for cannot run here: the folder is fine, nothing to remember
            except CheckpointError as e:
                self._failed[name] = (sig, str(e))
                raise
            except Exception as e:      # a folder never takes the app down: it is listed as broken with this
                log.exception("loading %s failed", folder)
                self._failed[name] = (sig, f"{folder}: {type(e).__name__}: {e}")
                raise CheckpointError(self._failed[name][1]) from None
            self._failed.pop(name, None)
            self._cache[name] = (sig, pipe)
            return pipe

    def raw_config(self, name) -> dict:
        """The parsed config.json of a listed folder (from the scan; {} for an unreadable one)."""
        hit = self._scanned.get(name) or self._scan().get(name)
        return hit[2] if hit else {}

    def sr_models(self, channels: int) -> list[str]:
        """Stand-alone super-resolution models with ``channels`` output channels (config.json only)."""
        out = []
        for n in self.names():
            c = self.raw_config(n)
            if c.get("kind", "model") == "model" and c.get("task") == "super_resolution" \
                    and section(c, "unet").get("out_channels", 1) == channels:
                out.append(n)
        return out


def section(config: dict, key: str) -> dict:
    """``config[key]`` when it is a JSON object, else {} (a hostile config.json may hold anything there)."""
    value = config.get(key)
    return value if isinstance(value, dict) else {}


# ---------------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------------
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
def _font(size: int = 13):
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
    font = _font(size)
    x = 0
    for im, cap in zip(images, captions):
        out.paste(im.convert("RGB"), (x, 0))
        draw.text((x + im.width / 2, h - foot / 2), cap, fill=(40, 40, 40), font=font, anchor="mm")
        x += im.width + gap
    return out


def side_by_side(x_t: torch.Tensor, x0_hat: torch.Tensor) -> Image.Image:
    return labelled([batch_grid(x_t), batch_grid(x0_hat)], ["x_t", "x0_hat (predicted clean image)"])


def as_pil_uint8(x: torch.Tensor) -> Image.Image:
    return to_pil(x.detach().float().cpu().clamp(-1, 1))


def is_gray(img: Image.Image) -> bool:
    if img.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
        return True
    if img.mode == "P":
        pal = np.asarray(img.convert("RGB"))
        return bool((pal[..., 0] == pal[..., 1]).all() and (pal[..., 1] == pal[..., 2]).all())
    return False


def save_png(img: Image.Image, path: Path, meta: dict) -> str:
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


# ---------------------------------------------------------------------------------------------------
# learning tools: pure helpers (slerp, the numbers of one sampler step, labelled grids)
# ---------------------------------------------------------------------------------------------------
def slerp(a: torch.Tensor, b: torch.Tensor, alpha: float, eps: float = 1e-6) -> torch.Tensor:
    """Spherical linear interpolation from ``a`` (alpha 0) to ``b`` (alpha 1) along the great circle
    between their directions (Shoemake 1985; how DDIM interpolates x_T, Song et al. 2021 sec. 5.3):
    sin((1-alpha) theta) / sin(theta) a + sin(alpha theta) / sin(theta) b, theta = angle(a, b).
    Unit vectors stay unit vectors; Gaussian noise keeps its typical norm (a lerp would shrink it
    towards the middle). Nearly parallel (or antiparallel, or zero) inputs fall back to the lerp.
    Endpoints are returned exactly."""
    alpha = float(alpha)
    if a.shape != b.shape:
        raise ValueError(f"slerp needs tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if alpha == 0.0:
        return a.clone()
    if alpha == 1.0:
        return b.clone()
    a64, b64 = a.double(), b.double()
    na, nb = float(a64.norm()), float(b64.norm())
    if na == 0.0 or nb == 0.0:
        return ((1 - alpha) * a64 + alpha * b64).to(a.dtype)
    cos = max(-1.0, min(1.0, float((a64 * b64).sum()) / (na * nb)))
    theta = math.acos(cos)
    s = math.sin(theta)
    if s < eps:
        return ((1 - alpha) * a64 + alpha * b64).to(a.dtype)
    return (math.sin((1 - alpha) * theta) / s * a64 + math.sin(alpha * theta) / s * b64).to(a.dtype)


def fmt(v: float) -> str:
    """A number as shown in the explanations (and as tests look it up): 6 significant digits."""
    return f"{float(v):.6g}"


def _alpha_bar(schedule, t: int) -> float:
    return float(schedule.alpha_bar_at(int(t)))


def step_numbers(run: dict, i: int) -> dict:
    """The update of step ``i`` (0-based) of a kept run written out with its actual numbers.

    ``run``: the records kept by Generate (``steps``: SampleStep list for the first image, maybe only the first
    steps of the run; ``grid`` and ``grid_end``: every step's t and the last t_next; ``sampler``, ``eta``,
    ``variance``, ``improved``; ``schedule`` or ``degradation`` (+ ``fixed_noise``)). The weights and terms are
    the package's ``explain_step``: the sampler's own update, so they cannot drift from it. ``coefficients``
    maps a term (x_t, x0_hat, eps_hat, ``x0_hat[t_k]``: the x0_hat of an earlier step, or cold's D(x0_hat, t)
    and D(x0_hat, t_next)) to its weight, so that x_next = sum(coef * term) + sigma * z; ``residual_max`` is
    max |x_next - that sum| (~1e-7: float32 rounding)."""
    recs = run["steps"]
    rec = recs[i]
    t, tn = int(rec.t), int(rec.t_next)
    sampler = run["sampler"]
    spec = SamplerSpec(sampler, eta=float(run.get("eta") or 0.0), variance=run.get("variance", "posterior"),
                       improved=bool(run.get("improved", True)))
    ts = torch.tensor(run["grid"] + [run["grid_end"]]) if run.get("grid") else \
        torch.tensor([r.t for r in recs] + [recs[-1].t_next])
    ex = explain_step(spec, ts, recs, i, schedule=run.get("schedule"), degradation=run.get("degradation"),
                      fixed_noise=run.get("fixed_noise"))
    out = {"step": i + 1, "index": i, "num_steps": rec.num_steps, "sampler": sampler, "t": t, "t_next": tn}
    if "schedule" in run:
        ab_t, ab_n = _alpha_bar(run["schedule"], t), _alpha_bar(run["schedule"], tn)
        out.update(alpha_bar_t=ab_t, alpha_bar_next=ab_n, noise_level_t=math.sqrt(1 - ab_t),
                   noise_level_next=math.sqrt(1 - ab_n))
    out.update(ex.info)
    coef = {k: w for k, w in ex.weights.items() if k != "noise"}
    terms = {k: v for k, v in ex.terms.items() if k != "noise"}
    sigma = ex.weights.get("noise", 0.0)
    det = sum(c * terms[k].double() for k, c in coef.items())
    out["coefficients"] = coef
    out["sigma"] = sigma
    out["residual_max"] = float((rec.x_next.double() - det - sigma * ex.terms.get("noise", 0.0)).abs().max())
    if sigma > 0:
        out["noise_std"] = float(ex.terms["noise"].float().std())
    out["std_x_t"] = float(rec.x_t.float().std())
    out["std_x_next"] = float(rec.x_next.float().std())
    out["_terms"] = terms
    out["_noise"] = ex.terms.get("noise") if sigma > 0 else None
    return out


def _tex_num(v: float) -> str:
    s = fmt(v)
    if "e" in s:
        m, e = s.split("e")
        s = f"{m} \\times 10^{{{int(e)}}}"
    return s


def _tex_sum(terms: list[tuple[float, str]]) -> str:
    out = ""
    for c, name in terms:
        sign = "-" if c < 0 else "+"
        body = f"{_tex_num(abs(c))}\\,{name}"
        out += (("-" if c < 0 else "") + body) if not out else f" {sign} {body}"
    return out or "0"


def _tex_x(t: int) -> str:
    return "x_{-1} \\;(\\text{clean})" if t < 0 else f"x_{{{t}}}"


TEX_FORMULAS = {
    "ddpm": (r"$$x_{t'} = \frac{\sqrt{\bar\alpha_{t'}}\,\beta}{1-\bar\alpha_t}\,\hat x_0"
             r" + \frac{\sqrt{1-\beta}\,(1-\bar\alpha_{t'})}{1-\bar\alpha_t}\,x_t + \sigma z,"
             r"\qquad \beta = 1-\frac{\bar\alpha_t}{\bar\alpha_{t'}},\quad"
             r" \sigma^2 = \frac{1-\bar\alpha_{t'}}{1-\bar\alpha_t}\,\beta$$",
             "DDPM ancestral step: sample the posterior q(x_t' | x_t, x0_hat) (Ho et al. 2020, eqs. 6-7, "
             "respaced as in Nichol & Dhariwal 2021); no noise on the last step."),
    "ddim": (r"$$x_{t'} = \sqrt{\bar\alpha_{t'}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t'}-\sigma_t^2}\,\hat\epsilon"
             r" + \sigma_t z,\qquad \sigma_t = \eta\sqrt{\frac{1-\bar\alpha_{t'}}{1-\bar\alpha_t}}"
             r"\sqrt{1-\frac{\bar\alpha_t}{\bar\alpha_{t'}}}$$",
             "DDIM (Song et al. 2021, eqs. 12 and 16): jump to the noise level of t' along the predicted "
             "noise direction; eta = 0 is deterministic."),
    "dpm++": (r"$$x_{t'} = \frac{\sigma_{t'}}{\sigma_t}\,x_t - \alpha_{t'}\left(e^{-h}-1\right) D,\qquad"
              r" \alpha = \sqrt{\bar\alpha},\ \sigma = \sqrt{1-\bar\alpha},\ \lambda = \log\frac{\alpha}{\sigma},"
              r"\ h = \lambda_{t'} - \lambda_t$$"
              "\n\n"
              r"$$D = \left(1 + \frac{1}{2r}\right)\hat x_0 - \frac{1}{2r}\,\hat x_0^{\mathrm{prev}},\qquad"
              r" r = \frac{h_{\mathrm{prev}}}{h}\qquad(\text{first step: } D = \hat x_0)$$",
              "DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): an exponential-integrator step in log-SNR time "
              "lambda, second order from the previous step's x0_hat; the last step returns x0_hat."),
    "dpm++3m": (r"$$x_{t'} = \frac{\sigma_{t'}}{\sigma_t}\,x_t - \alpha_{t'}\left(e^{-h}-1\right)\hat x_0"
                r" + \alpha_{t'}\left(\frac{e^{-h}-1}{h}+1\right) D_1"
                r" - \alpha_{t'}\left(\frac{e^{-h}-1+h}{h^2}-\frac12\right) D_2$$"
                "\n\n"
                r"$$D_1, D_2:\ \text{first and second divided differences of } \hat x_0"
                r" \text{ over the last three steps in } \lambda = \log\frac{\alpha}{\sigma}$$",
                "DPM-Solver++(3M) (Lu et al. 2022): the exponential-integrator step with the x0_hat of the two "
                "previous steps; lower order on the first two steps and near the end of short runs."),
    "unipc": (r"$$x_{t'} = \frac{\sigma_{t'}}{\sigma_t}\,x_t^c - \alpha_{t'}\left(e^{-h}-1\right)\hat x_0"
              r" - \alpha_{t'}\,B(h)\sum_k \rho_k D_k,\qquad B(h) = e^{-h}-1$$"
              "\n\n"
              r"$$x_t^c:\ x_t \text{ corrected by UniC with this step's } \hat x_0 \text{ (no extra network call)}$$",
              "UniPC (Zhao et al. 2023, bh2): the predictor UniP from x_t as corrected by UniC, which redoes the "
              "previous step using the denoiser's output at x_t; D_k = (x0_hat_k - x0_hat) / r_k."),
    "cold": (r"$$x_{t'} = x_t - D(\hat x_0, t) + D(\hat x_0, t')\qquad"
             r"(\text{naive: } x_{t'} = D(\hat x_0, t'))$$",
             "Cold Diffusion (Bansal et al. 2022, Alg. 2): re-degrade the prediction to both severities and "
             "move x_t by the difference; D(x, -1) = x."),
}
TERM_TEX = {"x_t": None, "x0_hat": r"\hat x_0", "eps_hat": r"\hat\epsilon", "D(x0_hat,t)": None, "D(x0_hat,t_next)": None}


def term_tex(name: str) -> str:
    """TeX of a term of an explained step; ``x0_hat[982]`` is the x0_hat the denoiser gave at t = 982."""
    if name.startswith("x0_hat[") and name.endswith("]"):
        return rf"\hat x_0^{{({name[7:-1]})}}"
    return TERM_TEX[name]


def explain_markdown(num: dict, run: dict) -> str:
    """The formula of the run's sampler, then the same formula with this step's numbers."""
    t, tn, sampler = num["t"], num["t_next"], num["sampler"]
    name = SAMPLER_NAMES.get(sampler, sampler)
    if sampler == "ddim":
        name += f" (eta = {fmt(num['eta'])})"
    head = (f"### Step {num['step']} of {num['num_steps']} · {name} · t = {t} → t' = {tn}\n\n"
            f"<small>{run.get('summary', '')}</small>\n\n")
    formula, note = TEX_FORMULAS[sampler]
    rows = [("`t`", str(t)), ("`t_next` (t')", f"{tn}" + (" (the clean image)" if tn < 0 else ""))]
    if sampler == "cold":
        rows += [("degradation", num["degradation"]), ("severity at t", fmt(num["severity_t"])),
                 ("severity at t'", fmt(num["severity_next"]))]
    else:
        rows += [("`alpha_bar_t`", fmt(num["alpha_bar_t"])), ("`alpha_bar_t_next`", fmt(num["alpha_bar_next"])),
                 ("noise level sqrt(1 - alpha_bar_t)", fmt(num["noise_level_t"]))]
    if sampler == "ddpm":
        rows += [("`beta` = 1 - alpha_bar_t / alpha_bar_t'", fmt(num["beta"])),
                 (f"`sigma^2` ({num['variance']} variance)", fmt(num["posterior_variance"])),
                 ("`sigma` (std of the added noise)", fmt(num["sigma"]))]
    elif sampler == "ddim":
        rows += [("`eta`", fmt(num["eta"])), ("`sigma_t(eta)`", fmt(num["sigma"]))]
    elif sampler == "dpm++" and "h" in num:
        rows += [("`lambda_t`", fmt(num["lambda_t"])), ("`lambda_t'`", fmt(num["lambda_next"])),
                 ("`h` = lambda_t' - lambda_t", fmt(num["h"]))]
        if num.get("order") == 2:
            rows += [("`r` = h_prev / h", fmt(num["r"])), ("previous step", f"t = {num['t_prev']}")]
        else:
            rows += [("order", "1 (first step: D = x0_hat)")]
    elif sampler in ("dpm++3m", "unipc"):
        rows += [("order of this step", str(num["order"]))]
        if num.get("corrected"):
            rows += [("`x_t` used", "x_t after UniC's correction")]
    for k, c in num["coefficients"].items():
        rows.append((f"coefficient of `{k}`", fmt(c)))
    table = "| quantity | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    # the formula with this step's numbers
    if sampler == "cold":
        parts = [(c, {"x_t": _tex_x(t), "D(x0_hat,t)": rf"D(\hat x_0, {t})",
                      "D(x0_hat,t_next)": rf"D(\hat x_0, {tn})"}[k]) for k, c in num["coefficients"].items()]
    else:
        parts = [(c, _tex_x(t) if k == "x_t" else term_tex(k)) for k, c in num["coefficients"].items()
                 if c != 0.0]       # e.g. the last step's x_t or eps_hat term
    rhs = _tex_sum(parts)
    if num["sigma"] > 0:
        rhs += f" + {_tex_num(num['sigma'])}\\,z"
    lhs = "x_{-1}" if tn < 0 else f"x_{{{tn}}}"
    numbers = f"$${lhs} = {rhs}$$"
    check = (f"Check: max |x_t' − (the sum above)| = {num['residual_max']:.2e} (float32 rounding: the coefficients "
             f"reproduce x_t')" + (f"; the noise z this step drew has std {num['noise_std']:.3f}" if num["sigma"] > 0
                                   else ""))
    return (head + f"**Update rule.** {note}\n\n{formula}\n\n**This step.**\n\n{numbers}\n\n{check}\n\n{table}\n\n"
            f"std of x_t = {fmt(num['std_x_t'])}, std of x_t' = {fmt(num['std_x_next'])} (measured, first image)")


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
    font = _font(12)
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
    ImageDraw.Draw(out).text((img.width / 2, img.height + band / 2), text, fill=(40, 40, 40), font=_font(size),
                             anchor="mm")
    return out


def handles_errors(what: str):
    """Decorator for a (non-streaming) handler: runs it in inference mode; ValueError / ImageError /
    CheckpointError become a gr.Error with their message, anything else a one-line gr.Error (logged)."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                with torch.inference_mode():
                    return fn(*args, **kwargs)
            except gr.Error:
                raise
            except USER_ERRORS as e:
                raise user_error(e) from None
            except Exception as e:
                log.exception("%s failed", what)
                raise gr.Error(f"{what} failed: {type(e).__name__}: {e}") from None
        return wrapper
    return deco


class KeptRuns:
    """The runs the Learn tab explains (each session's last Generate run: the first image's steps), kept in the
    server under one byte budget for all sessions together. The least recently used runs are dropped first, and a
    run that alone would pass the budget keeps its first steps. A session's gr.State holds only the key (the steps
    themselves in a gr.State grew the server by ~36 KB a step at 32 px for every session, without limit)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._runs: OrderedDict[str, tuple[dict, int]] = OrderedDict()     # key -> (run, bytes accounted)
        self._total = 0
        self._lock = threading.Lock()

    def put(self, key: str, run: dict) -> None:
        with self._lock:
            self._pop(key)
            self._runs[key] = (run, 0)

    def get(self, key) -> dict | None:
        with self._lock:
            hit = self._runs.get(key) if isinstance(key, str) else None
            if hit is None:
                return None
            self._runs.move_to_end(key)
            return hit[0]

    def grow(self, key: str, run: dict, nbytes: int) -> bool:
        """Account ``nbytes`` more to ``run``, dropping the least recently used other runs to stay in the budget;
        False (nothing accounted) if ``run`` is no longer the one kept under ``key`` or would alone pass the budget."""
        with self._lock:
            hit = self._runs.get(key)
            if hit is None or hit[0] is not run or hit[1] + nbytes > self.max_bytes:
                return False
            self._runs[key] = (run, hit[1] + nbytes)
            self._total += nbytes
            self._runs.move_to_end(key)
            while self._total > self.max_bytes:
                self._pop(next(iter(self._runs)))
            return True

    def drop(self, key) -> None:
        """Forget ``key``'s run (the gr.State's delete_callback: the session expired or closed)."""
        with self._lock:
            self._pop(key)

    def _pop(self, key) -> None:
        hit = self._runs.pop(key, None) if isinstance(key, str) else None
        if hit is not None:
            self._total -= hit[1]

    @property
    def nbytes(self) -> int:
        return self._total


# ---------------------------------------------------------------------------------------------------
# the app
# ---------------------------------------------------------------------------------------------------
class DiffusionApp:
    def __init__(self, checkpoints_dir=None, device=None):
        root = checkpoints_dir or os.environ.get("DIFFUSION_CHECKPOINTS") or str(HERE / "checkpoints")
        self.models = Models(root, device or os.environ.get("DIFFUSION_DEVICE") or ("cuda" if on_zero_gpu() else "cpu"))
        self.out_dir = Path(tempfile.mkdtemp(prefix="diffusion_app_"))
        atexit.register(shutil.rmtree, self.out_dir, ignore_errors=True)
        self._stops: dict[str, threading.Event] = {}
        self._cards: dict[str, tuple[tuple, tuple]] = {}      # model -> (what it was made from, (markdown, samples))
        self.runs = KeptRuns(int(float(os.environ.get("DIFFUSION_KEPT_RUNS_MB", "128")) * 2**20))
        self._fashion = None
        self._fashion_lock = threading.Lock()

    # ---- model card / control visibility ---------------------------------------------------------
    def upscaler_for(self, name, pipe):
        if pipe.kind == "cascade":
            return name, pipe
        if pipe.config.task == "super_resolution":
            return name, pipe
        for n in self.models.sr_models(pipe.channels):
            try:
                return n, self.models.get(n)
            except USER_ERRORS:         # a broken SR folder is skipped, never failing this model's card
                continue
        return None, None

    def model_card(self, model):
        """Markdown card for a model: description, data, schedule, prediction, training, metrics; and its
        samples.png when present."""
        # cached until the folder's files change (it read every JSON file of the folder per request)
        try:
            pipe = self.models.get(model)
        except USER_ERRORS as e:
            raise user_error(e) from None
        samples = self.models.root / model / "samples.png"
        key = (self.models.signature(model), samples.stat().st_mtime_ns if samples.is_file() else None,
               tuple(self.models.names()))      # the upscaler row names another folder
        hit = self._cards.get(model)
        if hit is None or hit[0] != key:
            hit = (key, self._model_card(model, pipe))
            self._cards[model] = hit
        return hit[1]

    def _model_card(self, model, pipe):
        folder = self.models.folder(model)
        base = pipe.base
        cfg = base.config
        d = cfg.diffusion
        rows = []
        kind = pipe.kind
        if pipe.kind == "ensemble":
            kind = f"ensemble of {len(pipe.experts)} experts: " + ", ".join(
                f"t in [{lo}, {hi})" for lo, hi, _ in pipe.experts)
        elif pipe.kind == "cascade":
            kind = "cascade: " + " -> ".join(
                f"{st.path.name} ({size} px)" for (st, _), size in zip(pipe.stages, pipe.stage_sizes))
        rows.append(("kind", kind))
        task = cfg.task
        if cfg.task == "super_resolution":
            task = f"super-resolution {cfg.low_res} -> {cfg.high_res or cfg.unet.image_size} px"
        elif cfg.task == "pose":
            task = "stickman drawing -> figure"
        rows.append(("task", task))
        rows.append(("image", f"{pipe.image_size} px, {cfg.unet.out_channels} channel(s)"
                     + (f" (the network was trained on {cfg.unet.image_size} px crops)"
                        if cfg.task == "super_resolution" and cfg.unet.image_size != pipe.image_size else "")))
        if cfg.label_names:
            what = "attributes (multi-label)" if cfg.multi_label else "classes"
            names = ", ".join(cfg.label_names[:12]) + (" ..." if len(cfg.label_names) > 12 else "")
            rows.append(("conditioning", f"{len(cfg.label_names)} {what}: {names}"))
            rows.append(("labels mean", pipe.picks_meaning))
        if d.is_cold:
            rows.append(("forward process", f"cold diffusion, degradation {d.degradation}, T={d.T}"))
        else:
            rows.append(("schedule", f"{d.schedule}, T={d.T}"))
        rows.append(("prediction", d.prediction))
        rows.append(("samplers", ", ".join(SAMPLER_NAMES.get(s, s) for s in pipe.samplers)))
        sd = self.sampling_defaults(pipe)
        rows.append(("default settings", f"{SAMPLER_NAMES.get(sd.sampler, sd.sampler)}, {sd.steps} steps, "
                                          f"{sd.spacing} grid, guidance {sd.guidance:g}" + (f": {sd.why}" if sd.why else "")))
        training = self._read_json(folder / "training.json")
        if not training and pipe.kind in ("cascade", "ensemble"):
            first = pipe.stages[0][0].path if pipe.kind == "cascade" else None
            training = self._read_json(first / "training.json") if first else {}
        if training.get("data"):
            rows.append(("data", str(training["data"])))
        if training.get("steps") is not None:
            t = f"{training['steps']} steps"
            if training.get("wall_time_s") is not None:
                t += f", {fmt_duration(training['wall_time_s'])} wall time"
            if training.get("processes"):
                t += f", {training['processes']} process(es)"
            if training.get("device"):
                t += f" on {training['device']}"
            rows.append(("training", t))
        sr_name, _ = self.upscaler_for(model, pipe)
        if sr_name and sr_name != model:
            rows.append(("upscaler", f"{sr_name}"))
        desc = pipe.description or cfg.description
        md = f"### {model}\n\n" + (f"{desc}\n\n" if desc else "")
        md += "\n".join(f"- **{k}**: {v}" for k, v in rows)
        md += self._measurements(folder, sd)
        if training.get("command"):
            md += f"\n\n<small>trained with <code>{training['command']}</code></small>"
        samples = folder / "samples.png"
        if not samples.is_file() and pipe.kind == "cascade":
            samples = pipe.stages[0][0].path / "samples.png"
        return md, (str(samples) if samples.is_file() else None)

    def _measurements(self, folder: Path, sd) -> str:
        """The folder's metrics files as one short table, a line per measurement (its settings, its headline
        numbers): the run at the model's default settings first, then by FID; lines past CARD_MEASUREMENTS fold
        into a <details> block (fashion's 30 files made a card of ~6,900 px, issue 18)."""
        found = [(mpath, m) for mpath in sorted(folder.glob("metrics*.json")) if (m := self._read_json(mpath))]
        if not found:
            return ""

        def variant(m):         # another seed or backend of a run: the spread and the backend gate, listed last
            return bool(m.get("seed")) or m.get("backend", "fp32") != "fp32"

        def is_default(m):
            return ((m.get("sampler"), m.get("steps"), m.get("spacing", "trailing"), _number(m.get("guidance")))
                    == (sd.sampler, sd.steps, sd.spacing, sd.guidance) and not variant(m))
        found.sort(key=lambda pm: (not is_default(pm[1]), variant(pm[1]), _number(pm[1].get("fid"), float("inf"))))
        lines = list(dict.fromkeys(          # metrics.json often repeats a tagged file: one line each
            f"| {self._metric_setting(m)}{' (default)' if is_default(m) else ''} | {self._metric_result(m)} |"
            for _, m in found))
        head = "\n\n**Measured** (`evaluate`; every file in the model folder)\n\n| settings | result |\n|---|---|\n"
        md = head + "\n".join(lines[:CARD_MEASUREMENTS])
        if len(lines) > CARD_MEASUREMENTS:
            md += (f"\n\n<details><summary>{len(lines) - CARD_MEASUREMENTS} more measurements</summary>\n\n"
                   "| settings | result |\n|---|---|\n" + "\n".join(lines[CARD_MEASUREMENTS:]) + "\n\n</details>")
        return md

    @staticmethod
    def _metric_setting(m: dict) -> str:
        """How a metrics file was measured, in a few words: sampler, steps, grid, guidance, samples, seed, backend."""
        if not m.get("sampler"):
            return "-"
        out = f"{SAMPLER_NAMES.get(m['sampler'], m['sampler'])} {m.get('steps', '?')} steps"
        if m.get("spacing", "trailing") != "trailing":
            out += f" ({m['spacing']})"
        if _number(m.get("guidance")) is not None:
            out += f", guidance {m['guidance']:g}"
        n = m.get("n") or (m.get("picks") and f"{m['picks']} picks x {m.get('per_pick')}")
        if n:
            out += f", n {n}"
        if m.get("seed"):
            out += f", seed {m['seed']}"
        if m.get("backend", "fp32") != "fp32":
            out += f", {m['backend']}"
        return out

    @staticmethod
    def _metric_result(m: dict) -> str:
        """The headline numbers of a metrics file (FID, accuracy, F1, pose adherence, PSNR / SSIM, picks)."""
        parts = []
        if _number(m.get("fid")) is not None:
            real = _number(m.get("fid_real_vs_real"))
            parts.append(f"FID {m['fid']:.2f}" + (f" (real vs real {real:.2f})" if real is not None else ""))
        if _number(m.get("accuracy")) is not None:
            parts.append(f"accuracy {m['accuracy']:.1%}")
        f1 = m.get("f1_visible")
        if isinstance(f1, dict) and _number(f1.get("mean")) is not None:
            parts.append(f"F1 {f1['mean']:.3f} (visible attributes)")
        if _number(m.get("pose_adherence")) is not None:
            parts.append(f"pose adherence {m['pose_adherence']:.3f} (real {_number(m.get('pose_adherence_real'), 0):.3f})")
        if _number(m.get("psnr_sr")) is not None:
            parts.append(f"PSNR {m['psnr_sr']:.1f} dB, SSIM {_number(m.get('ssim_sr'), 0):.3f} (bicubic "
                         f"{_number(m.get('psnr_bicubic'), 0):.1f} dB, {_number(m.get('ssim_bicubic'), 0):.3f})")
        if _number(m.get("generated_mean_judgeable")) is not None:
            parts.append(f"picks followed {m['generated_mean_judgeable']:.0%} (judgeable; real "
                         f"{_number(m.get('real_mean_judgeable'), 0):.0%}), {_number(m.get('generated_mean'), 0):.0%} "
                         f"over all")
        if _number(m.get("cascade_sharper_fraction")) is not None:
            parts.append(f"sharper than bicubic in {m['cascade_sharper_fraction']:.0%}")
        return "; ".join(parts) or ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in DiffusionApp._flatten(m)[:3])

    @staticmethod
    def _read_json(path: Path) -> dict:
        try:
            data = json.loads(Path(path).read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    @staticmethod
    def _flatten(d, prefix=""):
        out = []
        for k, v in d.items():
            if isinstance(v, dict):
                out += DiffusionApp._flatten(v, f"{prefix}{k}.")
            elif isinstance(v, (int, float, str)) and not isinstance(v, bool):
                out.append((f"{prefix}{k}", v))
        return out

    @staticmethod
    def sampling_defaults(pipe):
        """The model's own default settings (``sampling`` in its config; a cascade's are its base stage's),
        with a sampler the model cannot use replaced by one it can (cold models)."""
        sd = pipe.base.config.sampling
        if sd.sampler not in pipe.samplers:
            sd = replace(sd, sampler="dpm++" if "dpm++" in pipe.samplers else pipe.samplers[0])
        return sd

    def on_model_change(self, model, sampler, class_label=ANY, attributes=None):
        """Control visibility / choices for the selected model (its card is the model_card event); the sampler,
        steps, grid and guidance move to the model's own defaults (``sampling`` in its config). The chosen class
        and attributes stay chosen where the new model has them (emoji -> emoji-cascade keeps the picks)."""
        if model in (None, "") and not self.models.names():
            hide = gr.update(visible=False)
            return (gr.skip(), gr.skip(), gr.skip(), hide, hide, hide, gr.skip(), gr.skip(), hide, gr.skip(),
                    gr.skip())
        try:
            pipe = self.models.get(model)
        except USER_ERRORS as e:
            raise user_error(e) from None
        cfg = pipe.base.config
        samplers = list(pipe.samplers)
        choices = [c for c in SAMPLER_CHOICES if c[1] in samplers]
        sd = self.sampling_defaults(pipe)
        sampler = sd.sampler
        single = bool(cfg.label_names) and not cfg.multi_label
        multi = bool(cfg.label_names) and cfg.multi_label
        pose = cfg.task == "pose"
        sr = cfg.task == "super_resolution"
        guidable = bool(cfg.unet.num_labels) or pose
        sr_name, _ = self.upscaler_for(model, pipe)
        init_label = "Low-resolution input (required)" if sr else "Init image (optional, img2img)"
        return (
            gr.update(choices=choices, value=sampler),
            gr.update(visible=(sampler == "ddim")),
            gr.update(visible=guidable, value=sd.guidance),     # no effect without a guidable condition
            gr.update(visible=single, choices=[ANY] + list(cfg.label_names),
                      value=class_label if single and class_label in cfg.label_names else ANY),
            gr.update(visible=multi, choices=list(cfg.label_names),
                      value=[a for a in as_list(attributes) if a in cfg.label_names] if multi else [],
                      info=pipe.picks_meaning.capitalize() if multi else None),
            gr.update(visible=pose),
            gr.update(label=init_label),
            gr.update(open=sr),
            gr.update(visible=sr_name is not None),
            gr.update(value=sd.steps),
            gr.update(value=sd.spacing),
        )

    def card_update(self, model):
        """The model card for the UI (hides the samples image when there is none)."""
        if model in (None, "") and not self.models.names():
            return (f"### No models yet\n\nNo model folders (with config.json) in `{self.models.root}`. "
                    "Train one with `python -m diffusion_core train --config configs/fashion.json`, or set "
                    "DIFFUSION_CHECKPOINTS. The Forward process tab works without a model."), gr.update(visible=False)
        if isinstance(model, str) and model in self.models.names():
            try:
                self.models.get(model)
            except USER_ERRORS:
                return (f"### {model} (broken)\n\nThis folder cannot be used: {self.models.broken(model)}",
                        gr.update(visible=False))
        md, samples = self.model_card(model)
        return md, gr.update(value=samples, visible=samples is not None)

    def refresh_models(self, current):
        names = self.models.names()
        value = current if current in names else self.models.default()
        return gr.update(choices=self.models.choices(), value=value)

    # ---- generation ------------------------------------------------------------------------------
    def _cond_image(self, pipe, source, sketch, upload):
        cfg = pipe.base.config
        size = cfg.unet.image_size
        ch = cfg.unet.cond_channels or 1
        if source == "upload":
            if upload is None:
                raise ValueError("this is a pose model: upload a stickman drawing (or pick an example)")
            return load_image(upload, size, ch)
        comp = sketch.get("composite") if isinstance(sketch, dict) else sketch
        if comp is None:
            raise ValueError("this is a pose model: draw a stickman in the sketch pad (black strokes on white)")
        img = to_mode(open_image(comp), 1)
        if np.asarray(img).min() > 200:
            raise ValueError("the sketch pad is empty: draw a stickman first (black strokes on white)")
        return load_image(img, size, ch)

    def generate(self, model, sampler="dpm++", steps=25, spacing="trailing", eta=0.0, guidance=2.0, seed=-1,
                 batch_size=4, preview_every=1, class_label=ANY, attributes=None, stick_source="sketch",
                 stick_sketch=None, stick_upload=None, init_image=None, strength=0.6, make_gif=False,
                 gif_frames="x0_hat", backend=None, request: gr.Request = None):
        """Stream a sampling run: every ``preview_every`` steps yield x_t | x0_hat, a status line and the
        progress; finally the gallery of PNGs (tEXt 'parameters' = JSON) and the optional GIF."""
        try:
            steps = int(number(steps, "steps", 1, MAX_STEPS, whole=True))
            batch_size = int(number(batch_size, "batch size", 1, MAX_BATCH, whole=True))
            preview_every = max(1, int(number(preview_every, "preview every", 0, MAX_STEPS, whole=True)))
            guidance = number(guidance, "guidance scale", 0.0, MAX_GUIDANCE)
            eta = number(eta, "eta", 0.0, 1.0)
            strength = number(strength, "strength", 0.0, 1.0)
            if strength == 0.0:
                raise ValueError("strength must be in (0, 1], got 0")
            seed = self._seed(seed)
            if backend is not None and backend not in BACKENDS:
                raise ValueError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
            if model in self.models.names() and not self.models.is_ready(model, backend):
                # loading, and with backend auto measuring this CPU once per model: seconds, so say so
                what = ("measuring which backend runs it fastest here (once per model)"
                        if (backend or self.models.backend) == "auto" else "loading")
                yield (gr.skip(), html_status(f"<b>{html.escape(model)}</b>: {what}…"), None, None, gr.skip(),
                       gr.skip(), gr.skip())
            pipe = self.models.get(model, backend)
            cfg = pipe.base.config
            if sampler not in pipe.samplers:
                raise ValueError(f"sampler {sampler!r} does not apply to model {model!r} "
                                 f"(use {', '.join(pipe.samplers)})")
            labels = self._labels(pipe, model, class_label, attributes)
            kw = dict(sampler=sampler, steps=steps, spacing=spacing, eta=float(eta), guidance=float(guidance),
                      labels=labels, seed=seed, device=self.models.device)
            if cfg.task == "pose":
                kw["cond_image"] = self._cond_image(pipe, stick_source, stick_sketch, stick_upload)
            if cfg.task == "super_resolution":
                if init_image is None:
                    raise ValueError("a super-resolution model needs a low-resolution input image (upload one)")
                kw["low_res"] = load_image(init_image, cfg.low_res, cfg.unet.out_channels)[None]
            elif init_image is not None:
                kw["init_image"] = load_image(init_image, cfg.unet.image_size, cfg.unet.in_channels)
                kw["strength"] = float(strength)
            stream = pipe.stream(batch_size, **kw)
        except USER_ERRORS as e:
            raise user_error(e) from None

        session = getattr(request, "session_hash", None) or "api"
        stop = threading.Event()
        self._stops[session] = stop
        meta = {"model": model, "sampler": sampler, "steps": steps, "spacing": spacing,
                "eta": float(eta) if sampler == "ddim" else None, "guidance": float(guidance), "labels": labels,
                "seed": seed, "batch_size": batch_size}
        if "init_image" in kw:
            meta["img2img_strength"] = float(strength)
        if "cond_image" in kw:
            meta["stickman"] = stick_source
        n_stages = len(pipe.stages) if pipe.kind == "cascade" else 1
        run = self._new_run(pipe, model, meta)     # the first image's steps, for the Learn tab
        self.runs.put(session, run)                 # the session's gr.State holds the key; the steps stay here
        frames: list[np.ndarray] = []
        t0 = time.time()
        last = None
        partial = None
        try:
            for rec in stream:   # each step runs under inference mode inside the package's loop
                last = rec
                self._keep(session, run, rec)
                if make_gif and (rec.index % max(1, rec.num_steps // GIF_MAX_FRAMES) == 0
                                 or rec.index == rec.num_steps - 1):
                    src = rec.x0_hat if gif_frames == "x0_hat" else rec.x_t
                    frames.append(np.asarray(batch_grid(src)))
                if stop.is_set():
                    break
                is_last = rec.index == rec.num_steps - 1
                if rec.index % preview_every == 0 or is_last:
                    frac = (rec.stage + (rec.index + 1) / rec.num_steps) / n_stages
                    partial = {"x0": rec.x0_hat.detach().float().cpu().clamp(-1, 1).numpy(), "meta": meta,
                               "step": f"{rec.index + 1}/{rec.num_steps}", "stage": rec.stage}
                    # gallery and GIF are None (empty) until the run ends, not gr.skip(): Gradio rebuilds a
                    # skipped component's config on every yield, about 1.5 ms of the server's Python time each
                    yield (side_by_side(rec.x_t, rec.x0_hat), html_status(self._status(pipe, rec, n_stages, t0), frac),
                           None, None, seed, partial, session)
        except USER_ERRORS as e:
            raise user_error(e) from None
        except Exception as e:      # never show a traceback; keep serving
            log.exception("sampling failed")
            raise gr.Error(f"sampling failed: {type(e).__name__}: {e}") from None
        finally:
            if self._stops.get(session) is stop:
                del self._stops[session]
        if last is None:
            raise gr.Error("sampling produced no steps")
        stopped = stop.is_set() or not (last.index == last.num_steps - 1 and last.stage == n_stages - 1)
        final = (last.x0_hat if stopped else last.x_next).detach().float().cpu().clamp(-1, 1)
        if stopped:
            meta = dict(meta, partial=True, stopped_at=f"{last.index + 1}/{last.num_steps}")
        gallery = self._save_gallery(final, meta)
        gif = self._save_gif(frames, meta) if make_gif and frames else None
        took = time.time() - t0
        text = (f"<b>{'Stopped' if stopped else 'Done'}</b> · {batch_size} image(s) · seed {seed} · "
                f"{SAMPLER_NAMES.get(sampler, sampler)} {steps} steps ({spacing}) · {took:.1f} s · "
                f"<span title=\"{html.escape(self._backend_reason(pipe))}\">{pipe.backend}</span>")
        if stopped:
            text += " · gallery shows the last x0_hat prediction"
        run["done"] = not stopped
        yield (side_by_side(last.x_t, final), html_status(text, 1.0), gallery, gif, seed, {"done": True}, session)

    def _status(self, pipe, rec, n_stages, t0) -> str:
        parts = [f"step {rec.index + 1}/{rec.num_steps}", f"t = {rec.t} → {rec.t_next}"]
        if n_stages > 1:
            name = pipe.stages[rec.stage][0].path.name
            parts.append(f"stage {rec.stage + 1}/{n_stages} ({'base' if rec.stage == 0 else 'super-resolution'}: "
                         f"{name})")
        if pipe.kind == "ensemble":
            e = pipe.expert_index(rec.t)
            if e is not None:
                lo, hi, _ = pipe.experts[e]
                parts.append(f"expert {e + 1}/{len(pipe.experts)} (t in [{lo}, {hi}))")
        el = time.time() - t0
        done = (rec.stage + (rec.index + 1) / rec.num_steps) / n_stages     # fraction of the run (stages alike)
        left = eta_seconds(el, done)
        parts.append(f"{el:.1f} s" + (f", about {fmt_duration(left)} left" if left is not None else ""))
        parts.append(pipe.backend)
        return " · ".join(parts)

    @staticmethod
    def _backend_reason(pipe) -> str:
        """Why each network runs where it does: forced, or the measurement auto made."""
        return "; ".join(c.summary() for c in pipe.backend_choices)

    def _run_dir(self, model: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(model))[:40]
        return Path(tempfile.mkdtemp(prefix=f"{time.strftime('%H%M%S')}-{safe}-", dir=self.out_dir))

    def _save_gallery(self, x: torch.Tensor, meta: dict) -> list[tuple[str, str]]:
        d = self._run_dir(meta["model"])
        out = []
        for i in range(x.shape[0]):
            m = dict(meta, seed=meta["seed"] + i, batch_seed=meta["seed"], index=i)
            path = save_png(as_pil_uint8(x[i]), d / f"{meta['model']}-{meta['seed'] + i}.png", m)
            out.append((path, f"seed {meta['seed'] + i}" + (" (partial)" if meta.get("partial") else "")))
        return out

    def _save_gif(self, frames: list[np.ndarray], meta: dict) -> str:
        if len(frames) > GIF_MAX_FRAMES:
            idx = np.linspace(0, len(frames) - 1, GIF_MAX_FRAMES).round().astype(int)
            frames = [frames[i] for i in idx]
        imgs = [Image.fromarray(f) for f in frames]
        durations = [80] * (len(imgs) - 1) + [1500]
        path = self._run_dir(meta["model"]) / f"{meta['model']}-{meta['seed']}-reverse.gif"
        imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=durations, loop=0)
        return str(path)

    def stop(self, partial, request: gr.Request = None):
        """Stop button: end the sampling loop at once and show the latest x0_hat in the gallery."""
        session = getattr(request, "session_hash", None) or "api"
        ev = self._stops.get(session)
        if ev is not None:
            ev.set()
        if not partial or partial.get("done"):
            return gr.skip(), gr.skip()
        meta = dict(partial["meta"], partial=True, stopped_at=partial.get("step"))
        gallery = self._save_gallery(torch.from_numpy(np.asarray(partial["x0"])), meta)
        return gallery, html_status(f"<b>Stopped</b> at step {partial.get('step')} · gallery shows the last "
                                    f"x0_hat prediction (seed {meta['seed']})", None)

    # ---- upscaling -------------------------------------------------------------------------------
    def upscale(self, model, image, sr_steps=20, seed=0):
        """Super-resolve one image with the model's SR stage (cascade), the model itself (SR model), or a
        stand-alone SR model with matching channels. Returns (before nearest-upsampled, after) and a note."""
        try:
            pipe = self.models.get(model)
            sr_name, sr = self.upscaler_for(model, pipe)
            if sr is None:
                raise ValueError(f"no super-resolution model is available for {model!r}")
            if image is None:
                raise ValueError("select an image in the gallery (or upload one) to upscale")
            sr_steps = int(number(sr_steps, "SR steps", 1, MAX_STEPS, whole=True))
            sr_cfg = (sr.stages[-1][0] if sr.kind == "cascade" else sr).config
            img = open_image(image)
            side = min(min(img.size), MAX_UPSCALE_INPUT)
            low = load_image(img, side, sr_cfg.unet.out_channels)[None]
            t0 = time.time()
            with torch.inference_mode():
                out = sr.upscale(low, steps=sr_steps, seed=int(seed or 0))[0].clamp(-1, 1)
        except USER_ERRORS as e:
            raise user_error(e) from None
        except Exception as e:
            log.exception("upscaling failed")
            raise gr.Error(f"upscaling failed: {type(e).__name__}: {e}") from None
        after = as_pil_uint8(out)
        before = as_pil_uint8(low[0]).resize(after.size, Image.Resampling.NEAREST)
        path = save_png(after, self._run_dir(model) / "upscaled.png",
                        {"model": sr_name, "upscale_of": model, "steps": sr_steps, "seed": int(seed or 0)})
        target = max(PREVIEW_PX, after.width)
        note = (f"{low.shape[-1]} px → {after.width} px with {sr_name} ({sr_steps} DPM-Solver++ steps, "
                f"{time.time() - t0:.1f} s)")
        return (upscale_nearest(before, target), upscale_nearest(after, target)), path, note

    # ---- forward process -------------------------------------------------------------------------
    def fashion_example(self, index=None):
        """A Fashion-MNIST test image (random unless ``index``) as a PNG path; a pattern without the data."""
        if FASHION_DIR.is_dir():
            try:
                with self._fashion_lock:
                    if self._fashion is None:
                        from diffusion_core import DataConfig, load_data
                        self._fashion = load_data(DataConfig(source="fashion", split="test", limit=1000))
                data = self._fashion
                i = random.randrange(len(data)) if index is None else int(index) % len(data)
                arr = data.images[i, ..., 0]
                name = data.label_names[int(data.labels[i].argmax())] if data.labels is not None else ""
                path = self.out_dir / f"fashion-test-{i}.png"
                Image.fromarray(arr).save(path)
                return str(path), f"Fashion-MNIST test image #{i} ({name})"
            except (OSError, ValueError) as e:
                log.warning("Fashion-MNIST unavailable: %s", e)
        path = self.out_dir / "pattern.png"
        Image.fromarray(self.pattern()).save(path)
        return str(path), "generated test pattern (Fashion-MNIST not installed)"

    @staticmethod
    def pattern(size: int = 32) -> np.ndarray:
        yy, xx = np.mgrid[0:size, 0:size]
        r = np.hypot(yy - size / 2 + 0.5, xx - size / 2 + 0.5)
        img = np.where(r < size * 0.3, 230, 30).astype(np.uint8)
        img[(yy // 4 + xx // 4) % 2 == 0] //= 2
        return img

    def upload_note(self, image) -> str:
        """The caption of an uploaded x_0 (it kept the last dataset example's caption, issue 18)."""
        if image is None:
            return ""
        try:
            img = open_image(image)
        except USER_ERRORS as e:
            raise user_error(e) from None
        side = self._forward_x0(img).shape[-1]
        return (f"your image ({img.width}x{img.height} px, {'grey' if is_gray(img) else 'colour'}), used as a "
                f"{side}x{side} x_0")

    def _forward_x0(self, image) -> torch.Tensor:
        if image is None:
            image, _ = self.fashion_example(index=0)
        img = open_image(image)
        ch = 1 if is_gray(img) else 3
        size = min(64, max(8, min(img.size)))
        return load_image(img, size, ch)[None]

    def forward(self, image=None, schedule="cosine", degradation="noise", t=250):
        """q(x_t | x_0) at t, and a strip of x_t at 8 values of t (one fixed noise draw)."""
        try:
            t = int(number(t, "t", 0, 999, whole=True))
            if degradation not in DEGRADATIONS:
                raise ValueError(f"unknown degradation {degradation!r}; choose {', '.join(DEGRADATIONS)}")
            sched = make_schedule(schedule, 1000)
            x0 = self._forward_x0(image)
            eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
            if degradation == "noise":
                def q(tt):
                    return sched.q_sample(x0, torch.full((1,), tt, dtype=torch.long), eps)
            else:
                deg = make_degradation(degradation, 1000, sched)

                def q(tt):
                    return deg(x0, torch.full((1,), tt, dtype=torch.long), eps)
            xt = q(t)
            ts = [-1] + [round(1000 * k / 8) - 1 for k in range(1, 9)]
            cells = [upscale_nearest(as_pil_uint8((x0 if tt < 0 else q(tt))[0]).convert("RGB"), 80) for tt in ts]
            strip = labelled(cells, ["x_0" if tt < 0 else f"t = {tt}" for tt in ts], gap=4, size=12)
        except USER_ERRORS as e:
            raise user_error(e) from None
        ab = float(sched.alpha_bar_at(t))
        if degradation == "noise":
            info = (f"**t = {t}**, {schedule} schedule: alpha_bar = {ab:.4f}, sqrt(alpha_bar) = {math.sqrt(ab):.3f}, "
                    f"noise std = {math.sqrt(1 - ab):.3f}, log-SNR = {math.log(ab / (1 - ab)):.2f}")
        else:
            info = (f"**t = {t}**, {degradation}: severity {(t + 1) / 1000:.3f} of full degradation "
                    "(cold diffusion; the noise schedule does not apply)")
        return upscale_nearest(as_pil_uint8(xt[0]).convert("RGB"), PREVIEW_PX), strip, info

    @staticmethod
    def schedule_plot(t=250, schedule="cosine"):
        """alpha_bar(t) and log-SNR(t), linear vs cosine (Nichol & Dhariwal 2021, Fig. 5), t marked."""
        from matplotlib.figure import Figure
        fig = Figure(figsize=(8, 3.2), dpi=100, layout="constrained")
        ax1, ax2 = fig.subplots(1, 2)
        T = 1000
        tt = np.arange(T) / T
        for kind, color in (("linear", "tab:blue"), ("cosine", "tab:orange")):
            s = make_schedule(kind, T)
            lw = 2.5 if kind == schedule else 1.2
            ax1.plot(tt, s.alpha_bar.numpy(), color=color, lw=lw, label=kind)
            ax2.plot(tt, s.log_snr().numpy(), color=color, lw=lw, label=kind)
        for ax in (ax1, ax2):
            ax.axvline(int(t) / T, color="gray", ls="--", lw=1)
            ax.set_xlabel("diffusion step (t/T)")
            ax.grid(alpha=0.3)
            ax.legend()
        ax1.set_title("alpha_bar(t)")
        ax2.set_title("log SNR(t) = log(alpha_bar / (1 - alpha_bar))")
        return fig


    # ---- learning tools --------------------------------------------------------------------------
    def _labels(self, pipe, model, class_label=ANY, attributes=None) -> list:
        """The labels of the Generate controls for ``pipe``, checked against the model's names."""
        cfg = pipe.base.config
        if cfg.multi_label:
            labels = as_list(attributes)
        else:
            labels = [] if class_label in (None, "", ANY) else [class_label]
        if labels and not cfg.unet.num_labels:
            raise ValueError(f"model {model!r} takes no labels (got {', '.join(map(str, labels))})")
        if labels:   # resolve now so a bad label fails before any work, with the model's names
            pipe.base.condition(1, labels)
        return labels

    @staticmethod
    def _seed(seed) -> int:
        """-1 (or nothing) for a random seed, else a whole number in [0, MAX_SEED]."""
        seed = -1 if seed is None else int(number(seed, "seed", -1, MAX_SEED, whole=True))
        if seed < 0:
            seed = random.randint(0, MAX_SEED)
        if seed > MAX_SEED:
            raise ValueError(f"seed must be in [0, {MAX_SEED}] (or -1 for random), got {seed}")
        return seed

    @staticmethod
    def _needs_plain_generation(pipe, model, what):
        cfg = pipe.base.config
        if cfg.task == "super_resolution":
            raise ValueError(f"{what} needs a model that generates from noise; {model!r} is a super-resolution "
                             "model (it needs a low-resolution input)")
        if cfg.task == "pose":
            raise ValueError(f"{what} needs a model that generates from noise alone; {model!r} needs a stickman "
                             "drawing (use Generate)")

    def _new_run(self, pipe, model, meta) -> dict:
        """The record of a Generate run that the Learn tab explains (first image, base stage only)."""
        base = pipe.base
        d = base.config.diffusion
        run = {"model": model, "sampler": meta["sampler"], "eta": meta.get("eta") or 0.0, "variance": "posterior",
               "improved": True, "seed": meta["seed"], "steps": [], "grid": [], "done": False,
               "summary": (f"model {model} · {SAMPLER_NAMES.get(meta['sampler'], meta['sampler'])} · "
                           f"{meta['steps']} steps ({meta['spacing']}) · guidance {meta['guidance']:g} · "
                           f"seed {meta['seed']} · first image" + (" · base stage of the cascade"
                                                                  if pipe.kind == "cascade" else ""))}
        if d.is_cold:
            deg = base.degradation
            run["degradation"] = deg
            if deg.needs_noise:     # the run's fixed draw for image 0 (the stream seeds image i with seed + i)
                c, s = base.config.unet.out_channels, base.config.unet.image_size
                run["fixed_noise"] = torch.randn((c, s, s), generator=make_generators(meta["seed"], 1)[0])[None]
        else:
            run["schedule"] = base.schedule
            run["T"] = d.T
        if pipe.kind == "ensemble":
            run["experts"] = [(lo, hi) for lo, hi, _ in pipe.experts]
        return run

    def _keep(self, key: str, run: dict, rec) -> None:
        """Append a SampleStep of the first image (its x_t is the previous step's x_next: stored once), if the
        kept runs' byte budget allows it; otherwise the run is marked ``capped`` and keeps the steps it has."""
        if rec.stage != 0:
            return
        run["grid"].append(int(rec.t))      # every step's t, kept or not: a multistep solver's weights depend on
        run["grid_end"] = int(rec.t_next)   # the whole grid (its order drops near the end)
        if run.get("capped"):
            return
        steps = run["steps"]
        first = slice(0, 1)
        shared = steps and steps[-1].index == rec.index - 1
        x_t = steps[-1].x_next if shared else rec.x_t[first].detach().float().cpu().clone()
        noise = None if rec.noise is None else rec.noise[first].detach().float().cpu().clone()
        new = [rec.x_next[first].detach().float().cpu().clone(), rec.x0_hat[first].detach().float().cpu().clone(),
               rec.eps_hat[first].detach().float().cpu().clone()] + ([] if shared else [x_t]) + \
            ([] if noise is None else [noise])
        if not self.runs.grow(key, run, sum(t.numel() * t.element_size() for t in new)):
            run["capped"] = True
            return
        steps.append(SampleStep(rec.index, rec.num_steps, int(rec.t), int(rec.t_next), x_t, *new[:3], 0, noise))

    def _run_or_error(self, key) -> dict:
        run = self.runs.get(key)
        if run is None and key is not None:
            raise ValueError(f"this session's last run is no longer kept (the server keeps the last runs of all "
                             f"sessions, up to {self.runs.max_bytes / 2**20:g} MB): run Generate again")
        if not run or not run.get("steps"):
            raise ValueError("no Generate run to look at yet: run Generate first (this session keeps the steps of "
                             "its last run, first image)")
        return run

    def after_run(self, key, step):
        """After Generate: the Explain slider spans the run's steps; a note says what is kept."""
        run = self.runs.get(key)
        if not run or not run.get("steps"):
            return gr.skip(), gr.skip(), gr.skip()
        n = run["steps"][0].num_steps
        step = int(step or 1)
        note = f"Kept: {run['summary']} ({len(run['steps'])}/{n} steps" + (
            f"; the first {len(run['steps'])} fit in the server's {self.runs.max_bytes / 2**20:g} MB for kept runs"
            if run.get("capped") else "") + ")."
        return (gr.update(maximum=max(n, 2), value=min(max(step, 1), n)), note, note)

    @handles_errors("explaining the step")
    def explain_step(self, step=1, run=None):
        """The kept run's step ``step`` (1 = first, noisiest): the sampler's update with its numbers, the
        images it combines, and the noise level over the run. Returns (markdown, image, plot, numbers)."""
        run = self._run_or_error(run)
        recs = run["steps"]
        n = recs[0].num_steps
        step = int(number(step, f"step (the last run has {n} steps)", 1, n, whole=True))
        if step > len(recs) and run.get("capped"):
            raise ValueError(f"step {step} is not kept: the server keeps the first {len(recs)} steps of this run "
                             f"({self.runs.max_bytes / 2**20:g} MB for the kept runs of all sessions)")
        if step > len(recs):
            raise ValueError(f"step {step} is not computed yet: the run is at step {len(recs)} of {n}")
        num = step_numbers(run, step - 1)
        if run.get("experts"):
            lo_hi = next(((lo, hi) for lo, hi in run["experts"] if lo <= num["t"] < hi), None)
            if lo_hi:
                num["expert"] = f"t in [{lo_hi[0]}, {lo_hi[1]})"
        md = explain_markdown(num, run)
        if num.get("expert"):
            md += f"\n\nDenoised by the ensemble's expert for {num['expert']}."
        terms = num.pop("_terms")
        noise = num.pop("_noise")
        rec = recs[step - 1]
        tn = "-1 (clean)" if rec.t_next < 0 else str(rec.t_next)
        cells = [(rec.x_t, f"x_t (t={rec.t})"), (rec.eps_hat * 0.4, "eps_hat (x0.4)"), (rec.x0_hat, "x0_hat")]
        cells += [(v, f"x0_hat (t={k[7:-1]})") for k, v in terms.items() if k.startswith("x0_hat[")]
        if "D(x0_hat,t)" in terms:
            cells += [(terms["D(x0_hat,t)"], f"D(x0_hat, {rec.t})"), (terms["D(x0_hat,t_next)"], f"D(x0_hat, {rec.t_next})")]
        if noise is not None:
            cells.append((noise.float() * 0.4, "noise z (x0.4)"))
        cells.append((rec.x_next, f"x_t' (t'={tn})"))
        strip = labelled([upscale_nearest(as_pil_uint8(x[0]).convert("RGB"), 112) for x, _ in cells],
                         [c for _, c in cells], gap=6, size=11)
        return md, strip, self._noise_plot(run, step - 1), num

    @staticmethod
    def _noise_plot(run, i):
        """sqrt(1 - alpha_bar_t) (or the cold severity) over the run, step i marked; and the measured std."""
        from matplotlib.figure import Figure
        recs = run["steps"]
        ts = [r.t for r in recs] + [recs[-1].t_next]
        xs = np.arange(len(ts))
        measured = [float(r.x_t.std()) for r in recs] + [float(recs[-1].x_next.std())]
        fig = Figure(figsize=(6.4, 3.0), dpi=100, layout="constrained")
        ax = fig.subplots()
        if "schedule" in run:
            level = [math.sqrt(1 - _alpha_bar(run["schedule"], t)) for t in ts]
            ax.plot(xs, level, "-o", ms=3, color="tab:blue", label="noise level sqrt(1 - alpha_bar_t)")
        else:
            T = run["degradation"].T
            level = [max(t + 1, 0) / T for t in ts]
            ax.plot(xs, level, "-o", ms=3, color="tab:blue", label="degradation severity (t + 1) / T")
        ax.plot(xs, measured, "--", color="tab:gray", lw=1.2, label="measured std of x_t (first image)")
        ax.axvline(i, color="tab:orange", lw=1.2)
        ax.plot([i], [level[i]], "o", ms=9, color="tab:orange", label=f"step {i + 1}: t = {ts[i]}")
        ax.set_xlabel("step (0 = start, x_T)")
        ax.set_title("how x_t's noise falls over the run")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        return fig

    @handles_errors("the trajectory")
    def trajectory(self, frames=10, what="x0_hat", run=None):
        """The kept run's x0_hat (or x_t) at every step as an animated GIF (one frame per step, up to
        TRAJ_MAX_FRAMES) and a strip of ``frames`` evenly spaced steps labelled with t."""
        run = self._run_or_error(run)
        if what not in ("x0_hat", "x_t"):
            raise ValueError(f"what must be x0_hat or x_t, got {what!r}")
        frames = int(number(frames, "frames", 2, 20, whole=True))
        recs = list(run["steps"])
        n = len(recs)
        pick = range(n) if n <= TRAJ_MAX_FRAMES else np.linspace(0, n - 1, TRAJ_MAX_FRAMES).round().astype(int)
        imgs = [framed(upscale_nearest(as_pil_uint8(getattr(recs[k], what)[0]).convert("RGB"), 192),
                       f"step {k + 1}/{recs[k].num_steps} · t = {recs[k].t}") for k in pick]
        path = self._run_dir(run["model"]) / f"{run['model']}-{run['seed']}-{what}-trajectory.gif"
        imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=[100] * (len(imgs) - 1) + [1500],
                     loop=0)
        idx = sorted(set(np.linspace(0, n - 1, min(frames, n)).round().astype(int).tolist()))
        strip = labelled([upscale_nearest(as_pil_uint8(getattr(recs[k], what)[0]).convert("RGB"), 96) for k in idx],
                         [f"t = {recs[k].t}" for k in idx], gap=4, size=11)
        return str(path), strip

    def schedule_siblings(self, model) -> list[str]:
        """Other models that differ from ``model`` only in the noise schedule (same U-Net, labels, task and
        prediction; config.json compared)."""
        mine = self.models.raw_config(model)
        if mine.get("kind", "model") != "model" or "diffusion" not in mine:
            return []
        sched_keys = ("schedule", "beta_1", "beta_T")

        def rest(c):
            d = {k: v for k, v in section(c, "diffusion").items() if k not in sched_keys}
            return (c.get("unet"), c.get("label_names"), c.get("multi_label"), c.get("task"), d)

        def sched(c):
            return tuple(section(c, "diffusion").get(k) for k in sched_keys)
        out = []
        for n in self.models.names():
            if n == model:
                continue
            c = self.models.raw_config(n)
            if c.get("kind", "model") == "model" and rest(c) == rest(mine) and sched(c) != sched(mine) \
                    and self.models.broken(n) is None:
                out.append(n)
        return out

    def _grid_models(self, model, pipe, schedules) -> list[tuple[str, object]]:
        models = [(model, pipe)]
        if schedules:
            sibs = self.schedule_siblings(model)
            if not sibs:
                raise ValueError(f"no other model differs from {model!r} only in its noise schedule (same U-Net "
                                 "config, different diffusion.schedule); untick 'schedules'")
            models += [(n, self.models.get(n)) for n in sibs]
        return models

    def _compare_grid(self, model, class_label, attributes, seed, samplers, columns, schedules):
        """One image per (model, sampler) row and column; columns: [(steps, guidance, label)]."""
        pipe = self.models.get(model)
        self._needs_plain_generation(pipe, model, "comparing")
        labels = self._labels(pipe, model, class_label, attributes)
        seed = self._seed(seed)
        samplers = [s for s in (samplers or [])]
        for s in samplers:
            if s not in SAMPLER_NAMES:
                raise ValueError(f"unknown sampler {s!r}; choose from {', '.join(SAMPLER_NAMES)}")
        if not samplers:
            raise ValueError("choose at least one sampler")
        if not columns:
            raise ValueError("choose at least one column (step count or guidance scale)")
        models = self._grid_models(model, pipe, schedules)
        rows = [(name, p, s) for name, p in models for s in samplers if s in p.samplers]
        skipped = sorted({SAMPLER_NAMES[s] for name, p in models for s in samplers if s not in p.samplers})
        if not rows:
            raise ValueError(f"none of the chosen samplers applies to {model!r} (it uses "
                             f"{', '.join(SAMPLER_NAMES[s] for s in pipe.samplers)})")
        cells_n = len(rows) * len(columns)
        work = sum(p.run_steps(st) for _, p, _ in rows for st, _, _ in columns)   # a cascade's SR stages count too
        if cells_n > COMPARE_MAX_CELLS or work > COMPARE_MAX_STEPS:
            raise ValueError(f"too much work for one comparison: {len(rows)} row(s) x {len(columns)} column(s) = "
                             f"{cells_n} cells and {work} sampling steps in all (limits: {COMPARE_MAX_CELLS} cells, "
                             f"{COMPARE_MAX_STEPS} steps); choose fewer samplers, step counts or guidance scales")
        grid_cells, t_all = [], time.time()
        for name, p, s in rows:
            row = []
            sched = "cold" if p.config.diffusion.is_cold else p.config.diffusion.schedule
            for st, g, col in columns:
                t0 = time.time()
                x = p.sample(1, sampler=s, steps=st, guidance=g, labels=labels, seed=seed, device=self.models.device)
                dt = time.time() - t0
                row.append((cell_image(x), [f"{COMPARE_NAMES.get(s, s)} · {col}", f"{dt:.2f} s wall",
                                            f"{name} ({sched})"]))
            grid_cells.append(row)
        note = (f"{len(rows)} x {len(columns)} grid · seed {seed} · "
                f"{'class ' + ', '.join(map(str, labels)) if labels else 'unconditional'} · "
                f"{work} steps in {time.time() - t_all:.1f} s")
        if skipped:
            note += f" · skipped (not for this model): {', '.join(skipped)}"
        return compose_grid(grid_cells), note

    @staticmethod
    def _int_list(values, what, lo, hi) -> list[int]:
        return sorted({int(number(v, what, lo, hi, whole=True)) for v in as_list(values)})

    @handles_errors("the comparison")
    def compare(self, model, class_label=ANY, attributes=None, seed=0, samplers=("ddpm", "ddim", "dpm++"),
                step_counts=(5, 10, 25), guidance=2.0, schedules=False):
        """One seed, samplers (rows) x step counts (columns), each cell labelled with sampler, steps and wall
        time; ``schedules`` adds the rows of the models that differ only in their noise schedule."""
        steps = self._int_list(step_counts, "step counts", 1, MAX_STEPS)
        g = number(guidance, "guidance scale", 0.0, MAX_GUIDANCE)
        return self._compare_grid(model, class_label, attributes, seed, samplers,
                                  [(st, g, f"{st} steps") for st in steps], schedules)

    @handles_errors("the guidance comparison")
    def compare_guidance(self, model, class_label=ANY, attributes=None, seed=0, samplers=("dpm++",),
                         guidance_scales=(0, 1, 2, 4, 7), steps=25, schedules=False):
        """One seed, samplers (rows) x classifier-free guidance scales (columns) at ``steps`` steps."""
        st = int(number(steps, "steps", 1, MAX_STEPS, whole=True))
        gs = sorted({number(v, "guidance scales", 0.0, MAX_GUIDANCE) for v in as_list(guidance_scales)})
        pipe = self.models.get(model)
        cfg = pipe.base.config
        if not cfg.unet.num_labels:
            raise ValueError(f"model {model!r} has no class or attribute conditioning: guidance does nothing")
        if not self._labels(pipe, model, class_label, attributes):
            raise ValueError("choose a class (or attributes) on the Generate tab: without one, every guidance "
                             "scale samples the same unconditional model")
        return self._compare_grid(model, class_label, attributes, seed, samplers,
                                  [(st, g, f"{st} st · w={g:g}") for g in gs], schedules)

    @handles_errors("the interpolation")
    def interpolate(self, model, class_label=ANY, attributes=None, seed_a=0, seed_b=1, frames=8, sampler="ddim",
                    steps=25, guidance=2.0):
        """Slerp between the starting noise x_T of seeds a and b (``frames`` alphas from 0 to 1), each sampled
        with a deterministic sampler (DDIM eta = 0 or DPM-Solver++): the first and last images are exactly
        the plain generations of seed a and seed b. Returns (gallery of PNGs, labelled row, note)."""
        pipe = self.models.get(model)
        self._needs_plain_generation(pipe, model, "interpolating")
        if pipe.kind == "cascade":
            raise ValueError("interpolation samples one model (a cascade has several stages): pick its base model")
        if pipe.config.diffusion.is_cold:
            raise ValueError("interpolation needs a Gaussian diffusion model (x_T is noise); this is a cold model")
        if sampler not in DETERMINISTIC_SAMPLERS:
            raise ValueError(f"interpolation needs a deterministic sampler: {', '.join(DETERMINISTIC_SAMPLERS)}")
        frames = int(number(frames, "frames", 2, INTERP_MAX_FRAMES, whole=True))
        steps = int(number(steps, "steps", 1, MAX_STEPS, whole=True))
        g = number(guidance, "guidance scale", 0.0, MAX_GUIDANCE)
        if frames * steps > INTERP_MAX_WORK:
            raise ValueError(f"too much work: {frames} frames x {steps} steps (limit {INTERP_MAX_WORK}); "
                             "use fewer frames or steps")
        if not 0 <= g <= MAX_GUIDANCE:
            raise ValueError(f"guidance scale must be in [0, {MAX_GUIDANCE:g}], got {guidance}")
        labels = self._labels(pipe, model, class_label, attributes)
        sa, sb = self._seed(seed_a), self._seed(seed_b)
        dev = self.models.device
        za, zb = pipe.start_noise(1, sa)[0], pipe.start_noise(1, sb)[0]
        alphas = [k / (frames - 1) for k in range(frames)]
        x_T = torch.stack([slerp(za, zb, a) for a in alphas])
        t0 = time.time()
        last = None
        for last in pipe.stream(frames, sampler=sampler, steps=steps, spacing="trailing", guidance=g, labels=labels,
                                seed=sa, x_start=x_T, device=dev):
            pass
        x = last.x_next.detach().float().cpu().clamp(-1, 1)
        d = self._run_dir(model)
        meta = {"model": model, "sampler": sampler, "steps": steps, "spacing": "trailing", "guidance": g,
                "labels": labels, "seed_a": sa, "seed_b": sb}
        gallery = [(save_png(as_pil_uint8(x[k]), d / f"{model}-slerp-{k:02d}.png", dict(meta, alpha=a)),
                    f"alpha = {a:.2f}") for k, a in enumerate(alphas)]
        row = labelled([upscale_nearest(as_pil_uint8(x[k]).convert("RGB"), 96) for k in range(frames)],
                       [f"seed {sa}" if a == 0 else (f"seed {sb}" if a == 1 else f"{a:.2f}") for a in alphas],
                       gap=4, size=11)
        note = (f"slerp(x_T(seed {sa}), x_T(seed {sb}), alpha) for {frames} alphas · "
                f"{SAMPLER_NAMES[sampler]} {steps} steps · guidance {g:g} · {time.time() - t0:.1f} s")
        return gallery, row, note


# ---------------------------------------------------------------------------------------------------
# layout
# ---------------------------------------------------------------------------------------------------
CSS = """
.dc-status {font-size: 0.95em; min-height: 1.4em; font-variant-numeric: tabular-nums;}
.dc-bar {height: 8px; background: var(--neutral-200, #e5e7eb); border-radius: 4px; margin-top: 6px; overflow: hidden;}
.dc-fill {height: 100%; background: var(--color-accent, #f97316); transition: width 0.15s;}
.dc-small-btn {align-self: end;}
.dc-pixel img {image-rendering: pixelated;}
#fwd-image img, #card-img img {width: 100%; height: 100%; object-fit: contain;}
#fwd-strip img {max-width: 100%; height: auto; object-fit: contain;}
/* the result gallery: whole thumbnails with their "seed N" caption below, not over them (pose figures lost
   their heads under the label and their feet under the caption); 2 columns on a phone instead of 4 tiles of 98 px */
#gallery .grid-container {grid-template-columns: repeat(var(--grid-cols), minmax(0, 1fr)) !important;
  grid-auto-rows: auto !important; padding-top: 34px !important;}
#gallery .thumbnail-item {aspect-ratio: auto !important; height: auto !important; display: flex !important;
  flex-direction: column !important; align-items: stretch !important;}
#gallery .thumbnail-item img {width: 100% !important; height: auto !important; aspect-ratio: 1 / 1;}
#gallery .caption-label {position: static !important; transform: none !important; margin: 2px auto !important;
  max-width: 100% !important;}
@media (max-width: 640px) {
  #gallery .grid-container {grid-template-columns: repeat(2, minmax(0, 1fr)) !important;}
}
#run-row {position: sticky; bottom: 0; z-index: 20; padding: 8px 0;
  background: var(--background-fill-primary, #fff);}
/* Gradio's container clips with overflow: hidden, which makes it a scroll container and disables sticky; clip
   cuts the same overflow without being one */
.gradio-container {overflow: clip !important;}
/* phones: Gradio moves the tabs that do not fit into a "..." menu (it measures the same buttons in a hidden copy);
   tighter tabs keep all four main tabs and the Learn tabs in view at 390 px */
@media (max-width: 640px) {
  .tab-container button {padding-left: 6px !important; padding-right: 6px !important; font-size: 0.9em !important;}
}
"""

LEARN_INTRO = """Why does each step do what it does? **Explain** and **Trajectory** look at the last Generate
run of this session (its first image; a cascade's base stage). **Compare** and **Interpolate** sample anew with the
model, class and guidance chosen on the Generate tab."""

ABOUT = """
## What is this?

A from-scratch diffusion package (`diffusion_core`) with a small demo. A diffusion model learns to undo a
**forward process** that gradually destroys images:
q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) (Ho et al. 2020, eq. 4). Generation runs the
reverse process from pure noise x_T down to x_0; at every step the network predicts the clean image
**x0_hat**, shown beside the current state **x_t** while it streams.

**Samplers.** *DDPM* (ancestral, stochastic), *DDIM* (Song et al. 2021; eta = 0 deterministic, eta = 1
DDPM-like), *DPM-Solver++(2M)* (Lu et al. 2022; good images in 15-25 steps) and *Cold* (Bansal et al.
2022) for models trained on deterministic degradations (blur, pixelate, mask). **Spacing** chooses the
timesteps of a short run (trailing / leading / linspace, Lin et al. 2024, Table 2).

**Conditioning.** Class labels or multi-label attributes enter through the time embedding; a
**guidance scale** w > 1 applies classifier-free guidance (Ho & Salimans 2022); 1 is plain conditional
sampling, 0 unconditional. Pose models take a stickman drawing (black strokes on white) as an extra
input image. **img2img** (SDEdit, Meng et al. 2022) starts from a noised version of your image; strength 1
means start from pure noise.

**Ensembles and cascades.** An *ensemble* routes each timestep to the expert trained on that noise range
(the status line shows which one is active). A *cascade* runs a base model and then super-resolution
stages conditioned on the upsampled low-resolution image (Ho et al. 2021); *Upscale* runs such a stage on a
gallery image.

**Reproducibility.** Image i of a run with seed s uses its own random stream seeded s + i, so a seed gives
the same image at any batch size. Every PNG carries its settings as JSON in the `parameters` text chunk.

**API.** `from gradio_client import Client; c = Client("http://127.0.0.1:7860/")`, then
`c.predict("fashion", api_name="/model_card")`, `c.submit(model="fashion", steps=20, api_name="/generate")`
(streams previews), `/forward`, `/schedule_plot`, `/upscale`; the Learn tab's `/explain_step` and `/trajectory`
(about the session's last `/generate` run), `/compare`, `/compare_guidance` and `/interpolate`.

**Learn.** *Explain* writes the sampler's update out with the numbers of the chosen step (t, alpha_bar,
sigma, DPM-Solver++'s lambda and h, cold diffusion's D(x0_hat, t)) and checks that they reproduce x_t'.
*Compare* puts samplers, step counts, guidance scales or noise schedules side by side for one seed.
*Interpolate* slerps between two seeds' starting noise. *Trajectory* shows how x0_hat sharpens step by step.
"""


def build_demo(checkpoints_dir=None) -> gr.Blocks:
    app = DiffusionApp(checkpoints_dir)
    threads = os.environ.get("DIFFUSION_THREADS")
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    names = app.models.choices()        # (label, folder): a broken folder is listed with its reason
    default = app.models.default()
    stickmen = sorted(str(p) for p in STICKMEN_DIR.glob("*.png")) if STICKMEN_DIR.is_dir() else []

    with gr.Blocks(title="diffusion_core", delete_cache=(3600, 7200)) as demo:
        demo.app_state = app     # for tests and introspection
        gr.Markdown("# diffusion_core · from-scratch diffusion models")
        with gr.Tabs():
            # ---------------------------------------------------------------- generate
            with gr.Tab("Generate", id="generate"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2, min_width=330):
                        with gr.Row(equal_height=False):
                            model = gr.Dropdown(names, value=default, label="Model", allow_custom_value=True,
                                                scale=5, elem_id="model", info=f"folders in {app.models.root}")
                            refresh = gr.Button("↻ rescan", scale=0, min_width=70, size="sm",
                                                elem_classes="dc-small-btn")
                        class_label = gr.Dropdown([ANY], value=ANY, label="Class", allow_custom_value=True,
                                                  info="(any) samples unconditionally", visible=False,
                                                  elem_id="class-label")
                        attributes = LabelChecks([], value=[], label="Attributes", visible=False)
                        with gr.Group(visible=False) as pose_group:
                            stick_source = Radio([("Sketch pad", "sketch"), ("Upload / example", "upload")],
                                                    value="sketch", label="Stickman (black strokes on white)",
                                                    info="sketch pad: draw with the mouse or a finger; the eraser "
                                                         "and undo are on its toolbars")
                            stick_sketch = SafeSketchpad(label="Stickman sketch", type="pil",
                                                        image_mode="RGBA",
                                                        canvas_size=(256, 256), fixed_canvas=True, height=300,
                                                        brush=gr.Brush(default_size=6, colors=["#000000"],
                                                                       color_mode="fixed"),
                                                        layers=False, elem_id="stick-sketch")
                            stick_upload = SafeImage(label="Stickman image", type="filepath", image_mode=None,
                                                     sources=["upload", "clipboard"], height=220, visible=False)
                            if stickmen:
                                with gr.Column(visible=False) as stick_examples:
                                    gr.Examples([[p] for p in stickmen], inputs=[stick_upload],
                                                label="Example stickmen", examples_per_page=8)
                            else:
                                stick_examples = gr.Column(visible=False)
                        sampler = Dropdown(SAMPLER_CHOICES, value="dpm++", label="Sampler")
                        eta = Slider(0, 1, value=0.0, step=0.05, label="DDIM eta", visible=False,
                                        info="0 deterministic, 1 DDPM-like")
                        with gr.Row():
                            steps = Slider(1, MAX_STEPS, value=25, step=1, label="Steps", elem_id="steps")
                            spacing = Radio(list(SPACINGS), value="trailing", label="Timestep spacing",
                                               info="logsnr / karras: grids in noise level (Gaussian models)")
                        guidance = Slider(0, MAX_GUIDANCE, value=2.0, step=0.25, label="Guidance scale",
                                             info="classifier-free guidance; 1 = off, 0 = unconditional")
                        with gr.Row(equal_height=False):
                            seed = Number(-1, label="Seed (-1 = random)", precision=0, minimum=-1,
                                          maximum=MAX_SEED, scale=3, elem_id="seed")
                            with gr.Column(scale=1, min_width=90):
                                rand_btn = gr.Button("🎲 random", size="sm", elem_classes="dc-small-btn")
                                reuse_btn = gr.Button("♻ reuse last", size="sm", elem_classes="dc-small-btn")
                        with gr.Row():
                            batch_size = Slider(1, MAX_BATCH, value=4, step=1, label="Batch size", elem_id="batch-size")
                            preview_every = Slider(1, 50, value=1, step=1, label="Preview every k steps")
                        backend = Dropdown(list(BACKENDS), value=app.models.backend, label="Backend",
                                           elem_id="backend",
                                           info="where the network runs: auto measures this CPU and picks the "
                                                "fastest that matches fp32 (bf16, OpenVINO); the status line says which")
                        with gr.Accordion("img2img / low-res input", open=False) as init_acc:
                            init_image = SafeImage(label="Init image (optional, img2img)", type="filepath",
                                                   image_mode=None, sources=["upload", "clipboard"], height=200)
                            strength = Slider(0.05, 1.0, value=0.6, step=0.05, label="Strength",
                                                 info="how much noise is added to the init image (1 = all)")
                        with gr.Row():
                            make_gif = gr.Checkbox(False, label="Make GIF of the reverse process")
                            gif_frames = Radio(["x0_hat", "x_t"], value="x0_hat", label="GIF frames",
                                                  show_label=False)
                        # last in the column and sticky at the viewport's bottom (CSS): in view however long the
                        # column (emoji's 52 attributes), and on a phone right above the preview that follows
                        with gr.Row(elem_id="run-row"):
                            run_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
                            stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")
                    with gr.Column(scale=3, min_width=360):
                        preview = gr.Image(label="x_t | x0_hat", show_label=False, type="pil", format="png",
                                           height=300, interactive=False, elem_id="preview",
                                           elem_classes="dc-pixel")
                        status = gr.HTML(html_status("Pick a model and press Generate."), elem_id="status")
                        gallery = gr.Gallery(label="Result (PNG with settings in its 'parameters' text chunk)",
                                             show_label=False,
                                             columns=4, height="auto", format="png", object_fit="contain",
                                             interactive=False, elem_id="gallery", elem_classes="dc-pixel")
                        gif = gr.Image(label="Reverse process (GIF)", type="filepath", height=220,
                                       interactive=False, visible=False, elem_id="gif")
                        with gr.Accordion("Upscale (super-resolution)", open=False, visible=False) as up_acc:
                            with gr.Row():
                                up_input = SafeImage(label="Image to upscale (click a gallery image)",
                                                     type="filepath", image_mode=None, height=160,
                                                     sources=["upload", "clipboard"])
                                with gr.Column():
                                    up_steps = Slider(1, 200, value=20, step=1, label="SR steps")
                                    up_btn = gr.Button("Upscale", elem_id="upscale-btn")
                            up_note = gr.Markdown()
                            up_slider = gr.ImageSlider(label="before (nearest) / after", type="pil", height=300)
                            up_file = gr.File(label="Upscaled PNG (full resolution)")
                        with gr.Accordion("Model card", open=True):
                            card = gr.Markdown(elem_id="model-card")
                            card_img = gr.Image(label="samples.png", type="filepath", height=280, interactive=False,
                                                elem_classes="dc-pixel", elem_id="card-img")
                last_seed = gr.State(None)
                partial = gr.State(None, time_to_live=STATE_TTL_S)
                # the key of the session's last run in app.runs (the steps themselves stay there, under a budget)
                learn_run = gr.State(None, time_to_live=STATE_TTL_S, delete_callback=app.runs.drop)

            # ---------------------------------------------------------------- forward process
            with gr.Tab("Forward process", id="forward"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1, min_width=300):
                        fwd_image = SafeImage(label="x_0 (upload, or use a dataset example)", type="filepath",
                                              image_mode=None, sources=["upload", "clipboard"], height=220,
                                              elem_classes="dc-pixel", elem_id="fwd-image")
                        example_btn = gr.Button("Dataset example")
                        example_note = gr.Markdown()
                        fwd_schedule = Radio(["linear", "cosine"], value="cosine", label="Noise schedule")
                        fwd_deg = Radio(DEGRADATIONS, value="noise", label="Degradation",
                                           info="noise = Gaussian diffusion; the rest are cold-diffusion operators")
                        fwd_t = Slider(0, 999, value=250, step=1, label="t")
                    with gr.Column(scale=2):
                        fwd_out = gr.Image(label="x_t ~ q(x_t | x_0)", type="pil", format="png", height=280,
                                           interactive=False, elem_id="fwd-out")
                        fwd_info = gr.Markdown()
                        fwd_strip = gr.Image(label="x_t at 8 values of t", show_label=False, type="pil",
                                             format="png", height=150, interactive=False, elem_id="fwd-strip")
                gr.Markdown("**Linear vs cosine schedule** (Nichol & Dhariwal 2021, Fig. 5): the cosine schedule "
                            "destroys information more slowly; the dashed line marks t.")
                sched_plot = gr.Plot(show_label=False, format="png", elem_id="schedule-plot")

            # ---------------------------------------------------------------- learn
            with gr.Tab("Learn", id="learn"):
                gr.Markdown(LEARN_INTRO)
                with gr.Tabs():
                    with gr.Tab("Explain", id="learn-explain"):
                        explain_note = gr.Markdown("No run kept yet: press **Generate** on the Generate tab.",
                                                   elem_id="explain-note")
                        with gr.Row(equal_height=True):
                            explain_idx = Slider(1, MAX_STEPS, value=1, step=1, label="Step (1 = the first, noisiest)",
                                                 elem_id="explain-step", scale=4)
                            explain_btn = gr.Button("Explain this step", variant="primary", elem_id="explain-btn",
                                                    scale=1)
                        with gr.Row(equal_height=False):
                            with gr.Column(scale=3):
                                explain_md = gr.Markdown(latex_delimiters=LATEX, elem_id="explain-md")
                            with gr.Column(scale=2):
                                explain_plot = gr.Plot(show_label=False, format="png", elem_id="explain-plot")
                        explain_img = gr.Image(label="What this step combines (first image of the run)", type="pil",
                                               format="png", interactive=False, elem_id="explain-img",
                                               elem_classes="dc-pixel")
                        with gr.Accordion("All numbers of this step (JSON)", open=False):
                            explain_json = gr.JSON(elem_id="explain-json")
                    with gr.Tab("Compare", id="learn-compare"):
                        gr.Markdown(f"One seed, one image per cell; the model, class and guidance are the Generate "
                                    f"tab's. At most {COMPARE_MAX_CELLS} cells and {COMPARE_MAX_STEPS} sampling "
                                    "steps per grid.")
                        with gr.Row(equal_height=False):
                            cmp_seed = Number(0, label="Seed (-1 = random)", precision=0, minimum=-1, maximum=MAX_SEED,
                                              elem_id="compare-seed")
                            cmp_schedules = gr.Checkbox(False, label="schedules",
                                                        info="add the rows of models that differ only in their "
                                                             "noise schedule (e.g. fashion / fashion-linear)")
                        cmp_samplers = Choices(COMPARE_SAMPLERS, value=COMPARE_DEFAULT_SAMPLERS,
                                                        label="Samplers (rows)", elem_id="compare-samplers")
                        with gr.Row(equal_height=True):
                            cmp_steps = NumberChecks(COMPARE_STEPS, value=COMPARE_DEFAULT_STEPS, label="Step counts (columns)",
                                                         elem_id="compare-steps", scale=3)
                            cmp_btn = gr.Button("Compare samplers × steps", variant="primary", elem_id="compare-btn",
                                                scale=1)
                        with gr.Row(equal_height=True):
                            cmp_guid = NumberChecks(COMPARE_GUIDANCE, value=COMPARE_GUIDANCE,
                                                        label="Guidance scales (columns)", scale=2)
                            cmp_gsteps = Slider(1, 200, value=COMPARE_DEFAULT_GUIDANCE_STEPS, step=1, label="Steps (guidance grid)", scale=1)
                            cmp_gbtn = gr.Button("Compare guidance scales", elem_id="compare-guidance-btn", scale=1)
                        cmp_note = gr.Markdown(elem_id="compare-note")
                        cmp_img = gr.Image(label="Comparison grid", type="pil", format="png", interactive=False,
                                           elem_id="compare-img", elem_classes="dc-pixel")
                    with gr.Tab("Interpolate", id="learn-interpolate"):
                        gr.Markdown("Spherical interpolation (slerp) between the starting noise x_T of two seeds, "
                                    "each point sampled with a deterministic sampler, so the row changes smoothly; "
                                    "its ends are exactly the images Generate makes for seed a and seed b (model, "
                                    "class and guidance from the Generate tab).")
                        with gr.Row():
                            int_a = Number(0, label="Seed a", precision=0, minimum=0, maximum=MAX_SEED)
                            int_b = Number(1, label="Seed b", precision=0, minimum=0, maximum=MAX_SEED)
                            int_frames = Slider(2, INTERP_MAX_FRAMES, value=8, step=1, label="Frames")
                        with gr.Row(equal_height=True):
                            int_sampler = Radio([("DDIM (eta 0)", "ddim"), ("DPM-Solver++ (2M)", "dpm++"),
                                                 ("DPM-Solver++ (3M)", "dpm++3m"), ("UniPC", "unipc")],
                                                value="dpm++", label="Sampler (deterministic)")
                            int_steps = Slider(1, 200, value=20, step=1, label="Steps")
                            int_btn = gr.Button("Interpolate", variant="primary", elem_id="interpolate-btn")
                        int_note = gr.Markdown()
                        int_row = gr.Image(label="seed a → seed b", type="pil", format="png", interactive=False,
                                           elem_id="interpolate-row", elem_classes="dc-pixel")
                        int_gallery = gr.Gallery(label="Frames (PNG, full resolution)", columns=8, height="auto",
                                                 format="png", object_fit="contain", interactive=False,
                                                 elem_classes="dc-pixel")
                    with gr.Tab("Trajectory", id="learn-trajectory"):
                        traj_note = gr.Markdown("No run kept yet: press **Generate** on the Generate tab.")
                        with gr.Row(equal_height=True):
                            traj_what = Radio(["x0_hat", "x_t"], value="x0_hat", label="Show")
                            traj_frames = Slider(2, 20, value=10, step=1, label="Strip frames")
                            traj_btn = gr.Button("Trajectory of the last run", variant="primary",
                                                 elem_id="trajectory-btn")
                        traj_strip = gr.Image(label="Evenly spaced steps", type="pil", format="png",
                                              interactive=False, elem_id="trajectory-strip", elem_classes="dc-pixel")
                        traj_gif = gr.Image(label="Every step (GIF)", type="filepath", height=260, interactive=False,
                                            elem_id="trajectory-gif", elem_classes="dc-pixel")

            # ---------------------------------------------------------------- about
            with gr.Tab("About", id="about"):
                gr.Markdown(ABOUT)

        # ---------------------------------------------------------------- events
        model_outputs = [sampler, eta, guidance, class_label, attributes, pose_group, init_image, init_acc, up_acc,
                         steps, spacing]
        light = dict(concurrency_limit=4, concurrency_id="light")
        # the card follows the controls (.then): once a model's card shows, its default settings are in place,
        # so a value typed after that is not reset by a late controls update
        # no progress overlay on the controls these fill in: after the page loaded they spun for 2-3 s (issue 18)
        model.change(app.on_model_change, [model, sampler, class_label, attributes], model_outputs, api_visibility="private",
                     show_progress="hidden", **light).then(app.card_update, [model], [card, card_img],
                                                           api_visibility="private", show_progress="hidden", **light)
        demo.load(app.on_model_change, [model, sampler, class_label, attributes], model_outputs, api_visibility="private",
                  show_progress="hidden", **light).then(app.card_update, [model], [card, card_img],
                                                        api_visibility="private", show_progress="hidden", **light)
        # API endpoint (markdown, samples.png): on a never-shown button, so the UI does not run it twice
        card_api = gr.Button(visible=False)
        card_api.click(app.model_card, [model], [card, card_img], api_name="model_card", **light)
        refresh.click(app.refresh_models, [model], [model], api_visibility="private", **light)
        sampler.change(lambda s: gr.update(visible=(s == "ddim")), [sampler], [eta], api_visibility="private",
                       queue=False)
        stick_source.change(lambda s: (gr.update(visible=s == "sketch"), gr.update(visible=s == "upload"),
                                       gr.update(visible=s == "upload")),
                            [stick_source], [stick_sketch, stick_upload, stick_examples], api_visibility="private",
                            queue=False)
        make_gif.change(lambda v: gr.update(visible=bool(v)), [make_gif], [gif], api_visibility="private",
                        queue=False)
        rand_btn.click(lambda: -1, None, [seed], api_visibility="private", queue=False)
        reuse_btn.click(lambda s: s if s is not None else gr.skip(), [last_seed], [seed], api_visibility="private",
                        queue=False)

        gen_inputs = [model, sampler, steps, spacing, eta, guidance, seed, batch_size, preview_every, class_label,
                      attributes, stick_source, stick_sketch, stick_upload, init_image, strength, make_gif, gif_frames,
                      backend]
        # the live preview and its status line into view when a run starts (on a phone: below every control)
        run_btn.click(None, None, None, js="() => document.querySelector('#preview')?.scrollIntoView("
                                           "{block: 'center', behavior: 'instant'})")
        gen = run_btn.click(gpu_task(app.generate), gen_inputs, [preview, status, gallery, gif, last_seed, partial, learn_run],
                            api_name="generate", concurrency_id="sampling", show_progress="minimal")
        gen.then(app.after_run, [learn_run, explain_idx], [explain_idx, explain_note, traj_note],
                 api_visibility="private", queue=False)
        stop_btn.click(app.stop, [partial], [gallery, status], cancels=[gen], api_visibility="private",
                       queue=False)

        def pick(gal, evt: gr.SelectData):
            if not gal or evt.index is None or evt.index >= len(gal):
                return gr.skip()
            item = gal[evt.index]
            return item[0] if isinstance(item, (list, tuple)) else item
        gallery.select(pick, [gallery], [up_input], api_visibility="private", queue=False)
        up_btn.click(gpu_task(app.upscale), [model, up_input, up_steps], [up_slider, up_file, up_note], api_name="upscale",
                     concurrency_id="sampling")

        fwd_inputs = [fwd_image, fwd_schedule, fwd_deg, fwd_t]
        fwd_outputs = [fwd_out, fwd_strip, fwd_info]
        gr.on([fwd_schedule.change, fwd_deg.change, fwd_t.change, fwd_image.change], app.forward, fwd_inputs,
              fwd_outputs, api_name="forward", show_progress="hidden", trigger_mode="always_last", **light)
        gr.on([fwd_t.change, fwd_schedule.change], app.schedule_plot, [fwd_t, fwd_schedule], [sched_plot],
              api_name="schedule_plot", show_progress="hidden", trigger_mode="always_last", **light)
        explain_in, explain_out = [explain_idx, learn_run], [explain_md, explain_img, explain_plot, explain_json]
        explain_btn.click(app.explain_step, explain_in, explain_out, api_name="explain_step", **light)
        explain_idx.release(app.explain_step, explain_in, explain_out, api_visibility="private",
                            trigger_mode="always_last", show_progress="hidden", **light)
        cmp_btn.click(gpu_task(app.compare), [model, class_label, attributes, cmp_seed, cmp_samplers, cmp_steps, guidance,
                                    cmp_schedules], [cmp_img, cmp_note], api_name="compare", concurrency_id="sampling")
        cmp_gbtn.click(gpu_task(app.compare_guidance), [model, class_label, attributes, cmp_seed, cmp_samplers, cmp_guid,
                                              cmp_gsteps, cmp_schedules], [cmp_img, cmp_note],
                       api_name="compare_guidance", concurrency_id="sampling")
        int_btn.click(gpu_task(app.interpolate), [model, class_label, attributes, int_a, int_b, int_frames, int_sampler,
                                        int_steps, guidance], [int_gallery, int_row, int_note],
                      api_name="interpolate", concurrency_id="sampling")
        traj_btn.click(app.trajectory, [traj_frames, traj_what, learn_run], [traj_gif, traj_strip],
                       api_name="trajectory", **light)
        example_btn.click(app.fashion_example, None, [fwd_image, example_note], api_visibility="private", **light)
        fwd_image.upload(app.upload_note, [fwd_image], [example_note], api_visibility="private", **light)
        fwd_image.clear(lambda: "", None, [example_note], api_visibility="private", queue=False)
        demo.load(app.forward, fwd_inputs, fwd_outputs, api_visibility="private", show_progress="hidden", **light)
        demo.load(app.schedule_plot, [fwd_t, fwd_schedule], [sched_plot], api_visibility="private",
                  show_progress="hidden", **light)

    demo.queue(default_concurrency_limit=int(os.environ.get("DIFFUSION_CONCURRENCY", "1")),
               max_size=int(os.environ.get("DIFFUSION_QUEUE", "16")))
    return demo


# sessions whose state Gradio keeps, least recently used dropped first (Gradio's default, 10,000, lets them take
# ~7 GB: each holds ~0.7 MB, measured, mostly its own copy of the page's config with the last outputs)
# Gradio's sketch pad starts with no tool: the first stroke only selected the hint "select the draw tool to start"
# (issue 18). Whenever the stickman pad is shown without a tool, pick its brush (checked once per animation frame).
ARM_SKETCH_JS = """
() => {
  let queued = false;
  const arm = () => {
    queued = false;
    const pad = document.querySelector('#stick-sketch');
    if (!pad || pad.offsetParent === null) return;
    const hint = [...pad.querySelectorAll('*')].some(
      (e) => e.childElementCount === 0 && /select the draw tool/i.test(e.textContent || ''));
    const brush = pad.querySelector('button[aria-label="Brush"]');
    if (hint && brush) brush.click();
  };
  new MutationObserver(() => { if (!queued) { queued = true; requestAnimationFrame(arm); } })
    .observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['style', 'class']});
}
"""

LAUNCH_KW = dict(theme=gr.themes.Soft(), css=CSS, js=ARM_SKETCH_JS, max_file_size="32mb",
                 state_session_capacity=int(os.environ.get("DIFFUSION_SESSIONS", "200")))


def freeze_startup_objects() -> None:
    """Move the objects that live as long as the server (torch, Gradio, the page, matplotlib: ~500k) out of the
    cyclic garbage collector's reach. Left in, they made its full collections so rare that each request's cyclic
    garbage (a matplotlib figure holds ~0.6 MB of drawing buffers) piled up: +85 MB over 200 /explain_step calls of
    one session. Frozen, that memory is freed as it goes and a full collection takes ~60 ms instead of ~250 ms."""
    from matplotlib.figure import Figure  # noqa: F401  (imported by the first plot otherwise: freeze it too)
    gc.collect()
    gc.freeze()


def exit_on_sigterm(signum, frame):
    """SIGTERM (a Space or a service manager stopping the app) exits like Ctrl-C, so the atexit cleanup runs and
    the app's temp folder of generated files goes with it (the default action kills the process at once)."""
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    demo = build_demo()
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), prevent_thread_lock=True, **LAUNCH_KW)
    freeze_startup_objects()
    demo.block_thread()

"""Checked inputs: components that validate what a browser or an API client sends, and the error wrapper."""
from __future__ import annotations

import base64
import functools
import html
import re
from types import SimpleNamespace

import gradio as gr
import numpy as np
from PIL import Image
from pydantic import ConfigDict, ValidationError
import torch

from diffusion_core import ImageError, load_whole, number, open_image, to_mode

from .render import html_status
from .settings import USER_ERRORS, log


def stickman_input(source, sketch, upload):
    """The pose model's drawing: the uploaded file, or the sketch pad's picture (refused when empty)."""
    if source == "upload":
        if upload is None:
            raise ValueError("this is a pose model: upload a stickman drawing (or pick an example)")
        return upload
    comp = sketch.get("composite") if isinstance(sketch, dict) else sketch
    if comp is None:
        raise ValueError("this is a pose model: draw a stickman in the sketch pad (black strokes on white)")
    img = to_mode(open_image(comp), 1)
    if np.asarray(img).min() > 200:
        raise ValueError("the sketch pad is empty: draw a stickman first (black strokes on white)")
    return img


def read_image(src, label: str) -> Image.Image:
    """The app's one guarded image decoder: every image input (uploads, the sketch pad's background, layers and
    composite, the upscale input, the forward tab) is decoded here, under the package's pixel limit (open_image:
    the size is checked from the header, before decoding). A bad file is a one-line gr.Error naming the input."""
    try:
        return open_image(src)
    except ImageError as e:
        raise gr.Error(f"{label}: {e}", print_exception=False) from None


def fit_note(src, size: int) -> str:
    """What fitting an input image to a model's ``size`` x ``size`` input does to it (``load_image``: centre-crop
    to a square, then resize), in words for the status line; "" when it already fits (issue 35: a 20x14 input
    came out as a 28 px square without a word); "" for no image."""
    if src is None:
        return ""
    w, h = open_image(src).size
    m = min(w, h)
    done = ([f"centre-cropped to {m}×{m}"] if w != h else []) + ([f"resized to {size} px"] if m != size else [])
    return f"the {w}×{h} px input was {' and '.join(done)}" if done else ""


def refuse_bad_upload(label: str, max_side: int | None = None):
    """An upload event's handler (wired with ``preprocess=False``: it gets the uploaded file's payload, not the
    image): the file is decoded under ``read_image``'s limits and, with ``max_side``, held to Upscale's shape rule
    (``load_whole``: too thin once its longer side is at most ``max_side``). A file that cannot be used is taken
    out of its component at once and the status line says why: (image update, status). Issue 35: a text file
    named .png showed a broken frame, and was refused only at Generate."""
    def check(payload):
        try:
            src = _file_source(SimpleNamespace(path=(payload or {}).get("path"), url=(payload or {}).get("url")))
            if src is not None:
                img = open_image(src)
                if max_side:
                    load_whole(img, max_side, 1)
        except ImageError as e:
            return None, html_status(f"<b>Refused</b> · {html.escape(label)}: {html.escape(str(e))}")
        return gr.skip(), gr.skip()
    return check


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

    checked_by_handler = False      # True: its handler checks the value (RunSlider, RunNumber)

    def preprocess(self, payload):
        if self.checked_by_handler:
            return payload
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


class RunSlider(Slider):
    """A number of Generate's run, passed on as sent: the run's Request checks it (and the handler the app's own
    limits), and a refusal is said in the page's status line. Checked here, a bad value (seed 12.5) was only a
    toast, and the status kept "Pick a model and press Generate" or an older error (issue 35 item 7). Every other
    handler these boxes feed (Live, Compare, Interpolate) checks its numbers itself. A class attribute, not one
    set on the box: Gradio rebuilds a session's component from its config after an update."""
    is_template = True
    checked_by_handler = True


class RunNumber(Number):
    __doc__ = RunSlider.__doc__
    is_template = True
    checked_by_handler = True


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


def _number(v, default=None):
    """``v`` when it is a real number (not a bool), else ``default``."""
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else default


def user_error(e: Exception) -> gr.Error:
    msg = str(e).strip() or type(e).__name__
    return gr.Error(msg, print_exception=False)      # a user mistake: a message, not a server traceback


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


def page_parts(scope: dict) -> SimpleNamespace:
    """The components a page builder made (its local variables), by name: what its events are wired to."""
    return SimpleNamespace(**{k: v for k, v in scope.items() if isinstance(v, gr.blocks.Block)})


def check_input_count(block_fn, inputs: list) -> None:
    """Gradio's check that an API call sent a value for every input of its event, as one line (Gradio's own
    ValueError was hidden from the client as ``{"error": null}`` and logged as a traceback). Install it with
    ``demo.validate_inputs = check_input_count`` (Blocks calls ``self.validate_inputs(block_fn, inputs)``)."""
    wanted = list(getattr(block_fn, "inputs", None) or [])
    if len(inputs) < len(wanted):
        names = [getattr(c, "label", None) or type(c).__name__ for c in wanted]
        raise gr.Error(f"/{getattr(block_fn, 'api_name', None) or getattr(block_fn, 'name', 'this endpoint')} takes "
                       f"{len(wanted)} inputs, got {len(inputs)}: send every input, in order ({', '.join(names)}); "
                       "gradio_client fills in the ones left out", print_exception=False)

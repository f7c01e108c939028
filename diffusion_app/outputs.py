"""The long outputs of the page's events, by name. A handler returns one of these typed tuples; the page wires the
components of the same names in the same order (``components``), so a value cannot land in another component."""
from __future__ import annotations

from typing import Any, NamedTuple

import gradio as gr


class Shown(NamedTuple):
    """What a Generate run shows as it goes (``GenerateTab.generate``'s outputs)."""

    preview: Any        # x_t | x0_hat of the step
    status: Any         # the status line (HTML)
    gallery: Any        # the PNGs, at the end
    gif: Any            # the reverse process, if asked
    last_seed: Any      # for "reuse last"
    partial: Any        # the latest x0_hat, which Stop turns into the gallery
    learn_run: Any      # the key of the run the Learn tab explains


class Controls(NamedTuple):
    """A model's Generate controls (``Cards.controls_for``): its choices and defaults, or a link's settings."""

    sampler: Any
    eta: Any
    guidance: Any
    class_label: Any
    attributes: Any
    pose_group: Any
    init_image: Any
    init_acc: Any
    up_acc: Any
    steps: Any
    spacing: Any
    seed: Any
    batch_size: Any
    stick_source: Any
    stick_upload: Any
    backend: Any
    example_0: Any
    example_1: Any
    example_2: Any


def filled(kind: type[NamedTuple], **values):
    """A ``kind`` with ``values``; every output not named is left as the page shows it (``gr.skip()``)."""
    return kind(**{name: values[name] if name in values else gr.skip() for name in kind._fields})


def components(page, kind: type[NamedTuple]) -> list:
    """The page's components that show a ``kind``, in its order (``page``: a tab's components by name)."""
    return [getattr(page, name) for name in kind._fields]

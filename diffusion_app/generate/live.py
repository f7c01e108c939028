"""Live mode (issue 38): with a few-step distilled student, the images follow the class, guidance, seed and a
blend between two seeds while a slider is dragged; and Learn's lesson, teacher and students on the same noise."""
from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path

import gradio as gr
import torch
from PIL import Image, ImageDraw

from diffusion_core import BOUNDS, MAX_STEPS, grid, output_problem, slerp

from ..base import AppBase
from ..inputs import handles_errors, number
from ..render import caption_font, upscale_nearest
from ..settings import ANY, LIVE_MAX_IMAGES, MAX_SEED, sampler_label

LIVE_OFF = ("Live is off: tick it, then drag guidance or the blend, or change the class or a seed. "
            "Generate works as always.")
LESSON_TEACHER_STEPS = 10
LESSON_STRIP_PX = 448       # each row's width, about: its caption fits above it


def png_data_uri(img) -> str:
    """A PIL image as a data: URI (one response carries the picture: no second request for a file, as a
    gr.Image output needs, which matters when it changes at every slider event)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def row_image(x: torch.Tensor) -> Image.Image:
    """(n, C, H, W) in [-1, 1] -> the n images side by side, 1 px apart, at their own size (RGB)."""
    return grid(x.detach().float().cpu().clamp(-1, 1), nrow=x.shape[0], padding=1).convert("RGB")


def fixed_seed(seed, name: str = "seed") -> int:
    """A whole seed in [0, MAX_SEED]; -1 (or nothing: Generate's "random") is 0 here, so that the images stay put
    while a slider moves and a lesson shows the same noise each time."""
    return max(0, int(number(-1 if seed is None else seed, name, -1, MAX_SEED, whole=True)))


def live_html(x: torch.Tensor, caption: str) -> str:
    """The Live view: the images in one row (native pixels, scaled up by CSS without smoothing), and a caption."""
    g = row_image(x)
    return (f'<div class="dc-live"><img src="{png_data_uri(g)}" alt="{html.escape(caption)}" '
            f'style="width:100%;image-rendering:pixelated"><p>{html.escape(caption)}</p></div>')


def blended_noise(pipe, n: int, seed_a: int, seed_b: int, blend: float) -> torch.Tensor:
    """x_T of image i: slerp from the noise of seed_a + i (blend 0, exactly Generate's image i of seed_a) to that
    of seed_b + i (blend 1)."""
    za, zb = pipe.start_noise(n, seed_a), pipe.start_noise(n, seed_b)
    return torch.stack([slerp(za[i], zb[i], blend) for i in range(n)])


class LiveTab(AppBase):
    def is_student(self, model) -> bool:
        """Whether ``model`` is a distilled student (its config.json names a teacher; no network is loaded)."""
        c = self.models.config(model) if model else None     # None: a broken or missing folder (Generate says why)
        return getattr(c, "kind", None) == "model" and bool(c.distilled.teacher)

    def live_available(self, model):
        """The Live group shows for a student model only; picking another model switches Live off."""
        student = self.is_student(model)
        return (gr.update(visible=student), gr.update(value=False) if not student else gr.skip(),
                gr.update(visible=student, value=LIVE_OFF))

    @handles_errors("Live")
    def live(self, on, model, class_label=ANY, attributes=None, guidance=2.0, steps=4, seed=0, seed_b=1,
             blend=0.0, batch_size=4, backend=None):
        """One Live update (``live_images``) as the Live view's HTML; skipped while Live is off."""
        if not on:
            return gr.skip()
        t0 = time.perf_counter()
        x, caption = self.live_images(model, class_label, attributes, guidance, steps, seed, seed_b, blend, batch_size,
                                      backend)
        return live_html(x, f"{caption} · {(time.perf_counter() - t0) * 1000:.0f} ms")

    def live_images(self, model, class_label=ANY, attributes=None, guidance=2.0, steps=4, seed=0, seed_b=1,
                    blend=0.0, batch_size=4, backend=None) -> tuple[torch.Tensor, str]:
        """``batch_size`` (at most LIVE_MAX_IMAGES) images of the student ``model`` with its own rule, image i from
        x_T blended from the noise of seed + i to that of seed B + i (``blended_noise``); seed -1 (Generate's
        "random") is seed 0 here, so that a drag does not jump between random seeds; ``backend``: Generate's
        (None: the app's default). Returns (images, caption)."""
        pipe = self.models.get(model, backend)
        d = pipe.base.config.distilled
        if not d.teacher:
            raise ValueError(f"Live needs a distilled student (a few steps per image); {model!r} is not one")
        n = int(number(batch_size, "batch size", 1, LIVE_MAX_IMAGES, whole=True))
        asked = int(number(steps, "steps", 1, MAX_STEPS, whole=True))
        steps = min(asked, 2 * d.steps)     # a student's rule beyond twice its steps is only slower, not better
        g = number(guidance, "guidance scale", *BOUNDS["guidance"])
        blend = number(blend, "blend", 0.0, 1.0)
        sa = fixed_seed(seed)
        sb = int(number(seed_b, "seed B", 0, MAX_SEED, whole=True))
        labels = self._labels(pipe, model, class_label, attributes)
        x = pipe.sample(n, sampler=d.sampler, steps=steps, spacing="trailing", guidance=g, labels=labels, seed=sa,
                        x_start=blended_noise(pipe, n, sa, sb, blend), device=self.models.device)
        if problem := output_problem(x):     # clamped NaN or overflow: flat squares that looked like a result
            raise ValueError(f"{model}: {problem}: the network's output is broken")
        what = ", ".join(labels) if labels else "any class"
        seeds = f"seed {sa}" if blend == 0 else f"seed {sa} → {sb} at {blend:.2f}"
        capped = f" (asked {asked}; Live runs at most {steps})" if steps != asked else ""
        return x, f"{what} · {seeds} · guidance {g:g} · {steps} step{'s' * (steps != 1)}{capped} · {pipe.backend}"

    @handles_errors("the distillation lesson")
    def lesson(self, model, class_label=ANY, seed=0, n=4):
        """Teacher and students on the same noise: the teacher of ``model`` (a student, or a teacher with
        students in this app) with its own default sampler at 10 steps, then every student of that teacher with its own rule,
        the 4-step one also at 2 steps; every row starts from the same x_T. Returns (image, note)."""
        teacher, students = self.students_of(model)
        tpipe = self.models.get(teacher)
        labels = self._labels(tpipe, teacher, class_label, None)
        s = fixed_seed(seed)
        n = int(number(n, "images", 1, LIVE_MAX_IMAGES, whole=True))
        dev = self.models.device
        rows, captions = [], []
        t0 = time.perf_counter()
        own = tpipe.base.config.sampling.sampler        # the teacher's own default sampler, at 10 steps
        rows.append(tpipe.sample(n, sampler=own, steps=LESSON_TEACHER_STEPS, guidance=2.0, labels=labels, seed=s,
                                 device=dev))
        captions.append(f"teacher {teacher} · {sampler_label(own)} · {LESSON_TEACHER_STEPS} steps "
                        f"({2 * LESSON_TEACHER_STEPS} passes: guided)")
        for name in students:
            pipe = self.models.get(name)
            d = pipe.base.config.distilled
            for k in sorted({d.steps, d.steps // 2} - {0}, reverse=True):
                rows.append(pipe.sample(n, sampler=d.sampler, steps=k, guidance=2.0, labels=labels, seed=s,
                                        device=dev))
                captions.append(f"student {name} · {k} step{'s' * (k != 1)} ({k} pass{'es' * (k != 1)})"
                                + ("" if k == d.steps else f" · half the {d.steps} it learnt"))
        strips = [upscale_nearest(row_image(r), LESSON_STRIP_PX) for r in rows]
        image = _stack(strips, captions)
        note = (f"{class_label if labels else 'any class'} · seed {s} · guidance 2 · "
                f"{(time.perf_counter() - t0):.1f} s. Every row starts from the same noise x_T.")
        return image, note

    def students_of(self, model) -> tuple[str, list[str]]:
        """(teacher, its students in this app, most steps first) for a student or a teacher ``model``: read from
        the model folders' config.json (``distilled.teacher``), without loading any network."""
        if not model:
            raise ValueError("pick a model on the Generate tab first")
        teacher_of = {}
        for name in self.models.names():
            if self.is_student(name):
                d = self.models.config(name).distilled
                teacher_of[name] = (Path(d.teacher).name, d.steps)
        def root(name):         # a student of a student (fashion-1step of fashion-4step): the first teacher
            seen = set()
            while name in teacher_of and name not in seen:
                seen.add(name)
                name = teacher_of[name][0]
            return name
        teacher = root(model)
        if teacher not in self.models.names():
            raise ValueError(f"{model}'s teacher {teacher} is not in this app")
        students = sorted((nm for nm in teacher_of if root(nm) == teacher), key=lambda nm: -teacher_of[nm][1])
        if not students:
            raise ValueError(f"{model} has no distilled student in this app (the lesson needs one, e.g. fashion-4step)")
        return teacher, students


def _stack(strips, captions):
    """Strips one above another, each with its caption above it (white background)."""
    font, line = caption_font(13), 20
    w = max(max(s.width for s in strips), *(int(font.getlength(c)) + 4 for c in captions))
    out = Image.new("RGB", (w, sum(s.height + line for s in strips)), (255, 255, 255))
    draw, y = ImageDraw.Draw(out), 0
    for s, cap in zip(strips, captions):
        draw.text((2, y + 3), cap, fill=(40, 40, 40), font=font)
        out.paste(s, (0, y + line))
        y += s.height + line
    return out

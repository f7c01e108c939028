"""The Learn tab's page: explain a step of the last run, compare samplers and guidance, interpolate, trajectory."""
from __future__ import annotations

import functools
from types import SimpleNamespace

import gradio as gr

from diffusion_core import MAX_GUIDANCE, MAX_STEPS

from ..assets import DISTILL_LESSON, LEARN_INTRO
from ..inputs import Choices, Dropdown, Number, NumberChecks, Radio, Slider, page_parts
from ..settings import (COMPARE_DEFAULT_GUIDANCE_STEPS, COMPARE_DEFAULT_STEPS, COMPARE_GUIDANCE, COMPARE_MAX_CELLS,
                       COMPARE_MAX_STEPS, COMPARE_STEPS, DEFAULT_SAMPLER, INTERP_MAX_FRAMES, LATEX, LIGHT, MAX_SEED,
                       STATE_TTL_S, branch_choices, compare_choices, compare_default_samplers, deterministic_choices)
from ..zerogpu import gpu_task


# a result image: pixels kept sharp, drawn below its label and toolbar (assets.CSS)
RESULT_IMAGE = ["dc-pixel", "dc-result"]

def learn_page() -> SimpleNamespace:
    """Build the tab's components (inside its ``gr.Tab``); returns them by name."""
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
            gr.Markdown("**What this step combines** (first image of the run)")
            explain_img = gr.Image(label="What this step combines", show_label=False, type="pil",
                                   format="png", interactive=False, elem_id="explain-img",
                                   elem_classes=RESULT_IMAGE)
            with gr.Accordion("All numbers of this step (JSON)", open=False):
                explain_json = gr.JSON(elem_id="explain-json")
            with gr.Accordion("Branch from this step: what if the guidance (sampler, steps, labels) changed here?",
                              open=True):
                gr.Markdown("Continue the run from x_t at the step above with other settings; each branch lines up "
                            "beside the original (same seed, so only the changed setting differs).")
                with gr.Row(equal_height=True):
                    branch_sampler = Dropdown(branch_choices(), value=DEFAULT_SAMPLER,
                                              label="Sampler", elem_id="branch-sampler")
                    branch_steps = Slider(1, MAX_STEPS, value=10, step=1, label="Steps from there",
                                          elem_id="branch-steps")
                    branch_guidance = Slider(0, MAX_GUIDANCE, value=4.0, step=0.25, label="Guidance scale",
                                             elem_id="branch-guidance")
                with gr.Row(equal_height=True):
                    branch_relabel = gr.Checkbox(False, label="use the Generate tab's class / attributes")
                    branch_btn = gr.Button("Branch", variant="primary", elem_id="branch-btn")
                branch_note = gr.Markdown(elem_id="branch-note")
                branch_row = gr.Image(label="x_t at the step · the original · the branches", show_label=False,
                                      type="pil", format="png", interactive=False, elem_id="branch-row",
                                      elem_classes=RESULT_IMAGE)
                branches = gr.State([], time_to_live=STATE_TTL_S)
        with gr.Tab("Compare", id="learn-compare"):
            gr.Markdown(f"One seed, one image per cell; the model, class and guidance are the Generate "
                        f"tab's. At most {COMPARE_MAX_CELLS} cells and {COMPARE_MAX_STEPS} sampling "
                        "steps per model in a grid.")
            with gr.Row(equal_height=False):
                cmp_seed = Number(0, label="Seed (-1 = random)", precision=0, minimum=-1, maximum=MAX_SEED,
                                  elem_id="compare-seed")
                cmp_schedules = gr.Checkbox(False, label="schedules",
                                            info="add the rows of models that differ only in their "
                                                 "noise schedule (e.g. fashion / fashion-linear)")
            cmp_samplers = Choices(compare_choices(), value=compare_default_samplers(),
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
                               elem_id="compare-img", elem_classes=RESULT_IMAGE)
            # the distillation lesson (issue 38): a comparison too, of a teacher and its few-step students
            with gr.Accordion("Distillation: teacher and students on the same noise", open=False,
                              elem_id="lesson-acc"):
                gr.Markdown(DISTILL_LESSON)
                with gr.Row(equal_height=True):
                    lesson_seed = Number(0, label="Seed", precision=0, minimum=0, maximum=MAX_SEED,
                                         elem_id="lesson-seed")
                    lesson_btn = gr.Button("Teacher and students on the same noise", variant="primary",
                                           elem_id="lesson-btn")
                lesson_note = gr.Markdown(elem_id="lesson-note")
                lesson_img = gr.Image(label="teacher (10 steps) · students (4, 2, 1 steps)", type="pil", format="png",
                                      interactive=False, elem_id="lesson-img", elem_classes=RESULT_IMAGE)
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
                int_sampler = Radio(deterministic_choices(), value=DEFAULT_SAMPLER, label="Sampler (deterministic)")
                int_steps = Slider(1, 200, value=20, step=1, label="Steps")
                int_btn = gr.Button("Interpolate", variant="primary", elem_id="interpolate-btn")
            int_note = gr.Markdown()
            int_row = gr.Image(label="seed a → seed b", type="pil", format="png", interactive=False,
                               elem_id="interpolate-row", elem_classes=RESULT_IMAGE)
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
                                  interactive=False, elem_id="trajectory-strip", elem_classes=RESULT_IMAGE)
            traj_gif = gr.Image(label="Every step (GIF)", type="filepath", height=260, interactive=False,
                                elem_id="trajectory-gif", elem_classes=RESULT_IMAGE)
    return page_parts(locals())


def grid_and_note(fn, what: str):
    """A Compare button's handler for the page (``fn``: the app's, returning (grid, note)): the note says the grid
    is being made, then the grid and its note come; on an error the grid is cleared and the note says what went
    wrong, then the error is raised for API callers (issue 35: the old grid was wiped under Gradio's error
    overlay while its note stayed). Its event shows no progress overlay: the note is the progress."""
    @functools.wraps(fn)          # the API keeps fn's parameter names and defaults
    def run(*args):
        yield gr.skip(), f"*{what}…*"
        try:
            yield fn(*args)
        except gr.Error as e:
            yield None, f"**Error** · {e.message}"
            raise
    return run


def wire_learn(app, g: SimpleNamespace, l: SimpleNamespace) -> None:
    """The tab's events; the model, class, attributes and guidance are the Generate page's (``g``)."""
    explain_in, explain_out = [l.explain_idx, g.learn_run], [l.explain_md, l.explain_img, l.explain_plot, l.explain_json]
    l.explain_btn.click(app.explain_step, explain_in, explain_out, api_name="explain_step", **LIGHT)
    # the step follows the slider as it is dragged (issue 38: with a student's few steps it is Live's step slider);
    # always_last: while one explanation is drawn, only the latest step waits
    l.explain_idx.input(app.explain_step, explain_in, explain_out, api_visibility="private",
                        trigger_mode="always_last", show_progress="hidden", **LIGHT)
    l.cmp_btn.click(grid_and_note(gpu_task(app.compare), "comparing samplers × steps"),
                    [g.model, g.class_label, g.attributes, l.cmp_seed, l.cmp_samplers, l.cmp_steps, g.guidance,
                     l.cmp_schedules], [l.cmp_img, l.cmp_note], api_name="compare", concurrency_id="sampling",
                    show_progress="hidden")
    l.cmp_gbtn.click(grid_and_note(gpu_task(app.compare_guidance), "comparing guidance scales"),
                     [g.model, g.class_label, g.attributes, l.cmp_seed, l.cmp_samplers, l.cmp_guid, l.cmp_gsteps,
                      l.cmp_schedules], [l.cmp_img, l.cmp_note], api_name="compare_guidance",
                     concurrency_id="sampling", show_progress="hidden")
    l.int_btn.click(gpu_task(app.interpolate), [g.model, g.class_label, g.attributes, l.int_a, l.int_b, l.int_frames, l.int_sampler,
                                    l.int_steps, g.guidance], [l.int_gallery, l.int_row, l.int_note],
                  api_name="interpolate", concurrency_id="sampling")
    l.branch_btn.click(gpu_task(app.branch), [l.explain_idx, l.branch_sampler, l.branch_steps, l.branch_guidance,
                                             l.branch_relabel, g.class_label, g.attributes, l.branches, g.learn_run],
                       [l.branch_row, l.branch_note, l.branches], api_name="branch", concurrency_id="sampling")
    l.traj_btn.click(app.trajectory, [l.traj_frames, l.traj_what, g.learn_run], [l.traj_gif, l.traj_strip],
                   api_name="trajectory", **LIGHT)

"""The Generate tab's page: model, conditioning and sampler controls, the live preview, the results, upscaling
and the model card; and the events that join them to the handlers."""
from __future__ import annotations

import functools
import html
import inspect
import typing
from types import SimpleNamespace

import gradio as gr

from diffusion_core import BACKENDS, MAX_GUIDANCE, MAX_STEPS, SPACINGS, SR_SAMPLING

from ..inputs import (Dropdown, LabelChecks, Number, Radio, RunNumber, RunSlider, SafeImage, SafeSketchpad, Slider,
                      page_parts, refuse_bad_upload)
from ..outputs import Controls, Shown, components, filled
from ..render import html_status
from ..settings import (ANY, DEFAULT_SAMPLER, LIGHT, PICKS, MAX_BATCH, MAX_SEED, MAX_UPSCALE_INPUT, STATE_TTL_S,
                       STICKMEN_DIR, sampler_choices, takes_eta)
from ..zerogpu import gpu_task, on_zero_gpu


def generate_page(app) -> SimpleNamespace:
    """Build the tab's components (inside its ``gr.Tab``); returns them by name."""
    names = app.models.choices()        # (label, folder): a broken folder is listed with its reason
    default = app.models.default()
    opening = app.opening(default)      # the page opens set for the default model (its controls, examples, card)

    def at(name: str, **kwargs) -> dict:
        return {**kwargs, **opening.get(name, {})}
    stickmen = sorted(str(p) for p in STICKMEN_DIR.glob("*.png")) if STICKMEN_DIR.is_dir() else []
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=330, elem_id="gen-controls"):
            with gr.Row(equal_height=False, elem_id="model-row"):
                model = gr.Dropdown(names, value=default, label="Model", allow_custom_value=True,
                                    scale=5, elem_id="model",
                                    info=f"model folders on this server ({app.models.root.name}/)")
                refresh = gr.Button("↻ rescan", scale=0, min_width=70, size="sm",
                                    elem_classes="dc-small-btn")
            # one click: the model's example settings (a class, attributes, a stickman, a low-res image), then Generate
            with gr.Row(elem_id="examples-row", elem_classes="dc-examples"):
                # usable once the page's load event has run (a settings link may set another model's)
                example_0 = gr.Button(**at("example_0", visible=False, size="sm", min_width=90, elem_id="example-0",
                                           interactive=False))
                example_1 = gr.Button(**at("example_1", visible=False, size="sm", min_width=90, elem_id="example-1",
                                           interactive=False))
                example_2 = gr.Button(**at("example_2", visible=False, size="sm", min_width=90, elem_id="example-2",
                                           interactive=False))
            class_label = gr.Dropdown(**at("class_label", choices=[ANY], value=ANY, label="Class",
                                           allow_custom_value=True, info="(any) samples unconditionally",
                                           visible=False, elem_id="class-label"))
            attributes = LabelChecks(**at("attributes", choices=[], value=[], label="Attributes", visible=False,
                                          elem_id="attributes"))
            with gr.Group(**at("pose_group", visible=False)) as pose_group:
                stick_source = Radio(**at("stick_source", choices=[("Sketch pad", "sketch"),
                                                                   ("Upload / example", "upload")],
                                          value="sketch", label="Stickman (black strokes on white)",
                                          info="sketch pad: draw with the mouse or a finger; the eraser "
                                               "and undo are on its toolbars"))
                stick_sketch = SafeSketchpad(label="Stickman sketch", type="pil",
                                            image_mode="RGBA",
                                            canvas_size=(256, 256), fixed_canvas=True, height=300,
                                            brush=gr.Brush(default_size=6, colors=["#000000"],
                                                           color_mode="fixed"),
                                            layers=False, elem_id="stick-sketch")
                stick_upload = SafeImage(**at("stick_upload", label="Stickman image", type="filepath",
                                              image_mode=None, sources=["upload", "clipboard"], height=220,
                                              visible=False, elem_id="stick-upload"))
                if stickmen:
                    with gr.Column(visible=False) as stick_examples:
                        gr.Examples([[p] for p in stickmen], inputs=[stick_upload],
                                    label="Example stickmen", examples_per_page=8)
                else:
                    stick_examples = gr.Column(visible=False)
            # every sampler, as the API's list (an API call is checked against it; its model, by the handler); the
            # page's own list is the model's (wire_generate's ``loaded``)
            sampler = Dropdown(**{**at("sampler", value=DEFAULT_SAMPLER, label="Sampler"), "choices": sampler_choices()})
            eta = RunSlider(0, 1, **at("eta", value=0.0, step=0.05, label="DDIM eta", visible=False,
                                       info="0 deterministic, 1 DDPM-like"))
            with gr.Row():
                steps = RunSlider(1, MAX_STEPS, **at("steps", value=25, step=1, label="Steps", elem_id="steps"))
                spacing = Radio(**at("spacing", choices=list(SPACINGS), value="trailing", label="Timestep spacing",
                                     info="logsnr / karras: grids in noise level (Gaussian models)"))
            guidance = RunSlider(0, MAX_GUIDANCE, **at("guidance", value=2.0, step=0.25, label="Guidance scale",
                                                       elem_id="guidance",
                                                       info="classifier-free guidance; 1 = off, 0 = unconditional"))
            # a distilled student's images follow the sliders as they are dragged (ui_live, live.py)
            # a Column holds the id (gr.Group writes its elem_id on two nested elements: the id was in the page twice)
            with gr.Column(visible=False, elem_id="live-group") as live_group:
                with gr.Group():
                    live_on = gr.Checkbox(False, label="Live: the images follow guidance, class, seeds and the blend "
                                          "as you drag", elem_id="live-on",
                                          info="a distilled student makes an image in a few network passes; "
                                               "a 1-step student follows a drag fastest")
                    with gr.Row(equal_height=True):
                        live_blend = Slider(0, 1, value=0.0, step=0.02, label="Blend seed → seed B (slerp of x_T)",
                                            elem_id="live-blend", scale=3)
                        live_seed_b = Number(1, label="Seed B", precision=0, minimum=0, maximum=MAX_SEED, scale=1,
                                             elem_id="live-seed-b")
                    # right under the sliders, so that the images are in view while one is dragged (on a phone too)
                    live_view = gr.HTML(visible=False, elem_id="live-view")
            with gr.Row(equal_height=False):
                seed = RunNumber(**at("seed", value=-1, label="Seed (-1 = random)", precision=0, minimum=-1,
                                      maximum=MAX_SEED, scale=3, elem_id="seed"))
                with gr.Column(scale=1, min_width=90):
                    rand_btn = gr.Button("🎲 random", size="sm", elem_classes="dc-small-btn")
                    reuse_btn = gr.Button("♻ reuse last", size="sm", elem_classes="dc-small-btn")
            with gr.Row():
                batch_size = RunSlider(1, MAX_BATCH, **at("batch_size", value=4, step=1, label="Batch size",
                                                          elem_id="batch-size"))
                preview_every = RunSlider(1, 50, value=1, step=1, label="Preview every", elem_id="preview-every")
            backend = Dropdown(**at("backend", choices=list(BACKENDS), value=app.models.backend, label="Backend",
                                    elem_id="backend",
                                    info="where the network runs: auto measures this CPU and picks the "
                                         "fastest that matches fp32 (bf16, OpenVINO); the status line says which"))
            with gr.Accordion(**at("init_acc", label="img2img / low-res input", open=False)) as init_acc:
                init_image = SafeImage(**at("init_image", label="Init image (optional, img2img)", type="filepath",
                                            image_mode=None, sources=["upload", "clipboard"], height=200,
                                            elem_id="init-image"))
                strength = RunSlider(0.05, 1.0, value=0.6, step=0.05, label="Strength",
                                        info="how much noise is added to the init image (1 = all)")
            with gr.Row():
                make_gif = gr.Checkbox(False, label="Make GIF of the reverse process", elem_id="make-gif")
                gif_frames = Radio(["x0_hat", "x_t"], value="x0_hat", label="GIF frames",
                                      show_label=False)
            # last in the column and sticky at the viewport's bottom (CSS): in view however long the
            # column (emoji's 52 attributes), and on a phone right above the preview that follows
            with gr.Row(elem_id="run-row"):
                # enabled once the page's controls are set for its model (wire_generate: lock / unlock)
                run_btn = gr.Button("Loading the model…", variant="primary", elem_id="generate-btn",
                                    interactive=False, min_width=120)
                stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn", min_width=120)
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
            with gr.Accordion(**at("up_acc", label="Upscale (super-resolution)", open=False, visible=False)) as up_acc:
                with gr.Row():
                    # a label of one line on a phone: of two it covered the box's "Drop Image Here" (issue 35)
                    up_input = SafeImage(label="Image to upscale", placeholder="Upload one, or click a gallery image",
                                         type="filepath", image_mode=None, height=160,
                                         sources=["upload", "clipboard"], elem_id="up-input")
                    with gr.Column():
                        up_steps = Slider(1, 200, value=SR_SAMPLING.steps, step=1, label="SR steps")
                        up_btn = gr.Button("Upscale", elem_id="upscale-btn")
                up_note = gr.Markdown()
                up_slider = gr.ImageSlider(label="before (nearest) / after", type="pil", height=300,
                                           elem_id="up-slider", elem_classes="dc-pixel")
                up_file = gr.File(label="Upscaled PNG (full resolution)")
            with gr.Accordion("Model card", open=True):
                card = gr.Markdown(**at("card", elem_id="model-card"))
                card_img = gr.Image(**at("card_img", label="samples.png", type="filepath", height=280,
                                         interactive=False, elem_classes="dc-pixel", elem_id="card-img"))
    shown = gr.State(default if opening else None)     # the model the controls are set for (wire_generate)
    last_seed = gr.State(None)
    partial = gr.State(None, time_to_live=STATE_TTL_S)
    # the key of the session's last run in app.runs (the steps themselves stay there, under a budget)
    learn_run = gr.State(None, time_to_live=STATE_TTL_S, delete_callback=app.runs.drop)
    return page_parts(locals())


# Generate and the examples while a picked model's controls are fetched, and after (wire_generate)
# While it loads, the old model's controls and card are dimmed and take no input (class dc-loading, assets.CSS):
# they stayed live, and a class picked there belonged to the model being left (issue 35 item 2)
LOCK_JS = """(m) => { const off = {__type__: "update", interactive: false};
    document.body.classList.add('dc-loading');
    return [{...off, value: `Loading ${m || 'the model'}…`}, off, off, off]; }"""
UNLOCK_JS = """() => { const on = {__type__: "update", interactive: true};
    document.body.classList.remove('dc-loading');
    return [{...on, value: "Generate"}, on, on, on]; }"""
# after a pick: Generate is made usable only when the card, drawn for the model the controls are set for, names the
# model in the box. An earlier pick's chain ended while a later model still loaded (its card read the box's new name
# and its unlock came before the new controls); a model that cannot be loaded leaves Generate saying so.
PICKED_JS = f"""(m, card) => {{ const name = /^### (.+)/.exec(card || '')?.[1].trim();
    if (name === m) return ({UNLOCK_JS})();
    const off = {{__type__: "update", interactive: false}};
    if (name !== `${{m}} (broken)`) return Array(4).fill({{__type__: "update"}});
    document.body.classList.remove('dc-loading');
    return [{{...off, value: `${{m}} cannot be used`}}, off, off, off]; }}"""
# a page built for its model and opened without a link has nothing to wait for: Generate and the examples are made
# usable at once, in the browser (wire_generate). With a link they wait for the server's ``loaded``.
OPEN_JS = f"""() => window.location.search ? Array(4).fill({{__type__: "update"}}) : ({UNLOCK_JS})()"""
# a refused upload: the status line saying why is brought into view (under an init image or on a phone it was off
# screen, and the file only vanished from its box)
SHOW_REFUSAL_JS = """() => setTimeout(() => { const s = document.querySelector('#status');
    if (s && s.textContent.includes('Refused')) s.scrollIntoView({block: 'center', behavior: 'instant'}); }, 60)"""
SCROLL_TO_PREVIEW = "() => document.querySelector('#preview')?.scrollIntoView({block: 'center', behavior: 'instant'})"


def failed(model, message: str) -> Shown:
    """Generate's outputs for a run that failed with ``message`` (a gr.Error's): the status line says so, naming
    the model; the rest is left as it was (issue 35: the status still said "Pick a model and press Generate")."""
    name = f" · {html.escape(str(model))}" if model else ""
    return filled(Shown, status=html_status(f"<b>Error</b>{name} · {html.escape(str(message))}"))


def queued_generate(app) -> SimpleNamespace:
    """Generate's handler and its concurrency: on a CPU server, ``generate_queued`` with no Gradio limit (every run
    enters the app's waiting room at once, which admits ``DIFFUSION_SLOTS`` runs and tells the rest their place and
    wait; its network calls are shared); on ZeroGPU, ``generate`` inside ``spaces.GPU``, one run at a time per GPU
    as the "sampling" events are. The handler keeps ``generate``'s parameters, the /generate API's names."""
    if on_zero_gpu():
        return SimpleNamespace(fn=gpu_task(app.generate, duration=app.gpu_seconds), limits=dict(concurrency_id="sampling"))

    async def generate(*args, **kwargs):
        try:
            async for out in app.generate_queued(*args, **kwargs):
                yield out
        except gr.Error as e:     # the status line says what went wrong (the page shows no error badges: wire_generate)
            yield failed(args[0] if args else kwargs.get("model"), e.message)
            raise
    sig = inspect.signature(app.generate)
    generate.__signature__ = sig.replace(parameters=[p for p in sig.parameters.values()
                                                     if p.name not in ("stop", "poll")])
    generate.__doc__ = app.generate.__doc__
    # Gradio finds the gr.Request parameter by the function's own annotations (typing.get_type_hints), not its
    # __signature__: without them every visitor was the session "api" (one kept run and one Stop for all)
    generate.__annotations__ = typing.get_type_hints(app.generate)
    return SimpleNamespace(fn=generate, limits=dict(concurrency_limit=None))


def wire_generate(app, demo, g: SimpleNamespace, l: SimpleNamespace) -> None:
    """The tab's events (``l``: the Learn page, whose step slider and notes follow each run)."""
    quiet = dict(api_visibility="private", show_progress="hidden", **LIGHT)
    controls = components(g, Controls)
    card = dict(fn=app.card_update, inputs=[g.model], outputs=[g.card, g.card_img], **quiet)
    shown_card = dict(card, inputs=[g.shown])   # a pick's: the card of the model the controls are set for
    # the card follows the controls (.then): once a model's card shows, its default settings are in place, so a
    # value typed after that is not reset by a late controls update. No progress overlay on the controls these
    # fill in: after the page loaded they spun for 2-3 s (issue 18). A model picked by the user (.input, not
    # .change) gets its defaults; a model set by a link or an example gets their settings instead.
    # A dropdown's input event fires even when the same model is picked again: ``shown`` (the model the controls
    # are set for) makes that a no-op, so re-picking the model keeps the settings typed since.
    shown = g.shown

    def loaded(model, class_label, attributes, current, request: gr.Request):
        # issue 34: a visitor's page asked the server for four events, and a class opening the page at once waited
        # seconds for 120 of them. The page now opens set for its model (generate_page); with no link, the page's
        # own script makes Generate usable (OPEN_JS) and this returns nothing; a link's settings (or a page not built
        # for its model) set the controls and the card here, and then Generate is made usable
        model_out, *rest = app.on_load(model, class_label, attributes, request, shown=current)
        ctl = Controls(*rest)
        if not getattr(request, "query_params", None) and model == current:     # usable already (OPEN_JS)
            return (model_out, *ctl, *(gr.skip(),) * 4)
        ctl = ctl._replace(**{f: dict(getattr(ctl, f), interactive=True) for f in Controls._fields
                              if f.startswith("example_")})
        new = model_out["value"] if "value" in model_out else model
        cards = app.card_update(new) if new != current else (gr.skip(), gr.skip())
        return (model_out, *ctl, new, *cards, gr.update(interactive=True, value="Generate"))
    # Generate and the example buttons wait, visibly, until the controls shown are the picked model's (its first load
    # can take seconds): a run started meanwhile mixed one model's name with the other's settings, and an old
    # model's example ran the new model's example of the same place (issue 35 item 2)
    examples = [g.example_0, g.example_1, g.example_2]
    # the lock and the unlock run in the browser (issue 34: each was a request, and a class picking at once waited on
    # them); the card comes after the controls, by which time the page has drawn them
    lock = dict(fn=None, inputs=[g.model], outputs=[g.run_btn, *examples], js=LOCK_JS)
    # A pick made while an earlier one still loads runs after it, not never (Gradio's default for a chained event,
    # trigger_mode "once", dropped it: Generate stayed "Loading ..." or was made usable with the earlier controls)
    last = dict(trigger_mode="always_last")
    unlock = dict(fn=None, inputs=[g.model, g.card], outputs=[g.run_btn, *examples], js=PICKED_JS, **last)
    # the pick, its card and the page's load event in their own lane (settings.PICKS)
    in_picks = dict(quiet, **PICKS)
    pick = dict(fn=app.pick, inputs=[g.model, g.sampler, g.class_label, g.attributes, shown],
                outputs=controls + [shown], **in_picks, **last)
    g.model.input(**lock).then(**pick).then(**dict(shown_card, **in_picks), **last).then(**unlock)
    # queued (a link's warnings reach the page only through the queue's messages); for a page opened without a link
    # it sets only the sampler list
    demo.load(loaded, [g.model, g.class_label, g.attributes, shown],
              [g.model] + controls + [shown, g.card, g.card_img, g.run_btn], **in_picks)
    if shown.value is not None:       # the page was built for its model (generate_page)
        demo.load(None, None, [g.run_btn, *examples], js=OPEN_JS)
    # API endpoint (markdown, samples.png): on a never-shown button, so the UI does not run it twice
    card_api = gr.Button(visible=False)
    card_api.click(app.model_card, [g.model], [g.card, g.card_img], api_name="model_card", **LIGHT)
    g.refresh.click(app.refresh_models, [g.model], [g.model], **quiet).then(**pick).then(**card)
    local = dict(api_visibility="private", queue=False)
    g.sampler.change(lambda s: gr.update(visible=takes_eta(s)), [g.sampler], [g.eta], **local)
    g.stick_source.change(lambda s: (gr.update(visible=s == "sketch"), gr.update(visible=s == "upload"),
                                     gr.update(visible=s == "upload")),
                          [g.stick_source], [g.stick_sketch, g.stick_upload, g.stick_examples], **local)
    g.make_gif.change(lambda v: gr.update(visible=bool(v)), [g.make_gif], [g.gif], **local)
    # a bad upload is refused as it arrives (not at Generate): taken out of its box, the status line says why
    for box, side in ((g.init_image, None), (g.stick_upload, None), (g.up_input, MAX_UPSCALE_INPUT)):
        box.upload(refuse_bad_upload(box.label, side), [box], [box, g.status], preprocess=False, **local).then(
            None, None, None, js=SHOW_REFUSAL_JS)
    g.rand_btn.click(lambda: -1, None, [g.seed], **local)
    g.reuse_btn.click(lambda s: s if s is not None else gr.skip(), [g.last_seed], [g.seed], **local)

    gen_inputs = [g.model, g.sampler, g.steps, g.spacing, g.eta, g.guidance, g.seed, g.batch_size, g.preview_every,
                  g.class_label, g.attributes, g.stick_source, g.stick_sketch, g.stick_upload, g.init_image,
                  g.strength, g.make_gif, g.gif_frames, g.backend]
    gen_outputs = components(g, Shown)
    after = dict(fn=app.after_run, inputs=[g.learn_run, l.explain_idx], outputs=[l.explain_idx, l.explain_note,
                                                                                  l.traj_note], **local)
    # the live preview and its status line into view when a run starts (on a phone: below every control)
    g.run_btn.click(None, None, None, js=SCROLL_TO_PREVIEW)
    sampling = queued_generate(app)
    gen = g.run_btn.click(sampling.fn, gen_inputs, gen_outputs, api_name="generate", show_progress="hidden",
                          **sampling.limits)
    gen.then(**after)
    runs = [gen]
    # an example's settings are set unqueued (a millisecond of work, for a model already loaded: the buttons are
    # locked while a pick loads): queued, a class pressing an example at once was served one visitor after another
    for i, button in enumerate((g.example_0, g.example_1, g.example_2)):
        run = button.click(functools.partial(app.apply_example, index=i), [g.model], [g.model] + controls,
                           show_progress="hidden", **local).then(None, None, None, js=SCROLL_TO_PREVIEW).then(
            sampling.fn, gen_inputs, gen_outputs, api_visibility="private", show_progress="hidden",
            **sampling.limits)
        run.then(**after)
        runs.append(run)
    # Stop: the run ends at once (unqueued); its partial result follows queued, on the same event stream as the
    # run's previews and so after them (sent unqueued, a preview already on its way arrived later and emptied it)
    g.stop_btn.click(app.stop_now, None, None, cancels=runs, **local).then(
        app.stop, [g.partial], [g.gallery, g.status], api_visibility="private", show_progress="hidden",
        concurrency_limit=None)

    def pick(gal, evt: gr.SelectData):
        if not gal or evt.index is None or evt.index >= len(gal):
            return gr.skip()
        item = gal[evt.index]
        return item[0] if isinstance(item, (list, tuple)) else item
    g.gallery.select(pick, [g.gallery], [g.up_input], **local)
    g.up_btn.click(gpu_task(app.upscale), [g.model, g.up_input, g.up_steps], [g.up_slider, g.up_file, g.up_note],
                   api_name="upscale", concurrency_id="sampling")

"""Issue 35's defects checked through the app's handlers (no server, no browser): a stopped run names its model,
no visitor sees the server's models path, the About tab names every sampler and grid."""
from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from app_fixtures import build_checkpoints  # noqa: E402


def test_a_stopped_run_names_the_model_that_ran(tmp_path):
    """Issue 35 item 11: Stop's status line and the partial gallery's captions name the model that ran (a model
    picked during the run changed the page's model name and card; Stop's line said only "Stopped at step k")."""
    import diffusion_app as app
    a = app.DiffusionApp(str(build_checkpoints(tmp_path / "ckpt")))
    outs = a.generate("tiny", steps=3, batch_size=2, seed=5)
    first_step = next(o for o in outs if isinstance(o[5], dict) and "x0" in o[5])
    outs.close()
    gallery, line = a.stop(first_step[5])
    assert "<b>Stopped</b> · tiny · at step 1/3" in line, line
    assert [caption for _, caption in gallery] == ["tiny · seed 5 (partial)", "tiny · seed 6 (partial)"]
    stop = threading.Event()
    stop.set()
    *_, last = a.generate("tiny-attr", steps=3, batch_size=1, seed=1, stop=stop)
    assert "<b>Stopped</b> · tiny-attr · before it started" in last[1], last[1]


def test_stops_result_comes_after_the_run_has_ended(tmp_path):
    """Stop's result (queued on the page, behind ``stop_now``) waits for the run in flight to end, so that it is sent
    after the run's last preview: sent at once, a preview still on its way arrived after it and emptied the gallery
    (seen under load). Here the run's visitor pulls its next output only 0.4 s after Stop is pressed. The run then
    sends its own last line ("Stopped ... stopped at step k/200", with its settings link), and Stop adds nothing:
    its own shorter line, made from the partial read before the wait, replaced that one (seen in the browser)."""
    import time
    import gradio as gr
    import diffusion_app as app
    a = app.DiffusionApp(str(build_checkpoints(tmp_path / "ckpt")))
    outs = a.generate("tiny", steps=200, batch_size=1, seed=5)
    partial = next(o.partial for o in outs if isinstance(o.partial, dict) and "x0" in o.partial)
    seen = []

    def visitor():
        time.sleep(0.4)
        seen.extend(outs)
    t0 = time.monotonic()
    pulling = threading.Thread(target=visitor)
    pulling.start()
    result = a.stop(partial)
    waited = time.monotonic() - t0
    pulling.join(30)
    assert waited >= 0.35, waited            # not before the run had ended
    assert "<b>Stopped</b>" in seen[-1].status and "/200" in seen[-1].status and "settings-link" in seen[-1].status
    assert result == (gr.skip(), gr.skip()), result      # the run's own line stays


def test_stop_shows_the_partial_gallery_when_the_run_was_closed_before_its_last_output(tmp_path):
    """The other order: Gradio's cancel (``cancels=runs``) closed the run's generator before it could send its last
    output. Stop's result is then all the page gets: the partial x0_hat gallery and where it stopped."""
    import diffusion_app as app
    a = app.DiffusionApp(str(build_checkpoints(tmp_path / "ckpt")))
    outs = a.generate("tiny", steps=200, batch_size=1, seed=5)
    partial = next(o.partial for o in outs if isinstance(o.partial, dict) and "x0" in o.partial)
    a.stop_now()
    outs.close()                             # the cancel: no more outputs from the run
    gallery, line = a.stop(partial)
    assert "<b>Stopped</b> · tiny · at step" in line and len(gallery) == 1, line


def test_a_run_stopped_between_steps_says_where_it_stopped(tmp_path):
    """Walkthrough (issue 35 item 9, "say what ran"): a run whose loop saw Stop ended with "Stopped · fashion · 4
    image(s) · ... 268 steps (karras; 400 asked, ...)" and not the step it stopped at, which reads as if 268 steps
    ran (Stop's own line, "at step 36/268", is shown only when it comes last). Its line now says the step."""
    import diffusion_app as app
    a = app.DiffusionApp(str(build_checkpoints(tmp_path / "ckpt")))
    stop = threading.Event()
    outs = a.generate("tiny", steps=3, batch_size=1, seed=2, stop=stop)
    next(o for o in outs if isinstance(o[5], dict) and "x0" in o[5])
    stop.set()
    *_, last = outs
    assert "<b>Stopped</b> · tiny · " in last[1] and "stopped at step 1/3, gallery shows" in last[1], last[1]


def test_the_model_card_names_no_server_folder_of_the_training_data(tmp_path):
    """Walkthrough (like issue 35 item 12): fashion's card said "data: IDX /usr/share/datasets/fashion-mnist (...)",
    the server's folders, to every visitor. The card names the data set's own folder only."""
    import diffusion_app as app
    root = build_checkpoints(tmp_path / "ckpt")
    info = json.loads((root / "tiny" / "training.json").read_text())
    info["data"] = "IDX /secret-server-dir/datasets/fashion-mnist (train, 60000 images)"
    (root / "tiny" / "training.json").write_text(json.dumps(info))
    card = json.dumps(app.DiffusionApp(str(root)).model_card("tiny"), default=str)
    assert "secret-server-dir" not in card and "IDX fashion-mnist (train, 60000 images)" in card, card


def test_one_step_is_said_as_one_step(tmp_path):
    """Walkthrough: fashion-1step's status line said "... 1 steps (trailing)"."""
    import diffusion_app as app
    a = app.DiffusionApp(str(build_checkpoints(tmp_path / "ckpt")))
    *_, last = a.generate("tiny", steps=1, batch_size=1, seed=0)
    assert " 1 step (trailing)" in last[1], last[1]
    *_, last = a.generate("tiny", steps=2, batch_size=1, seed=0)
    assert " 2 steps (trailing)" in last[1], last[1]


def test_a_run_starts_by_emptying_the_preview_and_the_last_results(tmp_path):
    """Issue 35 item 12: the preview showed the last run's images under "step 1/25". A run's first output (once its
    request is checked) empties the preview, gallery, GIF and the partial result Stop would save."""
    import diffusion_app as app
    a = app.DiffusionApp(str(build_checkpoints(tmp_path / "ckpt")))
    outs = list(a.generate("tiny", steps=2, batch_size=1, seed=3))     # "loading…" comes first: tiny is not loaded
    first = next(i for i, o in enumerate(outs) if o[0] is not None and not isinstance(o[0], dict))
    assert first > 0 and "starting" in outs[first - 1][1], [o[1] for o in outs]
    preview, line, gallery, gif, seed, partial, _ = outs[first - 1]
    assert (preview, gallery, gif, partial, seed) == (None, None, None, None, 3)
    assert "tiny" in line and "starting" in line


def test_no_visitor_sees_the_servers_models_path(tmp_path):
    """Issue 35 item 12: the model list showed the server's absolute checkpoints path to every visitor. Neither the
    page (its config: every component's first value), a broken folder's reason, the empty folder's card nor the
    error of a Generate without models names it; the folder's own name is enough."""
    import diffusion_app as app
    import gradio as gr
    root = build_checkpoints(tmp_path / "secret-server-dir" / "ckpt")
    broken = root / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"kind": "cascade", "stages": [{"path": "../../../elsewhere"}]}')
    demo = app.build_demo(str(root))
    page = json.dumps(demo.get_config_file(), default=str)
    assert "secret-server-dir" not in page and "ckpt/" in page
    demo.app_state.refresh_models(None)
    for _ in range(2):      # loading it, then its remembered failure
        with pytest.raises(gr.Error) as err:
            list(demo.app_state.generate("broken"))
        assert "is outside ckpt/" in str(err.value) and "secret-server-dir" not in str(err.value), str(err.value)
    why = demo.app_state.models.broken("broken")
    assert why and "secret-server-dir" not in why, why
    choices = json.dumps(demo.app_state.refresh_models(None), default=str)
    assert "broken (broken:" in choices and "secret-server-dir" not in choices
    empty = app.DiffusionApp(str(tmp_path / "secret-server-dir" / "empty"))
    md, _ = empty.card_update(None)
    assert "No models yet" in md and "secret-server-dir" not in md
    with pytest.raises(gr.Error) as err:
        next(empty.generate(None))
    assert "no models found in empty/" in str(err.value) and "secret-server-dir" not in str(err.value)


def test_the_about_tab_names_every_sampler_and_grid():
    """Issue 35 item 12: the About tab left out DPM-Solver++(3M), UniPC and the logsnr / karras grids. Every sampler
    the menus offer (by its menu label) and every timestep spacing is named there."""
    from diffusion_app.assets import ABOUT
    from diffusion_app.settings import sampler_choices
    from diffusion_core import SPACINGS
    missing = [label for label, _ in sampler_choices() if label not in ABOUT]
    missing += [s for s in SPACINGS if f"*{s}*" not in ABOUT]
    assert not missing, missing


def test_the_apps_models_say_what_they_return():
    """Issue 35, structure: ``Models.get`` is annotated, so tools follow a loaded model from the app into the
    core (with the core's ``TYPE_CHECKING`` imports, tests/core/test_public_api.py)."""
    import typing
    from diffusion_app.models import Models
    from diffusion_core import Pipeline
    assert typing.get_type_hints(Models.get)["return"] is Pipeline


def test_a_hidden_input_never_carries_over_to_another_model(tmp_path):
    """Issue 35 item 1: an upscale example's low-res image stayed in the closed "img2img / low-res input" box when
    another model was picked, and Generate then ran img2img from it (cats for "woman"). Every model's controls set
    that box: to its own example's image, or to nothing."""
    import diffusion_app as app
    from diffusion_app.outputs import Controls
    a = app.DiffusionApp(str(build_checkpoints(tmp_path / "ckpt")))
    sr = Controls(*a.apply_example("tiny-sr", 0)[1:])
    assert sr.init_image.get("value"), sr.init_image            # the example's low-res image is in the box
    for model in ("tiny", "tiny-attr", "tiny-cascade", "tiny-linear"):
        box = a.on_model_change(model, "ddim").init_image
        assert "value" in box and box["value"] is None, (model, box)


def test_a_grid_with_fewer_timesteps_than_asked_says_both(tmp_path, make_model):
    """Issue 35 item 9: 1000 DDPM steps on the Karras grid ran as 518 and the status line said nothing. It says
    how many ran and how many were asked; the number that ran is the core stream's own count of steps. (A model of
    T = 100 does the same with 53 of 100, in a tenth of the time.)"""
    import diffusion_app as app
    from diffusion_core import load
    root = build_checkpoints(tmp_path / "ckpt")
    make_model(root / "tiny-t100", diffusion={"T": 100, "schedule": "cosine"})
    a = app.DiffusionApp(str(root))
    T = a.models.get("tiny-t100").config.diffusion.T
    ran = sum(1 for _ in load(root / "tiny-t100").stream(1, sampler="ddpm", steps=T, spacing="karras", seed=0))
    assert ran < T
    *outs, last = a.generate("tiny-t100", "ddpm", T, "karras", seed=0, batch_size=1, preview_every=T // 4)
    first = next(o for o in outs if "step 1/" in str(o.status))
    assert f"{ran} steps (karras; {T} asked, the grid has {ran} distinct timesteps)" in last.status, last.status
    assert f"step 1/{ran} ({T} asked)" in first.status, first.status         # and while it runs
    *_, last = a.generate("tiny-t100", "ddpm", 5, "karras", seed=0, batch_size=1, preview_every=5)
    assert "5 steps (karras)" in last.status and "asked" not in last.status, last.status


def test_a_stopped_cascade_says_which_stage_it_stopped_in(tmp_path):
    """Walkthrough (issue 35, "say what ran"): "Stopped · pose-cascade-256 · at step 2/10" did not say the run had
    finished its base and stopped in a super-resolution stage. Both Stop's line and the run's last line say it."""
    import diffusion_app as app
    a = app.DiffusionApp(str(build_checkpoints(tmp_path / "ckpt")))
    stop = threading.Event()
    outs = a.generate("tiny-cascade", steps=3, batch_size=1, seed=2, stop=stop)
    partial = next(o.partial for o in outs if isinstance(o.partial, dict) and o.partial.get("stage") == 1)
    stop.set()
    *_, last = outs
    assert "stopped at step 1/3 of stage 2/2 (super-resolution)" in last.status, last.status
    _, line = a.stop(partial)
    assert "at step 1/3 of stage 2/2 (super-resolution)" in line, line
    outs = a.generate("tiny", steps=3, batch_size=1, seed=2, stop=threading.Event())     # one model: the step alone
    partial = next(o.partial for o in outs if isinstance(o.partial, dict) and "x0" in o.partial)
    assert a.stop(partial)[1].count("at step 1/3 ·") == 1


def test_the_catalogue_reads_typed_configs(tmp_path):
    """Issue 35 (structure: "the app reads raw config.json"): the catalogue holds each folder's typed config (the
    core's read_config). Compare's schedule pairs were found by comparing raw dicts: ``tiny-linear`` with its
    ``prediction`` written out as the default "eps" and ``tiny`` with it left out were not a pair. A config that
    loading would refuse is listed as broken, with its reason, before anyone loads it."""
    import diffusion_app as app
    root = build_checkpoints(tmp_path / "ckpt")
    for name, keep in (("tiny", False), ("tiny-linear", True)):
        path = root / name / "config.json"
        cfg = json.loads(path.read_text())
        assert cfg["diffusion"]["prediction"] == "eps"
        if not keep:
            del cfg["diffusion"]["prediction"]
        path.write_text(json.dumps(cfg))
    bad = json.loads((root / "tiny" / "config.json").read_text())
    bad["unet"]["base_channels"] = -1
    (root / "tiny-bad").mkdir()
    (root / "tiny-bad" / "config.json").write_text(json.dumps(bad))
    a = app.DiffusionApp(str(root))
    assert a.schedule_siblings("tiny") == ["tiny-linear"] and a.schedule_siblings("tiny-linear") == ["tiny"]
    assert a.models.config("tiny").diffusion.prediction == "eps"
    assert "base_channels" in (a.models.broken("tiny-bad") or ""), a.models.broken("tiny-bad")
    assert a.models.config("tiny-bad") is None and not a.is_student("tiny-bad")


def test_a_model_that_cannot_load_becomes_the_shown_one_with_the_controls_left_alone(tmp_path):
    """CI failure (stop 49), the pick's other end: a picked model whose load fails becomes the shown model (so its
    card, drawn for the shown model, says why, and the page's Generate says it cannot be used) and the controls stay
    as they were; the shown model picked again changes nothing; a good pick sets its controls."""
    import gradio as gr
    import diffusion_app as app
    from diffusion_app.outputs import Controls
    root = build_checkpoints(tmp_path / "ckpt")
    (root / "tiny-attr" / "model.safetensors").write_bytes(b"not weights")
    state = app.DiffusionApp(str(root))
    n, skip = len(Controls._fields), gr.skip()
    assert state.pick("tiny", None, "any", [], "tiny") == (skip,) * (n + 1)
    assert state.pick("tiny-attr", None, "any", [], "tiny") == (*(skip,) * n, "tiny-attr")
    assert state.card_update("tiny-attr")[0].startswith("### tiny-attr (broken)")
    good = state.pick("tiny-ensemble", None, "any", [], "tiny")
    assert good[-1] == "tiny-ensemble" and Controls(*good[:-1]).attributes["visible"] is False, good

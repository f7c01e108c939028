"""The Gradio app, end to end through gradio_client, on tiny random-weight checkpoints.

One server is launched in-process for the module; every test talks to it over HTTP like a user's
script would. Runs are a few steps on 16 px models, so the whole module takes well under a minute.
"""
from __future__ import annotations

import json
import re
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from app_fixtures import build_checkpoints, client, launch_app, server  # noqa: E402,F401


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("uploads")
    out = {}
    (d / "notes.txt").write_text("this is not an image\n")
    out["text"] = d / "notes.txt"
    rgb = (np.random.default_rng(0).random((20, 24, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).convert("CMYK").save(d / "cmyk.jpg")
    out["cmyk"] = d / "cmyk.jpg"
    Image.fromarray((np.arange(400).reshape(20, 20) * 150).astype(np.uint16), mode="I;16").save(d / "gray16.png")
    out["gray16"] = d / "gray16.png"
    pal = Image.fromarray(rgb).convert("RGBA")
    pal.putalpha(128)
    pal.save(d / "alpha.png")
    out["alpha"] = d / "alpha.png"
    Image.fromarray(rgb).convert("P").save(d / "palette.gif")
    out["palette"] = d / "palette.gif"
    Image.new("L", (4097, 4097), 255).save(d / "huge.png")
    out["huge"] = d / "huge.png"
    stick = Image.new("L", (64, 64), 255)
    from PIL import ImageDraw
    dr = ImageDraw.Draw(stick)
    dr.line([(32, 12), (32, 40), (20, 58)], fill=0, width=3)
    dr.line([(32, 40), (44, 58)], fill=0, width=3)
    dr.line([(18, 24), (46, 24)], fill=0, width=3)
    dr.ellipse([(26, 2), (38, 14)], outline=0, width=2)
    stick.save(d / "stick.png")
    out["stick"] = d / "stick.png"
    return out


def run(client, **kw):
    """Submit /generate and collect every streamed output tuple."""
    job = client.submit(api_name="/generate", **kw)
    outs = list(job)
    job.result()            # iteration ends quietly on an error; result() raises it (AppError)
    return job, outs


def final_gallery(outs):
    gal = outs[-1][2]       # while it streams, /generate sends an empty gallery; the finished run fills it
    assert isinstance(gal, list) and gal, f"no gallery in the final output: {outs[-1]!r}"
    return gal


def gallery_path(item) -> str:
    img = item["image"] if isinstance(item, dict) else item[0]
    return img["path"] if isinstance(img, dict) else img


# ------------------------------------------------------------------------------------------------
def test_endpoints_have_stable_names(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/generate", "/forward", "/schedule_plot", "/upscale", "/model_card"} <= names


def test_model_card(client):
    md, samples = client.predict("tiny", api_name="/model_card")
    assert "tiny class-conditional" in md
    assert "cosine" in md and "eps" in md
    assert "12 steps" in md and "Fashion-MNIST (test fixture)" in md
    assert "FID 123.40" in md                      # the fixture's metrics.json, as a line of the measured table
    assert samples and Path(samples).is_file()
    md, _ = client.predict("tiny-ensemble", api_name="/model_card")
    assert "ensemble of 2 experts" in md
    md, _ = client.predict("tiny-cascade", api_name="/model_card")
    assert "cascade" in md and "tiny-sr" in md


def test_generate_streams_previews_then_gallery(client):
    job, outs = run(client, model="tiny", sampler="ddim", steps=6, batch_size=3, seed=11, class_label="Bag",
                    preview_every=2, make_gif=True)
    assert len(outs) >= 4, "expected intermediate previews before the final result"
    start = [i for i, o in enumerate(outs) if "starting" in o[1]]      # the run's first output empties the preview
    assert len(start) == 1 and outs[start[0]][0] is None, [o[1] for o in outs]      # (issue 35 item 12)
    for o in outs[start[0] + 1:-1]:
        assert Path(o[0]).is_file()                  # x_t | x0_hat preview
        assert "step" in o[1] and "t = " in o[1]      # status line
    gal = final_gallery(outs)
    assert len(gal) == 3
    for i, item in enumerate(gal):
        meta = json.loads(Image.open(gallery_path(item)).text["parameters"])
        assert meta["model"] == "tiny" and meta["sampler"] == "ddim" and meta["steps"] == 6
        assert meta["seed"] == 11 + i and meta["labels"] == ["Bag"] and meta["spacing"] == "trailing"
    gif = Image.open(outs[-1][3])
    assert gif.is_animated and gif.n_frames >= 3
    assert "Done" in outs[-1][1]


def test_seed_reproducible_at_any_batch_size(client):
    _, a = run(client, model="tiny", steps=3, batch_size=2, seed=5, preview_every=10)
    _, b = run(client, model="tiny", steps=3, batch_size=1, seed=6, preview_every=10)
    img_a = np.asarray(Image.open(gallery_path(final_gallery(a)[1])))
    img_b = np.asarray(Image.open(gallery_path(final_gallery(b)[0])))
    assert np.array_equal(img_a, img_b)


@pytest.mark.parametrize("sampler", ["ddim", "dpm++"])
def test_app_and_cli_give_bit_identical_images(client, server, tmp_path, sampler):
    """Same seed and settings: the app's PNGs equal the CLI's, pixel for pixel, at different batch sizes
    (app: 3 images from seed 40; CLI: 5 images from seed 38, so app image i is CLI image i + 2)."""
    from diffusion_core.__main__ import main
    _, outs = run(client, model="tiny", sampler=sampler, steps=4, batch_size=3, seed=40, guidance=2.5,
                  class_label="Coat", preview_every=10)
    app_imgs = [np.asarray(Image.open(gallery_path(g))) for g in final_gallery(outs)]
    assert main(["sample", "--model", str(server[1] / "tiny"), "--out", str(tmp_path), "--n", "5", "--seed", "38",
                 "--sampler", sampler, "--steps", "4", "--guidance", "2.5", "--label", "Coat", "--batch", "5"]) == 0
    cli = sorted(tmp_path.glob("*.png"))
    assert len(cli) == 5 and len(app_imgs) == 3
    for i, img in enumerate(app_imgs):
        assert np.array_equal(img, np.asarray(Image.open(cli[i + 2]))), i


@pytest.mark.parametrize("kw,expect", [
    (dict(model="tiny-ensemble", sampler="ddpm"), "expert"),
    (dict(model="tiny-cascade", class_label="Coat", guidance=3.0), "stage 2/2"),
    (dict(model="tiny-cold", sampler="cold"), "step"),
    (dict(model="tiny-attr", attributes=["red", "round"], guidance=2.0), "step"),
])
def test_generate_model_kinds(client, kw, expect):
    _, outs = run(client, steps=3, batch_size=2, seed=1, **kw)
    assert any(expect in o[1] for o in outs[:-1]), [o[1] for o in outs]
    gal = final_gallery(outs)
    assert len(gal) == 2
    if kw["model"] == "tiny-cascade":
        assert Image.open(gallery_path(gal[0])).size == (32, 32)     # 16 px base, x2 super-resolution
        # the done line says how the later stage sampled: the cascade's 3 steps, the SR model's own sampler
        assert "then 1 super-resolution stage (DDPM 3 steps)" in outs[-1][1], outs[-1][1]


def test_generate_pose_sr_and_img2img(client, files):
    _, outs = run(client, model="tiny-pose", steps=2, batch_size=1, stick_source="upload",
                  stick_upload=handle_file(str(files["stick"])))
    assert Image.open(gallery_path(final_gallery(outs)[0])).mode == "RGB"
    _, outs = run(client, model="tiny-sr", steps=2, batch_size=1, init_image=handle_file(str(files["cmyk"])))
    assert Image.open(gallery_path(final_gallery(outs)[0])).size == (16, 16)
    for key in ("cmyk", "gray16", "alpha", "palette"):      # odd modes are converted, not refused
        _, outs = run(client, model="tiny", steps=2, batch_size=1, init_image=handle_file(str(files[key])),
                      strength=0.5)
        meta = json.loads(Image.open(gallery_path(final_gallery(outs)[0])).text["parameters"])
        assert meta["img2img_strength"] == 0.5


def test_cancel_keeps_serving(client):
    job = client.submit(model="tiny", steps=400, batch_size=1, preview_every=1, api_name="/generate")
    seen = 0
    t0 = time.time()
    while seen < 2 and time.time() - t0 < 30:
        seen = len(job.outputs())
        time.sleep(0.05)
    assert seen >= 2, "no previews streamed"
    job.cancel()
    time.sleep(0.5)
    outs = job.outputs()
    # no gallery: an empty one while the run samples, none made after the cancel
    assert len(outs) < 400 and not (isinstance(outs[-1][2], list) and outs[-1][2]), \
        "the cancelled run should not finish"
    _, outs = run(client, model="tiny", steps=2, batch_size=1)
    assert len(final_gallery(outs)) == 1


@pytest.mark.parametrize("degradation", ["noise", "blur", "pixelate", "mask"])
def test_forward(client, degradation):
    xt, strip, info = client.predict(None, "linear", degradation, 500, api_name="/forward")
    assert Image.open(xt).size[0] >= 128
    assert Image.open(strip).size[0] > Image.open(strip).size[1] * 4
    assert "t = 500" in info


def test_forward_upload_and_plot(client, files):
    xt, _, _ = client.predict(handle_file(str(files["alpha"])), "cosine", "noise", 10, api_name="/forward")
    assert Image.open(xt).mode == "RGB"
    plot = client.predict(100, "cosine", api_name="/schedule_plot")
    assert plot


def test_the_schedule_plot_is_drawn_once_per_t_and_schedule():
    """Every new page asks for the default plot on load: it is drawn and encoded once and kept (the page's PNG
    format, the figure's 800 x 320 px), and another t or schedule is another picture."""
    import base64
    import io

    from diffusion_app.forward.handlers import ForwardTab
    a = ForwardTab.schedule_plot(250, "cosine")
    assert ForwardTab.schedule_plot(250, "cosine") is a
    png = Image.open(io.BytesIO(base64.b64decode(a.plot.split(",", 1)[1])))
    assert a.plot.startswith("data:image/png;base64,") and png.size == (800, 320)
    others = {ForwardTab.schedule_plot(600, "cosine").plot, ForwardTab.schedule_plot(250, "linear").plot}
    assert a.plot not in others and len(others) == 2


def test_upscale(client):
    _, outs = run(client, model="tiny", steps=2, batch_size=1, seed=2)
    src = gallery_path(final_gallery(outs)[0])
    for model in ("tiny", "tiny-cascade"):        # tiny uses the stand-alone tiny-sr; the cascade its SR stage
        pair, path, note = client.predict(model, handle_file(src), 2, api_name="/upscale")
        assert Image.open(path).size == (32, 32)
        assert "tiny-sr" in note or "tiny-cascade" in note
        assert len(pair) == 2


@pytest.mark.parametrize("kw,message", [
    (dict(model="tiny", init_image="TEXT"), "not a readable image"),
    (dict(model="tiny", init_image="HUGE"), "too large"),
    (dict(model="tiny", steps=0), "steps"),
    (dict(model="tiny", batch_size=1000), "1000"),
    (dict(model="no-such-model"), "unknown model"),
    (dict(model="tiny", class_label="Unicorn"), "unknown label"),
    (dict(model="tiny-attr", attributes=["striped"]), "unknown label"),
    (dict(model="tiny-cold", sampler="ddim"), "does not apply"),
    (dict(model="tiny-pose", stick_source="upload"), "stickman"),
    (dict(model="tiny-sr"), "low-resolution"),
])
def test_bad_inputs_give_messages_and_app_keeps_serving(client, files, kw, message):
    kw = dict(kw)
    if kw.get("init_image") == "TEXT":
        kw["init_image"] = handle_file(str(files["text"]))
    if kw.get("init_image") == "HUGE":
        kw["init_image"] = handle_file(str(files["huge"]))
    kw.setdefault("steps", 2)
    with pytest.raises(Exception) as err:
        run(client, batch_size=kw.pop("batch_size", 1), **kw)
    assert message.lower() in str(err.value).lower(), str(err.value)
    assert "Traceback" not in str(err.value)
    _, outs = run(client, model="tiny", steps=1, batch_size=1)
    assert len(final_gallery(outs)) == 1


def test_no_models_folder(tmp_path):
    """An empty (or missing) checkpoints folder still builds; generating says what to do."""
    import gradio as gr

    import diffusion_app as app
    demo = app.build_demo(str(tmp_path / "missing"))
    state = demo.app_state
    assert state.models.names() == []
    md, _ = state.card_update(None)
    assert "No models yet" in md
    with pytest.raises(gr.Error, match="no models found"):
        next(state.generate(None))
    xt, strip, info = state.forward(None, "cosine", "noise", 999)      # the forward tab needs no model
    assert xt.size[0] >= 128 and "t = 999" in info


def test_classifier_folders_are_not_listed_as_models(tmp_path):
    import diffusion_app as app
    root = build_checkpoints(tmp_path / "ckpt")
    (root / "classifier-fashion").mkdir()
    (root / "classifier-fashion" / "config.json").write_text(json.dumps({"kind": "classifier", "num_outputs": 10}))
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text("{not json")
    names = app.DiffusionApp(str(root)).models.names()
    assert "classifier-fashion" not in names and "tiny" in names and "tiny-cascade" in names
    assert "broken" in names          # listed: choosing it gives the loader's one-line reason


def test_each_model_opens_with_its_own_default_settings(tmp_path):
    """Choosing a model moves sampler, steps, grid and guidance to the model's ``sampling`` defaults, and its card
    says which and why; a model without them gets DPM-Solver++ 25 on the trailing grid, guidance 2 (the app's
    defaults before per-model ones), and a cascade its base stage's."""
    import diffusion_app as app
    root = build_checkpoints(tmp_path / "ckpt")
    cfg = json.loads((root / "tiny" / "config.json").read_text())
    cfg["sampling"] = {"sampler": "unipc", "steps": 7, "spacing": "logsnr", "guidance": 3.5, "why": "measured best"}
    (root / "tiny" / "config.json").write_text(json.dumps(cfg))
    a = app.DiffusionApp(str(root))
    for name, want in (("tiny", ("unipc", 7, "logsnr", 3.5)), ("tiny-cascade", ("unipc", 7, "logsnr", 3.5)),
                       ("tiny-linear", ("dpm++", 25, "trailing", 2.0))):
        out = a.on_model_change(name, "ddim")
        got = (out[0]["value"], out[9]["value"], out[10]["value"], out[2]["value"])
        assert got == want, (name, got)
        assert out[1]["visible"] is False                   # eta shows for DDIM only
    card, _ = a.model_card("tiny")
    assert "default settings" in card and "UniPC" in card and "7 steps" in card and "measured best" in card


def test_the_shipped_fashion_defaults_are_the_best_ten_step_row_of_the_solver_table():
    """`checkpoints/fashion`'s default settings follow from the solver table (issue 22): the 10-step row with
    the lowest FID among every solver x grid measured at 2,000 samples."""
    folder = ROOT / "checkpoints" / "fashion"
    sd = json.loads((folder / "config.json").read_text())["sampling"]
    rows = {}
    measured = ROOT / "docs" / "measurements" / "fashion"      # the table's rows but the headline ones (issue 35)
    for p in [*folder.glob("metrics-*10*-n2000.json"), *measured.glob("metrics-*10*-n2000.json")]:
        m = json.loads(p.read_text())
        # the table's runs: seed 0 on fp32 (the backend gate's other seeds and backends are not table rows)
        if m.get("steps") == 10 and m.get("n") == 2000 and m.get("seed", 0) == 0 and m.get("backend", "fp32") == "fp32":
            rows[(m["sampler"], m.get("spacing", "trailing"))] = m["fid"]
    assert len(rows) >= 12                                  # 4 solvers x 3 grids
    assert min(rows, key=rows.get) == (sd["sampler"], sd["spacing"]) and sd["steps"] == 10
    assert f"{rows[(sd['sampler'], sd['spacing'])]:.2f}" in sd["why"]


def test_model_cards_state_the_output_size(tmp_path):
    """A super-resolution model's card gives low -> high resolution, and a cascade's its final output size, not
    the size of the network's training crops or of the base stage (issue 18: "32 -> 32 px" for emoji-sr)."""
    import diffusion_app as app
    from diffusion_core import load
    root = build_checkpoints(tmp_path / "ckpt")
    a = app.DiffusionApp(str(root))
    sr, casc = load(root / "tiny-sr"), load(root / "tiny-cascade")
    low, high = sr.config.low_res, sr.image_size
    assert high == 2 * low
    card, _ = a.model_card("tiny-sr")
    assert f"super-resolution {low} -> {high} px" in card and f"**image**: {high} px" in card
    base = casc.base.config.unet.image_size
    out = casc.sample(1, steps=1, sr_steps=1, seed=0)            # what the cascade really makes: base x 2
    assert out.shape[-1] == 2 * base == casc.image_size
    card, _ = a.model_card("tiny-cascade")
    assert f"**image**: {2 * base} px" in card and f"tiny ({base} px) -> tiny-sr ({2 * base} px)" in card


def test_both_comparisons_run_with_the_defaults_the_page_shows(tmp_path):
    """Learn -> compare with the controls as the page starts (issue 18: "Compare guidance scales" refused its own
    defaults, 3 samplers x 5 scales > 12 cells)."""
    import diffusion_app as app
    from diffusion_app import settings
    a = app.DiffusionApp(str(build_checkpoints(tmp_path / "ckpt")))
    rows = settings.compare_default_samplers()
    img, note = a.compare_guidance("tiny", "Coat", None, 0, rows, settings.COMPARE_GUIDANCE,
                                   settings.COMPARE_DEFAULT_GUIDANCE_STEPS)
    assert img is not None and len(rows) * len(settings.COMPARE_GUIDANCE) <= settings.COMPARE_MAX_CELLS
    img, note = a.compare("tiny", "Coat", None, 0, rows, settings.COMPARE_DEFAULT_STEPS)
    assert img is not None


def test_switching_model_keeps_the_picks_the_new_model_has(tmp_path):
    """emoji -> emoji-cascade kept nothing the user had picked (issue 18); now the class or attributes that the
    new model also has stay chosen, the others are dropped."""
    import diffusion_app as app
    from diffusion_app import settings
    from app_fixtures import ATTRS
    a = app.DiffusionApp(str(build_checkpoints(tmp_path / "ckpt")))
    out = a.on_model_change("tiny-attr", "ddim", settings.ANY, [ATTRS[0], "not-an-attribute", ATTRS[1]])
    assert out[4]["value"] == [ATTRS[0], ATTRS[1]]
    out = a.on_model_change("tiny-linear", "ddim", "Coat", [ATTRS[0]])
    assert out[3]["value"] == "Coat" and out[4]["value"] == []
    out = a.on_model_change("tiny-linear", "ddim", "Purple", None)
    assert out[3]["value"] == settings.ANY


def test_backends_are_never_measured_while_visitors_wait_and_links_name_them(tmp_path, monkeypatch):
    """Issue 34 (was issue 25's measuring on first use): the app runs fp32 unless told otherwise, the backend that
    reproduces a seed's images on every machine; auto uses the choice `python -m diffusion_core backends`
    measured ahead of time, and fp32 (saying why) where none was; nothing is timed on the request path. Every
    status line ends with the backend that ran, and the settings link and the PNGs name it."""
    import gradio as gr

    import diffusion_app as app
    from diffusion_core.pipeline.loading import measure_backends
    from diffusion_core.runtime import backends
    monkeypatch.delenv("DIFFUSION_CORE_BACKEND", raising=False)
    root = build_checkpoints(tmp_path / "ckpt")
    a = app.DiffusionApp(str(root))
    assert a.models.backend == "fp32"
    real_time = backends.time_runner

    def no_timing(*args, **kw):
        raise AssertionError("a backend was timed on the request path")
    monkeypatch.setattr(backends, "time_runner", no_timing)
    monkeypatch.setattr(backends, "candidates", lambda device="cpu", info=None: ["fp32", "bf16"])
    outs = list(a.generate("tiny", "ddim", 3, class_label="Coat", seed=1, batch_size=2))
    assert "loading" in outs[0][1] and "measuring" not in outs[0][1]
    def text(status_html):      # the status line without its markup, progress bar and the settings link below it
        return re.sub(r"<[^>]+>", "", status_html.split("</div>")[0].split("<br>")[0]).strip()
    assert all(text(o[1]).endswith("· fp32") for o in outs[1:]), [o[1] for o in outs]
    assert "backend=fp32" in outs[-1][1]
    assert json.loads(Image.open(outs[-1][2][0][0]).text["parameters"])["backend"] == "fp32"
    fresh = app.DiffusionApp(str(root))         # auto at a model's first load, and on a model loaded on fp32
    for who in (fresh, a):
        auto = list(who.generate("tiny", "ddim", 3, class_label="Coat", seed=1, batch_size=2, backend="auto"))
        assert text(auto[-1][1]).endswith("· fp32") and "not measured on this machine yet" in auto[-1][1]
    # measured ahead of time (idle): auto now runs the remembered choice, still without timing anything
    monkeypatch.setattr(backends, "time_runner", real_time)
    monkeypatch.setattr(backends, "_busy", lambda: None)
    assert measure_backends(root / "tiny") == 0
    remembered = json.loads((root / "tiny" / ".cache" / "backend-choice.json").read_text())
    (choice,) = remembered.values()
    assert "measured at load" in choice["reason"]
    monkeypatch.setattr(backends, "time_runner", no_timing)
    b = app.DiffusionApp(str(root))
    again = list(b.generate("tiny", "ddim", 3, class_label="Coat", seed=1, batch_size=2, backend="auto"))
    assert text(again[-1][1]).endswith(f"· {choice['name']}") and "measured at load" in again[-1][1]
    with pytest.raises(gr.Error, match="unknown backend"):
        next(a.generate("tiny", "ddim", 3, backend="tpu"))


def test_measure_backends_refuses_a_busy_machine(tmp_path, monkeypatch, capsys):
    from diffusion_core.pipeline.loading import measure_backends
    from diffusion_core.runtime import backends
    monkeypatch.setattr(backends, "_busy", lambda: 3.5)
    assert measure_backends(build_checkpoints(tmp_path / "ckpt")) == 2
    assert capsys.readouterr().err == ("error: the machine is busy (1-minute load 3.5): measure when it is idle, "
                                       "or --force\n")


def test_model_card_lists_measurements_compactly(tmp_path):
    """Issue 18: the card dumped every key of every metrics file (fashion's card: ~6,900 px). Now one table line
    per run (settings, headline numbers): the run at the model's default settings first, other seeds and
    backends last, a repeated run once, and past CARD_MEASUREMENTS lines a folded "N more measurements"."""
    import diffusion_app as app
    from diffusion_app import settings
    root = build_checkpoints(tmp_path / "ckpt")
    folder = root / "tiny"
    (folder / "metrics.json").unlink()
    a = app.DiffusionApp(str(root))
    sd = a.sampling_defaults(a.models.get("tiny"))
    run = dict(n=200, guidance=sd.guidance, fid_real_vs_real=1.0, accuracy=0.9)
    files = {"metrics-default": dict(run, sampler=sd.sampler, steps=sd.steps, spacing=sd.spacing, fid=5.0),
             "metrics-other-seed": dict(run, sampler=sd.sampler, steps=sd.steps, spacing=sd.spacing, fid=1.0, seed=1),
             "metrics-bf16": dict(run, sampler=sd.sampler, steps=sd.steps, spacing=sd.spacing, fid=4.9,
                                  backend="bf16"),
             **{f"metrics-ddim{k}": dict(run, sampler="ddim", steps=k, fid=10.0 - k / 10) for k in (10, 20, 30, 40)}}
    files["metrics"] = files["metrics-ddim40"]                       # the untagged copy of a tagged run
    for name, m in files.items():
        (folder / f"{name}.json").write_text(json.dumps(m))
    md, _ = a.model_card("tiny")
    table = md[md.index("**Measured**"):]
    shown, folded = table.split("<details>")
    rows = [line for line in shown.splitlines() if line.startswith("| ") and "settings" not in line]
    assert len(rows) == settings.CARD_MEASUREMENTS and "(default)" in rows[0] and "FID 5.00" in rows[0]
    assert [r for r in rows[1:] if "DDIM" in r] == rows[1:]        # then the others, by FID: 6.0, 7.0, 8.0
    assert "FID 6.00" in rows[1] and "FID 8.00" in rows[3]
    assert "3 more measurements" in folded and folded.count("| DDIM 10 steps") == 1
    hidden = [line for line in folded.splitlines() if line.startswith("| ") and "settings" not in line]
    assert hidden[0].startswith("| DDIM 10") and "seed 1" in hidden[-2] + hidden[-1] and "bf16" in hidden[-2] + hidden[-1]
    assert table.count("FID 6.00") == 1                             # metrics.json repeats ddim40: listed once


def test_a_long_run_shows_the_time_left():
    """Issue 18: a DDPM 1000 run showed no time estimate. After a second, the status line extrapolates the time
    left from the steps done (a cascade's stages counted alike)."""
    import diffusion_app as app
    from diffusion_app import render
    assert render.eta_seconds(0.5, 0.1) is None and render.eta_seconds(2.0, 0.0) is None and render.eta_seconds(9.0, 1.0) is None
    assert render.eta_seconds(2.0, 0.1) == pytest.approx(18.0) and render.eta_seconds(30.0, 0.75) == pytest.approx(10.0)
    a = app.DiffusionApp.__new__(app.DiffusionApp)

    from types import SimpleNamespace

    class Pipe:
        kind, backend = "model", "fp32"
        stages = [SimpleNamespace(path=Path("base")), SimpleNamespace(path=Path("sr"))]
    rec = type("Rec", (), dict(index=99, num_steps=1000, t=900, t_next=899, stage=0))()
    status = a._status(Pipe(), rec, 1, time.time() - 5.0)           # 100 of 1000 steps in 5 s: 45 s left
    assert "about 45 s left" in status, status
    rec.index = 499
    assert "about 7.5 min left" in a._status(Pipe(), rec, 2, time.time() - 150.0)   # half of stage 1 of 2: 25%


def test_an_uploaded_forward_image_gets_its_own_caption(tmp_path):
    """Issue 18: after an upload the Forward tab still captioned the last Fashion-MNIST example; an upload now
    says what it is and at what size it is used (the page wires it to the image's upload event)."""
    import diffusion_app as app
    from PIL import Image
    path = tmp_path / "red.png"
    Image.new("RGB", (48, 40), (200, 30, 30)).save(path)
    a = app.DiffusionApp(str(tmp_path / "none"))
    note = a.upload_note(str(path))
    assert note == "your image (48x40 px, colour), used as a 40x40 x_0", note
    assert "Fashion" not in note and a.upload_note(None) == ""
    xt, _, _ = a.forward(str(path), "cosine", "noise", 0)           # and the forward process uses that image
    assert xt.getpixel((xt.width // 2, xt.height // 2))[0] > 150


def test_zero_gpu_wraps_every_sampling_handler_and_nothing_elsewhere(tmp_path, monkeypatch):
    """Issue 18 / hosting: on ZeroGPU (SPACES_ZERO_GPU set, ``spaces`` importable) each handler that samples runs
    under ``spaces.GPU`` and the models go to CUDA; without it the handlers are the plain methods (CPU path
    unchanged). A stand-in ``spaces`` module records what it wraps."""
    import sys
    import types

    import diffusion_app as app
    from diffusion_app import zerogpu
    wrapped = []

    def GPU(duration=60):
        def deco(fn):
            def call(*a, **k):
                return fn(*a, **k)
            call.__wrapped__, call.zero_gpu_duration = fn, duration
            wrapped.append(getattr(fn, "__name__", fn))
            return call
        return deco
    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=GPU))
    root = build_checkpoints(tmp_path / "ckpt")
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    monkeypatch.delenv("DIFFUSION_DEVICE", raising=False)
    assert not zerogpu.on_zero_gpu() and zerogpu.gpu_task(len) is len
    app.build_demo(str(root))
    assert wrapped == []
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert zerogpu.on_zero_gpu() and app.DiffusionApp(str(root)).models.device == "cuda"
    demo = app.build_demo(str(root))
    assert set(wrapped) == {"branch", "compare", "compare_guidance", "generate", "interpolate", "upscale", "lesson",
                            "live"}
    assert wrapped.count("generate") == 1          # one handler for the Generate button and the three examples
    gens = [fn.fn for fn in demo.fns.values() if getattr(fn.fn, "__wrapped__", None) is not None
            and fn.fn.__wrapped__.__name__ == "generate"]
    assert len(gens) == 4 and len({id(f) for f in gens}) == 1
    by_api = {fn.api_name: fn.fn for fn in demo.fns.values() if getattr(fn, "api_name", None)}
    assert not hasattr(by_api["forward"], "zero_gpu_duration")
    # the GPU time reserved follows the work asked for (the duration=callable form): 10 s to load and move the
    # model plus the work at the assumed GPU rate, at most 120 s; 60 s for a request generate will refuse
    from diffusion_app.generate import sampling as gen_mod
    duration = by_api["generate"].zero_gpu_duration
    assert duration("tiny", "ddim", 3) == 60                    # not loaded yet: it loads inside the GPU call
    demo.app_state.models.device = "cpu"                        # (no CUDA here)
    demo.app_state.models.get("tiny")
    assert duration("tiny", "ddim", 3) == gen_mod.GPU_SETUP_S
    monkeypatch.setattr(gen_mod, "GPU_FLOPS_PER_S", 1e7)
    short, long = duration("tiny", "ddim", 10, batch_size=1), duration("tiny", "ddim", 100, batch_size=1)
    assert gen_mod.GPU_SETUP_S < short < long <= 120 and duration("tiny", "ddim", 1000, batch_size=16) == 120
    assert duration("no such model", "ddim", 3) == 60
    monkeypatch.setitem(sys.modules, "spaces", None)                 # not importable: CPU, nothing wrapped
    assert not zerogpu.on_zero_gpu() and zerogpu.gpu_task(len) is len


def test_a_backend_that_cannot_run_does_not_mark_the_model_broken(tmp_path, monkeypatch):
    """Asking for OpenVINO where it is not installed is an error about the backend, not the folder: the same
    model still loads on fp32 afterwards, and a loaded model keeps its backend after a failed switch."""
    import gradio as gr

    import diffusion_app as app
    from diffusion_core.runtime import backends
    monkeypatch.setattr(backends, "openvino_version", lambda: None)
    a = app.DiffusionApp(str(build_checkpoints(tmp_path / "ckpt")))
    with pytest.raises(gr.Error, match="not available"):
        list(a.generate("tiny", "ddim", 2, batch_size=1, backend="openvino"))
    assert a.models.get("tiny", "fp32").backend == "fp32"          # was: "tiny" listed as broken
    with pytest.raises(gr.Error, match="not available"):
        list(a.generate("tiny", "ddim", 2, batch_size=1, backend="openvino"))
    assert a.models.is_ready("tiny", "fp32") and a.models.get("tiny", "fp32").backend == "fp32"


CONTROL_NAMES = ["sampler", "eta", "guidance", "class_label", "attributes", "pose_group", "init_image", "init_acc",
                 "up_acc", "steps", "spacing", "seed", "batch_size", "stick_source", "stick_upload", "backend",
                 "example_0", "example_1", "example_2"]


def controls(updates) -> dict:
    """controls_for's tuple of updates by control name (the order of the page's outputs: outputs.Controls)."""
    assert len(updates) == len(CONTROL_NAMES)
    return dict(zip(CONTROL_NAMES, updates))


def test_one_click_examples_for_every_model_generate(tmp_path):
    """Issue 18: every model gets one-click examples (a class, an attribute set, a stickman, a low-res image, or
    seeds), shown on its buttons; each example's settings, applied to the controls, make a Generate run that
    finishes, with the example's class / attributes / bundled input, and a link naming them."""
    import diffusion_app as app
    from diffusion_app.outputs import Controls, components
    a = app.DiffusionApp(str(build_checkpoints(tmp_path / "ckpt")))
    # the page wires each update to the control of its name
    assert components(types.SimpleNamespace(**{n: n for n in CONTROL_NAMES}), Controls) == CONTROL_NAMES
    for model in a.models.names():
        shown = controls(a.on_model_change(model, "ddim"))
        titles = [u["value"] for k, u in shown.items() if k.startswith("example_") and u.get("visible")]
        assert titles and all(t.startswith("▶ ") for t in titles), (model, shown)
        for i in range(len(titles)):
            up = controls(a.apply_example(model, i)[1:])
            v = {k: u.get("value") for k, u in up.items() if isinstance(u, dict)}
            kind = a.models.get(model).base.config
            if kind.task == "super_resolution":
                assert Path(v["init_image"]).parent.name == "lowres", v
            if kind.task == "pose":
                assert v["stick_source"] == "upload" and Path(v["stick_upload"]).parent.name == "stickmen", v
            if kind.label_names:
                assert v["class_label" if not kind.multi_label else "attributes"] not in (None, "(any)", []), v
            out = list(a.generate(model, v["sampler"], 3, v["spacing"], v.get("eta") or 0.0, v["guidance"], v["seed"],
                                  2, 1, v["class_label"], v["attributes"], v.get("stick_source") or "sketch", None,
                                  v.get("stick_upload"), v.get("init_image")))
            status = out[-1][1]
            assert "Done" in status and "settings-link" in status, (model, i, status)
            if kind.task in ("pose", "super_resolution"):
                name = Path(v["stick_upload"] if kind.task == "pose" else v["init_image"]).name
                assert name in status and "without" not in status, status
    with pytest.raises(Exception, match="examples"):
        a.apply_example("tiny", 7)


@pytest.mark.parametrize("source, low_res, expect", [
    ("pose", 32, ["figure_01.png", "figure_02.png", "figure_03.png"]),
    ("pose", 64, ["figure_01_64.png", "figure_02_64.png", "figure_03_64.png"]),
    ("pose", 128, ["figure_01_128.png", "figure_02_128.png", "figure_03_128.png"]),
    ("emoji", 32, ["emoji_cat.png", "emoji_heart.png", "emoji_woman-dark.png"]),
    ("emoji", 64, ["emoji_cat_64.png", "emoji_heart_64.png", "emoji_woman-dark_64.png"]),
    ("emoji", 8, ["emoji_cat.png", "emoji_heart.png", "emoji_woman-dark.png"]),
    ("folder", 32, ["emoji_cat.png", "emoji_heart.png", "emoji_woman-dark.png", "figure_01.png", "figure_02.png",
                    "figure_03.png"]),
])
def test_super_resolution_examples_are_of_the_models_own_kind_and_size(tmp_path, source, low_res, expect):
    """Issue 35 item 4: pose-sr and pose-sr128 offered the emoji inputs though figures are bundled. A
    super-resolution model is offered the bundled inputs of the data it was trained on, at its own input size
    (a 64 px input for pose-sr128), else the smallest; a model of another data source is offered them all."""
    from diffusion_app.generate import presets
    (tmp_path / "train_config.json").write_text(json.dumps({"data": {"source": source}}))
    cfg = types.SimpleNamespace(low_res=low_res, task="super_resolution")
    pipe = types.SimpleNamespace(path=tmp_path, config=cfg, base=types.SimpleNamespace(path=tmp_path, config=cfg))
    assert [p.name for p in presets.lowres_examples(pipe)] == expect
    from PIL import Image
    for p in presets.lowres_examples(pipe):
        with Image.open(p) as img:
            assert min(img.size) == (low_res if low_res in (32, 64, 128) else 32)
    shown = [e["lowres"] for e in presets.examples_for(pipe, "m")]
    assert shown == expect[:presets.MAX_EXAMPLES]


def test_a_settings_link_round_trips_and_bad_values_are_dropped(tmp_path):
    """Issue 18: the link under a result reopens the app with its settings: presets.settings_link writes the run's
    settings, on_load reads them from the page's query and sets the model and every control; a link's bad values
    (out of bounds, unknown spacing, a path for a bundled file, a model the app lacks) are named and dropped."""
    import html as html_lib
    from urllib.parse import parse_qs, urlparse

    import diffusion_app as app
    from diffusion_app.generate import presets
    a = app.DiffusionApp(str(build_checkpoints(tmp_path / "ckpt")))
    out = list(a.generate("tiny-attr", "ddim", 4, "leading", 0.3, 3.5, 11, 2, 1, None, ["red", "round"]))
    href = html_lib.unescape(re.search(r'href="([^"]+)"', out[-1][1]).group(1))
    query = parse_qs(urlparse(href).query)

    class Request:                      # what Gradio hands a handler: the page's query parameters
        query_params = query
    model, *rest = a.on_load("tiny", "(any)", [], Request())
    v = {k: u.get("value") for k, u in controls(rest).items() if isinstance(u, dict)}
    assert model["value"] == "tiny-attr"
    assert (v["sampler"], v["steps"], v["spacing"], v["eta"], v["guidance"], v["seed"], v["batch_size"]) == \
        ("ddim", 4, "leading", 0.3, 3.5, 11, 2), v
    assert v["attributes"] == ["red", "round"]
    plain = a.on_load("tiny", "(any)", [], None)            # no link: the chosen model, its defaults
    assert plain[0] is not None and controls(plain[1:])["steps"]["value"] == a.models.get("tiny").config.sampling.steps
    bad = {"model": ["tiny"], "steps": ["5000"], "spacing": ["cubic"], "guidance": ["2"], "stickman": ["../app.py"],
           "seed": ["x"]}
    settings, dropped = presets.from_query(bad, a.models)
    assert settings == {"model": "tiny", "guidance": 2.0} and sorted(dropped) == ["seed", "spacing", "steps", "stickman"]
    assert presets.from_query({"model": ["../etc"], "steps": ["5"]}, a.models) == ({}, ["model"])
    assert presets.from_query({}, a.models) == ({}, [])


def test_branch_from_a_step(tmp_path):
    """Issue 18: from any kept step of the last run, continue with other settings and see the branches beside the
    original. A branch with the run's own settings (DDIM, the steps it had left, its guidance) is the run itself,
    bit for bit (same x_t, same grid tail, same seed); more guidance or another class gives another image; each
    branch adds a cell to the row; runs it cannot continue are refused with the reason."""
    import diffusion_app as app
    a = app.DiffusionApp(str(build_checkpoints(tmp_path / "ckpt")))
    assert a.models.get("tiny").config.diffusion.T % 10 == 0
    out = list(a.generate("tiny", "ddim", 10, "trailing", 0.0, 2.0, 5, 2, 1, "Coat"))
    key = out[-1][-1]
    recs = a.runs.get(key).steps
    row, note, kept = a.branch(5, "ddim", None, 2.0, False, branches=None, run=key)
    assert torch.equal(kept[-1]["image"], recs[-1].x_next[0].clamp(-1, 1)) and "step 5 of 10" in note
    row2, _, kept = a.branch(5, "ddim", None, 6.0, False, branches=kept, run=key)
    assert not torch.equal(kept[-1]["image"], kept[0]["image"]) and len(kept) == 2
    assert row2.width > row.width and row2.height == row.height
    _, _, kept = a.branch(5, "dpm++", 4, 2.0, True, "Bag", None, branches=kept, run=key)
    assert "Bag" in kept[-1]["caption"] and "DPM++ 4" in kept[-1]["caption"] and len(kept) == 3
    _, _, other = a.branch(3, "ddim", None, 2.0, False, branches=kept, run=key)
    assert len(other) == 1                                  # another step: a new row
    with pytest.raises(Exception, match=r"must be a whole number in \[1, 10\]"):
        a.branch(11, "ddim", None, 2.0, False, branches=None, run=key)
    cold = list(a.generate("tiny-cold", "cold", 4, "trailing", 0.0, 1.0, 1, 1, 1))
    with pytest.raises(Exception, match="cold-diffusion"):
        a.branch(2, "ddim", None, 1.0, False, branches=None, run=cold[-1][-1])


def test_upscale_keeps_the_whole_image_and_says_what_it_did(tmp_path, monkeypatch):
    """Issue 35 item 5: a non-square image was centre-cropped without a word (20x14 came out as 28 px). Upscale
    now keeps the whole image, its shape too (the "before" half is the input, pixel for pixel), scales down only an
    image longer than MAX_UPSCALE_INPUT and says so, and refuses an image too thin to upscale. Generate, which
    fits an input to the model's square size, says what it cropped and resized."""
    import numpy as np

    import diffusion_app as app
    from diffusion_app.generate import upscale
    # the bound made small (32 px, the app's is 128): the tiny SR model's attention at 256x170 px took 17 s a run
    MAX_UPSCALE_INPUT = 32
    monkeypatch.setattr(upscale, "MAX_UPSCALE_INPUT", MAX_UPSCALE_INPUT)
    a = app.DiffusionApp(str(build_checkpoints(tmp_path / "ckpt")))
    rng = np.random.default_rng(0)
    src = tmp_path / "in.png"
    Image.fromarray(rng.integers(0, 256, (14, 20), dtype=np.uint8)).save(src)     # 20 wide, 14 high
    (before, after), path, note = a.upscale("tiny", str(src), 2)
    assert Image.open(path).size == (40, 28), note
    assert note.startswith("20×14 px → 40×28 px with tiny-sr") and "scaled" not in note, note
    f = before.width // 20
    assert before.size == (20 * f, 14 * f)
    assert np.array_equal(np.asarray(before.convert("L"))[::f, ::f], np.asarray(Image.open(src))), "not the input"
    big = tmp_path / "big.png"
    Image.fromarray(rng.integers(0, 256, (50, 75), dtype=np.uint8)).save(big)
    _, path, note = a.upscale("tiny", str(big), 2)
    w, h = MAX_UPSCALE_INPUT, round(50 * MAX_UPSCALE_INPUT / 75)
    assert Image.open(path).size == (2 * w, 2 * h), note
    assert f"the 75×50 px input was scaled down to {w}×{h} px" in note, note
    thin = tmp_path / "thin.png"
    Image.fromarray(np.zeros((2, 40), dtype=np.uint8)).save(thin)
    with pytest.raises(Exception, match="too thin"):
        a.upscale("tiny", str(thin), 2)
    # Generate with a super-resolution model (its input is the model's square low_res) or img2img says it cropped
    low = a.models.get("tiny-sr").config.low_res
    for model, size in (("tiny-sr", low), ("tiny", a.models.get("tiny").config.unet.image_size)):
        status = list(a.generate(model, "ddim", 2, "trailing", 0.0, 1.0, 0, 1, 1, None, None, "sketch", None, None,
                                 str(src)))[-1][1]
        assert f"the 20×14 px input was centre-cropped to 14×14 and resized to {size} px" in status, status
    square = tmp_path / "square.png"
    Image.fromarray(rng.integers(0, 256, (low, low), dtype=np.uint8)).save(square)
    status = list(a.generate("tiny-sr", "ddim", 2, "trailing", 0.0, 1.0, 0, 1, 1, None, None, "sketch", None, None,
                             str(square)))[-1][1]
    assert "input was" not in status, status


def test_the_upscaler_offered_is_the_one_a_cascade_pairs_with_the_model(tmp_path):
    """The pose card offered emoji-sr (the first RGB super-resolution model by name) to upscale pose figures: a
    super-resolution model that a cascade runs after this model now comes first."""
    import shutil

    import diffusion_app as app
    root = build_checkpoints(tmp_path / "ckpt")
    shutil.copytree(root / "tiny-sr", root / "a-sr")         # same channels, first by name, paired with nothing
    a = app.DiffusionApp(str(root))
    assert a.upscaler_for("tiny", a.models.get("tiny"))[0] == "tiny-sr"
    assert a.upscaler_for("tiny-linear", a.models.get("tiny-linear"))[0] == "a-sr"   # no cascade: by name


def test_loaded_models_live_under_a_byte_budget_least_recently_used_first(tmp_path):
    """Issue 34: the catalogue keeps loaded pipelines up to a budget of weight bytes (every parameter and buffer,
    counted here independently), dropping the least recently used: loading every folder once held 4.8 GB."""
    from diffusion_app.models import Models, pipeline_bytes
    root = build_checkpoints(tmp_path / "ckpt")

    def weights(pipe):
        return sum(t.numel() * t.element_size() for st in pipe.stages for net in st.networks
                   for t in [*net.parameters(), *net.buffers()])
    probe = Models(root)
    sizes = {n: weights(probe.get(n)) for n in ("tiny", "tiny-linear", "tiny-attr")}
    assert all(pipeline_bytes(probe.get(n)) == sizes[n] for n in sizes)      # fp32: one copy each
    assert sizes["tiny-linear"] == sizes["tiny"] < sizes["tiny-attr"]
    m = Models(root, budget_bytes=sizes["tiny"] + sizes["tiny-attr"])
    a = m.get("tiny")
    m.get("tiny-linear")
    assert m.get("tiny") is a                   # a hit: now the most recently used
    m.get("tiny-attr")                          # over budget: tiny-linear (least recently used) goes, not tiny
    assert m.is_ready("tiny") and m.is_ready("tiny-attr") and not m.is_ready("tiny-linear")
    assert m.get("tiny-linear") is not None and not m.is_ready("tiny")      # loaded again; now tiny was the oldest
    small = Models(root, budget_bytes=1)        # below any model: the one just loaded is kept, alone
    small.get("tiny")
    small.get("tiny-attr")
    assert small.is_ready("tiny-attr") and not small.is_ready("tiny")


def test_a_model_folder_lists_its_own_examples_and_its_cascade_offers_them(tmp_path):
    """Issue 39 (item 3): a folder's examples.json (a list of settings) is what its buttons offer, in its order, for
    the model and for a cascade built on it; a file that is not a list is refused with its one line (every list was
    refused as "expected a JSON object", so no folder's own examples were ever offered)."""
    import json

    from diffusion_app.generate.presets import examples_for
    from diffusion_app.models import Models
    from diffusion_core import CheckpointError
    root = build_checkpoints(tmp_path / "ckpt")
    listed = [{"title": "a coat", "labels": ["Coat"], "seed": 7}, {"title": "bags", "labels": ["Bag"]}]
    (root / "tiny" / "examples.json").write_text(json.dumps(listed))
    m = Models(root)
    for name in ("tiny", "tiny-cascade"):
        got = examples_for(m.get(name), name)
        assert [(e["title"], e["labels"], e["seed"], e["model"]) for e in got] == \
            [("a coat", ["Coat"], 7, name), ("bags", ["Bag"], 0, name)], name
    (root / "tiny" / "examples.json").write_text(json.dumps({"title": "a coat"}))
    with pytest.raises(CheckpointError, match=r"examples.json: expected a JSON list$"):
        examples_for(m.get("tiny"), "tiny")


def test_every_loaded_model_remembers_rows_in_the_catalogues_one_memory(tmp_path, monkeypatch):
    """Issue 34: the catalogue gives every pipeline it loads (every stage of a cascade) its one RowMemory, sized by
    $DIFFUSION_ROW_MEMORY_MB, so a visitor's run made again is answered from it: here with no new network call."""
    import torch

    from diffusion_app.models import Models
    monkeypatch.setenv("DIFFUSION_ROW_MEMORY_MB", "2")
    m = Models(build_checkpoints(tmp_path / "ckpt"))
    assert m.rows.max_bytes == 2 << 20
    pipes = [m.get(n) for n in ("tiny", "tiny-attr", "tiny-cascade")]
    assert all(st.row_memory is m.rows for p in pipes for st in p.stages)
    tiny = pipes[0]
    first = tiny.sample(2, sampler="ddim", steps=3, seed=4)
    shared = tiny.stages[0].shared_net(tiny.net)
    ticks = shared.stats.ticks
    assert torch.equal(tiny.sample(2, sampler="ddim", steps=3, seed=4), first) and shared.stats.ticks == ticks
    assert Models(tmp_path / "ckpt", row_memory_bytes=0).get("tiny").sample(2, sampler="ddim", steps=3, seed=4).equal(first)


def test_a_links_values_its_model_does_not_have_are_all_named(tmp_path, monkeypatch):
    """Issue 35 (item 10): a link with a bad number, a sampler and a label the model does not have names all three
    in one warning (the sampler and label were dropped without a word)."""
    import gradio as gr

    import diffusion_app as app
    from diffusion_app.generate import cards
    said = []
    monkeypatch.setattr(cards.gr, "Warning", lambda msg, *a, **k: said.append(msg))
    a = app.DiffusionApp(str(build_checkpoints(tmp_path / "ckpt")))
    request = types.SimpleNamespace(query_params={"model": ["tiny"], "sampler": ["cold"], "label": ["Coat", "Unicorn"],
                                                  "steps": ["2.5"]})
    out = a.on_load("tiny", request=request)
    assert said == ["the link's steps, sampler, label 'Unicorn' are not valid here; the model's defaults are used "
                    "instead"], said
    assert out[0] == gr.update(value="tiny")


def test_every_visitor_of_generate_is_its_own_session(tmp_path):
    """Generate's handler (the waiting room's async wrapper) gets Gradio's request: each gradio_client session's
    run is kept under its own session key (every visitor was "api": one kept run and one Stop for all)."""
    demo, url = launch_app(build_checkpoints(tmp_path / "ckpt"))
    try:
        for seed in (1, 2):
            Client(url, verbose=False).submit(model="tiny", steps=2, batch_size=1, seed=seed,
                                              api_name="/generate").result()
        kept = {key: run.request.seed for key, (run, _) in demo.app_state.runs._runs.items()}
        assert "api" not in kept and sorted(kept.values()) == [1, 2], kept
    finally:
        demo.close()

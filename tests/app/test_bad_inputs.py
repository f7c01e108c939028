"""Table-driven bad inputs for every endpoint of the launched app.

Each row sends one bad request through gradio_client and expects a clear message (the substring given)
and never a traceback; after every row the app still serves a normal request. Odd-but-valid images
(palette, CMYK, 16-bit, alpha) are converted, not refused: see test_app.test_generate_pose_sr_and_img2img.
"""
from __future__ import annotations

import json
import re
import struct
import urllib.request
import zlib

import numpy as np
import pytest
from gradio_client import handle_file
from PIL import Image

from app_fixtures import client, server  # noqa: F401  (shared module fixtures)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "notes.png").write_bytes(b"this is not an image, whatever its name says\n")
    # a PNG whose header claims 0 x 0 pixels
    ihdr = struct.pack(">IIBBBBB", 0, 0, 8, 0, 0, 0, 0)
    (d / "zero.png").write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) +
                                 _png_chunk(b"IDAT", zlib.compress(b"")) + _png_chunk(b"IEND", b""))
    # 20000 x 20000 (400 megapixels) that compresses to a small upload: a decompression bomb
    Image.new("1", (20000, 20000), 1).save(d / "giant.png", optimize=True)
    Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)).save(d / "ok.png")
    # 25 megapixels: over the app's 16.7 MP limit but under Pillow's own refusal (twice its limit): refused from the
    # header, before decoding
    Image.new("1", (5000, 5000), 1).save(d / "mid.png", optimize=True)
    Image.new("RGBA", (64, 64), (255, 255, 255, 255)).save(d / "white.png")      # an empty sketch
    return d


G = "/generate"
W = "must be a whole number in"
N = "must be a number in"


def sketch(composite: str, layers=(), background=None) -> dict:
    """A sketch-pad value as an API client sends it (file names resolved by _resolve)."""
    return {"background": background or composite, "layers": list(layers), "composite": composite}


CASES = [
    # endpoint, kwargs, expected message (alternatives separated by |). Every numeric input is checked by
    # options.number, through the Slider / Number preprocessing or in the handler (Generate's: its Request, and the
    # app's own limits): "<name> must be a (whole) number in [lo, hi], got <value>", for out-of-range values and for
    # wrong types alike
    (G, dict(model="tiny", init_image="notes.png"), "Init image (optional, img2img): not a readable image"),
    (G, dict(model="tiny", init_image="zero.png"), "not a readable image"),
    (G, dict(model="tiny", init_image="giant.png"), "too large"),
    (G, dict(model="tiny", init_image="mid.png"), "too large: 5000x5000"),
    (G, dict(model="tiny", steps=0), f"Steps {W} [1, 1000], got 0"),
    (G, dict(model="tiny", steps=100000), f"Steps {W} [1, 1000]"),
    (G, dict(model="tiny", guidance=-1.0), f"Guidance scale {N} [0, 30]"),
    (G, dict(model="tiny", guidance=1e9), f"Guidance scale {N} [0, 30]"),
    (G, dict(model="tiny", batch_size=0), f"Batch size {W} [1, 16]"),
    (G, dict(model="tiny", batch_size=1000), f"Batch size {W} [1, 16]"),
    (G, dict(model="tiny", seed=2**40), f"Seed {W} [-1, "),
    (G, dict(model="tiny", sampler="ddim", eta=3.0), f"eta {N} [0, 1], got 3.0"),
    (G, dict(model="tiny", init_image="ok.png", strength=0.0), "strength must be in (0, 1] for img2img, got 0"),
    (G, dict(model="no-such-model"), "unknown model"),
    (G, dict(model="../../etc"), "unknown model"),
    (G, dict(model="tiny", class_label="Unicorn"), "unknown label"),
    (G, dict(model="tiny-attr", attributes=["striped"]), "unknown label"),
    (G, dict(model="tiny-cold", sampler="ddim"), "does not apply"),
    (G, dict(model="tiny-pose", stick_source="upload"), "stickman"),
    (G, dict(model="tiny-pose", stick_source="upload", stick_upload="notes.png"), "not a readable image"),
    (G, dict(model="tiny-sr"), "low-resolution"),
    ("/upscale", dict(model="tiny", image="notes.png"), "not a readable image"),
    ("/upscale", dict(model="tiny", image="giant.png"), "too large"),
    ("/upscale", dict(model="tiny", image="mid.png"), "too large: 5000x5000"),
    ("/upscale", dict(model="tiny", image="ok.png", sr_steps=0), f"SR steps {W} [1, 200]"),
    ("/upscale", dict(model="no-such-model", image="ok.png"), "unknown model"),
    ("/upscale", dict(model="tiny", image=None), "select an image"),
    ("/forward", dict(image="notes.png"), "not a readable image"),
    ("/forward", dict(image="zero.png"), "not a readable image"),
    ("/forward", dict(image="giant.png"), "too large"),
    ("/forward", dict(image="mid.png"), "too large: 5000x5000"),
    ("/forward", dict(t=5000), f"t {W} [0, 999]"),
    ("/model_card", dict(model="no-such-model"), "unknown model"),
    ("/compare", dict(model="tiny", step_counts=[0]), f"step counts {W} [1, 1000]"),
    ("/compare", dict(model="no-such-model"), "unknown model"),
    ("/compare_guidance", dict(model="tiny", class_label="Coat", guidance_scales=[99]), f"guidance scales {N} [0, 30]"),
    ("/interpolate", dict(model="tiny", frames=1000), f"Frames {W} [2, 16]"),
    ("/interpolate", dict(model="tiny-cold"), "cold model"),
    ("/explain_step", dict(step=99999), f"Step {W} [1, 1000]"),
    ("/trajectory", dict(frames=500), f"Strip frames {W} [2, 20]"),
    ("/trajectory", dict(what="eps"), "what must be|not in the list of choices|run generate first"),
    # the sketch pad (issue 24, item 6): background, every layer and the composite go through the app's one guarded
    # decoder with the same pixel limit as the uploads; a payload of the wrong shape is a message too
    (G, dict(model="tiny-pose", stick_sketch=sketch("giant.png")), "Stickman sketch: image too large"),
    (G, dict(model="tiny-pose", stick_sketch=sketch("mid.png")), "Stickman sketch: image too large: 5000x5000"),
    (G, dict(model="tiny-pose", stick_sketch=sketch("ok.png", layers=["giant.png"])), "Stickman sketch: image too large"),
    (G, dict(model="tiny-pose", stick_sketch=sketch("ok.png", background="mid.png")), "Stickman sketch: image too large"),
    (G, dict(model="tiny-pose", stick_sketch=sketch("notes.png")), "Stickman sketch: not a readable image"),
    (G, dict(model="tiny-pose", stick_sketch=sketch("ok.png", layers=["ok.png"] * 5)), "Stickman sketch: at most 4 layers"),
    (G, dict(model="tiny-pose", stick_sketch="hello"), "Stickman sketch: expected a dict"),
    (G, dict(model="tiny-pose", stick_sketch=5), "Stickman sketch: expected a dict"),
    (G, dict(model="tiny", init_image="hello"), "Init image (optional, img2img): expected an image file"),
    (G, dict(model="tiny-pose", stick_sketch=sketch("white.png")), "the sketch pad is empty"),
    # wrong types, as an API client can send them (issue 24, item 12): the option's name and range, never Gradio's
    # generic "upstream app raised an exception"
    (G, dict(model="tiny", steps="many"), f"Steps {W} [1, 1000], got 'many'"),
    (G, dict(model="tiny", steps=None), f"Steps {W} [1, 1000], got None"),
    (G, dict(model="tiny", steps=2.5), f"Steps {W} [1, 1000], got 2.5"),
    (G, dict(model="tiny", guidance="lots"), f"Guidance scale {N} [0, 30], got 'lots'"),
    (G, dict(model="tiny", batch_size=None), f"Batch size {W} [1, 16], got None"),
    (G, dict(model="tiny", seed="abc"), f"Seed {W} [-1, "),
    (G, dict(model="tiny", seed=[1]), f"Seed {W} [-1, "),
    (G, dict(model="tiny", sampler="ddim", eta=None), f"eta {N} [0, 1], got None"),
    (G, dict(model="tiny", init_image="ok.png", strength="half"), f"strength {N} [0, 1], got 'half'"),
    (G, dict(model="tiny", preview_every="x" * 1000), f"preview every {W} [0, 1000], got 'xxxx"),
    (G, dict(model="tiny-attr", attributes="woman"), "unknown label 'woman'"),
    (G, dict(model="tiny", sampler="euler"), "Sampler: Value: euler is not in the list of choices"),
    (G, dict(model="tiny", spacing=3), "Timestep spacing: Value: 3 (type: <class 'int'>) is not in the list of choices"),
    ("/compare", dict(model="tiny", step_counts=["ten"]), f"step counts {W} [1, 1000], got 'ten'"),
    ("/compare", dict(model="tiny", step_counts="ten"), f"step counts {W} [1, 1000], got 'ten'"),
    ("/compare", dict(model="tiny", samplers="dpm"), "Samplers (rows): Value: 'dpm'"),
    ("/compare", dict(model="tiny", seed=None, step_counts=[5], samplers=None), "choose at least one sampler"),
    ("/compare_guidance", dict(model="tiny", class_label="Coat", guidance_scales=["x"]), f"guidance scales {N} [0, 30]"),
    ("/compare_guidance", dict(model="tiny", class_label="Coat", steps="x"), f"Steps {W} [1, 200], got 'x'"),
    ("/upscale", dict(model="tiny", image="ok.png", sr_steps="x"), f"SR steps {W} [1, 200], got 'x'"),
    ("/forward", dict(t="x"), f"t {W} [0, 999], got 'x'"),
    ("/trajectory", dict(frames=None), f"Strip frames {W} [2, 20], got None"),
    ("/explain_step", dict(step="x"), f"Step {W} [1, 1000], got 'x'"),
    ("/interpolate", dict(model="tiny", seed_a="x"), f"Seed a {W} [0, "),
    ("/interpolate", dict(model="tiny", steps=None), f"Steps {W} [1, 200], got None"),
]


def _resolve(v, d):
    """File names (*.png) in a request, at any depth, as uploads."""
    if isinstance(v, str) and v.endswith(".png"):
        return handle_file(str(d / v))
    if isinstance(v, dict):
        return {k: _resolve(x, d) for k, x in v.items()}
    if isinstance(v, list):
        return [_resolve(x, d) for x in v]
    return v


@pytest.mark.parametrize("endpoint,kw,message", CASES, ids=[f"{e}-{'-'.join(f'{k}={v}' for k, v in kw.items())}"[:60]
                                                            for e, kw, _ in CASES])
def test_bad_input_gives_a_message_and_the_app_keeps_serving(client, bad_files, capfd, endpoint, kw, message):  # noqa: F811
    kw = _resolve(kw, bad_files)
    if endpoint == G:
        kw.setdefault("steps", 2)
        kw.setdefault("batch_size", 1)
    capfd.readouterr()
    with pytest.raises(Exception) as err:
        job = client.submit(api_name=endpoint, **kw)
        job.result()
    text = str(err.value)
    assert any(m.lower() in text.lower() for m in message.split("|")), text
    assert "Traceback" not in text and 'File "' not in text, text
    assert "upstream" not in text, text
    assert "Traceback" not in capfd.readouterr().err      # a user's mistake is not a server error either
    job = client.submit(model="tiny", steps=1, batch_size=1, seed=3, api_name=G)
    job.result()
    assert isinstance(job.outputs()[-1][2], list) and len(job.outputs()[-1][2]) == 1


def _raw_call(url: str, client, endpoint: str, **kw) -> str:
    """Call ``endpoint`` over plain HTTP with a JSON body that may hold NaN / Infinity (which gradio_client refuses
    to send; any other HTTP client can), other inputs at their defaults; the event stream's text."""
    params = client.view_api(print_info=False, return_format="dict")["named_endpoints"][endpoint]["parameters"]
    data = [kw.get(p["parameter_name"], p.get("parameter_default")) for p in params]
    req = urllib.request.Request(f"{url}gradio_api/call{endpoint}", data=json.dumps({"data": data}).encode(),
                                 headers={"Content-Type": "application/json"})
    event = json.loads(urllib.request.urlopen(req, timeout=30).read())["event_id"]
    return urllib.request.urlopen(f"{url}gradio_api/call{endpoint}/{event}", timeout=60).read().decode()


@pytest.mark.parametrize("endpoint,kw,message", [
    (G, dict(model="tiny", steps=2, batch_size=1, seed=float("nan")), f"seed {W} [-1, "),
    (G, dict(model="tiny", steps=float("inf"), batch_size=1), f"steps {W} [1, 1000], got inf"),
    (G, dict(model="tiny", steps=2, batch_size=1, guidance=float("nan")), f"guidance scale {N} [0, 30], got nan"),
    ("/compare", dict(model="tiny", step_counts=[float("inf")]), f"step counts {W} [1, 1000], got inf"),
    ("/compare", dict(model="tiny", seed=float("nan")), f"Seed {W} [-1, "),
    ("/interpolate", dict(model="tiny", seed_a=float("nan")), f"Seed a {W} [0, "),
])
def test_nan_and_inf_over_raw_http_give_a_message(client, server, endpoint, kw, message):  # noqa: F811
    """Raw NaN seeds returned {"error": null}, and compare [inf] an OverflowError (issue 24, item 12)."""
    text = _raw_call(server[0], client, endpoint, **kw)
    assert "event: error" in text and message in text, text
    assert '"error": null' not in text, text


def test_one_value_for_a_list_input_is_that_value(client):  # noqa: F811
    """attributes="red" is the attribute red, not the letters r, e, d; step_counts=5 is [5]."""
    job = client.submit(model="tiny-attr", attributes="red", steps=1, batch_size=1, seed=1, api_name=G)
    job.result()
    assert len(job.outputs()[-1][2]) == 1
    img, note = client.predict(model="tiny", samplers="ddim", step_counts=5, api_name="/compare")
    assert "1 x 1 grid" in note


def test_number_checks_type_range_and_finiteness():
    """The app's one check of a numeric input: a message naming it and its range for None, text, NaN, inf,
    booleans, fractions where a whole number is needed, and out-of-range values; numeric text is accepted."""
    import diffusion_app as app
    from diffusion_app import inputs
    for value in (None, "many", float("nan"), float("inf"), True, 1.5, 0, 1001):
        with pytest.raises(ValueError, match=r"steps must be a whole number in \[1, 1000\], got"):
            inputs.number(value, "steps", 1, 1000, whole=True)
    assert inputs.number("25", "steps", 1, 1000, whole=True) == 25.0
    assert inputs.number(2.5, "guidance scale", 0, 20) == 2.5
    with pytest.raises(ValueError, match="seed must be a whole number"):
        app.DiffusionApp._seed(float("nan"))


def test_generate_leaves_a_runs_numbers_to_the_request(tmp_path):
    """Issue 35: Generate checks none of the run's numbers itself; the Request does, once, before any model loads
    (its message, not Gradio's generic error). Only the app's own limits stay in the app: a batch above the
    page's 16, -1 for a random seed, and how often to preview."""
    import gradio as gr
    import diffusion_app as app
    from app_fixtures import build_checkpoints
    a = app.DiffusionApp(str(build_checkpoints(tmp_path / "ckpt")))
    for kw, msg in ((dict(steps=2.5), r"^steps must be a whole number in \[1, 1000\], got 2.5$"),
                    (dict(steps="many"), r"^steps must be a whole number in \[1, 1000\], got 'many'$"),
                    (dict(guidance="lots"), r"^guidance scale must be a number in \[0, 30\], got 'lots'$"),
                    (dict(eta=3.0), r"^eta must be a number in \[0, 1\], got 3.0$"),
                    (dict(batch_size=0), r"^batch size must be a whole number in \[1, 16\], got 0$"),
                    (dict(batch_size=17), r"^batch size must be a whole number in \[1, 16\], got 17$")):
        with pytest.raises(gr.Error) as e:
            next(a.generate("tiny", **kw))
        assert re.match(msg, e.value.message), e.value.message
        assert not a.models.loaded(), kw        # refused before the model loaded
    outs = list(a.generate("tiny", sampler="ddim", steps="3", guidance="1.5", seed="7", batch_size=2.0))
    assert "seed 7" in outs[-1].status and "3 steps" in outs[-1].status


def test_pixel_limit_is_checked_before_decoding(bad_files, monkeypatch):
    """A 25 MP image (over the app's 16.7 MP, under Pillow's own 2x refusal) is refused from its header: Pillow
    would otherwise decode all of it first (issue 24: a sketch or upload under Pillow's limit cost gigabytes)."""
    from PIL import ImageFile

    from diffusion_core import ImageError, open_image

    def no_decoding(self):
        raise AssertionError("decoded before the size check")
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    for name in ("mid.png", "giant.png"):
        with pytest.raises(ImageError, match="too large"):
            open_image(bad_files / name)


def _write_broken_folders(ckpt) -> dict[str, str]:
    """Hostile folders beside the good ones: folder name -> the reason the app must give for it."""
    import shutil
    made = {}
    (ckpt / "zz-bad-json").mkdir()
    (ckpt / "zz-bad-json" / "config.json").write_text("{not json")
    made["zz-bad-json"] = "zz-bad-json/config.json: not valid JSON"
    (ckpt / "zz-deep").mkdir()
    (ckpt / "zz-deep" / "config.json").write_text("[" * 5000 + "]" * 5000)
    made["zz-deep"] = "zz-deep/config.json: JSON nested too deeply"
    shutil.copytree(ckpt / "tiny", ckpt / "zz-bad-weights")
    (ckpt / "zz-bad-weights" / "model.safetensors").write_bytes(b"\x00" * 64)
    made["zz-bad-weights"] = "zz-bad-weights/model.safetensors: unreadable or truncated"
    # an SR model that sorts before tiny-sr: choosing an upscaler for tiny must skip it, not fail tiny's card
    shutil.copytree(ckpt / "tiny-sr", ckpt / "a-broken-sr")
    (ckpt / "a-broken-sr" / "model.safetensors").write_bytes(b"garbage")
    made["a-broken-sr"] = "a-broken-sr/model.safetensors: unreadable or truncated"
    # a config whose sections are not objects (the upscaler search read config["unet"].get(...))
    (ckpt / "zz-odd-sections").mkdir()
    (ckpt / "zz-odd-sections" / "config.json").write_text(json.dumps(
        {"kind": "model", "task": "super_resolution", "unet": [], "diffusion": "cosine"}))
    made["zz-odd-sections"] = "zz-odd-sections/config.json"
    return made


def test_broken_folders_are_listed_with_their_reason_and_never_affect_the_others(client, server):  # noqa: F811
    import shutil

    import diffusion_app as app
    from diffusion_app import settings
    url, ckpt = server
    broken = _write_broken_folders(ckpt)
    try:
        for name, why in broken.items():            # each one: its one-line reason, from the live app
            with pytest.raises(Exception, match=re.escape(why)):
                client.predict(model=name, api_name="/model_card")
        md, _ = client.predict(model="tiny", api_name="/model_card")        # and the others still work
        assert "tiny class-conditional" in md and "upscaler**: tiny-sr" in md
        # a model no cascade pairs with an upscaler tries them by name: a-broken-sr first, skipped, then tiny-sr
        md, _ = client.predict(model="tiny-linear", api_name="/model_card")
        assert "upscaler**: tiny-sr" in md
        job = client.submit(model="tiny", steps=1, batch_size=1, seed=3, api_name=G)
        job.result()
        assert len(job.outputs()[-1][2]) == 1
        pair, _, note = client.predict("tiny", handle_file(str(ckpt / "tiny" / "samples.png")), 1, api_name="/upscale")
        assert "tiny-sr" in note
        # the model list marks them: config-level problems from the scan, load failures once tried
        state = app.DiffusionApp(str(ckpt))
        for name in broken:
            try:
                state.models.get(name)
            except settings.USER_ERRORS:
                pass
        labels = {value: label for label, value in state.models.choices()}
        for name, why in broken.items():
            assert labels[name].startswith(f"{name} (broken: {why}"), labels[name]
        assert labels["tiny"] == "tiny" and labels["tiny-cascade"] == "tiny-cascade"
        assert state.models.default() not in broken
        md, img = state.card_update("zz-bad-json")
        assert "zz-bad-json (broken)" in md and "not valid JSON" in md
    finally:
        for name in broken:
            shutil.rmtree(ckpt / name)


def test_model_cards_and_the_folder_scan_are_cached(client, server, monkeypatch):  # noqa: F811
    """Requests do not re-read config.json, training.json or metrics.json (each request parsed every config.json,
    and a 100 MB description took 199 s a card); a changed file is read again."""
    import os
    import time

    import diffusion_app as app
    from diffusion_app import models
    reads = []

    def counting(fn):
        def wrapper(path, *a, **kw):
            reads.append(str(path))
            return fn(path, *a, **kw)
        return wrapper
    monkeypatch.setattr(models, "read_json", counting(models.read_json))
    monkeypatch.setattr(app.DiffusionApp, "_read_json", staticmethod(counting(app.DiffusionApp._read_json)))
    ckpt = server[1]
    client.predict(model="tiny", api_name="/model_card")
    client.predict(model="tiny-cascade", api_name="/model_card")
    before = len(reads)
    for _ in range(3):
        md, _ = client.predict(model="tiny", api_name="/model_card")
        client.predict(model="tiny-cascade", api_name="/model_card")
        client.submit(model="tiny", steps=1, batch_size=1, seed=3, api_name=G).result()
    assert reads[before:] == []
    assert "123.4" in md
    metrics = ckpt / "tiny" / "metrics.json"
    original = metrics.read_text()
    try:
        metrics.write_text(json.dumps({"fid": 99.5, "loss": {"val": 0.05}}))
        t = time.time_ns() + 2_000_000_000
        os.utime(metrics, ns=(t, t))           # a new time even where the clock is coarse
        md, _ = client.predict(model="tiny", api_name="/model_card")
        assert "99.5" in md and any(r.endswith("metrics.json") for r in reads[before:])
    finally:            # the session's checkpoints (conftest.app_server): the file as it was, with a newer time
        metrics.write_text(original)
        t = time.time_ns() + 4_000_000_000
        os.utime(metrics, ns=(t, t))


def test_compare_counts_a_cascades_super_resolution_steps(client):  # noqa: F811
    """398 base steps + 3 of tiny-cascade's SR stage = 401 > 400, the comparison's work limit (it counted 398 and
    ran it; a cascade's comparison took 79 s)."""
    with pytest.raises(Exception, match="401 sampling steps in all"):
        client.predict(model="tiny-cascade", samplers=["ddim"], step_counts=[398], api_name="/compare")
    img, note = client.predict(model="tiny-cascade", samplers=["ddim"], step_counts=[2], api_name="/compare")
    assert "5 steps in" in note         # 2 base + 3 super-resolution

"""The browser build (issue 41): the page's JavaScript samplers held to this package step by step (fixtures written
by the package when the test runs, so they cannot drift), the export's refusals, and the page itself in Chromium at
desktop and phone sizes: a class, an attribute pick and a drawn stickman each make images, the preview streams, and
the page works with the network off after the first load."""
from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from diffusion_core.checkpoint import CheckpointError
from diffusion_core.images import load_image
from diffusion_core.webexport import export_web, web_fixture

ROOT = Path(__file__).resolve().parents[2]
NODE = shutil.which("node")
ORT_WEB = ROOT / "web" / "node_modules" / "onnxruntime-web"
needs_node = pytest.mark.skipif(NODE is None or not (ROOT / "web" / "node_modules" / "onnxruntime-node").is_dir(),
                                reason="needs node and `npm ci --prefix web --ignore-scripts` (.ci/run does both)")
PAGE_MODELS = ("fashion", "fashion-4step", "emoji", "pose", "emoji-sr", "pose-sr")
# the site also serves the 1-step student: the WebGPU test runs it (without it the page fell back to fashion's
# 10 steps, which SwiftShader did not finish in 120 s)
SITE_MODELS = PAGE_MODELS + ("fashion-1step",)
DRAWING = "drawing"

# (model, sampler, steps, guidance, labels or DRAWING): every sampler the page offers, guided and not, each kind of
# condition (class, attribute picks with held guidance, a drawing), eps and v predictions, with and without x0 clipping
CASES = [
    ("fashion", "dpm++", 10, 2.0, ["Dress"]),
    ("fashion", "ddim", 6, 2.0, ["Sneaker"]),
    ("fashion", "ddpm", 6, 2.0, ["Bag"]),
    ("fashion", "dpm++", 5, 1.0, []),
    ("fashion-4step", "progressive", 4, 2.5, ["Coat"]),
    ("emoji", "ddpm", 6, 3.0, ["woman", "dark skin tone"]),
    ("emoji", "dpm++", 6, 3.0, ["cat"]),
    ("pose", "ddpm", 6, 2.0, DRAWING),
    ("pose", "ddim", 5, 2.0, DRAWING),
]
INT8_CASES = [("fashion", "dpm++", 6, 2.0, ["Dress"]), ("emoji", "ddpm", 5, 3.0, ["cat"]), ("pose", "ddpm", 5, 2.0, DRAWING)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("web-models")
    for name in PAGE_MODELS:
        export_web(ROOT / "checkpoints" / name, out)
    return out


@pytest.fixture(scope="module")
def exported_int8(site_dir):
    """The site's own exports: web/build.py exports every model int8 (fashion, emoji and pose among them)."""
    return site_dir / "models"


def _parity(tmp_path, models: Path, model, sampler, steps, guidance, labels, weights="fp16", low_res=None) -> dict:
    drawing = load_image(ROOT / "examples" / "stickmen" / "pose_01.png", 32, 1) if labels == DRAWING else None
    fx = web_fixture(ROOT / "checkpoints" / model, sampler, steps, guidance, seed=3, n=2,
                     labels=[] if labels == DRAWING else labels, cond_image=drawing, weights=weights, low_res=low_res)
    path = tmp_path / "fixture.json"
    path.write_text(json.dumps(fx))
    r = subprocess.run([NODE, str(ROOT / "web" / "test" / "parity.mjs"), str(path), str(models / model)],
                       capture_output=True, text=True, timeout=300)
    assert r.stdout.strip(), r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["same_grid"], (res["grid"], [s["t"] for s in fx["steps_run"]])
    assert res["steps"] == len(fx["steps_run"]) == len(res["grid"]) - 1
    assert res["replay_worst"] <= 1e-4, res["replay"]
    assert res["network_first_call"] <= 1e-4
    assert r.returncode == 0
    return res


@pytest.mark.slow
@needs_node
@pytest.mark.parametrize("model,sampler,steps,guidance,labels", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}-g{c[3]}" for c in CASES])
def test_page_samplers_match_the_package_step_by_step(exported, tmp_path, model, sampler, steps, guidance, labels):
    """web/src/diffusion.js on the package's x_T and noise, fed the package's network outputs: every step's x_t within
    1e-4 of the package's (fp32), on the same timestep grid; the exported ONNX network gives the package's output
    within 1e-4 on the first call (web/test/parity.mjs)."""
    _parity(tmp_path, exported, model, sampler, steps, guidance, labels)


SR_CASES = [("emoji-sr", "ddpm", 10, ("emoji_cat.png", "emoji_heart.png")), ("pose-sr", "dpm++", 6, ("figure_01.png", "figure_02.png"))]


@pytest.mark.slow
@needs_node
@pytest.mark.parametrize("model,sampler,steps,inputs", SR_CASES, ids=[c[0] for c in SR_CASES])
def test_page_upscales_as_the_package_does(exported, tmp_path, model, sampler, steps, inputs):
    """Super-resolution on the page (web/src/diffusion.js srStream): the bicubic condition, the run and the final
    back-projection onto the 32 px inputs (bicubic then exact block rounds) match the package's every step."""
    import torch
    low = torch.stack([load_image(ROOT / "examples" / "lowres" / f, 32, 3) for f in inputs])
    res = _parity(tmp_path, exported, model, sampler, steps, 1.0, [], low_res=low)
    assert res["grid"][-1] == -1


@pytest.mark.slow
@needs_node
@pytest.mark.parametrize("model,sampler,steps,guidance,labels", INT8_CASES, ids=[c[0] for c in INT8_CASES])
def test_int8_export_computes_what_evaluate_weights_int8_measures(exported_int8, tmp_path, model, sampler, steps,
                                                                   guidance, labels):
    """The int8 file (half the download) is the network ``use_int8_weights`` makes, whose cost ``evaluate --weights
    int8`` measures: the package with those weights, step by step, and the exported network within 1e-4."""
    _parity(tmp_path, exported_int8, model, sampler, steps, guidance, labels, weights="int8")
    assert json.loads((exported_int8 / model / "model.json").read_text())["weights"] == "int8"
    assert (exported_int8 / model / "net.onnx").stat().st_size < 0.6 * 5_000_000


def test_int8_weights_are_per_channel_symmetric_int8():
    """Closed form: a weight made of int8 levels times a per-channel step comes back exactly, every channel's largest
    value maps to +-127, and a random weight comes back within half a step."""
    import torch
    from diffusion_core.webexport import int8_weights, use_int8_weights
    net = torch.nn.Conv2d(8, 16, 3)
    steps = torch.rand(16) * 0.01 + 1e-3
    levels = torch.randint(-127, 128, (16, 8, 3, 3)).float()
    levels[:, 0, 0, 0] = 127                                     # each channel reaches the top level
    with torch.no_grad():
        net.weight.copy_(levels * steps.view(-1, 1, 1, 1))
    (name, (q, scale)), = int8_weights(net).items()
    assert name == "weight" and q.dtype == torch.int8
    assert torch.equal(q.float(), levels) and torch.allclose(scale, steps, rtol=1e-6)
    rand = torch.nn.Linear(64, 32)
    before = rand.weight.detach().clone()
    table = use_int8_weights(rand)
    step = before.abs().amax(dim=1, keepdim=True) / 127
    assert ((rand.weight - before).abs() <= step / 2 + 1e-7).all()
    assert (table["weight"][0].abs().amax(dim=1) == 127).all()
    assert "bias" not in table                                   # 1-D tensors stay as they are


def test_page_grid_is_the_package_s_trailing_grid_for_every_step_count():
    """Every K in 1..T at T = 1000 and T = 50 (where ties land on .5): the page's grid equals spaced_timesteps'."""
    from diffusion_core.schedules import spaced_timesteps
    script = ("import('" + (ROOT / "web" / "src" / "diffusion.js").as_uri() + "').then((d) => console.log(JSON.stringify("
              "[1000, 50].map((T) => Array.from({length: T}, (_, k) => d.trailingTimesteps(T, k + 1))))))")
    r = subprocess.run([NODE, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=120)
    page = json.loads(r.stdout)
    for T, grids in zip([1000, 50], page):
        for k, grid in enumerate(grids, start=1):
            assert grid == spaced_timesteps(T, k, "trailing").tolist(), (T, k)


def test_export_web_refuses_what_the_page_cannot_sample(tmp_path):
    with pytest.raises(CheckpointError, match="this one is cold"):
        export_web(ROOT / "checkpoints" / "fashion-cold", tmp_path)
    with pytest.raises(CheckpointError, match="not an ensemble or a cascade"):
        export_web(ROOT / "checkpoints" / "emoji-cascade", tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_model_json_carries_the_package_s_schedule_and_defaults(exported):
    from diffusion_core import load
    for name in PAGE_MODELS:
        m = json.loads((exported / name / "model.json").read_text())
        pipe = load(ROOT / "checkpoints" / name, backend="fp32", measure=False)
        assert m["alpha_bar"] == [float(v) for v in pipe.stages[0].schedule.alpha_bar]
        assert m["prediction"] == pipe.config.diffusion.prediction
        assert m["defaults"]["sampler"] in m["samplers"]
        assert m["inputs"][:2] == ["x", "t"]
    student = json.loads((exported / "fashion-4step" / "model.json").read_text())
    assert student["samplers"] == ["progressive"] and "guidance" in student["inputs"]


# ---- the page in Chromium ----

@pytest.fixture(scope="module")
def site_dir(tmp_path_factory):
    """The static site as ``web/build.py`` builds it (int8 exports of SITE_MODELS)."""
    if not (ORT_WEB / "dist").is_dir():
        pytest.skip("needs `npm ci --prefix web --ignore-scripts` (.ci/run does it)")
    spec = importlib.util.spec_from_file_location("web_build", ROOT / "web" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    out = tmp_path_factory.mktemp("site")
    build.build(out, [ROOT / "checkpoints" / m for m in SITE_MODELS])
    return out


@pytest.fixture(scope="module")
def site(site_dir):
    handler = functools.partial(_QuietHandler, directory=str(site_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def playwright():
    """One Playwright for the module (a second sync_playwright() inside the first one's loop is refused)."""
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("needs Debian's chromium")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright):
    b = playwright.chromium.launch(executable_path="/usr/bin/chromium")
    yield b
    b.close()


def wait_ready(page, timeout=120_000):
    """Wait until the page's Generate is usable; on a timeout, say where the page stood (CI once waited 2 minutes
    with nothing more to go on)."""
    try:
        page.wait_for_selector("#generate:not([disabled])", timeout=timeout)
    except Exception as e:
        where = page.evaluate("() => ['status', 'loading-text'].map((id) => document.getElementById(id)?.textContent)")
        raise AssertionError(f"the page never became ready: {where}") from e


COUNT_STEPS = """() => { window.__steps = new Set();
  new MutationObserver(() => window.__steps.add(document.getElementById('stepinfo').textContent))
    .observe(document.getElementById('stepinfo'), {childList: true, characterData: true, subtree: true}); }"""
SPREAD = """(id) => { const c = document.getElementById(id), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let lo = 255, hi = 0; for (let i = 0; i < d.length; i += 4) { lo = Math.min(lo, d[i], d[i+1], d[i+2]); hi = Math.max(hi, d[i], d[i+1], d[i+2]); }
  return [c.width, c.height, hi - lo]; }"""


def _run(page, steps_expected):
    page.evaluate("delete document.body.dataset.finishedMs")
    page.evaluate(COUNT_STEPS)
    page.click("#generate")
    page.wait_for_function("document.body.dataset.finishedMs", timeout=120_000)
    status = page.inner_text("#status")
    assert status.startswith("Done"), status
    assert len(page.evaluate("[...window.__steps]")) >= steps_expected      # a preview after every step
    w, h, spread = page.evaluate(SPREAD, "x0")
    assert w > 0 and h > 0 and spread > 60                                  # images, not a flat canvas
    return status


def _in_view(page, selector):
    box = page.locator(selector).bounding_box()
    vw, vh = page.viewport_size["width"], page.viewport_size["height"]
    return box is not None and box["x"] >= 0 and box["x"] + box["width"] <= vw and box["width"] > 0, box, (vw, vh)


@pytest.mark.slow
@pytest.mark.parametrize("size", [(1280, 900), (390, 844)], ids=["desktop", "phone"])
def test_page_makes_images_from_a_class_a_pick_and_a_drawing_and_works_offline(site, browser, size):
    ctx = browser.new_context(viewport={"width": size[0], "height": size[1]})
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(site + "#model=fashion&picks=Trouser&steps=6&n=2&seed=1")
    wait_ready(page)
    assert page.locator("#loading").is_hidden()                 # the first load's progress bar is gone once ready
    assert page.input_value("#class") == "1"                    # the link's class
    status = _run(page, 6)
    assert "2 images" in status and "6 of 6 steps" in status
    # the service worker makes the page cross-origin isolated (a first visit reloads once), so WebAssembly gets threads
    assert page.evaluate("self.crossOriginIsolated")
    threads = min(4, page.evaluate("navigator.hardwareConcurrency"))
    assert f"WebAssembly ({threads} thread" in status, status
    # nothing wider than the screen, and the controls and pictures do not overlap on the desktop
    assert page.evaluate("document.scrollingElement.scrollWidth") <= size[0]
    ok, box, _ = _in_view(page, "#xt")
    assert ok, box
    if size[0] >= 1000:
        controls, results = page.locator("#controls").bounding_box(), page.locator("#results").bounding_box()
        assert controls["x"] + controls["width"] <= results["x"]
    # the forward process on the result: more noise at a larger t (x_t = sqrt(ab) x0 + sqrt(1 - ab) eps)
    page.click("#forward summary")
    spreads = []
    for t in ("0", "999"):
        page.evaluate("(v) => { const g = document.getElementById('fwd-slider'); g.value = v;"
                      " g.dispatchEvent(new Event('input')); }", t)
        spreads.append(page.evaluate("""() => { const c = document.getElementById('fwd'),
            d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let s = 0;
            for (let i = 4; i < d.length; i += 4) s += Math.abs(d[i] - d[i - 4]); return s / (d.length / 4); }"""))
    assert spreads[1] > 2 * spreads[0] > 0, spreads             # neighbouring pixels decorrelate with noise

    page.select_option("#model", "emoji")
    page.wait_for_function("document.getElementById('picks').children.length === 52", timeout=120_000)
    page.wait_for_selector("#generate:not([disabled])")
    page.fill("#steps", "4")
    page.locator("#picks label", has_text="woman").first.locator("input").check()
    _run(page, 4)
    assert "woman" in page.get_attribute("#link", "href")

    if size[0] < 1000:      # the upscale and the offline reload do not depend on the screen: the desktop run has them
        page.select_option("#model", "pose")
        _draw_and_run(page)
        assert not errors, errors
        ctx.close()
        return
    page.click("#upscale")                                      # the emoji result through emoji-sr: 64 px
    page.wait_for_function("document.body.dataset.upscaledMs", timeout=120_000)
    assert page.inner_text("#status").startswith("Upscaled") and page.evaluate(SPREAD, "x0")[1] == 64

    page.select_option("#model", "pose")
    _draw_and_run(page)

    # offline after the first load: the service worker and the page's cache answer
    page.wait_for_function("navigator.serviceWorker.controller !== null || navigator.serviceWorker.ready", timeout=30_000)
    page.goto(site + "#model=fashion&picks=Bag&steps=3&n=1")
    wait_ready(page)
    ctx.set_offline(True)
    page.reload()
    wait_ready(page)
    _run(page, 3)
    assert not errors, errors
    ctx.close()


def _draw_and_run(page):
    """The pose model (picked): a stickman drawn on the canvas, then a 4-step run."""
    page.wait_for_selector("#draw-box:not([hidden])", timeout=120_000)
    page.wait_for_selector("#generate:not([disabled])")
    page.click("#clear")
    page.fill("#steps", "4")
    box = page.locator("#draw").bounding_box()
    cx, top = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.2
    for a, b in [((0, 0), (0, 0.45)), ((0, 0.45), (-0.2, 0.75)), ((0, 0.45), (0.2, 0.75)), ((-0.25, 0.25), (0.25, 0.25))]:
        page.mouse.move(cx + a[0] * box["width"], top + a[1] * box["height"])
        page.mouse.down()
        page.mouse.move(cx + b[0] * box["width"], top + b[1] * box["height"], steps=8)
        page.mouse.up()
    assert page.evaluate(SPREAD, "draw")[2] > 100               # the strokes are on the canvas
    _run(page, 4)


def test_fp16_storage_only_where_fp16_holds_the_weight_exactly():
    """The exported file stores a weight in fp16 (cast back in the graph) only when no value changes."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper
    from diffusion_core.webexport import fp16_initializers
    exact = np.arange(32, dtype=np.float32) / 8                  # multiples of 1/8: fp16 holds them
    inexact = exact + np.float32(1e-4)                           # fp16 would round these
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["out"])], "g", [],
                              [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [32])],
                              [numpy_helper.from_array(exact, "a"), numpy_helper.from_array(inexact, "b")])
    model = helper.make_model(graph)
    assert fp16_initializers(model) == 1
    stored = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert stored["a_fp16"].dtype == np.float16 and np.array_equal(stored["a_fp16"].astype(np.float32), exact)
    assert stored["b"].dtype == np.float32 and np.array_equal(stored["b"], inexact)
    cast = [n for n in model.graph.node if n.op_type == "Cast"]
    assert [(n.input[0], n.output[0]) for n in cast] == [("a_fp16", "a")]
    assert model.graph.node[0].op_type == "Cast"                 # before its first use
    onnx.checker.check_model(model)


def _runs(page) -> int:
    return int(page.evaluate("document.body.dataset.runs"))


@pytest.mark.slow
def test_live_mode_follows_a_dragged_slider_to_its_last_value(site, browser):
    """A student's Live mode: moving guidance and the seed-interpolation slider re-runs without Generate, and the
    images shown at the end are those of the slider's last position (no run is lost or left behind)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(site + "#model=fashion-4step&n=2&picks=Sneaker")
    wait_ready(page)
    assert page.locator("#live-box").is_visible() and page.locator("#steps").is_disabled()
    for v in ("1.5", "2.5", "3", "3.5"):                   # a drag: input events faster than a run
        page.evaluate("(v) => { const g = document.getElementById('guidance'); g.value = v;"
                      " g.dispatchEvent(new Event('input')); }", v)
    page.wait_for_function("Number(document.body.dataset.runs) >= 2 && document.getElementById('stop').disabled"
                           " && document.getElementById('status').textContent.includes('guidance 3.5')", timeout=60_000)
    assert _runs(page) <= 3                             # runs coalesce: not one per input event
    first = page.evaluate("document.getElementById('x0').toDataURL()")
    page.evaluate("(v) => { const g = document.getElementById('mix'); g.value = v; g.dispatchEvent(new Event('input')); }", "0.5")
    page.wait_for_function("document.getElementById('link').href.includes('mix=0.5') && document.getElementById('stop').disabled"
                           " && Number(document.body.dataset.runs) >= 3", timeout=60_000)
    assert page.evaluate("document.getElementById('x0').toDataURL()") != first    # other x_T, other images
    page.close()


PIXELS = """(id) => Array.from(document.getElementById(id).getContext('2d')
    .getImageData(0, 0, document.getElementById(id).width, document.getElementById(id).height).data)"""


@pytest.mark.slow
def test_webgpu_on_request_makes_the_images_webassembly_makes(site, playwright):
    """Where the browser has a WebGPU adapter (here Chromium's SwiftShader, --enable-unsafe-webgpu), the GPU box is
    offered; ticking it loads the WebGPU runtime and runs the same model there: the status says so and the images
    are those of WebAssembly within a grey level or two (fp32 on both)."""
    b = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--enable-unsafe-webgpu"])
    page = b.new_page(viewport={"width": 1280, "height": 900})
    page.goto(site + "#model=fashion-1step&n=2&picks=Bag&seed=4")
    wait_ready(page)
    page.wait_for_selector("#gpu-box[data-probed]", state="attached")
    if not page.locator("#gpu-box").is_visible():
        b.close()
        pytest.skip("this Chromium offers no WebGPU adapter")
    _run(page, 1)
    assert "WebAssembly" in page.inner_text("#status")
    wasm = page.evaluate(PIXELS, "x0")
    page.check("#gpu")
    page.wait_for_function("document.getElementById('status').textContent.includes('ready on WebGPU')",
                           timeout=180_000)
    _run(page, 1)
    assert "WebGPU" in page.inner_text("#status") and "ep=webgpu" in page.get_attribute("#link", "href")
    gpu = page.evaluate(PIXELS, "x0")
    assert len(gpu) == len(wasm)
    assert sum(abs(a - c) for a, c in zip(gpu, wasm)) / len(gpu) < 2.0
    b.close()

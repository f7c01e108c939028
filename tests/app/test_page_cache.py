"""layout.PageCache: the page, its config and the API info are built once per URL and served as bytes after."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("httpx")
from starlette.applications import Starlette  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.responses import PlainTextResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from diffusion_app.layout import PageCache, app_kwargs  # noqa: E402


def serving():
    """A stand-in for Gradio's app: each route answers how many times it was built; ``get_blocks().config`` and
    ``auth`` as Gradio's App has them."""
    built = []

    async def page(request):
        built.append(request.url.path)
        return PlainTextResponse(f"{request.url} built {len(built)}")
    app = Starlette(routes=[Route(p, page, methods=["GET", "HEAD"]) for p in ("/", "/config", "/gradio_api/info",
                                                                                 "/other")],
                    middleware=[Middleware(PageCache)])
    blocks = SimpleNamespace(config={"components": []})
    app.get_blocks = lambda: blocks
    app.auth = app.auth_dependency = None
    return app, blocks, built


def test_the_page_config_and_api_info_are_built_once():
    app, _, built = serving()
    c = TestClient(app)
    for path in ("/", "/config", "/gradio_api/info"):
        first, again = c.get(path), c.get(path)
        assert first.status_code == again.status_code == 200
        assert again.text == first.text and again.headers["content-length"] == first.headers["content-length"]
    assert built == ["/", "/config", "/gradio_api/info"]
    c.get("/other"), c.get("/other")            # anything else is Gradio's every time
    assert built[3:] == ["/other", "/other"]


def test_another_url_or_host_or_config_is_built_anew():
    app, blocks, built = serving()
    c = TestClient(app)
    c.get("/config")
    c.get("/config?deep_link=abc")                              # another query
    c.get("/config", headers={"host": "example.org"})           # another root URL
    c.get("/config", headers={"x-forwarded-proto": "https"})
    assert len(built) == 4
    blocks.config = {"components": [1]}                         # a config made anew (a reload) is not served stale
    assert c.get("/config").text.endswith("built 5")


def test_nothing_is_cached_behind_a_login():
    app, _, built = serving()
    app.auth = [("a", "b")]
    c = TestClient(app)
    c.get("/"), c.get("/")
    assert built == ["/", "/"]


def test_every_launch_gets_its_own_app_kwargs():
    """Gradio adds its lifespan handler to the dict it is given: a shared one would nest them launch after launch."""
    a, b = app_kwargs(), app_kwargs()
    assert a is not b and a["middleware"] is not b["middleware"]
    assert [m.cls for m in a["middleware"]] == [PageCache]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from app_fixtures import build_checkpoints
    from diffusion_app import build_demo
    return build_demo(str(build_checkpoints(tmp_path_factory.mktemp("ckpt"))))


@pytest.mark.slow      # both build the app
def test_an_idle_queue_looks_for_work_every_10_ms(demo):
    """Gradio's queue looked every 1 ms while it had none: 7.6% of a core for an idle app on a shared Space."""
    assert demo._queue.sleep_when_free >= 0.01


@pytest.mark.slow
def test_a_cached_picture_is_never_rewritten_while_it_is_sent(demo):
    """Gradio names a returned picture's file by its bytes' hash and rewrote it in place each time: a visitor fetching
    it while another's identical preview was saved got an empty or cut file (issue 34). Once the app is built, the same
    picture saved 200 times in one thread while another reads the file: every read is the whole file."""
    import threading

    import gradio as gr
    import numpy as np
    from PIL import Image

    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8))
    preview = gr.Image(type="pil", format="png")            # as the app's preview: a PIL picture returned
    path = preview.postprocess(img).path
    whole = open(path, "rb").read()
    done = threading.Event()

    def save_again():
        for _ in range(200):        # a copy each time: the same object is not saved again (dc_saved, below)
            assert preview.postprocess(img.copy()).path == path
        done.set()
    writer = threading.Thread(target=save_again)
    writer.start()
    reads, cut = 0, 0
    while not done.is_set():
        reads += 1
        cut += open(path, "rb").read() != whole
    writer.join()
    assert reads > 100 and cut == 0, (reads, cut)


@pytest.mark.slow
def test_stops_result_is_queued_behind_the_run(demo):
    """Stop ends the run at once (unqueued ``stop_now``, beside Gradio's cancel) and sends its partial result queued,
    after it: on the session's event stream, behind the run's previews (unqueued, a preview still on its way came
    after it and emptied the gallery). test_app_second_pass checks that the result also waits for the run's end."""
    fns = {getattr(f.fn, "__name__", None): f for f in demo.fns.values()}
    now, result = fns["stop_now"], fns["stop"]
    assert now.queue is False and result.queue is True and result.trigger_after == now._id
    assert result.concurrency_limit is None      # never behind the sampling runs' own limit


def test_a_picture_given_again_is_not_encoded_again(tmp_path, monkeypatch):
    """A preview that many visitors share (render.side_by_side gives the same object for the same tensors) is
    encoded once; the same bytes in another object, or a file the cache has since deleted, are written anew."""
    import numpy as np
    from gradio import processing_utils
    from PIL import Image

    from diffusion_app.layout import save_pil_to_cache_whole
    encoded = []
    real = processing_utils.encode_pil_to_bytes
    monkeypatch.setattr(processing_utils, "encode_pil_to_bytes", lambda im, fmt: encoded.append(fmt) or real(im, fmt))
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    path = save_pil_to_cache_whole(img, str(tmp_path), format="png")
    assert save_pil_to_cache_whole(img, str(tmp_path), format="png") == path and len(encoded) == 1
    assert Image.open(path).tobytes() == img.tobytes()
    Path(path).unlink()                                                          # Gradio's delete_cache
    assert save_pil_to_cache_whole(img, str(tmp_path), format="png") == path and Path(path).exists()
    assert len(encoded) == 2
    assert save_pil_to_cache_whole(img.copy(), str(tmp_path), format="png") == path and len(encoded) == 3
    other = save_pil_to_cache_whole(img, str(tmp_path), format="webp")          # another format: its own file
    assert other != path and other.endswith(".webp") and len(encoded) == 4
    elsewhere = save_pil_to_cache_whole(img, str(tmp_path / "b"), format="png")  # another cache folder
    assert Path(elsewhere).parent.parent == tmp_path / "b"
    changed = img.copy()
    changed.putpixel((0, 0), (1, 2, 3))
    assert save_pil_to_cache_whole(changed, str(tmp_path), format="png") != path


def test_a_preview_is_drawn_once_for_the_same_tensors_and_anew_for_others():
    import torch

    from diffusion_app import render
    x = torch.linspace(-1, 1, 4 * 3 * 8 * 8).reshape(4, 3, 8, 8)
    first = render.side_by_side(x, -x)
    assert render.side_by_side(x.clone(), (-x).clone()) is first
    nudged = x.clone()
    nudged[3, 2, 7, 7] = torch.nextafter(nudged[3, 2, 7, 7], torch.tensor(2.0))
    assert render.side_by_side(nudged, -x) is not first                 # x_t one ulp apart
    assert render.side_by_side(x, -nudged) is not first                 # x0_hat one ulp apart
    assert render.side_by_side(x[:2], -x[:2]) is not first              # another batch
    fresh = render.side_by_side(x + 0.0, -x)
    assert fresh is first
    for k in range(render.PREVIEWS_KEPT + 1):                         # bounded: the oldest drop out
        render.side_by_side(x * (k + 2) / 100, x)
    assert len(render._previews) == render.PREVIEWS_KEPT
    assert render.side_by_side(x, -x) is not first
    assert render.side_by_side(x, -x).tobytes() == first.tobytes()

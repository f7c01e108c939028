"""The page: the four tabs, each built and wired by its package's ``page`` module, and the launch settings."""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import gradio as gr
from gradio import processing_utils
import torch
from starlette.middleware import Middleware

from diffusion_core import atomic_write_bytes

from .application import DiffusionApp
from .assets import ABOUT, CSS, PAGE_JS
from .forward.page import forward_page, wire_forward
from .generate.live_page import wire_live
from .generate.page import generate_page, wire_generate
from . import sessions, skips
from .inputs import check_input_count
from .learn.page import learn_page, wire_learn


QUEUE_POLL_S = 0.01


def build_demo(checkpoints_dir=None) -> gr.Blocks:
    processing_utils.save_pil_to_cache = save_pil_to_cache_whole
    sessions.install()          # a session's config copy built when read, not at its start and after each event
    skips.install()             # a gr.skip() output sent without rebuilding its component
    app = DiffusionApp(checkpoints_dir)
    threads = os.environ.get("DIFFUSION_THREADS")
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    with gr.Blocks(title="diffusion_core", delete_cache=(3600, 7200)) as demo:
        demo.app_state = app     # for tests and introspection
        gr.Markdown("# diffusion_core · from-scratch diffusion models")
        with gr.Tabs():
            with gr.Tab("Generate", id="generate"):
                g = generate_page(app)
            with gr.Tab("Forward process", id="forward"):
                f = forward_page(app)
            with gr.Tab("Learn", id="learn"):
                l = learn_page()
            with gr.Tab("About", id="about"):
                gr.Markdown(ABOUT)
        wire_generate(app, demo, g, l)
        wire_forward(app, f)
        wire_learn(app, g, l)
        wire_live(app, g, l)
    demo.validate_inputs = check_input_count     # an API call short of inputs: one line, not {"error": null}
    # Generate is not limited here: the app's waiting room admits its runs (waiting.py). The rest: the Learn tab's
    # sampling tools (DIFFUSION_CONCURRENCY at once, default 2: each runs up to 15 sampling runs) and light events
    demo.queue(default_concurrency_limit=int(os.environ.get("DIFFUSION_CONCURRENCY", "2")),
               max_size=int(os.environ.get("DIFFUSION_QUEUE", "256")))
    # Gradio's queue looks for work every 1 ms while it has none: 7.6% of a core for an app nobody uses (AMD EPYC),
    # taken from a shared Space's 2 cores. Every 10 ms: 3.1%, and an event starts at most 10 ms later
    demo._queue.sleep_when_free = QUEUE_POLL_S
    return demo


def save_pil_to_cache_whole(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    """Gradio's ``processing_utils.save_pil_to_cache`` (which its Image and Gallery call for every picture a handler
    returns), written so that a file being sent is never rewritten. Gradio names the file by its bytes' hash and
    rewrote it in place each time: a class pressing the same example gets identical previews, and one visitor's write
    emptied the file another's browser was fetching (a broken image; 1-2 in a class of 30). Here an existing file
    (the same bytes) is only touched, for ``delete_cache``'s ageing, and a new one is renamed into place whole.
    (An image given again, as render.side_by_side gives a preview many visitors share, is not encoded again: the
    file it was saved to is remembered on it, ``img.dc_saved``.)"""
    where = (str(cache_dir), name, format)
    saved = getattr(img, "dc_saved", None)
    if saved is not None and saved[0] == where and _touch(saved[1]):
        return saved[1]
    data = processing_utils.encode_pil_to_bytes(img, format)
    path = str((Path(cache_dir) / processing_utils.hash_bytes(data) / f"{name}.{format}").resolve())
    if not _touch(path):
        atomic_write_bytes(Path(path), data, durable=False)     # a cache: no fsync on the previews' path
    img.dc_saved = (where, path)
    return path


def _touch(path: str) -> bool:
    """Mark ``path`` as just used (``delete_cache`` ages files by their times); False where it has gone since."""
    try:
        os.utime(path)
        return True
    except FileNotFoundError:
        return False
    except OSError:
        return True


class PageCache:
    """ASGI middleware: the page (``/``), its config (``/config``) and the API info (``/gradio_api/info``), each built
    once per URL and proxy headers, then served as bytes. Gradio builds them anew for every request (a deep copy of
    the page's 240 KB config, a 330 KB page template): 0.1 s of Python per new visitor on 2 cores, and 30 visitors at
    once waited seconds for it while the network sampled (docs/performance.md). They are the same bytes every time:
    the config is made once at launch (this app has no gr.render and no reload mode); a config object that is
    rebuilt all the same misses the cache (its id is in the key). Nothing is cached behind a login (the page names
    its user); only whole 200 responses are kept, at most MAX_ENTRIES (the three are 0.65 MB together)."""

    PATHS = ("/", "/config", "/gradio_api/info")
    KEY_HEADERS = (b"host", b"x-forwarded-host", b"x-forwarded-proto", b"x-gradio-server")   # the root URL
    MAX_ENTRIES = 24

    def __init__(self, app):
        self.app = app
        self.kept: OrderedDict = OrderedDict()

    def _key(self, scope):
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or scope["path"] not in self.PATHS:
            return None
        app = scope.get("app")
        if getattr(app, "auth", None) is not None or getattr(app, "auth_dependency", None) is not None:
            return None             # a login: the page names its user
        try:
            config_id = id(app.get_blocks().config)
        except Exception:       # noqa: BLE001 - no Blocks yet: not cached
            return None
        headers = dict(scope["headers"])
        return (config_id, scope["method"], scope["scheme"], scope["path"], scope["query_string"],
                scope.get("root_path", ""), tuple(headers.get(h) for h in self.KEY_HEADERS))

    async def __call__(self, scope, receive, send):
        key = self._key(scope)
        if key is None:
            return await self.app(scope, receive, send)
        if key in self.kept:
            for message in self.kept[key]:
                await send(message)
            return
        sent = []

        async def keep(message):
            sent.append(message)
            await send(message)
        await self.app(scope, receive, keep)
        if sent and sent[0].get("status") == 200 and not any(m.get("more_body") for m in sent[1:]):
            self.kept[key] = sent
            while len(self.kept) > self.MAX_ENTRIES:
                self.kept.popitem(last=False)


# state_session_capacity: sessions whose state Gradio keeps, least recently used dropped first (Gradio's default,
# 10,000, lets them take ~7 GB: each holds ~0.7 MB, measured, mostly its own copy of the page's config with the
# last outputs)
LAUNCH_KW = dict(theme=gr.themes.Soft(), css=CSS, js=PAGE_JS, max_file_size="32mb",
                 state_session_capacity=int(os.environ.get("DIFFUSION_SESSIONS", "200")))


def app_kwargs() -> dict:
    """``demo.launch(app_kwargs=app_kwargs(), **LAUNCH_KW)``: the server's own middleware (PageCache). A new dict
    for every launch: Gradio adds to the one it is given (its lifespan handler)."""
    return {"middleware": [Middleware(PageCache)]}


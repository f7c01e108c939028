"""The browser build's benchmark (issue 41): the static site in headless Chromium (WebAssembly), on this machine.

    python benchmarks/web_page.py [--site web/dist] [--repeats 3] [--out docs/measurements/web_page.json]

Builds the site when ``--site`` does not exist (web/build.py), serves it on a local port, and records: the bytes a
first visit downloads (the page, the runtime and the default model) and with every model of the page loaded; the
time to a ready page; and for each run, as the page itself reports it (``data-first-preview-ms``,
``data-finished-ms``), the median of ``--repeats`` runs after one warm-up: one fashion image with DPM-Solver++(2M)
10 steps and guidance 2; four images from the 4-step and the 1-step student; one emoji and one pose image at their
defaults; and Live mode's latency, a guidance slider move to four new images on the canvases, for both students.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import importlib.util
import json
import platform
import statistics
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = [   # (name, settings link)
    ("fashion, 1 image, DPM-Solver++(2M) 10 steps, guidance 2",
     "#model=fashion&sampler=dpm%2B%2B&steps=10&n=1&seed=0&guidance=2&picks=Dress"),
    ("fashion, 4 images, DPM-Solver++(2M) 10 steps, guidance 2",
     "#model=fashion&sampler=dpm%2B%2B&steps=10&n=4&seed=0&guidance=2&picks=Dress"),
    ("fashion-4step student, 4 images, 4 steps, guidance 2",
     "#model=fashion-4step&sampler=progressive&steps=4&n=4&seed=0&guidance=2&picks=Dress"),
    ("fashion-1step student, 4 images, 1 step, guidance 2",
     "#model=fashion-1step&sampler=progressive&steps=1&n=4&seed=0&guidance=2&picks=Dress"),
    ("emoji, 1 image, DDPM 25 steps, guidance 3", "#model=emoji&sampler=ddpm&steps=25&n=1&seed=0&guidance=3&picks=woman"),
    ("pose, 1 image, DDPM 25 steps, guidance 2 (bundled stickman)", "#model=pose&sampler=ddpm&steps=25&n=1&seed=0&guidance=2"),
]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def serve(site: Path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def one_run(page, url: str) -> tuple[float, float]:
    page.goto(url)
    page.reload()
    page.wait_for_selector("#generate:not([disabled])", timeout=300_000)
    page.evaluate("delete document.body.dataset.finishedMs")
    page.click("#generate")
    page.wait_for_function("document.body.dataset.finishedMs", timeout=300_000)
    return (float(page.evaluate("document.body.dataset.firstPreviewMs")),
            float(page.evaluate("document.body.dataset.finishedMs")))


LIVE_MOVE = """async (v) => { const g = document.getElementById('guidance');
  const before = Number(document.body.dataset.runs || 0), t0 = performance.now();
  g.value = v; g.dispatchEvent(new Event('input'));
  while (Number(document.body.dataset.runs || 0) <= before) await new Promise((r) => setTimeout(r, 1));
  return performance.now() - t0; }"""


def live_latency(page, base: str, model: str, moves: int = 20) -> dict:
    """Live mode: one guidance slider move at a time (each after the last one's images are shown), the time from
    the input event to the new images on the canvases, 4 images; p50 / p95 / max in ms."""
    page.goto(base + f"#model={model}&n=4&seed=0&picks=Dress")
    page.reload()
    page.wait_for_selector("#generate:not([disabled])", timeout=300_000)
    page.evaluate(LIVE_MOVE, "1.5")                                  # warm-up
    times = sorted(page.evaluate(LIVE_MOVE, str(1.0 + 0.5 * (k % 7))) for k in range(moves))
    return {"moves": moves, "p50_ms": round(statistics.median(times), 1),
            "p95_ms": round(times[min(len(times) - 1, round(0.95 * (len(times) - 1)))], 1), "max_ms": round(times[-1], 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--site", default=str(ROOT / "web" / "dist"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="write the JSON here too")
    args = p.parse_args(argv)
    site = Path(args.site)
    if not (site / "index.html").is_file():
        spec = importlib.util.spec_from_file_location("web_build", ROOT / "web" / "build.py")
        build = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(build)
        build.build(site, [ROOT / "checkpoints" / m for m in build.MODELS])      # int8 weights, as shipped
    from playwright.sync_api import sync_playwright
    server, base = serve(site)
    result = {"cpu": cpu_model(), "cores": len(__import__("os").sched_getaffinity(0)), "browser": "headless chromium",
              "backend": "onnxruntime-web WebAssembly", "date": time.strftime("%Y-%m-%d"), "repeats": args.repeats,
              "runs": {}}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium")
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        page = ctx.new_page()
        sizes: dict[str, int] = {}
        page.on("response", lambda r: sizes.__setitem__(r.url, len(r.body()) if r.ok else 0))
        t0 = time.perf_counter()
        page.goto(base)
        page.wait_for_selector("#generate:not([disabled])", timeout=300_000)
        result["first_visit_ready_s"] = round(time.perf_counter() - t0, 2)       # a first visit reloads once (sw.js)
        result["cross_origin_isolated"] = page.evaluate("self.crossOriginIsolated")    # WebAssembly threads
        result["status"] = page.inner_text("#status")
        result["first_visit_bytes"] = sum(sizes.values())
        result["first_visit_files"] = {u.replace(base, ""): n for u, n in sorted(sizes.items(), key=lambda kv: -kv[1])[:4]}
        for name, link in RUNS:
            one_run(page, base + link)              # warm-up (and the model's download)
            times = [one_run(page, base + link) for _ in range(args.repeats)]
            result["runs"][name] = {"first_preview_ms": statistics.median(t[0] for t in times),
                                    "finished_ms": statistics.median(t[1] for t in times),
                                    "all": [list(t) for t in times]}
            print(name, result["runs"][name], flush=True)
        per_model = {m["name"]: (site / "models" / m["name"] / "net.onnx").stat().st_size +
                     (site / "models" / m["name"] / "model.json").stat().st_size
                     for m in json.loads((site / "models" / "index.json").read_text())}
        model_bytes = sum(per_model.values())
        result["live_slider_to_4_images"] = {m: live_latency(page, base, m) for m in ("fashion-1step", "fashion-4step")}
        print("live", result["live_slider_to_4_images"], flush=True)
        shell = result["first_visit_bytes"] - (site / "models" / "fashion" / "net.onnx").stat().st_size \
            - (site / "models" / "fashion" / "model.json").stat().st_size
        result["all_models_bytes"] = shell + model_bytes
        result["fashion_emoji_pose_bytes"] = shell + sum(per_model[m] for m in ("fashion", "emoji", "pose"))
        result["model_bytes"] = per_model
        browser.close()
    server.shutdown()
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

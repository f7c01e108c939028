"""Live mode's latency in a real browser (issue 38): the Gradio app in headless Chromium, a student model, Live on,
and the time from a slider event to the new images on the page.

    python benchmarks/live_mode.py [--model fashion-4step] [--events 40] [--backend openvino]
                                   [--out docs/measurements/live_mode.json]

Starts ``app.py`` on the shipped checkpoints (the app's default backend), opens the page at 1280x900 with the
model picked by a link, ticks Live and then, one event at a time, presses the arrow key on the guidance slider
(a real input event; the next press waits for the images it asked for). Each latency is measured inside the page:
from the keydown to the Live caption for the new value (``performance.now()`` in both). Then a mouse drag across
the blend slider (one move every 16 ms for a second): the updates the page showed during the drag, and the time
from the mouse-up to the images of the final value. Records the CPU, the load average and the backend.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

OBSERVE = """() => {
  window.__keys = []; window.__caps = [];
  document.addEventListener('keydown', () => window.__keys.push(performance.now()), true);
  const view = document.querySelector('#live-view');
  new MutationObserver(() => {
    const p = view.querySelector('p');
    const text = p ? p.innerText : '';
    if (text && text !== window.__last) { window.__last = text; window.__caps.push([performance.now(), text]); }
  }).observe(view, {subtree: true, childList: true, characterData: true});
}"""


def pct(xs, q):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))], 1)


def key_latencies(page, events: int) -> list[float]:
    """Arrow presses on the guidance slider, one at a time: ms from each keydown to its caption."""
    slider = page.locator("#guidance input[type=range]").first
    slider.focus()
    out = []
    for k in range(events):
        n_caps = page.evaluate("window.__caps.length")
        page.keyboard.press("ArrowRight" if (k // 10) % 2 == 0 else "ArrowLeft")
        page.wait_for_function(f"window.__caps.length > {n_caps}", timeout=30000)
        t_key = page.evaluate("window.__keys[window.__keys.length - 1]")
        t_cap = page.evaluate(f"window.__caps[{n_caps}][0]")
        out.append(t_cap - t_key)
    return out


def drag(page) -> dict:
    """A one-second mouse drag across the blend slider: updates shown during it, and mouse-up to the last value."""
    box = page.locator("#live-blend input[type=range]").bounding_box()
    y, x0, x1 = box["y"] + box["height"] / 2, box["x"] + 4, box["x"] + box["width"] - 4
    n0 = page.evaluate("window.__caps.length")
    page.mouse.move(x0, y)
    page.mouse.down()
    for k in range(1, 61):
        page.mouse.move(x0 + (x1 - x0) * k / 60, y)
        page.wait_for_timeout(16)
    page.mouse.up()
    t_up = page.evaluate("performance.now()")
    page.wait_for_function("window.__caps.length && window.__caps[window.__caps.length - 1][1].includes('at 1.00')",
                           timeout=30000)
    caps = page.evaluate("window.__caps")[n0:]
    return {"updates_shown": len(caps), "mouse_up_to_final_ms": round(caps[-1][0] - t_up, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fashion-4step")
    ap.add_argument("--checkpoints", default=str(ROOT / "checkpoints"))
    ap.add_argument("--events", type=int, default=40)
    ap.add_argument("--backend", default="", help="the link's backend (default: the app's)")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    from classroom import start_app
    from web_page import cpu_model
    from playwright.sync_api import sync_playwright
    proc, url = start_app(Path(args.checkpoints), {})
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                         args=["--disable-background-networking", "--disable-component-update"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{url}?model={args.model}&seed=0" + (f"&backend={args.backend}" if args.backend else ""))
            page.wait_for_selector("#generate-btn:not([disabled])", timeout=300000)
            page.evaluate(OBSERVE)
            page.locator("#live-on input").check()
            page.wait_for_function("window.__caps.length > 0", timeout=300000)
            for _ in range(3):          # warm-up
                key_latencies(page, 1)
            lat = key_latencies(page, args.events)
            dr = drag(page)
            backend = page.locator("#backend input").first.input_value() if page.locator("#backend input").count() else "?"
            browser.close()
    finally:
        proc.kill()
    result = {"cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)), "load_average": os.getloadavg(),
              "browser": "headless chromium", "model": args.model, "images": 4, "backend": backend,
              "events": args.events, "latency_ms": {"median": pct(lat, 0.5), "p95": pct(lat, 0.95),
                                                    "max": round(max(lat), 1), "mean": round(statistics.mean(lat), 1)},
              "drag": dr, "measured": time.strftime("%Y-%m-%d %H:%M")}
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""What a user of the app waits for: the launched app (real checkpoints) driven through gradio_client.

    python scripts/app_latency.py [--checkpoints checkpoints] [--repeats 3] [--out app_latency.json]

The app runs in its own process (``python app.py``, as on a Space) and the client in this one. For each
setting it submits /generate and records the time from submit to the first streamed preview and
to the finished gallery (the median of --repeats runs after one warm-up run). Unlike the benchmark, this
includes Gradio's queue, the preview images' encoding and the streaming of every step (preview_every 1),
and the app's fixed network batch (bit-identical seeds across batch sizes).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# guided runs (a class): the conditional and unconditional passes, as in the benchmark
SETTINGS = [dict(model="fashion", sampler="dpm++", steps=20, batch_size=16, guidance=2.0, class_label="Sneaker"),
            dict(model="fashion", sampler="dpm++", steps=20, batch_size=1, guidance=2.0, class_label="Sneaker"),
            dict(model="fashion", sampler="ddim", steps=50, batch_size=16, guidance=2.0, class_label="Sneaker")]


def one_run(client, setting: dict) -> tuple[float, float]:
    t0 = time.perf_counter()
    job = client.submit(seed=1, preview_every=1, **setting, api_name="/generate")
    first = None
    while not job.done():
        if first is None and job.outputs():
            first = time.perf_counter() - t0
        time.sleep(0.002)
    job.result()
    total = time.perf_counter() - t0
    return (first if first is not None else total), total


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="app_latency.json")
    args = p.parse_args(argv)
    from gradio_client import Client

    from diffusion_app.process import start_server

    # the app in its own process, as `python app.py` runs on a Space; the client (a stand-in for the browser,
    # which runs on the user's machine) in this one, so that the server does not share its GIL with it
    env = dict(os.environ, GRADIO_SERVER_NAME="127.0.0.1", DIFFUSION_CHECKPOINTS=str(Path(args.checkpoints).resolve()))
    server, url = start_server(env, timeout_s=180)
    # like a browser, the client does not wait for each preview file to download (files stay on the server)
    client = Client(url, verbose=False, download_files=False)
    rows = []
    try:
        for setting in SETTINGS:
            one_run(client, setting)                       # warm-up: model load, first allocations
            runs = [one_run(client, setting) for _ in range(args.repeats)]
            row = {**setting, "first_preview_s": statistics.median(r[0] for r in runs),
                   "total_s": statistics.median(r[1] for r in runs), "runs": runs}
            rows.append(row)
            print(f"{setting['model']} {setting['sampler']} {setting['steps']} steps batch {setting['batch_size']}: "
                  f"first preview {row['first_preview_s']:.3f} s, finished {row['total_s']:.3f} s", flush=True)
    finally:
        server.terminate()
        server.wait(30)
    from diffusion_core.runtime.backends import cpu_info      # a script may read the package's modules; the app may not
    info = cpu_info()
    Path(args.out).write_text(json.dumps({"server": "python app.py (own process)", "cpu": os.cpu_count(),
                                          "cpu_model": info.model, "cpu_flags": sorted(info.flags),
                                          "backend": os.environ.get("DIFFUSION_CORE_BACKEND", "auto"),
                                          "loadavg_1m": os.getloadavg()[0], "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

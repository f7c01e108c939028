"""Serving variants A/B: the fashion class of benchmarks/classroom.py against servers that differ in one setting.

    python experiments/serving_ab.py --variant base=DIR --variant nice=DIR:DIFFUSION_CORE_WORKER_NICE=10 \
        [--order base nice nice base] [--visitors 30] [--pause-pid PID] [--out docs/measurements/x.json]

Each variant is a copy of the repository (DIR, e.g. ``git archive HEAD`` unpacked with one change) and extra
environment (``NAME=VALUE`` after a colon, several separated by commas). Every variant's ``python app.py`` is
started first and warmed (one model load and one run alone), then the classes run in ``--order`` (interleaved, so
that this machine's drift from minute to minute falls on every variant alike), each on its variant's server: the
second class on a server meets the first one's 30 sessions, as in classroom.py. ``--pause-pid``: a background job
that is stopped (SIGSTOP) during the classes only and always continued afterwards.

``--connect-only``: the visitors open the page and a client and press nothing (the goal "30 new sessions
opened at once: every page and client gets its config within 3 s").

Per class: client ready, handler started (the first output, "starting…"), first preview and finished, p50 / p95,
and images/s; then the medians per variant. The CPU model and the load average before each class are recorded.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import classroom  # noqa: E402

KEYS = ("config_s", "started_s", "first_preview_s", "finished_s")


def start(root: Path, checkpoints: Path, env_extra: dict) -> tuple[subprocess.Popen, str]:
    """``python app.py`` in ``root`` (classroom.start_app for another copy of the repository)."""
    here = classroom.ROOT
    classroom.ROOT = root
    try:
        return classroom.start_app(checkpoints, env_extra)
    finally:
        classroom.ROOT = here


def connect_class(url: str, n: int, seed: int = 0) -> dict:
    """``n`` new sessions opened within 1 s that press nothing: each fetches the page, then connects a
    gradio_client (config, API info); the time from arrival to a ready client, p50 / p95 / max."""
    import random
    import threading
    import urllib.request
    from gradio_client import Client
    rng, done = random.Random(seed), []

    def one(delay):
        time.sleep(delay)
        t = time.perf_counter()
        urllib.request.urlopen(url, timeout=60).read()
        Client(url, verbose=False, download_files=False).close()
        done.append(time.perf_counter() - t)
    threads = [threading.Thread(target=one, args=(rng.random(),)) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"served": len(done), "refused": n - len(done), "images_per_s": None,
            "config_s": classroom.summary(done), "each": []}


def parse_variant(text: str) -> tuple[str, Path, dict]:
    name, rest = text.split("=", 1)
    folder, _, env = rest.partition(":")
    return name, Path(folder), dict(kv.split("=", 1) for kv in env.split(",") if kv)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", action="append", required=True, help="NAME=DIR[:VAR=VALUE,...]")
    p.add_argument("--order", nargs="+", help="variant names, one class each (default: each once, then reversed)")
    p.add_argument("--visitors", type=int, default=30)
    p.add_argument("--model", default="fashion")
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints"))
    p.add_argument("--pause-pid", type=int, default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--connect-only", action="store_true", help="visitors open the page and a client, press nothing")
    args = p.parse_args(argv)
    from diffusion_core.runtime.machine import cpu_info
    variants = dict((n, (d, e)) for n, d, e in map(parse_variant, args.variant))
    order = args.order or list(variants) + list(variants)[::-1]
    checkpoints = Path(args.checkpoints)
    req = classroom.example_request(checkpoints, args.model)
    record = {"cpu": cpu_info().model, "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M"),
              "command": "python experiments/serving_ab.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "variants": {n: {"dir": str(d), "env": e} for n, (d, e) in variants.items()}, "classes": []}
    servers = {}
    try:
        for name, (folder, env) in variants.items():
            servers[name] = start(folder, checkpoints, env)
            url = servers[name][1]
            classroom.first_load_s(url, req)
            classroom.visitor(url, req, time.perf_counter(), 0.0, {})
        if args.pause_pid:
            os.kill(args.pause_pid, signal.SIGSTOP)
        time.sleep(2.0)
        for name in order:
            load = os.getloadavg()[0]
            proc = servers[name][0]
            cpu0, srv0, t0 = classroom.cpu_seconds(), classroom.cpu_seconds(proc.pid), time.perf_counter()
            r = (connect_class(servers[name][1], args.visitors) if args.connect_only
                 else classroom.run_class(servers[name][1], req, args.visitors))
            wall = time.perf_counter() - t0
            row = {"variant": name, "load_before": round(load, 2), "served": r["served"], "refused": r["refused"],
                   "images_per_s": r["images_per_s"], **{k: r.get(k) for k in KEYS},
                   # where the 2 cores went during the class: the server's and the visitors' (this process) CPU s
                   "wall_s": round(wall, 1), "server_cpu_s": round(classroom.cpu_seconds(proc.pid) - srv0, 1),
                   "visitors_cpu_s": round(classroom.cpu_seconds() - cpu0, 1), "each": r["each"]}
            record["classes"].append(row)
            print(name, json.dumps({k: v for k, v in row.items() if k != "each"}), flush=True)
            time.sleep(3.0)
    finally:
        if args.pause_pid:
            os.kill(args.pause_pid, signal.SIGCONT)
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=60)
    record["medians"] = {}
    for name in variants:
        rows = [c for c in record["classes"] if c["variant"] == name]
        med = {f"{k}_{q}": round(statistics.median(c[k][q] for c in rows), 3) for k in KEYS for q in ("p50", "p95")
               if all(c[k] and c[k][q] is not None for c in rows)}
        for k in ("images_per_s", "server_cpu_s", "visitors_cpu_s"):
            if all(c[k] is not None for c in rows):
                med[k] = round(statistics.median(c[k] for c in rows), 2)
        med["classes"] = len(rows)
        record["medians"][name] = med
        print("median", name, json.dumps(med), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=1))
        print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Server CPU seconds per phase of one page visitor, visitors one after another (nothing overlaps), so each phase's
cost on the server can be read alone: the page, its load chain, the example's click up to the run's first output
("starting…"), to its first preview, and to the end (the network's work included).

    python experiments/visitor_cpu.py [--model fashion] [--visitors 10]
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
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402

from benchmarks.classroom import start_app  # noqa: E402
from benchmarks.page_visitor import PageVisitor  # noqa: E402


def cpu(pid: int, tids: dict[str, list[int]]) -> dict[str, float]:
    """Nanosecond CPU time (schedstat) of the process's threads, summed by kind."""
    out = {}
    for kind, ids in tids.items():
        total = 0
        for tid in ids:
            try:
                total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
            except OSError:
                pass
        out[kind] = total / 1e9
    return out


def thread_kinds(pid: int) -> dict[str, list[int]]:
    import re
    import subprocess
    dump = subprocess.run(["py-spy", "dump", "-p", str(pid)], capture_output=True, text=True).stdout
    kinds: dict[str, list[int]] = {"all": [int(t) for t in os.listdir(f"/proc/{pid}/task")]}
    for tid, name in re.findall(r'^Thread (\d+) \(\w+\): "(.*)"', dump, re.M):
        kinds.setdefault(re.sub(r"[_-]?\d+$", "", name), []).append(int(tid))
    return kinds


def one(url: str, config: dict, model: str, pid: int) -> dict:
    global TIDS
    cpu_seconds = lambda pid: cpu(pid, TIDS)         # noqa: E731
    marks = {"start": cpu_seconds(pid)}
    with httpx.Client(timeout=600) as http:
        page = PageVisitor(url, config, http)
        page.open()
        marks["page"] = cpu_seconds(pid)
        page.load()
        if page.values[page.elem["model"]] != model:
            page.pick("model", model)
        marks["load"] = cpu_seconds(pid)
        gen = page.chain_event("example-0", "generate")
        status_at = page.deps[gen]["outputs"].index(page.elem["status"])
        preview_at = page.deps[gen]["outputs"].index(page.elem["preview"])

        def seen(dep, data):
            if dep["id"] != gen:
                return
            marks.setdefault("started", cpu_seconds(pid))
            if " · step " in str(data[status_at]) and "preview" not in marks:
                page.fetch_new_files(data[preview_at])
                marks["preview"] = cpu_seconds(pid)
        post = http.post

        def marked_post(u, *a, **k):
            r = post(u, *a, **k)
            if u.endswith("run/predict") and "load" in marks and "example" not in marks:
                marks["example"] = cpu_seconds(pid)     # the example's unqueued event, returned
            return r
        http.post = marked_post
        page.click("example-0", seen)
        marks["done"] = cpu_seconds(pid)
    keys = list(marks)
    return {b: {k: marks[b][k] - marks[a][k] for k in marks[a]} for a, b in zip(keys, keys[1:])}


TIDS: dict[str, list[int]] = {}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="fashion")
    p.add_argument("--visitors", type=int, default=10)
    a = p.parse_args()
    proc, url = start_app(ROOT / "checkpoints", {})
    try:
        import urllib.request
        config = json.load(urllib.request.urlopen(url + "config", timeout=60))
        global TIDS
        TIDS = thread_kinds(proc.pid)
        one(url, config, a.model, proc.pid)                 # the model's first load, outside the numbers
        TIDS = thread_kinds(proc.pid)
        rows = [one(url, config, a.model, proc.pid) for _ in range(a.visitors)]
        kinds = list(rows[0]["page"])
        print("phase    " + " ".join(f"{k[:18]:>18s}" for k in kinds) + "   (median ms of CPU)")
        for phase in rows[0]:
            print(f"{phase:8s} " + " ".join(f"{statistics.median(r[phase][k] for r in rows) * 1e3:18.1f}"
                                           for k in kinds))
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()

"""A classroom on one server: N visitors, each a new session, open the app within 1 s and press an example.

    python benchmarks/classroom.py [--visitors 30] [--scenarios fashion emoji cascade live] [--modes shared serial]
                                   [--out docs/measurements/classroom.json]

The app runs in its own process (``python app.py``, as on a Space), started once per mode: ``shared`` is the app
as shipped (DIFFUSION_SLOTS runs admitted at once, their network calls shared per tick, rows computed lately kept in
a RowMemory); ``serial`` is the same app as it served before (SERIAL_ENV: one run at a time, the others in line,
no row memory). Each visitor
is a thread here with its own ``gradio_client.Client`` (a new session: the page's config and API info are fetched
anew) that also fetches the page itself, arriving at a random moment in the first second, and submits the
example's settings to /generate (the model's own sampler, steps and guidance, 4 images, a preview every step).

Per scenario and mode: visitors served and refused (with the first refusal's message); the time to the page
(its config inside, what a browser waits for) and to a ready client (the page, then the client's own config and
API info) p50 / p95 / max; time from arrival to the handler's start (its first output, "starting…"), to the first
preview and to the finished gallery, p50 / p95 / max; images/s
(every image of every visitor over the time from the first arrival to the last finish); one visitor alone
before the class arrives (its finished time: the best single-run throughput). The ratio shared / serial of
images/s is printed and kept, with the CPU model and the load average before each run.

``live``: each visitor opens the page (its config) and drags Live's guidance slider on fashion-4step, the
4-step student: LIVE_UPDATES updates, each POSTed as the page sends it (Live's events skip Gradio's queue) when the
last has returned; per update, the time from its POST to its images (``live_update_s``), and images/s over all.

The visitors run on the same machine as the server (a real class runs them elsewhere): their threads cost the
server some CPU, the same in both modes.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCENARIOS = {"fashion": "fashion", "emoji": "emoji", "cascade": "emoji-cascade-128", "live": "fashion-4step"}
LIVE_UPDATES = 15           # a Live visitor's guidance drag: this many updates, each sent when the last returns
BATCH = 4                   # the page's default batch size
POLL_S = 0.02
# the app as it served before issue 34: one run at a time, and no rows remembered between runs (runtime/shared.py:
# with a RowMemory, a class pressing one example in line is answered from it after the first run)
SERIAL_ENV = {"DIFFUSION_SLOTS": "1", "DIFFUSION_ROW_MEMORY_MB": "0"}


def example_request(checkpoints: Path, model: str) -> dict:
    """The first one-click example of ``model`` as the page sends it: the example's labels / stickman and seed,
    the model's own sampler, steps, spacing and guidance, the page's batch size, a preview every step."""
    from diffusion_app.generate.cards import Cards
    from diffusion_app.models import Models
    from diffusion_app.generate.presets import examples_for
    pipe = Models(checkpoints).get(model)
    ex = examples_for(pipe, model)[0]
    sd = Cards.sampling_defaults(pipe)
    req = dict(model=model, sampler=sd.sampler, steps=sd.steps, spacing=sd.spacing, guidance=sd.guidance,
               seed=ex.get("seed", 0), batch_size=BATCH, preview_every=1)
    labels = ex.get("labels") or []
    if pipe.base.config.multi_label:
        req["attributes"] = labels
    elif labels:
        req["class_label"] = labels[0]
    return req


def live_request(checkpoints: Path, model: str) -> dict:
    """Live mode on a student as the page sends it when its guidance slider moves (the page's inputs, in order)."""
    from diffusion_app.generate.cards import Cards
    from diffusion_app.models import Models
    from diffusion_app.generate.presets import examples_for
    pipe = Models(checkpoints).get(model)
    ex = examples_for(pipe, model)[0]
    labels = ex.get("labels") or []
    return dict(model=model, live=True, class_label=labels[0] if labels else "any", guidance=2.0,
                steps=Cards.sampling_defaults(pipe).steps, seed=ex.get("seed", 0), batch_size=BATCH)


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))], 3)


def summary(xs: list[float]) -> dict:
    return {"p50": pct(xs, 0.5), "p95": pct(xs, 0.95), "max": pct(xs, 1.0)}


def estimate_s(status: str) -> float | None:
    """The "done in about N s" (or "N min") of a waiting status line, in seconds."""
    m = re.search(r"done in about ([\d.]+) (s|min|h)", status)
    return None if m is None else float(m.group(1)) * {"s": 1, "min": 60, "h": 3600}[m.group(2)]


def visitor(url: str, req: dict, t_zero: float, delay: float, out: dict) -> None:
    from gradio_client import Client
    time.sleep(delay)
    arrive = time.perf_counter()
    out["arrive"] = arrive - t_zero
    try:
        urllib.request.urlopen(url, timeout=60).read()         # the page (its config inside)
        out["page_s"] = time.perf_counter() - arrive
        client = Client(url, verbose=False, download_files=False)  # a new session: config and API info; a browser
        # shows previews by URL: the visitor does not download every preview file (it cost this machine CPU)
        out["config_s"] = time.perf_counter() - arrive
        job = client.submit(**req, api_name="/generate")
        first = started = None
        while not job.done():       # a preview: its status line names the step ("fashion · step 1/10 · ...")
            if started is None and job.outputs():       # the handler's first yield ("starting…"): it has started
                out["started_s"] = started = time.perf_counter() - arrive
            if first is None and any(" · step " in str(o[1]) for o in job.outputs()):
                first = time.perf_counter() - arrive
            time.sleep(POLL_S)
        if first is None and any(" · step " in str(o[1]) for o in job.outputs()):
            first = time.perf_counter() - arrive                   # a run that ended between two polls
        job.result()                                               # raises the app's refusal or error
        outs = job.outputs()
        gallery = outs[-1][2] if outs else None
        if not (isinstance(gallery, list) and len(gallery) == req["batch_size"]):
            raise RuntimeError(f"no gallery in the last output: {str(outs[-1:])[:200]}")
        out.update(first_s=first, done_s=time.perf_counter() - arrive, end=time.perf_counter() - t_zero,
                   waited="Waiting for a turn" in " ".join(str(o[1]) for o in outs))
        told = next((estimate_s(str(o[1])) for o in outs if "Waiting for a turn" in str(o[1])), None)
        if told is not None:        # the first estimate a waiting visitor was shown, and what happened
            out["told_done_s"], out["told_at_s"] = told, out["config_s"]
    except Exception as e:                                         # noqa: BLE001 - a refused or failed visitor
        out["error"] = f"{type(e).__name__}: {e}"[:300]


def live_event(config: dict) -> tuple[int, int, list[str]]:
    """The page's event for a guidance drag in Live mode: (fn_index, trigger id, the inputs' elem_ids or labels)."""
    ids = {c["id"]: c.get("props", {}) for c in config["components"]}
    elem = {p.get("elem_id"): i for i, p in ids.items() if p.get("elem_id")}
    view, guidance = elem["live-view"], elem["guidance"]
    dep = next(d for d in config["dependencies"] if view in d["outputs"] and [guidance, "input"] in d["targets"])
    return dep["id"], guidance, dep["inputs"]


def live_visitor(url: str, req: dict, t_zero: float, delay: float, out: dict) -> None:
    """A visitor who opens the page, turns Live on and drags the guidance slider: LIVE_UPDATES updates sent as the
    page sends them (Live's events skip the queue: a POST each, the next when the last has returned)."""
    import uuid
    time.sleep(delay)
    arrive = time.perf_counter()
    out["arrive"] = arrive - t_zero
    try:
        urllib.request.urlopen(url, timeout=60).read()
        out["page_s"] = time.perf_counter() - arrive
        config = json.load(urllib.request.urlopen(url + "config", timeout=60))
        out["config_s"] = time.perf_counter() - arrive
        fn, trigger, inputs = live_event(config)
        values = {"live-on": True, "model": req["model"], "guidance": req["guidance"], "steps": req["steps"],
                  "seed": req["seed"], "live-seed-b": req["seed"] + 1, "live-blend": 0.0,
                  "batch-size": req["batch_size"],
                  "backend": "fp32", "class-label": req["class_label"], "attributes": []}
        props = {c["id"]: c.get("props", {}) for c in config["components"]}
        session, took = uuid.uuid4().hex[:11], []
        for k in range(LIVE_UPDATES):
            values["guidance"] = 1.0 + 3.0 * k / (LIVE_UPDATES - 1)
            data = [values[props[i]["elem_id"]] for i in inputs]
            body = json.dumps({"data": data, "fn_index": fn, "session_hash": session, "trigger_id": trigger,
                               "event_data": None}).encode()
            t = time.perf_counter()
            got = json.load(urllib.request.urlopen(urllib.request.Request(
                url + config["api_prefix"].lstrip("/") + "/run/predict", body,
                {"Content-Type": "application/json"}), timeout=120))
            took.append(time.perf_counter() - t)
            if "data:image/png" not in str(got.get("data")):
                raise RuntimeError(f"no images in a Live update: {str(got)[:200]}")
            if k == 0:
                out["first_s"] = time.perf_counter() - arrive
        out.update(updates_s=took, done_s=time.perf_counter() - arrive, end=time.perf_counter() - t_zero)
    except Exception as e:                                         # noqa: BLE001 - a refused or failed visitor
        out["error"] = f"{type(e).__name__}: {e}"[:300]


def page_visitor(url: str, req: dict, t_zero: float, delay: float, out: dict) -> None:
    """A visitor as a browser tab: the page's own requests (``benchmarks/page_visitor.py``), its load events, the
    model picked, the model's first one-click example pressed (its own seed: a class presses the same example)."""
    from benchmarks.page_visitor import timed_visit
    if url not in CONFIGS:                  # the page has its config inline: fetched once, outside the timings
        CONFIGS[url] = json.load(urllib.request.urlopen(url + "config", timeout=60))
    timed_visit(url, CONFIGS[url], req["model"], "example-0", t_zero, delay, out, batch=req["batch_size"])
    if "ready_s" in out:
        out["config_s"] = out["ready_s"]    # "client ready": Generate enabled for the visitor's model
    if "waiting_status" in out and estimate_s(out["waiting_status"][1]) is not None:
        out["told_at_s"], out["told_done_s"] = out["waiting_status"][0], estimate_s(out["waiting_status"][1])


CONFIGS: dict[str, dict] = {}


def visitor_for(req: dict, client: str):
    """The visitor that runs ``req``: Live's slider drag, or a page (``client`` "page") or a gradio_client."""
    return live_visitor if req.get("live") else page_visitor if client == "page" else visitor


def _stat_seconds(stat: Path) -> float:
    """User + system CPU seconds in a /proc ``stat`` file (a process's or one of its threads')."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of process ``pid`` (None: this one, every thread; Linux /proc)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    return _stat_seconds(Path(f"/proc/{pid}/stat"))


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of process ``pid``, by thread id (Linux /proc)."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = _stat_seconds(task / "stat")
        except OSError:                         # the thread ended meanwhile
            continue
    return out


def by_thread_kind(pid: int, before: dict[int, float], after: dict[int, float]) -> dict[str, float] | None:
    """The CPU seconds between ``before`` and ``after`` by kind of Python thread ("Thread-1 (run)" is Gradio's
    event loop, "sampling" the runs' threads, "diffusion-core-rows" the network's row workers), named by a
    ``py-spy dump`` of the process (None without py-spy: Python does not give its threads' names to the OS)."""
    if not shutil.which("py-spy"):
        return None
    dump = subprocess.run(["py-spy", "dump", "-p", str(pid)], capture_output=True, text=True, timeout=60).stdout
    names = {int(tid): re.sub(r"[_-]?\d+$", "", name) for tid, name in re.findall(r'^Thread (\d+) \(\w+\): "(.*)"',
                                                                                  dump, re.M)}
    out: dict[str, float] = {}
    for tid, seconds in after.items():
        kind = names.get(tid, "ended or unnamed")
        out[kind] = round(out.get(kind, 0.0) + seconds - before.get(tid, 0.0), 2)
    return {k: v for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v >= 0.01}


def run_class(url: str, req: dict, n: int, seed: int = 0, client: str = "page", server_pid: int | None = None) -> dict:
    """``n`` visitors arriving within 1 s. The visitors run in this process, on the server's cores: its CPU seconds
    over the class (``visitors_cpu_s``) are what a class's browsers would have spent on their own machines, beside
    the server's (``server_cpu_s``, where ``server_pid`` is given)."""
    rng = random.Random(seed)
    results = [dict() for _ in range(n)]
    cpu0, server0 = cpu_seconds(), cpu_seconds(server_pid) if server_pid else None
    threads0 = thread_cpu_seconds(server_pid) if server_pid else {}
    t_zero = time.perf_counter()
    who = visitor_for(req, client)
    threads = [threading.Thread(target=who, args=(url, dict(req, seed=req["seed"] + 10 * i), t_zero,
                                                      rng.random(), results[i])) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    visitors_cpu = cpu_seconds() - cpu0
    server_cpu = cpu_seconds(server_pid) - server0 if server_pid else None
    threads1 = thread_cpu_seconds(server_pid) if server_pid else {}
    served = [r for r in results if "error" not in r]
    refused = [r for r in results if "error" in r]
    span = max((r["end"] for r in served), default=0.0) - min((r["arrive"] for r in results), default=0.0)
    return {"visitors": n, "served": len(served), "refused": len(refused),
            "visitors_cpu_s": round(visitors_cpu, 2), "server_cpu_s": None if server_cpu is None else round(server_cpu, 2),
            # the server's CPU seconds by kind of thread (a thread that ended during the class is missing)
            "server_threads_cpu_s": by_thread_kind(server_pid, threads0, threads1) if server_pid else None,
            "first_refusal": refused[0]["error"] if refused else None,
            "waited": sum(bool(r.get("waited")) for r in served),
            "broken_files": sum(r.get("broken_files", 0) for r in served),     # page visitors: images not whole
            "page_s": summary([r["page_s"] for r in results if "page_s" in r]),
            "config_s": summary([r["config_s"] for r in results if "config_s" in r]),
            "started_s": summary([r["started_s"] for r in served if "started_s" in r]),
            "first_preview_s": summary([r["first_s"] for r in served if r.get("first_s") is not None]),
            "finished_s": summary([r["done_s"] for r in served]),
            "last_finished_s": round(span, 3),
            # a waiting visitor's first "done in about" against its actual finish (both from its arrival)
            "estimate_error": summary([abs(r["told_at_s"] + r["told_done_s"] - r["done_s"]) / r["done_s"]
                                       for r in served if "told_done_s" in r]),
            "images_per_s": round(len(served) * req["batch_size"] * (LIVE_UPDATES if req.get("live") else 1) / span, 2)
            if span else None,
            # Live: every update's time from its POST to its images, over all visitors
            "live_update_s": summary([x for r in served for x in r.get("updates_s", [])]) if req.get("live") else None,
            # each visitor's times from its arrival (s): page, config (a client ready), first preview, finished
            "each": [{k: round(r[k], 3) for k in ("arrive", "page_s", "config_s", "started_s", "first_s", "done_s")
                      if r.get(k) is not None} for r in results]}


def start_app(checkpoints: Path, env_extra: dict) -> tuple[subprocess.Popen, str]:
    """``python app.py`` on ``checkpoints`` with ``env_extra``, in its own process (``diffusion_app.process``)."""
    from diffusion_app.process import start_server
    return start_server(dict(os.environ, DIFFUSION_CHECKPOINTS=str(checkpoints), **env_extra), timeout_s=120)


def profile_server(pid: int, out: Path) -> subprocess.Popen:
    """py-spy sampling the server's active threads, named (``--threads``), without pausing it, until SIGINT."""
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(["py-spy", "record", "-p", str(pid), "--nonblocking", "--threads", "--format", "raw", "-r", "200",
                            "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)                             # py-spy attaches before the class arrives
    return spy


def first_load_s(url: str, req: dict) -> float:
    """A model's first run with nobody else on the server: the time to its first preview (loading included)."""
    out: dict = {}
    visitor(url, dict(req, steps=2, preview_every=1), time.perf_counter(), 0.0, out)
    if "error" in out:
        raise RuntimeError(out["error"])
    return round(out["first_s"], 3)


def first_loads(checkpoints: Path) -> dict:
    """Seconds of each shipped model's first load in a fresh catalogue (what a visitor who picks it waits for
    with nobody else on the server), on the app's default backend."""
    from diffusion_app.models import Models
    out = {}
    for name in Models(checkpoints).names():
        m = Models(checkpoints)
        t0 = time.perf_counter()
        try:
            m.get(name)
            out[name] = round(time.perf_counter() - t0, 3)
        except Exception as e:                  # noqa: BLE001 - a broken folder is reported, not measured
            out[name] = f"{type(e).__name__}: {e}"[:120]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints"))
    p.add_argument("--visitors", type=int, nargs="+", default=[30], help="one count, or one per scenario")
    p.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    p.add_argument("--modes", nargs="+", default=["shared", "serial"], choices=["shared", "serial"])
    p.add_argument("--out", default=str(ROOT / "docs" / "measurements" / "classroom.json"))
    p.add_argument("--no-loads", action="store_true", help="skip timing every model's first load")
    p.add_argument("--profile", metavar="DIR", help="record the server's threads with py-spy (raw, non-blocking) "
                                                   "during each class into DIR/<scenario>-<mode>.txt (pip install py-spy)")
    p.add_argument("--client", default="page", choices=["page", "gradio"],
                   help="page: each visitor sends what the page sends (load events, the example's chain); "
                        "gradio: a gradio_client per visitor submitting /generate (the earlier tables)")
    args = p.parse_args(argv)
    from diffusion_core.runtime.machine import cpu_info
    checkpoints = Path(args.checkpoints)
    counts = dict(zip(args.scenarios, args.visitors * len(args.scenarios) if len(args.visitors) == 1
                      else args.visitors))
    reqs = {s: (live_request if s == "live" else example_request)(checkpoints, SCENARIOS[s]) for s in args.scenarios}
    record = {"cpu": cpu_info().model, "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
              "client": args.client,
              "command": "python benchmarks/classroom.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "requests": reqs, "runs": {}}
    if not args.no_loads:
        import torch
        torch.set_num_threads(os.cpu_count() or 1)
        record["first_load_s"] = first_loads(checkpoints)
        print("first loads:", json.dumps(record["first_load_s"]), flush=True)
    for mode in args.modes:
        proc, url = start_app(checkpoints, SERIAL_ENV if mode == "serial" else {})
        try:
            for s in args.scenarios:
                req = reqs[s]
                key = f"{s}/{mode}"
                load_s = None if req.get("live") else first_load_s(url, req)
                alone: dict = {}
                visitor_for(req, args.client)(url, req, time.perf_counter(), 0.0, alone)
                if "updates_s" in alone:
                    alone["done_s"] = sorted(alone["updates_s"])[len(alone["updates_s"]) // 2]  # one update alone
                time.sleep(1.0)
                load_avg = os.getloadavg()[0]
                spy = profile_server(proc.pid, Path(args.profile) / f"{s}-{mode}.txt") if args.profile else None
                r = run_class(url, req, counts[s], client=args.client, server_pid=proc.pid)
                if spy:
                    spy.send_signal(2)         # py-spy writes its profile on SIGINT
                    spy.wait(60)
                r.update(first_load_s=load_s, alone_s=round(alone.get("done_s", float("nan")), 3),
                         load_before=round(load_avg, 2))
                r["bound_s"] = round(1.2 * counts[s] * r["alone_s"], 1)    # 1.2 x total work / one run's rate
                record["runs"][key] = r
                print(key, json.dumps(r), flush=True)
                time.sleep(2.0)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    for s in args.scenarios:
        a, b = record["runs"].get(f"{s}/shared"), record["runs"].get(f"{s}/serial")
        if a and b and a["images_per_s"] and b["images_per_s"]:
            record["runs"][f"{s}/shared"]["vs_serial"] = round(a["images_per_s"] / b["images_per_s"], 2)
            print(f"{s}: shared / serial images/s = {a['images_per_s'] / b['images_per_s']:.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

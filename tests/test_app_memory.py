"""The app as a long-lived server: its memory stays flat over hundreds of requests from new sessions (issue 24,
item 7: each session kept its last run's steps in a gr.State without limit, ~36 KB a step at 32 px RGB; the fuzzing
took the app from 621 MB to 1.7 GB).

The app runs in a subprocess on 127.0.0.1 with two tiny models; 20 new gradio_client sessions send 10 requests each
(200 in all), among them one 40-step run of a 64 px RGB model whose kept steps weigh 5.6 MB. The server keeps the
Learn tab's runs of all sessions under one byte budget (DIFFUSION_KEPT_RUNS_MB, default 128; 8 here, so that 20
sessions pass it), and Gradio keeps at most DIFFUSION_SESSIONS sessions (default 200; each ~0.7 MB, measured).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_fixtures import free_port, tiny_unet  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SESSIONS = 20
REQUESTS_PER_SESSION = 10
WIDE_STEPS = 40                  # one run per session of the 64 px RGB model
BUDGET_MB = 8
# Measured on this workload (2 busy cores): with the budget, +58 to +91 MB in all (most of it over the first ~10
# sessions, the allocator settling; then ~0.7 MB a session, Gradio's own state) and +5 to +12 MB over the last 10
# sessions; with the runs in each session's gr.State (before), +182 MB, linear, +89 MB over the last 10. The bounds
# leave ~40 MB (in all) and ~18 MB (last 10 sessions) above the worst measured; unbounded runs break both.
BOUND_MB = 130
BOUND_LAST_HALF_MB = 30


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _models(root: Path) -> Path:
    from diffusion_core import ModelConfig, UNet, save_model
    small = ModelConfig(unet=tiny_unet(num_labels=0), description="16 px gray")
    # three levels, so the middle block's attention runs at 16 x 16 (at 64 x 64 one step took a second)
    wide = ModelConfig(unet=tiny_unet(image_size=64, in_channels=3, out_channels=3, channel_mults=(1, 1, 1)),
                       description="64 px RGB")
    for name, cfg in (("small", small), ("wide", wide)):
        save_model(root / name, cfg, UNet(cfg.unet).state_dict())
    return root


def _session(url: str, seed: int) -> int:
    """One new gradio_client session: 10 requests, a run of the wide model among them."""
    from gradio_client import Client
    c = Client(url, verbose=False)
    c.predict(model="small", api_name="/model_card")
    c.predict(model="small", steps=1, batch_size=1, seed=seed, api_name="/generate")
    c.predict(step=1, api_name="/explain_step")
    c.predict(model="wide", sampler="ddim", steps=WIDE_STEPS, batch_size=1, seed=seed, preview_every=WIDE_STEPS,
              api_name="/generate")
    md, *_ = c.predict(step=WIDE_STEPS, api_name="/explain_step")
    assert f"Step {WIDE_STEPS} of {WIDE_STEPS}" in md
    for model in ("wide", "small", "wide", "small", "wide"):
        c.predict(model=model, api_name="/model_card")
    return REQUESTS_PER_SESSION


@pytest.fixture
def app_process(tmp_path):
    port = free_port()
    env = dict(os.environ, DIFFUSION_CHECKPOINTS=str(_models(tmp_path / "ckpt")), GRADIO_SERVER_PORT=str(port),
               OMP_NUM_THREADS="1", DIFFUSION_THREADS="1", DIFFUSION_KEPT_RUNS_MB=str(BUDGET_MB),
               GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", TMPDIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                assert proc.poll() is None, "the app exited at start-up"
                time.sleep(0.5)
        yield proc, url
    finally:
        proc.kill()
        proc.wait()


def test_memory_stays_flat_over_many_new_sessions(app_process):
    proc, url = app_process
    _session(url, 0)        # warm-up: imports, plots and the models' caches
    start = rss_mb(proc.pid)
    sent, trace = 0, []
    for s in range(SESSIONS):
        sent += _session(url, 100 + s)
        trace.append(round(rss_mb(proc.pid) - start, 1))
    assert sent >= 200
    growth, last_half = trace[-1], trace[-1] - trace[SESSIONS // 2 - 1]
    print(f"RSS {start:.0f} MB after the warm-up, +{growth:.1f} MB after {sent} requests; per session: {trace}")
    where = f"over {sent} requests from {SESSIONS} sessions; RSS growth after each session (MB): {trace}"
    assert growth < BOUND_MB, f"RSS grew {growth:.0f} MB (bound {BOUND_MB} MB) {where}"
    assert last_half < BOUND_LAST_HALF_MB, \
        f"RSS grew {last_half:.0f} MB over the last {SESSIONS - SESSIONS // 2} sessions " \
        f"(bound {BOUND_LAST_HALF_MB} MB) {where}"


def test_kept_runs_stay_in_their_budget():
    """KeptRuns: the least recently used runs go first; a run that alone would pass the budget keeps what it has; a
    replaced or dropped run is no longer accounted."""
    from diffusion_app import runs
    runs = runs.KeptRuns(max_bytes=1000)
    a, b, c = {}, {}, {}
    for key, run in (("a", a), ("b", b)):
        runs.put(key, run)
        assert runs.grow(key, run, 400)
    assert runs.get("a") is a               # a used last: b goes first
    runs.put("c", c)
    assert runs.grow("c", c, 400)
    assert runs.get("b") is None and runs.get("a") is a and runs.get("c") is c and runs.nbytes == 800
    assert not runs.grow("c", c, 700) and runs.nbytes == 800      # c alone would pass 1000
    runs.put("a", {})                       # session a starts a new run: the old one is not accounted any more
    assert not runs.grow("a", a, 1) and runs.nbytes == 400
    runs.drop("c")
    assert runs.get("c") is None and runs.nbytes == 0


def test_a_run_over_the_budget_keeps_its_first_steps(tmp_path):
    """A 20-step UniPC run of the 16 px model with room for 3 steps: Explain answers for steps 1-3, with weights
    that reproduce each x_t', and says why not after; the note after the run says what is kept."""
    import gradio as gr

    import diffusion_app as app
    from app_fixtures import build_checkpoints
    state = app.DiffusionApp(str(build_checkpoints(tmp_path / "ckpt")))
    state.runs.max_bytes = 4 * 3 * 16 * 16 * 4      # the first step keeps 4 tensors of 1 KB, later ones 3

    class Request:
        session_hash = "s1"
    for out in state.generate("tiny", sampler="unipc", steps=20, batch_size=1, seed=1, request=Request()):
        pass
    key = out[-1]
    assert key == "s1" and len(state.runs.get(key)["steps"]) == 3
    _, note, _ = state.after_run(key, 1)
    assert "(3/20 steps; the first 3 fit in the server's" in note
    for step, order in ((1, 1), (2, 2), (3, 2)):    # UniPC lowers its order on the last steps of its grid: the
        md, *_, num = state.explain_step(step, key)     # explanation uses the run's whole grid, not the kept steps'
        assert f"Step {step} of 20" in md and num["order"] == order and num["residual_max"] < 1e-5, (step, num)
    with pytest.raises(gr.Error, match="step 4 is not kept: the server keeps the first 3 steps of this run"):
        state.explain_step(4, key)
    state.runs.drop(key)
    with pytest.raises(gr.Error, match="no longer kept"):
        state.explain_step(1, key)

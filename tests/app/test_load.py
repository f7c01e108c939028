"""Load: 8 concurrent clients x 5 requests against the launched app, with one sampling slot and a short waiting
line (diffusion_app/waiting.py).

Every request either completes, is cancelled by its client, or is refused by the full waiting line with its
message ("the server is full: ..."); nothing else. Memory stays bounded, no worker is left stuck, and the
app answers a fresh request at once afterwards. The measured numbers are printed (pytest -s) and go
into the reliability table (docs/reliability.md).
"""
from __future__ import annotations

import os
import threading
import time

import pytest

from app_fixtures import build_checkpoints, launch_app

CLIENTS, REQUESTS, QUEUE = 8, 5, 4


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.fixture(scope="module")
def loaded_app(tmp_path_factory):
    old = {k: os.environ.get(k) for k in ("DIFFUSION_WAITING", "DIFFUSION_SLOTS")}
    os.environ.update(DIFFUSION_WAITING=str(QUEUE), DIFFUSION_SLOTS="1")
    try:
        demo, url = launch_app(build_checkpoints(tmp_path_factory.mktemp("ckpt")))
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    yield demo, url
    demo.close()


def one_client(url: str, index: int, results: list, errors: list) -> None:
    from gradio_client import Client
    client = Client(url, verbose=False)
    cancel_mine = index % 2 == 1                  # half of the clients cancel their runs mid-way
    for r in range(REQUESTS):
        try:
            job = client.submit(model="tiny", steps=60 if cancel_mine else 12, batch_size=2, seed=100 * index + r,
                                preview_every=1, api_name="/generate")
            if cancel_mine:
                t0 = time.time()
                while not job.outputs() and not job.done() and time.time() - t0 < 120:
                    time.sleep(0.02)
                if job.done() and not job.outputs():     # refused before it started
                    job.result()
                job.cancel()
                results.append("cancelled")
                continue
            t0 = time.time()          # poll: iterating a job that the queue refused never ends (gradio_client)
            while not job.done() and time.time() - t0 < 300:
                time.sleep(0.02)
            job.result()              # raises the queue's refusal or the app's error
            outs = job.outputs()
            gal = outs[-1][2] if outs else None
            results.append("completed" if isinstance(gal, list) and len(gal) == 2 else f"bad output {outs[-1:]!r}")
        except Exception as e:                         # noqa: BLE001 - classified below
            text = str(e).lower()
            if "the server is full" in text:
                results.append("rejected")
            else:
                errors.append(f"client {index} request {r}: {type(e).__name__}: {e}")


def test_eight_clients_five_requests_each(loaded_app):
    demo, url = loaded_app
    from gradio_client import Client
    warm = Client(url, verbose=False)
    list(warm.submit(model="tiny", steps=2, batch_size=2, seed=0, api_name="/generate"))
    before = rss_mb()
    peak = [before]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    results: list[str] = []
    errors: list[str] = []
    t0 = time.time()
    threads = [threading.Thread(target=one_client, args=(url, i, results, errors)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    wall = time.time() - t0
    assert not any(t.is_alive() for t in threads), "a client hung"
    time.sleep(1.0)                                   # let cancelled runs notice and unwind
    after = rss_mb()
    done.set()
    watcher.join()

    assert not errors, errors
    assert len(results) == CLIENTS * REQUESTS
    counts = {k: results.count(k) for k in ("completed", "cancelled", "rejected")}
    assert sum(counts.values()) == len(results), results
    assert counts["completed"] >= 1 and counts["cancelled"] >= 1
    print(f"\nload: {CLIENTS} clients x {REQUESTS} requests, queue {QUEUE}: {counts}, {wall:.1f} s; "
          f"RSS {before:.0f} MB before, peak {peak[0]:.0f} MB, {after:.0f} MB after")
    assert peak[0] - before < 500, "memory grew by more than 500 MB"

    # no stuck worker: nothing is registered as running, and a fresh request is served at once
    deadline = time.time() + 30
    while demo.app_state._stops and time.time() < deadline:
        time.sleep(0.1)
    assert not demo.app_state._stops, f"runs still registered: {list(demo.app_state._stops)}"
    t1 = time.time()
    outs = list(warm.submit(model="tiny", steps=3, batch_size=1, seed=1, api_name="/generate"))
    assert isinstance(outs[-1][2], list) and len(outs[-1][2]) == 1
    assert time.time() - t1 < 60
    assert demo.app_state.waiting.counts() == (0, 0), "a slot or a place in line was never given back"


def test_a_waiting_visitor_sees_its_place_and_gets_the_slot_when_the_first_leaves(loaded_app):
    """One slot: a second visitor waits with its place, the runs ahead and an estimate in the status line; when the
    first visitor cancels, its rows leave the network and the second is admitted and finishes."""
    demo, url = loaded_app
    from gradio_client import Client
    first = Client(url, verbose=False).submit(model="tiny", steps=1000, batch_size=1, seed=1, api_name="/generate")
    t0 = time.time()
    while len(first.outputs()) < 2 and time.time() - t0 < 120:
        time.sleep(0.05)
    second = Client(url, verbose=False).submit(model="tiny", steps=3, batch_size=1, seed=2, api_name="/generate")
    t0 = time.time()
    while not any("Waiting for a turn" in str(o[1]) for o in second.outputs()) and time.time() - t0 < 60:
        time.sleep(0.05)
    waiting = [str(o[1]) for o in second.outputs() if "Waiting for a turn" in str(o[1])]
    assert waiting and "1 of 1 waiting · 1 run sampling now · starts in about" in waiting[0], second.outputs()
    assert demo.app_state.waiting.counts() == (1, 1)
    first.cancel()
    t0 = time.time()
    while not second.done() and time.time() - t0 < 120:
        time.sleep(0.05)
    outs = second.outputs()
    assert isinstance(outs[-1][2], list) and len(outs[-1][2]) == 1 and "Done" in str(outs[-1][1])
    t0 = time.time()
    while demo.app_state.waiting.counts() != (0, 0) and time.time() - t0 < 30:
        time.sleep(0.05)
    assert demo.app_state.waiting.counts() == (0, 0)

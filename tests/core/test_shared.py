"""Visitors share the network (runtime/shared.py): concurrent calls gathered into one network call per tick, each
caller getting exactly its rows; concurrent sampling runs bit-identical to the same runs made alone."""
import threading
import time

import pytest
import torch

from diffusion_core import load
from diffusion_core.conditioning import Condition
from diffusion_core.runtime import Cancelled, SharedNet


class SlowNet:
    """out = 2 x + t (broadcast), after ``delay`` seconds; records the batch size and timesteps of every call."""

    def __init__(self, delay=0.0):
        self.delay, self.sizes, self.ts, self.gate = delay, [], [], None

    def __call__(self, x_t, t, cond):
        self.sizes.append(x_t.shape[0])
        self.ts.append(t.tolist())
        if self.gate is not None:
            self.gate.wait(5)
        time.sleep(self.delay)
        out = 2 * x_t + t.view(-1, 1, 1, 1).float()
        if cond is not None and cond.labels is not None:
            out = out + cond.labels.sum(1).view(-1, 1, 1, 1)
        return out


def _call(shared, rows, t, labels=None, results=None, key=None, **kw):
    x = torch.full((rows, 1, 2, 2), float(t))
    cond = None if labels is None else Condition(labels=torch.full((rows, 3), float(labels)),
                                                 uncond=torch.zeros(rows, dtype=torch.bool))
    try:
        results[key] = shared(x, torch.full((rows,), t), cond, **kw)
    except Exception as err:       # noqa: BLE001  (the test inspects it)
        results[key] = err


def _start(target, *args, **kw):
    th = threading.Thread(target=target, args=args, kwargs=kw)
    th.start()
    return th


def _wait_first_tick(net):
    """Until the first call has reached the network (which then holds its tick open until its gate is set)."""
    for _ in range(500):
        if net.sizes:
            break
        time.sleep(0.01)


def _wait_pending(shared, n):
    for _ in range(500):
        if len(shared._pending) >= n:
            return
        time.sleep(0.01)
    raise AssertionError("calls did not arrive")


def test_calls_waiting_during_a_tick_share_the_next_one_and_get_their_own_rows():
    net = SlowNet()
    net.gate = threading.Event()            # the first tick blocks until the others are waiting
    shared, res = SharedNet(net), {}
    first = _start(_call, shared, 2, 1, results=res, key="a")
    _wait_first_tick(net)
    others = [_start(_call, shared, rows, t, results=res, key=t) for rows, t in ((3, 5), (1, 7), (4, 9))]
    _wait_pending(shared, 3)
    net.gate.set()
    for th in [first, *others]:
        th.join(10)
    assert net.sizes == [2, 3 + 1 + 4]                         # one tick alone, then one for the three waiting
    assert shared.stats.ticks == 2 and shared.stats.max_calls == 3 and shared.stats.rows == 10
    for rows, t in ((2, 1), (3, 5), (1, 7), (4, 9)):
        got = res["a" if t == 1 else t]
        assert got.shape == (rows, 1, 2, 2) and torch.equal(got, torch.full((rows, 1, 2, 2), 3.0 * t))


def test_calls_with_other_condition_fields_or_over_the_pixel_cap_wait_for_a_later_tick():
    net = SlowNet()
    net.gate = threading.Event()
    shared, res = SharedNet(net, max_pixels=6 * 4), {}          # 6 rows of 2x2 per tick
    first = _start(_call, shared, 1, 1, results=res, key="a")
    _wait_first_tick(net)
    ths = [_start(_call, shared, 4, 2, labels=None, results=res, key="b")]
    _wait_pending(shared, 1)
    ths.append(_start(_call, shared, 2, 3, labels=1.0, results=res, key="c"))    # labels: another key
    _wait_pending(shared, 2)
    ths.append(_start(_call, shared, 3, 4, labels=None, results=res, key="d"))   # b + d = 7 rows > 6
    _wait_pending(shared, 3)
    net.gate.set()
    for th in [first, *ths]:
        th.join(10)
    # the noisiest first (d, t 4); b cannot join it (3 + 4 rows > 6), c has labels: three ticks after the first
    assert net.sizes == [1, 3, 2, 4]
    assert torch.equal(res["c"], torch.full((2, 1, 2, 2), 9.0 + 3.0))    # 2x + t + sum(labels)
    assert torch.equal(res["d"], torch.full((3, 1, 2, 2), 12.0))


def test_a_tick_that_cannot_hold_every_call_takes_the_runs_that_have_come_least_far():
    """With more waiting than a tick holds, the calls at the highest timestep go first (a run's first step is its
    noisiest: a visitor who has just arrived gets a first preview before older runs take their next step), equal
    timesteps in arrival order; the rest wait for the next tick."""
    net = SlowNet()
    net.gate = threading.Event()
    shared, res = SharedNet(net, max_pixels=4 * 4), {}          # 4 rows of 2x2 per tick
    first = _start(_call, shared, 1, 1, results=res, key="a")
    _wait_first_tick(net)
    ths = []
    for n, (key, t) in enumerate((("b", 300), ("c", 999), ("d", 500), ("e", 999))):    # arrival order
        ths.append(_start(_call, shared, 2, t, results=res, key=key))
        _wait_pending(shared, n + 1)
    net.gate.set()
    for th in [first, *ths]:
        th.join(10)
    assert net.ts == [[1], [999, 999, 999, 999], [500, 500, 300, 300]]
    for key, t in (("b", 300), ("c", 999), ("d", 500), ("e", 999)):
        assert torch.equal(res[key], torch.full((2, 1, 2, 2), 3.0 * t))


def test_a_group_taken_past_a_call_of_another_key_leaves_that_call_waiting():
    """Pending [b (no labels), c (labels), d (no labels)]: the tick takes b and d past c. Taking d out of the line
    compared it with c (a dataclass's field-wise ==, on tensors), which raised inside the leader with the
    network marked busy: every later call then waited forever (the concurrent-runs test hung 3 times in 10)."""
    net = SlowNet()
    net.gate = threading.Event()
    shared, res = SharedNet(net), {}
    first = _start(_call, shared, 1, 1, results=res, key="a")
    _wait_first_tick(net)
    ths = [_start(_call, shared, 2, 2, results=res, key="b")]
    _wait_pending(shared, 1)
    ths.append(_start(_call, shared, 2, 3, labels=1.0, results=res, key="c"))
    _wait_pending(shared, 2)
    ths.append(_start(_call, shared, 2, 4, results=res, key="d"))
    _wait_pending(shared, 3)
    net.gate.set()
    for th in [first, *ths]:
        th.join(10)
    assert not any(th.is_alive() for th in [first, *ths]), "a caller waits forever"
    assert net.sizes == [1, 4, 2] and torch.equal(res["d"], torch.full((2, 1, 2, 2), 12.0))
    assert torch.equal(res["c"], torch.full((2, 1, 2, 2), 9.0 + 3.0)) and not shared._busy


def test_a_cancelled_run_is_dropped_while_it_waits_and_never_computed():
    net = SlowNet()
    net.gate = threading.Event()
    shared, res, stop = SharedNet(net), {}, threading.Event()
    first = _start(_call, shared, 2, 1, results=res, key="a")
    _wait_first_tick(net)
    waiting = _start(_call, shared, 5, 2, results=res, key="b", cancelled=stop.is_set)
    _wait_pending(shared, 1)
    stop.set()
    time.sleep(0.4)                     # a waiting call looks at its flag at least every 0.25 s
    net.gate.set()
    first.join(10)
    waiting.join(10)
    assert isinstance(res["b"], Cancelled) and net.sizes == [2]
    with pytest.raises(Cancelled):      # already cancelled: refused before it waits
        shared(torch.zeros(1, 1, 2, 2), torch.zeros(1, dtype=torch.long), None, cancelled=lambda: True)


def test_an_error_in_a_tick_reaches_every_caller_of_that_tick_only():
    class Boom(SlowNet):
        def __call__(self, x_t, t, cond):
            if x_t.shape[0] == 3:
                raise RuntimeError("boom")
            return super().__call__(x_t, t, cond)
    shared, res = SharedNet(Boom()), {}
    _call(shared, 3, 1, results=res, key="a")
    _call(shared, 2, 1, results=res, key="b")
    assert isinstance(res["a"], RuntimeError) and torch.equal(res["b"], torch.full((2, 1, 2, 2), 3.0))


RUNS = [dict(n=3, sampler="ddim", steps=6, guidance=2.0, labels=["b"], seed=5),
        dict(n=2, sampler="dpm++", steps=4, guidance=1.0, seed=11),                  # no labels: unconditional
        dict(n=4, sampler="ddpm", steps=5, guidance=3.0, labels=["c"], seed=0),
        dict(n=1, sampler="unipc", steps=7, spacing="karras", guidance=1.5, labels=["a"], seed=3)]


@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_runs_are_bit_identical_to_the_same_runs_alone(tmp_path, make_model, workers):
    """Four runs with other samplers, step counts, grids, guidance and labels, made at once through one loaded
    pipeline (so through one SharedNet), give exactly the images each gives alone; and they did share ticks."""
    make_model(tmp_path / "m", unet={"num_labels": 3}, label_names=("a", "b", "c"))
    pipe = load(tmp_path / "m")
    pipe.workers = workers
    alone = [pipe.sample(**r) for r in RUNS]
    shared = pipe.stages[0].shared_net(pipe.net)
    ticks_alone = shared.stats.ticks
    assert shared.stats.max_calls == 1
    out, barrier = {}, threading.Barrier(len(RUNS))

    def run(i):
        barrier.wait()
        out[i] = pipe.sample(**RUNS[i])
    ths = [_start(run, i) for i in range(len(RUNS))]
    for th in ths:
        th.join(60)
    for i in range(len(RUNS)):
        assert torch.equal(out[i], alone[i]), RUNS[i]
    assert shared.stats.max_calls >= 2                                    # the runs did share network calls
    assert shared.stats.ticks - ticks_alone < ticks_alone                # fewer ticks than the runs alone took


def test_a_stream_with_a_cancel_flag_stops_at_its_next_network_call(tmp_path, make_model):
    make_model(tmp_path / "m")
    pipe = load(tmp_path / "m")
    stop = threading.Event()
    seen = []
    with pytest.raises(Cancelled):
        for rec in pipe.stream(2, sampler="ddim", steps=10, seed=0, cancelled=stop.is_set):
            seen.append(rec.index)
            if rec.index == 2:
                stop.set()
    assert seen == [0, 1, 2]

"""Visitors share the network (runtime/shared.py): concurrent calls gathered into one network call per tick, each
caller getting exactly its rows; concurrent sampling runs bit-identical to the same runs made alone."""
import threading
import time
from dataclasses import replace

import pytest
import torch

from diffusion_core import load
from diffusion_core.conditioning import Condition
from diffusion_core.runtime import Cancelled, RowMemory, SharedNet


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


def _rows(rows, t, shift=0.0):
    """A call's x_t: every row its own (row i is t + shift + i / 4), so no two rows of one call are the same."""
    return float(t) + shift + torch.arange(rows, dtype=torch.float32).view(-1, 1, 1, 1).expand(rows, 1, 2, 2) / 4


def _want(rows, t, labels=0.0, shift=0.0):
    """SlowNet's output for ``_call``'s rows: 2 x + t + sum(labels)."""
    return 2 * _rows(rows, t, shift) + t + labels


def _call(shared, rows, t, labels=None, results=None, key=None, shift=0.0, **kw):
    x = _rows(rows, t, shift).contiguous()
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


def _held(max_pixels=None):
    """A SharedNet over a SlowNet whose first tick (call "a": 1 row at t 1) holds until ``net.gate`` is set, so
    that the calls started next wait together: (net, shared, results, the first call's thread)."""
    net = SlowNet()
    net.gate = threading.Event()
    shared, res = (SharedNet(net) if max_pixels is None else SharedNet(net, max_pixels=max_pixels)), {}
    first = _start(_call, shared, 1, 1, results=res, key="a")
    _wait_first_tick(net)
    return net, shared, res, first


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
        assert got.shape == (rows, 1, 2, 2) and torch.equal(got, _want(rows, t))


def test_calls_with_other_condition_fields_or_over_the_pixel_cap_wait_for_a_later_tick():
    net, shared, res, first = _held(6 * 4)          # 6 rows of 2x2 per tick
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
    assert torch.equal(res["c"], _want(2, 3, 3.0))    # 2x + t + sum(labels)
    assert torch.equal(res["d"], _want(3, 4))


def test_a_tick_that_cannot_hold_every_call_takes_the_runs_that_have_come_least_far():
    """With more waiting than a tick holds, the calls at the highest timestep go first (a run's first step is its
    noisiest: a visitor who has just arrived gets a first preview before older runs take their next step), equal
    timesteps in arrival order; the rest wait for the next tick."""
    net, shared, res, first = _held(4 * 4)          # 4 rows of 2x2 per tick
    ths = []
    calls = (("b", 300, 0.0), ("c", 999, 0.0), ("d", 500, 0.0), ("e", 999, 0.5))    # arrival order; c, e differ
    for n, (key, t, shift) in enumerate(calls):
        ths.append(_start(_call, shared, 2, t, results=res, key=key, shift=shift))
        _wait_pending(shared, n + 1)
    net.gate.set()
    for th in [first, *ths]:
        th.join(10)
    assert net.ts == [[1], [999, 999, 999, 999], [500, 500, 300, 300]]
    for key, t, shift in calls:
        assert torch.equal(res[key], _want(2, t, shift=shift))


def test_a_group_taken_past_a_call_of_another_key_leaves_that_call_waiting():
    """Pending [b (no labels), c (labels), d (no labels)]: the tick takes b and d past c. Taking d out of the line
    compared it with c (a dataclass's field-wise ==, on tensors), which raised inside the leader with the
    network marked busy: every later call then waited forever (the concurrent-runs test hung 3 times in 10)."""
    net, shared, res, first = _held()
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
    assert net.sizes == [1, 4, 2] and torch.equal(res["d"], _want(2, 4))
    assert torch.equal(res["c"], _want(2, 3, 3.0)) and not shared._busy


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
    assert isinstance(res["a"], RuntimeError) and torch.equal(res["b"], _want(2, 1))


def test_rows_asked_by_several_calls_in_one_tick_are_computed_once_and_each_caller_gets_them():
    """Two calls with the same rows (x_t, t and condition, bit for bit) cost the network their rows once; a call
    with the same x_t and t but other labels, or the same x_t at another t, is computed on its own rows."""
    net, shared, res, first = _held()
    ths = []
    for n, (key, t, labels) in enumerate((("b", 5, 1.0), ("c", 5, 1.0), ("d", 5, 2.0), ("e", 5, 1.0))):
        ths.append(_start(_call, shared, 3, t, labels=labels, results=res, key=key))
        _wait_pending(shared, n + 1)
    net.gate.set()
    for th in [first, *ths]:
        th.join(10)
    assert net.sizes == [1, 3 + 3]                      # b, c and e ask the same 3 rows; d's labels differ
    assert shared.stats.rows == 1 + 12 and shared.stats.repeated_rows == 6
    for key, labels in (("b", 1.0), ("c", 1.0), ("d", 2.0), ("e", 1.0)):
        assert torch.equal(res[key], _want(3, 5, 3 * labels)), key
    assert res["b"].data_ptr() != res["c"].data_ptr()     # each caller its own rows, not one shared tensor


def test_a_row_that_differs_in_one_bit_is_its_own_row():
    """Rows are the same only when every bit is: x_t one ulp apart, or t one apart, are computed separately."""
    net, shared, res, first = _held()
    x = _rows(2, 5).contiguous()
    nudged = x.clone()
    nudged[1, 0, 1, 1] = torch.nextafter(x[1, 0, 1, 1], torch.tensor(6.0))
    calls = (("b", x, 5), ("c", nudged, 5), ("d", x, 4))
    for n, (key, xs, t) in enumerate(calls):
        ths = _start(lambda k=key, xs=xs, t=t: res.__setitem__(k, shared(xs, torch.full((2,), t), None)))
        _wait_pending(shared, n + 1)
    net.gate.set()
    first.join(10)
    for _ in range(500):
        if len(res) == 4:
            break
        time.sleep(0.01)
    assert net.sizes == [1, 2 + 1 + 2]                  # c's first row is b's; its second and d's are their own
    for key, xs, t in calls:
        assert torch.equal(res[key], 2 * xs + t), key


def test_a_call_whose_rows_cannot_be_read_is_computed_and_jams_no_later_call():
    """A timestep given once for the whole batch (no entry per row) cannot be split into rows: the call is computed
    as its own rows, and the calls after it are served (reading rows inside a tick's leader once raised there and
    left the call waiting forever, failing every later tick)."""
    net = SlowNet()
    shared = SharedNet(net)
    x = _rows(3, 4).contiguous()
    assert torch.equal(shared(x, torch.tensor([4]), None), 2 * x + 4)
    assert torch.equal(shared(x, torch.tensor(4), None), 2 * x + 4)
    assert torch.equal(shared(x, torch.full((3,), 4), None), 2 * x + 4) and not shared._pending


def test_a_tick_counts_a_repeated_row_once_against_its_pixel_cap():
    net, shared, res, first = _held(4 * 4)          # 4 rows of 2x2 per tick
    ths = []
    for n, (key, t) in enumerate((("b", 9), ("c", 9), ("d", 9), ("e", 8))):
        ths.append(_start(_call, shared, 3, t, results=res, key=key))
        _wait_pending(shared, n + 1)
    net.gate.set()
    for th in [first, *ths]:
        th.join(10)
    assert net.ts == [[1], [9, 9, 9], [8, 8, 8]]       # b, c, d: 3 distinct rows fit; e's 3 more would not
    assert shared.stats.repeated_rows == 6


RUNS = [dict(n=3, sampler="ddim", steps=6, guidance=2.0, labels=["b"], seed=5),
        dict(n=2, sampler="dpm++", steps=4, guidance=1.0, seed=11),                  # no labels: unconditional
        dict(n=4, sampler="ddpm", steps=5, guidance=3.0, labels=["c"], seed=0),
        dict(n=1, sampler="unipc", steps=7, spacing="karras", guidance=1.5, labels=["a"], seed=3)]


def _alone_then_at_once(tmp_path, make_model, workers, runs):
    """``runs`` made one after another, then all at once, through one loaded pipeline (so through one SharedNet):
    (their images alone, their images at once, the SharedNet, a copy of its stats after the runs alone)."""
    make_model(tmp_path / "m", unet={"num_labels": 3}, label_names=("a", "b", "c"))
    pipe = load(tmp_path / "m")
    pipe.workers = workers
    alone = [pipe.sample(**r) for r in runs]
    shared = pipe.stages[0].shared_net(pipe.net)
    before = replace(shared.stats)
    out, barrier = {}, threading.Barrier(len(runs))

    def run(i):
        barrier.wait()
        out[i] = pipe.sample(**runs[i])
    ths = [_start(run, i) for i in range(len(runs))]
    for th in ths:
        th.join(60)
    return alone, [out[i] for i in range(len(runs))], shared, before


@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_runs_are_bit_identical_to_the_same_runs_alone(tmp_path, make_model, workers):
    """Four runs with other samplers, step counts, grids, guidance and labels, made at once through one loaded
    pipeline (so through one SharedNet), give exactly the images each gives alone; and they did share ticks."""
    alone, out, shared, before = _alone_then_at_once(tmp_path, make_model, workers, RUNS)
    assert before.max_calls == 1
    for i in range(len(RUNS)):
        assert torch.equal(out[i], alone[i]), RUNS[i]
    assert shared.stats.max_calls >= 2                                    # the runs did share network calls
    assert shared.stats.ticks - before.ticks < before.ticks              # fewer ticks than the runs alone took


SAME = [dict(n=4, sampler="dpm++3m", steps=5, guidance=2.0, labels=["b"], seed=7),
        dict(n=4, sampler="dpm++3m", steps=5, guidance=2.0, labels=["b"], seed=7),     # the same example again
        dict(n=2, sampler="dpm++3m", steps=5, guidance=2.0, labels=["b"], seed=9),     # image 0 is image 2 above
        dict(n=4, sampler="dpm++3m", steps=5, guidance=2.0, labels=["a"], seed=7),     # same noise, other class
        dict(n=3, sampler="ddim", steps=6, guidance=2.0, labels=["c"], seed=7)]


@pytest.mark.parametrize("workers", [1, 2])
def test_runs_asking_the_same_rows_at_once_are_bit_identical_to_the_same_runs_alone(tmp_path, make_model, workers):
    """A class pressing one example: the runs' identical rows are computed once per tick, and every run's images
    are exactly those it gives alone (the rows of a seed shared with another seed's batch included, and a run with
    the same noise but another class, whose rows differ in their labels, computed on its own)."""
    alone, out, shared, before = _alone_then_at_once(tmp_path, make_model, workers, SAME)
    assert before.repeated_rows == 0
    for i in range(len(SAME)):
        assert torch.equal(out[i], alone[i]), SAME[i]
    assert torch.equal(out[0], out[1]) and not torch.equal(out[0], out[3])
    assert shared.stats.repeated_rows > 0


class Times3:
    """Another network than SlowNet's: out = 3 x + t."""

    def __call__(self, x_t, t, cond):
        return 3 * x_t + t.view(-1, 1, 1, 1).float()


def test_rows_asked_again_later_are_answered_from_the_memory_without_a_tick():
    """A call whose rows were all computed before (by any caller) is answered from the RowMemory, with the network's
    own output for each row (2 x + t here, written out), and no tick; a call with one row not there is computed
    whole; another network sharing the memory never gets the first network's rows."""
    net, memory = SlowNet(), RowMemory(1 << 20)
    shared = SharedNet(net, memory=memory)
    x = _rows(4, 5).contiguous()
    assert torch.equal(shared(x, torch.full((4,), 5), None), 2 * x + 5) and net.sizes == [4]
    assert torch.equal(shared(x[2:].clone(), torch.full((2,), 5), None), 2 * x[2:] + 5)    # rows 2, 3 again
    assert torch.equal(shared(x[[3, 0]].clone(), torch.full((2,), 5), None), 2 * x[[3, 0]] + 5)
    assert net.sizes == [4] and shared.stats.remembered_rows == 4 and shared.stats.ticks == 1
    assert torch.equal(shared(x, torch.full((4,), 4), None), 2 * x + 4)        # the same x_t at another t
    y = torch.cat([x[:1], x[:1] + 1])                                          # one row there, one not
    assert torch.equal(shared(y, torch.full((2,), 5), None), 2 * y + 5)
    assert net.sizes == [4, 4, 2]
    other = SharedNet(Times3(), memory=memory)
    assert torch.equal(other(x, torch.full((4,), 5), None), 3 * x + 5)
    assert other.stats.remembered_rows == 0 and len(memory) == 4 + 4 + 1 + 4
    flat = x.reshape(4, 1, 1, 4)                                  # the same bytes in another shape: its own rows
    assert torch.equal(shared(flat, torch.full((4,), 5), None), 2 * flat + 5) and net.sizes[-1] == 4


def test_an_answer_changed_in_place_by_its_caller_changes_no_later_answer():
    """The memory keeps copies: a sampler writing into the output it got (from a tick or from the memory) does not
    change what the next caller of the same rows gets."""
    net = SlowNet()
    shared = SharedNet(net, memory=RowMemory(1 << 20))
    x = _rows(3, 2).contiguous()
    first = shared(x, torch.full((3,), 2), None)
    first.mul_(0)
    again = shared(x.clone(), torch.full((3,), 2), None)
    assert torch.equal(again, 2 * x + 2)
    again.add_(7)
    assert torch.equal(shared(x.clone(), torch.full((3,), 2), None), 2 * x + 2) and net.sizes == [3]


def test_the_memory_stays_within_its_bytes_dropping_the_least_recently_used():
    """Each row costs its output's bytes and 40 for its key: a budget of 3 rows of 2x2 floats keeps the 3 used
    last, a recalled row counting as used."""
    row = 4 * 4 + 40
    memory = RowMemory(3 * row)
    outs = {i: torch.full((1, 1, 2, 2), float(i)) for i in range(5)}
    for i in range(3):
        memory.keep(0, [bytes([i])], outs[i])
    assert memory.bytes == 3 * row and len(memory) == 3
    assert torch.equal(memory.recall(0, [bytes([0])]), outs[0])          # 0 used: 1 is now the oldest
    memory.keep(0, [bytes([3])], outs[3])
    assert memory.recall(0, [bytes([1])]) is None and memory.bytes == 3 * row
    assert [memory.recall(0, [bytes([i])]) is not None for i in (0, 2, 3)] == [True, True, True]
    memory.keep(0, [bytes([3])], outs[3])                                 # kept again: counted once
    assert memory.bytes == 3 * row
    assert memory.recall(1, [bytes([0])]) is None                         # another network's row 0
    RowMemory(row - 1).keep(0, [bytes([4])], outs[4])                     # a row over the whole budget: not kept


@pytest.mark.parametrize("workers", [1, 2])
def test_runs_made_again_from_the_memory_are_bit_identical_to_the_same_runs_alone(tmp_path, make_model, workers):
    """A class pressing one example, one visitor a few steps behind another: with a RowMemory, the run made again
    (and a seed whose images are another batch's last two) is answered from the memory without a tick, and every
    run gives exactly the images it gives on a pipeline without one; another class's run is computed."""
    make_model(tmp_path / "m", unet={"num_labels": 3}, label_names=("a", "b", "c"))
    plain = load(tmp_path / "m")
    plain.workers = workers
    alone = [plain.sample(**r) for r in SAME[:4]]
    pipe = load(tmp_path / "m")
    pipe.workers, pipe.row_memory = workers, RowMemory(64 << 20)
    shared = pipe.stages[0].shared_net(pipe.net)
    ticks = []
    for r, want in zip(SAME[:4], alone):
        before = shared.stats.ticks
        assert torch.equal(pipe.sample(**r), want), r
        ticks.append(shared.stats.ticks - before)
    assert ticks[0] > 0 and ticks[1] == 0 and ticks[2] == 0 and ticks[3] > 0
    assert shared.stats.remembered_rows > 0 and plain.stages[0].shared_net(plain.net).stats.remembered_rows == 0


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

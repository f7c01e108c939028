"""The app's waiting room (diffusion_app/waiting.py): admission in arrival order up to ``slots``, a bounded line
with a message that names it, and wait estimates checked against hand-computed lockstep schedules."""
from __future__ import annotations

import threading

import pytest

from diffusion_app.waiting import Ticket, WaitingRoom, simulate


def test_admits_up_to_slots_then_first_come_first_served():
    room = WaitingRoom(slots=2, max_waiting=3)
    a, b, c, d = (room.enter(10, 1.0) for _ in range(4))
    assert a.admitted and b.admitted and not c.admitted and not d.admitted
    assert (room.position(c), room.position(d), room.counts()) == (1, 2, (2, 2))
    room.leave(b)
    assert c.admitted and not d.admitted and room.position(d) == 1
    room.leave(d)           # a visitor who left while waiting: out of the line, nobody admitted for it
    assert room.counts() == (2, 0)
    e = room.enter(5, 1.0)
    assert not e.admitted and room.position(e) == 1


def test_a_full_line_is_refused_with_its_length_and_wait():
    room = WaitingRoom(slots=1, max_waiting=2)
    room.enter(10, 0.5)
    room.enter(10, 0.5)
    room.enter(10, 0.5)
    with pytest.raises(ValueError) as err:
        room.enter(10, 0.5)
    # the last waiting run starts after the running one (10 x 0.5 s) and the first waiting one (10 x 0.5 s)
    assert str(err.value) == ("the server is full: 2 runs are waiting (about 10 s before the last starts); try again "
                              "in a few minutes")


def test_wait_blocks_until_admitted():
    room = WaitingRoom(slots=1)
    a, b = room.enter(1, 1.0), room.enter(1, 1.0)
    assert room.wait(b, 0.01) is False
    threading.Timer(0.05, room.leave, [a]).start()
    assert room.wait(b, 5.0) is True


def test_estimates_follow_the_lockstep_schedule():
    """Hand-computed: slots 2; running: A with 4 steps left at 1 s a step, B with 2 left at 3 s; waiting: C (3 steps
    of 2 s), then D (1 step of 1 s). Every tick costs the sum of the step costs of the runs in it:
    ticks 1-2: A+B = 4 s each -> t = 8, B ends, C starts at 8;
    ticks 3-4: A+C = 3 s each -> t = 14, A ends, D starts at 14;
    tick 5: C+D = 3 s -> t = 17, C (3 steps: ticks 3, 4, 5) and D end at 17."""
    room = WaitingRoom(slots=2)
    a, b = room.enter(6, 1.0), room.enter(2, 3.0)
    a.done = 2
    c, d = room.enter(3, 2.0), room.enter(1, 1.0)
    assert room.estimate(c) == (8.0, 17.0)
    assert room.estimate(d) == (14.0, 17.0)
    assert room.estimate(b) == (0.0, 8.0) and room.estimate(a) == (0.0, 14.0)


def test_simulate_alone_and_with_equal_runs():
    """One run alone: its steps x its step cost. n equal runs in n slots: each tick costs n step costs, so each ends
    at n x its time alone (the throughput is shared); in 1 slot, the k-th starts after k-1 runs."""
    me = Ticket(25, 0.04)
    assert simulate([], [me], 4, me) == (0.0, pytest.approx(1.0))
    runs = [Ticket(25, 0.04) for _ in range(3)]
    assert simulate([], runs, 3, runs[2]) == (0.0, pytest.approx(3.0))
    start, end = simulate([], runs, 1, runs[2])
    assert (start, end) == (pytest.approx(2.0), pytest.approx(3.0))


def test_estimates_learn_from_the_runs_that_finished():
    """The simulation counts network seconds only; a run that took twice its prediction (the sampler's own work,
    previews, other load) makes the next estimates twice as long. A stopped run teaches nothing."""
    import time
    room = WaitingRoom(slots=1)
    a = room.enter(2, 1.0)
    assert a.predicted == 2.0 and room.correction == 1.0
    a.started, a.done = time.monotonic() - 4.0, 2          # it ran both steps in 4 s
    room.leave(a)
    assert room.correction == pytest.approx(2.0, rel=0.01)
    b, c = room.enter(3, 1.0), room.enter(1, 1.0)
    assert room.estimate(c) == (pytest.approx(6.0, rel=0.01), pytest.approx(8.0, rel=0.01))
    b.started = time.monotonic() - 100.0                    # stopped after 0 of 3 steps: not a lesson
    room.leave(b)
    assert room.correction == pytest.approx(2.0, rel=0.01)


def test_a_run_whose_cost_was_guessed_teaches_the_estimates_nothing():
    """Before a network's first tick its step cost is a FLOP count at a guessed rate: how far off that was says
    nothing about the next estimates (the first runs of a fresh server made them 4.5x too long)."""
    import time
    room = WaitingRoom(slots=1)
    a = room.enter(2, 1.0, measured=False)
    a.started, a.done = time.monotonic() - 10.0, 2
    room.leave(a)
    assert room.correction == 1.0


def test_runs_asking_for_the_same_rows_are_priced_once():
    """Issue 34: runs of one example and seed (equal ``same`` keys) cost the network once: a run behind another adds
    nothing to a round and ends with it (its steps so far are remembered), and one whose key ended lately ends as it
    starts. Worked by hand, 2 slots: A (10 steps of 1 s) has run 4 when B (the same rows) is admitted; C (5 steps of
    1 s, its own rows) waits. Rounds cost A's 1 s: A and B end at 6 s, C runs 6 -> 11 s. Priced as three runs,
    rounds would cost 2 s: A ends at 12 s, C starts there and ends at 21 s (B's last 4 rounds at 2 s, then 1 s).
    Then D (A's rows, ended lately) beside C ends as it starts, and E (3 steps of 2 s) waiting behind them takes
    D's slot at once."""
    room = WaitingRoom(slots=2, max_waiting=5)
    a = room.enter(10, 1.0, same="example", measured=False)     # (unmeasured: their instant ends teach nothing)
    for _ in range(4):
        room.stepped(a)
    b = room.enter(10, 1.0, same="example", measured=False)
    c = room.enter(5, 1.0)
    assert not c.admitted and room.estimate(c) == (6.0, 11.0) and room.estimate(b) == (0.0, 6.0)
    for t in (a, b):
        t.done = t.steps
        room.leave(t)
    assert c.admitted
    d = room.enter(10, 1.0, same="example")      # A's rows are remembered: it ends as it starts
    e = room.enter(3, 2.0, same="other")
    assert d.admitted and room.estimate(d) == (0.0, 0.0) and not e.admitted
    assert room.estimate(e) == (0.0, 9.0)         # D's slot is free at once; rounds of C's 1 s and E's 2 s


def test_generate_gives_runs_of_the_same_rows_one_same_rows_key(tmp_path):
    """Generate enters each run with a key that is equal for the same model, settings and seed, and differs for
    another seed or class; None with an input image (its rows cannot be told cheaply) or without a row memory."""
    from app_fixtures import build_checkpoints

    from diffusion_app.application import DiffusionApp
    app = DiffusionApp(build_checkpoints(tmp_path / "ckpt"))
    keys = []
    enter = app.waiting.enter
    app.waiting.enter = lambda *a, **k: (keys.append(k.get("same")), enter(*a, **k))[1]
    runs = [dict(seed=1, class_label="Coat"), dict(seed=1, class_label="Coat"), dict(seed=2, class_label="Coat"),
            dict(seed=1, class_label="Bag")]
    for r in runs:
        list(app.generate("tiny", "ddim", 3, batch_size=2, **r))
    assert keys[0] is not None and keys[0] == keys[1] and len({keys[0], keys[2], keys[3]}) == 3
    list(app.generate("tiny", "ddim", 3, batch_size=2, seed=1, init_image=str(tmp_path / "ckpt" / "tiny" / "samples.png")))
    app.models.rows.max_bytes = 0
    list(app.generate("tiny", "ddim", 3, batch_size=2, seed=1, class_label="Coat"))
    assert keys[4:] == [None, None]

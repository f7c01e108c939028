"""The waiting room: how many sampling runs a busy server admits at once, and what everyone else is told.

A run admitted here samples at once; its network calls meet those of every other admitted run of the same
network in ``runtime.SharedNet`` ticks, so each round of ticks advances every admitted run by one step. Runs beyond
``slots`` wait in arrival order, holding no thread (the page's handler awaits its turn), and see their place and
an estimate that is recomputed from what the server is doing:

    the admitted runs advance in lockstep: a round of ticks costs the sum of their step costs, and each run's step
    cost is its input pixels per step x the measured seconds per pixel of its network (``SharedNet.stats``). The queue
    is simulated round by round: when a run ends, the first waiting run takes its slot. That gives every waiting
    run its start and its end.

Why ``slots`` (``DIFFUSION_SLOTS``, default 32): the network is at its throughput with a few runs per tick
(``runtime.shared``), so more admitted runs would not make the machine faster, only every admitted run slower
(each advances one step per round of ticks over all of them); a class of 30 is admitted at once. Each admitted
run holds its own images and previews (a few MB for 16 images of 128 px), bounded by this. ``DIFFUSION_WAITING``
(default 1000) bounds the waiting line: a waiting run holds only its request, about a kilobyte, and one more
beyond it is told how long the line is.
"""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

from diffusion_core import network_cost

from .render import fmt_duration

DEFAULT_FLOPS_PER_S = 2e10      # until a tick has been measured here: about what 2 cores give a small U-Net


@dataclass
class Waiting:
    """What ``generate(..., poll=True)`` yields while its run waits for a slot: the page's outputs (the status
    line) and the ticket, which the page's handler watches without holding a thread (``generate_queued``)."""

    outputs: tuple
    ticket: object


@dataclass(eq=False)
class Ticket:
    """One run's place: ``steps`` (network steps in all), ``step_cost`` (estimated seconds of one step alone in a
    tick, i.e. its pixels x seconds per pixel); ``done`` counts the steps it has run once admitted."""

    steps: int
    step_cost: float
    order: int = 0
    admitted: bool = False
    done: int = 0
    since: float = field(default_factory=time.monotonic)
    started: float | None = None        # when it was admitted ...
    predicted: float | None = None      # ... and the seconds the simulation then gave it
    measured: bool = True               # its step cost came from measured ticks (else from FLOPs at a guess)
    same: object = None                 # equal for runs that ask the network for the same rows (None: unknown)


class WaitingRoom:
    RECENT = 16

    def __init__(self, slots: int = 32, max_waiting: int = 1000):
        self.slots, self.max_waiting = max(1, int(slots)), max(0, int(max_waiting))
        self._cv = threading.Condition()
        self._active: list[Ticket] = []
        self._waiting: list[Ticket] = []
        self._order = itertools.count()
        self._ratios: list[float] = []      # actual / predicted seconds of the last runs that finished
        self._finished: list = []           # the ``same`` keys of the last runs that ran all their steps
    # ---- admission ----------------------------------------------------------------------------
    def enter(self, steps: int, step_cost: float, measured: bool = True, same=None) -> Ticket:
        """A place for a run of ``steps`` steps of ``step_cost`` seconds each (``measured``: from ticks measured
        here); admitted at once when a slot is free and nobody waits. ValueError when the waiting line is full
        (its length and wait named). ``same``: a key equal for runs that ask the network for the same rows (one
        model, its settings and seed), which a server computes once for them all (``simulate`` says how)."""
        t = Ticket(max(1, int(steps)), max(0.0, float(step_cost)), measured=bool(measured), same=same)
        with self._cv:
            if len(self._active) < self.slots and not self._waiting:
                self._start(t)
                return t
            if len(self._waiting) >= self.max_waiting:
                start, _ = self.estimate(self._waiting[-1])
                raise ValueError(f"the server is full: {len(self._waiting)} runs are waiting (about "
                                 f"{fmt_duration(start)} before the last starts); try again in a few minutes")
            t.order = next(self._order)
            self._waiting.append(t)
            return t

    def leave(self, t: Ticket) -> None:
        """The run ended, was stopped, or its visitor left: its slot goes to the first waiting run. A run that ran
        all its steps teaches the estimates how far off they were (``correction``)."""
        with self._cv:
            if t in self._active:
                self._active.remove(t)
                if t.same is not None and t.done >= t.steps:
                    self._finished = (self._finished + [t.same])[-self.RECENT:]
                if t.done >= t.steps and t.predicted and t.measured:     # a guessed cost teaches nothing
                    self._ratios = (self._ratios + [(time.monotonic() - t.started) / t.predicted])[-self.RECENT:]
            elif t in self._waiting:
                self._waiting.remove(t)
            self._admit()
            self._cv.notify_all()

    def _admit(self) -> None:
        while self._waiting and len(self._active) < self.slots:
            self._start(self._waiting.pop(0))

    def _start(self, t: Ticket) -> None:
        t.admitted, t.started = True, time.monotonic()
        self._active.append(t)
        t.predicted = simulate(self._left(), [], self.slots, t, self._finished)[1]

    def _left(self) -> list:
        """[steps left, step cost, ticket] of every admitted run, as ``simulate`` takes them (under the lock)."""
        return [[max(1, a.steps - a.done), a.step_cost, a] for a in self._active]

    def wait(self, t: Ticket, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for ``t``'s turn; whether it is admitted."""
        with self._cv:
            self._cv.wait_for(lambda: t.admitted, timeout)
            return t.admitted

    def stepped(self, t: Ticket) -> None:
        t.done += 1

    # ---- what waiting visitors are told ---------------------------------------------------------
    def position(self, t: Ticket) -> int:
        """1 for the first waiting run; 0 once admitted."""
        with self._cv:
            return 0 if t.admitted else self._waiting.index(t) + 1 if t in self._waiting else 0

    def counts(self) -> tuple[int, int]:
        """(runs sampling, runs waiting)."""
        with self._cv:
            return len(self._active), len(self._waiting)

    def estimate(self, t: Ticket) -> tuple[float, float]:
        """(seconds until ``t`` starts, seconds until it ends) from now, by the lockstep simulation of the module's
        docstring (0 start for an admitted run)."""
        with self._cv:
            active = self._left()
            waiting = list(self._waiting)
            k = self.correction
            finished = list(self._finished)
        start, end = simulate(active, waiting, self.slots, t, finished)
        return start * k, end * k

    @property
    def correction(self) -> float:
        """Median of actual / predicted seconds over the last RECENT runs that finished (1 before any): what the
        network's measured seconds leave out (the sampler's own work, previews, the page's traffic) and the
        machine's other load, learnt from the runs themselves."""
        r = sorted(self._ratios)
        return r[(len(r) - 1) // 2] if r else 1.0


def simulate(active: list, waiting: list[Ticket], slots: int, mine: Ticket, finished=()) -> tuple[float, float]:
    """Ticks until ``mine`` starts and ends: ``active`` holds [steps left, step cost, ticket]; every tick advances
    each active run one step and costs the sum of their step costs; a finished run's slot goes to the next in
    ``waiting``. Runs that finish together leave together (one event per distinct finishing step).

    Runs that ask for the same rows (equal ``same`` keys) cost the network once (rows computed once per tick, and
    kept in the RowMemory for the runs behind): a run with the key of an earlier active run adds nothing to a tick
    and ends when that run ends (its steps up to there are remembered), and one whose key is in ``finished`` (runs
    that ended lately) ends as it starts."""
    now, start = 0.0, None
    queue = list(waiting)
    active = [list(a) for a in active]
    for i, a in enumerate(active):
        _priced(a, active[:i], finished)
    while True:
        while queue and len(active) < slots:
            w = queue.pop(0)
            active.append(_priced([w.steps, w.step_cost, w], active, finished))
        if start is None and any(a[2] is mine for a in active):
            start = now
        if not active:
            return now, now
        k = min(a[0] for a in active)
        now += k * sum(a[1] for a in active)
        for a in active:
            a[0] -= k
        if any(a[2] is mine and a[0] <= 0 for a in active):
            return start or 0.0, now
        active = [a for a in active if a[0] > 0]


def _priced(entry: list, before: list, finished) -> list:
    """``entry`` ([steps left, step cost, ticket]) priced against the runs ``before`` it (see ``simulate``)."""
    same = entry[2].same
    if same is None:
        return entry
    if same in finished:
        entry[0], entry[1] = 0, 0.0
        return entry
    for b in before:
        if b[2].same == same and b[1] > 0:
            entry[0], entry[1] = min(entry[0], b[0]), 0.0
            break
    return entry


# ---- a run's cost ------------------------------------------------------------------------------
def seconds_per_flop(pipes) -> float:
    """Seconds per network FLOP on this machine now: the median over every stage of ``pipes`` that has run ticks
    (its SharedNet's seconds per pixel / FLOPs per pixel); 1 / DEFAULT_FLOPS_PER_S before any."""
    rates = []
    for pipe in pipes:
        for st in pipe.stages:
            spp = _stage_spp(st)
            if spp is not None:
                rates.append(spp / _flops_per_pixel(st))
    return sorted(rates)[len(rates) // 2] if rates else 1.0 / DEFAULT_FLOPS_PER_S


def _stage_spp(stage) -> float | None:
    rates = [s.stats.seconds_per_pixel for _, s in list(stage.shared.values())]
    rates = [r for r in rates if r is not None]
    return sorted(rates)[len(rates) // 2] if rates else None


def _flops_per_pixel(stage) -> float:
    side = stage.config.unet.image_size
    return network_cost(stage.config.unet, side)[0] / side**2


def run_cost(pipe, batch: int, steps: int, guidance: float, spf: float, sr_steps: int | None = None,
             from_low_res: bool = False) -> tuple[int, float, bool]:
    """(network steps, estimated seconds of one step in a tick, whether every stage's cost was measured) of a run
    of ``batch`` images: each stage's steps x rows (twice the images when guidance needs the unconditional pass
    too) x its input pixels x its measured seconds per pixel (else ``spf`` x its FLOPs per pixel), averaged over
    the run's steps."""
    sizes = pipe.stage_sizes
    total_steps, seconds, measured = 0, 0.0, True
    for i, st in enumerate(pipe.stages):
        if from_low_res and i == 0 and len(pipe.stages) > 1:
            continue
        n = steps if i == 0 else st.run_steps(sr_steps)
        cfg = st.config
        guided = guidance != 1.0 and not cfg.unet.guidance_embedding and (cfg.unet.num_labels or cfg.task == "pose")
        rows = batch * (2 if guided else 1)
        spp = _stage_spp(st)
        measured &= spp is not None
        spp = spp if spp is not None else spf * _flops_per_pixel(st)
        total_steps += n
        seconds += n * rows * sizes[i] ** 2 * spp
    return max(1, total_steps), seconds / max(1, total_steps), measured

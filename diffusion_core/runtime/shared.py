"""Visitors share the network: ``SharedNet`` gathers the calls of concurrent sampling runs into one network call
per *tick*, with the network's own signature ``net(x_t, t, cond) -> output`` (DESIGN.md habit 15).

A served page runs one sampling loop per visitor, each in its own thread. Left alone, every loop calls the
network on its few rows (4 guided images: 8 rows) and the calls take turns, each too small to keep two cores
busy. Behind a ``SharedNet`` a call waits while a tick runs; when the network frees up, the first waiting
caller becomes the tick's *leader*: it takes the waiting call whose run has come least far (the highest timestep)
and every other call that can share a batch with it (same image shape and the same condition fields), in that
order, up to ``max_pixels`` of input, concatenates their rows, calls the network once, and hands each caller its
rows. Every run keeps its own sampler, step, guidance and timesteps: only the network call is shared. A run alone
never waits: it leads its own ticks. Least progress first means a visitor who has just arrived gets a first step
(and a first preview) in the next tick with room, instead of after the next step of every older run.

    run A ──x_t,t,c──┐                ┌──> A's rows
    run B ──x_t,t,c──┼─> [tick: cat] ─┼──> B's rows        one network call per tick;
    run C ──x_t,t,c──┘    net(...)    └──> C's rows        calls arriving meanwhile wait for the next

Why a tick holds at most ``MAX_TICK_PIXELS`` (64 rows at 32 px): on 2 cores the network's throughput is nearly
flat above ~32 rows (190 rows/s at 64, 214 at 256, fashion's U-Net through its ``ChunkedNet``), while a newcomer
waits for the tick in flight before its own. With 30 runs of fashion's example arriving within 1 s, 256-row ticks
in arrival order gave a first step at p95 1.65-2.64 s, 64-row ticks least progress first 0.48-0.83 s, at the same
images/s within the noise (``experiments/tick_policy.py``, docs/measurements/classroom-tick-policy.txt).

Results: the rows are computed by the wrapped callable, normally a ``ChunkedNet`` whose fixed-size chunks give
each row the same bits in any batch (chunked.py), so a run's images are bit-identical to the same run made alone
(fp32; ``tests/core/test_shared.py`` runs concurrent runs and compares). Conditions are concatenated only between
calls whose fields are the same (present or absent), so no field is filled in for a run that did not have it.

Rows asked again later: a ``RowMemory`` (optional, shared by every ``SharedNet`` given it) keeps the outputs of
recent rows by network and exact input bits, within a byte budget, least recently used out first. A call whose
rows are all there is answered from it at once, without waiting for a tick. A class pressing one example starts
its runs a few ticks apart, each at a different step from the others, so no tick holds two runs' same row; the
runs behind find every row they ask for already computed by the first, and the class costs the network about one
run. The images are the same bits, for the reason above (a row's output does not depend on its batch). A served
app sets one (diffusion_app.models); a script sampling alone never asks for a row twice and has none.

``stats`` counts ticks, rows and seconds: ``seconds_per_pixel`` (one input pixel of one row through the network,
measured on ticks) is what a server's wait estimates read.
"""
from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Hashable

import torch

from ..conditioning import Condition

MAX_TICK_PIXELS = 64 * 32 * 32      # input rows x pixels per tick: 64 rows at 32 px (about 0.35 s on 2 cores)


class Cancelled(Exception):
    """The caller's run was cancelled while its rows waited for a tick; they were never computed."""


@dataclass(eq=False)        # compared by identity: list.remove must never compare two calls' tensors
class _Call:
    x_t: torch.Tensor
    t: torch.Tensor
    cond: Condition | None
    cancelled: Callable[[], bool] | None = None
    out: torch.Tensor | None = None
    error: BaseException | None = None
    done: bool = False

    @property
    def key(self) -> tuple:
        """Calls with equal keys can share one network call (``torch.cat`` of every tensor)."""
        c = self.cond
        fields = () if c is None else tuple(None if v is None else (tuple(v.shape[1:]), v.dtype) for v in c._fields())
        return tuple(self.x_t.shape[1:]), self.x_t.dtype, self.x_t.device, self.t.dtype, fields

    @property
    def noise_level(self) -> float:
        """The call's highest timestep: how far its run still has to go (a run's first step is its noisiest)."""
        return float(self.t.max()) if self.t.numel() else 0.0

    @property
    def pixels(self) -> int:
        return int(self.x_t.shape[0] * self.x_t.shape[-1] * self.x_t.shape[-2])

    @property
    def row_pixels(self) -> int:
        return int(self.x_t.shape[-1] * self.x_t.shape[-2])

    rows: list[bytes] | None = None     # each row's exact bits (read_rows), None where they cannot be read
    digests: list[bytes] | None = None  # their RowMemory digests, where the SharedNet has a memory

    def read_rows(self) -> None:
        """Each row's exact bits (x_t, t and every condition field), for finding rows that several runs ask for
        at once. Left None where the tensors are not on the CPU (reading them back would cost more than it saves)
        or cannot be read row by row (a timestep given once for the batch): such a call's rows count as its own.
        Done in the caller's thread, before the call waits, so that nothing here can fail inside a tick's leader."""
        try:
            if self.x_t.device.type != "cpu":
                return
            fields = [] if self.cond is None else [v for v in self.cond._fields() if v is not None]
            tensors = (self.x_t, self.t, *fields)
            parts = [v.detach().reshape(v.shape[0], -1).contiguous().view(torch.uint8).numpy() for v in tensors]
            self.rows = [b"".join(p[i].tobytes() for p in parts) for i in range(self.x_t.shape[0])]
        except Exception:       # noqa: BLE001 - a dtype numpy cannot view, say: the rows are simply not shared
            self.rows = None


@dataclass
class Stats:
    ticks: int = 0
    calls: int = 0
    rows: int = 0
    pixels: int = 0
    seconds: float = 0.0
    max_calls: int = 0                    # the most calls one tick gathered
    repeated_rows: int = 0                # rows asked again in the same tick, computed once and copied
    remembered_rows: int = 0              # rows answered from the RowMemory, without a tick
    recent: list = field(default_factory=list)    # seconds per pixel of the last ticks

    @property
    def seconds_per_pixel(self) -> float | None:
        """Median over the last ticks of seconds per input pixel-row (None before the first tick)."""
        if not self.recent:
            return None
        return sorted(self.recent)[len(self.recent) // 2]


class RowMemory:
    """The outputs of recent rows, by network (``net``: any hashable naming it and the rows' shapes and dtypes) and
    the ``digest`` of their exact input bits (x_t, t and every condition field: ``_Call.read_rows``), within
    ``max_bytes`` (outputs and keys), least recently used out first. Shared by every ``SharedNet`` given it: one
    budget for all of a server's networks. Thread-safe."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self._rows: OrderedDict[tuple[Hashable, bytes], torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def digest(row: bytes) -> bytes:
        return hashlib.blake2b(row, digest_size=32).digest()

    @staticmethod
    def _size(out: torch.Tensor) -> int:
        return out.nbytes + 32 + 8

    def recall(self, net: Hashable, digests: list[bytes]) -> torch.Tensor | None:
        """The outputs of the rows ``digests`` of network ``net`` stacked in order, or None unless every one is here."""
        keys = [(net, d) for d in digests]
        with self._lock:
            found = [self._rows.get(k) for k in keys]
            if any(o is None for o in found):
                return None
            for k in keys:
                self._rows.move_to_end(k)
        return torch.stack(found)

    def keep(self, net: Hashable, digests: list[bytes], out) -> None:
        """Remember row i's output ``out[i]`` (a copy of it), dropping the least recently used beyond the budget."""
        entries = [((net, d), out[i].clone()) for i, d in enumerate(digests)]
        with self._lock:
            for k, o in entries:
                old = self._rows.pop(k, None)
                if old is not None:
                    self.bytes -= self._size(old)
                if self._size(o) > self.max_bytes:
                    continue
                self._rows[k] = o
                self.bytes += self._size(o)
            while self.bytes > self.max_bytes:
                _, o = self._rows.popitem(last=False)
                self.bytes -= self._size(o)

    def __len__(self) -> int:
        return len(self._rows)


_net_ids = itertools.count()


class SharedNet:
    """``net`` shared by concurrent callers: each tick is one call of ``net`` on the rows of every waiting call that
    fits (see the module's docstring)."""

    RECENT = 16

    def __init__(self, net: Callable, max_pixels: int = MAX_TICK_PIXELS, memory: RowMemory | None = None):
        self.net, self.max_pixels, self.memory = net, int(max_pixels), memory
        self._id = next(_net_ids)           # this network's rows in the memory (never reused, unlike id())
        self._cv = threading.Condition()
        self._pending: list[_Call] = []
        self._busy = False
        self.stats = Stats()

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition | None,
                 cancelled: Callable[[], bool] | None = None) -> torch.Tensor:
        """The network's output for these rows, computed in the next tick that has room for them. ``cancelled``:
        checked while the rows wait; once it returns True they are dropped uncomputed and ``Cancelled`` is raised
        (a run stopped by its visitor stops within one network call)."""
        if cancelled is not None and cancelled():
            raise Cancelled("the run was cancelled")
        call = _Call(x_t, t, cond, cancelled)
        call.read_rows()
        if self.memory is not None and call.rows is not None:
            call.digests = [RowMemory.digest(r) for r in call.rows]      # hashed once: recalled, then kept
            out = self.memory.recall(self._memory_net(call), call.digests)
            if out is not None:
                with self._cv:
                    self.stats.remembered_rows += len(call.rows)
                return out
        with self._cv:
            self._pending.append(call)
        while True:
            with self._cv:
                while self._busy and not call.done:
                    self._cv.wait(0.25)
                    self._drop_cancelled()
                if call.done:
                    break
                self._busy = True
            try:                    # busy is cleared whatever happens, or every later caller waits forever
                with self._cv:
                    group = self._take()
                self._tick(group)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()
        if call.error is not None:
            raise call.error
        return call.out

    def _memory_net(self, call: _Call) -> tuple:
        """The call's network in the memory: this SharedNet and the call's shapes and dtypes."""
        return (self._id, call.key)

    def _remember(self, group: list[_Call]) -> None:
        """Every distinct row the tick computed, once (a row several callers asked for is kept once)."""
        seen, digests, outs = set(), [], []
        for c in group:
            for d, o in zip(c.digests or (), c.out):
                if d not in seen:
                    seen.add(d)
                    digests.append(d)
                    outs.append(o)
        self.memory.keep(self._memory_net(group[0]), digests, outs)

    def _drop_cancelled(self) -> None:
        for c in [c for c in self._pending if c.cancelled is not None and c.cancelled()]:
            self._pending.remove(c)
            c.error, c.done = Cancelled("the run was cancelled"), True

    def _take(self) -> list[_Call]:
        """The waiting call whose run has come least far (the highest timestep; among equals the oldest) and, in
        that order, every other call with its key while the tick's pixels stay within ``max_pixels`` (the first
        always goes, however large). Least progress first: a run that has just arrived gets its first step in the
        next tick instead of after one more step of every older run, so everyone sees a first preview soon."""
        self._drop_cancelled()
        if not self._pending:
            return []
        order = sorted(self._pending, key=lambda c: -c.noise_level)     # stable: arrival order among equals
        key, group, pixels, seen = order[0].key, [], 0, set()
        for c in order:
            if c.key != key:
                continue
            rows = c.rows
            new = c.pixels if rows is None else c.row_pixels * len(set(rows) - seen)   # a row asked twice costs once
            if not group or pixels + new <= self.max_pixels:
                group.append(c)
                pixels += new
                seen.update(rows or ())
        for c in group:
            self._pending.remove(c)
        return group

    def _tick(self, group: list[_Call]) -> None:
        if not group:
            return
        start, computed = time.perf_counter(), sum(c.x_t.shape[0] for c in group)
        try:
            if len(group) == 1:
                outs = [self.net(group[0].x_t, group[0].t, group[0].cond)]
            else:
                conds = [c.cond for c in group]
                cond = None if conds[0] is None else Condition(
                    *(None if v[0] is None else torch.cat(v) for v in zip(*(c._fields() for c in conds))))
                x_t, t = torch.cat([c.x_t for c in group]), torch.cat([c.t for c in group])
                first, where = _distinct_rows(group)
                if len(first) < x_t.shape[0]:       # rows asked by several runs (the same example, seed and step)
                    computed = len(first)
                    pick = torch.tensor(first, device=x_t.device)
                    out = self.net(x_t[pick], t[pick], None if cond is None else cond.index(pick))
                    out = out[torch.tensor(where, device=out.device)]
                else:
                    out = self.net(x_t, t, cond)
                outs = out.split([c.x_t.shape[0] for c in group])
            for c, o in zip(group, outs):
                c.out = o
            if self.memory is not None:
                self._remember(group)
        except BaseException as err:      # every caller of the tick sees the network's error
            for c in group:
                c.error = err
        finally:
            for c in group:
                c.done = True
        self._count(group, computed, time.perf_counter() - start)

    def _count(self, group: list[_Call], computed: int, seconds: float) -> None:
        """``computed``: the rows the network was given (the group's rows less those asked again)."""
        s = self.stats
        pixels = computed * group[0].row_pixels
        s.ticks, s.calls, s.seconds = s.ticks + 1, s.calls + len(group), s.seconds + seconds
        rows = sum(c.x_t.shape[0] for c in group)
        s.rows += rows
        s.repeated_rows += rows - computed
        s.pixels += pixels
        s.max_calls = max(s.max_calls, len(group))
        s.recent = (s.recent + [seconds / max(1, pixels)])[-self.RECENT:]


def _distinct_rows(group: list[_Call]) -> tuple[list[int], list[int]]:
    """Over the group's rows in order: the index of each distinct row's first occurrence, and for every row the
    place of its distinct row in that list. Rows are distinct by their exact bits; a network gives a row the same
    output bits in any batch (ChunkedNet's fixed chunks), so computing a repeated row once changes no image.
    Where a call's rows cannot be read (not on the CPU), every row counts as distinct."""
    first, where, index = [], [], {}
    offset = 0
    for c in group:
        rows = c.rows
        for i in range(c.x_t.shape[0]):
            row = (offset + i,) if rows is None else rows[i]
            j = index.setdefault(row, len(first))
            if j == len(first):
                first.append(offset + i)
            where.append(j)
        offset += c.x_t.shape[0]
    return first, where

"""The network as the samplers call it on a CPU: fixed-size chunks and row workers, with the network's own call
signature ``net(x_t, t, cond) -> output``. ``ModelDenoiser`` (denoisers.py) turns that output into a Prediction
and knows nothing of how the rows were computed."""
from __future__ import annotations

import weakref
from typing import Callable

import torch

from . import parallel

MERGE_CHUNKS = 4          # a parallel worker evaluates up to this many chunks in one call (see ChunkedNet._merges)
_MERGES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # net -> {(chunk, shape, dtype): bool}


class ChunkedNet:
    """``net`` evaluated in batches of exactly ``chunk`` rows (the last one padded by repeating its final row).

    CPU convolution and matmul libraries pick their algorithm, and so their rounding, by batch size; with a
    fixed evaluation batch every image sees the same kernels whatever the batch it was requested in, so a seed
    gives bit-identical images at any batch size (for a fixed thread count). ``chunk`` = 0 runs the whole batch
    at once (fastest, not batch-invariant). ``chunk`` = 1 runs each row alone on the caller's threads, one after
    another, never on row workers: a lone row would otherwise get every thread and a batch's rows one each, and
    those kernels round differently. On a multi-core CPU without autograd the pieces (chunks, or for
    chunk = 0 one part of the batch per core) run in parallel, one core each (``parallel.py``). A backend that
    chunks and threads itself (``own_batching``, backends.py) is called as it is. ``workers``: how many
    (``parallel.workers``: None = the machine's default, 1 = none).
    """

    def __init__(self, net: Callable, chunk: int = 0, workers: int | None = None):
        self.net, self.chunk, self.workers = net, int(chunk), workers

    def _piece(self, x_t, t, cond, start: int, stop: int, pad_to: int = 0):
        """The network on rows [start, stop), padded to ``pad_to`` rows by repeating the last one."""
        idx = torch.arange(start, max(stop, start + pad_to), device=x_t.device).clamp(max=stop - 1)
        if start == 0 and len(idx) == x_t.shape[0] == stop:
            return self.net(x_t, t, cond)
        return self.net(x_t[idx], t[idx], None if cond is None else cond.index(idx))[:stop - start]

    def __call__(self, x_t, t, cond):
        """Pieces of ``chunk`` rows (or near-equal parts of the batch when chunk = 0), computed on the CPU's
        cores in parallel where ``parallel.usable`` (each piece single-threaded; see parallel.py). In parallel,
        each worker's consecutive chunks run as one call when this machine's kernels give every row the same
        result in one call as in its own chunk (``_merges``): larger calls are faster, the output is the same."""
        if getattr(self.net, "own_batching", False):     # a backend that chunks and threads itself (backends.py)
            return self.net(x_t, t, cond)
        b, k = x_t.shape[0], self.chunk
        in_parallel = k != 1 and parallel.usable(x_t, self.workers)
        if k > 0:
            per = 1
            if in_parallel and b > k and self._merges(x_t, t, cond):
                per = min(MERGE_CHUNKS, -(-b // (k * parallel.workers(self.workers))))
            ranges = [(s, min(s + k * per, b)) for s in range(0, b, k * per)]
        else:
            ranges = (parallel.split_rows(b, parallel.workers(self.workers), max_rows=parallel.SAMPLE_PIECE_ROWS) if in_parallel
                      else [(0, b)])
        pieces = [(x_t, t, cond, s, e, -(-(e - s) // k) * k if k else 0) for s, e in ranges]   # whole chunks
        if len(pieces) == 1:
            return self._piece(*pieces[0])
        outs = parallel.run_pieces(self._piece, pieces, count=self.workers) if in_parallel else [self._piece(*p) for p in pieces]
        return torch.cat(outs)

    def _merges(self, x_t, t, cond) -> bool:
        """Whether one single-threaded call on 2..MERGE_CHUNKS chunks gives each row bit for bit what its own
        ``chunk``-row call gives, for this network and input shape on this machine. Checked once (on the
        first batch's rows, repeated to MERGE_CHUNKS chunks) and remembered; any difference turns merging off."""
        key = (self.chunk, tuple(x_t.shape[1:]), x_t.dtype)
        try:
            known = _MERGES.setdefault(self.net, {})
        except TypeError:          # a network that cannot be weakly referenced: never merge
            return False
        if key not in known:
            k, b = self.chunk, x_t.shape[0]
            idx = torch.arange(MERGE_CHUNKS * k, device=x_t.device) % b
            xs, ts, cs = x_t[idx], t[idx], None if cond is None else cond.index(idx)
            pieces = [(xs, ts, cs, j * k, (j + 1) * k) for j in range(MERGE_CHUNKS)]
            pieces += [(xs, ts, cs, 0, n * k) for n in range(2, MERGE_CHUNKS + 1)]
            outs = parallel.run_pieces(self._piece, pieces, count=self.workers)
            alone = torch.cat(outs[:MERGE_CHUNKS])
            known[key] = all(torch.equal(o, alone[:o.shape[0]]) for o in outs[MERGE_CHUNKS:])
        return known[key]

"""The runs the Learn tab looks at: each session's last Generate run, under one byte budget."""
from __future__ import annotations

import threading
from collections import OrderedDict


class KeptRuns:
    """The runs the Learn tab explains (each session's last Generate run: the first image's steps), kept in the
    server under one byte budget for all sessions together. The least recently used runs are dropped first, and a
    run that alone would pass the budget keeps its first steps. A session's gr.State holds only the key (the steps
    themselves in a gr.State grew the server by ~36 KB a step at 32 px for every session, without limit)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._runs: OrderedDict[str, tuple[dict, int]] = OrderedDict()     # key -> (run, bytes accounted)
        self._total = 0
        self._lock = threading.Lock()

    def __deepcopy__(self, memo) -> "KeptRuns":
        """The one store every session shares, never copied: Gradio deep-copies the page's config for every page
        it serves, and the config names ``drop`` (a gr.State's delete_callback), so a copy took every kept run's
        tensors with it: after 30 runs a page took 10 s and the next class could not open the app."""
        return self

    def put(self, key: str, run: dict) -> None:
        with self._lock:
            self._pop(key)
            self._runs[key] = (run, 0)

    def get(self, key) -> dict | None:
        with self._lock:
            hit = self._runs.get(key) if isinstance(key, str) else None
            if hit is None:
                return None
            self._runs.move_to_end(key)
            return hit[0]

    def grow(self, key: str, run: dict, nbytes: int) -> bool:
        """Account ``nbytes`` more to ``run``, dropping the least recently used other runs to stay in the budget;
        False (nothing accounted) if ``run`` is no longer the one kept under ``key`` or would alone pass the budget."""
        with self._lock:
            hit = self._runs.get(key)
            if hit is None or hit[0] is not run or hit[1] + nbytes > self.max_bytes:
                return False
            self._runs[key] = (run, hit[1] + nbytes)
            self._total += nbytes
            self._runs.move_to_end(key)
            while self._total > self.max_bytes:
                self._pop(next(iter(self._runs)))
            return True

    def drop(self, key) -> None:
        """Forget ``key``'s run (the gr.State's delete_callback: the session expired or closed)."""
        with self._lock:
            self._pop(key)

    def _pop(self, key) -> None:
        hit = self._runs.pop(key, None) if isinstance(key, str) else None
        if hit is not None:
            self._total -= hit[1]

    @property
    def nbytes(self) -> int:
        return self._total

"""A visitor's session without Gradio's per-session copy of the page's config (issue 34).

Gradio keeps, for every session, each component's config as the visitor's page would now show it
(``SessionState.config_values``), for one reader only: the ``deep_link`` route of a ``gr.DeepLinkButton``, which
this app does not have. It builds all of them when a session starts (about 190 components: 10 ms idle, 35 ms with
a class arriving) and rebuilds an output's after every event (a component's API schema through pydantic), all on
the event loop. A py-spy profile of a class of 30 opening the page at once (``--gil``): 22% of the GIL's time went
to starting sessions and 25% more to those rebuilds.

``LazySessionState`` keeps the same facts but builds a config only when someone reads it: a ``LazyConfigs`` holds,
for each component not yet read, the block to build it from and the last value an event set. What it gives a
reader is what Gradio's eager copy would hold after the same events (``tests/app/test_sessions.py`` compares
them, and checks that the attributes Gradio's own ``__init__`` sets are all set here).
"""
from __future__ import annotations

import os
from typing import Any

from gradio import state_holder

_NO_VALUE = object()


class LazyConfigs(dict):
    """``{block id: config}`` built on first read: ``pending[id] = [block, value]`` until then (``value``: one an
    event set since, else _NO_VALUE)."""

    def __init__(self, blocks_config):
        super().__init__()
        self._blocks_config = blocks_config
        self._pending: dict[int, list] = {}

    def rebuild(self, key: int, block) -> None:
        """``key``'s config is to be built afresh from ``block`` (Gradio: ``config_for_block`` now)."""
        super().pop(key, None)
        self._pending[key] = [block, _NO_VALUE]

    def set_value(self, key: int, value: Any) -> None:
        """Gradio: ``config["props"]["value"] = value`` (where the config has props)."""
        if key in self._pending:
            self._pending[key][1] = value
        elif dict.__contains__(self, key):
            if "props" in dict.__getitem__(self, key):
                dict.__getitem__(self, key)["props"]["value"] = value
        else:
            self.rebuild(key, self._blocks_config.blocks[key])
            self._pending[key][1] = value

    def _build(self, key: int) -> None:
        entry = self._pending.pop(key, None)
        if entry is None:           # built meanwhile by another reader (the deep-link route runs in a worker thread)
            return
        block, value = entry
        config = self._blocks_config.config_for_block(key, [], block)
        if value is not _NO_VALUE and "props" in config:
            config["props"]["value"] = value
        dict.__setitem__(self, key, config)

    def _build_all(self) -> None:
        for key in list(self._pending):
            self._build(key)

    def __missing__(self, key):
        if key in self._pending:
            self._build(key)
            return dict.__getitem__(self, key)
        raise KeyError(key)

    def __setitem__(self, key, config) -> None:
        """A config set whole replaces the one still to be built."""
        self._pending.pop(key, None)
        dict.__setitem__(self, key, config)

    def __delitem__(self, key) -> None:
        if self._pending.pop(key, None) is None:
            dict.__delitem__(self, key)

    def __contains__(self, key) -> bool:
        return key in self._pending or dict.__contains__(self, key)

    def __len__(self) -> int:
        return len(self._pending) + dict.__len__(self)

    def __iter__(self):
        self._build_all()
        return dict.__iter__(self)

    def get(self, key, default=None):
        return self[key] if key in self else default

    def items(self):
        self._build_all()
        return dict.items(self)

    def values(self):
        self._build_all()
        return dict.values(self)

    def keys(self):
        self._build_all()
        return dict.keys(self)

    def copy(self) -> dict:
        self._build_all()
        return dict(dict.items(self))

    def pop(self, key, *default):
        if key in self._pending:
            self._build(key)
        return dict.pop(self, key, *default)

    def setdefault(self, key, default=None):
        if key in self._pending:
            self._build(key)
        return dict.setdefault(self, key, default)

    def __eq__(self, other) -> bool:
        self._build_all()
        return dict.__eq__(self, other)

    __hash__ = None


class LazySessionState(state_holder.SessionState):
    """Gradio's ``SessionState`` with its ``config_values`` built when read (see the module's docstring)."""

    def __init__(self, blocks):        # noqa: D107 - not super().__init__: that builds every config now
        self.blocks_config = state_holder.copy(blocks.default_config)
        self.config_values = LazyConfigs(self.blocks_config)
        for k, v in self.blocks_config.blocks.items():
            if k in blocks.blocks:
                self.config_values.rebuild(k, v)
        self.state_data: dict[int, Any] = {}
        self._state_ttl = {}
        self.is_closed = False
        self.STATE_TTL_WHEN_CLOSED = 1 if os.getenv("GRADIO_IS_E2E_TEST", None) else 3600

    def __setitem__(self, key: int, value: Any):
        from gradio.components import State
        block = self.blocks_config.blocks.get(key)
        if isinstance(block, State):
            self._state_ttl[key] = (block.time_to_live, state_holder.datetime.datetime.now())
            self.state_data[key] = value
        else:
            self.blocks_config.blocks[key] = value
        if block:
            self.config_values.rebuild(key, block)

    def _update_config(self, key: int):
        value = self[key]
        if value is not None:
            self.config_values.rebuild(key, value)

    def _update_value_in_config(self, key: int, value: Any):
        self.config_values.set_value(key, value)


def install() -> None:
    """Every session Gradio starts from now on is a ``LazySessionState`` (``StateHolder`` makes them by this name)."""
    state_holder.SessionState = LazySessionState

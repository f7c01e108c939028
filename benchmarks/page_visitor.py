"""One browser tab of the app, as the server sees it: the requests Gradio's page sends, without a browser.

A visitor of a Space opens the page, and the page fires its load events (the Generate tab's "loaded" chain, which
enables Generate; the Forward tab's images and schedule plot); the visitor then presses a one-click example, which
fires the example's chain (it sets the controls, shows the card, then runs Generate). ``PageVisitor`` sends the
same requests in the same order, with the values the page would hold: ``GET /``; queued events by
``POST queue/join`` and the session's ``GET queue/data`` event stream (Gradio's sse_v3: one stream per session
while it has events pending, diffs for a generator's later outputs); unqueued events by ``POST run/predict``;
a ``.then`` follower as soon as its event completes; client-side (js) steps skipped. Each event's outputs update
the component values the next events send. Preview images are fetched by URL as the page shows them.

It costs the client far less than ``gradio_client`` (no API info, no polling thread per job): 30 visitors on the
server's own 2 cores take the server's CPU instead of timing themselves.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Callable

import httpx


def apply_diff(value, diff):
    """A generator's later output in Gradio's sse_v3: a list of (action, path, value) edits of the last one."""
    for action, path, new in diff:
        if not path:
            value = new if action == "replace" else value + new
            continue
        target = value
        for key in path[:-1]:
            target = target[key]
        if action in ("replace", "add") and not (action == "add" and isinstance(target, list)):
            target[path[-1]] = new
        elif action == "add":
            target.insert(int(path[-1]), new)
        elif action == "append":
            target[path[-1]] += new
        elif action == "delete":
            del target[int(path[-1]) if isinstance(target, list) else path[-1]]
    return value


def urls(value) -> list[str]:
    """Every file URL inside an output value (an image's or a gallery's)."""
    if isinstance(value, dict):
        return ([value["url"]] if isinstance(value.get("url"), str) else []) + [u for v in value.values()
                                                                                  for u in urls(v)]
    if isinstance(value, list):
        return [u for v in value for u in urls(v)]
    return []


class PageVisitor:
    """A page's session on ``url`` (its config fetched once per class and shared: the page has it inline)."""

    def __init__(self, url: str, config: dict, http: httpx.Client):
        self.url, self.config, self.http = url.rstrip("/") + "/", config, http
        self.api = self.url + config.get("api_prefix", "/gradio_api").strip("/") + "/"
        self.session = uuid.uuid4().hex[:11]
        self.deps = {d["id"]: d for d in config["dependencies"]}
        self.values = {c["id"]: c.get("props", {}).get("value") for c in config["components"]}
        self.elem = {c["props"]["elem_id"]: c["id"] for c in config["components"] if c.get("props", {}).get("elem_id")}
        self.fetched: set[str] = set()
        self.broken = 0                 # files that did not come whole (fetch_new_files)

    # ---- what the page does -------------------------------------------------------------------------------
    def open(self) -> None:
        """The page itself (its config inline), then its load events and their followers."""
        self.http.get(self.url).raise_for_status()

    def load(self) -> None:
        self.run([d for d in self.deps.values() if any(t[1] == "load" for t in d["targets"])])

    def pick(self, elem_id: str, value) -> None:
        """Choose ``value`` in the input ``elem_id`` as a visitor does: its input and change events and followers."""
        comp = self.elem[elem_id]
        self.values[comp] = value
        self.run([d for d in self.deps.values() if any(list(t) in ([comp, "input"], [comp, "change"])
                                                           for t in d["targets"])])

    def click(self, elem_id: str, on_output: Callable[[dict, list], None] | None = None) -> dict[int, list]:
        """Press the button ``elem_id``: its click event and every follower. Returns each event's last outputs."""
        button = self.elem[elem_id]
        return self.run([d for d in self.deps.values() if [button, "click"] in [list(t) for t in d["targets"]]],
                        on_output)

    def chain_event(self, elem_id: str, api_prefix: str) -> int:
        """The event of the button ``elem_id``'s chain (its click and the followers) whose API name starts
        with ``api_prefix``."""
        button = self.elem[elem_id]
        todo = [d for d in self.deps.values() if [button, "click"] in [list(t) for t in d["targets"]]]
        while todo:
            dep = todo.pop(0)
            if (dep.get("api_name") or "").startswith(api_prefix):
                return dep["id"]
            todo += self._followers(dep)
        raise KeyError(f"no {api_prefix} event after {elem_id}")

    # ---- the protocol -------------------------------------------------------------------------------------
    def _body(self, dep: dict) -> dict:
        return {"data": [self.values.get(i) for i in dep["inputs"]], "event_data": None, "fn_index": dep["id"],
                "trigger_id": None, "session_hash": self.session}

    def _apply(self, dep: dict, data: list) -> None:
        for comp, value in zip(dep["outputs"], data):
            if isinstance(value, dict) and value.get("__type__") == "update":
                if "value" in value:
                    self.values[comp] = value["value"]
            else:
                self.values[comp] = value

    def _followers(self, dep: dict) -> list[dict]:
        return [d for d in self.deps.values() if d.get("trigger_after") == dep["id"]]

    def run(self, first: list[dict], on_output: Callable[[dict, list], None] | None = None) -> dict[int, list]:
        """Fire ``first`` together, then each event's followers as it completes; until none is pending."""
        pending: dict[str, dict] = {}
        last: dict[int, list] = {}

        def start(dep: dict) -> None:
            if not dep.get("backend_fn", True):            # a client-side step (js): nothing reaches the server
                for f in self._followers(dep):
                    start(f)
            elif dep.get("queue", True):
                r = self.http.post(self.api + "queue/join", json=self._body(dep))
                r.raise_for_status()
                pending[r.json()["event_id"]] = dep
            else:
                r = self.http.post(self.api + "run/predict", json=self._body(dep))
                r.raise_for_status()
                last[dep["id"]] = r.json()["data"]
                self._apply(dep, last[dep["id"]])
                for f in self._followers(dep):
                    start(f)

        for dep in first:
            start(dep)
        while pending:
            with self.http.stream("GET", self.api + "queue/data", params={"session_hash": self.session}) as r:
                for line in r.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    msg = json.loads(line[5:])
                    kind = msg.get("msg")
                    if kind == "close_stream":
                        break
                    if kind == "unexpected_error":
                        raise RuntimeError(f"server: {msg.get('message')}")
                    dep = pending.get(msg.get("event_id"))
                    if dep is None or kind not in ("process_generating", "process_completed"):
                        continue
                    if kind == "process_completed" and not msg.get("success", True):
                        raise RuntimeError(str(msg.get("output", {}).get("error"))[:300])
                    data = msg.get("output", {}).get("data", [])
                    if kind == "process_generating" and dep["id"] in last:
                        data = [apply_diff(old, d) for old, d in zip(last[dep["id"]], data)]
                    if data:
                        last[dep["id"]] = data
                        self._apply(dep, data)
                        if on_output is not None:
                            on_output(dep, data)
                    if kind == "process_completed":
                        del pending[msg["event_id"]]
                        for f in self._followers(dep):
                            start(f)
        return last

    def fetch_new_files(self, value) -> None:
        """The page shows an output's images: each new file URL is fetched once. A file that does not come whole is
        counted in ``broken``, not raised: a browser shows a broken image and goes on. (Gradio writes a cached image
        in place, named by its content's hash: visitors who press the same example get the same previews, and one's
        write truncates the file another is being sent.)"""
        for u in urls(value):
            if u not in self.fetched:
                self.fetched.add(u)
                try:
                    self.http.get(u).raise_for_status()
                except (httpx.HTTPStatusError, httpx.RemoteProtocolError):
                    self.broken += 1


def timed_visit(url: str, config: dict, model: str, example: str, t_zero: float, delay: float, out: dict,
                batch: int = 4) -> None:
    """A class's visitor: arrives ``delay`` s after ``t_zero``, opens the page, waits for Generate to be enabled
    (its load chain), picks ``model`` if the page opened on another, presses the one-click example ``example``
    and watches its run to the end. ``out`` gets the times from arrival: page_s, ready_s (Generate enabled for
    ``model``), started_s (the run's first output), first_s (its first preview), done_s; or ``error``."""
    time.sleep(delay)
    arrive = time.perf_counter()
    out["arrive"] = arrive - t_zero
    try:
        with httpx.Client(timeout=600) as http:
            page = PageVisitor(url, config, http)
            page.open()
            out["page_s"] = time.perf_counter() - arrive
            page.load()
            if page.values[page.elem["model"]] != model:
                page.pick("model", model)
            button = page.values[page.elem["generate-btn"]]
            out["ready_s"] = time.perf_counter() - arrive
            generate = page.chain_event(example, "generate")
            status_at = page.deps[generate]["outputs"].index(page.elem["status"])
            preview_at = page.deps[generate]["outputs"].index(page.elem["preview"])
            statuses: list[str] = []

            def seen(dep: dict, data: list) -> None:
                if dep["id"] != generate:
                    return
                now = time.perf_counter() - arrive
                out.setdefault("started_s", now)
                status = str(data[status_at])
                statuses.append(status)
                if "Waiting for a turn" in status:
                    out.setdefault("waiting_status", (now, status))
                if " · step " in status and "first_s" not in out:
                    out["first_s"] = now
                page.fetch_new_files(data[preview_at])
            last = page.click(example, seen)
            gallery = last.get(generate, [None] * 3)[page.deps[generate]["outputs"].index(page.elem["gallery"])]
            if not (isinstance(gallery, list) and len(gallery) == batch):
                raise RuntimeError(f"no gallery of {batch} at the end: {str(last.get(generate))[:200]}")
            page.fetch_new_files(gallery)
            out.update(broken_files=page.broken, done_s=time.perf_counter() - arrive, end=time.perf_counter() - t_zero,
                       waited=any("Waiting for a turn" in s for s in statuses), button=button,
                       statuses=statuses[:1] + [s for s in statuses if "Waiting" in s][:1])
    except Exception as e:                                         # noqa: BLE001 - a refused or failed visitor
        out["error"] = f"{type(e).__name__}: {e}"[:300]

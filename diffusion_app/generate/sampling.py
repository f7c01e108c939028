"""The Generate tab: sample with live previews, stop, keep the run for the Learn tab."""
from __future__ import annotations

import asyncio
import html
import inspect
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import gradio as gr
import numpy as np
from PIL import Image
import torch

from diffusion_core import MAX_STEPS, Cancelled, Request, SampleStep, number, output_problem

from ..base import AppBase
from ..inputs import fit_note, stickman_input, user_error
from ..outputs import Shown, filled
from ..render import (as_pil_uint8, batch_grid, eta_seconds, fitting_path, fmt_duration, html_status, save_png,
                     side_by_side)
from ..runs import KeptRun, kept_run
from ..settings import (ANY, DEFAULT_SAMPLER, GIF_MAX_FRAMES, MAX_BATCH, PREVIEW_GAP_BUSY_S, STOP_WAIT_S,
                       USER_ERRORS, log, sampler_label, takes_eta)
from ..waiting import Waiting, WaitingRoom, run_cost, seconds_per_flop
from .presets import bundled_name, settings_link

_END = object()
GPU_FLOPS_PER_S, GPU_SETUP_S = 5e12, 10     # ZeroGPU's share of an H200 for a small U-Net, loading the model
STOPPING = "the server is stopping: run it again in a minute, once it is back"


class GenerateTab(AppBase):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._stops: dict[str, threading.Event] = {}     # each session's run in flight: its Stop
        self.stopping = threading.Event()        # set when the server is shutting down (stop_runs)
        # sampling runs admitted at once, and the waiting line behind them (waiting.py says why these bounds)
        self.waiting = WaitingRoom(int(os.environ.get("DIFFUSION_SLOTS", "32")),
                                   int(os.environ.get("DIFFUSION_WAITING", "1000")))
        # the threads that step admitted runs (a waiting run holds none): one per slot, and a few for waiting
        # runs' status lines and closing runs whose visitors left
        self.sampling_pool = ThreadPoolExecutor(self.waiting.slots + 4, thread_name_prefix="sampling")

    def stop_runs(self, grace_s: float = 10.0) -> bool:
        """The server is stopping (SIGTERM): mark it so, ask every sampling run in flight to stop at its next step,
        and wait up to ``grace_s`` seconds for them to end. True when none is left. A run still inside the network
        when the interpreter shut down failed with "cannot schedule new futures after shutdown" or aborted it."""
        self.stopping.set()
        deadline = time.monotonic() + grace_s
        while self._stops and time.monotonic() < deadline:
            for ev in list(self._stops.values()):
                ev.set()
            time.sleep(0.05)
        return not self._stops

    def generate(self, model, sampler=DEFAULT_SAMPLER, steps=25, spacing="trailing", eta=0.0, guidance=2.0, seed=-1,
                 batch_size=4, preview_every=1, class_label=ANY, attributes=None, stick_source="sketch",
                 stick_sketch=None, stick_upload=None, init_image=None, strength=0.6, make_gif=False,
                 gif_frames="x0_hat", backend=None, request: gr.Request = None, stop=None, poll=False):
        """Stream a sampling run: every ``preview_every`` steps yield x_t | x0_hat, a status line and the
        progress; finally the gallery of PNGs (tEXt 'parameters' = JSON) and the optional GIF.

        The run first takes its place in the waiting room (waiting.py): until admitted it yields the status line
        with its place and estimated wait about once a second (``poll``: yields ``Waiting`` at once instead,
        for ``generate_queued``, which waits without a thread). ``stop``: an Event that stops the run (Stop, a
        visitor who left); while it waits, the run's rows are dropped from the network's next tick. Once the run's
        own last output has gone (its consumer asked for the next), ``stop.shown`` is True: Stop then adds nothing."""
        stop = stop or threading.Event()
        if self.stopping.is_set():
            raise gr.Error(STOPPING)
        try:
            # the run's numbers are checked by the Request, before any model loads (the page's boxes pass them on
            # as sent: inputs.RunSlider / RunNumber); the app checks only its own limits (a batch of at most MAX_BATCH,
            # seed -1 for random) and its own option (preview_every)
            asked = Request(number(batch_size, "batch size", 1, MAX_BATCH, whole=True), sampler=sampler, steps=steps,
                            spacing=spacing, eta=eta, guidance=guidance, seed=self._seed(seed), strength=strength,
                            device=self.models.device, cancelled=stop.is_set)
            preview_every = max(1, int(number(preview_every, "preview every", 0, MAX_STEPS, whole=True)))
            self.models.check_backend(backend)      # before "loading…" is said
            if model in self.models.names() and not self.models.is_ready(model, backend):
                # loading (auto never measures here: Models): about a second, so say so
                yield filled(Shown, status=html_status(f"<b>{html.escape(model)}</b>: loading…"), gallery=None,
                             gif=None)
            pipe = self.models.get(model, backend)
            cfg = pipe.base.config
            labels = self._labels(pipe, model, class_label, attributes)
            fitted = fit_note(init_image, cfg.low_res if cfg.task == "super_resolution" else cfg.unet.image_size)
            sr = cfg.task == "super_resolution"
            if sr and init_image is None:
                raise ValueError("a super-resolution model needs a low-resolution input image (upload one)")
            prepared = pipe.prepare(cond_image=stickman_input(stick_source, stick_sketch, stick_upload)
                                    if cfg.task == "pose" else None, init_image=None if sr else init_image,
                                    low_res=init_image if sr else None)
            asked = replace(asked, labels=labels, **prepared)    # the run as the pipeline runs it (and Learn keeps it)
            stream = pipe.run(asked)               # refused here for all the core checks (sampler, grid, work)
            cost = run_cost(pipe, asked.n, asked.steps, asked.guidance, seconds_per_flop(self.models.loaded()),
                            from_low_res="low_res" in prepared)
            ticket = self.waiting.enter(*cost, same=self._same_rows(model, pipe, asked, prepared))
        except USER_ERRORS as e:
            raise user_error(e) from None

        # the last run's preview and results go first (issue 35: they showed under "step 1/25" until its file came)
        yield filled(Shown, preview=None, status=html_status(f"<b>{html.escape(model)}</b> · starting… · {pipe.backend}",
                                                              0.0), gallery=None, gif=None, last_seed=asked.seed,
                     partial=None)
        session = getattr(request, "session_hash", None) or "api"
        self._stops[session] = stop
        try:
            yield from self._wait_turn(ticket, stop, poll)
            if stop.is_set():
                yield self._stopped_early("before it started", model, asked.seed)
                stop.shown = True       # Gradio asked for the next output: the run's own last one went to the page
                return
            meta = {"model": model, "sampler": asked.sampler, "steps": asked.steps, "spacing": asked.spacing,
                    "eta": asked.eta if takes_eta(asked.sampler) else None, "guidance": asked.guidance,
                    "labels": labels, "seed": asked.seed, "batch_size": asked.n, "backend": pipe.backend}
            if "init_image" in prepared:
                meta["img2img_strength"] = asked.strength
            if "cond_image" in prepared:
                meta["stickman"] = stick_source
            meta.update({"input": fitted} if fitted else {})
            yield from self._sample(pipe, stream, asked, ticket, stop, session, meta, preview_every, make_gif,
                                    gif_frames, (stick_source, stick_upload, init_image))
            stop.shown = True           # (not when Gradio's cancel closed the run before its last output)
        finally:
            self.waiting.leave(ticket)
            if self._stops.get(session) is stop:
                del self._stops[session]

    def _same_rows(self, model, pipe, asked, prepared):
        """A key equal for runs asking the network for the same rows (computed once: waiting.simulate prices them
        so); None with an input image (not told cheaply) or where the catalogue remembers no rows."""
        if any(v is not None for v in prepared.values()) or self.models.rows.max_bytes <= 0:
            return None
        return (model, pipe.backend, asked.n, asked.sampler, asked.steps, asked.spacing, asked.eta, asked.guidance,
                asked.seed, repr(asked.labels))

    def gpu_seconds(self, *args, **kwargs) -> int:
        """ZeroGPU: the seconds to reserve for ``generate(*args, **kwargs)`` (``spaces.GPU(duration=...)``): its
        estimated network work at GPU_FLOPS_PER_S, plus GPU_SETUP_S to load and move the model, within
        [GPU_SETUP_S, 120]; 60 when the model is not loaded yet (it is loaded inside the GPU call) or the request
        cannot be read (``generate`` then reports what is wrong)."""
        try:
            (a := inspect.signature(self.generate).bind(*args, **kwargs)).apply_defaults()
            a = a.arguments
            if not self.models.is_ready(a["model"], a["backend"]):
                return 60
            pipe = self.models.get(a["model"], a["backend"])
            steps, cost, _ = run_cost(pipe, int(a["batch_size"]), int(a["steps"]), float(a["guidance"]),
                                   1.0 / GPU_FLOPS_PER_S, from_low_res=pipe.config.task == "super_resolution")
        except Exception:       # noqa: BLE001 - any unreadable request: generate itself says what is wrong
            return 60
        return int(min(120, GPU_SETUP_S + steps * cost))

    async def generate_queued(self, *args, **kwargs):
        """The page's Generate: ``generate`` stepped on the sampling threads, so that a run waiting for its turn
        holds no thread (its status line is refreshed about once a second, at once when admitted). When the
        visitor stops or leaves (Gradio cancels this), the run's stop is set: its rows are dropped from the next
        tick, its slot goes to the next visitor, and the generator is closed once its step in flight returns."""
        stop = threading.Event()
        gen = self.generate(*args, **kwargs, stop=stop, poll=True)
        pool = self.sampling_pool
        job = None
        try:
            while True:
                job = pool.submit(next, gen, _END)
                item = await asyncio.wrap_future(job)
                job = None
                if item is _END:
                    return
                if isinstance(item, Waiting):
                    yield item.outputs
                    for _ in range(10):     # up to 1 s, or until admitted
                        if item.ticket.admitted:
                            break
                        await asyncio.sleep(0.1)
                    continue
                yield item
        finally:
            stop.set()
            if job is not None and not job.cancel():
                job.add_done_callback(lambda _: gen.close())     # on the sampling thread, once next() returned
            else:
                gen.close()

    @staticmethod
    def _stopped_early(when: str, model: str, seed: int) -> Shown:
        """The page's outputs for a run stopped before it made an image: the status line and the seed only."""
        return filled(Shown, status=html_status(f"<b>Stopped</b> · {html.escape(model)} · {when}"), last_seed=seed)

    def _wait_turn(self, ticket, stop, poll: bool):
        """Until ``ticket`` is admitted (or ``stop``): the status line with the run's place and estimated wait."""
        while not ticket.admitted and not stop.is_set() and not self.stopping.is_set():
            active, waiting = self.waiting.counts()
            start, end = self.waiting.estimate(ticket)
            place = self.waiting.position(ticket)
            text = (f"<b>Waiting for a turn</b> · {place} of {waiting} waiting · {active} run"
                    f"{'s' * (active != 1)} sampling now · starts in about {fmt_duration(start)}, done in about "
                    f"{fmt_duration(end)}")
            # the images as the first output left them (None), not gr.skip(), which costs the event loop (_sample)
            outputs = filled(Shown, preview=None, status=html_status(text, 0.0), gallery=None, gif=None)
            if poll:
                yield Waiting(outputs, ticket)
            else:
                yield outputs
                self.waiting.wait(ticket, 1.0)
        if self.stopping.is_set():
            raise gr.Error(STOPPING)

    def _sample(self, pipe, stream, asked, ticket, stop, session, meta, preview_every, make_gif, gif_frames, inputs):
        """The admitted run: previews while it samples, then the gallery, GIF, status and settings link
        (``inputs``: the stickman source and upload and the init image, which the link names when bundled)."""
        cfg = pipe.base.config
        model, seed, sampler, steps = meta["model"], meta["seed"], meta["sampler"], meta["steps"]
        n_stages = len(pipe.stages) if pipe.kind == "cascade" else 1
        run = kept_run(pipe, model, asked)          # the first image's steps, for the Learn tab
        self.runs.put(session, run)                 # the session's gr.State holds the key; the steps stay here
        frames: list[np.ndarray] = []
        t0 = time.time()
        last = None
        partial = None
        first = True
        last_preview = 0.0
        base_steps = steps
        try:
            for rec in stream:   # each step runs under inference mode inside the package's loop
                last = rec
                if rec.stage == 0:
                    base_steps = rec.num_steps
                self.waiting.stepped(ticket)
                self._keep(session, run, rec)
                if make_gif and (rec.index % max(1, rec.num_steps // GIF_MAX_FRAMES) == 0
                                 or rec.index == rec.num_steps - 1):
                    src = rec.x0_hat if gif_frames == "x0_hat" else rec.x_t
                    frames.append(np.asarray(batch_grid(src)))
                if stop.is_set():
                    break
                is_last = rec.index == rec.num_steps - 1
                # while others sample too, previews at most every PREVIEW_GAP_BUSY_S: each costs the server an
                # image to encode and send, and a step takes a fraction of that under load
                busy = self.waiting.counts()[0] > 1 and time.monotonic() - last_preview < PREVIEW_GAP_BUSY_S
                if (rec.index % preview_every == 0 or is_last) and (first or is_last or not busy):
                    last_preview = time.monotonic()
                    frac = (rec.stage + (rec.index + 1) / rec.num_steps) / n_stages
                    partial = {"x0": rec.x0_hat.detach().float().cpu().clamp(-1, 1).numpy(), "meta": meta,
                               "step": self._at(rec, n_stages), "stage": rec.stage}
                    first = False
                    status = f"<b>{html.escape(model)}</b> · " + self._status(pipe, rec, n_stages, t0, steps)
                    # the gallery and GIF as the first output left them (None), not gr.skip(): for a skip Gradio rebuilds
                    # the component with its API schema on the event loop (3.7 ms for the Gallery; +17% images/s)
                    yield filled(Shown, preview=side_by_side(rec.x_t, rec.x0_hat), status=html_status(status, frac),
                                 gallery=None, gif=None, last_seed=seed, partial=partial, learn_run=session)
        except Cancelled:           # stopped while its rows waited for a tick: they were never computed
            pass
        except USER_ERRORS as e:
            raise user_error(e) from None
        except Exception as e:      # never show a traceback; keep serving
            log.exception("sampling failed")
            raise gr.Error(f"sampling failed: {type(e).__name__}: {e}") from None
        if last is None:
            if stop.is_set():
                yield self._stopped_early("before its first step", model, seed)
                return
            raise gr.Error("sampling produced no steps")
        stopped = stop.is_set() or not (last.index == last.num_steps - 1 and last.stage == n_stages - 1)
        final = (last.x0_hat if stopped else last.x_next).detach().float().cpu()
        if problem := output_problem(final):     # clamped, they were flat squares under "Done" (issue 37 item 13)
            raise gr.Error(f"{model}: {problem}: the network's output is broken")
        final = final.clamp(-1, 1)
        if stopped:
            meta = dict(meta, partial=True, stopped_at=self._at(last, n_stages))
        gallery = self._save_gallery(final, meta)
        gif = self._save_gif(frames, meta) if make_gif and frames else None
        text = (f"<b>{'Stopped' if stopped else 'Done'}</b> · {html.escape(model)} · {meta['batch_size']} image(s) · "
                f"seed {seed} · {sampler_label(sampler)} {self._steps_ran(steps, base_steps, meta['spacing'])}"
                f"{self._sr_stages(pipe)} · {time.time() - t0:.1f} s · "
                f"<span title=\"{html.escape(self._backend_reason(pipe))}\">{pipe.backend}</span>")
        text += f" · {html.escape(meta['input'])}" if meta.get("input") else ""     # what fitting an input did
        if stopped:
            text += f" · stopped at step {meta['stopped_at']}, gallery shows the last x0_hat prediction"
            if self.stopping.is_set():
                text += f" · {STOPPING}"
        text += "<br>" + self._settings_link(meta, cfg, *inputs)
        run.progress.done = not stopped
        yield Shown(side_by_side(last.x_t, final), html_status(text, 1.0), gallery, gif, seed, {"done": True}, session)

    @staticmethod
    def _settings_link(meta, cfg, stick_source, stick_upload, init_image) -> str:
        """A link that reopens the app with this run's settings (presets.settings_link): a bundled stickman or
        low-res example is named in it; an uploaded or drawn image cannot be, and the link says so."""
        stickman = bundled_name("stickman", stick_upload) if cfg.task == "pose" and stick_source == "upload" else None
        lowres = bundled_name("lowres", init_image) if cfg.task == "super_resolution" else None
        missing = ("the drawing" if cfg.task == "pose" and not stickman else
                   "the input image" if init_image is not None and not lowres else None)
        href = html.escape(settings_link(meta, stickman, lowres))
        return (f'<a class="dc-link" id="settings-link" href="{href}" target="_blank">🔗 link to these settings</a>'
                + (f" (without {missing}: only bundled examples travel in a link)" if missing else ""))

    def _status(self, pipe, rec, n_stages, t0, asked: int | None = None) -> str:
        fewer = rec.stage == 0 and self._fewer(asked, rec.num_steps)
        parts = [f"step {rec.index + 1}/{rec.num_steps}" + (f" ({asked} asked)" if fewer else ""), f"t = {rec.t} → {rec.t_next}"]
        if n_stages > 1:
            name = pipe.stages[rec.stage].path.name
            parts.append(f"stage {rec.stage + 1}/{n_stages} ({'base' if rec.stage == 0 else 'super-resolution'}: "
                         f"{name})")
        if pipe.kind == "ensemble":
            e = pipe.stages[0].expert_index(rec.t)
            if e is not None:
                lo, hi, _ = pipe.stages[0].experts[e]
                parts.append(f"expert {e + 1}/{len(pipe.stages[0].experts)} (t in [{lo}, {hi}))")
        el = time.time() - t0
        done = (rec.stage + (rec.index + 1) / rec.num_steps) / n_stages     # fraction of the run (stages alike)
        left = eta_seconds(el, done)
        parts.append(f"{el:.1f} s" + (f", about {fmt_duration(left)} left" if left is not None else ""))
        parts.append(pipe.backend)
        return " · ".join(parts)

    @staticmethod
    def _at(rec, n_stages: int) -> str:
        """Where a run is: "3/10", or in a cascade "3/10 of stage 2/3 (super-resolution)"."""
        at = f"{rec.index + 1}/{rec.num_steps}"
        return at if n_stages == 1 else \
            f"{at} of stage {rec.stage + 1}/{n_stages} ({'base' if rec.stage == 0 else 'super-resolution'})"

    @staticmethod
    def _fewer(asked: int | None, ran: int) -> bool:
        """Whether the run's grid had fewer distinct timesteps than the steps asked (1000 on karras: 518)."""
        return asked is not None and ran != asked

    @classmethod
    def _steps_ran(cls, asked: int, ran: int, spacing: str) -> str:
        """"25 steps (trailing)"; where the grid had fewer distinct timesteps than asked (``_fewer``), both numbers,
        so the status says what ran."""
        if not cls._fewer(asked, ran):
            return f"{asked} step{'s' * (asked != 1)} ({spacing})"       # a 1-step student: "1 step"
        return f"{ran} steps ({spacing}; {asked} asked, the grid has {ran} distinct timesteps)"

    @staticmethod
    def _sr_stages(pipe) -> str:
        """", then 2 super-resolution stages (DDPM 10 steps each)" for a cascade: how its later stages sample."""
        if pipe.kind != "cascade":
            return ""
        runs = [f"{sampler_label(st.run_sampler())} {st.run_steps()} steps"
                for st in pipe.stages[1:]]
        k = len(runs)
        same = len(set(runs)) == 1
        return (f", then {k} super-resolution stage{'s' if k > 1 else ''} ("
                + (runs[0] + (" each" if k > 1 else "") if same else "; ".join(runs)) + ")")

    @staticmethod
    def _backend_reason(pipe) -> str:
        """Why each network runs where it does: forced, or the measurement auto made."""
        return "; ".join(c.summary() for c in pipe.backend_choices)

    def _save_gallery(self, x: torch.Tensor, meta: dict) -> list[tuple[str, str]]:
        d = self._run_dir(meta["model"])
        out = []
        for i in range(x.shape[0]):
            m = dict(meta, seed=meta["seed"] + i, batch_seed=meta["seed"], index=i)
            path = save_png(as_pil_uint8(x[i]), d / f"{meta['model']}-{meta['seed'] + i}.png", m)
            out.append((path, f"{meta['model']} · seed {meta['seed'] + i}" + (" (partial)" if meta.get("partial") else "")))
        return out

    def _save_gif(self, frames: list[np.ndarray], meta: dict) -> str:
        if len(frames) > GIF_MAX_FRAMES:
            idx = np.linspace(0, len(frames) - 1, GIF_MAX_FRAMES).round().astype(int)
            frames = [frames[i] for i in idx]
        imgs = [Image.fromarray(f) for f in frames]
        durations = [80] * (len(imgs) - 1) + [1500]
        path = fitting_path(self._run_dir(meta["model"]) / f"{meta['model']}-{meta['seed']}-reverse.gif")
        imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=durations, loop=0)
        return str(path)

    def stop_now(self, request: gr.Request = None) -> threading.Event | None:
        """Stop button, first part (unqueued, at once): end the session's sampling loop."""
        if (ev := self._stops.get(getattr(request, "session_hash", None) or "api")) is not None:
            ev.set()
        return ev

    def stop(self, partial, request: gr.Request = None):
        """Stop button: end the run, show its latest x0_hat. Queued, after ``stop_now`` and the run's end: its result
        comes after the run's last preview on the session's stream (unqueued, a later preview emptied it). When the
        run sent its own last output ("Stopped ... at step k", with its settings link), Stop adds nothing: its result,
        made from the ``partial`` read before the wait, replaced that richer line. It shows the partial gallery only
        when Gradio's cancel closed the run before that output."""
        ev, deadline = self.stop_now(request), time.monotonic() + STOP_WAIT_S
        while ev is not None and ev in self._stops.values() and time.monotonic() < deadline:
            time.sleep(0.01)
        if getattr(ev, "shown", False) or not partial or partial.get("done"):     # the run said where it stopped
            return gr.skip(), gr.skip()
        meta = dict(partial["meta"], partial=True, stopped_at=partial.get("step"))
        gallery = self._save_gallery(torch.from_numpy(np.asarray(partial["x0"])), meta)
        return gallery, html_status(f"<b>Stopped</b> · {html.escape(meta['model'])} · at step {partial.get('step')} · "
                                    f"gallery shows the last x0_hat prediction (seed {meta['seed']})", None)

    def _keep(self, key: str, run: KeptRun, rec) -> None:
        """Append a SampleStep of the first image (its x_t is the previous step's x_next: stored once), if the
        kept runs' byte budget allows it; otherwise the run is marked ``capped`` and keeps the steps it has."""
        if rec.stage != 0:
            return
        run.progress.grid.append(int(rec.t))      # every step's t, kept or not (Progress says why)
        run.progress.grid_end = int(rec.t_next)
        if run.progress.capped:
            return
        steps = run.steps
        first = slice(0, 1)
        shared = steps and steps[-1].index == rec.index - 1
        x_t = steps[-1].x_next if shared else rec.x_t[first].detach().float().cpu().clone()
        noise = None if rec.noise is None else rec.noise[first].detach().float().cpu().clone()
        new = [rec.x_next[first].detach().float().cpu().clone(), rec.x0_hat[first].detach().float().cpu().clone(),
               rec.eps_hat[first].detach().float().cpu().clone()] + ([] if shared else [x_t]) + \
            ([] if noise is None else [noise])
        if not self.runs.grow(key, run, sum(t.numel() * t.element_size() for t in new)):
            run.progress.capped = True
            return
        steps.append(SampleStep(rec.index, rec.num_steps, int(rec.t), int(rec.t_next), x_t, *new[:3], 0, noise))

"""The Generate tab: sample with live previews, stop, keep the run for the Learn tab."""
from __future__ import annotations

import html
import threading
import time

import gradio as gr
import numpy as np
from PIL import Image
import torch

from diffusion_core import (BACKENDS, BOUNDS, MAX_STEPS, SampleStep, load_image, make_generators, open_image,
                            to_mode)

from .base import AppBase
from .inputs import number, user_error
from .presets import bundled_name, settings_link
from .render import as_pil_uint8, batch_grid, eta_seconds, fmt_duration, html_status, save_png, side_by_side
from .settings import ANY, GIF_MAX_FRAMES, MAX_BATCH, SAMPLER_NAMES, USER_ERRORS, log


class GenerateTab(AppBase):
    def _cond_image(self, pipe, source, sketch, upload):
        cfg = pipe.base.config
        size = cfg.unet.image_size
        ch = cfg.unet.cond_channels or 1
        if source == "upload":
            if upload is None:
                raise ValueError("this is a pose model: upload a stickman drawing (or pick an example)")
            return load_image(upload, size, ch)
        comp = sketch.get("composite") if isinstance(sketch, dict) else sketch
        if comp is None:
            raise ValueError("this is a pose model: draw a stickman in the sketch pad (black strokes on white)")
        img = to_mode(open_image(comp), 1)
        if np.asarray(img).min() > 200:
            raise ValueError("the sketch pad is empty: draw a stickman first (black strokes on white)")
        return load_image(img, size, ch)

    def generate(self, model, sampler="dpm++", steps=25, spacing="trailing", eta=0.0, guidance=2.0, seed=-1,
                 batch_size=4, preview_every=1, class_label=ANY, attributes=None, stick_source="sketch",
                 stick_sketch=None, stick_upload=None, init_image=None, strength=0.6, make_gif=False,
                 gif_frames="x0_hat", backend=None, request: gr.Request = None):
        """Stream a sampling run: every ``preview_every`` steps yield x_t | x0_hat, a status line and the
        progress; finally the gallery of PNGs (tEXt 'parameters' = JSON) and the optional GIF."""
        try:
            steps = int(number(steps, "steps", *BOUNDS["steps"], whole=True))
            batch_size = int(number(batch_size, "batch size", 1, MAX_BATCH, whole=True))
            preview_every = max(1, int(number(preview_every, "preview every", 0, MAX_STEPS, whole=True)))
            guidance = number(guidance, "guidance scale", *BOUNDS["guidance"])
            eta = number(eta, "eta", *BOUNDS["eta"])
            strength = number(strength, "strength", *BOUNDS["strength"])
            if strength == 0.0:
                raise ValueError("strength must be in (0, 1], got 0")
            seed = self._seed(seed)
            if backend is not None and backend not in BACKENDS:
                raise ValueError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
            if model in self.models.names() and not self.models.is_ready(model, backend):
                # loading, and with backend auto measuring this CPU once per model: seconds, so say so
                what = ("measuring which backend runs it fastest here (once per model)"
                        if (backend or self.models.backend) == "auto" else "loading")
                yield (gr.skip(), html_status(f"<b>{html.escape(model)}</b>: {what}…"), None, None, gr.skip(),
                       gr.skip(), gr.skip())
            pipe = self.models.get(model, backend)
            cfg = pipe.base.config
            if sampler not in pipe.samplers:
                raise ValueError(f"sampler {sampler!r} does not apply to model {model!r} "
                                 f"(use {', '.join(pipe.samplers)})")
            labels = self._labels(pipe, model, class_label, attributes)
            kw = dict(sampler=sampler, steps=steps, spacing=spacing, eta=float(eta), guidance=float(guidance),
                      labels=labels, seed=seed, device=self.models.device)
            if cfg.task == "pose":
                kw["cond_image"] = self._cond_image(pipe, stick_source, stick_sketch, stick_upload)
            if cfg.task == "super_resolution":
                if init_image is None:
                    raise ValueError("a super-resolution model needs a low-resolution input image (upload one)")
                kw["low_res"] = load_image(init_image, cfg.low_res, cfg.unet.out_channels)[None]
            elif init_image is not None:
                kw["init_image"] = load_image(init_image, cfg.unet.image_size, cfg.unet.in_channels)
                kw["strength"] = float(strength)
            stream = pipe.stream(batch_size, **kw)
        except USER_ERRORS as e:
            raise user_error(e) from None

        session = getattr(request, "session_hash", None) or "api"
        stop = threading.Event()
        self._stops[session] = stop
        meta = {"model": model, "sampler": sampler, "steps": steps, "spacing": spacing,
                "eta": float(eta) if sampler == "ddim" else None, "guidance": float(guidance), "labels": labels,
                "seed": seed, "batch_size": batch_size}
        if "init_image" in kw:
            meta["img2img_strength"] = float(strength)
        if "cond_image" in kw:
            meta["stickman"] = stick_source
        n_stages = len(pipe.stages) if pipe.kind == "cascade" else 1
        run = self._new_run(pipe, model, meta)     # the first image's steps, for the Learn tab
        run["cond_image"] = kw.get("cond_image")   # a stickman (C, H, W): a branch of the run is conditioned on it
        run["img2img"] = "init_image" in kw
        self.runs.put(session, run)                 # the session's gr.State holds the key; the steps stay here
        frames: list[np.ndarray] = []
        t0 = time.time()
        last = None
        partial = None
        first = True
        try:
            for rec in stream:   # each step runs under inference mode inside the package's loop
                last = rec
                self._keep(session, run, rec)
                if make_gif and (rec.index % max(1, rec.num_steps // GIF_MAX_FRAMES) == 0
                                 or rec.index == rec.num_steps - 1):
                    src = rec.x0_hat if gif_frames == "x0_hat" else rec.x_t
                    frames.append(np.asarray(batch_grid(src)))
                if stop.is_set():
                    break
                is_last = rec.index == rec.num_steps - 1
                if rec.index % preview_every == 0 or is_last:
                    frac = (rec.stage + (rec.index + 1) / rec.num_steps) / n_stages
                    partial = {"x0": rec.x0_hat.detach().float().cpu().clamp(-1, 1).numpy(), "meta": meta,
                               "step": f"{rec.index + 1}/{rec.num_steps}", "stage": rec.stage}
                    # the first preview empties the gallery and GIF (the last run's results); later ones leave
                    # them alone: a preview still on its way when Stop is pressed must not empty the partial
                    # result that Stop puts there (gr.skip() costs Gradio ~1.5 ms per yield)
                    clear = None if first else gr.skip()
                    first = False
                    yield (side_by_side(rec.x_t, rec.x0_hat), html_status(self._status(pipe, rec, n_stages, t0), frac),
                           clear, clear, seed, partial, session)
        except USER_ERRORS as e:
            raise user_error(e) from None
        except Exception as e:      # never show a traceback; keep serving
            log.exception("sampling failed")
            raise gr.Error(f"sampling failed: {type(e).__name__}: {e}") from None
        finally:
            if self._stops.get(session) is stop:
                del self._stops[session]
        if last is None:
            raise gr.Error("sampling produced no steps")
        stopped = stop.is_set() or not (last.index == last.num_steps - 1 and last.stage == n_stages - 1)
        final = (last.x0_hat if stopped else last.x_next).detach().float().cpu().clamp(-1, 1)
        if stopped:
            meta = dict(meta, partial=True, stopped_at=f"{last.index + 1}/{last.num_steps}")
        gallery = self._save_gallery(final, meta)
        gif = self._save_gif(frames, meta) if make_gif and frames else None
        took = time.time() - t0
        text = (f"<b>{'Stopped' if stopped else 'Done'}</b> · {batch_size} image(s) · seed {seed} · "
                f"{SAMPLER_NAMES.get(sampler, sampler)} {steps} steps ({spacing}){self._sr_stages(pipe)} · "
                f"{took:.1f} s · "
                f"<span title=\"{html.escape(self._backend_reason(pipe))}\">{pipe.backend}</span>")
        if stopped:
            text += " · gallery shows the last x0_hat prediction"
        text += "<br>" + self._settings_link(meta, cfg, stick_source, stick_upload, init_image)
        run["done"] = not stopped
        yield (side_by_side(last.x_t, final), html_status(text, 1.0), gallery, gif, seed, {"done": True}, session)

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

    def _status(self, pipe, rec, n_stages, t0) -> str:
        parts = [f"step {rec.index + 1}/{rec.num_steps}", f"t = {rec.t} → {rec.t_next}"]
        if n_stages > 1:
            name = pipe.stages[rec.stage].path.name
            parts.append(f"stage {rec.stage + 1}/{n_stages} ({'base' if rec.stage == 0 else 'super-resolution'}: "
                         f"{name})")
        if pipe.kind == "ensemble":
            e = pipe.expert_index(rec.t)
            if e is not None:
                lo, hi, _ = pipe.experts[e]
                parts.append(f"expert {e + 1}/{len(pipe.experts)} (t in [{lo}, {hi}))")
        el = time.time() - t0
        done = (rec.stage + (rec.index + 1) / rec.num_steps) / n_stages     # fraction of the run (stages alike)
        left = eta_seconds(el, done)
        parts.append(f"{el:.1f} s" + (f", about {fmt_duration(left)} left" if left is not None else ""))
        parts.append(pipe.backend)
        return " · ".join(parts)

    @staticmethod
    def _sr_stages(pipe) -> str:
        """", then 2 super-resolution stages (DDPM 10 steps each)" for a cascade: how its later stages sample."""
        if pipe.kind != "cascade":
            return ""
        runs = [f"{SAMPLER_NAMES.get(st.run_sampler(), st.run_sampler())} {st.run_steps()} steps"
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
            out.append((path, f"seed {meta['seed'] + i}" + (" (partial)" if meta.get("partial") else "")))
        return out

    def _save_gif(self, frames: list[np.ndarray], meta: dict) -> str:
        if len(frames) > GIF_MAX_FRAMES:
            idx = np.linspace(0, len(frames) - 1, GIF_MAX_FRAMES).round().astype(int)
            frames = [frames[i] for i in idx]
        imgs = [Image.fromarray(f) for f in frames]
        durations = [80] * (len(imgs) - 1) + [1500]
        path = self._run_dir(meta["model"]) / f"{meta['model']}-{meta['seed']}-reverse.gif"
        imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=durations, loop=0)
        return str(path)

    def stop(self, partial, request: gr.Request = None):
        """Stop button: end the sampling loop at once and show the latest x0_hat in the gallery."""
        session = getattr(request, "session_hash", None) or "api"
        ev = self._stops.get(session)
        if ev is not None:
            ev.set()
        if not partial or partial.get("done"):
            return gr.skip(), gr.skip()
        meta = dict(partial["meta"], partial=True, stopped_at=partial.get("step"))
        gallery = self._save_gallery(torch.from_numpy(np.asarray(partial["x0"])), meta)
        return gallery, html_status(f"<b>Stopped</b> at step {partial.get('step')} · gallery shows the last "
                                    f"x0_hat prediction (seed {meta['seed']})", None)

    def _new_run(self, pipe, model, meta) -> dict:
        """The record of a Generate run that the Learn tab explains (first image, base stage only)."""
        base = pipe.base
        d = base.config.diffusion
        run = {"model": model, "sampler": meta["sampler"], "eta": meta.get("eta") or 0.0, "variance": "posterior",
               "improved": True, "seed": meta["seed"], "steps": [], "grid": [], "done": False,
               "labels": list(meta["labels"]), "spacing": meta["spacing"], "guidance": meta["guidance"],
               "task": base.config.task,
               "summary": (f"model {model} · {SAMPLER_NAMES.get(meta['sampler'], meta['sampler'])} · "
                           f"{meta['steps']} steps ({meta['spacing']}) · guidance {meta['guidance']:g} · "
                           f"seed {meta['seed']} · first image" + (" · base stage of the cascade"
                                                                  if pipe.kind == "cascade" else ""))}
        if d.is_cold:
            deg = base.degradation
            run["degradation"] = deg
            if deg.needs_noise:     # the run's fixed draw for image 0 (the stream seeds image i with seed + i)
                c, s = base.config.unet.out_channels, base.config.unet.image_size
                run["fixed_noise"] = torch.randn((c, s, s), generator=make_generators(meta["seed"], 1)[0])[None]
        else:
            run["schedule"] = base.schedule
            run["T"] = d.T
        if pipe.kind == "ensemble":
            run["experts"] = [(lo, hi) for lo, hi, _ in pipe.experts]
        return run

    def _keep(self, key: str, run: dict, rec) -> None:
        """Append a SampleStep of the first image (its x_t is the previous step's x_next: stored once), if the
        kept runs' byte budget allows it; otherwise the run is marked ``capped`` and keeps the steps it has."""
        if rec.stage != 0:
            return
        run["grid"].append(int(rec.t))      # every step's t, kept or not: a multistep solver's weights depend on
        run["grid_end"] = int(rec.t_next)   # the whole grid (its order drops near the end)
        if run.get("capped"):
            return
        steps = run["steps"]
        first = slice(0, 1)
        shared = steps and steps[-1].index == rec.index - 1
        x_t = steps[-1].x_next if shared else rec.x_t[first].detach().float().cpu().clone()
        noise = None if rec.noise is None else rec.noise[first].detach().float().cpu().clone()
        new = [rec.x_next[first].detach().float().cpu().clone(), rec.x0_hat[first].detach().float().cpu().clone(),
               rec.eps_hat[first].detach().float().cpu().clone()] + ([] if shared else [x_t]) + \
            ([] if noise is None else [noise])
        if not self.runs.grow(key, run, sum(t.numel() * t.element_size() for t in new)):
            run["capped"] = True
            return
        steps.append(SampleStep(rec.index, rec.num_steps, int(rec.t), int(rec.t_next), x_t, *new[:3], 0, noise))

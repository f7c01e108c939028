"""The Learn tab: explain a step of the last run, its trajectory, interpolation between seeds."""
from __future__ import annotations

import math
import time

import gradio as gr
import numpy as np
import torch

from diffusion_core import BOUNDS, slerp

from ..base import AppBase
from ..inputs import handles_errors, number
from ..render import as_pil_uint8, framed, labelled, save_png, upscale_nearest
from ..settings import (ANY, INTERP_MAX_FRAMES, INTERP_MAX_WORK, TRAJ_MAX_FRAMES, deterministic_choices,
                       sampler_label)
from .explain import _alpha_bar, explain_markdown, step_numbers


class LearnTab(AppBase):
    def after_run(self, key, step):
        """After Generate: the Explain slider spans the run's steps; a note says what is kept."""
        run = self.runs.get(key)
        if run is None or not run.steps:
            return gr.skip(), gr.skip(), gr.skip()
        n = run.steps[0].num_steps
        step = int(step or 1)
        note = f"Kept: {run.summary} ({len(run.steps)}/{n} steps" + (
            f"; the first {len(run.steps)} fit in the server's {self.runs.max_bytes / 2**20:g} MB for kept runs"
            if run.progress.capped else "") + ")."
        return (gr.update(maximum=max(n, 2), value=min(max(step, 1), n)), note, note)

    @handles_errors("explaining the step")
    def explain_step(self, step=1, run=None):
        """The kept run's step ``step`` (1 = first, noisiest): the sampler's update with its numbers, the
        images it combines, and the noise level over the run. Returns (markdown, image, plot, numbers)."""
        run = self._run_or_error(run)
        recs = run.steps
        n = recs[0].num_steps
        step = int(number(step, f"step (the last run has {n} steps)", 1, n, whole=True))
        if step > len(recs) and run.progress.capped:
            raise ValueError(f"step {step} is not kept: the server keeps the first {len(recs)} steps of this run "
                             f"({self.runs.max_bytes / 2**20:g} MB for the kept runs of all sessions)")
        if step > len(recs):
            raise ValueError(f"step {step} is not computed yet: the run is at step {len(recs)} of {n}")
        num = step_numbers(run, step - 1)
        if run.experts:
            lo_hi = next(((lo, hi) for lo, hi in run.experts if lo <= num["t"] < hi), None)
            if lo_hi:
                num["expert"] = f"t in [{lo_hi[0]}, {lo_hi[1]})"
        md = explain_markdown(num, run)
        if num.get("expert"):
            md += f"\n\nDenoised by the ensemble's expert for {num['expert']}."
        terms = num.pop("_terms")
        noise = num.pop("_noise")
        rec = recs[step - 1]
        tn = "-1 (clean)" if rec.t_next < 0 else str(rec.t_next)
        cells = [(rec.x_t, f"x_t (t={rec.t})"), (rec.eps_hat * 0.4, "eps_hat (x0.4)"), (rec.x0_hat, "x0_hat")]
        cells += [(v, f"x0_hat (t={k[7:-1]})") for k, v in terms.items() if k.startswith("x0_hat[")]
        if "D(x0_hat,t)" in terms:
            cells += [(terms["D(x0_hat,t)"], f"D(x0_hat, {rec.t})"), (terms["D(x0_hat,t_next)"], f"D(x0_hat, {rec.t_next})")]
        if noise is not None:
            cells.append((noise.float() * 0.4, "noise z (x0.4)"))
        cells.append((rec.x_next, f"x_t' (t'={tn})"))
        strip = labelled([upscale_nearest(as_pil_uint8(x[0]).convert("RGB"), 112) for x, _ in cells],
                         [c for _, c in cells], gap=6, size=11)
        return md, strip, self._noise_plot(run, step - 1), num

    @staticmethod
    def _noise_plot(run, i):
        """sqrt(1 - alpha_bar_t) (or the cold severity) over the run, step i marked; and the measured std."""
        from matplotlib.figure import Figure
        recs = run.steps
        ts = [r.t for r in recs] + [recs[-1].t_next]
        xs = np.arange(len(ts))
        measured = [float(r.x_t.std()) for r in recs] + [float(recs[-1].x_next.std())]
        fig = Figure(figsize=(6.4, 3.0), dpi=100, layout="constrained")
        ax = fig.subplots()
        if run.schedule is not None:
            level = [math.sqrt(1 - _alpha_bar(run.schedule, t)) for t in ts]
            ax.plot(xs, level, "-o", ms=3, color="tab:blue", label="noise level sqrt(1 - alpha_bar_t)")
        else:
            T = run.degradation.T
            level = [max(t + 1, 0) / T for t in ts]
            ax.plot(xs, level, "-o", ms=3, color="tab:blue", label="degradation severity (t + 1) / T")
        ax.plot(xs, measured, "--", color="tab:gray", lw=1.2, label="measured std of x_t (first image)")
        ax.axvline(i, color="tab:orange", lw=1.2)
        ax.plot([i], [level[i]], "o", ms=9, color="tab:orange", label=f"step {i + 1}: t = {ts[i]}")
        ax.set_xlabel("step (0 = start, x_T)")
        ax.set_title("how x_t's noise falls over the run")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        return fig

    @handles_errors("the trajectory")
    def trajectory(self, frames=10, what="x0_hat", run=None):
        """The kept run's x0_hat (or x_t) at every step as an animated GIF (one frame per step, up to
        TRAJ_MAX_FRAMES) and a strip of ``frames`` evenly spaced steps labelled with t."""
        run = self._run_or_error(run)
        if what not in ("x0_hat", "x_t"):
            raise ValueError(f"what must be x0_hat or x_t, got {what!r}")
        frames = int(number(frames, "frames", 2, 20, whole=True))
        recs = list(run.steps)
        n = len(recs)
        pick = range(n) if n <= TRAJ_MAX_FRAMES else np.linspace(0, n - 1, TRAJ_MAX_FRAMES).round().astype(int)
        imgs = [framed(upscale_nearest(as_pil_uint8(getattr(recs[k], what)[0]).convert("RGB"), 192),
                       f"step {k + 1}/{recs[k].num_steps} · t = {recs[k].t}") for k in pick]
        path = self._run_dir(run.model) / f"{run.model}-{run.request.seed}-{what}-trajectory.gif"
        imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=[100] * (len(imgs) - 1) + [1500],
                     loop=0)
        idx = sorted(set(np.linspace(0, n - 1, min(frames, n)).round().astype(int).tolist()))
        strip = labelled([upscale_nearest(as_pil_uint8(getattr(recs[k], what)[0]).convert("RGB"), 96) for k in idx],
                         [f"t = {recs[k].t}" for k in idx], gap=4, size=11)
        return str(path), strip

    @handles_errors("the interpolation")
    def interpolate(self, model, class_label=ANY, attributes=None, seed_a=0, seed_b=1, frames=8,
                    sampler=deterministic_choices()[0][1], steps=25, guidance=2.0):
        """Slerp between the starting noise x_T of seeds a and b (``frames`` alphas from 0 to 1), each sampled
        with a deterministic sampler (DDIM eta = 0 or DPM-Solver++): the first and last images are exactly
        the plain generations of seed a and seed b. Returns (gallery of PNGs, labelled row, note)."""
        pipe = self.models.get(model)
        self._needs_plain_generation(pipe, model, "interpolating")
        if pipe.kind == "cascade":
            raise ValueError("interpolation samples one model (a cascade has several stages): pick its base model")
        if pipe.config.diffusion.is_cold:
            raise ValueError("interpolation needs a Gaussian diffusion model (x_T is noise); this is a cold model")
        deterministic = [name for _, name in deterministic_choices()]
        if sampler not in deterministic:
            raise ValueError(f"interpolation needs a deterministic sampler: {', '.join(deterministic)}")
        frames = int(number(frames, "frames", 2, INTERP_MAX_FRAMES, whole=True))
        steps = int(number(steps, "steps", *BOUNDS["steps"], whole=True))
        g = number(guidance, "guidance scale", *BOUNDS["guidance"])
        if frames * steps > INTERP_MAX_WORK:
            raise ValueError(f"too much work: {frames} frames x {steps} steps (limit {INTERP_MAX_WORK}); "
                             "use fewer frames or steps")
        labels = self._labels(pipe, model, class_label, attributes)
        sa, sb = self._seed(seed_a), self._seed(seed_b)
        dev = self.models.device
        za, zb = pipe.start_noise(1, sa)[0], pipe.start_noise(1, sb)[0]
        alphas = [k / (frames - 1) for k in range(frames)]
        x_T = torch.stack([slerp(za, zb, a) for a in alphas])
        t0 = time.time()
        last = None
        for last in pipe.stream(frames, sampler=sampler, steps=steps, spacing="trailing", guidance=g, labels=labels,
                                seed=sa, x_start=x_T, device=dev):
            pass
        x = last.x_next.detach().float().cpu().clamp(-1, 1)
        d = self._run_dir(model)
        meta = {"model": model, "sampler": sampler, "steps": steps, "spacing": "trailing", "guidance": g,
                "labels": labels, "seed_a": sa, "seed_b": sb}
        gallery = [(save_png(as_pil_uint8(x[k]), d / f"{model}-slerp-{k:02d}.png", dict(meta, alpha=a)),
                    f"alpha = {a:.2f}") for k, a in enumerate(alphas)]
        row = labelled([upscale_nearest(as_pil_uint8(x[k]).convert("RGB"), 96) for k in range(frames)],
                       [f"seed {sa}" if a == 0 else (f"seed {sb}" if a == 1 else f"{a:.2f}") for a in alphas],
                       gap=4, size=11)
        note = (f"slerp(x_T(seed {sa}), x_T(seed {sb}), alpha) for {frames} alphas · "
                f"{sampler_label(sampler)} {steps} steps · guidance {g:g} · {time.time() - t0:.1f} s")
        return gallery, row, note

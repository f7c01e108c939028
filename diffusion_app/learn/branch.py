"""Branch from a step: continue the kept run from its x_t at any step with other settings, beside the original."""
from __future__ import annotations

import time

from diffusion_core import BOUNDS

from ..base import AppBase
from ..inputs import handles_errors, number
from ..render import as_pil_uint8, labelled, upscale_nearest
from ..settings import ANY, DEFAULT_SAMPLER, can_branch, sampler_short

MAX_BRANCHES = 6        # kept per session, newest last; older ones drop off the row


class BranchTab(AppBase):
    @handles_errors("branching")
    def branch(self, step=1, sampler=DEFAULT_SAMPLER, steps=None, guidance=2.0, relabel=False, class_label=ANY,
               attributes=None, branches=None, run=None):
        """Continue the session's kept run (its first image) from x_t at ``step`` (1 = the first) with ``sampler``,
        ``steps`` steps (None: the steps the run had left), ``guidance`` and, with ``relabel``, the Generate tab's
        class / attributes instead of the run's. The run's seed drives any sampler noise, so a branch with the
        run's own settings is the run itself on a trailing grid. Returns (row of images: x_t at the step, the
        original, then up to MAX_BRANCHES branches; note; the branches kept for the next call)."""
        run = self._run_or_error(run)
        recs = run.steps
        n = recs[0].num_steps
        step = int(number(step, f"step (the last run has {n} steps)", 1, n, whole=True))
        if step > len(recs):
            raise ValueError(f"step {step} is not kept (the run keeps {len(recs)} of its {n} steps): pick an "
                             "earlier step, or run Generate again")
        if run.schedule is None or run.task == "super_resolution":
            raise ValueError("branching continues a Gaussian model's generation from noise; this run is "
                             + ("a cold-diffusion run" if run.schedule is None else "a super-resolution"))
        if run.img2img:
            raise ValueError("branching continues a generation from noise; this run was img2img")
        guidance = number(guidance, "guidance scale", *BOUNDS["guidance"])
        rec = recs[step - 1]
        left = n - (step - 1)
        steps = left if steps in (None, "", 0) else int(number(steps, "steps", *BOUNDS["steps"], whole=True))
        pipe = self.models.get(run.model).base      # the run's base stage (a cascade's is its first model)
        if sampler not in pipe.samplers or not can_branch(sampler):
            raise ValueError(f"sampler {sampler!r} does not apply to {run.model}")
        labels = self._labels(pipe, run.model, class_label, attributes) if relabel else list(run.request.labels)
        cond = run.request.cond_image
        t0 = time.time()
        x = pipe.sample(1, sampler=sampler, steps=steps, spacing=run.request.spacing, guidance=float(guidance),
                        labels=labels, cond_image=None if cond is None else cond.to(self.models.device),
                        seed=run.request.seed, x_start=rec.x_t.to(self.models.device), t_start=int(rec.t),
                        device=self.models.device).detach().float().cpu().clamp(-1, 1)
        took = time.time() - t0
        what = f"{sampler_short(sampler)} {steps} · g {guidance:g}"
        if relabel and labels != list(run.request.labels):
            what += " · " + (", ".join(labels) or "no labels")
        kept = [b for b in (branches or []) if b.get("key") == (id(run), step)][-(MAX_BRANCHES - 1):]
        kept.append({"key": (id(run), step), "caption": what, "image": x[0]})
        done = run.progress.done and len(recs) == n
        original = recs[-1].x_next if done else recs[-1].x0_hat
        cells = [(rec.x_t[0], f"x_t at step {step} (t={rec.t})"),
                 (original[0], "original" if done else "original (x0_hat, unfinished)")]
        cells += [(b["image"], b["caption"]) for b in kept]
        row = labelled([upscale_nearest(as_pil_uint8(im).convert("RGB"), 128) for im, _ in cells],
                       [c for _, c in cells], gap=6, size=11)
        note = (f"Branched at step {step} of {n} (t = {rec.t}) of {run.summary}: {what}, {took:.1f} s. "
                f"{len(kept)} branch(es) from this step; a new step or run starts a new row.")
        return row, note, kept

"""The Learn tab's comparisons: samplers x steps and guidance scales on one seed."""
from __future__ import annotations

import time
from dataclasses import asdict


from diffusion_core import BOUNDS

from ..base import AppBase
from ..inputs import as_list, handles_errors, number
from ..render import cell_image, compose_grid
from ..settings import (ANY, COMPARE_MAX_CELLS, COMPARE_MAX_STEPS, DEFAULT_SAMPLER, compare_default_samplers,
                       sampler_label, sampler_names, sampler_short)


class CompareTab(AppBase):
    def schedule_siblings(self, model) -> list[str]:
        """Other models that differ from ``model`` only in the noise schedule (same U-Net, labels, task and
        prediction; config.json compared)."""
        mine = self.models.config(model)
        if getattr(mine, "kind", None) != "model":
            return []
        sched_keys = ("schedule", "beta_1", "beta_T")

        def rest(c):
            d = {k: v for k, v in asdict(c.diffusion).items() if k not in sched_keys}
            return (c.unet, c.label_names, c.multi_label, c.task, d)

        def sched(c):
            return tuple(getattr(c.diffusion, k) for k in sched_keys)
        out = []
        for n in self.models.names():
            if n == model:
                continue
            c = self.models.config(n)
            if getattr(c, "kind", None) == "model" and rest(c) == rest(mine) and sched(c) != sched(mine) \
                    and self.models.broken(n) is None:
                out.append(n)
        return out

    def _grid_models(self, model, pipe, schedules) -> list[tuple[str, object]]:
        models = [(model, pipe)]
        if schedules:
            sibs = self.schedule_siblings(model)
            if not sibs:
                raise ValueError(f"no other model differs from {model!r} only in its noise schedule (same U-Net "
                                 "config, different diffusion.schedule); untick 'schedules'")
            models += [(n, self.models.get(n)) for n in sibs]
        return models

    def _compare_grid(self, model, class_label, attributes, seed, samplers, columns, schedules):
        """One image per (model, sampler) row and column; columns: [(steps, guidance, label)]."""
        pipe = self.models.get(model)
        self._needs_plain_generation(pipe, model, "comparing")
        labels = self._labels(pipe, model, class_label, attributes)
        seed = self._seed(seed)
        samplers = [s for s in (samplers or [])]
        for s in samplers:
            if s not in sampler_names():
                raise ValueError(f"unknown sampler {s!r}; choose from {', '.join(sampler_names())}")
        if not samplers:
            raise ValueError("choose at least one sampler")
        if not columns:
            raise ValueError("choose at least one column (step count or guidance scale)")
        models = self._grid_models(model, pipe, schedules)
        rows = [(name, p, s) for name, p in models for s in samplers if s in p.samplers]
        skipped = sorted({sampler_label(s) for name, p in models for s in samplers if s not in p.samplers})
        if not rows:
            raise ValueError(f"none of the chosen samplers applies to {model!r} (it uses "
                             f"{', '.join(sampler_label(s) for s in pipe.samplers)})")
        cells_n = len(rows) * len(columns)
        work = sum(p.run_steps(st) for _, p, _ in rows for st, _, _ in columns)   # a cascade's SR stages count too
        # the cell limit is per model: "schedules" adds a model's rows, and its own defaults (3 samplers x 3 step
        # counts x 2 models = 18 cells) were refused against a limit of 15 (issue 35); the step limit bounds the work
        max_cells, max_steps = COMPARE_MAX_CELLS * len(models), COMPARE_MAX_STEPS * len(models)
        if cells_n > max_cells or work > max_steps:
            raise ValueError(f"too much work for one comparison: {len(rows)} row(s) x {len(columns)} column(s) = "
                             f"{cells_n} cells and {work} sampling steps in all (limits: {max_cells} cells, "
                             f"{max_steps} steps); choose fewer samplers, step counts or guidance scales")
        grid_cells, t_all = [], time.time()
        for name, p, s in rows:
            row = []
            sched = "cold" if p.config.diffusion.is_cold else p.config.diffusion.schedule
            for st, g, col in columns:
                t0 = time.time()
                x = p.sample(1, sampler=s, steps=st, guidance=g, labels=labels, seed=seed, device=self.models.device)
                dt = time.time() - t0
                row.append((cell_image(x), [f"{sampler_short(s)} · {col}", f"{dt:.2f} s wall",
                                            f"{name} ({sched})"]))
            grid_cells.append(row)
        note = (f"{len(rows)} x {len(columns)} grid · seed {seed} · "
                f"{'class ' + ', '.join(map(str, labels)) if labels else 'unconditional'} · "
                f"{work} steps in {time.time() - t_all:.1f} s")
        if skipped:
            note += f" · skipped (not for this model): {', '.join(skipped)}"
        return compose_grid(grid_cells), note

    @staticmethod
    def _int_list(values, what, lo, hi) -> list[int]:
        return sorted({int(number(v, what, lo, hi, whole=True)) for v in as_list(values)})

    @handles_errors("the comparison")
    def compare(self, model, class_label=ANY, attributes=None, seed=0, samplers=tuple(compare_default_samplers()),
                step_counts=(5, 10, 25), guidance=2.0, schedules=False):
        """One seed, samplers (rows) x step counts (columns), each cell labelled with sampler, steps and wall
        time; ``schedules`` adds the rows of the models that differ only in their noise schedule."""
        steps = self._int_list(step_counts, "step counts", *BOUNDS["steps"])
        g = number(guidance, "guidance scale", *BOUNDS["guidance"])
        return self._compare_grid(model, class_label, attributes, seed, samplers,
                                  [(st, g, f"{st} steps") for st in steps], schedules)

    @handles_errors("the guidance comparison")
    def compare_guidance(self, model, class_label=ANY, attributes=None, seed=0, samplers=(DEFAULT_SAMPLER,),
                         guidance_scales=(0, 1, 2, 4, 7), steps=25, schedules=False):
        """One seed, samplers (rows) x classifier-free guidance scales (columns) at ``steps`` steps."""
        st = int(number(steps, "steps", *BOUNDS["steps"], whole=True))
        gs = sorted({number(v, "guidance scales", *BOUNDS["guidance"]) for v in as_list(guidance_scales)})
        pipe = self.models.get(model)
        cfg = pipe.base.config
        if not cfg.unet.num_labels:
            raise ValueError(f"model {model!r} has no class or attribute conditioning: guidance does nothing")
        if not self._labels(pipe, model, class_label, attributes):
            raise ValueError("choose a class (or attributes) on the Generate tab: without one, every guidance "
                             "scale samples the same unconditional model")
        return self._compare_grid(model, class_label, attributes, seed, samplers,
                                  [(st, g, f"{st} st · w={g:g}") for g in gs], schedules)

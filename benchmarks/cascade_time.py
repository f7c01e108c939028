"""One figure and four from a cascade at its own defaults (the app's Generate), per stage, per backend.

    python benchmarks/cascade_time.py [--model checkpoints/pose-cascade-256] [--backends fp32 bf16] [--images 1 4]
        [--repeats 2] [--out JSON]

The stickman is ``examples/stickmen``'s first drawing. Each (backend, images) pair runs ``--repeats`` times after
one warm-up run; the best wall time is kept, with each stage's share (the time from the stage's first step record
to its last). The CPU model, thread count and date go into the JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusion_core.pipeline import load  # noqa: E402
from diffusion_core.runtime.machine import cpu_info  # noqa: E402


def stickman(side: int, channels: int) -> torch.Tensor:
    path = sorted((ROOT / "examples" / "stickmen").glob("*.png"))[0]
    img = Image.open(path).convert("L" if channels == 1 else "RGB").resize((side, side), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img, dtype=np.float32)).reshape(side, side, -1).permute(2, 0, 1) / 127.5 - 1


def defaults_and_drawing(pipe) -> tuple[dict, torch.Tensor]:
    """The cascade's own sampling defaults (its base stage's: the app's Generate) and the stickman at its size."""
    cfg = pipe.stages[0].config
    s = cfg.sampling
    return (dict(sampler=s.sampler, steps=s.steps, guidance=s.guidance, spacing=s.spacing),
            stickman(cfg.unet.image_size, cfg.unet.cond_channels))


def one_run(pipe, n: int, defaults: dict, cond: torch.Tensor) -> tuple[float, list[float]]:
    marks: dict[int, list[float]] = {}
    start = time.perf_counter()
    for rec in pipe.stream(n, cond_image=cond, seed=0, **defaults):
        marks.setdefault(getattr(rec, "stage", 0) or 0, []).append(time.perf_counter())
    wall = time.perf_counter() - start
    ends = [start] + [marks[k][-1] for k in sorted(marks)]
    return wall, [round(b - a, 3) for a, b in zip(ends, ends[1:])]


def write_rows(out: str, model: str, defaults: dict, rows: list[dict]) -> None:
    """The JSON of a timing run, at ``out`` (nothing when empty): the rows with the CPU model, thread count, date,
    model, its defaults and the command line."""
    if out:
        Path(out).write_text(json.dumps(dict(cpu=cpu_info().model, threads=torch.get_num_threads(),
                                             date=time.strftime("%Y-%m-%d"), model=model, defaults=defaults,
                                             command="python " + " ".join(sys.argv), rows=rows), indent=1) + "\n")
        print("wrote", out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="checkpoints/pose-cascade-256")
    ap.add_argument("--backends", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--images", nargs="+", type=int, default=[1, 4])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    rows = []
    for backend in a.backends:
        pipe = load(ROOT / a.model, backend=backend, measure=False)
        defaults, cond = defaults_and_drawing(pipe)
        for n in a.images:
            one_run(pipe, n, defaults, cond)              # warm-up: first calls, kernels, caches
            runs = [one_run(pipe, n, defaults, cond) for _ in range(a.repeats)]
            wall, stages = min(runs)
            row = dict(backend=backend, images=n, wall_s=round(wall, 3), stages_s=stages,
                       all_s=[round(r[0], 3) for r in runs])
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_rows(a.out, a.model, defaults, rows)


if __name__ == "__main__":
    main()

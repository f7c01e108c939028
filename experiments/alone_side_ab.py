"""A/B of ``pipeline.stage.ALONE_SIDE``: a cascade at its own defaults (the app's Generate, fp32), loaded twice in one
process, once with each side, and run in alternating order so that both see the same machine.

    python experiments/alone_side_ab.py [--model checkpoints/pose-cascade-256] [--sides 256 128] [--images 1 4]
        [--repeats 6] [--out JSON]

Each (side, images) pair gets one warm-up run, then ``--repeats`` runs alternating A B / B A; the JSON keeps every
wall time and the median, with the CPU model and thread count.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import cascade_time  # noqa: E402
import diffusion_core.pipeline.stage as stage  # noqa: E402
from diffusion_core.pipeline import load  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="checkpoints/pose-cascade-256")
    ap.add_argument("--sides", nargs=2, type=int, default=[256, 128])
    ap.add_argument("--images", nargs="+", type=int, default=[1, 4])
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    saved = stage.ALONE_SIDE
    pipes = {}
    for side in a.sides:                    # the chunk is fixed when a stage loads (eval_chunk)
        stage.ALONE_SIDE = side
        pipes[side] = load(ROOT / a.model, backend="fp32", measure=False)
    stage.ALONE_SIDE = saved
    defaults, cond = cascade_time.defaults_and_drawing(pipes[a.sides[0]])
    rows = []
    for n in a.images:
        walls: dict[int, list[float]] = {side: [] for side in a.sides}
        for side in a.sides:
            cascade_time.one_run(pipes[side], n, defaults, cond)         # warm-up
        for r in range(a.repeats):
            for side in (a.sides if r % 2 == 0 else a.sides[::-1]):
                walls[side].append(round(cascade_time.one_run(pipes[side], n, defaults, cond)[0], 3))
        for side in a.sides:
            row = dict(alone_side=side, images=n, median_s=statistics.median(walls[side]), all_s=walls[side])
            rows.append(row)
            print(json.dumps(row), flush=True)
    cascade_time.write_rows(a.out, a.model, defaults, rows)


if __name__ == "__main__":
    main()

"""The README's sampler table: FID and accuracy per (model, sampler, steps), measured with `evaluate`.

    python scripts/sampler_table.py            # run every row without a metrics file, then print the table
    python scripts/sampler_table.py --table    # only print the table from the metrics files present
    python scripts/sampler_table.py --skip ddpm   # run the rows of the other samplers only

Each row is one `python -m diffusion_core evaluate --model checkpoints/M --sampler S --steps K --n N
--guidance 2 --tag S K-nN` run; its JSON lands in checkpoints/M/metrics-<tag>.json (the command is kept
in it), so an interrupted table resumes at the first row without one; within a row, `evaluate` keeps the
samples made so far (runs/evaluate/) and resumes from them. The 2,000-sample DDPM rows take about 3 hours
each on 2 cores: `--skip ddpm` leaves them out.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (model, sampler, steps, n): 2,000 samples per row, the cheap rows first. The cold step sweep keeps its 500-sample
# rows beside the 2,000-sample row at its best step count; DDPM at 1000 steps costs 20-100x a fast row, so fewer images.
ROWS = [(m, s, k, 2000) for m in ("fashion", "fashion-linear")
        for s, k in (("dpm++", 10), ("dpm++", 20), ("ddim", 10), ("ddim", 25), ("ddim", 50), ("ddim", 100))]
ROWS += [("fashion-experts", "dpm++", 20, 2000), ("fashion-experts", "ddim", 50, 2000)]
ROWS += [("fashion-cold", "cold", k, 500) for k in (10, 20, 50)] + [("fashion-cold", "cold", 100, n) for n in (2000, 500)]
ROWS += [(m, "ddpm", 1000, n) for m in ("fashion", "fashion-linear") for n in (200, 2000)]


def tag(sampler: str, steps: int, n: int) -> str:
    return f"{sampler.replace('+', 'p')}{steps}-n{n}"


def metrics_path(model: str, sampler: str, steps: int, n: int) -> Path:
    return ROOT / "checkpoints" / model / f"metrics-{tag(sampler, steps, n)}.json"


def command(model: str, sampler: str, steps: int, n: int) -> list[str]:
    return [sys.executable, "-m", "diffusion_core", "evaluate", "--model", f"checkpoints/{model}", "--sampler",
            sampler, "--steps", str(steps), "--n", str(n), "--guidance", "2", "--batch", "50",
            "--tag", tag(sampler, steps, n)]


def run_missing(skip: list[str]) -> None:
    for model, sampler, steps, n in ROWS:
        if sampler in skip or model in skip or metrics_path(model, sampler, steps, n).is_file() or not (ROOT / "checkpoints" / model).is_dir():
            continue
        cmd = command(model, sampler, steps, n)
        print(" ".join(["python"] + cmd[1:]), flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True)


def passes(m: dict) -> int:
    """U-Net evaluations per image: one per step (every sampler here, the expert ensemble included), two with
    classifier-free guidance (the conditional and the unconditional pass; scale 1 or 0 needs one)."""
    return m["steps"] * (1 if m["guidance"] in (0.0, 1.0) else 2)


def table() -> str:
    lines = ["| model | sampler | steps | n | accuracy | FID | FID real vs real | U-Net passes / image |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    shown = set()
    for model, sampler, steps, n in ROWS:
        # a row not yet run at its sample count shows its smaller, earlier run (the n column says which)
        path = next((metrics_path(model, sampler, steps, k) for k in (n, 500, 200)
                     if k <= n and metrics_path(model, sampler, steps, k).is_file()), None)
        if path is None or path in shown:
            continue
        shown.add(path)
        m = json.loads(path.read_text())
        acc = f"{m['accuracy']:.1%}" if "accuracy" in m else "-"
        lines.append(f"| `{model}` | {sampler} | {steps} | {m['n']} | {acc} | {m['fid']:.2f} | "
                     f"{m['fid_real_vs_real']:.2f} | {passes(m)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", action="store_true", help="print the table only")
    p.add_argument("--skip", action="append", default=[], help="do not run rows of this sampler or model")
    args = p.parse_args(argv)
    if not args.table:
        run_missing(args.skip)
    print(table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

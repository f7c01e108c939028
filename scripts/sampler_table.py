"""The sampler tables of docs/models.md: FID and accuracy per (model, sampler, steps), measured with `evaluate`.

    python scripts/sampler_table.py            # run every row without a metrics file, then print the table
    python scripts/sampler_table.py --table    # only print the table from the metrics files present
    python scripts/sampler_table.py --skip ddpm   # run the rows of the other samplers only
    python scripts/sampler_table.py --solvers     # the solver x grid x steps table of `fashion` (issue 22)
    python scripts/sampler_table.py --solvers --table --plot docs/figures/solvers_fid.png
    python scripts/sampler_table.py --solvers --device cuda --jobs 4   # on a GPU machine (metrics on its CPUs)

Each row is one `python -m diffusion_core evaluate --model checkpoints/M --sampler S --steps K --n N
--guidance 2 --tag <tag> --out docs/measurements/M/metrics-<tag>.json` run (the command is kept in the JSON; a model folder
keeps only its headline runs, read there), so an interrupted table resumes at the first row without one; within a row, `evaluate` keeps the
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
sys.path.insert(0, str(ROOT))
from diffusion_core import all_samplers, sampler_info  # noqa: E402  (torch-free: the registry's records)

MEASUREMENTS = ROOT / "docs" / "measurements"      # the rows' metrics files, one folder per model
# (model, sampler, steps, n): 2,000 samples per row, the cheap rows first. The cold step sweep keeps its 500-sample
# rows beside the 2,000-sample row at its best step count; DDPM at 1000 steps costs 20-100x a fast row, so fewer images.
ROWS = [(m, s, k, 2000) for m in ("fashion", "fashion-linear")
        for s, k in (("dpm++", 10), ("dpm++", 20), ("ddim", 10), ("ddim", 25), ("ddim", 50), ("ddim", 100))]
ROWS += [("fashion-experts", "dpm++", 20, 2000), ("fashion-experts", "ddim", 50, 2000)]
ROWS += [("fashion-cold", "cold", k, 500) for k in (10, 20, 50)] + [("fashion-cold", "cold", 100, n) for n in (2000, 500)]
ROWS += [(m, "ddpm", 1000, n) for m in ("fashion", "fashion-linear") for n in (200, 2000)]
# Few-step solvers on one model: every solver on every grid at 5..20 steps, 2,000 samples each, the step counts an
# app uses first. (model, sampler, steps, n, spacing)
# The solvers: every registered sampler that can run deterministically on a Gaussian model (diffusion_core's
# sampler registry, in its order; not DDPM, which always draws noise, nor a distilled student's own rule).
SOLVERS = tuple(s.name for s in all_samplers() if s.gaussian and s.can_be_deterministic() and not s.student)
GRIDS = ("trailing", "logsnr", "karras")
SOLVER_ROWS = [("fashion", s, k, 2000, g) for k in (10, 20, 5, 8, 15) for g in GRIDS for s in SOLVERS
               if g in sampler_info(s).grids]
# run order: the 10-step rows, then the log-SNR grid (the best at 10 steps) at every step count, then the rest
SOLVER_ROWS.sort(key=lambda r: (r[2] != 10, r[4] != "logsnr", (20, 15, 8, 5).index(r[2]) if r[2] != 10 else 0))


def tag(sampler: str, steps: int, n: int, spacing: str = "trailing") -> str:
    grid = "" if spacing == "trailing" else f"-{spacing}"
    return f"{sampler.replace('+', 'p')}{steps}{grid}-n{n}"


def metrics_path(model: str, sampler: str, steps: int, n: int, spacing: str = "trailing") -> Path:
    """Where a row's metrics are: the model folder keeps only its headline runs (metrics.json, the run at its
    default settings: what its card shows); the other rows are in docs/measurements/M/, where new rows are written."""
    name = f"metrics-{tag(sampler, steps, n, spacing)}.json"
    kept = ROOT / "checkpoints" / model / name
    return kept if kept.is_file() else MEASUREMENTS / model / name


def command(model: str, sampler: str, steps: int, n: int, spacing: str = "trailing",
            device: str = "cpu") -> list[str]:
    return [sys.executable, "-m", "diffusion_core", "evaluate", "--model", f"checkpoints/{model}", "--sampler",
            sampler, "--steps", str(steps), "--n", str(n), "--guidance", "2", "--batch", "50",
            "--spacing", spacing, "--tag", tag(sampler, steps, n, spacing),
            "--out", str(metrics_path(model, sampler, steps, n, spacing).relative_to(ROOT)), "--no-progress"] + (["--device", device] if device != "cpu" else [])


def run_missing(skip: list[str], rows, device: str = "cpu", jobs: int = 1) -> None:
    """Run every row without a metrics file, ``jobs`` at a time (more than one only where the machine has
    cores to spare, e.g. sampling on a GPU: two CPU-bound rows at once slow each other several-fold)."""
    running: list[subprocess.Popen] = []
    for model, sampler, steps, n, *grid in rows:
        spacing = grid[0] if grid else "trailing"
        if (sampler in skip or model in skip or metrics_path(model, sampler, steps, n, spacing).is_file()
                or not (ROOT / "checkpoints" / model).is_dir()):
            continue
        while len(running) >= jobs:
            _reap(running)
        cmd = command(model, sampler, steps, n, spacing, device)
        metrics_path(model, sampler, steps, n, spacing).parent.mkdir(parents=True, exist_ok=True)
        print(" ".join(["python"] + cmd[1:]), flush=True)
        running.append(subprocess.Popen(cmd, cwd=ROOT))
    while running:
        _reap(running)


def _reap(running: list[subprocess.Popen]) -> None:
    """Wait for the oldest row; stop everything if it failed."""
    if (rc := running.pop(0).wait()) != 0:
        for p in running:
            p.kill()
        raise SystemExit(f"a row failed (exit status {rc})")


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


def solver_metrics() -> dict:
    """(sampler, spacing, steps) -> metrics of the SOLVER_ROWS measured so far (the trailing rows of the main
    table count: same runs)."""
    out = {}
    for model, sampler, steps, n, spacing in SOLVER_ROWS:
        path = metrics_path(model, sampler, steps, n, spacing)
        if path.is_file():
            out[(sampler, spacing, steps)] = json.loads(path.read_text())
    return out


def solver_table() -> str:
    """FID (accuracy) per solver and grid (rows) and step count (columns), `fashion`, 2,000 samples, guidance 2."""
    m = solver_metrics()
    steps = sorted({k for _, _, k, _, _ in SOLVER_ROWS})
    lines = ["| solver | grid | " + " | ".join(f"{k} steps" for k in steps) + " |",
             "|---|---|" + "---:|" * len(steps)]
    for spacing in GRIDS:
        for sampler in SOLVERS:
            cells = [f"{m[(sampler, spacing, k)]['fid']:.2f} ({m[(sampler, spacing, k)]['accuracy']:.1%})"
                     if (sampler, spacing, k) in m else "-" for k in steps]
            lines.append(f"| {sampler} | {spacing} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def solver_plot(out: Path) -> None:
    """FID against U-Net passes per image, one line per solver x grid."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    m = solver_metrics()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    styles = {"trailing": ("-", "o"), "logsnr": ("--", "s"), "karras": (":", "^")}   # grid: line and marker
    colours = {s: f"C{i}" for i, s in enumerate(SOLVERS)}     # solver: colour (C0-C3: blue, orange, green, red)
    for sampler in SOLVERS:
        for spacing in GRIDS:
            pts = sorted((passes(v), v["fid"]) for (s, g, _), v in m.items() if s == sampler and g == spacing)
            if pts:
                line, marker = styles[spacing]
                ax.plot(*zip(*pts), line, marker=marker, color=colours[sampler], label=f"{sampler} {spacing}")
    for label, path, va in (("DDIM 50", metrics_path("fashion", "ddim", 50, 2000), "bottom"),
                            ("DDIM 100", metrics_path("fashion", "ddim", 100, 2000), "top")):
        if path.is_file():
            fid = json.loads(path.read_text())["fid"]
            ax.axhline(fid, color="grey", lw=0.8)
            ax.annotate(f"{label}: {fid:.2f}", (1.0, fid), xycoords=("axes fraction", "data"), xytext=(4, 0),
                        textcoords="offset points", ha="left", va=va, fontsize=7, color="grey",
                        annotation_clip=False)     # right of the axes, off the lines; one above, one below
    ax.set_xlabel("U-Net passes per image (guided: 2 per step)")
    ax.set_ylabel("FID (classifier features, 2,000 samples)")
    ax.set_yscale("log")
    from matplotlib.ticker import NullFormatter, ScalarFormatter
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks([2, 3, 4, 5, 6, 8, 10, 15, 20, 30])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", action="store_true", help="print the table only")
    p.add_argument("--solvers", action="store_true", help="the solver x grid x steps rows and table instead")
    p.add_argument("--plot", help="with --solvers: write the FID against U-Net passes plot here (add --table to plot "
                                  "without running the missing rows first)")
    p.add_argument("--skip", action="append", default=[], help="do not run rows of this sampler or model")
    p.add_argument("--device", default="cpu", help="where the rows sample (evaluate --device; metrics on the CPU)")
    p.add_argument("--jobs", type=int, default=1, help="rows run at once (default 1)")
    args = p.parse_args(argv)
    if not args.table:
        run_missing(args.skip, SOLVER_ROWS if args.solvers else ROWS, args.device, args.jobs)
    print(solver_table() if args.solvers else table())
    if args.solvers and args.plot:
        solver_plot(Path(args.plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

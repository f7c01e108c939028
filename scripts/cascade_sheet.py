"""The example sheet of a pose cascade: the shipped stickman drawings, then each through the whole cascade with a
few seeds (one row per seed), at the cascade's output size.

    python scripts/cascade_sheet.py checkpoints/pose-cascade-128            # -> checkpoints/pose-cascade-128/samples.png
    python scripts/cascade_sheet.py checkpoints/pose-cascade --seeds 0 3 100

Rows: the drawings (nearest-upscaled), then one row per seed; the base at its own defaults (``sampling`` in its
config, as the app samples it), each super-resolution stage at its own default (DDPM 10). Seeds 0 and 3 are the ones
issue 21 found artefacts with (a grainy background and a blob on the torso; a purple, grainy figure).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusion_core import grid, load, load_image  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cascade", help="a cascade folder whose base is a pose model")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 3, 100])
    ap.add_argument("--drawings", default=str(ROOT / "examples" / "stickmen"), help="folder of stickman PNGs")
    ap.add_argument("--out", help="default: CASCADE/samples.png")
    args = ap.parse_args(argv)
    pipe = load(args.cascade)
    base = pipe.base
    if base.config.task != "pose":
        raise SystemExit(f"{args.cascade}: the base model is not a pose model")
    size = base.config.unet.image_size
    files = sorted(Path(args.drawings).glob("*.png"))
    sticks = torch.stack([load_image(f, size, base.config.unet.cond_channels) for f in files])
    out_size = pipe.image_size
    sd = base.config.sampling       # the base's own defaults, as the app samples it
    rows = [F.interpolate(sticks, size=(out_size, out_size), mode="nearest").expand(-1, 3, -1, -1)]
    for seed in args.seeds:
        # one image per call: image i of a batch would use seed + i; here every drawing gets the row's seed
        rows.append(torch.cat([pipe.sample(1, sampler=sd.sampler, steps=sd.steps, spacing=sd.spacing,
                                           guidance=sd.guidance, seed=seed, cond_image=s) for s in sticks]))
    out = Path(args.out) if args.out else Path(args.cascade) / "samples.png"
    grid(torch.cat(rows), nrow=len(files)).save(out)
    print(f"wrote {out}: {len(files)} drawings x seeds {args.seeds}, {out_size} px")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Issue 20, part 2: are the five skin tones drawn in their colours? Mean colour per tone, generated vs real.

    python experiments/skin_tone_colours.py --model checkpoints/emoji [--kind woman] [--n 8] [--guidance 1 2 3 4]
                                        [--out runs/evaluate/skin-tones.json]

For each tone T, two conditions: "full", the whole attribute vector of the real emoji "KIND: T" (an
in-distribution label set, as the full-label F1 uses), and "picks", the user's picks [KIND, T] (for a
label_mask model: these present, the rest unknown; for an older one: exactly these). Each is sampled at
every guidance scale (DPM-Solver++ 20 steps, seeds 0..n-1) and measured with ``evaluation.picks.mean_colours``:
the mean RGB (0-255) of the central 8x8 pixels at 32 px, beside the real emoji that have KIND and T.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusion_core import load  # noqa: E402
from diffusion_core.data import DataConfig, load_data  # noqa: E402
from diffusion_core.evaluation.picks import mean_colours  # noqa: E402

TONES = ("light skin tone", "medium-light skin tone", "medium skin tone", "medium-dark skin tone", "dark skin tone")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="checkpoints/emoji")
    ap.add_argument("--kind", default="woman", help="the person attribute picked with each tone (default woman)")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0])
    ap.add_argument("--out", default="runs/evaluate/skin-tones.json")
    args = ap.parse_args()
    pipe = load(args.model)
    names = list(pipe.config.label_names)
    real = load_data(DataConfig(source="emoji", split="all", image_size=32, channels=3))
    labels = torch.from_numpy(real.labels) > 0.5
    rows = []
    for tone in TONES:
        cols = [names.index(args.kind), names.index(tone)]
        have = labels[:, cols].all(1).nonzero().flatten()
        # the emoji named exactly "KIND: TONE" has the fewest attributes among them
        exact = have[labels[have].sum(1).argmin()]
        full = labels[exact].float()[None].expand(args.n, -1)
        row = {"tone": tone, "real": mean_colours(real.batch(have)["image"])["centre_rgb"], "real_count": len(have),
               "full_label_set": [names[i] for i in labels[exact].nonzero().flatten().tolist()]}
        for g in args.guidance:
            for cond, lab in (("full", full), ("picks", [args.kind, tone])):
                x = pipe.sample(args.n, sampler="dpm++", steps=args.steps, guidance=g, labels=lab, seed=0)
                row[f"{cond}_g{g:g}"] = mean_colours(x)["centre_rgb"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"model": args.model, "labels_mean": pipe.picks_meaning, "kind": args.kind, "n": args.n,
           "steps": args.steps, "sampler": "dpm++", "guidance": args.guidance, "rows": rows,
           "measure": "mean RGB 0-255 of the central 8x8 pixels at 32 px"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print("| tone | real | " + " | ".join(f"{c} g{g:g}" for g in args.guidance for c in ("full", "picks")) + " |")
    for r in rows:
        print(f"| {r['tone']} | {r['real']} | " + " | ".join(str(r[f'{c}_g{g:g}']) for g in args.guidance
                                                            for c in ("full", "picks")) + " |")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Do dark skin tones keep their brightness? For each model given and each kind (woman, man, person, hand) with
"dark skin tone": 32 samples at the emoji app defaults (ancestral DDPM 25, guidance 3, the config's held labels),
the luminance (Rec. 601) of the mean colour of the central 8x8 pixels (``evaluation.picks.mean_colours``) over that
of the real emoji with both attributes.

    python experiments/dark_tone_luminance.py checkpoints/emoji runs/emoji-balanced/model
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusion_core import load  # noqa: E402
from diffusion_core.data import DataConfig, load_data  # noqa: E402
from diffusion_core.evaluation.picks import mean_colours  # noqa: E402


def luma(c) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def main() -> None:
    torch.set_num_threads(1)
    real = load_data(DataConfig(source="emoji", split="all", image_size=32, channels=3))
    names, present = list(real.label_names), torch.from_numpy(real.labels) > 0.5
    for model in sys.argv[1:]:
        pipe, ratios = load(model), []
        for k, kind in enumerate(("woman", "man", "person", "hand")):
            pick = [kind, "dark skin tone"]
            have = present[:, [names.index(a) for a in pick]].all(1).nonzero().flatten()
            r = mean_colours(real.batch(have)["image"])["centre_rgb"]
            x = pipe.sample(32, sampler="ddpm", steps=25, guidance=3.0, labels=pick, seed=500 + 100 * k)
            ratios.append(luma(mean_colours(x)["centre_rgb"]) / luma(r))
            print(f"{model} {kind} + dark skin tone: luminance ratio {ratios[-1]:.2f}", flush=True)
        print(f"{model} mean {np.mean(ratios):.2f}")


if __name__ == "__main__":
    main()

"""Write the app's example inputs (``examples/``), all made by the project from its own data sources:

    python scripts/make_examples.py

- ``examples/stickmen/pose_NN.png``: hand-drawn-style stickman drawings (256 px), for the pose models;
- ``examples/lowres/emoji_*.png``: Noto Color Emoji glyphs at 32 px (Debian's fonts-noto-color-emoji), and
  ``examples/lowres/figure_NN.png``: procedurally rendered 32 px figures, the low-resolution inputs of the
  super-resolution models (``emoji-sr``, ``pose-sr``) in the app's one-click examples; ``*_64.png`` and
  ``figure_NN_128.png`` are the same at the input sizes of the later stages (``emoji-sr128``, ``pose-sr128``,
  ``pose-sr256``).
"""
from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusion_core.data.emoji import render_emoji  # noqa: E402
from diffusion_core.data.pose import make_pairs, write_examples  # noqa: E402

LOWRES_EMOJI = {"cat": "\U0001F431", "heart": "\u2764\ufe0f", "woman-dark": "\U0001F469\U0001F3FE"}


def main() -> None:
    write_examples(ROOT / "examples" / "stickmen")
    out = ROOT / "examples" / "lowres"
    out.mkdir(parents=True, exist_ok=True)
    for size, suffix in ((32, ""), (64, "_64")):
        for name, text in LOWRES_EMOJI.items():
            render_emoji(text, size).save(out / f"emoji_{name}{suffix}.png")
    for size, suffix in ((32, ""), (64, "_64"), (128, "_128")):
        figures, _ = make_pairs(3, size=size, seed=2026)
        for i, fig in enumerate(figures):
            Image.fromarray(fig).save(out / f"figure_{i + 1:02d}{suffix}.png")
    print("wrote", sorted(p.name for p in out.glob("*.png")))


if __name__ == "__main__":
    main()

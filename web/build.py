"""Build the static site (issue 41): ``python web/build.py --out web/dist`` from the repository root.

The folder it writes is ready to push as a Hugging Face static Space (its README.md has ``sdk: static``) or to open
locally with ``python -m http.server -d web/dist``. It holds the page (web/index.html, style.css, src/), the
WebAssembly build of onnxruntime-web from web/node_modules (``npm ci --prefix web`` first), each model exported by
``python -m diffusion_core export-web`` and the bundled stickman drawings.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web"
MODELS = ("fashion", "fashion-4step", "fashion-1step", "emoji", "pose", "emoji-sr", "pose-sr")   # the first: the default
UPSCALERS = {"emoji": "emoji-sr", "pose": "pose-sr"}    # the super-resolution model each base's results can go through
ORT_FILES = ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm", "ort-wasm-simd-threaded.mjs",
             "ort.webgpu.bundle.min.mjs", "ort-wasm-simd-threaded.asyncify.wasm")     # WebGPU: loaded only on request
SPACE_README = """---
title: Diffusion in your browser
emoji: 🌫️
colorFrom: indigo
colorTo: gray
sdk: static
app_file: index.html
pinned: false
---

# Diffusion in your browser

The models of [diffusion_core](https://github.com/) run in the visitor's browser (onnxruntime-web, WebAssembly):
pick a model, a sampler and a seed, and watch x_t and the network's x0 estimate at every step. Built with
`python web/build.py --out DIR`; every file here is static.
"""
MANIFEST = {"name": "Diffusion in your browser", "short_name": "Diffusion", "start_url": "./index.html",
            "display": "standalone", "background_color": "#fafafa", "theme_color": "#5b3cc4", "icons": []}


def build(out: Path, models: list[Path], weights: str = "int8") -> dict:
    """Write the site into ``out`` (replaced). Returns {file: bytes} of what a visitor downloads."""
    sys.path.insert(0, str(ROOT))
    from diffusion_core.webexport import export_web
    ort_dist = WEB / "node_modules" / "onnxruntime-web" / "dist"
    if not (ort_dist / ORT_FILES[0]).is_file():
        raise SystemExit(f"error: {ort_dist} is missing: run `npm ci --prefix web --ignore-scripts` first")
    if out.exists():
        shutil.rmtree(out)
    (out / "src").mkdir(parents=True)
    for name in ("index.html", "style.css", "sw.js"):
        shutil.copy2(WEB / name, out / name)
    for js in (WEB / "src").glob("*.js"):
        shutil.copy2(js, out / "src" / js.name)
    (out / "ort").mkdir()
    for name in ORT_FILES:
        shutil.copy2(ort_dist / name, out / "ort" / name)
    (out / "examples" / "stickmen").mkdir(parents=True)
    for png in sorted((ROOT / "examples" / "stickmen").glob("pose_0*.png")):
        shutil.copy2(png, out / "examples" / "stickmen" / png.name)
    index = []
    for folder in models:
        dest = export_web(folder, out / "models", weights)
        m = json.loads((dest / "model.json").read_text())
        index.append({"name": m["name"], "description": m["description"], "weights": m["weights"], "task": m["task"],
                      "bytes": (dest / m["onnx"]).stat().st_size})
    names = {e["name"] for e in index}
    for e in index:
        if UPSCALERS.get(e["name"]) in names:
            e["upscaler"] = UPSCALERS[e["name"]]
    (out / "models" / "index.json").write_text(json.dumps(index, indent=1))
    (out / "site.webmanifest").write_text(json.dumps(MANIFEST))
    (out / "README.md").write_text(SPACE_README)
    return {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(WEB / "dist"), help="the site folder (replaced)")
    p.add_argument("--models", nargs="+", default=[str(ROOT / "checkpoints" / m) for m in MODELS],
                   help="model folders, the first the page's default")
    p.add_argument("--weights", choices=["fp16", "int8"], default="int8",
                   help="int8: per-channel int8 weights, half the download, within the quality gate (docs/performance.md); "
                        "fp16: the shipped weights exactly")
    args = p.parse_args(argv)
    files = build(Path(args.out), [Path(m) for m in args.models], args.weights)
    print(f"wrote {args.out}: {len(files)} files, {sum(files.values()) / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

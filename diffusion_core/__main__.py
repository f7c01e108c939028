"""Command line: ``python -m diffusion_core {train,sample,evaluate,ensemble,cascade,convert,export-web} ...``.

Any bad argument ends with a one-line message and a non-zero exit code (never a traceback).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default after its help text (not for flags, nor where the default is None)."""

    def _get_help_string(self, action):
        d = action.default
        if d is None or d is False or d == [] or d is argparse.SUPPRESS or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


SPACING_HELP = "timestep grid; logsnr and karras follow the noise level and apply to Gaussian models, not cold ones"


def _parser() -> argparse.ArgumentParser:
    """The command line: one sub-command each, their arguments in the functions below."""
    p = argparse.ArgumentParser(prog="python -m diffusion_core", description="Train, sample and evaluate diffusion models.")
    sub = p.add_subparsers(dest="command", required=True)

    def parser(name, **kw):
        return sub.add_parser(name, formatter_class=_Help, **kw)

    t = parser("train", help="train a model (also under torchrun for several processes)",
               description="Train a model. Every option has a default (see TrainConfig in training/config.py); a config "
                           "file and --set override them. The result is exported to OUT_DIR/model.")
    _train_args(t)

    s = parser("sample", help="generate images from a checkpoint folder (model, ensemble or cascade)")
    _sample_args(s)

    e = parser("evaluate", help="metrics of a checkpoint: FID in classifier features, accuracy / F1 / pose adherence")
    _evaluate_args(e)

    c = parser("classifier", help="train the small evaluation classifier for a dataset")
    c.add_argument("--data", default="fashion", choices=["fashion", "emoji", "pose", "emoji-attrs"],
                   help="dataset; emoji-attrs: the picks' attribute classifier, with k-fold held-out scores")
    c.add_argument("--out", required=True, help="output folder")
    c.add_argument("--epochs", type=int, default=5, help="training epochs, 1-1000")
    c.add_argument("--seed", type=int, default=0, help="initialisation and data order")
    c.add_argument("--folds", type=int, default=5, help="emoji-attrs: cross-validation folds, 2-20")

    en = parser("ensemble", help="assemble expert folders into an eDiff-I ensemble folder")
    en.add_argument("--out", required=True, help="the ensemble folder (expert paths are relative to it)")
    en.add_argument("--expert", action="append", required=True, metavar="FOLDER:T_LO:T_HI",
                    help="an expert and the timesteps [T_LO, T_HI) it denoises; repeat to tile [0, T)")
    en.add_argument("--description", default="", help="shown on the model card")

    ca = parser("cascade", help="assemble a base model and super-resolution stages into a cascade folder")
    ca.add_argument("--out", required=True, help="the cascade folder (stage paths are relative to it)")
    ca.add_argument("--stage", action="append", required=True, metavar="FOLDER[:AUG_LEVEL[:MATCH_SCALE[:DENOISE_T]]]",
                    help="the base model first, then each super-resolution stage with its noise-augmentation level; "
                         "optionally the scale its result is matched back to its input at (1: pixel for pixel; default "
                         "4 for an augmented input, else 1) and the timestep its last step denoises at (default: none)")
    ca.add_argument("--description", default="", help="shown on the model card")

    b = parser("backends", help="measure once, idle, which backend runs each model fastest here (what auto uses "
                                "in the app, which never measures while visitors wait)")
    b.add_argument("--models", default="checkpoints", help="a model folder, or a folder of them")
    b.add_argument("--force", action="store_true", help="measure even when the machine is busy (the timings are "
                   "used for this run only, not remembered)")

    sub.add_parser("bench", help="sampling / training speed against diffusers, from a checkout (benchmarks/bench.py; "
                                 "see: bench --help)", add_help=False)

    w = parser("export-web", help="export a model for the browser page (web/): its network as ONNX and a JSON of "
                                  "what the page needs (schedule, labels, defaults)")
    w.add_argument("--model", required=True, help="a model folder (a Gaussian model: class, attributes or drawing)")
    w.add_argument("--out", default="web/dist/models", help="writes OUT/<model folder name>/{net.onnx, model.json}")
    w.add_argument("--weights", choices=["fp16", "int8"], default="fp16", help="fp16: the shipped weights exactly; "
                   "int8: per-channel int8, half the size (its cost: evaluate --weights int8)")

    cv = parser("convert", help="convert a pickle .pt state_dict to safetensors (weights only, no code run)")
    cv.add_argument("checkpoint", help="the .pt / .pth file (read with torch.load(weights_only=True))")
    cv.add_argument("--config", required=True, help="config.json of the model (ModelConfig)")
    cv.add_argument("--out", required=True, help="output model folder")
    return p


def _train_args(t) -> None:
    t.add_argument("--config", help="JSON file with TrainConfig fields (nested: unet, diffusion, data)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one field, e.g. --set steps=2000 --set data.source=emoji --set unet.base_channels=48")
    t.add_argument("--resume", action="store_true", help="continue from OUT_DIR/train_state.safetensors if present")
    t.add_argument("--reset-ema", action="store_true", help="with --resume: restart the EMA from the current weights")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where to train (default: auto)")
    t.add_argument("--out", help="output folder (same as --set out_dir=...; default runs/default)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")


def _sample_args(s) -> None:
    from .options import BACKEND_ENV, BACKENDS, MAX_BATCH, MAX_STEPS, SAMPLERS, SPACINGS   # torch-free: --help at once
    s.add_argument("--model", required=True, help="checkpoint folder")
    s.add_argument("--out", help="output folder for PNGs (default: outputs/<model folder name>, git-ignored)")
    s.add_argument("--n", type=int, default=8, help="number of images, 1-10000")
    s.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    s.add_argument("--sampler", default=None, choices=SAMPLERS, help="default: ddim (cold for cold models, a "
                   "distilled student's own rule: progressive); dpm++ is "
                   "DPM-Solver++(2M), dpm++3m its third-order multistep form, unipc UniPC-bh2 with its corrector")
    s.add_argument("--steps", type=int, default=None, help=f"sampling steps, 1-{MAX_STEPS} (U-Net passes per image: "
                   "one a step, two with guidance); a distilled student takes its own (default: 50)")
    s.add_argument("--spacing", default="trailing", choices=SPACINGS, help=SPACING_HELP)
    s.add_argument("--eta", type=float, default=0.0, help="DDIM eta in [0, 1]: 0 deterministic, 1 DDPM-like")
    s.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance scale, 0-30 (1: off)")
    s.add_argument("--plain-guidance", action="store_true", help="guide every picked attribute at the guidance "
                   "scale; by default a model's sampling.held_labels (emoji: skin tones, colour words) are guided "
                   "at weight 1")
    s.add_argument("--label", action="append", default=[], help="class or attribute, by name or index; repeat for several. A model "
                   "trained with unet.label_mask makes images that have every picked attribute, the others "
                   "unspecified; older multi-label models read the picks as the whole attribute set")
    s.add_argument("--cond-image", help="conditioning image (a stickman drawing) for pose models")
    s.add_argument("--init-image", help="img2img: start from this image ...")
    s.add_argument("--strength", type=float, default=0.6, help="... noised to this strength in (0, 1]")
    s.add_argument("--low-res", help="super-resolution models and cascades: the low-resolution image to upscale (a "
                   "PNG, or a folder of them: one output per input); a cascade runs its super-resolution stages only")
    s.add_argument("--sr-steps", type=int, default=None, help="steps of each super-resolution stage of a cascade "
                   "(default: the stage's own, else 20)")
    s.add_argument("--batch", type=int, default=16, help=f"images per forward pass, 1-{MAX_BATCH}")
    s.add_argument("--grid", action="store_true", help="also write grid.png")
    s.add_argument("--gif", action="store_true", help="also write process.gif (x0_hat over the run, first image)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--backend", choices=BACKENDS, default=None,
                   help=f"where the network runs: auto measures this CPU and picks the fastest that matches fp32 "
                        f"(default: ${BACKEND_ENV}, else auto)")


def _evaluate_args(e) -> None:
    from .options import BACKEND_ENV, BACKENDS, MAX_BATCH, SAMPLERS, SPACINGS
    e.add_argument("--model", required=True, help="checkpoint folder")
    e.add_argument("--classifier", help="classifier folder (default: checkpoints/classifier-<dataset>; --picks: "
                   "checkpoints/classifier-emoji-attrs)")
    e.add_argument("--n", type=int, default=2000, help="samples to generate and compare")
    e.add_argument("--sampler", default=None, choices=SAMPLERS, help="default: ddim (cold for cold models, a "
                   "distilled student's own rule for a student)")
    e.add_argument("--steps", type=int, default=None,
                   help="sampling steps (default 50; a super-resolution model or a distilled student: its own, see "
                        "its config)")
    e.add_argument("--spacing", default="trailing", choices=SPACINGS, help=SPACING_HELP)
    e.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance scale")
    e.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    e.add_argument("--batch", type=int, default=MAX_BATCH, help=f"images per sampling batch, 1-{MAX_BATCH}")
    e.add_argument("--out", help="write the metrics JSON here (default: MODEL/metrics[-tag].json)")
    e.add_argument("--cache-dir", default="runs/evaluate",
                   help="samples generated so far are kept here after every batch; a stopped run with the same "
                        "settings resumes from them")
    e.add_argument("--no-cache", action="store_true", help="do not keep or reuse generated samples")
    e.add_argument("--device", default="cpu", help="where the network samples, e.g. cuda (metrics on CPU)")
    e.add_argument("--samples-only", action="store_true",
                   help="make and keep the samples (--cache-dir), skip the metrics: the cache file, copied to "
                        "another machine's --cache-dir, lets evaluate with the same settings finish there")
    e.add_argument("--memorisation", action="store_true",
                   help="emoji models: also find the nearest training image to 64 samples (memorisation.png)")
    e.add_argument("--tag", default="", help="suffix of the metrics file name")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.add_argument("--backend", choices=BACKENDS, default=None,
                   help=f"where the network runs (default: ${BACKEND_ENV}, else fp32, the backend of the tables)")
    e.add_argument("--weights", choices=["shipped", "int8"], default="shipped",
                   help="int8: the weights as `export-web --weights int8` stores them (per channel), to measure its cost")
    e.add_argument("--picks", action="store_true",
                   help="multi-label models and cascades: sample a fixed list of user-style picks of 1-3 attributes "
                        "and report per pick the fraction of samples that have every picked attribute, beside real "
                        "emoji, whether the classifier can judge it, and mean colours (MODEL/metrics-picks[-tag].json, "
                        "and a sheet of 8 samples per pick beside it, metrics-picks[-tag].png; --steps, --guidance "
                        "apply)")
    e.add_argument("--per-pick", type=int, default=16, help=f"--picks: samples per pick, 1-{MAX_BATCH}")
    e.add_argument("--plain-guidance", action="store_true", help="--picks: guide every pick at the guidance scale, "
                   "not the model's sampling.held_labels at weight 1 (full label sets are always guided plainly)")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:          # the benchmark has its own options: python -m diffusion_core bench --help
        try:                           # it lives beside the package, in the repository (benchmarks/bench.py)
            from benchmarks.bench import main as bench_main
        except ModuleNotFoundError as err:
            if err.name not in ("benchmarks", "benchmarks.bench"):
                raise
            print("error: bench runs from a checkout of the repository (its benchmarks/ folder): run it in the "
                  "repository's root", file=sys.stderr)
            return 2
        return bench_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, OSError, FloatingPointError) as err:   # ConfigError etc. are ValueErrors
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2


def _run(args) -> int:
    if args.command == "train":
        from .training import load_train_config, train
        sets = list(args.set)
        if args.device:
            sets.append(f"device={args.device}")
        if args.out:
            sets.append(f"out_dir={args.out}")
        cfg = load_train_config(args.config, sets)
        out = train(cfg, resume=args.resume, progress=not args.no_progress, reset_ema=args.reset_ema)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"exported {out}" if (out / "training.json").exists() else
                  f"stopped; resume with --resume (state in {cfg.out_dir})")
        return 0
    if args.command == "sample":
        return _sample(args)
    if args.command == "evaluate":
        from .evaluation.evaluate import evaluate_command
        from .options import BOUNDS
        check_ranges(args, [("n", 1, 100_000), ("batch", *BOUNDS["n"]), ("steps", *BOUNDS["steps"]), ("seed", *BOUNDS["seed"]),
                            ("guidance", *BOUNDS["guidance"]), ("per_pick", *BOUNDS["n"])])
        return evaluate_command(args)
    if args.command == "classifier":
        from .evaluation.classifier import train_classifier
        check_ranges(args, [("epochs", 1, 1000), ("seed", 0, 2 ** 31 - 1), ("folds", 2, 20)])
        if args.data == "emoji-attrs":
            from .evaluation.attributes import Recipe, train_attribute_classifier
            train_attribute_classifier(Path(args.out), folds=args.folds, seed=args.seed,
                                       recipe=Recipe(epochs=args.epochs))
            return 0
        train_classifier(args.data, Path(args.out), epochs=args.epochs, seed=args.seed)
        return 0
    if args.command in ("ensemble", "cascade"):
        from .folders import assemble_command
        return assemble_command(args)
    if args.command == "convert":
        from .folders import convert_command
        return convert_command(args)
    if args.command == "export-web":
        from .webexport import export_web
        dest = export_web(Path(args.model), Path(args.out), args.weights)
        print(f"wrote {dest}/net.onnx ({(dest / 'net.onnx').stat().st_size / 1e6:.1f} MB) and {dest}/model.json")
        return 0
    if args.command == "backends":
        from .pipeline.loading import measure_backends
        return measure_backends(Path(args.models), force=args.force)
    return 2


def check_ranges(args, bounds) -> None:
    """One-line errors for numeric options out of range: ``bounds`` = [(option, lo, hi), ...]."""
    for name, lo, hi in bounds:
        v = getattr(args, name)
        if v is not None and not lo <= v <= hi:      # None: the option's default is the model's own
            raise ValueError(f"--{name.replace('_', '-')} must be in [{lo}, {hi}], got {v}")


def _sample(args) -> int:
    from .runtime.backends import requested_backend
    from .options import BOUNDS, MAX_SEED
    from .pipeline import load
    check_ranges(args, [("n", 1, 10000), ("batch", *BOUNDS["n"]), ("seed", 0, MAX_SEED - 10000), ("steps", *BOUNDS["steps"]),
                        ("strength", *BOUNDS["strength"]), ("eta", *BOUNDS["eta"]), ("guidance", *BOUNDS["guidance"])])
    if args.sr_steps is not None:
        check_ranges(args, [("sr_steps", *BOUNDS["steps"])])
    pipe = load(Path(args.model), backend=requested_backend(args.backend))      # sample's default: auto
    base = pipe.base.config
    own = base.distilled        # a distilled student samples with its own rule and steps unless told otherwise
    sampler = args.sampler or (own.sampler if own.teacher else pipe.samplers[0 if pipe.samplers == ("cold",) else 1])
    args.steps = args.steps or (own.steps if own.teacher else 50)
    given = pipe.prepare(cond_image=args.cond_image or None, init_image=args.init_image or None)
    cond, init = given.get("cond_image"), given.get("init_image")
    low, names = None, None
    if args.low_res:
        low, names = _low_res_inputs(pipe, Path(args.low_res))
        args.n = len(low)
    out = Path(args.out) if args.out else Path("outputs") / Path(args.model).resolve().name
    out.mkdir(parents=True, exist_ok=True)
    allimg, frames = _sample_batches(args, pipe, sampler, cond, init, low)
    _write_samples(args, pipe, sampler, allimg, frames, names, out)
    print(f"wrote {len(allimg)} images to {out} (network on {pipe.backend})")
    return 0


def _sample_batches(args, pipe, sampler, cond, init, low):
    """``sample``'s images in batches of --batch, with a progress bar over every stage's steps; (images in
    [-1, 1], the first image's x0_hat frames for --gif)."""
    import torch
    from .images import output_problem, to_pil
    images, frames = [], []
    bar, per_batch = None, None
    batches = -(-args.n // args.batch)
    try:
        for start in range(0, args.n, args.batch):
            b = min(args.batch, args.n - start)
            last, count, finite = None, 0, torch.ones(b, dtype=torch.bool)
            kw = dict(low_res=low[start:start + b]) if low is not None else {}
            if pipe.kind == "cascade":
                kw["sr_steps"] = args.sr_steps
            for rec in pipe.stream(b, sampler=sampler, steps=args.steps, spacing=args.spacing, eta=args.eta,
                                   guidance=args.guidance, labels=args.label, cond_image=cond, init_image=init,
                                   strength=args.strength, seed=args.seed + start, hold=not args.plain_guidance,
                                   **kw):
                if bar is None and not args.no_progress:   # made at the first step: an error before prints no bar
                    from tqdm import tqdm
                    # a cascade: its base's steps (none when given low_res), then every stage's
                    base_steps = 0 if pipe.kind == "cascade" and low is not None else rec.num_steps
                    bar = tqdm(total=batches * pipe.run_steps(base_steps, args.sr_steps), unit="step",
                               dynamic_ncols=True,
                               desc=f"{args.n} image{'s' * (args.n > 1)}")
                last, count = rec, count + 1
                finite &= torch.isfinite(rec.eps_hat.detach().flatten(1)).all(1)
                if bar is not None:
                    bar.update(1)
                if args.gif and start == 0:
                    frames.append(to_pil(rec.x0_hat[0].clamp(-1, 1)))
            if per_batch is None and bar is not None:       # a cascade's stages or img2img: the true count
                per_batch = count
                bar.total = batches * count
                bar.refresh()
            problem = output_problem(last.x_next, finite)
            if problem:             # clamped, they were black PNGs and exit code 0
                raise FloatingPointError(f"{args.model}: {problem}: the network's output is broken; nothing written")
            images.append(last.x_next.clamp(-1, 1))
    finally:
        if bar is not None:
            bar.close()
    return torch.cat(images), frames


def _write_samples(args, pipe, sampler, allimg, frames, names, out: Path) -> None:
    """One PNG per image with its settings in the PNG's text (one image: n = 1 and its own seed), and the grid
    and GIF when asked."""
    from PIL.PngImagePlugin import PngInfo
    from .images import grid, to_pil
    params = {"model": str(args.model), "sampler": sampler, "steps": args.steps, "spacing": args.spacing,
              "eta": args.eta, "guidance": args.guidance, "labels": args.label, "seed": args.seed,
              "backend": pipe.backend, **({"plain_guidance": True} if args.plain_guidance else {})}
    for i, img in enumerate(allimg):
        info = PngInfo()
        info.add_text("parameters", json.dumps({**params, "seed": args.seed + i, "n": 1,
                                                **({"low_res": names[i]} if names else {})}))
        to_pil(img).save(out / (f"{Path(names[i]).stem}.png" if names else f"{i:05d}.png"), pnginfo=info)
    if args.grid:
        grid(allimg, nrow=8).save(out / "grid.png")
    if args.gif and frames:
        frames = [f.resize((128, 128), 0) for f in frames]
        frames[0].save(out / "process.gif", save_all=True, append_images=frames[1:], duration=80, loop=0)


def _low_res_inputs(pipe, path: Path):
    """The low-resolution input(s) of a super-resolution model or cascade: one PNG, or every image in a folder
    (sorted by name), each read at the size the first super-resolution stage takes; (n, C, h, w) and names."""
    from .data import IMAGE_SUFFIXES
    sr = pipe.stages[1] if pipe.kind == "cascade" else pipe
    if sr.config.task != "super_resolution":
        raise ValueError(f"--low-res: {pipe.path} is neither a super-resolution model nor a cascade")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"--low-res: no images in {path}")
    if len(files) > 10000:
        raise ValueError(f"--low-res: {len(files)} images in {path}, at most 10000")
    import torch
    low = torch.cat([pipe.prepare(low_res=str(f))["low_res"] for f in files])
    return low, [f.name for f in files]


if __name__ == "__main__":
    sys.exit(main())

"""The ``evaluate`` command: samples of a model, an SR stage or a cascade, scored against held-out real data.

* FID in the evaluation classifier's penultimate features (``classifier``, ``metrics``), always beside the
  real-vs-real baseline at the same sample count;
* conditional accuracy (class labels) and per-attribute F1 (multi-labels) of generated samples;
* for the pose model, pose adherence and precision (``pose_metrics``);
* for SR stages PSNR / SSIM / sharpness against bicubic, for cascades sharpness and pose adherence per stage.

Generated samples are kept after every batch (``SampleCache``), so a stopped run resumes. Everything is
deterministic given a seed.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import read_json, write_json
from ..data import DataConfig, load_data
from ..options import MAX_BATCH
from .classifier import _data_for, features_of, load_classifier
from .metrics import f1_per_attribute, frechet_distance, visible_f1
from .pose_metrics import mean_over_pairs


def _sha256(path: Path) -> str:
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:         # hashlib.file_digest is Python 3.11+; ZeroGPU runs 3.10
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class SampleCache:
    """The samples an evaluation has generated so far, saved after every batch, so that a long run (DDPM at
    1000 steps: hours on a CPU) killed or stopped at a session's end resumes where it stopped.

    The file's metadata holds the settings: the model folder's name, the sampling settings and the weights'
    SHA-256, so the file can be made on another machine (``--samples-only --device cuda`` on a GPU) and
    finished here. A file written with other settings (or other weights) is ignored and replaced; one
    written under ``legacy`` settings (an older key) is read and rewritten under the new one. Batch k always
    uses seed + k * batch, so a resumed run gives the images an uninterrupted one would (on the same device
    and thread count: another one rounds differently)."""

    def __init__(self, path: Path | None, settings: dict, legacy: tuple[dict, ...] = ()):
        self.path = Path(path) if path else None
        self.settings = json.dumps(settings, sort_keys=True)
        self.legacy = {json.dumps(d, sort_keys=True) for d in legacy}
        self.elapsed = 0.0
        self.batch_s: list[float] = []      # wall time of each batch made (resumed runs: of the batches on file)

    def load(self) -> list[torch.Tensor]:
        if self.path is not None:
            from ..checkpoint import remove_stale_temps
            remove_stale_temps(self.path)       # a run killed while saving left its temp file (kill -9)
        if self.path is None or not self.path.is_file():
            return []
        from safetensors import safe_open
        try:
            with safe_open(str(self.path), "pt") as f:
                meta = f.metadata() or {}
                if meta.get("settings") != self.settings and meta.get("settings") not in self.legacy:
                    return []
                self.elapsed = float(meta.get("elapsed", 0.0))
                kept = [f.get_tensor(k) for k in sorted(f.keys(), key=lambda k: int(k.split(".")[1]))]
                self.batch_s = [float(v) for v in json.loads(meta.get("batch_s", "[]"))][:len(kept)]
                return kept
        except Exception:       # unreadable (e.g. an old format): start over
            return []

    def save(self, images: list[torch.Tensor], elapsed: float) -> None:
        if self.path is None:
            return
        from ..checkpoint import atomic_save_tensors
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_tensors({f"batch.{i}": x.contiguous() for i, x in enumerate(images)}, self.path,
                            metadata={"settings": self.settings, "elapsed": repr(elapsed),
                                      "batch_s": json.dumps(self.batch_s)})


def evaluate_model(model_dir: Path, classifier_dir: Path | None, n: int = 2000, sampler: str | None = None,
                   steps: int | None = None, spacing: str = "trailing", guidance: float = 2.0, seed: int = 0,
                   batch: int = MAX_BATCH, progress: bool = True, cache: Path | None = None, device: str = "cpu",
                   samples_only: bool = False, backend: str | None = None, weights: str = "shipped") -> dict:
    """Generate n samples with balanced conditions and measure them against held-out real data.

    ``device``: where the network samples (the metrics run on the CPU). ``samples_only``: stop once the
    samples are made and kept in ``cache`` (no metrics, no real data needed for a class-conditional model):
    a GPU machine can make them, and ``evaluate`` with the same settings finishes from the cache file here.
    ``backend``: where the network runs (``Pipeline.set_backend``; None: $DIFFUSION_CORE_BACKEND, else fp32).
    ``weights``: "int8" measures the weights as the browser build's int8 export holds them (``webexport``).

    ``cache``: keep the samples generated so far in this file and resume from it (see SampleCache)."""
    from ..pipeline import load
    pipe = load(model_dir, device)      # fp32 first: the backend is chosen once, for whole batches
    pipe.chunk = 0      # whole batches (faster); metrics need no bit-identity across batch sizes
    if weights == "int8":
        from ..webexport import use_int8_weights
        for stage in pipe.stages:
            for *_, net in stage.experts:
                use_int8_weights(net)
    pipe.set_backend(backend)
    cfg = pipe.base.config
    student = pipe.config.distilled        # a distilled student: its own rule on its own grid, unless asked otherwise
    sampler = sampler or (student.sampler if student.teacher else "cold" if "cold" in pipe.samplers else "ddim")
    steps = steps or (student.steps if student.teacher and sampler == student.sampler else 50)
    dataset = "emoji" if cfg.multi_label else ("pose" if cfg.task == "pose" else "fashion")
    metrics = {"model": str(model_dir), "n": n, "sampler": sampler, "steps": steps, "spacing": spacing,
               "guidance": guidance, "seed": seed, "backend": pipe.backend}
    conds = _Conditions(dataset, cfg, n, seed)
    files = sorted(Path(model_dir).rglob("*.safetensors"))
    run = {"sampler": sampler, "steps": steps, "spacing": spacing, "guidance": guidance, "seed": seed, "batch": batch}
    if pipe.backend != "fp32":          # fp32 runs keep the key their cache files were written under
        run["backend"] = pipe.backend
    if weights != "shipped":            # shipped runs keep their key too
        run["weight_form"] = metrics["weights"] = weights
    store = SampleCache(cache, {"model": Path(model_dir).resolve().name, **run,
                                "weights": [[w.relative_to(model_dir).as_posix(), _sha256(w)] for w in files]},
                        legacy=({"model": str(Path(model_dir).resolve()), **run,      # the key before session 5
                                 "weights": [[str(w.relative_to(model_dir)), w.stat().st_size, w.stat().st_mtime]
                                             for w in files]},))
    t0, images, done = _generate(pipe, store, conds, n, batch, progress, sampler=sampler, steps=steps,
                                 spacing=spacing, guidance=guidance, seed=seed, device=device)
    if done:
        metrics["resumed_from"] = done
    if samples_only:
        return {**metrics, "samples_only": True, "samples": sum(len(x) for x in images), "cache": str(cache),
                "device": str(device), "timed_batches": len(store.batch_s)}
    gen = torch.cat(images)[:n]
    metrics["sampling_s"] = round(time.time() - t0, 1)     # wall time, pauses and breaks between sessions included
    # the cost of an image: the median full batch's time per image (a batch during which the run was stopped
    # or shared the CPU does not count); the wall time per image where no full batch was timed
    metrics["sampling_s_per_image"] = round(float(np.median(store.batch_s)) / batch if store.batch_s
                                            else (time.time() - t0) / n, 4)
    metrics["timed_batches"] = len(store.batch_s)
    if dataset == "pose":
        return {**metrics, **_pose_scores(gen, conds, n)}
    return {**metrics, **_classifier_scores(dataset, cfg, gen, conds, n, seed, classifier_dir)}


class _Conditions:
    """The conditions of an evaluation's n samples: class i % L (single label), the attribute sets of held-out
    emoji (multi-label), or held-out hand-drawn stickmen (pose, with the figures drawn from the same poses)."""

    def __init__(self, dataset: str, cfg, n: int, seed: int):
        self.dataset, self.num_labels = dataset, cfg.unet.num_labels
        if dataset == "pose":
            from ..data.pose import make_pairs
            self.real_figs, self.sticks = make_pairs(n, cfg.unet.image_size, seed=seed + 777, style="handdrawn")
        elif dataset == "emoji":
            real = load_data(_data_for("emoji", "all"))
            ridx = torch.randint(len(real), (n,), generator=torch.Generator().manual_seed(seed))
            self.labels = torch.from_numpy(real.labels[ridx.numpy()])

    def of_batch(self, start: int, b: int) -> dict:
        """The ``Pipeline.stream`` keywords of images start .. start + b."""
        if self.dataset == "fashion" and self.num_labels:
            return {"labels": torch.nn.functional.one_hot(torch.arange(start, start + b) % self.num_labels,
                                                          self.num_labels).float()}
        if self.dataset == "emoji":
            return {"labels": self.labels[start:start + b]}
        if self.dataset == "pose":
            from ..data import to_tensor
            return {"cond_image": to_tensor(self.sticks[start:start + b])}
        return {}


def _generate(pipe, store: "SampleCache", conds: _Conditions, n: int, batch: int, progress: bool, *, seed: int,
              steps: int, **kw) -> tuple[float, list[torch.Tensor], int]:
    """The n samples in batches (batch k: seed + k * batch), resumed from and saved to ``store`` after every full
    batch. Returns (the run's start time, counting the time already on file; the batches; images resumed)."""
    from tqdm import tqdm
    images = store.load()
    images = images[:(n + batch - 1) // batch]
    done = sum(len(x) for x in images)
    t0 = time.time() - store.elapsed
    # one tick per sampling step of every batch (steps x batches), with an ETA; the total is corrected to the
    # true step count (img2img, cascades) at the first batch's end
    batches_left = -(-(n - min(done, n)) // batch)
    bar = tqdm(total=batches_left * steps, unit="step", disable=not progress, mininterval=2.0,
               desc=f"{n - min(done, n)} images")
    per_batch = None
    for start in range(done, n, batch):
        b = min(batch, n - start)
        tb = time.perf_counter()
        last, count = None, 0
        for last in pipe.stream(b, steps=steps, seed=seed + start, **kw, **conds.of_batch(start, b)):
            count += 1
            bar.update(1)
        if per_batch is None:
            per_batch = count
            bar.total = batches_left * count
            bar.refresh()
        images.append(last.x_next.clamp(-1, 1).cpu())     # what Pipeline.sample returns
        if b == batch:      # full batches only: a resumed run with a larger n continues from them
            store.batch_s.append(time.perf_counter() - tb)
            store.save(images, time.time() - t0)
    bar.close()
    return t0, images, done


def _pose_scores(gen: torch.Tensor, conds: _Conditions, n: int) -> dict:
    """Pose adherence and precision of the generated figures (and of the real figures of the same poses, on up
    to 200) to their drawings; seed diversity, the mean difference between neighbouring seeds' images."""
    from ..images import to_uint8
    from .pose_metrics import pose_adherence, pose_precision
    g8, n_real, sticks, real_figs = to_uint8(gen), min(n, 200), conds.sticks, conds.real_figs
    return {"pose_adherence": mean_over_pairs(pose_adherence, g8, sticks, n),
            "pose_adherence_real": mean_over_pairs(pose_adherence, real_figs, sticks, n_real),
            "pose_precision": mean_over_pairs(pose_precision, g8, sticks, n, np.nanmean),
            "pose_precision_real": mean_over_pairs(pose_precision, real_figs, sticks, n_real, np.nanmean),
            "seed_diversity": float((gen[0::2][: n // 2 - 1] - gen[1::2][: n // 2 - 1]).abs().mean())}


def _classifier_scores(dataset: str, cfg, gen: torch.Tensor, conds: _Conditions, n: int, seed: int,
                       classifier_dir: Path | None) -> dict:
    """FID in the evaluation classifier's features against n held-out real images, beside real vs real (n
    training images); accuracy (class labels) or per-attribute F1 and its mean over the judgeable attributes."""
    m = {}
    clf_dir = Path(classifier_dir or Path("checkpoints") / f"classifier-{dataset}")
    clf = load_classifier(clf_dir)
    f_gen, logits = features_of(clf, gen)
    real_a = load_data(_data_for(dataset, "test" if dataset == "fashion" else "all"))
    real_b = load_data(_data_for(dataset, "train"))
    g = torch.Generator().manual_seed(seed + 1)
    ia = torch.randperm(len(real_a), generator=g)[:n]
    ib = torch.randperm(len(real_b), generator=g)[:n]
    f_a, _ = features_of(clf, real_a.batch(ia)["image"])
    f_b, _ = features_of(clf, real_b.batch(ib)["image"])
    m["fid"] = frechet_distance(f_gen, f_a)
    m["fid_real_vs_real"] = frechet_distance(f_b, f_a)
    m["fid_reference"] = f"{len(ia)} real {'test' if dataset == 'fashion' else ''} images".replace("  ", " ")
    if dataset == "fashion" and cfg.unet.num_labels:
        want = torch.arange(n) % cfg.unet.num_labels
        m["accuracy"] = float((logits.argmax(1) == want).float().mean())
        m["accuracy_per_class"] = {name: float((logits.argmax(1)[want == i] == i).float().mean())
                                   for i, name in enumerate(cfg.label_names)}
    elif dataset == "emoji":
        cond_labels = conds.labels
        f1 = f1_per_attribute(logits > 0, cond_labels > 0.5)
        m["f1_per_attribute"] = dict(zip(cfg.label_names, [round(v, 4) for v in f1.tolist()]))
        positives = cond_labels.sum(0).long().tolist()
        m["positives_per_attribute"] = dict(zip(cfg.label_names, positives))
        training = read_json(clf_dir / "training.json") if (clf_dir / "training.json").is_file() else {}
        m["f1_visible"] = visible_f1(m["f1_per_attribute"], training.get("test_f1_per_attribute", {}),
                                     m["positives_per_attribute"])
    return m


def memorisation(model_dir: Path, n: int = 64, steps: int = 20, guidance: float = 2.0, seed: int = 0,
                 threshold: float = 0.05) -> dict:
    """The nearest training image to each of ``n`` samples (conditioned like held-out images), and the same
    distance for ``n`` held-out real images as the baseline. Writes memorisation.png: sample rows with
    their nearest training image below each."""
    from ..images import grid
    from ..pipeline import load
    from ..quality import nearest_neighbours
    pipe = load(model_dir)
    cfg = pipe.base.config
    if not cfg.multi_label:
        raise ValueError("memorisation is implemented for the emoji (multi-label) models")
    size = cfg.unet.image_size
    train = load_data(DataConfig(source="emoji", split="train", image_size=size, channels=3))
    test = load_data(DataConfig(source="emoji", split="test", image_size=size, channels=3))
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:n]
    held = test.batch(idx)
    samples = pipe.base.sample(len(idx), labels=held["labels"], sampler="dpm++", steps=steps, guidance=guidance,
                               seed=seed)
    all_train = train.batch(torch.arange(len(train)))["image"]
    i_s, d_s = nearest_neighbours(samples, all_train)
    _, d_r = nearest_neighbours(held["image"], all_train)
    rows = []
    for start in range(0, len(idx), 16):
        rows += [samples[start:start + 16], all_train[i_s[start:start + 16]]]
    grid(torch.cat(rows), nrow=16).save(Path(model_dir) / "memorisation.png")
    return {"n": len(idx), "threshold_rms": threshold, "sampler": "dpm++", "steps": steps, "guidance": guidance,
            "near_copy_fraction": float((d_s < threshold).float().mean()),
            "median_rms_to_nearest_train_samples": round(float(d_s.median()), 4),
            "median_rms_to_nearest_train_held_out_real": round(float(d_r.median()), 4),
            "near_copy_fraction_held_out_real": float((d_r < threshold).float().mean())}


def evaluate_command(args) -> int:
    from ..checkpoint import folder_kind, load_model_config, remove_stale_temps
    from ..training import command_line
    model = Path(args.model)
    what = "metrics-picks" if args.picks else "metrics"
    out = Path(args.out) if args.out else model / f"{what}{'-' + args.tag if args.tag else ''}.json"
    kind = folder_kind(model)
    if args.picks:      # partial labels as users pick them (evaluate_picks.py)
        from .picks import evaluate_picks, format_table
        m = evaluate_picks(model, Path(args.classifier) if args.classifier else None, per_pick=args.per_pick,
                           sampler=args.sampler or "dpm++", steps=args.steps or 50, guidance=args.guidance,
                           seed=args.seed, device=args.device, progress=not args.no_progress,
                           hold=not args.plain_guidance, sheet=out.with_suffix(".png"))
        m["command"] = command_line() if sys.argv[1:2] == ["evaluate"] else None
        m["threads"] = torch.get_num_threads()
        write_json(out, m)
        print(format_table(m))
        print(f"wrote {out} and the sheet {m['sheet']}")
        return 0
    sr = kind == "model" and load_model_config(model).task == "super_resolution"    # config only
    samples_only = args.samples_only
    if samples_only and (args.no_cache or kind == "cascade" or sr):
        raise SystemExit("--samples-only keeps samples in the cache: not with --no-cache, nor for a cascade or a "
                         "super-resolution model")
    from .super_resolution import evaluate_cascade, evaluate_super_resolution
    if kind == "cascade":
        m = evaluate_cascade(model, n=args.n, steps=args.steps or 50, sampler=args.sampler or "dpm++",
                             guidance=args.guidance, seed=args.seed, batch=args.batch)
    elif sr:
        m = evaluate_super_resolution(model, n=args.n, steps=args.steps, sampler=args.sampler,
                                      seed=args.seed, batch=args.batch, progress=not args.no_progress)
    else:
        cache = None if args.no_cache else Path(args.cache_dir) / f"{model.resolve().name}-{out.stem}.safetensors"
        m = evaluate_model(model, Path(args.classifier) if args.classifier else None, n=args.n,
                           sampler=args.sampler, steps=args.steps, spacing=args.spacing, guidance=args.guidance,
                           seed=args.seed, batch=args.batch, cache=cache, device=args.device, backend=args.backend,
                           samples_only=samples_only, progress=not args.no_progress, weights=args.weights)
        if m.get("samples_only"):
            print(json.dumps(m, indent=2))
            print(f"samples kept in {cache}; no metrics written (run without --samples-only to finish)")
            return 0
        if args.memorisation:
            m["memorisation"] = memorisation(model, seed=args.seed)
    m["command"] = command_line() if sys.argv[1:2] == ["evaluate"] else None     # None when called as a function
    m["threads"] = torch.get_num_threads()
    remove_stale_temps(out)
    write_json(out, m)
    short = {k: v for k, v in m.items() if not isinstance(v, dict)}
    print(json.dumps(short, indent=2))
    if "memorisation" in m:
        print(json.dumps(m["memorisation"], indent=2))
    print(f"wrote {out}")
    return 0

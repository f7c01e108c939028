"""``load(folder)``: a checkpoint folder (model, ensemble or cascade, told apart by its config.json) as a
``Pipeline``, with the backend chosen for its networks."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..checkpoint import (CONFIG, MAX_CASCADE_SIZE, CascadeManifest, CheckpointError, EnsembleManifest, folder_kind,
                          load_model_config, load_network, load_prior, read_manifest)
from ..config import ConfigError
from ..runtime import backends
from .model import Pipeline
from .stage import Stage, eval_chunk


def load(folder, device="cpu", backend: str | None = None) -> Pipeline:
    """Load a model, ensemble or cascade folder. Raises CheckpointError with a one-line reason. ``backend``:
    where the networks run (``Pipeline.set_backend``; None: $DIFFUSION_CORE_BACKEND, else fp32)."""
    pipe = _load(Path(folder), device)
    name = backends.requested_backend(backend, default="fp32")
    return pipe.set_backend(name) if name != "fp32" else pipe       # a loaded pipeline runs fp32 already


def _load(folder: Path, device="cpu") -> Pipeline:
    folder = Path(folder)
    kind = folder_kind(folder)
    if kind == "model":
        cfg, net = load_network(folder, device)
        prior, prior_labels = load_prior(folder)
        return Pipeline.of(Stage.of_network(cfg, folder, net, prior=prior, prior_labels=prior_labels,
                                            chunk=eval_chunk(cfg.output_size),
                                            description=cfg.description))
    if kind == "ensemble":
        return load_ensemble(folder, read_manifest(folder, EnsembleManifest), device)
    return load_cascade(folder, read_manifest(folder, CascadeManifest), device)


def load_ensemble(folder: Path, manifest: EnsembleManifest, device="cpu") -> Pipeline:
    """The expert ensemble ``manifest`` describes, its expert paths relative to ``folder``; nothing is written,
    so ``ensemble`` checks a manifest whole before saving it."""
    folder, where = Path(folder), Path(folder) / CONFIG
    experts, cfg0 = [], None
    T = manifest.T or load_model_config(folder / manifest.experts[0].path).diffusion.T
    try:
        manifest.check_tiling(T)
    except ConfigError as err:
        raise CheckpointError(f"{where}: {err}") from None
    for e in manifest.experts:
        if folder_kind(folder / e.path) != "model":
            raise CheckpointError(f"{where}: expert {e.path} is not a single model")
        cfg, net = load_network(folder / e.path, device)
        if cfg.diffusion.T != T:
            raise CheckpointError(f"{folder / e.path}: T = {cfg.diffusion.T}, the ensemble's is {T}")
        if cfg0 is not None and cfg.diffusion.schedule != cfg0.diffusion.schedule:
            raise CheckpointError(f"{folder / e.path}: expert schedule differs from the first expert's")
        cfg0 = cfg0 or cfg
        experts.append((e.t_lo, e.t_hi, net))
    return Pipeline.of(Stage(cfg0, folder, sorted(experts, key=lambda x: x[0]), routed=True,
                             description=manifest.description))


def load_cascade(folder: Path, manifest: CascadeManifest, device="cpu") -> Pipeline:
    """The cascade ``manifest`` describes, its stage paths relative to ``folder``. A stage must be a model or an
    ensemble (never a cascade: so no cycle can recurse), every stage after the first a super-resolution model,
    and the output at most MAX_CASCADE_SIZE pixels a side."""
    folder, where = Path(folder), Path(folder) / CONFIG
    stages, size = [], 0
    for i, st in enumerate(manifest.stages):
        kind = folder_kind(folder / st.path)
        if kind == "cascade":
            raise CheckpointError(f"{where}: stage {i} ({st.path}) is itself a cascade")
        sub = _load(folder / st.path, device)
        cfg = sub.config
        if i == 0:
            if cfg.task == "super_resolution":
                raise CheckpointError(f"{where}: stage 0 ({st.path}) must be a base model, not super-resolution")
            size = cfg.unet.image_size
        else:
            if cfg.task != "super_resolution":
                raise CheckpointError(f"{where}: stage {i} ({st.path}) is not a super-resolution model")
            size *= cfg.sr_factor
        if size > MAX_CASCADE_SIZE:
            raise CheckpointError(f"{where}: the cascade would make {size} px images (limit {MAX_CASCADE_SIZE})")
        stages.append(replace(sub.stages[0], cascade=st))
    return Pipeline(stages, folder, manifest.description)

"""Checkpoint folders made from others on the command line: ``ensemble`` and ``cascade`` (a manifest over model
folders), ``convert`` (a pickle state_dict into a model folder); and the checks of what may be joined: a cascade's
super-resolution stage must take the images the stage before it makes, an ensemble's experts must be one model.

Each command checks everything before it writes, and never replaces a model's own config.json."""
from __future__ import annotations

import pickle
from pathlib import Path

from .checkpoint import (CONFIG, CascadeManifest, CascadeStage, CheckpointError, EnsembleManifest, ExpertEntry,
                         folder_kind, load_model_config, network_shapes, read_json, read_manifest, save_model,
                         check_shapes, write_manifest)
from .config import ConfigError, ModelConfig

# what the experts of one ensemble must share: they denoise the same x_t under the same condition
EXPERT_FIELDS = ("task", "unet.in_channels", "unet.out_channels", "unet.cond_channels", "unet.num_labels",
                 "label_names", "diffusion.T", "diffusion.schedule", "diffusion.beta_1", "diffusion.beta_T",
                 "diffusion.prediction", "diffusion.degradation")


def _field(cfg: ModelConfig, name: str):
    for part in name.split("."):
        cfg = getattr(cfg, part)
    return cfg


def stage_config(folder: Path) -> ModelConfig | None:
    """The ModelConfig of a cascade stage or expert folder: its own, or an ensemble's first expert's; None for a
    cascade (which the loaders refuse as a stage)."""
    folder = Path(folder)
    kind = folder_kind(folder)
    if kind == "ensemble":
        return load_model_config(folder / read_manifest(folder, EnsembleManifest).experts[0].path)
    return load_model_config(folder) if kind == "model" else None


def check_cascade_stages(where, stages: list[tuple[str, ModelConfig]]) -> None:
    """Each super-resolution stage (all but the first) must take and make images with the channels of the stage
    before it (its cond_channels and out_channels); CheckpointError naming the manifest and both stages."""
    for i in range(1, len(stages)):
        (prev_path, prev), (path, cfg) = stages[i - 1], stages[i]
        if prev is None or cfg is None:
            continue
        c = prev.unet.out_channels
        if cfg.task == "super_resolution" and (cfg.unet.cond_channels != c or cfg.unet.out_channels != c):
            raise CheckpointError(f"{where}: stage {i} ({path}) upscales {cfg.unet.cond_channels}-channel images "
                                  f"into {cfg.unet.out_channels}-channel ones, but stage {i - 1} ({prev_path}) makes "
                                  f"{c}-channel images")


def check_experts(where, experts: list[tuple[str, ModelConfig]]) -> None:
    """Every expert must agree with the first on EXPERT_FIELDS; CheckpointError naming the field."""
    first_path, first = experts[0]
    for path, cfg in experts[1:]:
        for name in EXPERT_FIELDS:
            if _field(cfg, name) != _field(first, name):
                raise CheckpointError(f"{where}: expert {path} has {name} = {_field(cfg, name)!r}, expert "
                                      f"{first_path} has {_field(first, name)!r}")


def _check_out(out: Path, kind: str) -> None:
    """``--out`` may be a new folder or a folder of the same kind; never a model (or other) folder, whose
    config.json the manifest would replace, orphaning its weights."""
    if (out / "model.safetensors").exists():
        raise ValueError(f"--out {out} is a model folder (it holds model.safetensors); {_a(kind)} goes in a folder "
                         f"of its own")
    if (out / CONFIG).is_file():
        try:
            found = read_json(out / CONFIG).get("kind", "model")
        except CheckpointError:
            return                  # an unreadable config.json: nothing of value to keep
        if found != kind:
            raise ValueError(f"--out {out} is {_a(found)} folder (its config.json); {_a(kind)} goes in a folder of "
                             f"its own")


def _a(word: str) -> str:
    """``word`` after its indefinite article: "a cascade", "an ensemble"."""
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _manifest(args, out: Path):
    """The typed manifest the ``ensemble`` / ``cascade`` arguments describe. Its parts are checked together by the
    loader (``load_ensemble`` / ``load_cascade`` call ``check_experts`` / ``check_cascade_stages``), which holds a
    hand-written manifest to the same rules."""
    if args.command == "ensemble":
        experts = []
        for item in args.expert:
            parts = item.rsplit(":", 2)
            if len(parts) != 3 or not all(p.strip().lstrip("-").isdigit() for p in parts[1:]):
                raise ValueError(f"--expert expects FOLDER:T_LO:T_HI with whole numbers, got {item!r}")
            experts.append(ExpertEntry(parts[0], int(parts[1]), int(parts[2])))
        configs = [stage_config(out / e.path) for e in experts]
        T = configs[0].diffusion.T if configs and configs[0] is not None else 0
        return EnsembleManifest(tuple(experts), T, args.description)
    stages = []
    for item in args.stage:
        path, _, rest = item.partition(":")
        aug, _, rest = rest.partition(":")
        scale, _, t_d = rest.partition(":")
        try:
            level, match, t_d = float(aug) if aug else 0.0, int(scale) if scale else 0, int(t_d) if t_d else -1
        except ValueError:
            raise ValueError(f"--stage expects FOLDER[:AUG_LEVEL[:MATCH_SCALE[:DENOISE_T]]], got {item!r}") from None
        stages.append(CascadeStage(path, level, match_scale=match, denoise_t=t_d))
    return CascadeManifest(tuple(stages), args.description)


def assemble_command(args) -> int:
    """``ensemble`` / ``cascade``: build the typed manifest, load the whole result from it in memory (its parts
    checked against each other, every folder, config and weights file checked), and only then write config.json,
    atomically: a failure leaves the output folder as it was."""
    from .pipeline import load_cascade, load_ensemble
    out = Path(args.out)
    _check_out(out, args.command)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)      # stage paths are relative to it, so it must exist to resolve them
    try:
        manifest = _manifest(args, out)
        if args.command == "ensemble":
            load_ensemble(out, manifest)
        else:
            load_cascade(out, manifest)
    except (ConfigError, ValueError) as e:
        if created:
            out.rmdir()
        if isinstance(e, ConfigError):
            raise ValueError(f"{out / CONFIG}: {e}") from None
        raise
    write_manifest(out, manifest)
    print(f"wrote {out}")
    return 0


def read_pickled_state(path: Path) -> dict:
    """A state_dict from a pickle checkpoint, read with ``torch.load(weights_only=True)``: only tensors and plain
    containers are rebuilt, nothing else in the file runs. One-line ValueError naming the file otherwise."""
    import torch
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        if lines and lines[0].startswith("Weights only load failed"):
            what = next((ln for ln in lines if ln.startswith("Unsupported")), "objects weights_only refuses")[:120]
            raise ValueError(f"{path}: refused, nothing in it was run: it holds Python objects other than tensors "
                             f"({what})") from None
        raise ValueError(f"{path}: not a PyTorch checkpoint ({(lines or ['unreadable'])[0][:120]})") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, TypeError, IndexError, KeyError) as e:
        detail = (str(e).splitlines() or [""])[0][:100]
        raise ValueError(f"{path}: not a PyTorch checkpoint (torch.load: {type(e).__name__}: {detail})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise ValueError(f"{path}: expected a state_dict (a dict of named tensors), got {type(state).__name__}")
    return state


def convert_command(args) -> int:
    """``convert``: a pickle state_dict and its config.json into a model folder (safetensors), every tensor's
    name and shape checked against the config's network first."""
    import torch
    cfg_path, src = Path(args.config), Path(args.checkpoint)
    if cfg_path.name != CONFIG:
        raise ValueError("--config must point to a config.json")
    cfg = load_model_config(cfg_path.parent)
    state = read_pickled_state(src)
    check_shapes(src, {k: tuple(v.shape) for k, v in state.items()}, network_shapes(cfg.unet), str(cfg_path))
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise ValueError(f"{src}: tensor {bad} contains NaN or inf")
    save_model(Path(args.out), cfg, {k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    print(f"wrote {args.out}")
    return 0

"""The browser build (``export-web``): a model folder's network as ONNX, beside a small JSON with what a page needs
to sample from it (the schedule's alpha_bar, the prediction type, labels, defaults, the model card's headline).

The page (``web/``) runs the network with onnxruntime-web and the samplers in JavaScript, a second implementation
of the maths; ``web_fixture`` records a run of this package (x_T, each step's t, noise and x_next) so that a test
can hold the JavaScript to it step by step (``web/test/parity.mjs``).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from .checkpoint import CheckpointError, folder_kind, load_network
from .conditioning import BACK_PROJECTION_ROUNDS, EXACT_ROUNDS
from .runtime.openvino_net import FlatNet, cond_fields

WEB_FORMAT = 1
# the samplers the page implements (web/src/diffusion.js); their labels come from the package's registry
WEB_SAMPLERS = ("ddim", "dpm++", "ddpm", "progressive")
OPSET = 17


def page_size(cfg) -> int:
    """The size the page runs a network at: its images' size; a super-resolution model's output for its low_res
    input (the page upscales the base models' 32 px images)."""
    return cfg.high_res or cfg.unet.image_size * cfg.sr_factor if cfg.task == "super_resolution" else cfg.unet.image_size


def _example_inputs(cfg, batch: int = 2) -> list[torch.Tensor]:
    """One input per exported name (x, t, then ``cond_fields``), shaped as the page sends them."""
    u, size = cfg.unet, page_size(cfg)
    values = {"labels": torch.zeros(batch, u.num_labels), "known": torch.ones(batch, u.num_labels),
              "uncond": torch.zeros(batch, dtype=torch.bool), "image": torch.zeros(batch, u.cond_channels, size, size),
              "aug_level": torch.zeros(batch), "guidance": torch.ones(batch)}
    return [torch.zeros(batch, u.in_channels, size, size), torch.full((batch,), 500.0)] + \
        [values[f] for f in cond_fields(u)]


def fp16_initializers(model) -> int:
    """Store every float32 weight that fp16 holds exactly as fp16, cast back to float32 in the graph: the shipped
    weights are saved in fp16 (``save_model``), so this halves the file and changes no value. Returns how many."""
    import onnx
    from onnx import helper, numpy_helper
    graph, casts, kept, n = model.graph, [], [], 0
    for init in graph.initializer:
        a = numpy_helper.to_array(init)
        if a.dtype == np.float32 and a.size >= 16 and np.array_equal(a.astype(np.float16).astype(np.float32), a):
            kept.append(numpy_helper.from_array(a.astype(np.float16), init.name + "_fp16"))
            casts.append(helper.make_node("Cast", [init.name + "_fp16"], [init.name], to=onnx.TensorProto.FLOAT))
            n += 1
        else:
            kept.append(init)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return n


WEIGHTS = ("fp16", "int8")
INT8_MIN_SIZE = 1024          # smaller tensors (norms, biases, the label projection) stay fp16


def int8_weights(net: torch.nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Weight-only int8 (symmetric, per output channel): for every weight of 2 or more dimensions and at least
    INT8_MIN_SIZE values, scale_c = max |w_c| / 127 and q = round(w / scale_c) in [-127, 127]; the network then
    computes in fp32 with w = q scale_c. {parameter name: (q, scale)}."""
    table = {}
    for name, w in net.named_parameters():
        if w.dim() >= 2 and w.numel() >= INT8_MIN_SIZE and w.is_floating_point():
            flat = w.detach().float().reshape(w.shape[0], -1)
            scale = flat.abs().amax(dim=1) / 127
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
            q = (flat / scale[:, None]).round().clamp(-127, 127).to(torch.int8).reshape(w.shape)
            table[name] = (q, scale)
    return table


def use_int8_weights(net: torch.nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Replace ``net``'s weights by their int8 values (``int8_weights``) as the browser build computes them,
    q * scale in fp32: what ``evaluate --weights int8`` measures. Returns the table."""
    table = int8_weights(net)
    params = dict(net.named_parameters())       # the tensors themselves (state_dict() copies channels_last ones)
    with torch.no_grad():
        for name, (q, scale) in table.items():
            params[name].copy_(q.float() * scale.view(-1, *([1] * (q.dim() - 1))))
    return table


def int8_initializers(model, table: dict, prefix: str = "net.") -> int:
    """Store the weights of ``table`` (their values already q * scale in the graph) as int8 with a
    DequantizeLinear per output channel; checks that the stored form gives every value back. Returns how many."""
    import onnx
    from onnx import helper, numpy_helper
    graph, kept, nodes, n = model.graph, [], [], 0
    for init in graph.initializer:
        entry = table.get(init.name[len(prefix):]) if init.name.startswith(prefix) else None
        if entry is None:
            kept.append(init)
            continue
        q, scale = entry[0].numpy(), entry[1].numpy().astype(np.float32)
        back = q.astype(np.float32) * scale.reshape(-1, *([1] * (q.ndim - 1)))
        if not np.array_equal(back, numpy_helper.to_array(init)):
            raise ValueError(f"{init.name}: the graph's weight is not its int8 form")
        kept += [numpy_helper.from_array(q, init.name + "_q"), numpy_helper.from_array(scale, init.name + "_scale"),
                 numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), init.name + "_zero")]
        nodes.append(helper.make_node("DequantizeLinear", [init.name + "_q", init.name + "_scale", init.name + "_zero"],
                                      [init.name], axis=0))
        n += 1
    del graph.initializer[:]
    graph.initializer.extend(kept)
    rest = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + rest)
    return n


def export_onnx(folder: Path, path: Path, weights: str = "fp16") -> tuple[object, list[str]]:
    """The network of model folder ``folder`` as an ONNX file at ``path`` (batch dimension free; inputs x, t and
    the condition fields it reads). ``weights``: fp16 (the shipped weights exactly) or int8 (``int8_weights``,
    measured with ``evaluate --weights int8``). Returns (its ModelConfig, the input names)."""
    try:
        import onnx
    except ImportError:
        raise CheckpointError("export-web needs the onnx package (pip install onnx; it is in requirements-dev.txt)") from None
    cfg, net = load_network(folder, "cpu")
    net.set_channels_last(False)               # NCHW: the exporter keeps channels_last weights as copies
    net.eval().requires_grad_(False)
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    table = use_int8_weights(net) if weights == "int8" else {}
    names = ["x", "t", *cond_fields(cfg.unet)]
    axes = {n: {0: "batch"} for n in [*names, "out"]}
    if cfg.task == "super_resolution":          # fully convolutional: any canvas the U-Net can halve
        for n in ("x", "image", "out"):
            axes[n] = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")        # tracer warnings: the graph is traced at one size
        torch.onnx.export(FlatNet(net, cond_fields(cfg.unet)).eval(), tuple(_example_inputs(cfg)), str(path),
                          input_names=names, output_names=["out"], opset_version=OPSET, dynamo=False,
                          dynamic_axes=axes)
    model = onnx.load(str(path))
    if table:
        int8_initializers(model, table)
    fp16_initializers(model)
    onnx.save(model, str(path))
    return cfg, names


def _headline(folder: Path) -> str:
    """The model card's headline metric, from metrics.json (what the README's table quotes)."""
    try:
        m = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return ""
    parts = []
    if isinstance(m.get("fid"), (int, float)):
        steps = m.get("steps", "?")
        parts.append(f"FID {m['fid']:.2f} ({m.get('n', '?')} samples, {m.get('sampler', '?')} {steps} "
                     f"step{'' if steps == 1 else 's'}, guidance {m.get('guidance', '?')})")
    for key, label in (("accuracy", "class accuracy"), ("adherence", "pose adherence"), ("visible_f1", "F1")):
        if isinstance(m.get(key), (int, float)):
            parts.append(f"{label} {m[key]:.3f}")
    return "; ".join(parts)


def web_defaults(cfg) -> dict:
    """The page's defaults: the model's own sampler where the page has it, else DPM-Solver++(2M) on the same
    number of steps (the page's grid is trailing)."""
    s = cfg.sampling
    sampler = s.sampler if s.sampler in WEB_SAMPLERS else "dpm++"
    return {"sampler": sampler, "steps": int(s.steps), "guidance": float(s.guidance)}


def manifest(folder: Path, cfg, inputs: list[str], onnx_name: str, weights: str = "fp16") -> dict:
    """What the page needs besides the network."""
    from .sampler_registry import sampler_info
    from .schedules import make_schedule
    d = cfg.diffusion
    schedule = make_schedule(d.schedule, d.T, d.beta_1, d.beta_T)      # as Stage.schedule: no second network load
    samplers = [s for s in WEB_SAMPLERS if sampler_info(s).student == bool(cfg.unet.guidance_embedding)]
    return {
        "format": WEB_FORMAT, "name": folder.name, "description": cfg.description, "headline": _headline(folder),
        "onnx": onnx_name, "inputs": inputs, "image_size": page_size(cfg), "channels": cfg.unet.in_channels,
        "task": cfg.task, "sr_factor": cfg.sr_factor if cfg.task == "super_resolution" else 1,
        "back_projection": {"rounds": BACK_PROJECTION_ROUNDS, "exact_rounds": EXACT_ROUNDS},
        "T": d.T, "alpha_bar": [float(v) for v in schedule.alpha_bar], "prediction": d.prediction,
        "x0_range": d.x0_range, "label_names": list(cfg.label_names), "multi_label": bool(cfg.multi_label),
        "label_mask": bool(cfg.unet.label_mask), "held_labels": list(cfg.sampling.held_labels),
        "cond_channels": cfg.unet.cond_channels, "guidance_input": bool(cfg.unet.guidance_embedding),
        "samplers": samplers, "sampler_labels": {name: sampler_info(name).label for name in samplers},
        "defaults": web_defaults(cfg), "weights": weights,
    }


def export_web(folder: Path, out: Path, weights: str = "fp16") -> Path:
    """``out/NAME/{net.onnx, model.json}`` for model folder ``folder``. Raises CheckpointError for what the page
    cannot run (ensembles, cascades, cold and super-resolution models)."""
    folder, out = Path(folder), Path(out)
    if folder_kind(folder) != "model":
        raise CheckpointError(f"{folder}: export-web takes a single model folder (not an ensemble or a cascade)")
    from .checkpoint import load_model_config
    cfg = load_model_config(folder)
    if cfg.diffusion.is_cold:
        raise CheckpointError(f"{folder}: the page samples Gaussian models (by class, attributes, drawing or a "
                              f"low-resolution image); this one is cold")
    dest = out / folder.name
    dest.mkdir(parents=True, exist_ok=True)
    cfg, inputs = export_onnx(folder, dest / "net.onnx", weights)
    (dest / "model.json").write_text(json.dumps(manifest(folder, cfg, inputs, "net.onnx", weights)))
    return dest


def web_fixture(folder: Path, sampler: str, steps: int, guidance: float, seed: int = 0, n: int = 2,
                labels=(), cond_image: torch.Tensor | None = None, weights: str = "fp16",
                low_res: torch.Tensor | None = None) -> dict:
    """A run of this package as the page must reproduce it: x_T, and for each step t, t_next, the network's raw
    output rows (``out``: the conditional rows, then the second pass's under guidance), the noise it drew
    (stochastic samplers) and x_next; fp32, trailing grid, the model's own clipping and held guidance."""
    from .pipeline import load
    pipe = load(Path(folder), backend="fp32", measure=False)
    pipe.workers = 1                      # chunks in order, so the hook below sees a step's rows in order
    cfg = pipe.config
    net = pipe.stages[0].experts[0][2]
    if weights == "int8":                 # the network as an int8 export computes it
        use_int8_weights(net)
    cond = None if low_res is not None else pipe.stages[0].condition(n, list(labels), cond_image)
    rows = 2 * n if (not cfg.unet.guidance_embedding and guidance != 1.0 and cond is not None
                     and cond.has_guidable()) else n
    calls: list[torch.Tensor] = []
    hook = net.register_forward_hook(lambda module, args, out: calls.append(out.detach().clone()))
    run = []
    try:
        for s in pipe.stream(n, sampler=sampler, steps=steps, guidance=guidance, seed=seed, labels=list(labels),
                             spacing="trailing", cond_image=cond_image, low_res=low_res):
            run.append((s, torch.cat(calls)[:rows]))     # fixed 8-row chunks: the padding rows come last
            calls.clear()
    finally:
        hook.remove()
    flat = lambda v: [float(x) for x in v.flatten()]        # noqa: E731
    return {"model": Path(folder).name, "sampler": sampler, "steps": steps, "guidance": guidance, "n": n,
            "labels": list(labels), "shape": list(run[0][0].x_t.shape),
            "cond_image": None if cond_image is None else flat(cond_image), "x_T": flat(run[0][0].x_t),
            "low_res": None if low_res is None else flat(low_res),
            "steps_run": [{"t": int(s.t), "t_next": int(s.t_next), "out": flat(out),
                           "noise": None if s.noise is None else flat(s.noise),
                           "x_next": flat(s.x_next), "x0_hat": flat(s.x0_hat)} for s, out in run]}

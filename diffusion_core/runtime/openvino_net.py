"""The ``openvino`` backend (backends.py): the U-Net exported to OpenVINO IR with tensor-only inputs, cached
beside the model, compiled for this CPU and evaluated in fixed-size requests over one stream per worker."""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from ..conditioning import Condition
from . import parallel
from .machine import BackendError, cpu_info, weights_key


class FlatNet(nn.Module):
    """The U-Net with tensor-only inputs, for export (OpenVINO here, ONNX for the browser build): every condition
    field the network reads is an input, in ``cond_fields`` order."""

    def __init__(self, net: nn.Module, fields: tuple[str, ...]):
        super().__init__()
        self.net, self.fields = net, fields

    def forward(self, x, t, *conds):
        return self.net(x, t, Condition(**dict(zip(self.fields, conds))))


def cond_fields(cfg) -> tuple[str, ...]:
    """The Condition fields a network of UNetConfig ``cfg`` reads, in export order."""
    f = []
    if cfg.num_labels:
        f.append("labels")
    if cfg.label_mask:
        f.append("known")
    if cfg.num_labels or cfg.cond_channels:
        f.append("uncond")
    if cfg.cond_channels:
        f.append("image")
    if cfg.aug_level_embedding:
        f.append("aug_level")
    if cfg.guidance_embedding:
        f.append("guidance")
    return tuple(f)


def flat_inputs(cfg, x_t: torch.Tensor, t: torch.Tensor, cond: Condition | None) -> list[torch.Tensor] | None:
    """The exported network's inputs equivalent to ``net(x_t, t, cond)``; None where a combination cannot be
    expressed with always-present fields (then the caller runs the eager network)."""
    b = x_t.shape[0]
    c = cond or Condition()
    uncond = c.uncond
    if cfg.cond_channels and (c.uncond is not None and c.uncond.any()) and \
            ((c.aug_level is None) == bool(cfg.aug_level_embedding)):
        return None      # the null-condition image masking depends on whether aug_level was passed
    out = [x_t.float(), t.float()]
    for name in cond_fields(cfg):
        if name == "labels":
            if c.labels is None:
                uncond = torch.ones(b, dtype=torch.bool)       # no labels: the null embedding
            out.append(torch.zeros(b, cfg.num_labels) if c.labels is None else c.labels.float())
        elif name == "known":
            out.append(torch.ones(b, cfg.num_labels) if c.known is None else c.known.float())
        elif name == "uncond":
            out.append(torch.zeros(b, dtype=torch.bool) if uncond is None else uncond)
        elif name == "image":
            out.append(torch.zeros(b, cfg.cond_channels, *x_t.shape[-2:]) if c.image is None else c.image.float())
        elif name == "aug_level":
            out.append(torch.zeros(b) if c.aug_level is None else c.aug_level.float())
        elif name == "guidance":
            out.append(torch.ones(b) if c.guidance is None else c.guidance.float())
    return out


class OpenVinoNet:
    """The network exported to OpenVINO IR and compiled for this CPU; evaluated in requests of exactly ``chunk``
    rows (the last padded by repeating its final row), one stream per worker, so a row's result does not depend
    on the batch it came in (as ``ModelDenoiser``'s fixed chunks do for eager PyTorch)."""

    name = "openvino"
    own_batching = True          # ModelDenoiser hands it the whole batch

    def __init__(self, net: nn.Module, cache_dir: Path, chunk: int = 8, precision: str | None = None):
        try:
            import openvino as ov
        except ImportError:
            raise BackendError("the openvino backend needs the openvino package (pip install openvino)") from None
        if next(net.parameters()).device.type != "cpu":
            raise BackendError("the openvino backend runs on the CPU only")
        self.ov, self.net, self.cfg = ov, net.eval(), net.cfg
        self.cache_dir, self.chunk = Path(cache_dir), max(1, int(chunk) or 8)
        self.precision = precision or ("bf16" if cpu_info().bf16_units else "f32")
        self.streams = parallel.workers()
        self.key = weights_key(net)
        self._compiled: dict[tuple, object] = {}

    def _model_for(self, inputs: list[torch.Tensor]):
        shapes = tuple(tuple(v.shape[1:]) for v in inputs)
        if shapes not in self._compiled:
            ov = self.ov
            tag = hashlib.sha256(repr((self.key, shapes, self.chunk, ov.get_version())).encode()).hexdigest()[:16]
            xml = self.cache_dir / f"openvino-{tag}.xml"
            if xml.is_file():
                model = ov.Core().read_model(str(xml))
            else:
                example = tuple(v[:1].expand(self.chunk, *v.shape[1:]).contiguous() for v in inputs)
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")    # tracer warnings: shapes are fixed per compiled model
                    model = ov.convert_model(FlatNet(self.net, cond_fields(self.cfg)).eval(), example_input=example)
                try:
                    self.cache_dir.mkdir(parents=True, exist_ok=True)
                    ov.save_model(model, str(xml), compress_to_fp16=False)
                except OSError:
                    pass                       # a read-only folder: compile from memory each time
            compiled = ov.Core().compile_model(model, "CPU", {
                "INFERENCE_PRECISION_HINT": self.precision, "PERFORMANCE_HINT": "THROUGHPUT",
                "NUM_STREAMS": self.streams, "INFERENCE_NUM_THREADS": self.streams})
            results: dict[int, torch.Tensor] = {}
            queue = ov.AsyncInferQueue(compiled, self.streams)
            queue.set_callback(lambda req, i: results.__setitem__(i, torch.from_numpy(
                req.get_output_tensor(0).data.copy())))
            self._compiled[shapes] = (queue, results)
        return self._compiled[shapes]

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition | None) -> torch.Tensor:
        inputs = flat_inputs(self.cfg, x_t, t, cond)
        if inputs is None:
            return self.net(x_t, t, cond)
        queue, results = self._model_for(inputs)
        b, k = x_t.shape[0], self.chunk
        results.clear()
        for i, s in enumerate(range(0, b, k)):
            idx = torch.arange(s, s + k).clamp(max=b - 1)
            queue.start_async([v[idx].numpy() for v in inputs], i)
        queue.wait_all()
        return torch.cat([results[i] for i in range(len(results))])[:b]

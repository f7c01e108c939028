"""Loaded models you can sample from: a single model, an expert ensemble, or a cascade.

``load(folder)`` returns a ``Pipeline``; ``Pipeline.stream(...)`` is the one streaming generator the
CLI and the app use (it yields ``SampleStep`` records), and ``Pipeline.sample(...)`` runs it to the end.

Modules: ``request`` (``Request``: every option of one run, checked), ``stage`` (``Stage``: one network or routed
experts, and its run of a request), ``model`` (the Pipeline: its stages and the stream over them), ``loading``
(``load`` and the ensemble / cascade loaders).
"""
from ..options import MAX_BATCH, MAX_SEED, MAX_STEPS
from .loading import load, load_cascade, load_ensemble
from .model import Pipeline
from .request import Request
from .stage import EVAL_CHUNK, Stage, eval_chunk

__all__ = ["MAX_BATCH", "MAX_SEED", "MAX_STEPS", "load", "load_cascade", "load_ensemble", "EVAL_CHUNK", "Pipeline",
           "Request", "Stage", "eval_chunk"]

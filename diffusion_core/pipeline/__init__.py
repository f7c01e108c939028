"""Loaded models you can sample from: a single model, an expert ensemble, or a cascade.

``load(folder)`` returns a ``Pipeline``; ``Pipeline.stream(...)`` is the one streaming generator the
CLI and the app use (it yields ``SampleStep`` records), and ``Pipeline.sample(...)`` runs it to the end.

Modules: ``model`` (the Pipeline and its stream), ``loading`` (``load`` and the ensemble / cascade loaders).
"""
from ..options import MAX_BATCH, MAX_SEED, MAX_STEPS
from .loading import load, load_cascade, load_ensemble
from .model import EVAL_CHUNK, Pipeline, eval_chunk

__all__ = ["MAX_BATCH", "MAX_SEED", "MAX_STEPS", "load", "load_cascade", "load_ensemble", "EVAL_CHUNK", "Pipeline",
           "eval_chunk"]

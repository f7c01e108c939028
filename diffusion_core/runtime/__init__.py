"""How the network runs on this machine, apart from the maths: ``chunked`` (fixed-size chunks so that a seed
gives the same image at any batch size, row workers), ``parallel`` (one core per piece of a batch, for sampling
and training), ``shared`` (concurrent runs gathered into one network call per tick), ``backends`` (fp32, bf16 autocast or OpenVINO, chosen by measuring)."""
from .chunked import ChunkedNet
from .shared import Cancelled, RowMemory, SharedNet

__all__ = ["Cancelled", "ChunkedNet", "RowMemory", "SharedNet"]

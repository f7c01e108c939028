"""Benchmarks of the project, kept out of the library: ``python -m diffusion_core bench`` (or ``python
benchmarks/bench.py``) from a checkout of the repository."""

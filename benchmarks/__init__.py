"""minigrad's benchmark suite: ``python -m benchmarks`` (or ``python benchmarks/run.py``)."""

"""minigrad's random number generator (initialisation, dropout, shuffling).

One NumPy ``Generator`` seeded by :func:`manual_seed`, so a run is repeatable
from one number.  Its state can be saved and restored (checkpoints).
"""
from __future__ import annotations

import numpy as np

_rng = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Seed minigrad's generator (like ``torch.manual_seed``)."""
    global _rng
    _rng = np.random.default_rng(seed)
    return _rng


def get_rng() -> np.random.Generator:
    """The generator every random op of minigrad draws from."""
    return _rng


def get_rng_state() -> dict:
    return _rng.bit_generator.state


def set_rng_state(state: dict):
    _rng.bit_generator.state = state

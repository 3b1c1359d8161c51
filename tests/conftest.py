"""Shared test fixtures.

The real CIFAR-10 subset is found through ``$MINIGRAD_CIFAR10_DIR`` or, by
default, ``../shared/data/cifar-10-batches-py`` beside the repository (where CI
puts it).  Tests that need it skip only when it is absent.
"""
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CIFAR10_DIR = Path(os.environ.get("MINIGRAD_CIFAR10_DIR",
                                  REPO.parent / "shared" / "data" / "cifar-10-batches-py"))


@pytest.fixture(scope="session")
def cifar10_dir():
    if not (CIFAR10_DIR / "data_batch_1").exists():
        pytest.skip(f"real CIFAR-10 subset not found at {CIFAR10_DIR} "
                    "(set MINIGRAD_CIFAR10_DIR)")
    return CIFAR10_DIR


@pytest.fixture
def rng():
    return np.random.default_rng(0)

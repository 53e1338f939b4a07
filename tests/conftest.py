"""Shared pytest fixtures for the adptycho test-suite."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import adptycho.runtime  # noqa: E402

adptycho.runtime.configure()  # the suite runs with the settings the command line uses


@pytest.fixture(autouse=True)
def _seed_everything():
    """Seed numpy's global generator, Python's ``random`` and TensorFlow (through Keras)."""
    np.random.seed(0)
    keras.utils.set_random_seed(0)
    yield


@pytest.fixture
def shared_data():
    """The shared data directory (``../shared/data``); skip the test where it is absent."""
    from adptycho.io import data_dir

    root = data_dir()
    if root is None:
        pytest.skip("../shared/data not available")
    return root

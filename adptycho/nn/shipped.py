"""Where the shipped model weights are (``irmae-mnist``, ``irmae-mnist-3``, ``stylegan2-faces``).

The source of truth is the top-level ``models/`` folder of the source tree. The wheel copies each
model's weights, ``config.json``, ``mean_latent.npy`` (IRMAE) and ``card.md`` (the sha256 of every
file, checked on loading) into the installed package as ``adptycho/models/NAME/`` (``setup.py``,
``build_py``); figures, histories and training checkpoints stay in the source tree.

``shipped_model_path`` looks in the installed package first (through ``importlib.resources``),
then in the source tree next to the package (a checkout or an editable install).
"""

from __future__ import annotations

import importlib.resources
import os
from typing import Optional

__all__ = ["shipped_model_path", "SHIPPED_FILES"]

# The files of a model directory that the wheel carries (the others stay in the source tree).
SHIPPED_FILES = ("card.md", "config.json", "encoder.weights.h5", "decoder.weights.h5",
                 "mean_latent.npy", "generator.weights.h5", "discriminator.weights.h5")


def _package_root() -> Optional[str]:
    root = importlib.resources.files("adptycho").joinpath("models")
    # installed from a wheel, the package is a folder on disk; Keras needs file paths
    return os.fspath(root) if isinstance(root, os.PathLike) else None


def _source_root() -> str:
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(os.path.dirname(package), "models")


def shipped_model_path(name: str) -> str:
    """Directory of the shipped model ``name``: the installed package's ``adptycho/models/name``
    where it holds a ``config.json``, else the source tree's ``models/name`` (returned even when
    absent, so that callers name the path they looked at in their error)."""
    for root in (_package_root(), _source_root()):
        if root is not None and os.path.isfile(os.path.join(root, name, "config.json")):
            return os.path.join(root, name)
    return os.path.join(_source_root(), name)

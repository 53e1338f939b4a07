"""StyleGAN2 model directories: ``save_stylegan2`` / ``load_stylegan2`` (generator and
discriminator weights, ``config.json``), the shipped model names and ``is_stylegan2_model``.
The networks are ``adptycho.nn.stylegan2`` (which re-exports these names)."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Optional

from adptycho.errors import DataError

if TYPE_CHECKING:  # the networks import Keras; the names are for the annotations
    from adptycho.nn.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

__all__ = ["SHIPPED_STYLEGAN2", "STYLEGAN2_FILES", "stylegan2_directory", "is_stylegan2_model",
           "save_stylegan2", "load_stylegan2"]

SHIPPED_STYLEGAN2 = ("stylegan2-faces",)
STYLEGAN2_FILES = ("generator.weights.h5", "discriminator.weights.h5")


def stylegan2_directory(name_or_path) -> str:
    """Directory of a shipped StyleGAN2 (``stylegan2-faces``) or of a given path."""
    name_or_path = os.fspath(name_or_path)
    if name_or_path in SHIPPED_STYLEGAN2:
        from adptycho.nn.shipped import shipped_model_path

        path = shipped_model_path(name_or_path)
        if not os.path.exists(os.path.join(path, "config.json")):
            raise DataError(f"shipped StyleGAN2 {name_or_path} not found (no config.json in "
                            f"{path}); train it with `adptycho train-stylegan2`")
        return path
    if not os.path.isdir(name_or_path):
        raise DataError(f"{name_or_path} is neither a shipped StyleGAN2 "
                        f"({', '.join(SHIPPED_STYLEGAN2)}) nor a directory")
    return name_or_path


def is_stylegan2_model(name_or_path) -> bool:
    """True for a shipped StyleGAN2 name or a directory whose ``config.json`` is a StyleGAN2's."""
    name_or_path = str(name_or_path)
    if name_or_path in SHIPPED_STYLEGAN2:
        return True
    path = os.path.join(name_or_path, "config.json")
    if not os.path.isfile(path):
        return False
    try:
        with open(path) as f:
            return str(json.load(f).get("architecture", "")).startswith("stylegan2")
    except (OSError, ValueError):
        return False


def _network_config(config: dict) -> tuple:
    g = {k: config[k] for k in ("resolution", "z_dim", "w_dim", "mapping_layers",
                                "channel_base", "channel_max")}
    d = {k: config[k] for k in ("resolution", "channel_base", "channel_max")}
    return g, d


def save_stylegan2(directory, generator: StyleGAN2Generator,
                   discriminator: Optional[StyleGAN2Discriminator] = None,
                   extra_config: Optional[dict] = None) -> None:
    """Write ``generator.weights.h5`` (give the EMA generator), optionally
    ``discriminator.weights.h5``, and ``config.json`` to ``directory``."""
    from adptycho.io.atomic import atomic_path

    os.makedirs(directory, exist_ok=True)
    config = {**generator.get_config(), "architecture": "stylegan2-skip-G/resnet-D",
              "channels": 1, "image_range": [-1.0, 1.0], **(extra_config or {})}
    nets = [("generator", generator)] + ([("discriminator", discriminator)]
                                         if discriminator is not None else [])
    for name, net in nets:
        with atomic_path(os.path.join(directory, f"{name}.weights.h5"),
                         suffix=".weights.h5") as tmp:
            net.save_weights(tmp)
        os.chmod(os.path.join(directory, f"{name}.weights.h5"), 0o644)
    with atomic_path(os.path.join(directory, "config.json"), suffix=".json") as tmp:
        with open(tmp, "w") as f:
            json.dump(config, f, indent=1, sort_keys=True)
    os.chmod(os.path.join(directory, "config.json"), 0o644)


def load_stylegan2(name_or_path, discriminator: bool = True) -> tuple:
    """Load ``(generator, discriminator or None, config)`` from a saved StyleGAN2 directory."""
    from adptycho.nn.irmae import verify_card
    from adptycho.nn.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

    directory = stylegan2_directory(name_or_path)
    path = os.path.join(directory, "config.json")
    if not os.path.exists(path):
        raise DataError(f"{directory} has no config.json: not a StyleGAN2 model directory")
    verify_card(directory)
    try:
        with open(path) as f:
            config = json.load(f)
        g_cfg, d_cfg = _network_config(config)
    except ValueError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None
    except KeyError as exc:
        raise DataError(f"{path} has no {exc}: not a StyleGAN2 model directory") from None
    gen = StyleGAN2Generator(**g_cfg)
    weights = os.path.join(directory, "generator.weights.h5")
    if not os.path.exists(weights):
        raise DataError(f"{directory} has no generator.weights.h5")
    gen.load_weights(weights)
    disc = None
    if discriminator:
        weights = os.path.join(directory, "discriminator.weights.h5")
        if not os.path.exists(weights):
            raise DataError(f"{directory} has no discriminator.weights.h5 (needed for the "
                            "discriminator prior)")
        disc = StyleGAN2Discriminator(**d_cfg)
        disc.load_weights(weights)
    return gen, disc, config

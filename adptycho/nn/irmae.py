"""Implicit rank-minimising autoencoder (IRMAE) for 32 x 32 MNIST digits, in Keras.

Architecture (Jing, Zbontar & LeCun 2020, facebookresearch/irmae ``model.py``; Seifert, Shao &
Mosk, Opt. Express 32, 1020 (2024), Fig. 2; layer table in the methods notes, section 1):

* encoder: four Conv2D(k=4, stride 2, 'same') + ReLU (32, 64, 128, 256 filters: 32 -> 2 px),
  flatten, Dense(1024 -> n) with bias, then ``linear_layers`` bias-free Dense(n -> n) with no
  activation between them (the deep linear product W_l ... W_1 implicitly minimises the rank of
  the latent code; 0 layers gives a plain autoencoder);
* decoder: Dense(n -> 8*8*128) with bias, reshape, ReLU, Conv2DTranspose(64, 4, 2) ReLU,
  Conv2DTranspose(32, 4, 2) ReLU, Conv2DTranspose(1, 1, 1), sigmoid: a (32, 32) amplitude
  transmission in [0, 1] (Seifert uses sigmoid + binary cross-entropy; the original IRMAE tanh + MSE).

The latent ``h`` used downstream (the paper's ``h = f(x)``, Eq. 2) is the output of the linear
stack, i.e. the decoder input.

Saved models are directories holding ``config.json``, ``encoder.weights.h5`` (convolutions,
first Dense and linear stack), ``decoder.weights.h5``, ``mean_latent.npy`` (the mean training
latent h-bar of Eq. 2, used to initialise reconstructions) and ``card.md`` (data, command, epochs,
losses and the sha256 of every file, in ``sha256sum`` format).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Optional

import keras
import numpy as np

from adptycho.errors import AdptychoError, DataError

__all__ = ["IRMAE", "build_encoder", "build_decoder", "save_irmae", "load_irmae",
           "load_decoder", "read_config", "file_sha256", "card_hashes", "verify_card", "write_card",
           "model_directory", "SHIPPED_MODELS", "WEIGHT_FILES"]

IMAGE_SIZE = 32
SHIPPED_MODELS = ("irmae-mnist", "irmae-mnist-3")
WEIGHT_FILES = ("encoder.weights.h5", "decoder.weights.h5", "mean_latent.npy")


ACTIVATIONS = ("relu", "gelu")


def _check_activation(activation: str) -> str:
    if activation not in ACTIVATIONS:
        raise AdptychoError(f"unknown activation {activation!r}; choose one of "
                            f"{', '.join(ACTIVATIONS)}")
    return activation


def build_encoder(latent_dim: int = 128, linear_layers: int = 8, name: str = "encoder",
                  activation: str = "relu"):
    """Encoder ``f``: (B, 32, 32, 1) float32 in [0, 1] -> (B, latent_dim) latent h."""
    layers = [keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1))]
    for filters in (32, 64, 128, 256):
        layers.append(keras.layers.Conv2D(filters, 4, strides=2, padding="same",
                                          activation=_check_activation(activation)))
    layers += [keras.layers.Flatten(), keras.layers.Dense(latent_dim, name="to_latent")]
    for i in range(linear_layers):
        layers.append(keras.layers.Dense(latent_dim, use_bias=False, name=f"linear_{i + 1}"))
    return keras.Sequential(layers, name=name)


def build_decoder(latent_dim: int = 128, name: str = "decoder", activation: str = "relu"):
    """Decoder ``g``: (B, latent_dim) -> (B, 32, 32, 1) float32 in [0, 1] (sigmoid).

    ``activation``: ``relu`` (the paper's; the decoder is piecewise linear before the sigmoid,
    so the latent likelihood has kinks) or ``gelu`` (smooth: the Laplace approximation of the
    latent posterior is then a local expansion of a smooth function, see
    ``adptycho.uncertainty.latent``)."""
    act = _check_activation(activation)
    return keras.Sequential([
        keras.Input((latent_dim,)),
        keras.layers.Dense(8 * 8 * 128),
        keras.layers.Reshape((8, 8, 128)),
        keras.layers.Activation(act),
        keras.layers.Conv2DTranspose(64, 4, strides=2, padding="same"),
        keras.layers.Activation(act),
        keras.layers.Conv2DTranspose(32, 4, strides=2, padding="same"),
        keras.layers.Activation(act),
        keras.layers.Conv2DTranspose(1, 1, strides=1, padding="same"),
        keras.layers.Activation("sigmoid"),
    ], name=name)


class IRMAE(keras.Model):
    """Autoencoder ``x -> g(f(x))`` with ``linear_layers`` bias-free linear layers before the latent.

    Args:
        latent_dim: size n of the latent vector (128 in the paper).
        linear_layers: number of bias-free n x n linear layers (8: IRMAE; 0: plain autoencoder).
        activation: hidden-layer activation, ``relu`` (the paper's) or ``gelu`` (smooth).
    """

    def __init__(self, latent_dim: int = 128, linear_layers: int = 8, activation: str = "relu",
                 **kwargs):
        super().__init__(**kwargs)
        if latent_dim < 1:
            raise AdptychoError(f"latent_dim must be positive, got {latent_dim}")
        if linear_layers < 0:
            raise AdptychoError(f"linear_layers must be >= 0, got {linear_layers}")
        self.latent_dim = int(latent_dim)
        self.linear_layers = int(linear_layers)
        self.activation = _check_activation(activation)
        self.encoder = build_encoder(self.latent_dim, self.linear_layers,
                                     activation=self.activation)
        self.decoder = build_decoder(self.latent_dim, activation=self.activation)
        self.build((None, IMAGE_SIZE, IMAGE_SIZE, 1))

    def build(self, input_shape=None):
        self.built = True

    def call(self, images, training=False):
        """(B, 32, 32, 1) -> (B, 32, 32, 1) reconstruction."""
        return self.decoder(self.encoder(images, training=training), training=training)

    def encode(self, images, batch_size: int = 1000) -> np.ndarray:
        """(N, 32, 32, 1) images -> (N, latent_dim) float32 latents h (decoder inputs)."""
        return np.asarray(self.encoder.predict(images, batch_size=batch_size, verbose=0), np.float32)

    def decode(self, latents, batch_size: int = 1000) -> np.ndarray:
        """(N, latent_dim) latents -> (N, 32, 32) float32 images in [0, 1]."""
        out = self.decoder.predict(np.asarray(latents, np.float32), batch_size=batch_size, verbose=0)
        return np.asarray(out[..., 0], np.float32)

    def linear_product(self) -> np.ndarray:
        """(n, n) matrix W = W_l ... W_1 of the linear stack in column-vector convention
        (identity for a plain autoencoder); its rank matches the latent's effective rank."""
        product = np.eye(self.latent_dim)
        for i in range(self.linear_layers):
            kernel = self.encoder.get_layer(f"linear_{i + 1}").kernel.numpy()  # h_out = h_in @ K
            product = kernel.T.astype(np.float64) @ product
        return product

    def get_config(self):
        return {"latent_dim": self.latent_dim, "linear_layers": self.linear_layers,
                **super().get_config()}


def file_sha256(path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_directory(name_or_path) -> str:
    """Directory of a shipped model (``irmae-mnist``, ``irmae-mnist-3``) or of a given path.

    Shipped models are found by ``adptycho.nn.shipped.shipped_model_path`` (inside the
    installed package, else the source tree's ``models/``); a path is used as given.
    """
    name_or_path = os.fspath(name_or_path)
    if name_or_path in SHIPPED_MODELS:
        from adptycho.nn.shipped import shipped_model_path

        path = shipped_model_path(name_or_path)
        if not os.path.isdir(path):
            raise DataError(f"shipped model {name_or_path} not found at {path}")
        return path
    if not os.path.isdir(name_or_path):
        raise DataError(f"{name_or_path} is neither a shipped model ({', '.join(SHIPPED_MODELS)}) "
                        "nor a directory with IRMAE weights")
    return name_or_path


def read_config(directory) -> dict:
    """The ``config.json`` of a saved model directory (``latent_dim``, ``linear_layers``, ...).

    Raises:
        DataError: missing, unreadable or without the keys an IRMAE needs.
    """
    path = os.path.join(directory, "config.json")
    if not os.path.exists(path):
        raise DataError(f"{directory} has no config.json: not an IRMAE model directory")
    try:
        with open(path) as f:
            config = json.load(f)
    except ValueError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None
    missing = [k for k in ("latent_dim", "linear_layers") if k not in config]
    if missing:
        raise DataError(f"{path} has no {', '.join(missing)}: not an IRMAE model directory")
    return config


def save_irmae(model: IRMAE, directory, mean_latent, extra_config: Optional[dict] = None) -> None:
    """Write the weights, ``config.json`` and ``mean_latent.npy`` of ``model`` to ``directory``."""
    from adptycho.io.atomic import atomic_path

    os.makedirs(directory, exist_ok=True)
    config = {"latent_dim": model.latent_dim, "linear_layers": model.linear_layers,
              "activation": model.activation, "image_size": IMAGE_SIZE, "output": "sigmoid",
              **(extra_config or {})}
    for name, net in (("encoder", model.encoder), ("decoder", model.decoder)):
        final = os.path.join(directory, f"{name}.weights.h5")
        with atomic_path(final, suffix=".weights.h5") as tmp:
            net.save_weights(tmp)
    with atomic_path(os.path.join(directory, "mean_latent.npy"), suffix=".npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(mean_latent, np.float32))
    with atomic_path(os.path.join(directory, "config.json"), suffix=".json") as tmp:
        with open(tmp, "w") as f:
            json.dump(config, f, indent=1, sort_keys=True)
    for name in WEIGHT_FILES + ("config.json",):  # temporary files are created private
        os.chmod(os.path.join(directory, name), 0o644)


def load_irmae(name_or_path) -> tuple:
    """Load a saved model: ``(IRMAE, mean_latent (n,) float32, config dict)``."""
    directory = model_directory(name_or_path)
    verify_card(directory)
    config = read_config(directory)
    model = IRMAE(config["latent_dim"], config["linear_layers"],
                  config.get("activation", "relu"))
    for name, net in (("encoder", model.encoder), ("decoder", model.decoder)):
        path = os.path.join(directory, f"{name}.weights.h5")
        if not os.path.exists(path):
            raise DataError(f"{directory} has no {name}.weights.h5")
        net.load_weights(path)
    return model, _mean_latent(directory, config), config


def load_decoder(name_or_path) -> tuple:
    """Load only the decoder: ``(decoder keras.Sequential, mean_latent, config)``."""
    directory = model_directory(name_or_path)
    verify_card(directory)
    config = read_config(directory)
    decoder = build_decoder(config["latent_dim"], activation=config.get("activation", "relu"))
    path = os.path.join(directory, "decoder.weights.h5")
    if not os.path.exists(path):
        raise DataError(f"{directory} has no decoder.weights.h5")
    decoder.load_weights(path)
    return decoder, _mean_latent(directory, config), config


def _mean_latent(directory, config):
    path = os.path.join(directory, "mean_latent.npy")
    if not os.path.exists(path):
        raise DataError(f"{directory} has no mean_latent.npy")
    mean = np.load(path).astype(np.float32)
    if mean.shape != (config["latent_dim"],):
        raise DataError(f"{path} has shape {mean.shape}, expected ({config['latent_dim']},)")
    return mean


def write_card(directory, *, title: str, data: str, command: str, epochs: int,
               metrics: dict, notes: str = "") -> str:
    """Write ``card.md`` (data, exact command, epochs, losses, sha256 of each file)."""
    lines = [f"# {title}", "", f"* data: {data}", f"* command: `{command}`",
             f"* epochs: {epochs}"]
    lines += [f"* {key}: {value:.6g}" if isinstance(value, float) else f"* {key}: {value}"
              for key, value in metrics.items()]
    if notes:
        lines += ["", notes]
    lines += ["", "## Files (sha256sum format; `sha256sum -c` in this directory checks them)", "",
              "```"]
    for name in WEIGHT_FILES + ("config.json",):
        lines.append(f"{file_sha256(os.path.join(directory, name))}  {name}")
    lines += ["```", ""]
    path = os.path.join(directory, "card.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


_VERIFIED = {}  # (path, size, mtime_ns) -> sha256 already checked against the card


def verify_card(directory) -> None:
    """Check every file listed in ``directory``'s ``card.md`` against its sha256.

    A directory without ``card.md`` is not checked (weights of one's own, no card written).

    Raises:
        DataError: a listed file is missing or its sha256 differs from the card's (weights
            changed or damaged after the card was written).
    """
    directory = os.fspath(directory)
    if not os.path.exists(os.path.join(directory, "card.md")):
        return
    for name, expected in card_hashes(directory).items():
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            raise DataError(f"{path} is listed in {directory}/card.md but missing")
        stat = os.stat(path)
        key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
        if _VERIFIED.get(key) == expected:
            continue
        actual = file_sha256(path)
        if actual != expected:
            raise DataError(f"{path} does not match its card: sha256 {actual[:12]}... but "
                            f"{directory}/card.md lists {expected[:12]}... (the file was changed "
                            "or damaged; restore it or retrain)")
        _VERIFIED[key] = expected


def card_hashes(directory) -> dict:
    """``{file name: sha256}`` as listed in a model's ``card.md``."""
    path = os.path.join(directory, "card.md")
    if not os.path.exists(path):
        raise DataError(f"{directory} has no card.md")
    with open(path) as f:
        text = f.read()
    return {name: digest for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", text, re.M)}

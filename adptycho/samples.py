"""Test objects built from pictures shipped inside scikit-image (no downloads)."""

from __future__ import annotations

import numpy as np

from adptycho.errors import AdptychoError

__all__ = ["picture", "complex_test_object", "PICTURES"]

PICTURES = ("camera", "astronaut", "coins", "moon", "brick", "grass", "gravel")


def picture(name: str, shape) -> np.ndarray:
    """A grey scikit-image picture resized to ``shape``, float64 in [0, 1]."""
    from skimage import data, transform
    from skimage.color import rgb2gray

    if name not in PICTURES:
        raise AdptychoError(f"unknown picture {name!r}; choose one of {', '.join(PICTURES)}")
    image = getattr(data, name)()
    if image.ndim == 3:
        image = rgb2gray(image)
    image = transform.resize(image.astype(np.float64), shape, anti_aliasing=True)
    image = image - image.min()
    return image / max(image.max(), 1e-12)


def complex_test_object(shape=(256, 256), amplitude: str = "camera", phase: str = "astronaut",
                        amplitude_range=(0.5, 1.0), phase_range=(0.0, np.pi / 2)) -> np.ndarray:
    """(Y, X) complex64 object: one picture as amplitude, another as phase.

    Amplitude is scaled to ``amplitude_range`` and phase (radians) to ``phase_range``.
    """
    a0, a1 = amplitude_range
    p0, p1 = phase_range
    amp = a0 + (a1 - a0) * picture(amplitude, shape)
    ph = p0 + (p1 - p0) * picture(phase, shape)
    return (amp * np.exp(1j * ph)).astype(np.complex64)

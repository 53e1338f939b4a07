"""The noise model of a ``PtychoModel``: the valid-pixel mask, the loss and the readout noise.

``pattern_losses(measured, predicted)`` is the (B,) per-pattern loss of ``adptycho.losses``
(amplitude, Poisson or Poisson-Gaussian) over the valid detector pixels.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from adptycho.errors import AdptychoError, GeometryError
from adptycho.losses import get_loss

__all__ = ["NoiseModel"]


class NoiseModel:
    """Mask, loss and readout noise of the measured patterns.

    Args:
        detector_shape: (H, W) of the patterns.
        mask: (H, W) bool, True = valid detector pixel (None: all valid).
        loss: ``"amplitude"``, ``"poisson"`` or ``"poisson-gaussian"``.
        readout_noise: camera readout standard deviation in photons (scalar or (H, W)), used by
            the Poisson-Gaussian loss (must then be positive).

    Attributes:
        mask: (H, W) float32 tensor (1 = valid) or None; ``loss_name``; ``readout_noise``
            (float32 array).
    """

    def __init__(self, detector_shape, mask=None, loss: str = "amplitude", readout_noise=1.0):
        detector_shape = tuple(detector_shape)
        if mask is not None:
            mask = np.asarray(mask, bool)
            if mask.shape != detector_shape:
                raise GeometryError(f"mask shape {mask.shape} does not match the probe/detector "
                                    f"shape {detector_shape}")
        self.mask = None if mask is None else tf.constant(mask, tf.float32)
        self.loss_name = loss
        self.loss_fn = get_loss(loss)
        noise = np.asarray(readout_noise, np.float32)
        if loss == "poisson-gaussian":
            if noise.ndim not in (0, 2) or (noise.ndim == 2 and noise.shape != detector_shape):
                raise AdptychoError(f"readout_noise must be a scalar or a {detector_shape} array")
            if not np.all(noise > 0):
                raise AdptychoError("readout_noise must be positive for the poisson-gaussian loss")
        self.readout_noise = noise

    def pattern_losses(self, measured, predicted):
        """(B,) float32 per-pattern noise-model loss of (B, H, W) measured counts against
        (B, H, W) predicted intensities."""
        return self.loss_fn(measured, predicted, self.mask, self.readout_noise)

"""The interface every object representation implements.

``PtychoModel`` only ever calls ``transmission()``; pixels, a latent vector through a decoder, or
a generator all plug in by subclassing ``ObjectRepresentation`` (its trainable weights form the
"object" parameter group).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from adptycho.errors import AdptychoError

__all__ = ["ObjectRepresentation"]


class ObjectRepresentation(keras.layers.Layer):
    """A complex transmission function O(y, x) built from trainable parameters.

    Subclasses create their weights in ``__init__`` (so the layer is built at once) and implement
    ``transmission``.

    Attributes:
        object_shape: (Y, X) shape of the object grid.
    """

    def __init__(self, object_shape, **kwargs):
        super().__init__(**kwargs)
        self.object_shape = (int(object_shape[0]), int(object_shape[1]))

    def _region(self, region_px) -> tuple:
        """Validated ``(y0, x0, height, width)`` sub-rectangle of the object grid (None: all)."""
        if region_px is None:
            region_px = (0, 0) + self.object_shape
        y0, x0, height, width = (int(v) for v in region_px)
        if height < 1 or width < 1 or y0 < 0 or x0 < 0 or y0 + height > self.object_shape[0] \
                or x0 + width > self.object_shape[1]:
            raise AdptychoError(f"region_px {tuple(region_px)} does not fit in the object grid "
                                f"{self.object_shape}")
        return (y0, x0, height, width)

    def transmission(self) -> tf.Tensor:
        """(Y, X) complex64 object transmission function (by default formed from
        ``transmission_parts``; a representation defines at least one of the two)."""
        if type(self).transmission_parts is ObjectRepresentation.transmission_parts:
            raise TypeError(f"{type(self).__name__} must define transmission() or "
                            "transmission_parts()")
        real, imag = self.transmission_parts()
        return tf.complex(real, imag)

    def transmission_parts(self):
        """``(real, imag)`` (Y, X) float32 parts of the object (the model's fast path).

        Representations that store real and imaginary parts override this to hand them over
        without forming the complex tensor first.
        """
        value = self.transmission()
        return tf.math.real(value), tf.math.imag(value)

    def call(self, inputs=None):
        return self.transmission()

    def penalty(self):
        """Optional prior term of the representation: a float32 scalar tensor that the model
        adds to its objective (``PtychoModel.train_step``, ``training.lbfgs``) as
        ``penalty / N`` to the mean per-pattern loss, i.e. ``sum_j L_j + penalty`` over the
        N patterns; ``None`` (the default) adds nothing. The PIE engines do not use it."""
        return None

    def to_numpy(self) -> np.ndarray:
        """(Y, X) complex64 numpy copy of the current object."""
        return np.asarray(self.transmission().numpy(), dtype=np.complex64)

    def get_config(self):
        config = super().get_config()
        config["object_shape"] = self.object_shape
        return config

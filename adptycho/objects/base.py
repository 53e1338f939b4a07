"""The interface every object representation implements.

``PtychoModel`` only ever calls ``transmission()``; pixels, a latent vector through a decoder, or
a generator all plug in by subclassing ``ObjectRepresentation`` (its trainable weights form the
"object" parameter group).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

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

    def transmission(self) -> tf.Tensor:
        """(Y, X) complex64 object transmission function."""
        raise TypeError(f"{type(self).__name__} must define transmission()")

    def transmission_parts(self):
        """``(real, imag)`` (Y, X) float32 parts of the object (the model's fast path).

        Representations that store real and imaginary parts override this to hand them over
        without forming the complex tensor first.
        """
        value = self.transmission()
        return tf.math.real(value), tf.math.imag(value)

    def call(self, inputs=None):
        return self.transmission()

    def to_numpy(self) -> np.ndarray:
        """(Y, X) complex64 numpy copy of the current object."""
        return np.asarray(self.transmission().numpy(), dtype=np.complex64)

    def get_config(self):
        config = super().get_config()
        config["object_shape"] = self.object_shape
        return config

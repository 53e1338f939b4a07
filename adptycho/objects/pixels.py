"""``PixelObject``: one complex value per object pixel, stored as real float32 variables."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from adptycho.errors import AdptychoError
from adptycho.objects.base import ObjectRepresentation

__all__ = ["PixelObject", "PIXEL_PARAMETRISATIONS", "total_variation"]

PIXEL_PARAMETRISATIONS = ("complex", "amplitude-phase", "amplitude", "phase")


class PixelObject(ObjectRepresentation):
    """Pixel-wise complex object.

    Keras optimisers mishandle complex variables (Adam's second moment uses g*g instead of
    |g|^2), so the object is stored as real float32 variables and formed as complex64 in
    ``transmission``.

    Args:
        object_shape: (Y, X).
        parametrisation: ``"complex"`` (real and imaginary parts; the default, best conditioned),
            ``"amplitude-phase"``, ``"amplitude"`` (phase fixed at 0: absorbing objects) or
            ``"phase"`` (amplitude fixed at 1: pure phase objects).
        initial: optional (Y, X) complex initial object (default: 1 everywhere, free space).
        tv_weight: weight of a total-variation prior (``penalty``; 0: none), in units of the
            loss summed over all patterns per unit of TV.
    """

    def __init__(self, object_shape, parametrisation: str = "complex", initial=None,
                 tv_weight: float = 0.0, **kwargs):
        super().__init__(object_shape, **kwargs)
        if not np.isfinite(tv_weight) or tv_weight < 0:
            raise AdptychoError(f"tv_weight must be finite and >= 0, got {tv_weight}")
        self.tv_weight = float(tv_weight)
        if parametrisation not in PIXEL_PARAMETRISATIONS:
            raise AdptychoError(
                f"unknown pixel parametrisation {parametrisation!r}; choose one of "
                f"{', '.join(PIXEL_PARAMETRISATIONS)}")
        self.parametrisation = parametrisation
        if initial is None:
            initial = np.ones(self.object_shape, np.complex64)
        initial = np.asarray(initial)
        if initial.shape != self.object_shape:
            raise AdptychoError(
                f"initial object has shape {initial.shape}, expected {self.object_shape}")
        if not np.isfinite(initial).all():
            raise AdptychoError("initial object contains non-finite values")
        if parametrisation == "complex":
            parts = {"real": initial.real, "imag": initial.imag}
        elif parametrisation == "amplitude-phase":
            parts = {"amplitude": np.abs(initial), "phase": np.angle(initial)}
        elif parametrisation == "amplitude":
            parts = {"amplitude": np.abs(initial)}
        else:
            parts = {"phase": np.angle(initial)}
        self._parts = {}
        for name, value in parts.items():
            self._parts[name] = self.add_weight(
                shape=self.object_shape, dtype="float32", name=name,
                initializer=_constant(np.asarray(value, np.float32)),
                aggregation="only_first_replica")
        self.built = True

    def transmission(self) -> tf.Tensor:
        p = {name: tf.convert_to_tensor(v) for name, v in self._parts.items()}
        if self.parametrisation == "complex":
            return tf.complex(p["real"], p["imag"])
        if self.parametrisation == "amplitude":
            return tf.complex(p["amplitude"], tf.zeros_like(p["amplitude"]))
        phase = p["phase"]
        amplitude = p.get("amplitude", tf.ones_like(phase))
        return tf.complex(amplitude * tf.cos(phase), amplitude * tf.sin(phase))

    def transmission_parts(self):
        if self.parametrisation == "complex":
            return (tf.convert_to_tensor(self._parts["real"]),
                    tf.convert_to_tensor(self._parts["imag"]))
        return super().transmission_parts()

    def penalty(self):
        """``tv_weight * TV(O)``, the isotropic total variation of the complex object,
        ``sum_yx sqrt(|O(y+1, x) - O(y, x)|^2 + |O(y, x+1) - O(y, x)|^2 + eps)`` with
        ``eps = TV_EPS`` (smooth at zero differences); ``None`` when ``tv_weight`` is 0."""
        if self.tv_weight == 0.0:
            return None
        return self.tv_weight * total_variation(*self.transmission_parts())

    def assign(self, value) -> None:
        """Set the object to the (Y, X) complex array or tensor ``value`` (projected on the
        parametrisation; a complex parametrisation takes a tensor without a host copy)."""
        if self.parametrisation == "complex" and tf.is_tensor(value):
            value = tf.cast(value, tf.complex64)
            self._parts["real"].assign(tf.math.real(value))
            self._parts["imag"].assign(tf.math.imag(value))
            return
        value = np.asarray(value)
        updates = {"real": value.real, "imag": value.imag, "amplitude": np.abs(value),
                   "phase": np.angle(value)}
        for name, variable in self._parts.items():
            variable.assign(updates[name].astype(np.float32))

    def get_config(self):
        config = super().get_config()
        config["parametrisation"] = self.parametrisation
        config["tv_weight"] = self.tv_weight
        return config


TV_EPS = 1e-6


def total_variation(real, imag):
    """Isotropic total variation (float32 scalar) of the complex image ``real + i imag``
    ((Y, X) float32 each); forward differences, the last row and column repeat (zero
    difference)."""
    squared = 0.0
    for part in (real, imag):
        dy = tf.concat([part[1:] - part[:-1], tf.zeros_like(part[:1])], axis=0)
        dx = tf.concat([part[:, 1:] - part[:, :-1], tf.zeros_like(part[:, :1])], axis=1)
        squared += tf.square(dy) + tf.square(dx)
    return tf.reduce_sum(tf.sqrt(squared + TV_EPS))


def _constant(value):
    def init(shape, dtype=None):
        return tf.constant(value, dtype=dtype or tf.float32)
    return init

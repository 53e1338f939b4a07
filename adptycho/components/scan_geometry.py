"""The scan geometry of a ``PtychoModel``: positions and their corrections (free offsets, an
affine stage model), the propagation distance (near field; far field scales the positions),
cone-beam (Fresnel scaling) geometry and co-propagation.

Trainable (made by the owning model's ``add_weight``):

* ``corrections``: (N, 2) pixels added to the nominal positions, kept at zero mean (a global
  shift is a null space of ptychography);
* ``affine``: (2, 2) deviation of the stage's affine map from identity, in units of the scan's
  RMS radius (a unit change moves the outer positions by about a pixel);
* ``log_distance_scale``: dimensionless ``s`` with ``distance = nominal * exp(s)`` (near field:
  the distance, or z1 for cone beam; far field: the sample-detector distance).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf

from adptycho.errors import AdptychoError
from adptycho.geometry.grids import check_positions_inside

__all__ = ["NearFieldGeometry", "ScanGeometry", "POSITION_MODELS"]

POSITION_MODELS = ("offsets", "affine")


@dataclasses.dataclass(frozen=True)
class NearFieldGeometry:
    """Angular-spectrum (near-field) propagation settings.

    Attributes:
        wavelength_m: wavelength in metres.
        pixel_size_m: (dy, dx) sample-plane pixel size in metres (effective for cone beam).
        distance_m: nominal propagation distance in metres (effective z2/M for cone beam).
        focus_distance_m, detector_distance_m, detector_pixel_size_m: cone beam only (Fresnel
            scaling): z1, z2 and the (square) detector pitch; with all three the trainable
            distance is z1, M = (z1 + z2) / z1, pixel = dx_det / M, distance = z2 / M.
    """

    wavelength_m: float
    pixel_size_m: tuple
    distance_m: float
    focus_distance_m: Optional[float] = None
    detector_distance_m: Optional[float] = None
    detector_pixel_size_m: Optional[float] = None

    @property
    def cone_beam(self) -> bool:
        """True when z1, z2 and the detector pixel are known: the distance group then fits z1
        (magnification, effective pixel, effective distance and positions in pixels all follow)."""
        return None not in (self.focus_distance_m, self.detector_distance_m,
                            self.detector_pixel_size_m)


class ScanGeometry:
    """Positions, distance and propagation of a model (see the module docstring).

    Args:
        positions_px: (N, 2) top-left window corners (y, x) in object pixels.
        detector_shape, object_shape: (H, W) and (Y, X).
        add_weight: ``name, shape, initializer -> variable`` of the owning model.
        near_field: None (far field) or ``NearFieldGeometry``.
        farfield_distance_m: far field only: the nominal sample-detector distance (makes the
            distance a parameter: positions in pixels scale as z0 / z about their centroid).
        position_model: ``offsets`` or ``affine``.
    """

    def __init__(self, positions_px, detector_shape, object_shape, add_weight,
                 near_field: Optional[NearFieldGeometry] = None,
                 farfield_distance_m: Optional[float] = None, position_model: str = "offsets"):
        positions_px = np.asarray(positions_px, np.float64)
        if positions_px.ndim != 2 or positions_px.shape[1] != 2:
            raise AdptychoError(f"positions_px must have shape (N, 2), got {positions_px.shape}")
        self.num_patterns = int(positions_px.shape[0])
        self.detector_shape, self.object_shape = tuple(detector_shape), tuple(object_shape)
        check_positions_inside(positions_px, self.detector_shape, self.object_shape)
        self.near_field = near_field
        if farfield_distance_m is not None:
            if near_field is not None:
                raise AdptychoError("farfield_distance_m is for far-field models only")
            if not (np.isfinite(farfield_distance_m) and farfield_distance_m > 0):
                raise AdptychoError(
                    f"farfield_distance_m must be positive and finite, got {farfield_distance_m}")
            farfield_distance_m = float(farfield_distance_m)
        self.farfield_distance_m = farfield_distance_m
        if position_model not in POSITION_MODELS:
            raise AdptychoError(
                f"position_model must be 'offsets' or 'affine', got {position_model!r}")
        self.position_model = position_model
        self.nominal = tf.constant(positions_px, tf.float32)
        centroid = positions_px.mean(axis=0)
        self.extent = float(np.sqrt(np.mean(np.sum((positions_px - centroid) ** 2, 1)))) or 1.0
        self.centred = tf.constant(positions_px - centroid, tf.float32)
        self.centred_pinv = tf.constant(np.linalg.pinv(positions_px - centroid), tf.float32)
        self.limit = tf.constant([self.object_shape[0] - self.detector_shape[0],
                                  self.object_shape[1] - self.detector_shape[1]], tf.float32)
        self.integral = bool(np.all(positions_px == np.round(positions_px)))
        self.corrections = add_weight("position_corrections", (self.num_patterns, 2), "zeros")
        self.affine = add_weight("position_affine", (2, 2), "zeros")
        self.log_distance_scale = add_weight("log_distance_scale", (), "zeros")

    @property
    def position_variables(self) -> list:
        """The ``positions`` group."""
        if self.position_model == "affine":
            return [self.corrections, self.affine]
        return [self.corrections]

    @property
    def has_distance(self) -> bool:
        return self.near_field is not None or self.farfield_distance_m is not None

    def positions(self, indices=None) -> tf.Tensor:
        """(B, 2) float32 refined positions (nominal + corrections), clipped inside the object."""
        corrections = tf.convert_to_tensor(self.corrections)
        if indices is None:
            positions, centred = self.nominal + corrections, self.centred
        else:
            positions = tf.gather(self.nominal, indices) + tf.gather(corrections, indices)
            centred = tf.gather(self.centred, indices)
        if self.position_model == "affine":
            deviation = tf.convert_to_tensor(self.affine) / self.extent
            positions = positions + tf.matmul(centred, deviation, transpose_b=True)
        if self.near_field is not None and self.near_field.cone_beam:
            # positions in metres are fixed; in pixels they scale with M(z1) / M(z1_nominal)
            magnification = self.cone_beam_geometry()[0]
            z1_0 = self.near_field.focus_distance_m
            nominal = (z1_0 + self.near_field.detector_distance_m) / z1_0
            positions = positions + centred * (magnification / nominal - 1.0)
        elif self.farfield_distance_m is not None:
            # object pixel lambda z / (N dx): positions in pixels scale as z0 / z
            positions = positions + centred * (
                tf.exp(-tf.convert_to_tensor(self.log_distance_scale)) - 1.0)
        return tf.clip_by_value(positions, 0.0, self.limit + 0.999)

    def affine_matrix(self) -> np.ndarray:
        """(2, 2) fitted affine map about the centroid ((y, x) order); identity for offsets."""
        return np.eye(2) + self.affine.numpy().astype(np.float64) / self.extent

    def focus_distance(self) -> tf.Tensor:
        """Scalar float32 cone-beam focus-to-sample distance z1 in metres."""
        return self.near_field.focus_distance_m * tf.exp(
            tf.convert_to_tensor(self.log_distance_scale))

    def cone_beam_geometry(self):
        """``(magnification, effective pixel, effective distance)`` of the cone beam."""
        z1 = self.focus_distance()
        z2 = self.near_field.detector_distance_m
        magnification = (z1 + z2) / z1
        return (magnification, self.near_field.detector_pixel_size_m / magnification,
                z2 / magnification)

    def distance(self) -> tf.Tensor:
        """Scalar float32 (effective) propagation distance in metres (near field), or the
        sample-detector distance (far field with ``farfield_distance_m``)."""
        scale = tf.exp(tf.convert_to_tensor(self.log_distance_scale))
        if self.near_field is None:
            if self.farfield_distance_m is None:
                raise AdptychoError("this far-field model has no distance parameter "
                                    "(give farfield_distance_m)")
            return self.farfield_distance_m * scale
        if self.near_field.cone_beam:
            return self.cone_beam_geometry()[2]
        return self.near_field.distance_m * scale

    def refined_distance_m(self) -> Optional[float]:
        """Refined propagation distance in metres (near field), the sample-detector distance
        (far field with ``farfield_distance_m``), else None."""
        return float(self.distance().numpy()) if self.has_distance else None

    def refined_focus_distance_m(self) -> Optional[float]:
        """Refined cone-beam focus-to-sample distance z1 in metres, else None."""
        if self.near_field is None or not self.near_field.cone_beam:
            return None
        return float(self.focus_distance().numpy())

    def copropagation(self, copropagate: bool, refine) -> tuple:
        """``(object, probe)``: whether the model's object / probe are the stored ones
        co-propagated by z0 - z. Parallel-beam near field with the distance refined (and
        ``copropagate``), for what is refined too (a known, frozen object or probe stays)."""
        coupling = bool(copropagate and "distance" in refine and self.near_field is not None
                        and not self.near_field.cone_beam)
        return coupling and "object" in refine, coupling and "probe" in refine

    def transfer_function(self, materialise=None):
        """(H, W) complex64 band-limited angular-spectrum transfer function, or None (far
        field); ``materialise`` see ``physics.propagators.angular_spectrum_transfer``."""
        from adptycho.physics.propagators import (angular_spectrum_transfer,
                                                  angular_spectrum_transfer_tf)
        if self.near_field is None:
            return None
        if self.near_field.cone_beam:
            _, pixel, distance = self.cone_beam_geometry()
            return angular_spectrum_transfer_tf(self.detector_shape, pixel,
                                                self.near_field.wavelength_m, distance,
                                                materialise=materialise)
        return angular_spectrum_transfer(self.detector_shape, self.near_field.pixel_size_m,
                                         self.near_field.wavelength_m, self.distance(),
                                         materialise=materialise)

    def copropagate(self, field, materialise=None):
        """``field`` (..., H', W') propagated by z0 - z (parallel-beam near field)."""
        from adptycho.physics.propagators import angular_spectrum_transfer, near_field

        delta = self.near_field.distance_m - self.distance()
        transfer = angular_spectrum_transfer(field.shape[-2:], self.near_field.pixel_size_m,
                                             self.near_field.wavelength_m, delta,
                                             materialise=materialise)
        return near_field(field, transfer)

    def subpixel_needed(self, subpixel, positions_refined: bool) -> bool:
        """Whether the forward model applies sub-pixel shifts (``subpixel="auto"``: positions
        refined, fractional or corrected)."""
        if subpixel != "auto":
            return bool(subpixel)
        if positions_refined:
            return True
        return not (self.integral and not np.any(self.corrections.numpy())
                    and not np.any(self.affine.numpy()))

    def project_corrections(self, distance_refined: bool) -> None:
        """Keep the free offsets at zero mean; with the affine model also free of any linear
        trend, which moves into the affine matrix (so the split is unique). In far field with
        the distance refined, the isotropic scale of the positions moves into the distance."""
        corrections = tf.convert_to_tensor(self.corrections)
        corrections = corrections - tf.reduce_mean(corrections, axis=0, keepdims=True)
        if self.position_model == "affine":
            # least squares corrections ~ centred @ L^T, L^T = pinv(centred) @ corrections
            linear_t = tf.matmul(self.centred_pinv, corrections)  # (2, 2) = L^T
            corrections = corrections - tf.matmul(self.centred, linear_t)
            self.affine.assign_add(tf.transpose(linear_t) * self.extent)
        if self.farfield_distance_m is not None and distance_refined:
            # In far field an isotropic scale of the positions IS the distance: move it there so
            # the offsets (or affine map) and the distance do not share one degree of freedom.
            if self.position_model == "affine":
                affine = tf.convert_to_tensor(self.affine)
                alpha = 0.5 * tf.linalg.trace(affine) / self.extent
                self.affine.assign(affine - tf.eye(2) * alpha * self.extent)
            else:
                centred = self.centred
                alpha = tf.reduce_sum(corrections * centred) / tf.reduce_sum(centred * centred)
                corrections = corrections - alpha * centred
            scale = tf.exp(-tf.convert_to_tensor(self.log_distance_scale)) + alpha
            self.log_distance_scale.assign(-tf.math.log(tf.maximum(scale, 1e-3)))
        self.corrections.assign(corrections)

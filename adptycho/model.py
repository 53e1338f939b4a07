"""``PtychoModel``: the whole instrument as a Keras model fitted to measured intensities.

Parameter groups (each with its own Adam optimiser, switchable, startable at an epoch):

* ``object``: the weights of the ``ObjectRepresentation`` (pixels, latent vector, ...);
* ``probe``: (M, H, W) probe modes, stored as real float32 pairs scaled by a fixed factor so
  that Adam's step is relative to the probe amplitude (cdtools' ``probe_norm`` idea);
* ``positions``: (N, 2) corrections in pixels added to the nominal scan positions, kept at zero
  mean (a global shift is a null space of ptychography);
* ``distance``: near field only, a dimensionless log-scale ``s`` with
  ``distance_m = nominal * exp(s)`` (always positive).

``call(indices)`` maps a batch of (B,) int pattern indices to (B, H, W) predicted intensities;
``train_step`` computes the noise-model loss and applies one optimiser per active group. Use it
like any Keras model::

    model = PtychoModel(PixelObject(grid.shape), probe, corners_px, loss="poisson")
    model.compile(refine=("object", "probe"), learning_rates={"object": 0.05})
    model.fit(np.arange(N), patterns, batch_size=32, epochs=50, shuffle=True)
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from adptycho.errors import AdptychoError, GeometryError
from adptycho.geometry.grids import check_positions_inside
from adptycho.losses import get_loss, sum_of_pattern_values
from adptycho.objects.base import ObjectRepresentation
from adptycho.physics.forward import forward_intensities, forward_losses
from adptycho.physics.propagators import angular_spectrum_kernel
from adptycho.physics.xla_pieces import chains as xla_pieces_chains
from adptycho.physics.xla_pieces import fft_outside_xla

__all__ = ["PtychoModel", "NearFieldGeometry", "PARAMETER_GROUPS", "DEFAULT_LEARNING_RATES"]

PARAMETER_GROUPS = ("object", "probe", "positions", "distance")
DEFAULT_LEARNING_RATES = {"object": 0.05, "probe": 0.05, "positions": 0.05, "distance": 2e-3}


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


class _RelativeResidual(keras.metrics.Metric):
    """Epoch-accumulated relative amplitude residual ``sum (sqrt I - sqrt X)^2 / sum X``.

    The amplitude loss normalised by the counts: about N_pixels / (4 sum X) at the Poisson noise
    floor, 0 for a perfect fit.
    """

    def __init__(self, name="residual", **kwargs):
        super().__init__(name=name, **kwargs)
        self.numerator = self.add_variable(shape=(), initializer="zeros", name="numerator")
        self.denominator = self.add_variable(shape=(), initializer="zeros", name="denominator")

    def update_state(self, numerator, denominator):
        self.numerator.assign_add(numerator)
        self.denominator.assign_add(denominator)

    def result(self):
        return self.numerator / tf.maximum(self.denominator, 1e-30)

    def reset_state(self):
        self.numerator.assign(0.0)
        self.denominator.assign(0.0)


class PtychoModel(keras.Model):
    """Differentiable ptychography forward model with per-group Adam optimisers.

    Args:
        object_representation: an ``ObjectRepresentation`` (e.g. ``PixelObject``) of shape (Y, X).
        probe: (M, H, W) or (H, W) complex initial probe (photon units: sum |P|^2 is the number of
            photons per exposure).
        positions_px: (N, 2) top-left corners (y, x) of the probe window in object pixels.
        near_field: ``None`` for far field (Fraunhofer), or a ``NearFieldGeometry``.
        mask: (H, W) bool, True = valid detector pixel (None: all valid).
        loss: ``"amplitude"``, ``"poisson"`` or ``"poisson-gaussian"``.
        readout_noise: camera readout standard deviation in photons (scalar or (H, W)) for the
            Poisson-Gaussian loss.
        subpixel: ``"auto"`` (Fourier sub-pixel shift when positions are fractional or refined),
            ``True`` or ``False`` (integer part only).
        position_model: ``"offsets"`` (free zero-mean per-position corrections) or ``"affine"``
            (a global affine map about the scan centroid, i.e. scale, rotation and shear of the
            stage, fitted alongside the free offsets).
        farfield_distance_m: far field only: the nominal sample-detector distance z0. It makes
            the distance a trainable parameter: the object pixel size is lambda z / (N dx_det),
            so with translations fixed in metres the positions in pixels scale as z0 / z about
            their centroid (the only place z enters a Fraunhofer model).
        probe_support: optional (H, W) real mask (1 inside, 0 outside; soft edges allowed) that
            multiplies every probe mode: the probe is zero where the illumination cannot be
            (e.g. outside a pinhole image).
        probe_power: optional total probe power sum_m sum |P_m|^2 in photons per exposure. After
            every probe update the modes are rescaled to it, which removes the probe/object scale
            ambiguity (the object then carries the transmission, at most about 1).
        copropagate: parallel-beam near field with the distance refined: the model's object and
            probe are the stored ones propagated by (z0 - z), O = ASM_{z0-z}[O_var] and
            P = ASM_{z0-z}[P_var]. A wrong distance is almost exactly absorbed by defocusing
            object and probe together (ASM_z[P O] = ASM_{z0}[P_var O_var] up to the
            product-rule terms at the probe edge), so with this coupling a change of z moves
            along that valley instead of against the object, and the distance gradient carries
            only the signal that identifies it. Applies to the object / probe only when they
            are refined too.
    """

    def __init__(self, object_representation: ObjectRepresentation, probe, positions_px,
                 near_field: Optional[NearFieldGeometry] = None, mask=None,
                 loss: str = "amplitude", readout_noise=1.0, subpixel="auto",
                 position_model: str = "offsets", farfield_distance_m: Optional[float] = None,
                 probe_support=None, probe_power: Optional[float] = None,
                 copropagate: bool = True, name="ptycho_model"):
        super().__init__(name=name)
        if not isinstance(object_representation, ObjectRepresentation):
            raise AdptychoError("object_representation must be an ObjectRepresentation "
                                f"(e.g. PixelObject), got {type(object_representation).__name__}")
        probe = np.asarray(probe)
        if probe.ndim == 2:
            probe = probe[None]
        if probe.ndim != 3:
            raise AdptychoError(f"probe must have shape (modes, H, W), got {probe.shape}")
        if not np.isfinite(probe).all():
            raise AdptychoError("probe contains non-finite values")
        self.detector_shape = tuple(int(s) for s in probe.shape[1:])
        self.num_modes = int(probe.shape[0])
        positions_px = np.asarray(positions_px, np.float64)
        if positions_px.ndim != 2 or positions_px.shape[1] != 2:
            raise AdptychoError(f"positions_px must have shape (N, 2), got {positions_px.shape}")
        self.num_patterns = int(positions_px.shape[0])
        self.object_representation = object_representation
        self.object_shape = object_representation.object_shape
        check_positions_inside(positions_px, self.detector_shape, self.object_shape)
        if mask is not None:
            mask = np.asarray(mask, bool)
            if mask.shape != self.detector_shape:
                raise GeometryError(
                    f"mask shape {mask.shape} does not match the probe/detector shape "
                    f"{self.detector_shape}")
        self.loss_name = loss
        self._loss_fn = get_loss(loss)
        if loss == "poisson-gaussian":
            noise = np.asarray(readout_noise, np.float32)
            if noise.ndim not in (0, 2) or (noise.ndim == 2 and noise.shape != self.detector_shape):
                raise AdptychoError(
                    f"readout_noise must be a scalar or a {self.detector_shape} array")
            if not np.all(noise > 0):
                raise AdptychoError("readout_noise must be positive for the poisson-gaussian loss")
        self.readout_noise = np.asarray(readout_noise, np.float32)
        self.near_field = near_field
        if farfield_distance_m is not None:
            if near_field is not None:
                raise AdptychoError("farfield_distance_m is for far-field models only")
            if not (np.isfinite(farfield_distance_m) and farfield_distance_m > 0):
                raise AdptychoError(
                    f"farfield_distance_m must be positive and finite, got {farfield_distance_m}")
            farfield_distance_m = float(farfield_distance_m)
        self.farfield_distance_m = farfield_distance_m
        self.subpixel = subpixel
        self._probe_support = None
        if probe_support is not None:
            support = np.asarray(probe_support, np.float32)
            if support.shape != self.detector_shape:
                raise GeometryError(f"probe_support shape {support.shape} does not match the "
                                    f"probe/detector shape {self.detector_shape}")
            if not (np.isfinite(support).all() and support.min() >= 0 and support.max() > 0):
                raise AdptychoError("probe_support must be finite, non-negative and not all zero")
            self._probe_support = tf.constant(support)
            probe = probe * support
        if probe_power is not None:
            if not (np.isfinite(probe_power) and probe_power > 0):
                raise AdptychoError(f"probe_power must be positive and finite, got {probe_power}")
            probe_power = float(probe_power)
        self.probe_power = probe_power
        self.copropagate = bool(copropagate)
        # set by compile: parallel-beam near field with the distance and object / probe refined
        self._copropagating = False
        self._copropagating_probe = False

        # -- constants --------------------------------------------------------------------
        self._nominal_positions = tf.constant(positions_px, tf.float32)
        if position_model not in ("offsets", "affine"):
            raise AdptychoError(
                f"position_model must be 'offsets' or 'affine', got {position_model!r}")
        self.position_model = position_model
        centroid = positions_px.mean(axis=0)
        # Affine parameters are scaled by the RMS radius of the scan, so a unit change moves the
        # outer positions by about one pixel (same Adam step size as the offsets).
        self._position_extent = float(np.sqrt(np.mean(np.sum((positions_px - centroid) ** 2, 1)))) or 1.0
        self._centred_positions = tf.constant(positions_px - centroid, tf.float32)
        self._centred_pinv = tf.constant(np.linalg.pinv(positions_px - centroid), tf.float32)
        self._position_limit = tf.constant(
            [self.object_shape[0] - self.detector_shape[0],
             self.object_shape[1] - self.detector_shape[1]], tf.float32)
        self._mask = None if mask is None else tf.constant(mask, tf.float32)
        self._positions_integral = bool(np.all(positions_px == np.round(positions_px)))
        if near_field is not None:
            phase, _, _ = angular_spectrum_kernel(
                self.detector_shape, near_field.pixel_size_m, near_field.wavelength_m)
            self._asm_phase_per_metre = tf.constant(phase, tf.float32)

        # -- parameters -------------------------------------------------------------------
        self.probe_scale = float(np.abs(probe).max()) or 1.0
        scaled = probe / self.probe_scale
        # Values assigned inside the training step (constraints, NaN rollback) are the same on
        # every replica under tf.distribute: the first replica's copy is kept.
        weight = functools.partial(self.add_weight, aggregation="only_first_replica")
        self.probe_real = weight(shape=probe.shape, name="probe_real",
                                 initializer=_constant(scaled.real))
        self.probe_imag = weight(shape=probe.shape, name="probe_imag",
                                 initializer=_constant(scaled.imag))
        self.position_corrections = weight(
            shape=(self.num_patterns, 2), name="position_corrections", initializer="zeros")
        self.position_affine = weight(shape=(2, 2), name="position_affine", initializer="zeros")
        self.log_distance_scale = weight(shape=(), name="log_distance_scale", initializer="zeros")
        # NaN guard state: steps rolled back so far, and the step-size factor they left
        self.nan_guard = True  # see train_step; False only to measure what the guard costs
        self.rollback_count = weight(shape=(), name="rollback_count", initializer="zeros",
                                     trainable=False)
        self.step_size_factor = weight(shape=(), name="step_size_factor", initializer="ones",
                                       trainable=False)
        self.groups = {
            "object": list(self.object_representation.trainable_weights),
            "probe": [self.probe_real, self.probe_imag],
            "positions": ([self.position_corrections, self.position_affine]
                          if position_model == "affine" else [self.position_corrections]),
            "distance": [self.log_distance_scale],
        }
        self.active_groups = ("object",)
        self.group_optimizers = {}
        self.learning_rates = dict(DEFAULT_LEARNING_RATES)
        self.start_epochs = {g: 0 for g in PARAMETER_GROUPS}
        self.refine = ("object",)
        self.decay_rate = 0.97
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.residual_tracker = _RelativeResidual()
        self._subpixel_now = self._subpixel_needed()
        self._fft_outside_xla = False  # set by compile (physics.xla_pieces)
        self._fft_chains = 1
        self.built = True

    # -- parameters as physical quantities ----------------------------------------------
    def probe_tensor(self) -> tf.Tensor:
        """(M, H, W) complex64 probe in photon units (times the support, if any; co-propagated
        by z0 - z while a parallel-beam near-field distance is refined, see ``copropagate``)."""
        probe = self._stored_probe_tensor()
        if self._copropagating_probe:
            probe = self._copropagate(probe)
        return probe

    def object_tensor(self) -> tf.Tensor:
        """(Y, X) complex64 stored object: the representation's transmission (before any
        co-propagation)."""
        return self.object_representation.transmission()

    def assign_object(self, value) -> None:
        """Set the stored object to the (Y, X) complex array or tensor ``value`` (projected on
        the representation's parametrisation; pixel objects only)."""
        self.object_representation.assign(value)

    def stored_probe_tensor(self) -> tf.Tensor:
        """(M, H, W) complex64 stored probe in photon units (times the support, if any; never
        co-propagated)."""
        return self._stored_probe_tensor()

    def assign_probe(self, probe) -> None:
        """Set the stored probe modes to the (M, H, W) complex array or tensor ``probe`` in
        photon units (the support, if any, still multiplies it)."""
        probe = tf.cast(tf.convert_to_tensor(probe), tf.complex64)
        self.probe_real.assign(tf.math.real(probe) / self.probe_scale)
        self.probe_imag.assign(tf.math.imag(probe) / self.probe_scale)

    def refresh_object_group(self) -> None:
        """Make the ``object`` group the representation's trainable weights again (after they
        changed, e.g. ``GeneratorObject.release_blocks``)."""
        self.groups["object"] = list(self.object_representation.trainable_weights)

    @property
    def detector_mask(self):
        """(H, W) float32 valid-pixel mask tensor (1 = valid), or None (all valid)."""
        return self._mask

    def object_parts(self):
        """``(real, imag)`` (Y, X) float32 parts of the model's object (co-propagated by z0 - z
        while a parallel-beam near-field distance is refined)."""
        parts = self.object_representation.transmission_parts()
        if not self._copropagating:
            return parts
        obj = self._copropagate(tf.complex(*parts))
        return tf.math.real(obj), tf.math.imag(obj)

    def _copropagate(self, field):
        from adptycho.physics.propagators import angular_spectrum_transfer, near_field

        delta = self.near_field.distance_m - self.distance_tensor()
        transfer = angular_spectrum_transfer(field.shape[-2:], self.near_field.pixel_size_m,
                                             self.near_field.wavelength_m, delta)
        return near_field(field, transfer)

    def _stored_probe_tensor(self) -> tf.Tensor:
        real = tf.convert_to_tensor(self.probe_real)
        imag = tf.convert_to_tensor(self.probe_imag)
        if self._probe_support is not None:
            real = real * self._probe_support
            imag = imag * self._probe_support
        return tf.complex(real, imag) * self.probe_scale

    def positions_tensor(self, indices=None) -> tf.Tensor:
        """(B, 2) float32 refined positions (nominal + zero-mean corrections), clipped inside the object."""
        corrections = tf.convert_to_tensor(self.position_corrections)
        if indices is None:
            positions = self._nominal_positions + corrections
            centred = self._centred_positions
        else:
            positions = (tf.gather(self._nominal_positions, indices)
                         + tf.gather(corrections, indices))
            centred = tf.gather(self._centred_positions, indices)
        if self.position_model == "affine":
            deviation = tf.convert_to_tensor(self.position_affine) / self._position_extent
            positions = positions + tf.matmul(centred, deviation, transpose_b=True)
        if self.near_field is not None and self.near_field.cone_beam:
            # positions in metres are fixed; in pixels they scale with M(z1) / M(z1_nominal)
            magnification = self._cone_beam_geometry()[0]
            z1_0 = self.near_field.focus_distance_m
            nominal = (z1_0 + self.near_field.detector_distance_m) / z1_0
            positions = positions + centred * (magnification / nominal - 1.0)
        elif self.farfield_distance_m is not None:
            # object pixel lambda z / (N dx): positions in pixels scale as z0 / z
            positions = positions + centred * (
                tf.exp(-tf.convert_to_tensor(self.log_distance_scale)) - 1.0)
        return tf.clip_by_value(positions, 0.0, self._position_limit + 0.999)

    def affine_matrix(self) -> np.ndarray:
        """(2, 2) fitted affine map of the nominal positions about their centroid ((y, x) order).

        Identity unless ``position_model="affine"``; its polar decomposition gives rotation,
        scale and shear of the scan stage.
        """
        return np.eye(2) + self.position_affine.numpy().astype(np.float64) / self._position_extent

    def focus_distance_tensor(self) -> tf.Tensor:
        """Scalar float32 cone-beam focus-to-sample distance z1 in metres."""
        return self.near_field.focus_distance_m * tf.exp(tf.convert_to_tensor(self.log_distance_scale))

    def _cone_beam_geometry(self):
        z1 = self.focus_distance_tensor()
        z2 = self.near_field.detector_distance_m
        magnification = (z1 + z2) / z1
        return magnification, self.near_field.detector_pixel_size_m / magnification, z2 / magnification

    def distance_tensor(self) -> tf.Tensor:
        """Scalar float32 (effective) propagation distance in metres (near field), or the
        sample-detector distance (far field with ``farfield_distance_m``)."""
        if self.near_field is None:
            if self.farfield_distance_m is None:
                raise AdptychoError("this far-field model has no distance parameter "
                                    "(give farfield_distance_m)")
            return self.farfield_distance_m * tf.exp(tf.convert_to_tensor(self.log_distance_scale))
        if self.near_field.cone_beam:
            return self._cone_beam_geometry()[2]
        return self.near_field.distance_m * tf.exp(tf.convert_to_tensor(self.log_distance_scale))

    def transfer_function(self):
        """(H, W) complex64 band-limited angular-spectrum transfer function, or None (far field)."""
        if self.near_field is None:
            return None
        from adptycho.physics.propagators import (angular_spectrum_transfer,
                                                  angular_spectrum_transfer_tf)
        if self.near_field.cone_beam:
            _, pixel, distance = self._cone_beam_geometry()
            return angular_spectrum_transfer_tf(self.detector_shape, pixel,
                                                self.near_field.wavelength_m, distance)
        return angular_spectrum_transfer(self.detector_shape, self.near_field.pixel_size_m,
                                         self.near_field.wavelength_m, self.distance_tensor())

    def update_subpixel(self) -> None:
        """Decide again whether the forward model applies sub-pixel shifts (``subpixel="auto"``:
        when positions are refined or fractional). Decided eagerly, between epochs (an engine
        that moved the positions calls it), read when the step is traced."""
        self._subpixel_now = self._subpixel_needed()

    def _subpixel_needed(self) -> bool:
        if self.subpixel != "auto":
            return bool(self.subpixel)
        if "positions" in self.active_groups:
            return True
        corrections = np.asarray(self.position_corrections.numpy())
        affine = np.asarray(self.position_affine.numpy())
        return not (self._positions_integral and not np.any(corrections) and not np.any(affine))

    # -- forward ------------------------------------------------------------------------
    def call(self, indices, training=False):
        """(B,) int pattern indices -> (B, H, W) float32 predicted intensities."""
        indices = tf.reshape(tf.cast(indices, tf.int32), [-1])
        return forward_intensities(self.object_parts(), self.probe_tensor(),
                                   self.positions_tensor(indices), self.transfer_function(),
                                   subpixel=self._subpixel_now)

    def batch_losses(self, indices, measured):
        """Losses of a batch against its measured counts, without returning the intensities.

        Returns ``(losses, residuals, counts)``: (B,) float32 noise-model losses
        (differentiable), (B,) amplitude-loss sums and (B,) sums of the valid counts (numerators
        and denominators of the relative residual). Under XLA, far-field
        models use the fused path (``physics.fused.fused_far_field_losses``), which never forms
        the predicted intensities.
        """
        indices = tf.reshape(tf.cast(indices, tf.int32), [-1])
        with fft_outside_xla(self._fft_outside_xla):
            object_parts, probe = self.object_parts(), self.probe_tensor()
            transfer = self.transfer_function()

            def chain(chain_indices, chain_measured):
                return forward_losses(object_parts, probe, self.positions_tensor(chain_indices),
                                      chain_measured, self.loss_name, transfer,
                                      subpixel=self._subpixel_now, mask=self._mask,
                                      readout_noise=self.readout_noise)

            if not self._fft_outside_xla or self._fft_chains < 2:
                return chain(indices, measured)
            # Independent chains of XLA pieces and FFT ops over consecutive parts of the
            # batch, which TensorFlow's executor runs concurrently (an XLA window loop runs on
            # one core).
            # An XLA loop cannot be compiled for an empty part: a batch smaller than the number
            # of chains is padded with zero counts at pattern 0 (tf.pad forwards its input
            # when there is nothing to pad); the padded losses are dropped, so their gradients
            # are zero.
            size = tf.shape(indices)[0]
            count = self._fft_chains
            pad = tf.maximum(count - size, 0)
            indices = tf.pad(indices, [[0, pad]])
            measured = tf.pad(measured, [[0, pad], [0, 0], [0, 0]])
            edges = [(k * (size + pad)) // count for k in range(count + 1)]
            parts = [chain(indices[a:b], measured[a:b]) for a, b in zip(edges[:-1], edges[1:])]
            return tuple(tf.concat(values, axis=0)[:size] for values in zip(*parts))

    def pattern_losses(self, measured, predicted):
        """(B,) per-pattern noise-model loss."""
        return self._loss_fn(measured, predicted, self._mask, self.readout_noise)

    # -- training -----------------------------------------------------------------------
    def compile(self, refine=("object",), learning_rates=None, start_epochs=None,
                decay_rate: float = 0.97, jit_compile="auto", **kwargs):
        """Create one Adam optimiser per refined parameter group.

        Args:
            refine: groups to fit, from ``object``, ``probe``, ``positions``, ``distance``.
            learning_rates: per-group initial Adam step sizes (defaults in
                ``DEFAULT_LEARNING_RATES``; object/probe in relative amplitude units, positions
                in pixels, distance in relative units).
            start_epochs: per-group epoch (0-based) at which the group starts to move.
            decay_rate: learning-rate factor per epoch since the group started (Seifert et al.
                use 0.97).
            jit_compile: XLA-compile the training step. ``"auto"``: yes, except on CPU for far-field
                models on the fused loss path, where the step runs as XLA-compiled pieces joined
                by TensorFlow FFT ops (``physics.xla_pieces``: XLA's CPU FFT often runs on one
                core inside a whole-XLA step).
        """
        refine = tuple(refine)
        for group in refine:
            if group not in PARAMETER_GROUPS:
                raise AdptychoError(
                    f"unknown parameter group {group!r}; choose from {', '.join(PARAMETER_GROUPS)}")
        if "distance" in refine and self.near_field is None and self.farfield_distance_m is None:
            raise AdptychoError(
                "far-field distance refinement needs the nominal sample-detector distance "
                "(farfield_distance_m; in a scan: detector_distance_m)")
        if not refine:
            raise AdptychoError("nothing to refine: give at least one parameter group")
        self.refine = refine
        coupling = bool(self.copropagate and "distance" in refine
                        and self.near_field is not None and not self.near_field.cone_beam)
        # only what is refined co-propagates (a known, frozen object or probe stays as given)
        self._copropagating = coupling and "object" in refine
        self._copropagating_probe = coupling and "probe" in refine
        self.learning_rates = {**DEFAULT_LEARNING_RATES, **(learning_rates or {})}
        self.start_epochs = {**{g: 0 for g in PARAMETER_GROUPS}, **(start_epochs or {})}
        if not 0 < decay_rate <= 1:
            raise AdptychoError(f"decay_rate must be in (0, 1], got {decay_rate}")
        self.decay_rate = float(decay_rate)
        self.group_optimizers = {}
        for group in refine:
            if not self.groups[group]:
                raise AdptychoError(f"the {group} group has no trainable variables")
            optimizer = keras.optimizers.Adam(learning_rate=self.learning_rates[group],
                                              name=f"adam_{group}")
            optimizer.build(self.groups[group])
            self.group_optimizers[group] = optimizer
        self.active_groups = tuple(g for g in refine if self.start_epochs[g] <= 0)
        self.update_subpixel()
        main = self.group_optimizers[refine[0]]
        self._fft_outside_xla = False
        if jit_compile == "auto":
            # CPU far field: XLA-compiled pieces joined by TensorFlow FFTs (xla_pieces)
            self._fft_outside_xla = self._fft_split_applies()
            jit_compile = not self._fft_outside_xla
        self._fft_chains = xla_pieces_chains() if self._fft_outside_xla else 1
        super().compile(optimizer=main, jit_compile=jit_compile, **kwargs)

    def _fft_split_applies(self) -> bool:
        """True where ``compile(jit_compile="auto")`` runs the step as XLA pieces joined by
        TensorFlow FFT ops (``physics.xla_pieces``): far field with the fused loss path
        (even windows of at least ``DUS_MIN_PIXELS`` pixels), no GPU visible."""
        from adptycho.physics import fused, xla_pieces
        from adptycho.physics.forward import can_fold_fftshift
        from adptycho.physics.shifts import large_window

        return (self.near_field is None and fused.FUSED_ENABLED
                and can_fold_fftshift(self.detector_shape) and large_window(self.detector_shape)
                and xla_pieces.available())

    def orthogonalise_probe(self) -> None:
        """Make the probe modes orthogonal and sort them by power (SVD of the (M, H*W) stack).

        The incoherent sum sum_m |Prop(P_m O)|^2 is invariant under unitary mixing of the modes
        (Thibault & Menzel 2013), so this changes no prediction; it gives the modes a unique,
        interpretable form (the dominant mode first).
        """
        if self.num_modes < 2:
            return
        probe = self._stored_probe_tensor().numpy().reshape(self.num_modes, -1).astype(np.complex128)
        _, singular, vh = np.linalg.svd(probe, full_matrices=False)
        modes = (singular[:, None] * vh).reshape((self.num_modes,) + self.detector_shape)
        self.probe_real.assign((modes.real / self.probe_scale).astype(np.float32))
        self.probe_imag.assign((modes.imag / self.probe_scale).astype(np.float32))

    def set_epoch(self, epoch: int) -> None:
        """Activate the groups whose start epoch has come and decay their learning rates.

        With several probe modes under refinement, the modes are also re-orthogonalised.
        """
        if "probe" in self.active_groups and self.num_modes > 1:
            self.orthogonalise_probe()
        active = tuple(g for g in self.refine if epoch >= self.start_epochs[g])
        if active != self.active_groups:
            self.active_groups = active
            self.update_subpixel()
            self.train_function = None
            self.make_train_function(force=True)
            self._recompiled_at = epoch
        factor = float(self.step_size_factor.numpy())
        for group in active:
            lr = self.learning_rates[group] * self.decay_rate ** (epoch - self.start_epochs[group])
            self.group_optimizers[group].learning_rate = lr * factor

    def _project_position_corrections(self):
        """Keep the free offsets at zero mean; with the affine model also free of any linear
        trend, which moves into the affine matrix (so the split is unique)."""
        corrections = tf.convert_to_tensor(self.position_corrections)
        corrections = corrections - tf.reduce_mean(corrections, axis=0, keepdims=True)
        if self.position_model == "affine":
            # least squares corrections ~ centred @ L^T, L^T = pinv(centred) @ corrections
            linear_t = tf.matmul(self._centred_pinv, corrections)  # (2, 2) = L^T
            corrections = corrections - tf.matmul(self._centred_positions, linear_t)
            self.position_affine.assign_add(tf.transpose(linear_t) * self._position_extent)
        if self.farfield_distance_m is not None and "distance" in self.active_groups:
            # In far field an isotropic scale of the positions IS the distance: move it there so
            # the offsets (or affine map) and the distance do not share one degree of freedom.
            if self.position_model == "affine":
                affine = tf.convert_to_tensor(self.position_affine)
                alpha = 0.5 * tf.linalg.trace(affine) / self._position_extent
                self.position_affine.assign(affine - tf.eye(2) * alpha * self._position_extent)
            else:
                centred = self._centred_positions
                alpha = tf.reduce_sum(corrections * centred) / tf.reduce_sum(centred * centred)
                corrections = corrections - alpha * centred
            scale = tf.exp(-tf.convert_to_tensor(self.log_distance_scale)) + alpha
            self.log_distance_scale.assign(-tf.math.log(tf.maximum(scale, 1e-3)))
        self.position_corrections.assign(corrections)

    def _constrain_probe_power(self):
        """Rescale the probe modes to ``probe_power`` photons in total."""
        real = tf.convert_to_tensor(self.probe_real)
        imag = tf.convert_to_tensor(self.probe_imag)
        weight = 1.0 if self._probe_support is None else self._probe_support ** 2
        power = tf.reduce_sum((real ** 2 + imag ** 2) * weight) * self.probe_scale ** 2
        factor = tf.sqrt(self.probe_power / tf.maximum(power, 1e-30))
        self.probe_real.assign(real * factor)
        self.probe_imag.assign(imag * factor)

    def _batch_mean(self, losses):
        """Mean loss of the global batch. Under ``tf.distribute`` each replica returns
        sum(its losses) / (patterns in the global batch), so the all-reduced (summed) gradients
        equal the single-device gradient of the same batch, however unevenly it was split."""
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return tf.reduce_mean(losses)
        count = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                   tf.cast(tf.size(losses), tf.float32))
        return tf.reduce_sum(losses) / tf.maximum(count, 1.0)

    @staticmethod
    def _all_replicas_true(flag):
        """A scalar bool that is True only if it is True on every replica."""
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return flag
        bad = context.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(flag, tf.float32))
        return tf.equal(bad, 0.0)

    def _apply_gradients(self, active, gradients):
        """One Adam update per active group, then the position and probe-power constraints."""
        start = 0
        for group in active:
            n = len(self.groups[group])
            self.group_optimizers[group].apply(gradients[start:start + n], self.groups[group])
            start += n
        if "positions" in active:
            self._project_position_corrections()
        if "probe" in active and self.probe_power is not None:
            self._constrain_probe_power()

    def _update_parameters(self, active, gradients, losses):
        """The Adam step of the ``active`` groups for ``gradients`` with the NaN guard (see
        ``train_step``). Returns ``(finite, ok)`` scalar bools: the losses and gradients were
        finite; the step was kept."""
        if not self.nan_guard:
            self._apply_gradients(active, gradients)
            return tf.constant(True), tf.constant(True)
        variables = [v for g in active for v in self.groups[g]]
        finite = tf.reduce_all(tf.math.is_finite(losses))
        for g in gradients:
            finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(g)))
        finite = self._all_replicas_true(finite)
        gradients = [tf.where(finite, g, tf.zeros_like(g)) for g in gradients]
        previous = [tf.identity(v.value) for v in variables]
        rates = {}
        for group in active:
            rate = self.group_optimizers[group]._learning_rate
            rates[group] = tf.identity(rate.value)
            rate.assign(tf.where(finite, rates[group], 0.0))
        self._apply_gradients(active, gradients)
        updated_finite = tf.constant(True)
        for v in variables:
            updated_finite = tf.logical_and(updated_finite,
                                            tf.reduce_all(tf.math.is_finite(v.value)))
        ok = tf.logical_and(finite, updated_finite)
        for v, old in zip(variables, previous):
            v.assign(tf.where(ok, v.value, old))
        factor = tf.where(ok, 1.0, 0.5)
        for group in active:
            self.group_optimizers[group]._learning_rate.assign(rates[group] * factor)
        self.step_size_factor.assign(self.step_size_factor * factor)
        self.rollback_count.assign_add(1.0 - tf.cast(ok, tf.float32))
        return finite, ok

    def train_step(self, data):
        """One Adam step of the active groups, with the NaN guard.

        NaN guard: a step whose loss or gradients are not finite (on any replica) changes no
        parameter (its gradients are zeroed and its step size is 0); a step whose update leaves
        a parameter non-finite is undone (the parameters are restored). Either way the step is
        counted in ``rollback_count`` and all step sizes are halved (``step_size_factor``);
        ``NaNGuard`` warns at the end of the epoch and resets optimiser moments that overflowed.
        """
        indices, measured, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        active = [g for g in self.active_groups]
        variables = [v for g in active for v in self.groups[g]]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            for v in variables:
                tape.watch(v.value)
            losses, residuals, counts = self.batch_losses(indices, measured)
            if sample_weight is not None:
                losses = losses * tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
            loss = self._batch_mean(losses)
        gradients = tape.gradient(loss, [v.value for v in variables])
        numerator = sum_of_pattern_values(residuals)
        denominator = sum_of_pattern_values(counts)
        update = functools.partial(self._update_parameters, tuple(active))
        if self._fft_outside_xla:
            # the element-wise Adam / guard passes as one XLA cluster, as in a whole-XLA step
            update = tf.function(update, jit_compile=True)
        _, ok = update(gradients, losses)
        if not self.nan_guard:
            self.loss_tracker.update_state(losses)
            self.residual_tracker.update_state(numerator, denominator)
            return self._step_logs()
        weight = tf.cast(ok, tf.float32)
        self.loss_tracker.update_state(tf.where(ok, losses, tf.zeros_like(losses)),
                                       sample_weight=tf.broadcast_to(weight, tf.shape(losses)))
        self.residual_tracker.update_state(tf.where(ok, numerator, 0.0),
                                           tf.where(ok, denominator, 0.0))
        return self._step_logs()

    def test_step(self, data):
        indices, measured, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        losses, residuals, counts = self.batch_losses(indices, measured)
        if sample_weight is not None:
            losses = losses * tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
        self.loss_tracker.update_state(losses)
        self.residual_tracker.update_state(sum_of_pattern_values(residuals),
                                           sum_of_pattern_values(counts))
        return self._step_logs()

    def _step_logs(self):
        logs = {"loss": self.loss_tracker.result(), "residual": self.residual_tracker.result()}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras reduces per-replica logs of a multi-worker step with a mean over axis 0,
            # which needs a vector: (1,) per replica -> one scalar
            logs = {k: tf.reshape(v, [1]) for k, v in logs.items()}
        return logs

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras builds a model under tf.distribute by averaging the first distributed batch
        over the replicas, which fails when a batch is split unevenly (5 patterns on 2
        replicas). Everything here is built already: variables in ``__init__``, optimisers in
        ``compile``."""
        if self.group_optimizers:
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    @property
    def metrics(self):
        return [self.loss_tracker, self.residual_tracker]

    def fit(self, *args, callbacks=None, **kwargs):
        """``keras.Model.fit`` plus the per-group start-epoch and learning-rate schedule."""
        if not self.group_optimizers:
            raise AdptychoError("call compile() before fit()")
        callbacks = list(callbacks or [])
        callbacks.insert(0, _GroupSchedule())
        callbacks.insert(1, NaNGuard())
        callbacks.insert(2, _ReleaseFreedMemory())
        return super().fit(*args, callbacks=callbacks, **kwargs)

    # -- results ------------------------------------------------------------------------
    def get_object(self) -> np.ndarray:
        """(Y, X) complex64 object (as the model uses it; see ``copropagate``)."""
        if self._copropagating:
            real, imag = self.object_parts()
            return (real.numpy() + 1j * imag.numpy()).astype(np.complex64)
        return self.object_representation.to_numpy()

    def get_probe(self) -> np.ndarray:
        """(M, H, W) complex64 probe in photon units."""
        return self.probe_tensor().numpy().astype(np.complex64)

    def get_positions(self) -> np.ndarray:
        """(N, 2) float64 refined top-left corners (y, x) in object pixels."""
        return self.positions_tensor().numpy().astype(np.float64)

    def get_focus_distance(self) -> Optional[float]:
        """Refined cone-beam focus-to-sample distance z1 in metres, else None."""
        if self.near_field is None or not self.near_field.cone_beam:
            return None
        return float(self.focus_distance_tensor().numpy())

    def get_distance(self) -> Optional[float]:
        """Refined propagation distance in metres (near field), the sample-detector distance
        (far field with ``farfield_distance_m``), else None."""
        if self.near_field is None and self.farfield_distance_m is None:
            return None
        return float(self.distance_tensor().numpy())


class _GroupSchedule(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.model.set_epoch(epoch)


class _ReleaseFreedMemory(keras.callbacks.Callback):
    """Hand memory freed by the C allocator back to the system at every epoch start (glibc
    keeps the scratch memory of an XLA compilation otherwise: a group that starts mid-fit
    recompiles the step, and the peak resident memory of a streamed 20000-pattern fit went from
    1.03 to 1.40 GB without this). No-op where ``malloc_trim`` does not exist."""

    def __init__(self):
        super().__init__()
        try:
            import ctypes

            self._trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            self._trim = None
        self._first = None

    def on_epoch_begin(self, epoch, logs=None):
        # only after an epoch that compiled the step (the first one, and any epoch that
        # started a parameter group): a trim walks the whole heap, too slow for every epoch
        if self._first is None:
            self._first = epoch
        if self._trim is not None and (epoch == self._first + 1
                                       or getattr(self.model, "_recompiled_at", None) == epoch - 1):
            self._trim(0)


class NaNGuard(keras.callbacks.Callback):
    """Reports the steps the training step's NaN guard rolled back (a ``RuntimeWarning`` per
    epoch that had any), resets optimiser moments that became non-finite, and stops the fit with
    an error when the step sizes have been halved so often (``max_rollbacks``) that the fit cannot
    go on, instead of returning NaNs."""

    def __init__(self, max_rollbacks: int = 30):
        super().__init__()
        self.max_rollbacks = int(max_rollbacks)
        self._seen = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._seen is None:
            self._seen = float(self.model.rollback_count.numpy())

    def on_epoch_end(self, epoch, logs=None):
        total = float(self.model.rollback_count.numpy())
        new = int(round(total - (self._seen or 0.0)))
        self._seen = total
        if new == 0:
            return
        for optimizer in self.model.group_optimizers.values():
            for v in optimizer.variables:
                value = v.numpy()
                if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
                    v.assign(np.where(np.isfinite(value), value, 0).astype(value.dtype))
        factor = float(self.model.step_size_factor.numpy())
        warnings.warn(f"epoch {epoch + 1}: {new} step(s) with a non-finite loss, gradient or "
                      f"parameter were rolled back; step sizes are now {factor:.3g} x the "
                      "schedule", RuntimeWarning, stacklevel=2)
        if total >= self.max_rollbacks:
            raise AdptychoError(
                f"the fit produced non-finite values {int(total)} times (step sizes lowered to "
                f"{factor:.2g} x the schedule); check the data for NaN/inf and the learning rates")


def _constant(value):
    value = np.asarray(value, np.float32)

    def init(shape, dtype=None):
        return tf.constant(value, dtype=dtype or tf.float32)
    return init

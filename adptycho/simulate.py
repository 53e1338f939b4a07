"""Simulated scans with exact photon scaling, Poisson noise and Gaussian camera readout noise."""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from adptycho.errors import AdptychoError
from adptycho.geometry.grids import check_positions_inside
from adptycho.io.scan_data import FARFIELD, NEARFIELD, ScanData
from adptycho.model import NearFieldGeometry
from adptycho.physics.forward import forward_intensities
from adptycho.physics.propagators import angular_spectrum_transfer

__all__ = ["simulate"]

tfd = tfp.distributions


def simulate(object_, probe, positions_px, *, photons_per_pattern: Optional[float] = None,
             poisson: bool = False, readout_noise: float = 0.0, near_field: Optional[NearFieldGeometry] = None,
             mask=None, seed: int = 0, batch_size: int = 64, wavelength_m=None, pixel_size_m=None,
             metadata=None) -> ScanData:
    """Simulate a ptychographic scan.

    Args:
        object_: (Y, X) complex transmission function.
        probe: (H, W) or (M, H, W) complex probe (photon units unless ``photons_per_pattern``).
        positions_px: (N, 2) top-left corners (y, x) of the probe window in object pixels
            (fractional values use the Fourier sub-pixel shift).
        photons_per_pattern: if given, the probe is rescaled so that the illumination carries
            exactly this many photons per exposure (sum over modes of sum |P|^2); with the
            orthonormal propagators a pattern of a non-absorbing object then holds exactly that
            many photons on average (before noise).
        poisson: draw Poisson counts (``tfp.distributions.Poisson``).
        readout_noise: standard deviation (photons) of additive Gaussian camera readout noise
            (``tfp.distributions.Normal``); the result may then hold negative values, and the
            returned ``ScanData`` allows them.
        near_field: ``None`` for far field, else a ``NearFieldGeometry``.
        mask: optional (H, W) bool valid-pixel mask, stored with the data.
        seed: seed of the noise (the same seed gives the same patterns).
        batch_size: patterns simulated per step (memory bound).
        wavelength_m, pixel_size_m: optional metadata for far-field scans.

    Returns:
        ``ScanData`` with float32 patterns (centred in far field) and the true positions.
    """
    object_ = np.asarray(object_)
    if object_.ndim != 2:
        raise AdptychoError(f"object must be 2-D (Y, X), got shape {object_.shape}")
    probe = np.asarray(probe, np.complex64)
    if probe.ndim == 2:
        probe = probe[None]
    if probe.ndim != 3:
        raise AdptychoError(f"probe must have shape (H, W) or (modes, H, W), got {probe.shape}")
    positions_px = np.asarray(positions_px, np.float64)
    if positions_px.ndim != 2 or positions_px.shape[1] != 2:
        raise AdptychoError(f"positions_px must have shape (N, 2), got {positions_px.shape}")
    check_positions_inside(positions_px, probe.shape[1:], object_.shape)
    if photons_per_pattern is not None:
        if not photons_per_pattern > 0:
            raise AdptychoError(f"photons_per_pattern must be positive, got {photons_per_pattern}")
        probe = probe * np.sqrt(photons_per_pattern / np.sum(np.abs(probe) ** 2))
    if readout_noise < 0:
        raise AdptychoError(f"readout_noise must be >= 0, got {readout_noise}")

    transfer = None
    if near_field is not None:
        transfer = angular_spectrum_transfer(probe.shape[1:], near_field.pixel_size_m,
                                             near_field.wavelength_m, near_field.distance_m)
    object_tf = tf.constant(object_, tf.complex64)
    probe_tf = tf.constant(probe, tf.complex64)
    chunks = []
    for start in range(0, len(positions_px), batch_size):
        batch = tf.constant(positions_px[start:start + batch_size], tf.float32)
        chunks.append(forward_intensities(object_tf, probe_tf, batch, transfer).numpy())
    intensities = np.maximum(np.concatenate(chunks), 0.0).astype(np.float32)

    patterns = intensities
    poisson_seed, readout_seed = tfp.random.split_seed(
        tf.constant([int(seed), 20261122], tf.int32), n=2)  # stateless: reproducible
    if poisson:
        patterns = tfd.Poisson(rate=patterns).sample(seed=poisson_seed).numpy().astype(np.float32)
    if readout_noise > 0:
        noise = tfd.Normal(loc=0.0, scale=float(readout_noise)).sample(
            patterns.shape, seed=readout_seed).numpy()
        patterns = (patterns + noise).astype(np.float32)

    info = {"simulated": True, "photons_per_pattern": float(np.sum(np.abs(probe) ** 2)),
            "poisson": bool(poisson), "readout_noise": float(readout_noise), "seed": int(seed)}
    info.update(metadata or {})
    if near_field is not None:
        return ScanData(patterns, positions_px, mask=mask, geometry=NEARFIELD,
                        wavelength_m=near_field.wavelength_m, pixel_size_m=near_field.pixel_size_m,
                        propagation_distance_m=near_field.distance_m, probe=probe,
                        metadata=info, allow_negative=readout_noise > 0)
    return ScanData(patterns, positions_px, mask=mask, geometry=FARFIELD, wavelength_m=wavelength_m,
                    pixel_size_m=pixel_size_m, probe=probe, metadata=info,
                    allow_negative=readout_noise > 0)

"""The ptychographic forward model: exit waves, propagation, detected intensities.

Intensity of pattern j (Seifert et al. 2024, Sec. 2.2; Thibault et al. 2008 for mixed states):

    I_j = sum_m | Prop{ P_m(r - frac_j) * O(r + corner_j) } |^2

where ``corner_j + frac_j`` is the scan position (top-left corner of the probe window in object
pixels, (y, x)), ``P_m`` are the incoherent probe modes and ``Prop`` is the far-field or
angular-spectrum propagator.
"""

from __future__ import annotations

import tensorflow as tf

from adptycho.physics.propagators import far_field, near_field
from adptycho.physics.shifts import extract_patches, fourier_shift, split_positions

__all__ = ["exit_waves", "intensities_from_waves", "forward_intensities"]


def exit_waves(object_: tf.Tensor, probe: tf.Tensor, positions_px: tf.Tensor,
               subpixel: bool = True) -> tf.Tensor:
    """Exit waves behind the object for a batch of scan positions.

    Args:
        object_: (Y, X) complex64 transmission function.
        probe: (M, H, W) complex64 probe modes.
        positions_px: (B, 2) float32 top-left corners (y, x) in object pixels; windows must lie
            inside the object.
        subpixel: apply the fractional part of the positions as a Fourier shift of the probe
            (differentiable w.r.t. positions). With ``False`` the fractional part is ignored
            (exact when all positions are integers).

    Returns:
        (B, M, H, W) complex64 exit waves.
    """
    probe = tf.convert_to_tensor(probe, tf.complex64)
    h, w = probe.shape[-2], probe.shape[-1]
    corners, fractions = split_positions(positions_px)
    patches = extract_patches(object_, corners, (h, w))  # (B, H, W)
    if subpixel:
        probes = fourier_shift(probe[None], fractions[:, None, :])  # (B, M, H, W)
    else:
        probes = probe[None]
    return probes * patches[:, None]


def intensities_from_waves(waves: tf.Tensor, transfer=None) -> tf.Tensor:
    """Detected intensity of a batch of (incoherent) mode exit waves.

    Args:
        waves: (B, M, H, W) complex64 exit waves.
        transfer: None for far field, or an (H, W) complex64 angular-spectrum transfer function
            for near field.

    Returns:
        (B, H, W) float32 intensities (far field centred), summed over modes.
    """
    if transfer is None:
        detector = far_field(waves)
    else:
        detector = near_field(waves, transfer)
    return tf.reduce_sum(tf.math.real(detector) ** 2 + tf.math.imag(detector) ** 2, axis=1)


def forward_intensities(object_, probe, positions_px, transfer=None, subpixel=True):
    """Predicted (B, H, W) float32 intensities; see ``exit_waves`` and ``intensities_from_waves``."""
    return intensities_from_waves(exit_waves(object_, probe, positions_px, subpixel), transfer)

"""The ptychographic forward model: exit waves, propagation, detected intensities.

Intensity of pattern j (Seifert et al. 2024, Sec. 2.2; Thibault & Menzel 2013 for mixed states):

    I_j = sum_m | Prop{ P_m(r - frac_j) * O(r + corner_j) } |^2

where ``corner_j + frac_j`` is the scan position (top-left corner of the probe window in object
pixels, (y, x)), ``P_m`` are the incoherent probe modes and ``Prop`` is the far-field or
angular-spectrum propagator.

Fast far field: for even H and W, ``fftshift(fft2(x)) = fft2(x * (-1)^(y + x))``. The model folds
this checkerboard into the (shared) probe instead of shifting every pattern, and folds it into
the sub-pixel shift by rolling the probe spectrum and the shift frequencies once per step, so the
per-pattern work is one multiply, one FFT and |.|^2.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from adptycho.physics.propagators import far_field, near_field
from adptycho.physics.shifts import extract_patches, split_positions

__all__ = ["exit_waves", "shifted_probes", "intensities_from_waves", "forward_intensities",
           "forward_losses", "can_fold_fftshift", "checkerboard", "shift_spectrum_inputs",
           "separable_ramp", "object_parts", "losses_of_intensities"]


def can_fold_fftshift(shape) -> bool:
    """True when the far-field fftshift can be folded into the probe (even H and W)."""
    return shape[-2] % 2 == 0 and shape[-1] % 2 == 0


def checkerboard(h, w):
    """(H, W) complex64 (-1)^(y + x): with H, W even, ``fft2(x * checkerboard)`` is the
    centred ``fftshift(fft2(x))``."""
    y = np.arange(h)[:, None]
    x = np.arange(w)[None, :]
    return tf.constant(np.where((y + x) % 2 == 0, 1.0, -1.0).astype(np.complex64))


def shift_spectrum_inputs(probe, fold_fftshift: bool = False):
    """``(spectrum, fy, fx)`` of a sub-pixel probe shift: the (M, H, W) complex64 probe
    spectrum and the (H,) and (W,) float32 FFT frequencies, both rolled by half the window when
    the fftshift is folded (``IFFT(roll(S, N/2)) = (-1)^n IFFT(S)``)."""
    probe = tf.convert_to_tensor(probe, tf.complex64)
    h, w = probe.shape[-2], probe.shape[-1]
    fy = np.fft.fftfreq(h).astype(np.float32)
    fx = np.fft.fftfreq(w).astype(np.float32)
    spectrum = tf.signal.fft2d(probe)
    if fold_fftshift:
        spectrum = tf.roll(spectrum, shift=(h // 2, w // 2), axis=(-2, -1))
        fy = np.roll(fy, h // 2)
        fx = np.roll(fx, w // 2)
    return spectrum, fy, fx


def shifted_probes(probe: tf.Tensor, fractions=None, fold_fftshift: bool = False) -> tf.Tensor:
    """Probe modes shifted by sub-pixel amounts (Fourier shift theorem), optionally checkerboarded.

    Args:
        probe: (M, H, W) complex64.
        fractions: None, or (B, 2) float32 shifts (y, x) in pixels; ``out(r) = P(r - shift)``.
        fold_fftshift: multiply the result by (-1)^(y + x) (H, W even), so that a plain FFT of the
            exit wave gives the centred far field.

    Returns:
        (1, M, H, W) without ``fractions``, else (B, M, H, W) complex64.
    """
    probe = tf.convert_to_tensor(probe, tf.complex64)
    h, w = probe.shape[-2], probe.shape[-1]
    if fractions is None:
        out = probe[None]
        return out * checkerboard(h, w) if fold_fftshift else out
    spectrum, fy, fx = shift_spectrum_inputs(probe, fold_fftshift)
    ramp = separable_ramp(fractions, fy, fx, -2.0 * np.pi)  # (B, H, W)
    return tf.signal.ifft2d(spectrum[None] * ramp[:, None])


def separable_ramp(fractions, fy, fx, factor, materialise=None):
    """(B, H, W) complex64 ``exp(i factor (f_y k_y + f_x k_x))`` built as the outer product of
    its (B, H) and (B, W) factors: B (H + W) sines and cosines instead of B H W.
    ``materialise``: optional identity applied to the stacked factors (``accel.windows``
    uses it so that XLA evaluates them once)."""
    fractions = tf.cast(fractions, tf.float32)
    phase_y = factor * fractions[:, 0, None] * tf.constant(fy, tf.float32)[None, :]  # (B, H)
    phase_x = factor * fractions[:, 1, None] * tf.constant(fx, tf.float32)[None, :]  # (B, W)
    cos_sin_y = tf.stack([tf.cos(phase_y), tf.sin(phase_y)])  # (2, B, H)
    cos_sin_x = tf.stack([tf.cos(phase_x), tf.sin(phase_x)])  # (2, B, W)
    if materialise is not None:
        cos_sin_y, cos_sin_x = materialise(cos_sin_y), materialise(cos_sin_x)
    ramp_y = tf.complex(cos_sin_y[0], cos_sin_y[1])
    ramp_x = tf.complex(cos_sin_x[0], cos_sin_x[1])
    return ramp_y[:, :, None] * ramp_x[:, None, :]


def object_parts(object_):
    """``(real, imag)`` of a (Y, X) complex object or of a ``(real, imag)`` pair."""
    if isinstance(object_, (tuple, list)):
        return tuple(object_)
    object_ = tf.convert_to_tensor(object_, tf.complex64)
    return tf.math.real(object_), tf.math.imag(object_)


def exit_waves(object_: tf.Tensor, probe: tf.Tensor, positions_px: tf.Tensor,
               subpixel: bool = True, fold_fftshift: bool = False) -> tf.Tensor:
    """Exit waves behind the object for a batch of scan positions.

    Args:
        object_: (Y, X) complex64 transmission function, or a ``(real, imag)`` pair of (Y, X)
            float32 tensors.
        probe: (M, H, W) complex64 probe modes.
        positions_px: (B, 2) float32 top-left corners (y, x) in object pixels; windows must lie
            inside the object.
        subpixel: apply the fractional part of the positions as a Fourier shift of the probe
            (differentiable w.r.t. positions). With ``False`` the fractional part is ignored
            (exact when all positions are integers).
        fold_fftshift: see ``shifted_probes`` (the fast far-field form).

    Returns:
        (B, M, H, W) complex64 exit waves.
    """
    probe = tf.convert_to_tensor(probe, tf.complex64)
    real, imag = object_parts(object_)
    h, w = probe.shape[-2], probe.shape[-1]
    corners, fractions = split_positions(positions_px)
    # Gathering the real and imaginary parts separately is faster (real scatter-add gradient).
    patches = tf.complex(extract_patches(real, corners, (h, w)),
                         extract_patches(imag, corners, (h, w)))  # (B, H, W)
    probes = shifted_probes(probe, fractions if subpixel else None, fold_fftshift)
    return probes * patches[:, None]


def intensities_from_waves(waves: tf.Tensor, transfer=None, folded: bool = False,
                           fractions=None) -> tf.Tensor:
    """Detected intensity of a batch of (incoherent) mode exit waves.

    Args:
        waves: (B, M, H, W) complex64 exit waves.
        transfer: None for far field, or an (H, W) complex64 angular-spectrum transfer function
            for near field.
        folded: far field only: the waves already carry the fftshift checkerboard
            (``exit_waves(..., fold_fftshift=True)``), so a plain FFT gives centred patterns.
        fractions: near field only: the (B, 2) sub-pixel parts of the positions used to shift
            the probe in ``exit_waves``. The detector is fixed to the probe, so the propagated
            wave is shifted back by them (a phase ramp folded into the transfer function, no
            extra FFT). In far field a shift of the exit wave does not change the intensity.

    Returns:
        (B, H, W) float32 intensities (far field centred), summed over modes.
    """
    if transfer is not None:
        if fractions is not None:
            h, w = waves.shape[-2], waves.shape[-1]
            ramp = separable_ramp(fractions, np.fft.fftfreq(h), np.fft.fftfreq(w), 2.0 * np.pi)
            transfer = transfer[None] * ramp  # (B, H, W)
            transfer = transfer[:, None]  # (B, 1, H, W)
        detector = near_field(waves, transfer)
        scale = 1.0
    elif folded:
        detector = tf.signal.fft2d(tf.convert_to_tensor(waves, tf.complex64))
        scale = 1.0 / (waves.shape[-2] * waves.shape[-1])
    else:
        detector = far_field(waves)
        scale = 1.0
    intensity = tf.reduce_sum(tf.math.real(detector) ** 2 + tf.math.imag(detector) ** 2, axis=1)
    return intensity * scale if scale != 1.0 else intensity


def forward_intensities(object_, probe, positions_px, transfer=None, subpixel=True):
    """Predicted (B, H, W) float32 intensities; see ``exit_waves`` and ``intensities_from_waves``.

    The composed reference ops; ``accel.forward`` runs the same model the fast ways."""
    fold = transfer is None and can_fold_fftshift(np.shape(probe))
    waves = exit_waves(object_, probe, positions_px, subpixel, fold_fftshift=fold)
    fractions = split_positions(positions_px)[1] if (subpixel and transfer is not None) else None
    return intensities_from_waves(waves, transfer, folded=fold, fractions=fractions)


def forward_losses(object_, probe, positions_px, measured, loss_name, transfer=None,
                   subpixel=True, mask=None, readout_noise=None):
    """Per-pattern noise-model losses of the forward model against measured counts.

    Returns ``(losses, residuals, counts)``: (B,) float32 losses,
    ``losses.get_loss(loss_name)(measured, forward_intensities(...), mask, readout_noise)``;
    the (B,) amplitude-loss sums ``amplitude_loss(measured, predicted, mask)`` and the (B,)
    ``masked_counts(measured, mask)`` (numerators and denominators of the relative residual;
    not differentiated).
    """
    predicted = forward_intensities(object_, probe, positions_px, transfer, subpixel)
    return losses_of_intensities(measured, predicted, loss_name, mask, readout_noise)


def losses_of_intensities(measured, predicted, loss_name, mask=None, readout_noise=None):
    """``(losses, residuals, counts)`` of ``forward_losses`` for (B, H, W) ``predicted``."""
    from adptycho.losses import amplitude_loss, get_loss, masked_counts

    losses = get_loss(loss_name)(measured, predicted, mask, readout_noise)
    counts = masked_counts(measured, mask)
    if loss_name == "amplitude":
        return losses, tf.stop_gradient(losses), counts
    return losses, tf.stop_gradient(amplitude_loss(measured, predicted, mask)), counts

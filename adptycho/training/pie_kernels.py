"""The PIE family's update kernels (pure tf functions; the algorithms and their references are
in the docstring of ``training.epie``): one vectorised ePIE/rPIE update with Fourier
relaxation and position estimates (``_pie_batch``), the Gauss-Newton position shifts
(``_position_shifts``), the whole-pixel position search misfits (``_offset_residuals``) and the
Poisson amplitude variance of the relaxed Fourier constraint (``poisson_amplitude_variance``).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from adptycho.physics.shifts import fourier_shift

__all__ = ["poisson_amplitude_variance"]

_LOG_LAMBDA_RANGE = (-6.0, 4.0)  # log10 of the tabulated Poisson means
_VARIANCE_TABLE = None


def _variance_table() -> np.ndarray:
    """f(lambda) = E[(sqrt X - sqrt lambda)^2], X ~ Poisson(lambda), on 401 points of
    log10(lambda) in ``_LOG_LAMBDA_RANGE`` (exact sums over the Poisson pmf)."""
    global _VARIANCE_TABLE
    if _VARIANCE_TABLE is None:
        from scipy.stats import poisson

        lam = 10.0 ** np.linspace(*_LOG_LAMBDA_RANGE, 401)
        table = np.empty_like(lam)
        for i, value in enumerate(lam):
            k = np.arange(int(value + 12 * np.sqrt(value) + 40))
            table[i] = np.sum(poisson.pmf(k, value) * (np.sqrt(k) - np.sqrt(value)) ** 2)
        _VARIANCE_TABLE = table.astype(np.float32)
    return _VARIANCE_TABLE


def poisson_amplitude_variance(intensity):
    """Expected squared deviation of the amplitude of a Poisson count from its mean's root.

    ``f(lambda) = E[(sqrt X - sqrt lambda)^2]`` for ``X ~ Poisson(lambda)``: 2 lambda for
    lambda << 1, a maximum of 0.45 near lambda = 1, 1/4 for lambda >> 1 (the variance-stabilised
    amplitude). Linear in log10(lambda) between 401 exact values on [1e-6, 1e4]; ``f(0) = 0``,
    proportional below 1e-6, 1/4 above 1e4.

    Args:
        intensity: float32 tensor of expected counts lambda >= 0, any shape.

    Returns:
        float32 tensor of the same shape.
    """
    import tensorflow_probability as tfp

    table = tf.constant(_variance_table())
    lo, hi = _LOG_LAMBDA_RANGE
    intensity = tf.cast(tf.convert_to_tensor(intensity), tf.float32)
    floor = tf.constant(10.0 ** lo, tf.float32)
    log_lambda = tf.math.log(tf.maximum(intensity, floor)) / np.log(10.0)
    value = tfp.math.interp_regular_1d_grid(log_lambda, lo, hi, table)
    # below the table f is proportional to lambda (f ~ 2 lambda)
    return tf.where(intensity < floor, intensity * (table[0] / floor), value)


def _position_shifts(obj, probes, corners, dpsi):
    """Gauss-Newton estimates of the shifts that move each exit wave toward its update.

    Linearising ``P_m O(r + R_j + delta) ~ P_m (O_j + delta_y d_y O_j + delta_x d_x O_j)`` and
    fitting ``dpsi_m`` in least squares gives the 2x2 normal equations of the module docstring
    (Odstrcil et al., Opt. Express 26, 3108 (2018), gradient position refinement; there per
    axis). ``d_k O_j`` are central differences of the object (one-sided at the object's
    border); the system is damped by 1e-3 of its mean diagonal so that a patch without
    gradient along one axis gives no shift along it.

    Args:
        obj: (Y, X) complex64 object the exit waves were formed with.
        probes: (B or 1, M, H, W) complex64 probe modes as they lit each window.
        corners: (B, 2) int32 window corners (y, x).
        dpsi: (B, M, H, W) complex64 exit-wave updates ``psi' - psi``.

    Returns:
        (B, 2) float32 shifts (y, x) in pixels: the window should move by ``+delta``.
    """
    h, w = probes.shape[-2], probes.shape[-1]
    num_rows, num_cols = tf.shape(obj)[0], tf.shape(obj)[1]
    rows = tf.clip_by_value(corners[:, 0:1] - 1 + tf.range(h + 2, dtype=tf.int32)[None, :],
                            0, num_rows - 1)
    cols = tf.clip_by_value(corners[:, 1:2] - 1 + tf.range(w + 2, dtype=tf.int32)[None, :],
                            0, num_cols - 1)
    wide = tf.gather(tf.reshape(obj, [-1]), rows[:, :, None] * num_cols + cols[:, None, :])
    # pixel distance of the difference: 2, or 1 at the object's border
    step_y = tf.cast(tf.maximum(rows[:, 2:] - rows[:, :-2], 1), tf.complex64)[:, :, None]
    step_x = tf.cast(tf.maximum(cols[:, 2:] - cols[:, :-2], 1), tf.complex64)[:, None, :]
    grad_y = (wide[:, 2:, 1:-1] - wide[:, :-2, 1:-1]) / step_y
    grad_x = (wide[:, 1:-1, 2:] - wide[:, 1:-1, :-2]) / step_x
    g_y = probes * grad_y[:, None]  # (B, M, H, W)
    g_x = probes * grad_x[:, None]

    def dot(a, b):
        return tf.reduce_sum(tf.math.real(tf.math.conj(a) * b), axis=[1, 2, 3])  # (B,)

    h_yy, h_xx, h_xy = dot(g_y, g_y), dot(g_x, g_x), dot(g_y, g_x)
    b_y, b_x = dot(g_y, dpsi), dot(g_x, dpsi)
    damping = 1e-3 * 0.5 * (h_yy + h_xx) + 1e-30
    h_yy, h_xx = h_yy + damping, h_xx + damping
    det = h_yy * h_xx - h_xy * h_xy
    delta_y = (h_xx * b_y - h_xy * b_x) / det
    delta_x = (h_yy * b_x - h_xy * b_y) / det
    return tf.stack([delta_y, delta_x], axis=-1)


def _offset_residuals(obj, probe, positions, offsets, amplitudes, mask, transfer, limit):
    """Amplitude misfit of each pattern with its window moved by whole-pixel offsets.

    Args:
        obj: (Y, X) complex64 object.
        probe: (M, H, W) complex64 probe modes.
        positions: (B, 2) float32 positions; the window of pattern b is at
            ``round(R_b) + offset`` (clipped inside the object) with the probe shifted by the
            remainder ``R_b - round(R_b)``.
        offsets: (K, 2) float32 whole-pixel offsets (y, x).
        amplitudes, mask, transfer: as in ``_pie_batch`` ((B, H, W), (H, W), None or (H, W)).
        limit: (2,) float32 largest corner.

    Returns:
        (B, K) float32 ``sum mask (sqrt I - |Psi|)^2`` for every pattern and offset.
    """
    h, w = probe.shape[-2], probe.shape[-1]
    num_cols = tf.shape(obj)[1]
    flat_obj = tf.reshape(obj, [-1])
    corners0 = tf.clip_by_value(tf.round(positions), 0.0, limit)
    lit = fourier_shift(probe[None], (positions - corners0)[:, None, :])  # (B, M, H, W)
    norm = tf.constant(1.0 / np.sqrt(h * w), tf.complex64)

    def misfit(offset):
        corners = tf.cast(tf.clip_by_value(corners0 + offset, 0.0, limit), tf.int32)
        rows = corners[:, 0:1] + tf.range(h, dtype=tf.int32)[None, :]
        cols = corners[:, 1:2] + tf.range(w, dtype=tf.int32)[None, :]
        patches = tf.gather(flat_obj, rows[:, :, None] * num_cols + cols[:, None, :])
        spectrum = tf.signal.fft2d(lit * patches[:, None])
        detector = spectrum * norm if transfer is None else tf.signal.ifft2d(spectrum * transfer)
        model = tf.sqrt(tf.reduce_sum(tf.math.real(detector * tf.math.conj(detector)), axis=1))
        return tf.reduce_sum(tf.square(amplitudes - model) * mask, axis=[-2, -1])  # (B,)

    return tf.transpose(tf.map_fn(misfit, offsets, fn_output_signature=tf.float32))


def _pie_batch(obj, probe, corners, amplitudes, weights, valid, transfer, mask,
               object_step, probe_step, regularisation, update_probe: bool, relaxation=None,
               estimate_shift: bool = False, fractions=None):
    """One vectorised PIE update from a batch of B patterns.

    Args:
        obj: (Y, X) complex64 object.
        probe: (M, H, W) complex64 probe modes.
        corners: (B, 2) int32 top-left corners (y, x).
        amplitudes: (B, H, W) float32 measured sqrt(I) in FFT order (far field) or as measured
            (near field).
        weights: (B,) float32 per-pattern step weights.
        valid: (B,) float32, 0 for padding entries of the last batch.
        transfer: None (far field) or (H, W) complex64 angular-spectrum transfer function.
        mask: (H, W) float32 valid-pixel mask (1 = valid) in the same order as ``amplitudes``.
        relaxation: None (exact modulus projection) or (B,) float32 Poisson noise-bound
            factors rho_j (Fourier relaxation, module docstring).
        estimate_shift: also return the (B, 2) float32 position shifts of ``_position_shifts``
            (from the object and probe before this update).
        fractions: None, or (B, 2) float32 sub-pixel remainders f_b in [-0.5, 0.5]: window b is
            lit by the probe shifted to ``P(r - f_b)`` (Fourier shift), and its probe update is
            shifted back by ``-f_b`` (the rPIE probe denominator stays on the window grid).

    Returns:
        ``(obj, probe, error_numerator, error_denominator, amplitude_loss_sum)``, and the
        shifts as a sixth element with ``estimate_shift``.
    """
    h, w = probe.shape[-2], probe.shape[-1]
    num_cols = tf.shape(obj)[1]
    rows = corners[:, 0:1] + tf.range(h, dtype=tf.int32)[None, :]
    cols = corners[:, 1:2] + tf.range(w, dtype=tf.int32)[None, :]
    flat_index = rows[:, :, None] * num_cols + cols[:, None, :]  # (B, H, W)
    flat_obj = tf.reshape(obj, [-1])
    patches = tf.gather(flat_obj, flat_index)  # (B, H, W)
    if fractions is None:
        lit = probe[None]  # (1, M, H, W)
    else:  # the probe at corner + fraction: P(r - f) in the window (Fourier shift)
        lit = fourier_shift(probe[None], fractions[:, None, :])  # (B, M, H, W)
    psi = lit * patches[:, None]  # (B, M, H, W)
    norm = tf.constant(1.0 / np.sqrt(h * w), tf.complex64)
    spectrum = tf.signal.fft2d(psi)
    if transfer is None:
        detector = spectrum * norm  # orthonormal FFT, FFT order
    else:
        detector = tf.signal.ifft2d(spectrum * transfer)
    model_intensity = tf.reduce_sum(tf.math.real(detector * tf.math.conj(detector)), axis=1)
    model_amplitude = tf.sqrt(model_intensity)  # (B, H, W)
    residual = (amplitudes - model_amplitude) * mask
    error_num = tf.reduce_sum(tf.square(residual) * valid[:, None, None])
    error_den = tf.reduce_sum(tf.square(amplitudes) * mask * valid[:, None, None])
    dpsi = _exit_wave_change(detector, amplitudes, model_intensity, mask, relaxation, transfer,
                             norm)
    shifts = _position_shifts(obj, lit, corners, dpsi) if estimate_shift else None
    step_weights = tf.cast(weights * valid, tf.complex64)[:, None, None]
    new_obj = _object_update(obj, flat_index, lit, dpsi, step_weights, valid, object_step,
                             regularisation)
    if update_probe:  # with the old object patches
        probe = _probe_update(probe, patches, dpsi, step_weights, valid, fractions, probe_step,
                              regularisation)
    loss_sum = tf.reduce_sum(tf.square(residual), axis=[-2, -1])
    result = (new_obj, probe, error_num, error_den, tf.reduce_sum(loss_sum * valid))
    return result + (shifts,) if estimate_shift else result


def _exit_wave_change(detector, amplitudes, model_intensity, mask, relaxation, transfer, norm):
    """(B, M, H, W) complex64 ``dpsi``: the exit-wave change of the (relaxed) modulus projection
    of the (B, M, H, W) detector waves onto the measured (B, H, W) amplitudes (module
    docstring of ``training.epie``)."""
    model_amplitude = tf.sqrt(model_intensity)
    target = amplitudes
    if relaxation is not None:
        # project the modelled amplitudes onto the Poisson noise ball around the data
        deviation = (model_amplitude - amplitudes) * mask
        excess = tf.reduce_sum(tf.square(deviation), axis=[-2, -1])  # (B,)
        bound = relaxation * tf.reduce_sum(
            mask * poisson_amplitude_variance(model_intensity), axis=[-2, -1])
        shrink = tf.where(excess > bound, tf.sqrt(bound / tf.maximum(excess, 1e-30)), 1.0)
        target = amplitudes + deviation * shrink[:, None, None]
    # Psi' - Psi = Psi (a' / |Psi| - 1) on valid pixels (a' = sqrt(I) without relaxation)
    ratio = mask * (target / tf.maximum(model_amplitude, 1e-12) - 1.0)
    change = detector * tf.cast(ratio, tf.complex64)[:, None]
    if transfer is None:
        return tf.signal.ifft2d(change) / norm
    return tf.signal.ifft2d(tf.signal.fft2d(change) * tf.math.conj(transfer))


def _object_update(obj, flat_index, lit, dpsi, step_weights, valid, object_step,
                   regularisation):
    """(Y, X) complex64 object after the rPIE object step of a batch (``flat_index``: (B, H, W)
    int32 flat object indices of the windows; ``lit``: the probe on them)."""
    flat_obj = tf.reshape(obj, [-1])
    probe_power = tf.reduce_sum(tf.math.real(lit * tf.math.conj(lit)), axis=1)  # (B or 1, H, W)
    numerator = tf.reduce_sum(tf.math.conj(lit) * dpsi, axis=1) * step_weights
    index = tf.reshape(flat_index, [-1, 1])
    step = tf.cast(object_step, tf.complex64)
    if flat_index.shape[0] == 1:
        # sequential fast path: S = |P|^2 on the window, no object-sized temporaries
        denominator = ((1.0 - regularisation) * probe_power
                       + regularisation * tf.reduce_max(probe_power))
    else:
        # summed illumination S(r) of the batch (real, object-sized), read back on the windows;
        # the complex numerators are scatter-added straight into the object
        illumination = tf.scatter_nd(
            index, tf.reshape(probe_power * valid[:, None, None], [-1]), tf.shape(flat_obj))
        local = tf.gather(illumination, flat_index)  # (B, H, W)
        denominator = ((1.0 - regularisation) * local
                       + regularisation * tf.reduce_max(illumination))
    update = numerator / tf.cast(tf.maximum(denominator, 1e-30), tf.complex64)
    new_flat = tf.tensor_scatter_nd_add(flat_obj, index, tf.reshape(step * update, [-1]))
    return tf.reshape(new_flat, tf.shape(obj))


def _probe_update(probe, patches, dpsi, step_weights, valid, fractions, probe_step,
                  regularisation):
    """(M, H, W) complex64 probe after the rPIE probe step from the (B, H, W) object patches
    before the object update (shifted back to the probe's frame by ``-fractions``)."""
    patch_power = tf.reduce_sum(tf.math.real(patches * tf.math.conj(patches))
                                * valid[:, None, None], axis=0)  # (H, W)
    probe_num = tf.math.conj(patches)[:, None] * dpsi * step_weights[:, None]  # (B, M, H, W)
    if fractions is not None:  # back to the probe's own frame
        probe_num = fourier_shift(probe_num, -fractions[:, None, :])
    probe_num = tf.reduce_sum(probe_num, axis=0)  # (M, H, W)
    probe_den = ((1.0 - regularisation) * patch_power
                 + regularisation * tf.reduce_max(patch_power))
    return probe + tf.cast(probe_step, tf.complex64) * probe_num / tf.cast(
        tf.maximum(probe_den, 1e-30), tf.complex64)[None]

"""ePIE, rPIE and mPIE as custom training loops over a ``PtychoModel``'s object and probe.

The PIE family updates the object and probe with closed-form steps instead of gradients. For a
pattern j with measured intensity ``I_j`` at the integer corner ``R_j`` (exit wave of mode m:
``psi_m = P_m O(r + R_j)``, propagated ``Psi_m = Prop{psi_m}``):

* Fourier constraint (Maiden & Rodenburg, Ultramicroscopy 109, 1256 (2009), Eq. 5 / Barutcu et
  al. Eq. 11; Thibault & Menzel 2013 for mixed states):
  ``Psi'_m = sqrt(I_j) Psi_m / sqrt(sum_m |Psi_m|^2)`` on valid detector pixels (unchanged on
  masked pixels), ``dpsi_m = Prop^-1{Psi'_m - Psi_m}``.
* Object (rPIE, Maiden, Johnson & Li, Optica 4, 736 (2017), Eq. 6; ``a = 1`` is ePIE Eq. 6 of
  the 2009 paper / Barutcu et al. Eq. 12):
  ``O <- O + alpha w_j sum_m conj(P_m) dpsi_m / [(1 - a) sum_m |P_m|^2 + a max sum_m |P_m|^2]``
* Probe (same form with the old object patch):
  ``P_m <- P_m + beta w_j conj(O_j) dpsi_m / [(1 - a) |O_j|^2 + a max |O_j|^2]``
* mPIE (same Optica paper, Eqs. 8-9): after every epoch (``T`` = the number of patterns)
  ``v <- eta v + (O - O_prev)``, ``O <- O + eta v``, ``O_prev <- O`` (and the same for the probe).

``w_j`` is a per-pattern weight (Keras ``sample_weight``; the oversampling algorithm uses 1 for
measured and 1/w for simulated patterns; 0 switches a pattern off).

Fourier relaxation for counting noise (optional, ``fourier_relaxation = rho > 0``; a relaxed
modulus projection like ptypy's ``fourier_relax_factor`` (Enders & Thibault, Proc. R. Soc. A
472, 20160640 (2016)), but with a per-pattern Poisson bound instead of a fixed fraction of the
power): the exact modulus projection makes ePIE fit the noise of measured counts. With
relaxation the modelled amplitudes ``a = |Psi|`` of pattern j are moved only onto the ball
``sum_k (a'_k - sqrt I_k)^2 <= B_j`` around the data, ``B_j = rho sum_k f(a_k^2)``, where
``f(lambda) = E[(sqrt X - sqrt lambda)^2]`` for ``X ~ Poisson(lambda)`` (about 1/4 for
lambda >> 1, 2 lambda for lambda << 1; tabulated by ``poisson_amplitude_variance``):
``a' = sqrt I + (a - sqrt I) min(1, sqrt(B_j / E_j))`` with ``E_j = sum_k (a_k - sqrt I_k)^2``,
and ``Psi' = a' Psi / a``. A pattern already within its noise bound is left alone;
``rho = 0`` is the exact projection above. ``rho`` can be scaled per pattern
(``fit(..., relaxation_weight=)``; the oversampling loop relaxes only the measured patterns,
its simulated ones are noise-free).

Vectorised mode: ``batch_size = B`` patterns are updated at once from the same object; their
numerators are scatter-added and the denominators use the summed illumination
``S(r) = sum_b sum_m |P_m(r - R_b)|^2`` (and ``sum_b |O_b|^2`` for the probe). With ``B = 1``
this is exactly the sequential algorithm, and with non-overlapping windows in a batch it gives
the same object update as the sequential order (each pixel sees one pattern). Pattern order is
random (seeded) every epoch.

Positions are rounded to whole pixels (as PtyLab's PIE engines do); positions and distance are
not refined by these engines. The object must be a ``PixelObject``: ePIE updates pixels. With a
constrained parametrisation (phase-only, amplitude-only, amplitude-phase) the complex update is
projected onto it after every epoch.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from adptycho.errors import AdptychoError, DataError
from adptycho.objects.pixels import PixelObject

__all__ = ["PIE_ENGINES", "PIESettings", "PIETrainer", "pie_settings", "ifftshift_patterns",
           "poisson_amplitude_variance"]

PIE_ENGINES = ("epie", "rpie", "mpie")

# Engine defaults: ePIE alpha = beta = 1 (Maiden & Rodenburg 2009); rPIE regularisation a = 0.1
# (Maiden et al. 2017 recommend 0.05-0.25); mPIE = rPIE + momentum eta = 0.7 once per epoch
# (PtyLab's mPIE friction; the Optica paper uses eta ~ 0.7-0.9).
_DEFAULTS = {
    "epie": {"regularisation": 1.0, "momentum": 0.0},
    "rpie": {"regularisation": 0.1, "momentum": 0.0},
    "mpie": {"regularisation": 0.1, "momentum": 0.7},
}


@dataclasses.dataclass(frozen=True)
class PIESettings:
    """Settings of a PIE engine.

    Attributes:
        engine: ``epie``, ``rpie`` or ``mpie``.
        object_step: alpha, the object step size (ePIE Eq. 6; 1 in Maiden & Rodenburg 2009).
        probe_step: beta, the probe step size.
        regularisation: rPIE's ``a`` in [0, 1] (1 = ePIE's max|P|^2 denominator).
        momentum: mPIE's eta in [0, 1) (0 = none), applied once per epoch.
        batch_size: patterns per vectorised update (1 = sequential).
        refine_probe: update the probe.
        probe_start_epoch: first epoch (0-based) at which the probe moves.
        fourier_relaxation: rho >= 0, the Poisson noise bound of the Fourier constraint in
            units of its expected value (0 = exact modulus projection; 1 = stop at the
            expected noise level; see the module docstring).
    """

    engine: str = "epie"
    object_step: float = 1.0
    probe_step: float = 1.0
    regularisation: float = 1.0
    momentum: float = 0.0
    batch_size: int = 1
    refine_probe: bool = True
    probe_start_epoch: int = 0
    fourier_relaxation: float = 0.0

    def __post_init__(self):
        if self.engine not in PIE_ENGINES:
            raise AdptychoError(f"unknown PIE engine {self.engine!r}; choose from {', '.join(PIE_ENGINES)}")
        for name in ("object_step", "probe_step"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise AdptychoError(f"{name} must be a finite number >= 0, got {value}")
        if not 0.0 <= self.regularisation <= 1.0:
            raise AdptychoError(f"regularisation (rPIE alpha) must be in [0, 1], got {self.regularisation}")
        if not 0.0 <= self.momentum < 1.0:
            raise AdptychoError(f"momentum (mPIE eta) must be in [0, 1), got {self.momentum}")
        if int(self.batch_size) < 1:
            raise AdptychoError(f"batch_size must be at least 1, got {self.batch_size}")
        if int(self.probe_start_epoch) < 0:
            raise AdptychoError(f"probe_start_epoch must be >= 0, got {self.probe_start_epoch}")
        if not (np.isfinite(self.fourier_relaxation) and self.fourier_relaxation >= 0):
            raise AdptychoError("fourier_relaxation must be a finite number >= 0, got "
                                f"{self.fourier_relaxation}")


def pie_settings(engine: str = "epie", **overrides) -> PIESettings:
    """``PIESettings`` with the engine's defaults; ``None`` values in ``overrides`` are ignored."""
    if engine not in PIE_ENGINES:
        raise AdptychoError(f"unknown PIE engine {engine!r}; choose from {', '.join(PIE_ENGINES)}")
    values = {"engine": engine, **_DEFAULTS[engine]}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return PIESettings(**values)


def ifftshift_patterns(patterns: np.ndarray) -> np.ndarray:
    """(..., H, W) centred far-field arrays -> FFT order (zero frequency at [0, 0])."""
    return np.fft.ifftshift(patterns, axes=(-2, -1))


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


def _pie_batch(obj, probe, corners, amplitudes, weights, valid, transfer, mask,
               object_step, probe_step, regularisation, update_probe: bool, relaxation=None):
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

    Returns:
        ``(obj, probe, error_numerator, error_denominator, amplitude_loss_sum)``.
    """
    h, w = probe.shape[-2], probe.shape[-1]
    num_cols = tf.shape(obj)[1]
    rows = corners[:, 0:1] + tf.range(h, dtype=tf.int32)[None, :]
    cols = corners[:, 1:2] + tf.range(w, dtype=tf.int32)[None, :]
    flat_index = rows[:, :, None] * num_cols + cols[:, None, :]  # (B, H, W)
    flat_obj = tf.reshape(obj, [-1])
    patches = tf.gather(flat_obj, flat_index)  # (B, H, W)
    psi = probe[None] * patches[:, None]  # (B, M, H, W)
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
        dpsi = tf.signal.ifft2d(change) / norm
    else:
        dpsi = tf.signal.ifft2d(tf.signal.fft2d(change) * tf.math.conj(transfer))

    step_weights = tf.cast(weights * valid, tf.complex64)[:, None, None]
    # -- object -------------------------------------------------------------------------
    probe_power = tf.reduce_sum(tf.math.real(probe * tf.math.conj(probe)), axis=0)  # (H, W)
    numerator = tf.reduce_sum(tf.math.conj(probe)[None] * dpsi, axis=1) * step_weights
    index = tf.reshape(flat_index, [-1, 1])
    step = tf.cast(object_step, tf.complex64)
    if corners.shape[0] == 1:
        # sequential fast path: S = |P|^2 on the window, no object-sized temporaries
        denominator = ((1.0 - regularisation) * probe_power
                       + regularisation * tf.reduce_max(probe_power))
        update = numerator / tf.cast(tf.maximum(denominator, 1e-30), tf.complex64)[None]
        new_flat = tf.tensor_scatter_nd_add(flat_obj, index, tf.reshape(step * update, [-1]))
    else:
        # summed illumination S(r) of the batch (real, object-sized), read back on the windows;
        # the complex numerators are scatter-added straight into the object
        illumination = tf.scatter_nd(
            index, tf.reshape(probe_power[None] * valid[:, None, None], [-1]), tf.shape(flat_obj))
        local = tf.gather(illumination, flat_index)  # (B, H, W)
        denominator = ((1.0 - regularisation) * local
                       + regularisation * tf.reduce_max(illumination))
        update = numerator / tf.cast(tf.maximum(denominator, 1e-30), tf.complex64)
        new_flat = tf.tensor_scatter_nd_add(flat_obj, index, tf.reshape(step * update, [-1]))
    new_obj = tf.reshape(new_flat, tf.shape(obj))
    # -- probe (with the old object patches) ----------------------------------------------
    if update_probe:
        patch_power = tf.reduce_sum(tf.math.real(patches * tf.math.conj(patches))
                                    * valid[:, None, None], axis=0)  # (H, W)
        probe_num = tf.reduce_sum(tf.math.conj(patches)[:, None] * dpsi * step_weights[:, None],
                                  axis=0)  # (M, H, W)
        probe_den = ((1.0 - regularisation) * patch_power
                     + regularisation * tf.reduce_max(patch_power))
        probe = probe + tf.cast(probe_step, tf.complex64) * probe_num / tf.cast(
            tf.maximum(probe_den, 1e-30), tf.complex64)[None]
    loss_sum = tf.reduce_sum(tf.square(residual), axis=[-2, -1])
    return new_obj, probe, error_num, error_den, tf.reduce_sum(loss_sum * valid)


class PIETrainer:
    """Runs a PIE engine on a ``PtychoModel``, reading and writing its object and probe.

    Args:
        model: a ``PtychoModel`` whose ``object_representation`` is a ``PixelObject``.
        settings: ``PIESettings`` (or use ``pie_settings(engine, ...)``).
        jit_compile: XLA-compile the epoch loop.

    Example::

        trainer = PIETrainer(model, pie_settings("rpie", batch_size=1))
        history = trainer.fit(scan.patterns, epochs=50, sample_weight=None, seed=0)
    """

    def __init__(self, model, settings: Optional[PIESettings] = None, jit_compile: bool = True):
        if not isinstance(model.object_representation, PixelObject):
            raise AdptychoError(
                "the PIE engines update object pixels: they need a PixelObject, got "
                f"{type(model.object_representation).__name__} (use the adam engine, or pass "
                "its transmission() as the initial object of a pixel model)")
        self.model = model
        self.settings = settings or PIESettings()
        self.jit_compile = bool(jit_compile)
        self._velocity = None
        self._epoch_fns = {}

    # -- model state -------------------------------------------------------------------
    def corners(self) -> np.ndarray:
        """(N, 2) int32 window corners: the model's current positions rounded to whole pixels."""
        return np.round(self.model.get_positions()).astype(np.int32)

    def _read_state(self):
        obj = self.model.object_representation.transmission()
        return tf.identity(obj), tf.identity(self.model.probe_tensor())

    def _write_state(self, obj, probe, write_probe: bool):
        representation = self.model.object_representation
        if representation.parametrisation == "complex":
            representation._parts["real"].assign(tf.math.real(obj))
            representation._parts["imag"].assign(tf.math.imag(obj))
        else:
            representation.assign(obj.numpy())
        if write_probe:
            scale = self.model.probe_scale
            self.model.probe_real.assign(tf.math.real(probe) / scale)
            self.model.probe_imag.assign(tf.math.imag(probe) / scale)

    def _epoch_function(self, update_probe: bool):
        relax = self.settings.fourier_relaxation > 0
        key = (bool(update_probe), relax)
        if key in self._epoch_fns:
            return self._epoch_fns[key]
        s = self.settings
        transfer = self.model.transfer_function()
        transfer = None if transfer is None else tf.constant(transfer)

        def epoch(obj, probe, order, valid, all_corners, amplitudes, weights, mask, relaxation):
            num_batches = tf.shape(order)[0]

            def body(i, obj, probe, e_num, e_den, loss):
                idx = order[i]
                obj, probe, n, d, l = _pie_batch(
                    obj, probe, tf.gather(all_corners, idx), tf.gather(amplitudes, idx),
                    tf.gather(weights, idx), valid[i], transfer, mask,
                    s.object_step, s.probe_step, s.regularisation, key[0],
                    tf.gather(relaxation, idx) if relax else None)
                return i + 1, obj, probe, e_num + n, e_den + d, loss + l

            zero = tf.constant(0.0, tf.float32)
            _, obj, probe, e_num, e_den, loss = tf.while_loop(
                lambda i, *_: i < num_batches, body,
                (tf.constant(0, tf.int32), obj, probe, zero, zero, zero))
            return obj, probe, e_num, e_den, loss

        fn = tf.function(epoch, jit_compile=self.jit_compile, reduce_retracing=True)
        self._epoch_fns[key] = fn
        return fn

    # -- public -------------------------------------------------------------------------
    def prepare(self, patterns, sample_weight=None):
        """Validate and convert data once: returns (amplitudes, weights, mask) tensors."""
        patterns = np.asarray(patterns)
        n = self.model.num_patterns
        if patterns.ndim != 3 or patterns.shape[0] != n or patterns.shape[1:] != self.model.detector_shape:
            raise DataError(f"patterns must have shape ({n}, {self.model.detector_shape[0]}, "
                            f"{self.model.detector_shape[1]}), got {patterns.shape}")
        if not np.isfinite(patterns).all():
            raise DataError("patterns contain non-finite values")
        amplitudes = np.sqrt(np.maximum(patterns, 0.0)).astype(np.float32)
        mask = getattr(self.model, "_mask", None)
        mask = np.ones(self.model.detector_shape, np.float32) if mask is None else mask.numpy()
        if self.model.near_field is None:
            amplitudes = ifftshift_patterns(amplitudes)
            mask = ifftshift_patterns(mask)
        if sample_weight is None:
            weights = np.ones(n, np.float32)
        else:
            weights = np.asarray(sample_weight, np.float32).reshape(-1)
            if weights.shape != (n,):
                raise DataError(f"sample_weight must have shape ({n},), got {np.shape(sample_weight)}")
            if not (np.isfinite(weights).all() and np.all(weights >= 0)):
                raise DataError("sample_weight must be finite and >= 0")
        return (tf.constant(amplitudes), tf.constant(weights), tf.constant(mask, tf.float32))

    def run_epochs(self, obj, probe, prepared, epochs: int, subset=None, seed: int = 0,
                   update_probe: bool = False, relaxation=None):
        """Run PIE epochs on given object/probe tensors without touching the model.

        Used by searches that try many starting points (``adptycho.probe_search``).

        Args:
            obj: (Y, X) complex64 starting object.
            probe: (M, H, W) complex64 starting probe.
            prepared: ``prepare(patterns)``'s tuple.
            epochs: passes over ``subset``.
            subset: indices of the patterns to use (default all), visited in a seeded random
                order each epoch.
            update_probe: update the probe as well.
            relaxation: (N,) float32 Poisson noise-bound factors (default: the settings').

        Returns:
            ``(obj, probe, residuals)``: the final tensors and the relative amplitude residual
            ``sum (sqrt I - |Psi|)^2 / sum I`` of each epoch (before its updates).
        """
        amplitudes, weights, mask = prepared
        n = self.model.num_patterns
        subset = np.arange(n) if subset is None else np.asarray(subset, np.int64)
        if relaxation is None:
            relaxation = np.full(n, self.settings.fourier_relaxation, np.float32)
        relaxation = tf.constant(np.asarray(relaxation, np.float32))
        all_corners = tf.constant(self.corners())
        valid = tf.ones((len(subset), 1), tf.float32)
        fn = self._epoch_function(bool(update_probe))
        rng = np.random.default_rng(seed)
        obj = tf.convert_to_tensor(obj, tf.complex64)
        probe = tf.convert_to_tensor(probe, tf.complex64)
        residuals = []
        for _ in range(int(epochs)):
            order = rng.permutation(subset).astype(np.int32).reshape(-1, 1)
            obj, probe, e_num, e_den, _ = fn(obj, probe, tf.constant(order), valid, all_corners,
                                             amplitudes, weights, mask, relaxation)
            residuals.append(float(e_num.numpy()) / max(float(e_den.numpy()), 1e-30))
        return obj, probe, residuals

    def fit(self, patterns, epochs: int, sample_weight=None, seed: int = 0,
            callback: Optional[Callable[[int, dict], None]] = None, verbose: int = 0,
            initial_epoch: int = 0, relaxation_weight=None) -> dict:
        """Run ``epochs`` passes over the data.

        Args:
            patterns: (N, H, W) measured intensities (centred far field, as in ``ScanData``).
            epochs: passes over the data.
            sample_weight: (N,) non-negative per-pattern weights (default 1).
            seed: seeds the random pattern order of every epoch.
            callback: called as ``callback(epoch, logs)`` after every epoch.
            verbose: 1 prints one line per epoch.
            initial_epoch: epoch counter start (for the probe start epoch and resumed runs).
            relaxation_weight: (N,) non-negative factors of ``settings.fourier_relaxation``
                per pattern (default 1; 0 = exact projection for that pattern, e.g. for
                noise-free simulated patterns).

        Returns:
            ``{"loss": [...], "residual": [...]}`` per epoch: the amplitude loss
            ``mean_j sum (sqrt I_j - |Psi_j|)^2`` and the relative residual
            ``sum (sqrt I - |Psi|)^2 / sum I``, both of the exit waves before each update.
        """
        if int(epochs) < 0:
            raise AdptychoError(f"epochs must be >= 0, got {epochs}")
        amplitudes, weights, mask = self.prepare(patterns, sample_weight)
        s = self.settings
        n = self.model.num_patterns
        if relaxation_weight is None:
            relaxation = np.full(n, s.fourier_relaxation, np.float32)
        else:
            relaxation = np.asarray(relaxation_weight, np.float32).reshape(-1)
            if relaxation.shape != (n,) or not (np.isfinite(relaxation).all()
                                                and np.all(relaxation >= 0)):
                raise DataError(f"relaxation_weight must be ({n},) finite values >= 0, got "
                                f"shape {np.shape(relaxation_weight)}")
            relaxation = relaxation * np.float32(s.fourier_relaxation)
        relaxation = tf.constant(relaxation)
        batch = min(int(s.batch_size), n)
        num_batches = int(np.ceil(n / batch))
        all_corners = tf.constant(self.corners())
        valid = np.zeros(num_batches * batch, np.float32)
        valid[:n] = 1.0
        valid = tf.constant(valid.reshape(num_batches, batch))
        rng = np.random.default_rng(seed)
        history = {"loss": [], "residual": []}
        obj, probe = self._read_state()
        previous = (obj, probe)
        if self._velocity is None:
            self._velocity = (tf.zeros_like(obj), tf.zeros_like(probe))
        for epoch in range(initial_epoch, initial_epoch + int(epochs)):
            update_probe = s.refine_probe and epoch >= s.probe_start_epoch and s.probe_step > 0
            order = np.zeros(num_batches * batch, np.int32)
            order[:n] = rng.permutation(n)
            fn = self._epoch_function(update_probe)
            obj, probe, e_num, e_den, loss = fn(
                obj, probe, tf.constant(order.reshape(num_batches, batch)), valid, all_corners,
                amplitudes, weights, mask, relaxation)
            if s.momentum > 0:
                v_obj = s.momentum * self._velocity[0] + (obj - previous[0])
                obj = obj + s.momentum * v_obj
                v_probe = self._velocity[1]
                if update_probe:
                    v_probe = s.momentum * v_probe + (probe - previous[1])
                    probe = probe + s.momentum * v_probe
                self._velocity = (v_obj, v_probe)
                previous = (obj, probe)
            self._write_state(obj, probe, update_probe)
            if s.momentum > 0 or self.model.object_representation.parametrisation != "complex":
                obj, probe = self._read_state()  # projected on the parametrisation
                previous = (obj, probe)
            logs = {"loss": float(loss.numpy()) / n,
                    "residual": float(e_num.numpy()) / max(float(e_den.numpy()), 1e-30)}
            if not np.isfinite(logs["loss"]):
                raise AdptychoError(f"the {s.engine} engine diverged at epoch {epoch} (non-finite "
                                    "error); lower the step sizes or raise the regularisation")
            history["loss"].append(logs["loss"])
            history["residual"].append(logs["residual"])
            if verbose:
                print(f"{s.engine} epoch {epoch + 1}: loss {logs['loss']:.6g} "
                      f"residual {logs['residual']:.6g}", flush=True)
            if callback is not None:
                callback(epoch, logs)
        return history

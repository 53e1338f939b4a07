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

Positions: the windows sit at the positions rounded to whole pixels (as PtyLab's PIE engines
do); the distance is not refined. With ``position_correction`` the positions are refined as
well (``training.pie_positions``: Gauss-Newton shifts from the exit-wave change, momentum,
gauges and a whole-pixel search).

The object must be a ``PixelObject``: ePIE updates pixels. With a
constrained parametrisation (phase-only, amplitude-only, amplitude-phase) the complex update is
projected onto it after every epoch.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from adptycho.errors import AdptychoError, DataError
from adptycho.objects.pixels import PixelObject
from adptycho.training.pie_positions import PIEPositionCorrection
from adptycho.training.pie_settings import PIE_ENGINES, PIESettings, pie_settings
from adptycho.training.pie_kernels import (_pie_batch, _position_shifts,  # noqa: F401
                                           poisson_amplitude_variance)

__all__ = ["PIE_ENGINES", "PIESettings", "PIETrainer", "pie_settings", "ifftshift_patterns",
           "poisson_amplitude_variance"]

def ifftshift_patterns(patterns: np.ndarray) -> np.ndarray:
    """(..., H, W) centred far-field arrays -> FFT order (zero frequency at [0, 0])."""
    return np.fft.ifftshift(patterns, axes=(-2, -1))


class PIETrainer(PIEPositionCorrection):
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
        self._power_cap = None  # photons; set by prepare (PIESettings.probe_power_cap)
        self._position_velocity = None
        self._search_fn = None
        self._epoch_fns = {}

    # -- model state -------------------------------------------------------------------
    def corners(self) -> np.ndarray:
        """(N, 2) int32 window corners: the model's current positions rounded to whole pixels
        (kept inside the object)."""
        return np.clip(np.round(self.model.get_positions()), 0,
                       self._position_limit()).astype(np.int32)

    def _read_state(self):
        return tf.identity(self.model.object_tensor()), tf.identity(self.model.probe_tensor())

    def _write_state(self, obj, probe, write_probe: bool):
        self.model.assign_object(obj)
        if write_probe:
            self.model.assign_probe(probe)

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
        mask = self.model.detector_mask
        cap = self.settings.probe_power_cap
        self._power_cap = (cap * float(np.max(np.sum(np.maximum(patterns, 0.0), axis=(1, 2))))
                           if cap > 0 and mask is None else None)
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

        Used by searches that try many starting points (``adptycho.probe_search``). The
        windows are the model's rounded positions; ``settings.position_correction`` does not
        apply here (positions are not moved).

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

    def _relaxation(self, relaxation_weight) -> tf.Tensor:
        """(N,) float32 Poisson noise-bound factors: ``fourier_relaxation`` times the weights."""
        n = self.model.num_patterns
        rho = self.settings.fourier_relaxation
        if relaxation_weight is None:
            return tf.constant(np.full(n, rho, np.float32))
        relaxation = np.asarray(relaxation_weight, np.float32).reshape(-1)
        if relaxation.shape != (n,) or not (np.isfinite(relaxation).all()
                                            and np.all(relaxation >= 0)):
            raise DataError(f"relaxation_weight must be ({n},) finite values >= 0, got "
                            f"shape {np.shape(relaxation_weight)}")
        return tf.constant(relaxation * np.float32(rho))

    def _end_epoch(self, obj, probe, previous, update_probe: bool):
        """mPIE's momentum (once per epoch), then the state written into the model (and read
        back, projected on the parametrisation, where that can change it). Returns
        ``(obj, probe, previous)``."""
        s = self.settings
        if s.momentum > 0:
            v_obj = s.momentum * self._velocity[0] + (obj - previous[0])
            obj = obj + s.momentum * v_obj
            v_probe = self._velocity[1]
            if update_probe:
                v_probe = s.momentum * v_probe + (probe - previous[1])
                probe = probe + s.momentum * v_probe
            self._velocity = (v_obj, v_probe)
            previous = (obj, probe)
        if update_probe and self._power_cap is not None:
            power = float(tf.reduce_sum(tf.abs(probe) ** 2).numpy())
            if power > self._power_cap:  # PIESettings.probe_power_cap
                probe = probe * tf.cast(np.sqrt(self._power_cap / power), probe.dtype)
        self._write_state(obj, probe, update_probe)
        if s.momentum > 0 or self.model.object_representation.parametrisation != "complex":
            obj, probe = self._read_state()  # projected on the parametrisation
            previous = (obj, probe)
        return obj, probe, previous

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
            With ``settings.position_correction`` also ``"position_change"``: the RMS distance
            (pixels) of the positions from where this call started them; the refined
            positions are written into the model's ``position_corrections`` after every
            moving epoch, so ``model.get_positions()`` returns them (the mean position is
            kept).
        """
        if int(epochs) < 0:
            raise AdptychoError(f"epochs must be >= 0, got {epochs}")
        data = self.prepare(patterns, sample_weight)  # (amplitudes, weights, mask)
        s, n = self.settings, self.model.num_patterns
        relaxation = self._relaxation(relaxation_weight)
        valid = _valid_entries(n, min(int(s.batch_size), n))
        all_corners = tf.constant(self.corners())
        rng = np.random.default_rng(seed)
        history = {"loss": [], "residual": []}
        if s.position_correction:
            history["position_change"], history["position_jumps"] = [], []
            positions, start = self._position_start()
        obj, probe = self._read_state()
        previous = (obj, probe)
        if self._velocity is None:
            self._velocity = (tf.zeros_like(obj), tf.zeros_like(probe))
        for epoch in range(initial_epoch, initial_epoch + int(epochs)):
            update_probe = s.refine_probe and epoch >= s.probe_start_epoch and s.probe_step > 0
            order = _epoch_order(rng, n, valid.shape)
            if s.position_correction:
                obj, probe, e_num, e_den, loss, positions, jumps = self._position_epoch(
                    epoch, obj, probe, order, valid, positions, data, relaxation, update_probe,
                    start)
            else:
                obj, probe, e_num, e_den, loss = self._epoch_function(update_probe)(
                    obj, probe, order, valid, all_corners, *data, relaxation)
            obj, probe, previous = self._end_epoch(obj, probe, previous, update_probe)
            logs = self._epoch_logs(epoch, loss, e_num, e_den)
            if s.position_correction:
                logs.update(self._position_logs(positions, start, jumps))
            for name, value in logs.items():
                history[name].append(value)
            if verbose:
                print(f"{s.engine} epoch {epoch + 1}: loss {logs['loss']:.6g} "
                      f"residual {logs['residual']:.6g}"
                      + (f" position change {logs['position_change']:.3g} px"
                         if s.position_correction else ""), flush=True)
            if callback is not None:
                callback(epoch, logs)
        return history

    def _epoch_logs(self, epoch: int, loss, e_num, e_den) -> dict:
        """``{"loss", "residual"}`` of an epoch from its sums (one-line error if it diverged)."""
        logs = {"loss": float(loss.numpy()) / self.model.num_patterns,
                "residual": float(e_num.numpy()) / max(float(e_den.numpy()), 1e-30)}
        if not np.isfinite(logs["loss"]):
            raise AdptychoError(f"the {self.settings.engine} engine diverged at epoch {epoch} "
                                "(non-finite error); lower the step sizes or raise the "
                                "regularisation")
        return logs


def _valid_entries(n: int, batch: int) -> tf.Tensor:
    """(num_batches, batch) float32: 1 for the n pattern entries, 0 for the padding of the
    last batch."""
    num_batches = int(np.ceil(n / batch))
    valid = np.zeros(num_batches * batch, np.float32)
    valid[:n] = 1.0
    return tf.constant(valid.reshape(num_batches, batch))


def _epoch_order(rng, n: int, shape) -> tf.Tensor:
    """(num_batches, batch) int32 random pattern order of an epoch (padding entries 0)."""
    order = np.zeros(shape[0] * shape[1], np.int32)
    order[:n] = rng.permutation(n)
    return tf.constant(order.reshape(shape))

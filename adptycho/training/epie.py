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
do); the distance is not refined. With ``position_correction`` the trainer keeps float positions
``R_j`` (initialised from ``model.get_positions()``): pattern j is updated in the window at
``c_j = round(R_j)`` with the probe Fourier-shifted by the remainder ``f_j = R_j - c_j``
(``P_m(r - f_j)``, the model's sub-pixel convention; the probe update is shifted back by
``-f_j``), and after its update ``R_j`` moves by the Gauss-Newton shift that best explains the
exit-wave change ``dpsi`` as a translation of the object (the gradient position refinement of
Odstrcil, Menzel & Guizar-Sicairos, Opt. Express 26, 3108 (2018), as in PtychoShelves' and
tike's position solvers, there per axis; here the full 2x2 normal equations, see
``_position_shifts``):

``sum_l H_kl delta_l = b_k``,  ``H_kl = sum_m sum_r Re[conj(P_m d_k O_j) P_m d_l O_j]``,
``b_k = sum_m sum_r Re[conj(P_m d_k O_j) dpsi_m]``  (k, l in {y, x}),

``R_j <- R_j + clip(position_step delta_j, +-position_max_shift)``, from
``position_start_epoch`` on (``d_k O_j``: central differences of the object patch before the
update, ``P_m`` the shifted probe). After every moving epoch mPIE's momentum (Maiden et al.
2017, Eqs. 8-9) acts on the positions, ``v <- eta_R v + (R - R_prev)``, ``R <- R + eta_R v``
(``position_momentum``; it speeds up the slow collective modes), and the mean change of all
positions is removed (a common shift of all positions is a gauge of object and probe); while
the probe is refined the isotropic scale of the change about the centroid is removed as well
(scaling scan and object together is nearly equivalent to a curved probe, the Fresnel scaling
theorem, so with a free probe that mode is undetermined and drifts). The linearised step only
reaches about a pixel: every ``position_search_interval`` epochs each position is also tried
at the whole-pixel offsets within ``position_search_radius`` and jumps to the one with the
smallest amplitude misfit if it is more than 10% below the misfit in place (a deterministic
form of the trial positions of Maiden, Humphry, Sarahan, Kraus & Rodenburg, Ultramicroscopy
120, 64 (2012)). The refined positions are written into the model's ``position_corrections``
after every moving epoch.

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
from adptycho.training.pie_settings import PIE_ENGINES, PIESettings, pie_settings
from adptycho.training.pie_kernels import (_offset_residuals, _pie_batch,  # noqa: F401
                                           _position_shifts, poisson_amplitude_variance)

__all__ = ["PIE_ENGINES", "PIESettings", "PIETrainer", "pie_settings", "ifftshift_patterns",
           "poisson_amplitude_variance"]

def ifftshift_patterns(patterns: np.ndarray) -> np.ndarray:
    """(..., H, W) centred far-field arrays -> FFT order (zero frequency at [0, 0])."""
    return np.fft.ifftshift(patterns, axes=(-2, -1))


# a whole-pixel jump of a position (PIESettings.position_search_radius) needs a misfit this
# fraction below the misfit in place
_SEARCH_MARGIN = 0.1

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

    def _position_limit(self) -> np.ndarray:
        """(2,) float32 largest window corner (y, x) that keeps the probe window inside."""
        return np.array([self.model.object_shape[0] - self.model.detector_shape[0],
                         self.model.object_shape[1] - self.model.detector_shape[1]], np.float32)

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

    def _moving_epoch_function(self, update_probe: bool):
        """The epoch loop with position correction.

        ``epoch(obj, probe, order, valid, positions, move, amplitudes, weights, mask,
        relaxation) -> (obj, probe, e_num, e_den, loss, positions)``: ``positions`` (N, 2)
        float32; pattern j is updated in the window at ``round(R_j)`` with the probe
        Fourier-shifted by the remainder ``R_j - round(R_j)``, and then moved by
        ``move * clip(position_step delta_j, +-position_max_shift)`` (``move``: scalar float32,
        0 before ``position_start_epoch``).
        """
        relax = self.settings.fourier_relaxation > 0
        key = ("moving", bool(update_probe), relax)
        if key in self._epoch_fns:
            return self._epoch_fns[key]
        s = self.settings
        transfer = self.model.transfer_function()
        transfer = None if transfer is None else tf.constant(transfer)
        limit = tf.constant(self._position_limit())
        upper = limit + 0.49  # rounds to the last corner that keeps the window inside

        def epoch(obj, probe, order, valid, positions, move, amplitudes, weights, mask,
                  relaxation):
            num_batches = tf.shape(order)[0]

            def body(i, obj, probe, e_num, e_den, loss, positions):
                idx = order[i]
                current = tf.gather(positions, idx)  # (B, 2)
                corners = tf.clip_by_value(tf.round(current), 0.0, limit)
                pattern_weights = tf.gather(weights, idx)
                obj, probe, n, d, l, shift = _pie_batch(
                    obj, probe, tf.cast(corners, tf.int32), tf.gather(amplitudes, idx),
                    pattern_weights, valid[i], transfer, mask, s.object_step, s.probe_step,
                    s.regularisation, key[1], tf.gather(relaxation, idx) if relax else None,
                    estimate_shift=True, fractions=current - corners)
                step = tf.clip_by_value(s.position_step * shift, -s.position_max_shift,
                                        s.position_max_shift)
                # no move for padding entries, switched-off patterns (weight 0), or a patch
                # without any gradient (non-finite estimate)
                active = move * tf.cast(pattern_weights * valid[i] > 0, tf.float32)[:, None]
                step = tf.where(tf.math.is_finite(step), step, 0.0) * active
                moved = tf.clip_by_value(current + step, 0.0, upper)
                positions = tf.tensor_scatter_nd_add(positions, idx[:, None], moved - current)
                return i + 1, obj, probe, e_num + n, e_den + d, loss + l, positions

            zero = tf.constant(0.0, tf.float32)
            _, obj, probe, e_num, e_den, loss, positions = tf.while_loop(
                lambda i, *_: i < num_batches, body,
                (tf.constant(0, tf.int32), obj, probe, zero, zero, zero, positions))
            return obj, probe, e_num, e_den, loss, positions

        fn = tf.function(epoch, jit_compile=self.jit_compile, reduce_retracing=True)
        self._epoch_fns[key] = fn
        return fn

    def _search_positions(self, obj, probe, positions, amplitudes, weights, mask, radius):
        """Whole-pixel search around every position (see ``PIESettings.position_search_radius``).

        Returns ``(positions, jumped)``: (N, 2) float32 positions, moved by the offset with the
        smallest amplitude misfit where that is below ``(1 - margin)`` of the misfit in place,
        and the (N,) bool patterns that moved.
        """
        grid = np.arange(-radius, radius + 1, dtype=np.float32)
        offsets = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
        centre = len(offsets) // 2  # the (0, 0) offset
        if self._search_fn is None:
            transfer = self.model.transfer_function()
            transfer = None if transfer is None else tf.constant(transfer)
            limit = tf.constant(self._position_limit())

            def search(obj, probe, positions, offsets, amplitudes, mask):
                return _offset_residuals(obj, probe, positions, offsets, amplitudes, mask,
                                         transfer, limit)

            self._search_fn = tf.function(search, jit_compile=self.jit_compile,
                                          reduce_retracing=True)
        n = positions.shape[0]
        h, w = self.model.detector_shape
        chunk = max(1, min(n, 2 ** 21 // (int(probe.shape[0]) * h * w)))
        misfits = []
        offsets_t = tf.constant(offsets)
        for first in range(0, n, chunk):
            part = slice(first, min(first + chunk, n))
            misfits.append(self._search_fn(obj, probe, tf.constant(positions[part]), offsets_t,
                                           amplitudes[part.start:part.stop], mask).numpy())
        misfits = np.concatenate(misfits)
        best = np.argmin(misfits, axis=1)
        rows = np.arange(n)
        jumped = ((misfits[rows, best] < (1.0 - _SEARCH_MARGIN) * misfits[:, centre])
                  & (weights > 0))
        moved = positions + np.where(jumped[:, None], offsets[best], 0.0).astype(np.float32)
        return moved, jumped

    def _after_position_epoch(self, before, after, start, upper, probe_refined: bool):
        """Momentum and gauges of the positions after a moving epoch (all (N, 2) float32).

        mPIE's momentum (Maiden et al. 2017, Eqs. 8-9) applied to the positions:
        ``v <- eta v + (R_after - R_before)``, ``R <- R_after + eta v``; then the mean change
        since ``start`` is removed (a common shift of all positions is a gauge), and while the
        probe is refined also the isotropic scale of the change about the centroid,
        ``alpha = sum (R - R_start) . (R_start - mean) / sum |R_start - mean|^2`` (a scaled
        scan with a scaled object is nearly equivalent to a curved probe, Fresnel scaling
        theorem: with the probe free this mode is not determined and drifts); positions are
        clipped to ``[0, upper]``.
        """
        eta = self.settings.position_momentum
        if eta > 0:
            if self._position_velocity is None or self._position_velocity.shape != after.shape:
                self._position_velocity = np.zeros_like(after)
            self._position_velocity = eta * self._position_velocity + (after - before)
            after = after + eta * self._position_velocity
        after = after - np.mean(after - start, axis=0, keepdims=True)
        if probe_refined:
            centred = start - start.mean(axis=0, keepdims=True)
            alpha = np.sum((after - start) * centred) / max(np.sum(centred * centred), 1e-12)
            after = after - alpha * centred
        return np.clip(after, 0.0, upper).astype(np.float32)

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

    def _position_epoch(self, epoch, obj, probe, order, valid, positions, data, relaxation,
                        update_probe, start):
        """One epoch with position correction: the whole-pixel search when it is due, the
        moving epoch loop, then momentum and gauges, written into the model's corrections.
        ``data``: ``(amplitudes, weights, mask)``; ``start``: ``(positions, corrections,
        upper)`` of this fit. Returns ``(obj, probe, e_num, e_den, loss, positions, jumps)``."""
        s = self.settings
        amplitudes, weights, mask = data
        start_positions, start_corrections, upper = start
        jumps = 0
        moving = epoch >= s.position_start_epoch
        since = epoch - s.position_start_epoch
        if (s.position_search_radius > 0 and since > 0
                and since % s.position_search_interval == 0):
            searched, jumped = self._search_positions(
                obj, probe, positions.numpy(), amplitudes, weights.numpy(), mask,
                s.position_search_radius)
            if jumped.any():
                if self._position_velocity is not None:
                    self._position_velocity[jumped] = 0.0
                positions = tf.constant(np.clip(searched, 0.0, upper))
                jumps += int(jumped.sum())
        before = positions
        obj, probe, e_num, e_den, loss, positions = self._moving_epoch_function(update_probe)(
            obj, probe, order, valid, positions, tf.constant(float(moving), tf.float32),
            amplitudes, weights, mask, relaxation)
        if moving:
            positions = self._after_position_epoch(before.numpy(), positions.numpy(),
                                                   start_positions, upper, update_probe)
            self.model.position_corrections.assign(
                start_corrections + (positions - start_positions))
            positions = tf.constant(positions)
        return obj, probe, e_num, e_den, loss, positions, jumps

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
        amplitudes, weights, mask = self.prepare(patterns, sample_weight)
        s = self.settings
        n = self.model.num_patterns
        relaxation = self._relaxation(relaxation_weight)
        batch = min(int(s.batch_size), n)
        num_batches = int(np.ceil(n / batch))
        all_corners = tf.constant(self.corners())
        valid = np.zeros(num_batches * batch, np.float32)
        valid[:n] = 1.0
        valid = tf.constant(valid.reshape(num_batches, batch))
        rng = np.random.default_rng(seed)
        history = {"loss": [], "residual": []}
        if s.position_correction:
            history["position_change"], history["position_jumps"] = [], []
            # the model's positions at the start, and its corrections: the refined positions
            # are written back as corrections + (refined - start), whatever the position model
            start_positions = self.model.get_positions().astype(np.float32)
            start_corrections = self.model.position_corrections.numpy()
            positions = tf.constant(start_positions)
            upper = self._position_limit() + np.float32(0.49)  # rounds to the last valid corner
        obj, probe = self._read_state()
        previous = (obj, probe)
        if self._velocity is None:
            self._velocity = (tf.zeros_like(obj), tf.zeros_like(probe))
        for epoch in range(initial_epoch, initial_epoch + int(epochs)):
            update_probe = s.refine_probe and epoch >= s.probe_start_epoch and s.probe_step > 0
            order = np.zeros(num_batches * batch, np.int32)
            order[:n] = rng.permutation(n)
            order = tf.constant(order.reshape(num_batches, batch))
            if s.position_correction:
                obj, probe, e_num, e_den, loss, positions, jumps = self._position_epoch(
                    epoch, obj, probe, order, valid, positions, (amplitudes, weights, mask),
                    relaxation, update_probe, (start_positions, start_corrections, upper))
            else:
                obj, probe, e_num, e_den, loss = self._epoch_function(update_probe)(
                    obj, probe, order, valid, all_corners, amplitudes, weights, mask, relaxation)
            obj, probe, previous = self._end_epoch(obj, probe, previous, update_probe)
            logs = {"loss": float(loss.numpy()) / n,
                    "residual": float(e_num.numpy()) / max(float(e_den.numpy()), 1e-30)}
            if not np.isfinite(logs["loss"]):
                raise AdptychoError(f"the {s.engine} engine diverged at epoch {epoch} (non-finite "
                                    "error); lower the step sizes or raise the regularisation")
            if s.position_correction:
                change = positions.numpy() - start_positions
                logs["position_change"] = float(np.sqrt(np.mean(np.sum(change ** 2, axis=1))))
                logs["position_jumps"] = jumps
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

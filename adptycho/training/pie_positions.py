"""Position correction of the PIE engines (a part of ``training.epie.PIETrainer``).

The windows of the PIE engines sit at the positions rounded to whole pixels (as PtyLab's PIE
engines do); the distance is not refined. With ``position_correction`` the trainer keeps float
positions ``R_j`` (initialised from ``model.get_positions()``): pattern j is updated in the window at
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
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from adptycho.training.pie_kernels import _offset_residuals, _pie_batch

__all__ = ["PIEPositionCorrection"]

# a whole-pixel jump of a position (PIESettings.position_search_radius) needs a misfit this
# fraction below the misfit in place
_SEARCH_MARGIN = 0.1


class PIEPositionCorrection:
    """The position-correction half of ``PIETrainer`` (its ``model``, ``settings``,
    ``jit_compile``, ``_epoch_fns``, ``_position_velocity`` and ``_search_fn``): the moving
    epoch loop, the whole-pixel search, momentum and gauges, and the write-back into the
    model's ``position_corrections``."""

    def _position_limit(self) -> np.ndarray:
        """(2,) float32 largest window corner (y, x) that keeps the probe window inside."""
        return np.array([self.model.object_shape[0] - self.model.detector_shape[0],
                         self.model.object_shape[1] - self.model.detector_shape[1]], np.float32)

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

    def _position_start(self):
        """The positions at the start of a fit: ``(positions, start)``, ``positions`` the (N, 2)
        float32 tensor the epochs move and ``start = (positions, corrections, upper)`` as numpy:
        the refined positions are written back as corrections + (refined - start), whatever the
        position model; ``upper`` rounds to the last valid corner."""
        positions = self.model.get_positions().astype(np.float32)
        corrections = self.model.position_corrections.numpy()
        upper = self._position_limit() + np.float32(0.49)
        return tf.constant(positions), (positions, corrections, upper)

    @staticmethod
    def _position_logs(positions, start, jumps: int) -> dict:
        """``position_change`` (RMS distance in pixels from the start) and ``position_jumps``
        (whole-pixel jumps) of an epoch."""
        change = positions.numpy() - start[0]
        return {"position_change": float(np.sqrt(np.mean(np.sum(change ** 2, axis=1)))),
                "position_jumps": jumps}

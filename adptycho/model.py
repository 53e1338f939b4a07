"""``PtychoModel``: the whole instrument as a Keras model fitted to measured intensities.

Parameter groups (each with its own Adam optimiser, switchable, startable at an epoch):

* ``object``: the weights of the ``ObjectRepresentation`` (pixels, latent vector, ...);
* ``probe``: (M, H, W) probe modes (``components.probe.ProbeModes``);
* ``positions``: (N, 2) corrections in pixels added to the nominal scan positions, and the
  affine stage map (``components.scan_geometry.ScanGeometry``);
* ``distance``: a dimensionless log-scale ``s`` with ``distance_m = nominal * exp(s)``.

``call(indices)`` = scan geometry -> object / probe -> physics: (B,) int pattern indices to
(B, H, W) predicted intensities; ``train_step`` computes the noise-model loss and applies one
optimiser per active group under the NaN guard (``components.guard``). How the step executes
is the ``execution_plan`` chosen at ``compile`` (``accel``). Use it like any Keras model::

    model = PtychoModel(PixelObject(grid.shape), probe, corners_px, loss="poisson")
    model.compile(refine=("object", "probe"), learning_rates={"object": 0.05})
    model.fit(np.arange(N), patterns, batch_size=32, epochs=50, shuffle=True)
"""

from __future__ import annotations

import functools
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from adptycho.accel import REFERENCE, ExecutionPlan
from adptycho.accel import plan as accel_plan
from adptycho.accel.forward import chained_losses, forward_intensities, forward_losses
from adptycho.accel.windows import materialise
from adptycho.components.fit_helpers import (GroupSchedule, RelativeResidual, ReleaseFreedMemory,
                                             update_step_metrics, weighted_losses)
from adptycho.components.groups import (DEFAULT_LEARNING_RATES, PARAMETER_GROUPS,
                                        GroupOptimizers, checked_refine)
from adptycho.components.guard import NaNGuard, parameter_update
from adptycho.components.keras_steps import KerasSteps, delegate, state
from adptycho.components.noise import NoiseModel
from adptycho.components.probe import ProbeModes, checked_probe
from adptycho.components.scan_geometry import NearFieldGeometry, ScanGeometry
from adptycho.errors import AdptychoError
from adptycho.losses import sum_of_pattern_values
from adptycho.objects.base import ObjectRepresentation
from adptycho.training.distribute import global_batch_mean, replica_share, replica_step_logs

__all__ = ["PtychoModel", "NearFieldGeometry", "NaNGuard", "PARAMETER_GROUPS",
           "DEFAULT_LEARNING_RATES"]


class PtychoModel(KerasSteps, keras.Model):
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
            (a global affine map about the scan centroid, fitted alongside the free offsets).
        farfield_distance_m: far field only: the nominal sample-detector distance z0; makes the
            distance trainable (positions in pixels scale as z0 / z about their centroid).
        probe_support: optional (H, W) real mask that multiplies every probe mode.
        probe_power: optional total probe power in photons per exposure, restored after every
            probe update (removes the probe/object scale ambiguity).
        copropagate: parallel-beam near field with the distance refined: the model's object and
            probe are the stored ones propagated by (z0 - z). A wrong distance is almost exactly
            absorbed by defocusing object and probe together, so with this coupling a change of
            z moves along that valley and the distance gradient carries only the signal that
            identifies it. Applies to the object / probe only when they are refined too.
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
        probe = checked_probe(probe)
        self.detector_shape = tuple(int(s) for s in probe.shape[1:])
        self.num_modes = int(probe.shape[0])
        self.object_representation = object_representation
        self.object_shape = object_representation.object_shape
        self.noise = NoiseModel(self.detector_shape, mask, loss, readout_noise)
        self.subpixel = subpixel
        self.copropagate = bool(copropagate)
        # set by compile: parallel-beam near field with the distance and object / probe refined
        self._copropagating = self._copropagating_probe = False
        # Values assigned inside the training step (constraints, NaN rollback) are the same on
        # every replica under tf.distribute: the first replica's copy is kept.
        weight = functools.partial(self.add_weight, aggregation="only_first_replica")

        def add_weight(name, shape, initializer):
            return weight(shape=shape, name=name, initializer=initializer)

        self.probe_modes = ProbeModes(probe, add_weight, probe_support, probe_power)
        self.scan = ScanGeometry(positions_px, self.detector_shape, self.object_shape,
                                 add_weight, near_field, farfield_distance_m, position_model)
        self.num_patterns = self.scan.num_patterns
        self.nan_guard = True  # see train_step; False only to measure what the guard costs
        self.rollback_count = weight(shape=(), name="rollback_count", initializer="zeros",
                                     trainable=False)
        self.step_size_factor = weight(shape=(), name="step_size_factor", initializer="ones",
                                       trainable=False)
        # (a dict attribute: Keras tracks its variables, so the weights keep their order)
        self.groups = {"object": list(object_representation.trainable_weights),
                       "probe": self.probe_modes.variables,
                       "positions": self.scan.position_variables,
                       "distance": [self.scan.log_distance_scale]}
        self.optimization = GroupOptimizers(self.groups)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.residual_tracker = RelativeResidual()
        self._subpixel_now = self.scan.subpixel_needed(subpixel, False)
        self.execution_plan = REFERENCE  # chosen by compile (accel.plan)
        self.built = True

    # -- the components' state and methods under the model's established names ------------
    probe_real, probe_imag = state("probe_modes", "real"), state("probe_modes", "imag")
    probe_scale, probe_power = state("probe_modes", "scale"), state("probe_modes", "power")
    position_corrections = state("scan", "corrections")
    position_affine = state("scan", "affine")
    log_distance_scale = state("scan", "log_distance_scale")
    near_field = state("scan", "near_field")
    farfield_distance_m = state("scan", "farfield_distance_m")
    position_model = state("scan", "position_model")
    detector_mask = state("noise", "mask", "(H, W) float32 valid-pixel mask (1 = valid), or None.")
    loss_name, readout_noise = state("noise", "loss_name"), state("noise", "readout_noise")
    group_optimizers = state("optimization", "optimizers")
    refine, active_groups = state("optimization", "refine"), state("optimization", "active")
    learning_rates = state("optimization", "learning_rates")
    start_epochs = state("optimization", "start_epochs")
    decay_rate = state("optimization", "decay_rate")

    stored_probe_tensor = delegate(ProbeModes, "probe_modes", "stored")
    assign_probe = delegate(ProbeModes, "probe_modes", "assign")
    orthogonalise_probe = delegate(ProbeModes, "probe_modes", "orthogonalise")
    positions_tensor = delegate(ScanGeometry, "scan", "positions")
    affine_matrix = delegate(ScanGeometry, "scan", "affine_matrix")
    focus_distance_tensor = delegate(ScanGeometry, "scan", "focus_distance")
    cone_beam_geometry = delegate(ScanGeometry, "scan", "cone_beam_geometry")
    distance_tensor = delegate(ScanGeometry, "scan", "distance")
    get_distance = delegate(ScanGeometry, "scan", "refined_distance_m")
    get_focus_distance = delegate(ScanGeometry, "scan", "refined_focus_distance_m")
    pattern_losses = delegate(NoiseModel, "noise", "pattern_losses")

    # -- object and probe as the model uses them ------------------------------------------
    def probe_tensor(self) -> tf.Tensor:
        """(M, H, W) complex64 probe in photon units (times the support, if any; co-propagated
        by z0 - z while a parallel-beam near-field distance is refined, see ``copropagate``)."""
        probe = self.probe_modes.stored()
        return self.scan.copropagate(probe, materialise) if self._copropagating_probe else probe

    def object_tensor(self) -> tf.Tensor:
        """(Y, X) complex64 stored object (the representation's, never co-propagated)."""
        return self.object_representation.transmission()

    def assign_object(self, value) -> None:
        """Set the stored object to the (Y, X) complex array or tensor ``value`` (projected on
        the representation's parametrisation; pixel objects only)."""
        self.object_representation.assign(value)

    def refresh_object_group(self) -> None:
        """Make the ``object`` group the representation's trainable weights again (after they
        changed, e.g. ``GeneratorObject.release_blocks``)."""
        self.groups["object"] = list(self.object_representation.trainable_weights)

    def object_parts(self):
        """``(real, imag)`` (Y, X) float32 parts of the model's object (co-propagated by z0 - z
        while a parallel-beam near-field distance is refined)."""
        parts = self.object_representation.transmission_parts()
        if not self._copropagating:
            return parts
        obj = self.scan.copropagate(tf.complex(*parts), materialise)
        return tf.math.real(obj), tf.math.imag(obj)

    def transfer_function(self):
        """(H, W) complex64 band-limited angular-spectrum transfer function, or None (far field)."""
        return self.scan.transfer_function(materialise)

    def update_subpixel(self) -> None:
        """Decide again whether the forward model applies sub-pixel shifts (``subpixel="auto"``:
        when positions are refined or fractional). Decided eagerly, between epochs (an engine
        that moved the positions calls it), read when the step is traced."""
        self._subpixel_now = self.scan.subpixel_needed(self.subpixel,
                                                       "positions" in self.active_groups)

    # -- forward ------------------------------------------------------------------------
    def call(self, indices, training=False, plan: Optional[ExecutionPlan] = None):
        """(B,) int pattern indices -> (B, H, W) float32 predicted intensities.

        ``plan``: how the forward model executes (``accel.ExecutionPlan``; default the
        reference plan, right in any context; Keras' compiled steps pass ``execution_plan``).
        """
        indices = tf.reshape(tf.cast(indices, tf.int32), [-1])
        return forward_intensities(self.object_parts(), self.probe_tensor(),
                                   self.positions_tensor(indices), self.transfer_function(),
                                   subpixel=self._subpixel_now, plan=plan or REFERENCE)

    def batch_losses(self, indices, measured, plan: Optional[ExecutionPlan] = None):
        """Losses of a batch against its measured counts, without returning the intensities.

        Returns ``(losses, residuals, counts)``: (B,) float32 noise-model losses
        (differentiable), (B,) amplitude-loss sums and (B,) sums of the valid counts (numerators
        and denominators of the relative residual). ``plan`` as in ``call``: where it says so,
        far-field models use the fused path (``accel.fused``), which never forms the predicted
        intensities, and XLA pieces in chains (``accel.forward.chained_losses``).
        """
        plan = plan or REFERENCE
        indices = tf.reshape(tf.cast(indices, tf.int32), [-1])
        object_parts, probe = self.object_parts(), self.probe_tensor()
        transfer = self.transfer_function()

        def losses(chain_indices, chain_measured):
            return forward_losses(object_parts, probe, self.positions_tensor(chain_indices),
                                  chain_measured, self.loss_name, transfer,
                                  subpixel=self._subpixel_now, mask=self.detector_mask,
                                  readout_noise=self.readout_noise, plan=plan)

        return chained_losses(plan, losses, indices, measured)

    # -- training -----------------------------------------------------------------------
    def compile(self, refine=("object",), learning_rates=None, start_epochs=None,
                decay_rate: float = 0.97, jit_compile="auto",
                execution_plan: Optional[ExecutionPlan] = None, **kwargs):
        """Create one Adam optimiser per refined parameter group and choose the execution plan.

        Args:
            refine: groups to fit, from ``object``, ``probe``, ``positions``, ``distance``.
            learning_rates: per-group initial Adam step sizes (defaults in
                ``DEFAULT_LEARNING_RATES``; object/probe in relative amplitude units, positions
                in pixels, distance in relative units).
            start_epochs: per-group epoch (0-based) at which the group starts to move.
            decay_rate: learning-rate factor per epoch since the group started (Seifert et al.
                use 0.97).
            jit_compile: XLA-compile the training step. ``"auto"``: yes, except on CPU for
                far-field models on the fused loss path, where the step runs as XLA-compiled
                pieces joined by TensorFlow FFT ops (``accel.xla_pieces``: XLA's CPU FFT often
                runs on one core inside a whole-XLA step). The choice is the model's
                ``execution_plan`` (``accel.plan.choose_plan``), passed down to the forward.
            execution_plan: an explicit ``accel.ExecutionPlan`` instead of the automatic one
                (A/B timing, tests); ``jit_compile="auto"`` then follows ``execution_plan.xla``.
        """
        refine = checked_refine(refine, self.scan.has_distance, decay_rate)
        self._copropagating, self._copropagating_probe = self.scan.copropagation(
            self.copropagate, refine)
        self.optimization.configure(refine, learning_rates, start_epochs, decay_rate)
        self.update_subpixel()
        if execution_plan is None:
            execution_plan, jit_compile = accel_plan.choose_plan(
                self.near_field is None, self.detector_shape, jit_compile)
        elif jit_compile == "auto":
            jit_compile = execution_plan.xla
        self.execution_plan = execution_plan
        super().compile(optimizer=self.group_optimizers[refine[0]], jit_compile=jit_compile,
                        **kwargs)

    def set_epoch(self, epoch: int) -> None:
        """Activate the groups whose start epoch has come and decay their learning rates.

        With several probe modes under refinement, the modes are also re-orthogonalised.
        """
        if "probe" in self.active_groups and self.num_modes > 1:
            self.orthogonalise_probe()
        if self.optimization.activate(epoch):
            self.update_subpixel()
            self.train_function = None
            self.make_train_function(force=True)
            self.recompiled_at = epoch
        self.optimization.set_learning_rates(epoch, float(self.step_size_factor.numpy()))

    def apply_group_gradients(self, active, gradients) -> None:
        """One Adam update per active group, then the position and probe-power constraints."""
        self.optimization.apply(active, gradients)
        if "positions" in active:
            self.scan.project_corrections("distance" in self.active_groups)
        if "probe" in active:
            self.probe_modes.constrain_power()

    def train_step(self, data):
        """One Adam step of the active groups, with the NaN guard (``components.guard``: a
        step with a non-finite loss, gradient or parameter changes nothing, is counted in
        ``rollback_count`` and halves the step sizes, ``step_size_factor``)."""
        indices, measured, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        active = tuple(self.active_groups)
        variables = [v for g in active for v in self.groups[g]]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            for v in variables:
                tape.watch(v.value)
            losses, residuals, counts = self.batch_losses(indices, measured, self.execution_plan)
            losses = weighted_losses(losses, sample_weight)
            loss = global_batch_mean(losses)
            penalty = self.object_representation.penalty()  # a prior term, or None
            if penalty is not None:
                loss += replica_share(penalty / self.num_patterns)
        gradients = tape.gradient(loss, [v.value for v in variables])
        ok = parameter_update(self, active)(gradients, losses)
        update_step_metrics(self.loss_tracker, self.residual_tracker, losses,
                            sum_of_pattern_values(residuals), sum_of_pattern_values(counts), ok)
        return replica_step_logs(self._logs())

    def fit(self, *args, callbacks=None, **kwargs):
        """``keras.Model.fit`` plus the per-group start-epoch and learning-rate schedule, the
        NaN guard's report and the release of freed memory (``components``)."""
        if not self.group_optimizers:
            raise AdptychoError("call compile() before fit()")
        callbacks = [GroupSchedule(), NaNGuard(), ReleaseFreedMemory()] + list(callbacks or [])
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

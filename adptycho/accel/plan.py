"""The execution plan: how a model's forward pass and gradient run, chosen once at compile.

``PtychoModel.compile`` picks an ``ExecutionPlan`` (``choose_plan``) and passes it down to the
fast forward functions (``accel.forward``); nothing is decided from module switches or from the
trace context. ``REFERENCE`` is the plan for any other caller (eager calls, plain
``tf.function``): the composed ops of ``physics`` with the hand-written shift adjoint.
"""

from __future__ import annotations

import dataclasses

__all__ = ["ExecutionPlan", "REFERENCE", "choose_plan", "WINDOW_MIN_PIXELS"]

# Under XLA, windows of at least this many pixels take loops of dynamic slices (patch
# extraction, the fused far field): they beat XLA's gather and scatter there.
WINDOW_MIN_PIXELS = 96 * 96


@dataclasses.dataclass(frozen=True)
class ExecutionPlan:
    """How the forward model runs.

    Attributes:
        xla: the step is traced inside one XLA program (``jit_compile=True``): large windows
            use loops of XLA dynamic slices (``accel.windows``) and far-field models the fused
            gather/FFT/adjoint (``accel.fused``).
        pieces: the step runs as XLA-compiled pieces joined by TensorFlow FFT ops
            (``accel.xla_pieces``; CPU far field, where XLA's FFT often runs on one core).
        chains: independent chains a batch is cut into on the pieces path (one per core).
        fused: allow the fused far-field path (False: the composed ops, for A/B timing).
        shift_adjoint: the hand-written adjoint of the sub-pixel shift (False: autodiff).
        window_min_pixels: the smallest window (H * W) for the loops of dynamic slices.
    """

    xla: bool = False
    pieces: bool = False
    chains: int = 1
    fused: bool = True
    shift_adjoint: bool = True
    window_min_pixels: int = WINDOW_MIN_PIXELS

    def large_window(self, patch_shape) -> bool:
        """True for windows of at least ``window_min_pixels`` pixels."""
        return int(patch_shape[-2]) * int(patch_shape[-1]) >= self.window_min_pixels

    def window_loops(self, patch_shape) -> bool:
        """Patch extraction as loops of XLA dynamic slices (one XLA program, large windows)."""
        return self.xla and self.large_window(patch_shape)

    def use_fused(self, patch_shape) -> bool:
        """The fused far-field functions (XLA program or pieces, large windows)."""
        return self.fused and (self.xla or self.pieces) and self.large_window(patch_shape)

    def scope(self):
        """The context in which ``xla_pieces.piece`` functions become their own XLA clusters
        (a no-op scope unless ``pieces``)."""
        from adptycho.accel import xla_pieces

        return xla_pieces.fft_outside_xla(self.pieces)


REFERENCE = ExecutionPlan()


def choose_plan(far_field: bool, detector_shape, jit_compile, *,
                window_min_pixels=None, fused: bool = True):
    """The plan of a model's compiled step, and the ``jit_compile`` Keras gets.

    Args:
        far_field: the model propagates to the far field.
        detector_shape: (H, W).
        jit_compile: ``True``/``False``, or ``"auto"``: one XLA program, except on CPU for
            far-field models on the fused path (even windows of at least
            ``window_min_pixels``), which run as XLA pieces joined by TensorFlow FFT ops.
        window_min_pixels: default ``WINDOW_MIN_PIXELS`` (read here, once per compile).
        fused: allow the fused far field (without it, ``"auto"`` is one XLA program).

    Returns:
        ``(plan, jit_compile)``.
    """
    from adptycho.accel import xla_pieces

    h, w = (int(s) for s in detector_shape[-2:])
    if window_min_pixels is None:
        window_min_pixels = WINDOW_MIN_PIXELS
    plan = ExecutionPlan(window_min_pixels=int(window_min_pixels), fused=bool(fused))
    if jit_compile == "auto":
        split = (far_field and h % 2 == 0 and w % 2 == 0 and plan.fused
                 and plan.large_window((h, w)) and xla_pieces.available())
        jit_compile = not split
        if split:
            return dataclasses.replace(plan, pieces=True, chains=xla_pieces.chains()), False
    return dataclasses.replace(plan, xla=bool(jit_compile)), bool(jit_compile)

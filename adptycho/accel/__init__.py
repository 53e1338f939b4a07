"""Speed code: how the model's step executes (an ``ExecutionPlan`` chosen once at compile),
the fused far field, XLA pieces joined by TensorFlow FFTs, loops of XLA dynamic slices and
``materialise``. ``adptycho.physics`` holds the plain reference ops these are tested against
and never imports this package."""

from adptycho.accel.plan import REFERENCE, ExecutionPlan, choose_plan

__all__ = ["ExecutionPlan", "REFERENCE", "choose_plan"]

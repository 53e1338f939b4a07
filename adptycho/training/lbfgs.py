"""Full-batch L-BFGS for small parameter vectors (e.g. the 128-value latent of a
``LatentObject``), via ``tfp.optimizer.lbfgs_minimize``.

The loss is the model's noise-model loss averaged over all patterns (the same normalisation as
``PtychoModel.train_step``: per-pattern sums, mean over patterns). The refined variables are
flattened into one float64 vector for the optimiser; the forward model runs in float32.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from adptycho.errors import AdptychoError

__all__ = ["lbfgs_fit", "LBFGSResult"]


@dataclasses.dataclass
class LBFGSResult:
    """Outcome of ``lbfgs_fit``.

    Attributes:
        loss_history: (chunks + 1,) full-batch loss at the start and after each chunk.
        iterations: L-BFGS iterations done.
        evaluations: loss-and-gradient evaluations done.
        converged: the tolerance was reached.
    """

    loss_history: np.ndarray
    iterations: int
    evaluations: int
    converged: bool


def lbfgs_fit(model, patterns, *, groups: Sequence[str] = ("object",), max_iterations: int = 100,
              chunk_iterations: int = 10, batch_size: int = 64, tolerance: float = 1e-8,
              num_correction_pairs: int = 10, verbose: int = 0) -> LBFGSResult:
    """Minimise the full-batch loss of ``model`` over the variables of ``groups`` with L-BFGS.

    Args:
        model: a ``PtychoModel`` (``model.groups``, ``model.pattern_losses``).
        patterns: (N, H, W) measured intensities, N = ``model.num_patterns``.
        groups: parameter groups to refine (default the object, e.g. the latent vector).
        max_iterations: total L-BFGS iterations.
        chunk_iterations: iterations between loss reports (the optimiser state carries over).
        batch_size: patterns per forward pass inside one full-batch evaluation (memory bound).
        tolerance: gradient (sup-norm) tolerance.
        num_correction_pairs: L-BFGS memory.
        verbose: print the loss after each chunk.

    Returns:
        ``LBFGSResult``; the variables hold the final values.
    """
    patterns = tf.constant(np.asarray(patterns, np.float32))
    if patterns.shape[0] != model.num_patterns:
        raise AdptychoError(f"got {patterns.shape[0]} patterns for a model of "
                            f"{model.num_patterns} positions")
    if max_iterations < 1 or chunk_iterations < 1:
        raise AdptychoError("max_iterations and chunk_iterations must be positive")
    variables = [v for g in groups for v in model.groups[g]]
    if not variables:
        raise AdptychoError(f"groups {tuple(groups)} hold no trainable variables")
    shapes = [tuple(v.shape) for v in variables]
    sizes = [int(np.prod(s)) for s in shapes]
    n = model.num_patterns
    starts = list(range(0, n, batch_size))

    def assign(flat):
        for v, piece, shape in zip(variables, tf.split(flat, sizes), shapes):
            v.assign(tf.reshape(tf.cast(piece, tf.float32), shape))

    @tf.function
    def loss_and_gradient(flat):
        assign(flat)
        with tf.GradientTape() as tape:
            total = tf.constant(0.0, tf.float32)
            for s in starts:
                indices = tf.range(s, min(s + batch_size, n))
                predicted = model(indices)
                total += tf.reduce_sum(model.pattern_losses(patterns[s:s + batch_size], predicted))
            penalty = model.object_representation.penalty()  # a prior term, or None
            loss = (total if penalty is None else total + penalty) / n
        grads = tape.gradient(loss, variables)
        flat_grad = tf.concat([tf.reshape(g if g is not None else tf.zeros(s), [-1])
                               for g, s in zip(grads, shapes)], axis=0)
        return tf.cast(loss, tf.float64), tf.cast(flat_grad, tf.float64)

    start = tf.concat([tf.reshape(tf.cast(tf.convert_to_tensor(v), tf.float64), [-1])
                       for v in variables], axis=0)
    history = [float(loss_and_gradient(start)[0].numpy())]
    results = None
    done = 0
    while done < max_iterations:
        before = done
        step = min(chunk_iterations, max_iterations - done)
        results = tfp.optimizer.lbfgs_minimize(
            loss_and_gradient, initial_position=None if results is not None else start,
            previous_optimizer_results=results, tolerance=tolerance,
            num_correction_pairs=num_correction_pairs, max_iterations=done + step)
        done = int(results.num_iterations.numpy())
        history.append(float(results.objective_value.numpy()))
        if verbose:
            print(f"L-BFGS iteration {done}: loss {history[-1]:.6g}")
        if bool(results.converged.numpy()) or bool(results.failed.numpy()):
            break
        if done == before:  # the line search made no progress
            break
    assign(results.position)
    return LBFGSResult(np.asarray(history), int(results.num_iterations.numpy()),
                       int(results.num_objective_evaluations.numpy()),
                       bool(results.converged.numpy()))

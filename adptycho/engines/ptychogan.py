"""PtychoGAN's prior-regularised Adam steps behind the engine interface.

The loss of Barutcu, Gursoy & Katsaggelos (arXiv:2205.02397) for a ``PtychoModel`` whose object
is a ``GeneratorObject``::

    L = data / mean counts + tv_weight * TV(phase) + discriminator_weight * log(1 - D(G(w)))

(module docstring of ``training.ptychogan``). One epoch is one Adam step of the latent and of
the released synthesis blocks (``release``), logged as ``loss``, the relative amplitude
``residual`` of its batch and the three terms; the block release schedule itself is a workflow
(``training.ptychogan.ptychogan_fit``) that calls ``release`` and ``fit`` per stage.
"""

from __future__ import annotations

import time
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from adptycho.engines.base import Engine, FitPlan, History, epoch_callbacks, patterns_of
from adptycho.errors import AdptychoError
from adptycho.losses import amplitude_residual_sums

__all__ = ["PtychoGANEngine", "DISCRIMINATOR_LOSSES"]

DISCRIMINATOR_LOSSES = ("saturating", "non-saturating")
_TERMS = ("loss", "residual", "data", "tv", "discriminator")


def _total_variation(values):
    dy = values[1:, :-1] - values[:-1, :-1]
    dx = values[:-1, 1:] - values[:-1, :-1]
    return tf.reduce_mean(tf.sqrt(dy * dy + dx * dx + 1e-6))


class PtychoGANEngine(Engine):
    """Adam steps of the PtychoGAN loss on the latent and the released generator blocks.

    Args:
        tv_weight, discriminator_weight, discriminator_loss: the priors (see
            ``training.ptychogan.PtychoGANSettings``).
        discriminator: the pretrained ``StyleGAN2Discriminator`` (needed when
            ``discriminator_weight > 0``).
        latent_learning_rate, generator_learning_rate: Adam steps (``release`` changes them).
        batch_size: patterns per step (None: all patterns every step).
        seed: minibatch order (one generator for all fits of this engine).
        jit_compile, run_eagerly: how the step runs.

    The engine keeps its optimisers and traced step across ``fit`` calls: every block's
    variables are in the step, and a per-block 0/1 mask (a variable, so no retracing) zeroes
    the gradients of frozen blocks. ``release`` resets the generator's Adam state (= a fresh
    Adam per stage), so a frozen block (zero gradient, zero moments) does not move at all.
    """

    name = "ptychogan"
    groups = ("object",)

    def __init__(self, tv_weight: float = 0.003, discriminator_weight: float = 0.0,
                 discriminator_loss: str = "saturating", discriminator=None,
                 latent_learning_rate: float = 0.05, generator_learning_rate: float = 1e-3,
                 batch_size: Optional[int] = None, seed: int = 0, jit_compile: bool = False,
                 run_eagerly: bool = False):
        if discriminator_loss not in DISCRIMINATOR_LOSSES:
            raise AdptychoError(f"discriminator_loss must be one of {DISCRIMINATOR_LOSSES}, "
                                f"got {discriminator_loss!r}")
        if discriminator_weight > 0 and discriminator is None:
            raise AdptychoError("the discriminator prior (discriminator_weight > 0) needs the "
                                "pretrained discriminator")
        self.tv_weight = float(tv_weight)
        self.discriminator_weight = float(discriminator_weight)
        self.saturating = discriminator_loss == "saturating"
        self.discriminator = discriminator
        self.latent_learning_rate = float(latent_learning_rate)
        self.generator_learning_rate = float(generator_learning_rate)
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.jit_compile = bool(jit_compile)
        self.run_eagerly = bool(run_eagerly)
        self.seconds_per_step = None  # of the last fit, without the first (tracing) step
        self._state = None  # (model, data, step, mask, optimisers) of the traced step

    @classmethod
    def from_plan(cls, plan: FitPlan, stage) -> "PtychoGANEngine":
        cls.check_refine(plan.refine)
        return cls(batch_size=plan.batch_size, seed=plan.seed)

    @staticmethod
    def generator_object(model):
        from adptycho.objects.generator import GeneratorObject

        obj = model.object_representation
        if not isinstance(obj, GeneratorObject):
            raise AdptychoError("the ptychogan engine needs a PtychoModel whose object is a "
                                f"GeneratorObject, got {type(obj).__name__}")
        return obj

    def release(self, model, blocks: int, latent_learning_rate: Optional[float] = None,
                generator_learning_rate: Optional[float] = None) -> None:
        """Make synthesis blocks ``0 .. blocks-1`` trainable (the model's object group follows),
        reset the generator's Adam state and set the step sizes for the next fits."""
        obj = self.generator_object(model)
        obj.release_blocks(blocks)
        model.refresh_object_group()
        if latent_learning_rate is not None:
            self.latent_learning_rate = float(latent_learning_rate)
        if generator_learning_rate:
            self.generator_learning_rate = float(generator_learning_rate)
        if self._state is not None:
            _, _, _, mask, latent_opt, gen_opt = self._state
            mask.assign(np.arange(obj.num_blocks) < obj.released_blocks)
            for v in gen_opt.variables:
                v.assign(tf.zeros(v.shape, v.dtype))

    def _build(self, model, data, patterns):
        obj = self.generator_object(model)
        counts = float(np.mean(np.sum(np.maximum(patterns, 0), axis=(1, 2))))
        inv_counts = tf.constant(1.0 / max(counts, 1e-6), tf.float32)
        measured_all = tf.constant(patterns)
        tv_scale = obj.phase_scale_rad if obj.mode == "phase" else 1.0
        tv_w = tf.constant(self.tv_weight, tf.float32)
        d_w = tf.constant(self.discriminator_weight, tf.float32)
        use_d, saturating, discriminator = (self.discriminator_weight > 0, self.saturating,
                                            self.discriminator)
        latent_opt = keras.optimizers.Adam(self.latent_learning_rate, name="adam_latent")
        latent_opt.build([obj.latent])
        block_vars = [obj.block_variables(i) for i in range(obj.num_blocks)]
        gen_vars = [v for vs in block_vars for v in vs]
        block_index = tf.constant([i for i, vs in enumerate(block_vars) for _ in vs], tf.int32)
        mask = tf.Variable(np.arange(obj.num_blocks) < obj.released_blocks, dtype=tf.float32,
                           trainable=False, name="released_mask")
        gen_opt = keras.optimizers.Adam(self.generator_learning_rate, name="adam_generator")
        gen_opt.build(gen_vars)
        variables = [obj.latent] + gen_vars

        def step(indices):
            measured = tf.gather(measured_all, indices)
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                for v in variables:
                    tape.watch(v.value)
                predicted = model(indices)  # runs obj.transmission_parts() once
                raw, region = obj.last_raw, obj.last_region
                data = tf.reduce_mean(model.pattern_losses(measured, predicted)) * inv_counts
                tv = _total_variation(region * tv_scale)
                if use_d:
                    logit = tf.reduce_mean(discriminator.call(raw))
                    prior = -tf.nn.softplus(logit) if saturating else tf.nn.softplus(-logit)
                else:
                    prior = tf.constant(0.0)
                loss = data + tv_w * tv + d_w * prior
            numerator, denominator = amplitude_residual_sums(measured, predicted,
                                                             model.detector_mask)
            residual = numerator / tf.maximum(denominator, 1e-30)
            grads = tape.gradient(loss, [v.value for v in variables])
            latent_opt.apply(grads[:1], variables[:1])
            gen_grads = [g * mask[block_index[i]] for i, g in enumerate(grads[1:])]
            gen_opt.apply(gen_grads, gen_vars)
            return loss, residual, data, tv, prior

        if not self.run_eagerly:
            step = tf.function(step, jit_compile=self.jit_compile)
        self._state = (model, data, step, mask, latent_opt, gen_opt)

    def fit(self, model, data, epochs: int, *, callbacks=None, sample_weight=None,
            verbose: int = 0, first_epoch: int = 0) -> History:
        self.refuse_sample_weight(sample_weight)
        self.generator_object(model)
        patterns = np.asarray(patterns_of(data, model), np.float32)
        if not np.isfinite(patterns).all():
            raise AdptychoError("patterns contain non-finite values")
        if self._state is None or self._state[0] is not model or self._state[1] is not data:
            self._build(model, data, patterns)
        _, _, step, _, latent_opt, gen_opt = self._state
        latent_opt.learning_rate = self.latent_learning_rate
        gen_opt.learning_rate = self.generator_learning_rate
        n = model.num_patterns
        batch = n if self.batch_size is None else min(int(self.batch_size), n)
        after_epoch = epoch_callbacks(callbacks, model, first_epoch)
        history = History()
        timed = time.perf_counter()
        for i in range(int(epochs)):
            indices = (np.arange(n) if batch == n
                       else self.rng.choice(n, size=batch, replace=False)).astype(np.int32)
            if i == 1:  # exclude tracing from the per-step time
                timed = time.perf_counter()
            logs = dict(zip(_TERMS, (float(x) for x in step(tf.constant(indices)))))
            history.on_epoch_end(first_epoch + i, logs)
            if after_epoch is not None:
                after_epoch(i, logs)
        if epochs > 1:
            self.seconds_per_step = (time.perf_counter() - timed) / (epochs - 1)
        if history.history and not np.isfinite(history.history["loss"][-1]):
            raise AdptychoError("PtychoGAN produced a non-finite loss; lower the learning rates")
        return history

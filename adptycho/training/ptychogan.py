"""PtychoGAN: ptychography with a deep generative prior and a deep image prior.

Barutcu, Gursoy & Katsaggelos, "Compressive ptychography using deep image and generative
priors" (arXiv:2205.02397), the initial reconstruction of Barutcu et al.'s oversampling paper
(Sec. 2.3): the object is ``exp(j G(w))`` with a pretrained StyleGAN2 ``G``
(:class:`~adptycho.objects.generator.GeneratorObject`). The loss is

    L = data + tv_weight * TV(phase) + discriminator_weight * log(1 - D(G(w)))

* ``data``: the ``PtychoModel``'s noise-model loss (Poisson by default) averaged over the batch
  and divided by the mean counts per pattern, so the weights below do not depend on the dose;
* ``TV``: mean isotropic total variation ``sqrt(dy^2 + dx^2 + 1e-6)`` of the region's phase in
  radians (the object's amplitude in amplitude mode);
* discriminator prior: ``log(1 - sigmoid(D))`` of the pretrained discriminator's logit of the
  raw generator image, i.e. ``-softplus(D)`` (NVlabs ``G_logistic``; ``"saturating"``, the
  paper's form) or ``softplus(-D)`` (``"non-saturating"``, same optimum, does not saturate).

Schedule (the paper gives no numbers; ours follow the deep generative prior recipe of Pan et al.
2020, methods notes section 2): stage 0 fits the latent alone for ``latent_steps``; stage k
(k = 1 .. ``blocks``) releases synthesis blocks 0 .. k-1 (4 x 4 first) for ``block_steps``
steps, with the generator at ``generator_learning_rate`` (a fresh Adam per stage) and the
latent at ``latent_learning_rate_blocks``. The probe and positions stay fixed (the paper
assumes a known probe). All numbers are options of :class:`PtychoGANSettings`; the defaults
are the ones used in ``experiments/ptychogan_oversampling``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from adptycho.runtime import restores_global_rngs
from adptycho.errors import AdptychoError

__all__ = ["PtychoGANSettings", "Stage", "release_schedule", "ptychogan_fit",
           "reconstruct_ptychogan", "DISCRIMINATOR_LOSSES"]

DISCRIMINATOR_LOSSES = ("saturating", "non-saturating")


@dataclasses.dataclass
class PtychoGANSettings:
    """Options of the PtychoGAN fit (see the module docstring).

    Attributes:
        latent_steps: Adam steps of stage 0 (latent only).
        block_steps: Adam steps of each block-release stage.
        blocks: number of release stages (blocks released at the end); None = all blocks.
        latent_learning_rate: latent Adam step in stage 0 (w units; w ~ O(1)).
        latent_learning_rate_blocks: latent Adam step while blocks are released.
        generator_learning_rate: Adam step of the released generator weights (equalized
            learning rate: the stored weights are ~N(0, 1), so this is a relative change).
        tv_weight: weight of the total-variation prior (per pixel, phase in radians).
        discriminator_weight: weight lambda of the discriminator prior (0: off). The
            saturating term is unbounded below (it rewards fooling D), so lambda must stay
            small: on held-out face 360, 0% overlap, noise-free, the step-1861
            ``stylegan2-faces`` gave phase MSE 1.72e-3 with lambda = 0, 1.59e-3 with 1e-4
            (``experiments/ptychogan_oversampling``); with a step-357 generator lambda = 0.01
            drove the error from 51e-3 to 154e-3 as blocks were released.
        discriminator_loss: ``"saturating"`` (log(1 - D), the paper) or ``"non-saturating"``.
        batch_size: patterns per step (None: all patterns every step).
        jit_compile: XLA-compile the step.
        run_eagerly: no ``tf.function`` (debugging, tiny tests).
    """

    latent_steps: int = 300
    block_steps: int = 100
    blocks: Optional[int] = None
    latent_learning_rate: float = 0.05
    latent_learning_rate_blocks: float = 0.005
    generator_learning_rate: float = 1e-3
    tv_weight: float = 0.003
    discriminator_weight: float = 1e-4
    discriminator_loss: str = "saturating"
    batch_size: Optional[int] = None
    jit_compile: bool = False
    run_eagerly: bool = False

    def __post_init__(self):
        if self.latent_steps < 0 or self.block_steps < 0:
            raise AdptychoError("latent_steps and block_steps must be >= 0")
        if self.blocks is not None and self.blocks < 0:
            raise AdptychoError(f"blocks must be >= 0, got {self.blocks}")
        for name in ("latent_learning_rate", "latent_learning_rate_blocks",
                     "generator_learning_rate"):
            if not getattr(self, name) > 0:
                raise AdptychoError(f"{name} must be positive, got {getattr(self, name)}")
        if self.tv_weight < 0 or self.discriminator_weight < 0:
            raise AdptychoError("tv_weight and discriminator_weight must be >= 0")
        if self.discriminator_loss not in DISCRIMINATOR_LOSSES:
            raise AdptychoError(f"discriminator_loss must be one of {DISCRIMINATOR_LOSSES}, "
                                f"got {self.discriminator_loss!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise AdptychoError(f"batch_size must be at least 1, got {self.batch_size}")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of the fit: ``released`` blocks trainable for ``steps`` Adam steps."""

    released: int
    steps: int
    latent_learning_rate: float
    generator_learning_rate: float


def release_schedule(settings: PtychoGANSettings, num_blocks: int) -> list:
    """The stages: latent only, then blocks released one more per stage, shallow first."""
    blocks = num_blocks if settings.blocks is None else min(int(settings.blocks), num_blocks)
    stages = [Stage(0, int(settings.latent_steps), settings.latent_learning_rate, 0.0)]
    stages += [Stage(k, int(settings.block_steps), settings.latent_learning_rate_blocks,
                     settings.generator_learning_rate) for k in range(1, blocks + 1)]
    return [s for s in stages if s.steps > 0]


def _total_variation(values):
    dy = values[1:, :-1] - values[:-1, :-1]
    dx = values[:-1, 1:] - values[:-1, :-1]
    return tf.reduce_mean(tf.sqrt(dy * dy + dx * dx + 1e-6))


def ptychogan_fit(model, patterns, settings: Optional[PtychoGANSettings] = None,
                  discriminator=None, *, seed: int = 0,
                  callback: Optional[Callable] = None, verbose: int = 0) -> dict:
    """Fit a ``PtychoModel`` whose object is a ``GeneratorObject`` by the PtychoGAN schedule.

    Args:
        model: ``PtychoModel`` with a :class:`GeneratorObject` object representation (its
            released blocks are reset by the schedule).
        patterns: (N, H, W) float32 measured counts, in the model's pattern order.
        settings: :class:`PtychoGANSettings` (default options if None).
        discriminator: the pretrained ``StyleGAN2Discriminator`` (needed when
            ``discriminator_weight > 0``).
        seed: minibatch order.
        callback: ``callback(stage_index, stage, model)`` after every stage.
        verbose: 1 prints one line per stage.

    Returns:
        dict of float64 arrays: per-step ``loss``, ``data``, ``tv``, ``discriminator``,
        ``stage``; ``stage_seconds`` and ``seconds_per_step`` (per stage); ``stages`` (the
        schedule as dicts).
    """
    from adptycho.objects.generator import GeneratorObject

    settings = settings or PtychoGANSettings()
    obj = model.object_representation
    if not isinstance(obj, GeneratorObject):
        raise AdptychoError("ptychogan_fit needs a PtychoModel whose object is a "
                            f"GeneratorObject, got {type(obj).__name__}")
    patterns = np.asarray(patterns, np.float32)
    if patterns.shape != (model.num_patterns,) + model.detector_shape:
        raise AdptychoError(f"patterns have shape {patterns.shape}, expected "
                            f"{(model.num_patterns,) + model.detector_shape}")
    if not np.isfinite(patterns).all():
        raise AdptychoError("patterns contain non-finite values")
    if settings.discriminator_weight > 0 and discriminator is None:
        raise AdptychoError("the discriminator prior (discriminator_weight > 0) needs the "
                            "pretrained discriminator")
    counts = float(np.mean(np.sum(np.maximum(patterns, 0), axis=(1, 2))))
    inv_counts = tf.constant(1.0 / max(counts, 1e-6), tf.float32)
    measured_all = tf.constant(patterns)
    n = model.num_patterns
    batch = n if settings.batch_size is None else min(int(settings.batch_size), n)
    rng = np.random.default_rng(seed)
    tv_scale = obj.phase_scale_rad if obj.mode == "phase" else 1.0
    tv_w = tf.constant(settings.tv_weight, tf.float32)
    d_w = tf.constant(settings.discriminator_weight, tf.float32)
    saturating = settings.discriminator_loss == "saturating"
    use_d = settings.discriminator_weight > 0
    latent_opt = keras.optimizers.Adam(settings.latent_learning_rate, name="adam_latent")
    latent_opt.build([obj.latent])
    history = {k: [] for k in ("loss", "data", "tv", "discriminator", "stage")}
    stage_seconds, per_step = [], []
    schedule = release_schedule(settings, obj.num_blocks)

    # One traced step for all stages: every block's variables are in the tape, and a per-block
    # 0/1 mask (a variable, so no retracing) zeroes the gradients of frozen blocks. The
    # generator's Adam state is reset at each stage (= a fresh Adam per stage); a frozen block
    # (zero gradient, zero moments) therefore does not move at all.
    block_vars = [obj.block_variables(i) for i in range(obj.num_blocks)]
    gen_vars = [v for vs in block_vars for v in vs]
    block_index = tf.constant([i for i, vs in enumerate(block_vars) for _ in vs], tf.int32)
    mask = tf.Variable(tf.zeros([obj.num_blocks]), trainable=False, name="released_mask")
    gen_opt = keras.optimizers.Adam(settings.generator_learning_rate, name="adam_generator")
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
        grads = tape.gradient(loss, [v.value for v in variables])
        latent_opt.apply(grads[:1], variables[:1])
        gen_grads = [g * mask[block_index[i]] for i, g in enumerate(grads[1:])]
        gen_opt.apply(gen_grads, gen_vars)
        return loss, data, tv, prior

    if not settings.run_eagerly:
        step = tf.function(step, jit_compile=settings.jit_compile)

    for s, stage in enumerate(schedule):
        obj.release_blocks(stage.released)
        model.groups["object"] = list(obj.trainable_weights)
        mask.assign(np.arange(obj.num_blocks) < stage.released)
        for v in gen_opt.variables:
            v.assign(tf.zeros(v.shape, v.dtype))
        gen_opt.learning_rate = stage.generator_learning_rate or settings.generator_learning_rate
        latent_opt.learning_rate = stage.latent_learning_rate
        started = time.perf_counter()
        for i in range(stage.steps):
            indices = (np.arange(n) if batch == n
                       else rng.choice(n, size=batch, replace=False)).astype(np.int32)
            if i == 1:  # exclude tracing from the per-step time
                timed = time.perf_counter()
            values = [float(x) for x in step(tf.constant(indices))]
            for key, value in zip(("loss", "data", "tv", "discriminator"), values):
                history[key].append(value)
            history["stage"].append(s)
        elapsed = time.perf_counter() - started
        stage_seconds.append(elapsed)
        per_step.append((time.perf_counter() - timed) / (stage.steps - 1)
                        if stage.steps > 1 else elapsed)
        if not np.isfinite(history["loss"][-1]):
            raise AdptychoError(f"PtychoGAN stage {s} produced a non-finite loss; lower the "
                                "learning rates")
        if verbose:
            print(f"ptychogan stage {s}: {stage.released} blocks released, {stage.steps} steps, "
                  f"loss {history['loss'][-1]:.5g} (data {history['data'][-1]:.5g}, "
                  f"tv {history['tv'][-1]:.4g}, D {history['discriminator'][-1]:.4g}), "
                  f"{elapsed:.1f} s", flush=True)
        if callback is not None:
            callback(s, stage, model)
    result = {k: np.asarray(v, np.float64) for k, v in history.items()}
    result["stage_seconds"] = np.asarray(stage_seconds, np.float64)
    result["seconds_per_step"] = np.asarray(per_step, np.float64)
    result["stages"] = [dataclasses.asdict(s) for s in schedule]
    return result


@restores_global_rngs
def reconstruct_ptychogan(scan, *, model: str = "stylegan2-faces",
                          settings: Optional[PtychoGANSettings] = None, probe=None,
                          loss: str = "poisson", readout_noise=1.0, region_px=None,
                          mode: str = "phase", phase_scale_rad: float = np.pi,
                          w_plus: bool = True, object_shape=None, padding_px: int = 8,
                          seed: int = 0, verbose: int = 0):
    """PtychoGAN reconstruction of a scan: ``ReconstructionResult`` like ``reconstruct``.

    Args:
        scan: ``ScanData`` (its probe is used and kept fixed unless ``probe`` is given).
        model: shipped StyleGAN2 name or model directory.
        settings: :class:`PtychoGANSettings`.
        loss, readout_noise: noise model (Poisson by default, as in the paper).
        region_px: where the generator image lies on the object grid (default: whole grid).
        mode, phase_scale_rad, w_plus: see :class:`GeneratorObject`.
        object_shape, padding_px: object grid (see ``build_model``).
        seed: seeds Keras and the minibatch order.

    Returns:
        ``ReconstructionResult`` (``object`` on the usual grid; ``extra_histories`` holds the
        per-step ``data``/``tv``/``discriminator`` terms, ``stage`` and the final ``latent``).
    """
    from adptycho.io.results import ReconstructionResult
    from adptycho.nn.stylegan2 import load_stylegan2
    from adptycho.reconstruction import build_model

    settings = settings or PtychoGANSettings()
    keras.utils.set_random_seed(seed)
    options = {"mode": mode, "phase_scale_rad": phase_scale_rad, "w_plus": w_plus,
               "region_px": region_px}
    ptycho, grid = build_model(scan, probe=probe, loss=loss, readout_noise=readout_noise,
                               object_shape=object_shape, padding_px=padding_px, object=model,
                               latent_options=options)
    discriminator = None
    if settings.discriminator_weight > 0:
        _, discriminator, _ = load_stylegan2(model, discriminator=True)
    started = time.perf_counter()
    history = ptychogan_fit(ptycho, scan.patterns, settings, discriminator, seed=seed,
                            verbose=verbose)
    elapsed = time.perf_counter() - started
    predicted = np.concatenate([ptycho(tf.constant(np.arange(i, min(i + 64, scan.num_patterns)),
                                                   tf.int32)).numpy()
                                for i in range(0, scan.num_patterns, 64)])
    from adptycho.losses import amplitude_residual_sums

    num, den = amplitude_residual_sums(tf.constant(np.asarray(scan.patterns, np.float32)),
                                       tf.constant(predicted), None if scan.mask is None
                                       else tf.constant(np.asarray(scan.mask, np.float32)))
    residual = float(num) / max(float(den), 1e-30)
    config = {"engine": "ptychogan", "object": str(model), "loss": loss,
              "ptychogan": dataclasses.asdict(settings), "seed": seed, "seconds": elapsed,
              "mode": mode, "phase_scale_rad": phase_scale_rad, "w_plus": w_plus,
              "region_px": list(ptycho.object_representation.region_px),
              "num_patterns": scan.num_patterns, "detector_shape": list(scan.detector_shape),
              "geometry": scan.geometry, "padding_px": padding_px,
              "refine": ["object"], "stages": history["stages"]}
    extra = {k: history[k] for k in ("data", "tv", "discriminator", "stage")}
    extra["latent"] = ptycho.object_representation.latent_numpy()
    extra["generator_image"] = ptycho.object_representation.image()
    return ReconstructionResult(
        object=ptycho.get_object(), probe=ptycho.get_probe(), positions_px=ptycho.get_positions(),
        nominal_positions_px=grid.corners(scan.positions_px), loss_history=history["loss"],
        residual_history=np.asarray([residual], np.float64), pixel_size_m=scan.pixel_size_m,
        geometry=scan.geometry, object_origin_px=grid.origin_px, settings=config,
        extra_histories=extra)

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

from adptycho.runtime import restores_global_rngs
from adptycho.engines.ptychogan import DISCRIMINATOR_LOSSES
from adptycho.errors import AdptychoError

__all__ = ["PtychoGANSettings", "Stage", "release_schedule", "ptychogan_fit",
           "reconstruct_ptychogan", "DISCRIMINATOR_LOSSES"]



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


def ptychogan_fit(model, patterns, settings: Optional[PtychoGANSettings] = None,
                  discriminator=None, *, seed: int = 0,
                  callback: Optional[Callable] = None, verbose: int = 0) -> dict:
    """Fit a ``PtychoModel`` whose object is a ``GeneratorObject`` by the PtychoGAN schedule:
    the release workflow over the ``ptychogan`` engine (``engines.ptychogan``), one ``fit`` of
    ``stage.steps`` steps per stage after ``release``.

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
    from adptycho.engines.ptychogan import PtychoGANEngine
    from adptycho.engines.base import patterns_of

    settings = settings or PtychoGANSettings()
    obj = PtychoGANEngine.generator_object(model)
    patterns = np.asarray(patterns_of(patterns, model), np.float32)
    if not np.isfinite(patterns).all():
        raise AdptychoError("patterns contain non-finite values")
    engine = PtychoGANEngine(
        tv_weight=settings.tv_weight, discriminator_weight=settings.discriminator_weight,
        discriminator_loss=settings.discriminator_loss, discriminator=discriminator,
        latent_learning_rate=settings.latent_learning_rate,
        generator_learning_rate=settings.generator_learning_rate,
        batch_size=settings.batch_size, seed=seed, jit_compile=settings.jit_compile,
        run_eagerly=settings.run_eagerly)
    history = {k: [] for k in ("loss", "data", "tv", "discriminator", "stage")}
    stage_seconds, per_step = [], []
    schedule = release_schedule(settings, obj.num_blocks)
    for s, stage in enumerate(schedule):
        engine.release(model, stage.released, stage.latent_learning_rate,
                       stage.generator_learning_rate)
        started = time.perf_counter()
        logs = engine.fit(model, patterns, stage.steps).history
        elapsed = time.perf_counter() - started
        for key in ("loss", "data", "tv", "discriminator"):
            history[key] += logs[key]
        history["stage"] += [s] * stage.steps
        stage_seconds.append(elapsed)
        per_step.append(engine.seconds_per_step if stage.steps > 1 else elapsed)
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
    # the relative amplitude residual of the fit, through the model (Keras evaluate)
    ptycho.compile(refine=("object",), jit_compile=False)
    residual = ptycho.evaluate(np.arange(scan.num_patterns), np.asarray(scan.patterns, np.float32),
                               batch_size=64, verbose=0, return_dict=True)["residual"]
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

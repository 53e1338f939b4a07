"""``GeneratorObject``: the object as a StyleGAN2 latent through a (partly trainable) generator.

PtychoGAN (Barutcu, Gursoy & Katsaggelos 2022) represents a phase object as ``exp(j G(w))``
with a pretrained StyleGAN2 generator ``G``: first only the latent is fitted (deep generative
prior), then the generator weights are released block by block from the shallowest (4 x 4)
to the deepest (deep image prior). This class is that object; the fit and its schedule are in
``adptycho.training.ptychogan``.

The generator output ``G`` (B, R, R, 1), trained on images in [-1, 1], is mapped to an image
value ``v = (G + 1) / 2`` (nominally in [0, 1]), resized to the region with the
Mitchell-Netravali matrices (as ``LatentObject``) and placed in the object grid
(``region_px = (y0, x0, h, w)``, default the whole grid):

* ``mode="phase"`` (PtychoGAN): ``O = exp(i phase_scale_rad pad(v))`` (unit amplitude, phase 0
  outside the region);
* ``mode="amplitude"``: ``O = b + pad(v - b)``, real, ``b`` = ``background`` outside the region.

The latent is ``w+`` (``num_ws`` rows of ``w_dim``, default) or a single ``w`` broadcast to all
layers, initialised at the generator's running mean ``w_avg``. The mapping network is never
trained. ``release_blocks(k)`` makes the first ``k`` synthesis blocks trainable; the layer's
``trainable_weights`` (the ``PtychoModel`` "object" group) are then the latent followed by
those blocks' weights. The generator is copied on construction, so fitting never changes the
caller's (or the shipped) network. Noise inputs use the generator's stored constant maps
(``noise_mode="const"``) so the object is a deterministic function of the weights.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from adptycho.errors import AdptychoError
from adptycho.nn.resize import mitchell_resize_matrices, resize_with_matrices
from adptycho.objects.base import ObjectRepresentation

__all__ = ["GeneratorObject", "GENERATOR_MODES"]

GENERATOR_MODES = ("phase", "amplitude")


def _copy_generator(generator):
    from adptycho.nn.stylegan2 import StyleGAN2Generator

    if not isinstance(generator, StyleGAN2Generator):
        raise AdptychoError("generator must be an adptycho.nn.stylegan2.StyleGAN2Generator, got "
                            f"{type(generator).__name__}")
    copy = StyleGAN2Generator(**generator.get_config())
    copy.set_weights(generator.get_weights())
    return copy


class GeneratorObject(ObjectRepresentation):
    """Object = resized StyleGAN2 output of a trainable w / w+ latent.

    Args:
        object_shape: (Y, X) object grid.
        generator: a :class:`~adptycho.nn.stylegan2.StyleGAN2Generator` (copied).
        initial_latent: (w_dim,) or (num_ws, w_dim) start; default the generator's ``w_avg``.
        w_plus: one w per synthesis layer (``(num_ws, w_dim)`` latent) or a single w.
        region_px: ``(y0, x0, height, width)`` of the resized image in the grid.
        mode: ``"phase"`` or ``"amplitude"``.
        phase_scale_rad: phase of an image value of 1 (phase mode; default pi).
        background: amplitude outside the region (amplitude mode).
        released_blocks: number of synthesis blocks (shallow first) trainable from the start.
        noise_mode: generator noise, ``"const"`` (default), ``"none"`` or ``"random"``.
        antialias: antialiasing of the resize (only matters when shrinking).
    """

    def __init__(self, object_shape, generator, *, initial_latent=None, w_plus: bool = True,
                 region_px=None, mode: str = "phase", phase_scale_rad: float = np.pi,
                 background: float = 1.0, released_blocks: int = 0, noise_mode: str = "const",
                 antialias: bool = False, **kwargs):
        super().__init__(object_shape, **kwargs)
        from adptycho.nn.stylegan2 import NOISE_MODES

        if mode not in GENERATOR_MODES:
            raise AdptychoError(f"unknown generator object mode {mode!r}; choose one of "
                                f"{', '.join(GENERATOR_MODES)}")
        if noise_mode not in NOISE_MODES:
            raise AdptychoError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, "
                                f"got {noise_mode!r}")
        self.generator = _copy_generator(generator)
        for layer in self.generator.mapping:
            layer.trainable = False
        res = self.generator.resolution
        self.image_shape = (res, res)
        self.region_px = y0, x0, height, width = self._region(region_px)
        self.mode = mode
        self.phase_scale_rad = float(phase_scale_rad)
        self.background = float(background)
        self.noise_mode = noise_mode
        self.w_plus = bool(w_plus)
        shape = ((self.generator.num_ws, self.generator.w_dim) if self.w_plus
                 else (self.generator.w_dim,))
        if initial_latent is None:
            initial_latent = np.broadcast_to(self.generator.w_avg.numpy(), shape)
        initial_latent = np.asarray(initial_latent, np.float32)
        if initial_latent.shape == (self.generator.w_dim,) and self.w_plus:
            initial_latent = np.broadcast_to(initial_latent, shape)
        if initial_latent.shape != shape:
            raise AdptychoError(f"initial latent has shape {initial_latent.shape}, expected "
                                f"{shape}")
        if not np.isfinite(initial_latent).all():
            raise AdptychoError("initial latent contains non-finite values")
        r_y, r_x = mitchell_resize_matrices(self.image_shape, (height, width), antialias)
        self._r_y = tf.constant(r_y)
        self._r_x = tf.constant(r_x)
        self._padding = [[y0, self.object_shape[0] - y0 - height],
                         [x0, self.object_shape[1] - x0 - width]]
        self.latent = self.add_weight(shape=shape, dtype="float32", name="latent",
                                      initializer=keras.initializers.Constant(
                                          np.array(initial_latent)),
                                      aggregation="only_first_replica")
        self.num_blocks = len(self.generator.blocks)
        self._released = 0
        self.release_blocks(released_blocks)
        self.built = True

    @classmethod
    def from_pretrained(cls, object_shape, model="stylegan2-faces", **kwargs) -> "GeneratorObject":
        """Build from a shipped StyleGAN2 name (``stylegan2-faces``) or a model directory."""
        from adptycho.nn.stylegan2 import load_stylegan2

        generator, _, _ = load_stylegan2(model, discriminator=False)
        return cls(object_shape, generator, **kwargs)

    # -- block release ------------------------------------------------------------------
    @property
    def released_blocks(self) -> int:
        """Number of trainable synthesis blocks (shallow first)."""
        return self._released

    def release_blocks(self, count: int) -> None:
        """Make synthesis blocks ``0 .. count-1`` trainable and the others frozen."""
        count = int(count)
        if not 0 <= count <= self.num_blocks:
            raise AdptychoError(f"released blocks must be in [0, {self.num_blocks}], got {count}")
        for i, block in enumerate(self.generator.blocks):
            block.trainable = i < count
        self._released = count

    def block_variables(self, index: int) -> list:
        """Trainable variables of synthesis block ``index`` (0 = 4 x 4), released or not."""
        block = self.generator.blocks[int(index)]
        was = block.trainable
        block.trainable = True
        variables = list(block.trainable_weights)
        block.trainable = was
        return variables

    # -- forward ------------------------------------------------------------------------
    def generate(self, latent=None) -> tf.Tensor:
        """(1, R, R, 1) float32 raw generator output (nominally [-1, 1]) of the latent."""
        latent = tf.convert_to_tensor(self.latent if latent is None else latent)
        return self.generator.synthesize(latent[None], noise_mode=self.noise_mode)

    def region_values(self, raw=None) -> tf.Tensor:
        """(height, width) float32 image values v = (G + 1) / 2 resized to the region."""
        raw = self.generate() if raw is None else raw
        return resize_with_matrices((raw[0, :, :, 0] + 1.0) * 0.5, self._r_y, self._r_x)

    def values_on_grid(self, region=None) -> tf.Tensor:
        """(Y, X) float32 values on the object grid (amplitude, or phase / phase_scale_rad)."""
        region = self.region_values() if region is None else region
        fill = self.background if self.mode == "amplitude" else 0.0
        return tf.pad(region - fill, self._padding) + fill

    def parts_from_values(self, values):
        """``(real, imag)`` of the transmission for (..., Y, X) grid values."""
        if self.mode == "amplitude":
            return values, tf.zeros_like(values)
        phase = self.phase_scale_rad * values
        return tf.cos(phase), tf.sin(phase)

    def transmission_parts(self):
        """``(real, imag)`` (Y, X) float32 parts. The raw generator output and the region
        values of this evaluation are kept in ``last_raw`` (1, R, R, 1) and ``last_region``
        (height, width), so priors can reuse them inside the same traced step without running
        the generator twice."""
        raw = self.generate()
        region = self.region_values(raw)
        self.last_raw, self.last_region = raw, region
        return self.parts_from_values(self.values_on_grid(region))

    # -- results ------------------------------------------------------------------------
    def latent_numpy(self) -> np.ndarray:
        """Copy of the current latent, (num_ws, w_dim) or (w_dim,) float32."""
        return np.asarray(self.latent.numpy(), np.float32)

    def image(self) -> np.ndarray:
        """(R, R) float32 current generator image value v = (G + 1) / 2."""
        return ((self.generate()[0, :, :, 0] + 1.0) * 0.5).numpy()

    def assign_latent(self, latent) -> None:
        latent = np.asarray(latent, np.float32)
        if latent.shape != tuple(self.latent.shape):
            raise AdptychoError(f"latent has shape {latent.shape}, expected "
                                f"{tuple(self.latent.shape)}")
        self.latent.assign(latent)

    def get_config(self):
        config = super().get_config()
        config.update(region_px=self.region_px, mode=self.mode,
                      phase_scale_rad=self.phase_scale_rad, background=self.background,
                      w_plus=self.w_plus, released_blocks=self._released,
                      noise_mode=self.noise_mode)
        return config

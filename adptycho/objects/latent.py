"""``LatentObject``: the object as a latent vector through a frozen pretrained decoder.

Seifert, Shao & Mosk, Opt. Express 32, 1020 (2024), Sec. 2.2-2.3: the object is ``g(h)``, the
(32, 32) sigmoid output of an IRMAE decoder for the latent vector ``h`` (128 values instead of
~10^5 pixels), resized to the object's size with the Mitchell-Netravali cubic filter and used as
the amplitude transmission. The latent starts at the mean training latent h-bar (Eq. 2).

Transmission (``region_px = (y0, x0, h, w)``, default the whole grid):

* ``mode="amplitude"`` (the paper): ``O = b + pad(R_y g(h) R_x^T - b)``, real, with ``b`` the
  ``background`` outside the region (0: opaque, as the MNIST background);
* ``mode="phase"``: ``O = exp(i phase_scale_rad pad(R_y g(h) R_x^T))`` (unit amplitude).

Only the latent is trainable unless ``train_decoder=True``; ``PtychoModel`` trains whatever
``trainable_weights`` holds.
"""

from __future__ import annotations


import keras
import numpy as np
import tensorflow as tf

from adptycho.errors import AdptychoError
from adptycho.nn.resize import mitchell_resize_matrices, resize_with_matrices
from adptycho.objects.base import ObjectRepresentation

__all__ = ["LatentObject", "LATENT_MODES"]

LATENT_MODES = ("amplitude", "phase")


class LatentObject(ObjectRepresentation):
    """Object = resized decoder output of a trainable latent vector.

    Args:
        object_shape: (Y, X) object grid.
        decoder: Keras model mapping (B, n) latents to (B, 32, 32, 1) (or (B, 32, 32)) images.
        initial_latent: (n,) starting latent, normally the mean training latent h-bar.
        region_px: ``(y0, x0, height, width)`` where the resized image is placed in the grid
            (default: the whole grid).
        mode: ``"amplitude"`` (amplitude transmission = image) or ``"phase"``.
        background: amplitude outside the region (amplitude mode).
        phase_scale_rad: phase of an image value of 1 (phase mode).
        train_decoder: also train the decoder weights.
        antialias: antialiasing of the resize (only matters when shrinking).
    """

    def __init__(self, object_shape, decoder, initial_latent, *, region_px=None,
                 mode: str = "amplitude", background: float = 0.0,
                 phase_scale_rad: float = np.pi, train_decoder: bool = False,
                 antialias: bool = False, **kwargs):
        super().__init__(object_shape, **kwargs)
        if mode not in LATENT_MODES:
            raise AdptychoError(f"unknown latent object mode {mode!r}; choose one of "
                                f"{', '.join(LATENT_MODES)}")
        initial_latent = np.asarray(initial_latent, np.float32).reshape(-1)
        if not np.isfinite(initial_latent).all():
            raise AdptychoError("initial latent contains non-finite values")
        out = decoder(tf.constant(initial_latent[None]))
        image_shape = tuple(int(s) for s in out.shape[1:3])
        self.region_px = y0, x0, height, width = self._region(region_px)
        self.image_shape = image_shape
        self.mode = mode
        self.background = float(background)
        self.phase_scale_rad = float(phase_scale_rad)
        self.decoder = decoder
        self.decoder.trainable = bool(train_decoder)
        self.train_decoder = bool(train_decoder)
        r_y, r_x = mitchell_resize_matrices(image_shape, (height, width), antialias)
        self._r_y = tf.constant(r_y)
        self._r_x = tf.constant(r_x)
        self._padding = [[y0, self.object_shape[0] - y0 - height],
                         [x0, self.object_shape[1] - x0 - width]]
        self.latent_dim = int(initial_latent.size)
        self.latent = self.add_weight(shape=(self.latent_dim,), dtype="float32", name="latent",
                                      initializer=keras.initializers.Constant(initial_latent),
                                      aggregation="only_first_replica")
        self.built = True

    @classmethod
    def from_pretrained(cls, object_shape, model="irmae-mnist", **kwargs) -> "LatentObject":
        """Build from a shipped model name (``irmae-mnist``, ``irmae-mnist-3``) or a model
        directory; the latent starts at the model's mean training latent unless
        ``initial_latent`` is given."""
        from adptycho.nn.irmae import load_decoder

        decoder, mean_latent, _ = load_decoder(model)
        initial = kwargs.pop("initial_latent", None)
        return cls(object_shape, decoder, mean_latent if initial is None else initial, **kwargs)

    # -- forward ------------------------------------------------------------------------
    def decode(self, latents) -> tf.Tensor:
        """(B, n) latents -> (B, 32, 32) float32 decoder images."""
        images = self.decoder(latents)
        if images.shape.rank == 4:
            images = images[..., 0]
        return tf.cast(images, tf.float32)

    def images_to_region(self, images) -> tf.Tensor:
        """(B, 32, 32) images -> (B, height, width) Mitchell-resized region values."""
        return resize_with_matrices(images, self._r_y, self._r_x)

    def values_on_grid(self, latents) -> tf.Tensor:
        """(B, n) latents -> (B, Y, X) float32 real values placed on the object grid (the
        amplitude in amplitude mode, the phase / phase_scale_rad in phase mode)."""
        region = self.images_to_region(self.decode(latents))
        fill = self.background if self.mode == "amplitude" else 0.0
        padded = tf.pad(region - fill, [[0, 0]] + self._padding)
        return padded + fill

    def transmissions(self, latents) -> tf.Tensor:
        """(B, n) latents -> (B, Y, X) complex64 transmissions (batched, e.g. for landscapes)."""
        real, imag = self._parts(self.values_on_grid(latents))
        return tf.complex(real, imag)

    def _parts(self, values):
        if self.mode == "amplitude":
            return values, tf.zeros_like(values)
        phase = self.phase_scale_rad * values
        return tf.cos(phase), tf.sin(phase)

    def transmission_parts(self):
        latent = tf.convert_to_tensor(self.latent)[None]
        real, imag = self._parts(self.values_on_grid(latent)[0])
        return real, imag

    # -- results ------------------------------------------------------------------------
    def latent_numpy(self) -> np.ndarray:
        """(n,) float32 copy of the current latent."""
        return np.asarray(self.latent.numpy(), np.float32)

    def image(self) -> np.ndarray:
        """(32, 32) float32 decoder output of the current latent."""
        return self.decode(tf.convert_to_tensor(self.latent)[None])[0].numpy()

    def assign_latent(self, latent) -> None:
        latent = np.asarray(latent, np.float32).reshape(-1)
        if latent.shape != (self.latent_dim,):
            raise AdptychoError(f"latent has shape {latent.shape}, expected ({self.latent_dim},)")
        self.latent.assign(latent)

    def get_config(self):
        config = super().get_config()
        config.update(region_px=self.region_px, mode=self.mode, background=self.background,
                      phase_scale_rad=self.phase_scale_rad, train_decoder=self.train_decoder)
        return config

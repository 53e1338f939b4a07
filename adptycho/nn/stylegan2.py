"""A small single-channel StyleGAN2 (Karras et al. 2020) in Keras 3 (TensorFlow backend).

Architecture (NVlabs/stylegan2 ``networks_stylegan2.py``, stylegan2-ada-pytorch ``networks.py``;
methods notes section 2), sized for grey-scale images of 32 to 256 pixels:

* **equalized learning rate**: every kernel is stored N(0, 1/lrmul^2) and scaled at run time by
  ``lrmul / sqrt(fan_in)``; biases are scaled by ``lrmul``; leaky ReLU (0.2) outputs are
  multiplied by sqrt(2);
* **mapping network** ``z -> w``: pixel norm, ``mapping_layers`` dense + lrelu, lrmul 0.01;
  a running mean ``w_avg`` of w (decay 0.995) for truncation and latent initialisation;
* **synthesis network** ('skip' architecture): learned constant 4 x 4, then one block per
  resolution 8 ... R of (bilinear 2x upsampling + modulated 3x3 conv, modulated 3x3 conv),
  each modulated conv followed by a noise input (per-layer strength, initialised 0), bias and
  lrelu; a 1 x 1 un-demodulated "ToRGB" (here to one channel) per resolution summed into the
  upsampled image. ``num_ws = 2 log2(R) - 2`` style inputs (w+);
* **modulated / demodulated convolution** in its non-fused form
  ``y = conv(x * s, W) * d`` with ``s = affine(w)`` (bias initialised 1) and
  ``d_o = rsqrt(sum_i s_i^2 sum_k W_{k,i,o}^2 + 1e-8)``;
* **discriminator** ('resnet'): 1 x 1 FromRGB at full resolution, one residual block per
  resolution R ... 8 (3x3 conv, 2x2 average pooling, 3x3 conv; skip = pool + 1 x 1 conv without
  bias; sum / sqrt(2)), then minibatch standard deviation (group 4, 1 feature), a 3x3 conv,
  a dense layer and a dense output giving a logit.

Channel count at resolution ``r``: ``min(channel_base // r, channel_max)``.

Noise inputs have three modes: ``"random"`` (training; fresh N(0,1) maps), ``"const"`` (a fixed
map per layer, stored with the weights; used for reconstruction so that G is deterministic) and
``"none"``.

Images are float32 ``(B, R, R, 1)`` with values nominally in [-1, 1] (the training data range).
"""

from __future__ import annotations

import math
from typing import Optional

import keras
import tensorflow as tf

from adptycho.errors import AdptychoError
# the model directory (saving, loading, shipped names), re-exported here
from adptycho.nn.stylegan2_files import (SHIPPED_STYLEGAN2, STYLEGAN2_FILES,  # noqa: F401
                                         is_stylegan2_model, load_stylegan2, save_stylegan2,
                                         stylegan2_directory)

__all__ = ["StyleGAN2Generator", "StyleGAN2Discriminator", "generator_blocks", "num_ws",
           "channels_at", "save_stylegan2", "load_stylegan2", "stylegan2_directory",
           "SHIPPED_STYLEGAN2", "STYLEGAN2_FILES", "NOISE_MODES", "is_stylegan2_model"]

NOISE_MODES = ("random", "const", "none")
_SQRT2 = math.sqrt(2.0)


def _check_resolution(resolution: int) -> int:
    resolution = int(resolution)
    if resolution < 8 or resolution > 256 or resolution & (resolution - 1):
        raise AdptychoError(f"StyleGAN2 resolution must be a power of two from 8 to 256 "
                            f"(32 to 256 in practice), got {resolution}")
    return resolution


def num_ws(resolution: int) -> int:
    """Number of style inputs (w+ rows) of the synthesis network: ``2 log2(R) - 2``."""
    return 2 * int(round(math.log2(_check_resolution(resolution)))) - 2


def channels_at(resolution: int, channel_base: int, channel_max: int) -> int:
    """Feature channels at one resolution: ``clip(channel_base // resolution, 1, channel_max)``."""
    return int(max(1, min(channel_base // resolution, channel_max)))


def _lrelu(x):
    return tf.nn.leaky_relu(x, 0.2) * _SQRT2


def _upsample2(x):
    shape = tf.shape(x)
    return tf.image.resize(x, [shape[1] * 2, shape[2] * 2], method="bilinear")


def _downsample2(x):
    return tf.nn.avg_pool2d(x, 2, 2, "VALID")


class EqualDense(keras.layers.Layer):
    """Dense layer with equalized learning rate: (B, in_features) -> (B, units) float32."""

    def __init__(self, in_features: int, units: int, *, lr_multiplier: float = 1.0,
                 bias_init: float = 0.0, activation: Optional[str] = None, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.in_features, self.units = int(in_features), int(units)
        self.lr_multiplier, self.activation = float(lr_multiplier), activation
        self.kernel = self.add_weight(
            shape=(self.in_features, self.units), name="kernel",
            initializer=keras.initializers.RandomNormal(0.0, 1.0 / self.lr_multiplier, seed=seed))
        self.bias = self.add_weight(shape=(self.units,), name="bias",
                                    initializer=keras.initializers.Constant(
                                        bias_init / self.lr_multiplier))
        self.weight_gain = self.lr_multiplier / math.sqrt(self.in_features)
        self.built = True

    def call(self, x):
        y = tf.matmul(x, self.kernel * self.weight_gain) + self.bias * self.lr_multiplier
        return _lrelu(y) if self.activation == "lrelu" else y


class EqualConv(keras.layers.Layer):
    """Plain conv (discriminator) with equalized learning rate: (B, H, W, Cin) -> (B, H, W, Cout)."""

    def __init__(self, in_channels: int, filters: int, kernel_size: int = 3, *,
                 use_bias: bool = True, activation: Optional[str] = "lrelu", seed=None, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size, self.use_bias, self.activation = int(kernel_size), use_bias, activation
        self.kernel = self.add_weight(
            shape=(kernel_size, kernel_size, in_channels, filters), name="kernel",
            initializer=keras.initializers.RandomNormal(0.0, 1.0, seed=seed))
        self.bias = (self.add_weight(shape=(filters,), name="bias", initializer="zeros")
                     if use_bias else None)
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size ** 2)
        self.built = True

    def call(self, x):
        y = tf.nn.conv2d(x, self.kernel * self.weight_gain, 1, "SAME")
        if self.bias is not None:
            y = y + self.bias
        return _lrelu(y) if self.activation == "lrelu" else y


class ModulatedConv(keras.layers.Layer):
    """Modulated (and optionally demodulated) conv with noise input, bias and activation.

    ``call(x, w, noise_mode)``: x (B, H, W, in_channels), w (B, w_dim) -> (B, H', W', filters)
    with H' = 2H when ``upsample``.
    """

    def __init__(self, in_channels: int, filters: int, w_dim: int, resolution: int, *,
                 kernel_size: int = 3, upsample: bool = False, demodulate: bool = True,
                 use_noise: bool = True, activation: Optional[str] = "lrelu", seed: int = 0,
                 **kwargs):
        super().__init__(**kwargs)
        self.in_channels, self.filters = int(in_channels), int(filters)
        self.upsample, self.demodulate, self.activation = upsample, demodulate, activation
        self.affine = EqualDense(w_dim, in_channels, bias_init=1.0, seed=seed, name="affine")
        self.kernel = self.add_weight(
            shape=(kernel_size, kernel_size, in_channels, filters), name="kernel",
            initializer=keras.initializers.RandomNormal(0.0, 1.0, seed=seed + 1))
        self.bias = self.add_weight(shape=(filters,), name="bias", initializer="zeros")
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size ** 2)
        self.use_noise = use_noise
        if use_noise:
            self.noise_strength = self.add_weight(shape=(), name="noise_strength",
                                                  initializer="zeros")
            self.noise_const = self.add_weight(
                shape=(1, resolution, resolution, 1), name="noise_const", trainable=False,
                initializer=keras.initializers.RandomNormal(0.0, 1.0, seed=seed + 2))
        self.built = True

    def call(self, x, w, noise_mode: str = "random"):
        styles = self.affine.call(w)                                        # (B, Cin)
        kernel = self.kernel * self.weight_gain
        if self.upsample:
            x = _upsample2(x)
        y = tf.nn.conv2d(x * styles[:, None, None, :], kernel, 1, "SAME")
        if self.demodulate:
            # d_o = rsqrt(sum_i s_i^2 sum_k W_kio^2 + eps)
            d = tf.math.rsqrt(tf.matmul(tf.square(styles),
                                        tf.reduce_sum(tf.square(kernel), axis=[0, 1])) + 1e-8)
            y = y * d[:, None, None, :]
        if self.use_noise and noise_mode != "none":
            if noise_mode == "const":
                noise = self.noise_const
            else:
                shape = tf.shape(y)
                noise = tf.random.normal([shape[0], shape[1], shape[2], 1])
            y = y + noise * self.noise_strength
        y = y + self.bias
        return _lrelu(y) if self.activation == "lrelu" else y


class _SynthesisBlock(keras.layers.Layer):
    """One resolution of the skip generator (4 x 4: const + conv; higher: up-conv + conv) and its
    ToRGB. ``call(x, img, ws, noise_mode)`` -> (x, img)."""

    def __init__(self, resolution: int, in_channels: int, out_channels: int, w_dim: int,
                 seed: int, **kwargs):
        super().__init__(**kwargs)
        self.resolution = resolution
        if resolution == 4:
            self.const = self.add_weight(shape=(1, 4, 4, out_channels), name="const",
                                         initializer=keras.initializers.RandomNormal(
                                             0.0, 1.0, seed=seed))
            self.convs = [ModulatedConv(out_channels, out_channels, w_dim, 4, seed=seed + 10,
                                        name="conv1")]
        else:
            self.convs = [ModulatedConv(in_channels, out_channels, w_dim, resolution,
                                        upsample=True, seed=seed + 10, name="conv0"),
                          ModulatedConv(out_channels, out_channels, w_dim, resolution,
                                        seed=seed + 20, name="conv1")]
        self.torgb = ModulatedConv(out_channels, 1, w_dim, resolution, kernel_size=1,
                                   demodulate=False, use_noise=False, activation=None,
                                   seed=seed + 30, name="torgb")
        self.built = True

    def call(self, x, img, ws, noise_mode="random"):
        if self.resolution == 4:
            x = tf.tile(self.const, [tf.shape(ws)[0], 1, 1, 1])
        for i, conv in enumerate(self.convs):
            x = conv.call(x, ws[:, i], noise_mode)
        y = self.torgb.call(x, ws[:, len(self.convs)])
        img = y if img is None else _upsample2(img) + y
        return x, img


class StyleGAN2Generator(keras.Model):
    """Mapping + skip synthesis network: z (B, z_dim) -> image (B, R, R, 1) float32.

    Args:
        resolution: output size R (power of two, 8 to 256).
        z_dim, w_dim: latent sizes.
        mapping_layers: dense layers of the mapping network.
        channel_base, channel_max: channels at resolution r = min(channel_base // r, channel_max).
        seed: seeds the initial weights and the constant noise maps.

    ``generator.blocks`` lists the synthesis blocks shallow (4 x 4) to deep (R x R); a block's
    ``trainable_variables`` are what PtychoGAN releases stage by stage.
    """

    def __init__(self, resolution: int = 64, z_dim: int = 128, w_dim: int = 128,
                 mapping_layers: int = 2, channel_base: int = 2048, channel_max: int = 128,
                 seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.resolution = _check_resolution(resolution)
        if min(z_dim, w_dim, channel_base, channel_max) < 1 or mapping_layers < 1:
            raise AdptychoError("z_dim, w_dim, channel_base, channel_max and mapping_layers "
                                "must be positive")
        self.z_dim, self.w_dim, self.mapping_layers = int(z_dim), int(w_dim), int(mapping_layers)
        self.channel_base, self.channel_max, self.seed = int(channel_base), int(channel_max), seed
        self.num_ws = num_ws(self.resolution)
        self.mapping = [EqualDense(self.z_dim if i == 0 else self.w_dim, self.w_dim,
                                   lr_multiplier=0.01, activation="lrelu", seed=seed + i,
                                   name=f"mapping_{i}") for i in range(self.mapping_layers)]
        self.w_avg = self.add_weight(shape=(self.w_dim,), name="w_avg", initializer="zeros",
                                     trainable=False)
        self.blocks = []
        in_ch = 0
        for k in range(2, int(round(math.log2(self.resolution))) + 1):
            res = 2 ** k
            out_ch = channels_at(res, self.channel_base, self.channel_max)
            self.blocks.append(_SynthesisBlock(res, in_ch, out_ch, self.w_dim,
                                               seed=seed + 100 * k, name=f"block_{res}"))
            in_ch = out_ch
        self.built = True

    def map(self, z, truncation_psi: float = 1.0):
        """(B, z_dim) z -> (B, w_dim) w (with truncation towards ``w_avg`` when psi < 1)."""
        x = z * tf.math.rsqrt(tf.reduce_mean(tf.square(z), axis=1, keepdims=True) + 1e-8)
        for layer in self.mapping:
            x = layer.call(x)
        if truncation_psi != 1.0:
            x = self.w_avg + truncation_psi * (x - self.w_avg)
        return x

    def synthesize(self, ws, noise_mode: str = "random"):
        """(B, num_ws, w_dim) w+ (or (B, w_dim) w, broadcast) -> (B, R, R, 1) float32 images."""
        if noise_mode not in NOISE_MODES:
            raise AdptychoError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        ws = tf.convert_to_tensor(ws, tf.float32)
        if ws.shape.rank == 2:
            ws = tf.tile(ws[:, None, :], [1, self.num_ws, 1])
        x = img = None
        index = 0
        for block in self.blocks:
            n_conv = len(block.convs)
            x, img = block.call(x, img, ws[:, index:index + n_conv + 1], noise_mode)
            index += n_conv
        return img

    def call(self, z, truncation_psi: float = 1.0, noise_mode: str = "random"):
        """(B, z_dim) -> (B, R, R, 1) float32 images."""
        return self.synthesize(self.map(z, truncation_psi), noise_mode)

    def get_config(self):
        return {"resolution": self.resolution, "z_dim": self.z_dim, "w_dim": self.w_dim,
                "mapping_layers": self.mapping_layers, "channel_base": self.channel_base,
                "channel_max": self.channel_max, "seed": self.seed}


def generator_blocks(generator: StyleGAN2Generator) -> list:
    """Trainable variables of each synthesis block, shallow (4 x 4) first: list of lists."""
    return [list(block.trainable_variables) for block in generator.blocks]


class _DiscriminatorBlock(keras.layers.Layer):
    """Residual block: (B, r, r, Cin) -> (B, r/2, r/2, Cout)."""

    def __init__(self, in_channels, out_channels, seed, **kwargs):
        super().__init__(**kwargs)
        self.conv0 = EqualConv(in_channels, in_channels, 3, seed=seed, name="conv0")
        self.conv1 = EqualConv(in_channels, out_channels, 3, seed=seed + 1, name="conv1")
        self.skip = EqualConv(in_channels, out_channels, 1, use_bias=False, activation=None,
                              seed=seed + 2, name="skip")
        self.built = True

    def call(self, x):
        skip = self.skip.call(_downsample2(x))
        x = self.conv1.call(_downsample2(self.conv0.call(x)))
        return (x + skip) * (1.0 / _SQRT2)


class StyleGAN2Discriminator(keras.Model):
    """Residual discriminator: (B, R, R, 1) float32 images -> (B, 1) logits (real > 0).

    Args: as for :class:`StyleGAN2Generator` (resolution, channel_base, channel_max, seed);
    ``mbstd_group``: minibatch-stddev group size (the batch must be a multiple of it or smaller).
    """

    def __init__(self, resolution: int = 64, channel_base: int = 2048, channel_max: int = 128,
                 mbstd_group: int = 4, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.resolution = _check_resolution(resolution)
        self.channel_base, self.channel_max = int(channel_base), int(channel_max)
        self.mbstd_group, self.seed = int(mbstd_group), seed
        ch = lambda r: channels_at(r, self.channel_base, self.channel_max)  # noqa: E731
        self.fromrgb = EqualConv(1, ch(self.resolution), 1, seed=seed, name="fromrgb")
        self.blocks = []
        res = self.resolution
        while res > 4:
            self.blocks.append(_DiscriminatorBlock(ch(res), ch(res // 2), seed=seed + res,
                                                   name=f"block_{res}"))
            res //= 2
        c4 = ch(4)
        self.conv = EqualConv(c4 + 1, c4, 3, seed=seed + 1, name="conv4")
        self.dense = EqualDense(c4 * 16, c4, activation="lrelu", seed=seed + 2, name="dense")
        self.out = EqualDense(c4, 1, seed=seed + 3, name="out")
        self.built = True

    def _mbstd(self, x):
        shape = tf.shape(x)
        b, h, w, c = shape[0], shape[1], shape[2], shape[3]
        g = tf.minimum(self.mbstd_group, b)
        y = tf.reshape(x, [g, -1, h, w, c])
        y = y - tf.reduce_mean(y, axis=0)
        y = tf.sqrt(tf.reduce_mean(tf.square(y), axis=0) + 1e-8)        # (B/g, h, w, c)
        y = tf.reduce_mean(y, axis=[1, 2, 3])                            # (B/g,)
        y = tf.tile(y[:, None, None, None], [g, h, w, 1])               # (B, h, w, 1)
        return tf.concat([x, y], axis=-1)

    def call(self, images):
        """(B, R, R, 1) -> (B, 1) logits."""
        x = self.fromrgb.call(tf.convert_to_tensor(images, tf.float32))
        for block in self.blocks:
            x = block.call(x)
        x = self.conv.call(self._mbstd(x))
        x = self.dense.call(tf.reshape(x, [tf.shape(x)[0], -1]))
        return self.out.call(x)

    def get_config(self):
        return {"resolution": self.resolution, "channel_base": self.channel_base,
                "channel_max": self.channel_max, "mbstd_group": self.mbstd_group,
                "seed": self.seed}

"""Training a small StyleGAN2 on grey-scale faces (``adptycho train-stylegan2``).

Losses and schedule (NVlabs/stylegan2 ``training/loss.py``; methods notes section 2):
non-saturating logistic loss ``softplus(-D(G(z)))`` for G, ``softplus(D(G(z))) + softplus(-D(x))``
for D, lazy R1 penalty ``gamma/2 * |grad_x D(x)|^2`` on real images every ``r1_interval``
minibatches (multiplied by the interval; D's Adam rate and betas rescaled by
``c = interval / (interval + 1)``), Adam (lr 0.002, betas (0, 0.99), eps 1e-8), random
x-flips of the real images, an exponential moving average of the generator weights (half-life
``ema_kimg`` thousand images, ramped up over the first images as in stylegan2-ada) and a running
mean of w. No path-length regulariser and no style mixing (small-data, small-compute setting).

Resuming: the full state (G, EMA G, D, both Adam states, step, data-order seed) is written to
``out/checkpoint/state.npz`` every ``checkpoint_minutes`` (overwritten atomically) and on exit;
re-running the same command continues from it up to ``steps``. ``out/checkpoint/train.log``
records the losses and time per step. When the run reaches ``steps`` the model directory is
written (``nn.stylegan2_export.export_stylegan2``): EMA generator and discriminator weights,
``config.json``, sample grid, held-out projection figure and CSV, and ``card.md`` with sha256
hashes.

Data: the Olivetti faces (AT&T), 40 subjects x 10 images, (400, 64, 64) uint8; subjects
36-39 (images 360-399) are held out and never used for training.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from typing import Callable, Optional

import numpy as np

from adptycho.runtime import restores_global_rngs
from adptycho.errors import AdptychoError, DataError
# figures and the model directory (re-exported here)
from adptycho.nn.stylegan2_export import (export_from_checkpoint, export_stylegan2,
                                          project_images, sample_grid)

__all__ = ["load_faces", "train_stylegan2", "export_stylegan2", "export_from_checkpoint",
           "project_images", "sample_grid", "limit_threads", "HELD_OUT_SUBJECTS", "HELD_OUT"]

HELD_OUT_SUBJECTS = (36, 37, 38, 39)
HELD_OUT = slice(360, 400)
DEFAULT_DATA = os.path.join("..", "shared", "data", "olivetti_faces",
                            "olivetti_faces_400x64x64_uint8.npy")


def limit_threads(threads: int) -> None:
    """Restrict TensorFlow to ``threads`` intra- and inter-op threads (call before any op).

    Raises:
        AdptychoError: TensorFlow has already started with other thread counts, so the request
            cannot take effect (it is not silently ignored).
    """
    import tensorflow as tf

    threads = int(threads)
    threading = tf.config.threading
    try:
        threading.set_intra_op_parallelism_threads(threads)
        threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # already initialised: only the current setting can stand
        current = (threading.get_intra_op_parallelism_threads(),
                   threading.get_inter_op_parallelism_threads())
        if current != (threads, threads):
            raise AdptychoError(
                f"--threads {threads} cannot take effect: TensorFlow has already started with "
                f"{current[0] or 'default'} intra-op and {current[1] or 'default'} inter-op "
                "threads (set TF_NUM_INTRAOP_THREADS and TF_NUM_INTEROP_THREADS instead)") from None


def load_faces(path=None, resolution: int = 64) -> tuple:
    """Olivetti faces split by subject.

    Returns:
        ``(train, held_out)``: float32 arrays (360, R, R, 1) and (40, R, R, 1) in [-1, 1]
        (subjects 0-35 and 36-39).
    """
    path = DEFAULT_DATA if path is None else os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "olivetti_faces_400x64x64_uint8.npy")
    if not os.path.exists(path):
        raise DataError(f"Olivetti faces not found at {path} (expected the (400, 64, 64) uint8 "
                        "file olivetti_faces_400x64x64_uint8.npy)")
    faces = np.load(path)
    if faces.shape != (400, 64, 64):
        raise DataError(f"{path} has shape {faces.shape}, expected (400, 64, 64)")
    images = faces.astype(np.float32)[..., None] / 127.5 - 1.0
    if resolution != 64:
        import tensorflow as tf

        images = tf.image.resize(images, (resolution, resolution), method="area"
                                 if resolution < 64 else "bilinear").numpy()
    train = np.concatenate([images[:HELD_OUT.start], images[HELD_OUT.stop:]])
    return train.astype(np.float32), images[HELD_OUT].astype(np.float32)


# --------------------------------------------------------------------------------- checkpoints

def _state_arrays(g, g_ema, d, opt_g, opt_d) -> dict:
    arrays = {}
    for prefix, items in (("g", g.weights), ("gema", g_ema.weights), ("d", d.weights),
                          ("optg", opt_g.variables), ("optd", opt_d.variables)):
        for i, v in enumerate(items):
            arrays[f"{prefix}/{i:04d}"] = np.asarray(v.numpy())
    return arrays


def _restore_state(arrays, g, g_ema, d, opt_g, opt_d) -> None:
    for prefix, items in (("g", g.weights), ("gema", g_ema.weights), ("d", d.weights),
                          ("optg", opt_g.variables), ("optd", opt_d.variables)):
        keys = sorted(k for k in arrays if k.startswith(prefix + "/"))
        if len(keys) != len(items):
            raise DataError(f"checkpoint holds {len(keys)} {prefix} variables, the network has "
                            f"{len(items)}: resume with the same architecture options")
        for key, v in zip(keys, items):
            if tuple(arrays[key].shape) != tuple(v.shape):
                raise DataError(f"checkpoint variable {key} has shape {arrays[key].shape}, "
                                f"expected {tuple(v.shape)}: same architecture options needed")
            v.assign(arrays[key])


def _save_checkpoint(path, arrays, meta) -> None:
    from adptycho.io.atomic import atomic_path

    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    os.chmod(path, 0o644)


def _load_checkpoint(path) -> tuple:
    with np.load(path) as data:
        meta = json.loads(bytes(data["__meta__"]).decode())
        arrays = {k: data[k] for k in data.files if k != "__meta__"}
    return arrays, meta


# ----------------------------------------------------------------------------------- training

def _command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["adptycho"] + sys.argv[1:])


@restores_global_rngs
def train_stylegan2(out_dir, data=None, *, steps: int = 6000, resolution: int = 64,
                    batch_size: int = 16, z_dim: int = 128, w_dim: int = 128,
                    mapping_layers: int = 2, channel_base: int = 2048, channel_max: int = 128,
                    learning_rate: float = 0.002, r1_gamma: float = 0.5, r1_interval: int = 16,
                    ema_kimg: float = 2.5, ema_rampup: float = 0.05, seed: int = 0,
                    checkpoint_minutes: float = 5.0, sample_every: int = 500,
                    projection_steps: int = 300, verbose: int = 1, export: bool = True,
                    command: Optional[str] = None, max_seconds: Optional[float] = None,
                    eager: bool = False, on_step: Optional[Callable] = None) -> dict:
    """Train (or resume) a StyleGAN2 on the Olivetti training subjects; export when done.

    Args:
        out_dir: model directory; the resumable state lives in ``out_dir/checkpoint``.
        data: the Olivetti ``.npy`` file or its directory (default ``../shared/data/...``).
        steps: total minibatch steps (each: one G and one D update).
        resolution, z_dim, w_dim, mapping_layers, channel_base, channel_max: architecture.
        batch_size, learning_rate, r1_gamma, r1_interval, ema_kimg, ema_rampup: optimisation.
        seed: seeds the weights and the data order.
        checkpoint_minutes: wall-clock interval between checkpoints.
        sample_every: steps between sample grids (``out_dir/checkpoint/samples_latest.png``).
        projection_steps: Adam steps of the held-out projection in the exported card.
        export: write the model directory when ``steps`` is reached.
        command: command line for the card (default ``sys.argv``).
        max_seconds: stop (with a checkpoint) after this much wall time.
        eager: run the steps eagerly, without ``tf.function`` (tiny tests: no tracing time).
        on_step: ``f(step, values, g_ema)`` after every step (``values``: the step's ``g``,
            ``d``, ``r1``, ``D(x)``, ``D(G)``), e.g. ``training.tensorboard.GANStepLogger``.

    Returns:
        dict with ``step``, ``seconds_per_step`` (this run), ``finished`` and, after export,
        the projection metrics.
    """
    if steps < 1 or batch_size < 1 or r1_interval < 1:
        raise AdptychoError("steps, batch_size and r1_interval must be at least 1")
    train, held_out = load_faces(data, resolution)
    arch = {"resolution": resolution, "z_dim": z_dim, "w_dim": w_dim,
            "mapping_layers": mapping_layers, "channel_base": channel_base,
            "channel_max": channel_max}
    hyper = {"batch_size": batch_size, "learning_rate": learning_rate, "r1_gamma": r1_gamma,
             "r1_interval": r1_interval, "ema_kimg": ema_kimg, "ema_rampup": ema_rampup,
             "seed": seed, "augment": "x-flip"}
    run = _GANRun(out_dir, arch, hyper, train, eager)
    start_step = run.resume()
    stopped = False
    try:
        stopped = run.train(steps, checkpoint_minutes=checkpoint_minutes,
                            sample_every=sample_every, max_seconds=max_seconds, verbose=verbose,
                            on_step=on_step)
    finally:
        if run.step > start_step:
            run.save(run.step, "(end of run)")
    step = run.step
    result = {"step": step, "finished": step >= steps and not stopped,
              "seconds_per_step": run.seconds / max(step - start_step, 1)}
    if result["finished"] and export:
        result.update(export_stylegan2(os.fspath(out_dir), run.g_ema, run.d, held_out, train,
                                       arch=arch, hyper=hyper, steps=step, data=data,
                                       projection_steps=projection_steps,
                                       command=command or _command_line(),
                                       log_path=run.log_path, eager=eager))
    return result


class _GANRun:
    """One training run of ``train_stylegan2``: the networks (G, its EMA copy, D), their Adam
    optimisers, the step functions, and the checkpoint and log files in ``out_dir/checkpoint``.

    ``step`` is the number of steps done (counting resumed ones), ``seconds`` the wall time of
    this run's steps so far.
    """

    def __init__(self, out_dir, arch: dict, hyper: dict, train, eager: bool):
        import keras
        import tensorflow as tf
        from adptycho.nn.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

        self.ckpt_dir = os.path.join(os.fspath(out_dir), "checkpoint")
        os.makedirs(self.ckpt_dir, exist_ok=True)
        self.ckpt_path = os.path.join(self.ckpt_dir, "state.npz")
        self.log_path = os.path.join(self.ckpt_dir, "train.log")
        self.arch, self.hyper, self.num_train = arch, hyper, len(train)
        seed, learning_rate = hyper["seed"], hyper["learning_rate"]
        keras.utils.set_random_seed(seed)
        self.g = StyleGAN2Generator(**arch, seed=seed)
        self.g_ema = StyleGAN2Generator(**arch, seed=seed)
        self.d = StyleGAN2Discriminator(arch["resolution"], arch["channel_base"],
                                        arch["channel_max"], seed=seed + 7)
        self.g_ema.set_weights(self.g.get_weights())
        c = hyper["r1_interval"] / (hyper["r1_interval"] + 1.0)
        self.opt_g = keras.optimizers.Adam(learning_rate, beta_1=0.0, beta_2=0.99, epsilon=1e-8)
        self.opt_d = keras.optimizers.Adam(learning_rate * c, beta_1=0.0, beta_2=0.99 ** c,
                                           epsilon=1e-8)
        self.opt_g.build(self.g.trainable_variables)
        self.opt_d.build(self.d.trainable_variables)
        self.train_images = tf.constant(train)
        wrap = (lambda f: f) if eager else tf.function
        self.plain_step = wrap(lambda i, f, b: self._step(i, f, b, False))
        self.r1_step = wrap(lambda i, f, b: self._step(i, f, b, True))
        self.step = 0
        self.seconds = 0.0

    def _networks(self) -> tuple:
        return self.g, self.g_ema, self.d, self.opt_g, self.opt_d

    def resume(self) -> int:
        """Restore the checkpoint if there is one (same architecture); the step reached."""
        if os.path.exists(self.ckpt_path):
            arrays, meta = _load_checkpoint(self.ckpt_path)
            if meta.get("arch") != self.arch:
                raise DataError(f"checkpoint {self.ckpt_path} was made with {meta.get('arch')}, "
                                f"not {self.arch}: use the same architecture options (or "
                                "another --out)")
            _restore_state(arrays, *self._networks())
            self.step = int(meta["step"])
            _log(self.log_path, f"resumed at step {self.step} from {self.ckpt_path}")
        else:
            _log(self.log_path, f"new run: arch {json.dumps(self.arch)} hyper "
                                f"{json.dumps(self.hyper)} train images {self.num_train}")
        return self.step

    def save(self, step: int, note: str = "") -> None:
        """Write the full state at ``step`` to the checkpoint (atomically) and log it."""
        _save_checkpoint(self.ckpt_path, _state_arrays(*self._networks()),
                         {"step": step, "arch": self.arch, "hyper": self.hyper})
        _log(self.log_path, f"checkpoint at step {step}" + (f" {note}" if note else ""))

    def _step(self, indices, flips, beta, do_r1):
        """One G and one D update (lazy R1 when ``do_r1``) and the EMA of G's weights; returns
        the losses ``g``, ``d``, ``r1`` and the mean logits ``D(x)``, ``D(G)``."""
        import tensorflow as tf

        g, d, batch_size, z_dim = self.g, self.d, self.hyper["batch_size"], self.arch["z_dim"]
        gamma_scaled = self.hyper["r1_gamma"] * 0.5 * self.hyper["r1_interval"]
        reals = tf.gather(self.train_images, indices)
        reals = tf.where(flips[:, None, None, None], tf.reverse(reals, axis=[2]), reals)
        z = tf.random.normal([batch_size, z_dim])
        with tf.GradientTape() as tape:
            ws = g.map(z)
            fake = g.synthesize(ws, noise_mode="random")
            g_loss = tf.reduce_mean(tf.nn.softplus(-d.call(fake)))
        g_vars = g.trainable_variables
        self.opt_g.apply(tape.gradient(g_loss, g_vars), g_vars)
        g.w_avg.assign(tf.reduce_mean(ws, axis=0) + (g.w_avg - tf.reduce_mean(ws, axis=0)) * 0.995)
        fake = g(tf.random.normal([batch_size, z_dim]), noise_mode="random")
        r1 = tf.constant(0.0)
        with tf.GradientTape() as tape:
            if do_r1:
                with tf.GradientTape() as inner:
                    inner.watch(reals)
                    real_logits = d.call(reals)
                    real_sum = tf.reduce_sum(real_logits)
                grad = inner.gradient(real_sum, reals)
                r1 = tf.reduce_mean(tf.reduce_sum(tf.square(grad), axis=[1, 2, 3]))
            else:
                real_logits = d.call(reals)
            fake_logits = d.call(fake)
            d_loss = (tf.reduce_mean(tf.nn.softplus(fake_logits))
                      + tf.reduce_mean(tf.nn.softplus(-real_logits)))
            total = d_loss + gamma_scaled * r1
        d_vars = d.trainable_variables
        self.opt_d.apply(tape.gradient(total, d_vars), d_vars)
        for ve, v in zip(self.g_ema.trainable_variables, g_vars):
            ve.assign(v + (ve - v) * beta)
        self.g_ema.w_avg.assign(g.w_avg)
        return g_loss, d_loss, r1, tf.reduce_mean(real_logits), tf.reduce_mean(fake_logits)

    def minibatch(self, step: int):
        """``(indices, flips, beta)`` of ``step``: the images (seeded by seed and step, so a
        resumed run draws the same ones), their x-flips and the EMA factor (half-life
        ``ema_kimg`` thousand images, ramped up over the first ``ema_rampup`` of them)."""
        h = self.hyper
        rng = np.random.default_rng([h["seed"], step])
        indices = rng.integers(0, self.num_train, h["batch_size"]).astype(np.int32)
        flips = rng.random(h["batch_size"]) < 0.5
        nimg = step * h["batch_size"]
        ema_nimg = h["ema_kimg"] * 1000.0
        if h["ema_rampup"]:
            ema_nimg = min(ema_nimg, max(nimg, 1) * h["ema_rampup"])
        beta = np.float32(0.5 ** (h["batch_size"] / max(ema_nimg, 1e-8)))
        return indices, flips, beta

    def train(self, steps: int, *, checkpoint_minutes, sample_every, max_seconds, verbose,
              on_step) -> bool:
        """Run from ``step`` to ``steps`` (or until ``max_seconds``: returns True), logging,
        sampling and checkpointing on the way."""
        import keras
        import tensorflow as tf

        step = start_step = self.step
        t_start = last_ckpt = time.perf_counter()
        names = ("g", "d", "r1", "D(x)", "D(G)")
        progbar = keras.utils.Progbar(steps, verbose=verbose, stateful_metrics=[
            *names, "s/step"]) if verbose else None
        while step < steps:
            indices, flips, beta = self.minibatch(step)
            fn = self.r1_step if step % self.hyper["r1_interval"] == 0 else self.plain_step
            t0 = time.perf_counter()
            out = [float(x) for x in fn(tf.constant(indices), tf.constant(flips),
                                        tf.constant(beta))]
            dt = time.perf_counter() - t0
            step = self.step = step + 1
            self.seconds = time.perf_counter() - t_start
            if not np.all(np.isfinite(out)):
                raise AdptychoError(f"non-finite loss at step {step}: {out}")
            if progbar is not None:
                progbar.update(step, list(zip(names, out)) + [("s/step", dt)])
            if on_step is not None:
                on_step(step, dict(zip(names, out)), self.g_ema)
            if step % 50 == 0 or step == start_step + 1:
                _log(self.log_path, f"step {step} kimg {step * self.hyper['batch_size'] / 1000:.2f}"
                                    f" g {out[0]:.4f} d {out[1]:.4f} r1 {out[2]:.4f} D(x) "
                                    f"{out[3]:.3f} D(G) {out[4]:.3f} s/step {dt:.3f} mean s/step "
                                    f"{self.seconds / (step - start_step):.3f}")
            if step % sample_every == 0:
                sample_grid(self.g_ema, os.path.join(self.ckpt_dir, "samples_latest.png"),
                            title=f"EMA generator, step {step}")
            if time.perf_counter() - last_ckpt > checkpoint_minutes * 60:
                self.save(step)
                last_ckpt = time.perf_counter()
            if max_seconds is not None and self.seconds > max_seconds:
                return True
        return False


def _log(path, text) -> None:
    with open(path, "a") as f:
        f.write(time.strftime("%Y-%m-%dT%H:%M:%SZ ", time.gmtime()) + text + "\n")

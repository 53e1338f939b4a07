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
written (:func:`export_stylegan2`): EMA generator and discriminator weights, ``config.json``,
sample grid, held-out projection figure and CSV, and ``card.md`` with sha256 hashes.

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

__all__ = ["load_faces", "train_stylegan2", "export_stylegan2", "project_images",
           "limit_threads", "HELD_OUT_SUBJECTS", "HELD_OUT"]

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


# ------------------------------------------------------------------------------------ figures

def _to_unit(images):
    return np.clip((np.asarray(images)[..., 0] + 1.0) / 2.0, 0.0, 1.0)


def sample_grid(generator, path, *, rows: int = 6, cols: int = 8, seed: int = 123,
                title: str = "", truncation_psi: float = 1.0) -> None:
    """PNG of ``rows x cols`` samples of ``generator`` (fixed z from ``seed``, constant noise)."""
    import tensorflow as tf
    from adptycho.analysis.plots import _pyplot, save_figure

    z = np.random.default_rng(seed).standard_normal((rows * cols, generator.z_dim))
    images = _to_unit(generator(tf.constant(z, tf.float32), truncation_psi=truncation_psi,
                                noise_mode="const"))
    plt = _pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.0, rows * 1.0 + 0.3))
    for ax, im in zip(np.ravel(axes), images):
        ax.imshow(im, cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
    save_figure(fig, path, title, dpi=80, title_size=8)
    os.chmod(path, 0o644)


def project_images(generator, images, *, steps: int = 300, learning_rate: float = 0.05,
                   w_plus: bool = True, eager: bool = False) -> tuple:
    """Project images into the generator's latent space (StyleGAN2 projector, simplified).

    Optimises w (or w+ when ``w_plus``) from ``w_avg`` with Adam to minimise the pixel MSE,
    noise in "const" mode.

    Args:
        generator: a :class:`~adptycho.nn.stylegan2.StyleGAN2Generator`.
        images: (N, R, R, 1) float32 in [-1, 1].

    Returns:
        ``(projections (N, R, R, 1) float32, mse (N,) float64)`` with the MSE measured on the
        [0, 1] intensity scale.
    """
    import keras
    import tensorflow as tf

    images = tf.constant(np.asarray(images, np.float32))
    n = int(images.shape[0])
    w_avg = generator.w_avg.numpy()
    shape = (n, generator.num_ws, generator.w_dim) if w_plus else (n, generator.w_dim)
    w = tf.Variable(np.broadcast_to(w_avg, shape).astype(np.float32))
    opt = keras.optimizers.Adam(learning_rate)

    def step():
        with tf.GradientTape() as tape:
            out = generator.synthesize(w, noise_mode="const")
            loss = tf.reduce_mean(tf.square(out - images)) * n
        opt.apply([tape.gradient(loss, w)], [w])

    if not eager:
        step = tf.function(step)

    for _ in range(int(steps)):
        step()
    out = generator.synthesize(w, noise_mode="const").numpy()
    mse = np.mean((_to_unit(out) - _to_unit(images.numpy())) ** 2, axis=(1, 2))
    return out, mse.astype(np.float64)


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
    import keras
    import tensorflow as tf
    from adptycho.nn.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

    if steps < 1 or batch_size < 1 or r1_interval < 1:
        raise AdptychoError("steps, batch_size and r1_interval must be at least 1")
    out_dir = os.fspath(out_dir)
    ckpt_dir = os.path.join(out_dir, "checkpoint")
    os.makedirs(ckpt_dir, exist_ok=True)
    ckpt_path = os.path.join(ckpt_dir, "state.npz")
    log_path = os.path.join(ckpt_dir, "train.log")
    train, held_out = load_faces(data, resolution)
    arch = {"resolution": resolution, "z_dim": z_dim, "w_dim": w_dim,
            "mapping_layers": mapping_layers, "channel_base": channel_base,
            "channel_max": channel_max}
    hyper = {"batch_size": batch_size, "learning_rate": learning_rate, "r1_gamma": r1_gamma,
             "r1_interval": r1_interval, "ema_kimg": ema_kimg, "ema_rampup": ema_rampup,
             "seed": seed, "augment": "x-flip"}
    keras.utils.set_random_seed(seed)
    g = StyleGAN2Generator(**arch, seed=seed)
    g_ema = StyleGAN2Generator(**arch, seed=seed)
    d = StyleGAN2Discriminator(resolution, channel_base, channel_max, seed=seed + 7)
    g_ema.set_weights(g.get_weights())
    c = r1_interval / (r1_interval + 1.0)
    opt_g = keras.optimizers.Adam(learning_rate, beta_1=0.0, beta_2=0.99, epsilon=1e-8)
    opt_d = keras.optimizers.Adam(learning_rate * c, beta_1=0.0, beta_2=0.99 ** c, epsilon=1e-8)
    opt_g.build(g.trainable_variables)
    opt_d.build(d.trainable_variables)
    step = 0
    if os.path.exists(ckpt_path):
        arrays, meta = _load_checkpoint(ckpt_path)
        if meta.get("arch") != arch:
            raise DataError(f"checkpoint {ckpt_path} was made with {meta.get('arch')}, not "
                            f"{arch}: use the same architecture options (or another --out)")
        _restore_state(arrays, g, g_ema, d, opt_g, opt_d)
        step = int(meta["step"])
        _log(log_path, f"resumed at step {step} from {ckpt_path}")
    else:
        _log(log_path, f"new run: arch {json.dumps(arch)} hyper {json.dumps(hyper)} "
                       f"train images {len(train)}")

    train_t = tf.constant(train)
    gamma_scaled = r1_gamma * 0.5 * r1_interval

    def d_logits(images):
        return d.call(images)

    def step_fn(indices, flips, beta, do_r1):
        reals = tf.gather(train_t, indices)
        reals = tf.where(flips[:, None, None, None], tf.reverse(reals, axis=[2]), reals)
        z = tf.random.normal([batch_size, z_dim])
        with tf.GradientTape() as tape:
            ws = g.map(z)
            fake = g.synthesize(ws, noise_mode="random")
            g_loss = tf.reduce_mean(tf.nn.softplus(-d_logits(fake)))
        g_vars = g.trainable_variables
        opt_g.apply(tape.gradient(g_loss, g_vars), g_vars)
        g.w_avg.assign(tf.reduce_mean(ws, axis=0) + (g.w_avg - tf.reduce_mean(ws, axis=0)) * 0.995)
        fake = g(tf.random.normal([batch_size, z_dim]), noise_mode="random")
        r1 = tf.constant(0.0)
        with tf.GradientTape() as tape:
            if do_r1:
                with tf.GradientTape() as inner:
                    inner.watch(reals)
                    real_logits = d_logits(reals)
                    real_sum = tf.reduce_sum(real_logits)
                grad = inner.gradient(real_sum, reals)
                r1 = tf.reduce_mean(tf.reduce_sum(tf.square(grad), axis=[1, 2, 3]))
            else:
                real_logits = d_logits(reals)
            fake_logits = d_logits(fake)
            d_loss = (tf.reduce_mean(tf.nn.softplus(fake_logits))
                      + tf.reduce_mean(tf.nn.softplus(-real_logits)))
            total = d_loss + gamma_scaled * r1
        d_vars = d.trainable_variables
        opt_d.apply(tape.gradient(total, d_vars), d_vars)
        for ve, v in zip(g_ema.trainable_variables, g_vars):
            ve.assign(v + (ve - v) * beta)
        g_ema.w_avg.assign(g.w_avg)
        return g_loss, d_loss, r1, tf.reduce_mean(real_logits), tf.reduce_mean(fake_logits)

    wrap = (lambda f: f) if eager else tf.function
    plain_step = wrap(lambda i, f, b: step_fn(i, f, b, False))
    r1_step = wrap(lambda i, f, b: step_fn(i, f, b, True))

    start_step = step
    t_start = time.perf_counter()
    last_ckpt = time.perf_counter()
    progbar = keras.utils.Progbar(steps, verbose=verbose, stateful_metrics=[
        "g", "d", "r1", "D(x)", "D(G)", "s/step"]) if verbose else None
    run_seconds = 0.0
    stopped = False
    try:
        while step < steps:
            rng = np.random.default_rng([seed, step])
            indices = rng.integers(0, len(train), batch_size).astype(np.int32)
            flips = rng.random(batch_size) < 0.5
            nimg = step * batch_size
            ema_nimg = ema_kimg * 1000.0
            if ema_rampup:
                ema_nimg = min(ema_nimg, max(nimg, 1) * ema_rampup)
            beta = np.float32(0.5 ** (batch_size / max(ema_nimg, 1e-8)))
            fn = r1_step if step % r1_interval == 0 else plain_step
            t0 = time.perf_counter()
            out = [float(x) for x in fn(tf.constant(indices), tf.constant(flips),
                                        tf.constant(beta))]
            dt = time.perf_counter() - t0
            step += 1
            run_seconds = time.perf_counter() - t_start
            if not np.all(np.isfinite(out)):
                raise AdptychoError(f"non-finite loss at step {step}: {out}")
            if progbar is not None:
                progbar.update(step, [("g", out[0]), ("d", out[1]), ("r1", out[2]),
                                      ("D(x)", out[3]), ("D(G)", out[4]), ("s/step", dt)])
            if on_step is not None:
                on_step(step, dict(zip(("g", "d", "r1", "D(x)", "D(G)"), out)), g_ema)
            if step % 50 == 0 or step == start_step + 1:
                _log(log_path, f"step {step} kimg {step * batch_size / 1000:.2f} g {out[0]:.4f} "
                               f"d {out[1]:.4f} r1 {out[2]:.4f} D(x) {out[3]:.3f} "
                               f"D(G) {out[4]:.3f} s/step {dt:.3f} "
                               f"mean s/step {run_seconds / (step - start_step):.3f}")
            if step % sample_every == 0:
                sample_grid(g_ema, os.path.join(ckpt_dir, "samples_latest.png"),
                            title=f"EMA generator, step {step}")
            if time.perf_counter() - last_ckpt > checkpoint_minutes * 60:
                _save_checkpoint(ckpt_path, _state_arrays(g, g_ema, d, opt_g, opt_d),
                                 {"step": step, "arch": arch, "hyper": hyper})
                last_ckpt = time.perf_counter()
                _log(log_path, f"checkpoint at step {step}")
            if max_seconds is not None and run_seconds > max_seconds:
                stopped = True
                break
    finally:
        if step > start_step:
            _save_checkpoint(ckpt_path, _state_arrays(g, g_ema, d, opt_g, opt_d),
                             {"step": step, "arch": arch, "hyper": hyper})
            _log(log_path, f"checkpoint at step {step} (end of run)")
    result = {"step": step, "finished": step >= steps and not stopped,
              "seconds_per_step": run_seconds / max(step - start_step, 1)}
    if result["finished"] and export:
        result.update(export_stylegan2(out_dir, g_ema, d, held_out, train, arch=arch,
                                       hyper=hyper, steps=step, data=data,
                                       projection_steps=projection_steps,
                                       command=command or _command_line(), log_path=log_path,
                                       eager=eager))
    return result


def _log(path, text) -> None:
    with open(path, "a") as f:
        f.write(time.strftime("%Y-%m-%dT%H:%M:%SZ ", time.gmtime()) + text + "\n")


def export_from_checkpoint(out_dir, data=None, *, projection_steps: int = 300,
                           command: Optional[str] = None, target=None) -> dict:
    """Write the model directory from ``out_dir/checkpoint/state.npz`` (no training) to
    ``target`` (default ``out_dir``; another directory leaves the training log untouched)."""
    import keras
    from adptycho.nn.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

    ckpt_path = os.path.join(os.fspath(out_dir), "checkpoint", "state.npz")
    if not os.path.exists(ckpt_path):
        raise DataError(f"no checkpoint at {ckpt_path}")
    arrays, meta = _load_checkpoint(ckpt_path)
    if target is not None:
        os.makedirs(target, exist_ok=True)
    arch = meta["arch"]
    g_ema = StyleGAN2Generator(**arch)
    d = StyleGAN2Discriminator(arch["resolution"], arch["channel_base"], arch["channel_max"])
    for prefix, net in (("gema", g_ema), ("d", d)):
        keys = sorted(k for k in arrays if k.startswith(prefix + "/"))
        net.set_weights([arrays[k] for k in keys])
    del keras
    train, held_out = load_faces(data, arch["resolution"])
    log_path = os.path.join(os.fspath(out_dir), "checkpoint", "train.log")
    return export_stylegan2(out_dir if target is None else target, g_ema, d, held_out, train,
                            arch=arch, hyper=meta["hyper"], steps=int(meta["step"]), data=data,
                            projection_steps=projection_steps,
                            command=command or _command_line(),
                            log_path=log_path if target is None else None)


def export_stylegan2(out_dir, g_ema, d, held_out, train, *, arch, hyper, steps, data,
                     projection_steps, command, log_path=None, eager=False) -> dict:
    """Save weights + config, sample grid, projection figure/CSV and ``card.md``."""
    from adptycho.analysis.plots import _pyplot, save_figure
    from adptycho.nn.irmae import file_sha256
    from adptycho.nn.stylegan2 import STYLEGAN2_FILES, save_stylegan2

    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    sample_grid(g_ema, os.path.join(out_dir, "samples.png"),
                title=f"EMA generator samples after {steps} steps (z ~ N(0, I), psi = 1)")
    t0 = time.perf_counter()
    proj_held, mse_held = project_images(g_ema, held_out, steps=projection_steps, eager=eager)
    proj_train, mse_train = project_images(g_ema, train[:40], steps=projection_steps,
                                           eager=eager)
    proj_seconds = time.perf_counter() - t0
    mean_face = _to_unit(train).mean(axis=0)
    mse_mean_face = np.mean((_to_unit(held_out) - mean_face) ** 2, axis=(1, 2))
    with open(os.path.join(out_dir, "projection.csv"), "w") as f:
        f.write("image,subject,split,projection_mse,mean_face_mse\n")
        for i in range(len(held_out)):
            f.write(f"{360 + i},{36 + i // 10},held_out,{mse_held[i]:.6g},"
                    f"{mse_mean_face[i]:.6g}\n")
        for i in range(40):
            f.write(f"{i},{i // 10},train,{mse_train[i]:.6g},\n")
    plt = _pyplot()
    show = [0, 5, 10, 15, 20, 25, 30, 35]
    fig, axes = plt.subplots(2, len(show), figsize=(len(show) * 1.1, 2.6))
    for c, i in enumerate(show):
        for r, im in enumerate((_to_unit(held_out[i:i + 1])[0], _to_unit(proj_held[i:i + 1])[0])):
            axes[r, c].imshow(im, cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[1, c].set_xlabel(f"{mse_held[i]:.4f}", fontsize=7)
    axes[0, 0].set_ylabel("held out", fontsize=7)
    axes[1, 0].set_ylabel("projection", fontsize=7)
    save_figure(fig, os.path.join(out_dir, "projection.png"),
                f"held-out faces (subjects 36-39) and w+ projections; mean MSE "
                f"{mse_held.mean():.4f}", dpi=90, title_size=8)
    os.chmod(os.path.join(out_dir, "projection.png"), 0o644)
    metrics = {"held-out projection MSE (mean of 40, [0,1] scale)": float(mse_held.mean()),
               "held-out projection MSE (median)": float(np.median(mse_held)),
               "training-subject projection MSE (images 0-39)": float(mse_train.mean()),
               "held-out MSE of the mean training face (baseline)": float(mse_mean_face.mean()),
               "projection seconds": proj_seconds}
    # weights, config and card last and together (the slow projection is done), so the
    # directory's files and the card's hashes disagree only for a moment
    save_stylegan2(out_dir, g_ema, d, {"steps": steps, "train_images": int(len(train)),
                                       "held_out_subjects": list(HELD_OUT_SUBJECTS), **hyper})
    g_params = int(sum(np.prod(v.shape) for v in g_ema.weights))
    d_params = int(sum(np.prod(v.shape) for v in d.weights))
    lines = [
        "# StyleGAN2 on Olivetti faces (64 x 64, grey scale)", "",
        f"* data: Olivetti faces (AT&T Laboratories Cambridge), `{data or DEFAULT_DATA}`, "
        "(400, 64, 64) uint8 scaled to [-1, 1]; training on subjects 0-35 (images 0-359, "
        f"{len(train)} images, random x-flips)",
        "* held out (never used in training): subjects 36-39, images 360-399",
        f"* command: `{command}`",
        f"* steps: {steps} (batch {hyper['batch_size']}, {steps * hyper['batch_size']} images "
        "shown)",
        f"* architecture: `adptycho.nn.stylegan2`, {json.dumps(arch)}; generator "
        f"{g_params} parameters (EMA weights shipped), discriminator {d_params}",
        f"* optimisation: {json.dumps(hyper)}; non-saturating logistic loss, lazy R1, "
        "Adam betas (0, 0.99)",
    ]
    lines += [f"* {k}: {v:.5g}" for k, v in metrics.items()]
    lines += ["", "Quality figure: `projection.png` / `projection.csv`: each held-out face is "
              f"projected by optimising w+ (init w_avg, Adam lr 0.05, {projection_steps} steps, "
              "constant noise) to minimise the pixel MSE; MSE on the [0, 1] grey scale. "
              "`samples.png`: 48 samples of the EMA generator.", "",
              "## Files (sha256sum format; `sha256sum -c` in this directory checks them)", "",
              "```"]
    for name in STYLEGAN2_FILES + ("config.json",):
        lines.append(f"{file_sha256(os.path.join(out_dir, name))}  {name}")
    lines += ["```", ""]
    from adptycho.io.atomic import atomic_path

    with atomic_path(os.path.join(out_dir, "card.md"), suffix=".md") as tmp:
        with open(tmp, "w") as f:
            f.write("\n".join(lines))
    os.chmod(os.path.join(out_dir, "card.md"), 0o644)
    if log_path:
        _log(log_path, f"exported at step {steps}: {json.dumps(metrics)}")
    return metrics

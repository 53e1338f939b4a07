"""The model directory of a trained StyleGAN2 (``adptycho train-stylegan2``): EMA generator and
discriminator weights, ``config.json``, a sample grid, the held-out projection figure and CSV,
and ``card.md`` with sha256 hashes (``export_stylegan2``; ``export_from_checkpoint`` writes it
from a training checkpoint). The quality measure is the projection of the held-out faces into
the generator's latent space (``project_images``).
"""

from __future__ import annotations

import json
import os
import time
from typing import Optional

import numpy as np

from adptycho.errors import DataError

__all__ = ["sample_grid", "project_images", "export_stylegan2", "export_from_checkpoint"]


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


def export_from_checkpoint(out_dir, data=None, *, projection_steps: int = 300,
                           command: Optional[str] = None, target=None) -> dict:
    """Write the model directory from ``out_dir/checkpoint/state.npz`` (no training) to
    ``target`` (default ``out_dir``; another directory leaves the training log untouched)."""
    from adptycho.nn.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
    from adptycho.nn.stylegan2_training import _command_line, _load_checkpoint, load_faces

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
    train, held_out = load_faces(data, arch["resolution"])
    log_path = os.path.join(os.fspath(out_dir), "checkpoint", "train.log")
    return export_stylegan2(out_dir if target is None else target, g_ema, d, held_out, train,
                            arch=arch, hyper=meta["hyper"], steps=int(meta["step"]), data=data,
                            projection_steps=projection_steps,
                            command=command or _command_line(),
                            log_path=log_path if target is None else None)


def export_stylegan2(out_dir, g_ema, d, held_out, train, *, arch, hyper, steps, data,
                     projection_steps, command, log_path=None, eager=False) -> dict:
    """Save weights + config, sample grid, projection figure/CSV and ``card.md``; returns the
    projection metrics. The weights, config and card are written last and together (after the
    slow projection), so the directory's files and the card's hashes disagree only briefly."""
    from adptycho.nn.stylegan2 import save_stylegan2
    from adptycho.nn.stylegan2_training import HELD_OUT_SUBJECTS, _log

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
    _projection_csv(os.path.join(out_dir, "projection.csv"), mse_held, mse_train, mse_mean_face)
    _projection_figure(os.path.join(out_dir, "projection.png"), held_out, proj_held, mse_held)
    metrics = {"held-out projection MSE (mean of 40, [0,1] scale)": float(mse_held.mean()),
               "held-out projection MSE (median)": float(np.median(mse_held)),
               "training-subject projection MSE (images 0-39)": float(mse_train.mean()),
               "held-out MSE of the mean training face (baseline)": float(mse_mean_face.mean()),
               "projection seconds": proj_seconds}
    save_stylegan2(out_dir, g_ema, d, {"steps": steps, "train_images": int(len(train)),
                                       "held_out_subjects": list(HELD_OUT_SUBJECTS), **hyper})
    _write_card(out_dir, g_ema, d, train, arch=arch, hyper=hyper, steps=steps, data=data,
                projection_steps=projection_steps, command=command, metrics=metrics)
    if log_path:
        _log(log_path, f"exported at step {steps}: {json.dumps(metrics)}")
    return metrics


def _projection_csv(path, mse_held, mse_train, mse_mean_face) -> None:
    """Per-image projection MSE of the 40 held-out and the first 40 training faces."""
    with open(path, "w") as f:
        f.write("image,subject,split,projection_mse,mean_face_mse\n")
        for i in range(len(mse_held)):
            f.write(f"{360 + i},{36 + i // 10},held_out,{mse_held[i]:.6g},"
                    f"{mse_mean_face[i]:.6g}\n")
        for i in range(40):
            f.write(f"{i},{i // 10},train,{mse_train[i]:.6g},\n")


def _projection_figure(path, held_out, proj_held, mse_held) -> None:
    """Eight held-out faces over their w+ projections, with the MSE of each."""
    from adptycho.analysis.plots import _pyplot, save_figure

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
    save_figure(fig, path,
                f"held-out faces (subjects 36-39) and w+ projections; mean MSE "
                f"{mse_held.mean():.4f}", dpi=90, title_size=8)
    os.chmod(path, 0o644)


def _write_card(out_dir, g_ema, d, train, *, arch, hyper, steps, data, projection_steps,
                command, metrics) -> None:
    """``card.md``: data, command, architecture, optimisation, metrics and file hashes."""
    from adptycho.io.atomic import atomic_path
    from adptycho.nn.irmae import file_sha256
    from adptycho.nn.stylegan2 import STYLEGAN2_FILES
    from adptycho.nn.stylegan2_training import DEFAULT_DATA

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
    with atomic_path(os.path.join(out_dir, "card.md"), suffix=".md") as tmp:
        with open(tmp, "w") as f:
            f.write("\n".join(lines))
    os.chmod(os.path.join(out_dir, "card.md"), 0o644)

"""Where an Adam epoch's time goes on the standard problem (foundation issue, speed figure).

Times, per epoch-equivalent (``400 / batch`` compiled calls of one batch), on the standard
problem of ``experiments/benchmark.py`` (512x512 object, 128x128 probe, 400 Fermat positions):

* ``fft_floor``: the 400 forward + 400 inverse 128x128 FFTs of an epoch, as in the benchmark
  (``benchmark.time_fft_floor``);
* ``gradient_on_patches``: amplitude-loss gradient w.r.t. a batch of pre-cut object patches
  and the probe (exit wave, far field, loss; no gather or scatter);
* ``physics_gradient``: the same w.r.t. the whole 512x512 object and the probe through
  ``forward_intensities`` (patch gather and its adjoint included), integer positions;
* ``physics_gradient_fractional``: the same with fractional positions (Fourier sub-pixel shift
  of the probe, forward and adjoint);
* ``train_step``: ``PtychoModel.train_step`` (object + probe, Adam, NaN guard), compiled;
* ``fit_epoch``: a ``model.fit`` epoch (median of 3 after 1 warm-up).

All XLA-compiled (``jit_compile=True``). Writes ``--out`` (default
``experiments/speed_breakdown.json``).

Run::

    python experiments/speed_breakdown.py --batch-size 64
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def _median_epoch(fn, steps, repeats=7):
    import tensorflow as tf

    result = fn()
    tf.nest.map_structure(lambda t: t.numpy(), result)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            result = fn()
        tf.nest.map_structure(lambda t: t.numpy(), result)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    import adptycho.runtime

    adptycho.runtime.configure()  # as the adptycho command does (import no longer tunes malloc)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default=os.path.join(HERE, "speed_breakdown.json"))
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from adptycho.geometry import gaussian_probe
    from adptycho.physics.forward import forward_intensities
    from adptycho.reconstruction import build_model

    spec = importlib.util.spec_from_file_location("benchmark", os.path.join(HERE, "benchmark.py"))
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    scan, obj, probe = benchmark.standard_problem()
    b = args.batch_size
    steps = int(np.ceil(scan.num_patterns / b))
    rng = np.random.default_rng(0)
    measured = tf.constant(scan.patterns[:b])
    corners = tf.constant(scan.positions_px[:b], tf.float32)
    fractional = corners + 0.37
    obj_re = tf.Variable(np.real(obj).astype(np.float32))
    obj_im = tf.Variable(np.imag(obj).astype(np.float32))
    pr = tf.Variable(np.real(probe)[None].astype(np.float32))
    pi = tf.Variable(np.imag(probe)[None].astype(np.float32))
    patch_re = tf.Variable(rng.normal(size=(b, 128, 128)).astype(np.float32))
    patch_im = tf.Variable(rng.normal(size=(b, 128, 128)).astype(np.float32))
    checker = tf.constant(np.where((np.arange(128)[:, None] + np.arange(128)) % 2 == 0,
                                   1.0, -1.0).astype(np.complex64))

    def amplitude_loss(intensity):
        return tf.reduce_sum((tf.sqrt(intensity + 1e-9) - tf.sqrt(measured)) ** 2)

    @tf.function(jit_compile=True)
    def gradient_on_patches():
        with tf.GradientTape() as tape:
            wave = tf.complex(pr, pi) * checker * tf.complex(patch_re, patch_im)
            far = tf.signal.fft2d(wave)
            loss = amplitude_loss((tf.math.real(far) ** 2 + tf.math.imag(far) ** 2) / 16384.0)
        return tape.gradient(loss, [patch_re, patch_im, pr, pi])

    def physics(positions, subpixel):
        @tf.function(jit_compile=True)
        def gradient():
            with tf.GradientTape() as tape:
                loss = amplitude_loss(forward_intensities((obj_re, obj_im), tf.complex(pr, pi),
                                                          positions, subpixel=subpixel))
            return tape.gradient(loss, [obj_re, obj_im, pr, pi])
        return gradient

    keras.utils.set_random_seed(0)
    model, _ = build_model(scan, probe=gaussian_probe(scan.detector_shape, 60.0),
                           normalise_probe=True, object_shape=(512, 512))
    model.compile(refine=("object", "probe"), jit_compile=True, steps_per_execution=steps)
    model.set_epoch(5)  # both groups active
    indices = tf.range(b)
    train_step = tf.function(lambda: model.train_step((indices, measured))["loss"],
                             jit_compile=True)

    out = {"batch_size": b, "steps_per_epoch": steps, "threads": os.cpu_count(),
           "tensorflow": tf.__version__}
    out["fft_floor_s"] = benchmark.time_fft_floor(scan.num_patterns, scan.detector_shape, b)
    print(f"{'fft_floor':30s} {out['fft_floor_s']:.4f} s per epoch", flush=True)
    for name, fn in (("gradient_on_patches", gradient_on_patches),
                     ("physics_gradient", physics(corners, False)),
                     ("physics_gradient_fractional", physics(fractional, True)),
                     ("train_step", train_step)):
        out[name + "_s"] = _median_epoch(fn, steps)
        print(f"{name:30s} {out[name + '_s']:.4f} s per epoch", flush=True)
    fit = benchmark.time_fit(scan, ("object", "probe"), b, epochs=3, warmup=1)
    out["fit_epoch_s"] = fit["median_s"]
    print(f"{'fit_epoch':30s} {out['fit_epoch_s']:.4f} s per epoch", flush=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

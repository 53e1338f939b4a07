"""Peer timing: cdtools ``SimplePtycho`` refined with Adam on a far-field ptychography problem.

What it measures
----------------
Wall-clock seconds per epoch (one pass over all N diffraction patterns, in minibatches) of
``cdtools.models.SimplePtycho.Adam_optimize`` on the CPU, refining object and probe (cdtools'
default). ``Adam_optimize`` is a generator yielding once per epoch; each ``next()`` is timed with
``time.perf_counter``. The first ``--warmup`` epochs are discarded; the median of the next
``--epochs`` epochs is reported, with patterns/s = N / median. Results are printed and optionally
written as JSON (``--json-out``). torch and cdtools are needed only by this script, not by adptycho.

How the problem is handed to cdtools
------------------------------------
The input npz holds ``patterns`` (N, H, W) float32 photon counts with the zero frequency at
(H//2, W//2), generated as ``I = |fftshift(fft2(P * O[r:r+H, c:c+W]))|^2 / (H W)``;
``positions_px`` (N, 2) (row, col) top-left corners of the probe window in object pixels;
``probe`` (H, W) complex64 initial probe; ``object_shape`` (2,).

cdtools' far field is ``fftshift(fft2(ifftshift(psi), norm="ortho"))``; the extra ``ifftshift``
only multiplies the detector wave by a phase ramp, so its intensities equal the model above. A
``Ptycho2DDataset`` is built with wavelength ``LAMBDA``, distance ``DIST`` and the detector basis
``[[0, -LAMBDA*DIST/(W*DX)], [-LAMBDA*DIST/(H*DX), 0], [0, 0]]`` (columns = detector i, j pixel
vectors in lab (x, y, z), the sign convention of cdtools' example data). ``exit_wave_geometry`` then
gives an H x W probe window whose pixels are DX x DX in the sample plane with i -> -y and j -> -x,
and the lab translations are produced by cdtools' own ``pixel_to_translations`` of that basis, so
``translations_to_pixel`` returns exactly ``positions_px``. ``SimplePtycho.from_dataset`` then builds
the model. By default the model is then given the npz probe as initial probe (instead of cdtools'
mean-pattern "SHARP" guess) and an all-ones object of ``object_shape`` with zero offset (instead of
the scan's bounding box), so that it starts from the same point as adptycho; see
``--init-probe`` / ``--object-extent`` to keep cdtools' own choices.

Before timing, the geometry is verified: the model's forward intensities for a random test object
are compared with a direct numpy evaluation of the model above at the (rounded) positions, and an
error is raised if they disagree (this is the real guard: a transposed or shuffled geometry
still lowers the loss somewhat). ``--check`` additionally runs ``--check-epochs`` epochs from a
separate model and reports the first and last epoch loss (exit status 1 unless it decreased), and,
when the npz also holds ``object_true`` and ``probe_true`` (synthetic data), the loss of the truth,
i.e. the noise floor the reconstruction should approach.

Notes: cdtools' ``SimplePtycho.interaction`` uses ``tools.interactions.ptycho_2D_round``, which
rounds the pixel translations to integers (no sub-pixel shifts); this is reported as
``integer_positions`` (checked empirically too). The loss is cdtools' amplitude MSE summed over a
batch, reported per epoch divided by the number of detector pixels in the dataset. cdtools runs the
epoch in a helper thread by default (for live plotting, with a 10 ms polling loop); here
``thread=False`` is used unless ``--cdtools-thread`` is given.

Example::

    python experiments/peer_cdtools.py --data problem.npz --json-out peer_cdtools.json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import inspect
import json
import platform
import statistics
import sys
import time

import numpy as np

# Arbitrary but self-consistent geometry (SI units): one object pixel is DX metres.
LAMBDA = 1.0e-9
DIST = 1.0
DX = 10.0e-9


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="input .npz (patterns, positions_px, probe, object_shape)")
    p.add_argument("--epochs", type=int, default=7, help="timed epochs (default 7)")
    p.add_argument("--warmup", type=int, default=2, help="discarded warm-up epochs (default 2)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="minibatch size (default: cdtools' Adam_optimize default, read at run time)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: cdtools' default)")
    p.add_argument("--calculation-width", type=int, default=None,
                   help="patterns per gradient-accumulation chunk inside a batch (default: cdtools')")
    p.add_argument("--init-probe", choices=["npz", "sharp"], default="npz",
                   help="initial probe: the npz 'probe' (default) or cdtools' SHARP-style guess")
    p.add_argument("--object-extent", choices=["npz", "scan"], default="npz",
                   help="object array: object_shape from the npz (default) or cdtools' scan bounding box")
    p.add_argument("--cdtools-thread", action="store_true",
                   help="run epochs in cdtools' helper thread (its interactive default)")
    p.add_argument("--check", action="store_true",
                   help="also run --check-epochs epochs and report first vs last loss")
    p.add_argument("--check-epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0, help="torch seed (minibatch shuffling)")
    p.add_argument("--json-out", default=None, help="write the results here as JSON")
    p.add_argument("--quality-target", type=float, default=None,
                   help="time to quality: run until the object NRMSE (global complex factor "
                        "removed, on the npz's quality_mask) is at most this, or --epochs "
                        "epochs; needs object_true and quality_mask in the npz")
    p.add_argument("--fixed-probe", action="store_true",
                   help="do not refine the probe (known-probe problems)")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.warmup < 0 or args.threads < 1 or args.check_epochs < 1:
        p.error("need --epochs >= 1, --warmup >= 0, --threads >= 1, --check-epochs >= 1")
    if args.batch_size is not None and args.batch_size < 1:
        p.error("--batch-size must be >= 1")
    return args


def load_problem(path):
    with np.load(path) as z:
        patterns = np.ascontiguousarray(z["patterns"], dtype=np.float32)
        positions = np.asarray(z["positions_px"], dtype=np.float64)
        probe = np.asarray(z["probe"], dtype=np.complex64)
        object_shape = tuple(int(s) for s in np.asarray(z["object_shape"]).ravel())
        truth = None
        if "object_true" in z.files and "probe_true" in z.files:  # optional, synthetic data only
            truth = (np.asarray(z["object_true"]), np.asarray(z["probe_true"]))
    n, h, w = patterns.shape
    if positions.shape != (n, 2) or probe.shape != (h, w) or len(object_shape) != 2:
        raise ValueError(f"inconsistent shapes: patterns {patterns.shape}, positions "
                         f"{positions.shape}, probe {probe.shape}, object_shape {object_shape}")
    return patterns, positions, probe, object_shape, truth


def truth_loss(patterns, positions, truth):
    """cdtools' epoch loss (amplitude MSE per detector pixel) of the true object and probe."""
    obj, probe = truth
    total = 0.0
    for start in range(0, len(patterns), 50):
        sim = numpy_intensities(obj, probe, positions[start:start + 50])
        total += float(np.sum((np.sqrt(sim + 1e-7) - np.sqrt(patterns[start:start + 50])) ** 2))
    return total / patterns.size


def build_dataset(patterns, positions):
    """Ptycho2DDataset whose probe-plane pixel is DX and whose translations are ``positions``."""
    import torch as t
    from cdtools import tools
    from cdtools.datasets import Ptycho2DDataset

    _, h, w = patterns.shape
    det_basis = t.tensor([[0.0, -LAMBDA * DIST / (w * DX)],
                          [-LAMBDA * DIST / (h * DX), 0.0],
                          [0.0, 0.0]], dtype=t.float32)
    probe_basis = tools.initializers.exit_wave_geometry(det_basis, (h, w), LAMBDA, DIST)
    # Lab-frame (x, y, z) translations from cdtools' own inverse of translations_to_pixel.
    translations = tools.interactions.pixel_to_translations(
        probe_basis.to(t.float64), t.as_tensor(positions, dtype=t.float64))
    translations = translations.numpy().astype(np.float32)  # cdtools' from_cxi stores float32
    dataset = Ptycho2DDataset(
        translations, t.as_tensor(patterns),
        wavelength=LAMBDA,
        detector_geometry={"basis": det_basis, "distance": DIST},
    )
    # Round trip: the model will see exactly positions_px (up to float32 rounding).
    back = tools.interactions.translations_to_pixel(probe_basis, dataset.translations).numpy()
    err = float(np.max(np.abs(back - positions)))
    if err > 1e-3:
        raise RuntimeError(f"translation round trip is off by {err} px")
    geometry = {
        "wavelength_m": LAMBDA, "distance_m": DIST, "object_pixel_m": DX,
        "detector_pixel_m": [LAMBDA * DIST / (h * DX), LAMBDA * DIST / (w * DX)],
        "probe_basis_m": probe_basis.tolist(), "translation_roundtrip_max_err_px": err,
    }
    return dataset, geometry


def build_model(dataset, probe, object_shape, positions, init_probe, object_extent):
    import torch as t
    from cdtools.models import SimplePtycho

    model = SimplePtycho.from_dataset(dataset)
    if init_probe == "npz":
        norm = t.max(t.abs(t.as_tensor(probe)))
        model.probe_norm = norm.to(model.probe_norm.dtype)
        model.probe = t.nn.Parameter(t.as_tensor(probe, dtype=t.complex64) / norm)
    if object_extent == "npz":
        h, w = probe.shape
        if positions.min() < -0.5 or np.any(np.round(positions).max(0) + (h, w) > object_shape):
            raise ValueError("a probe window falls outside object_shape")
        model.obj = t.nn.Parameter(t.ones(object_shape, dtype=t.complex64))
        model.min_translation = t.zeros_like(model.min_translation)
    return model


def numpy_intensities(obj, probe, positions):
    """Reference model at integer (rounded, half to even like torch.round) positions."""
    h, w = probe.shape
    corners = np.round(positions).astype(int)
    patches = np.stack([obj[r:r + h, c:c + w] for r, c in corners])
    far = np.fft.fftshift(np.fft.fft2(probe * patches), axes=(-2, -1))
    return np.abs(far) ** 2 / (h * w)


def verify_geometry(model, dataset, positions, n_test=8, seed=1):
    """Compare the model's intensities for a random object with the numpy reference.

    The reference evaluates ``|fftshift(fft2(P * O[r:r+H, c:c+W]))|^2 / (H W)`` on the model's own
    object array at ``round(positions - min_translation)`` (``min_translation`` is zero with the
    default ``--object-extent npz``, so this is then exactly the problem's definition).

    Returns (max relative error, integer_positions) where integer_positions says whether moving
    the translations by 0.3 pixel off the integer grid leaves the model's output unchanged.
    """
    import torch as t
    from cdtools import tools

    rng = np.random.default_rng(seed)
    saved = model.obj.detach().clone()
    shape = tuple(saved.shape)
    obj = (rng.uniform(0.5, 1.0, shape) * np.exp(1j * rng.uniform(-np.pi, np.pi, shape))
           ).astype(np.complex64)
    idx = np.unique(np.linspace(0, len(positions) - 1, n_test).astype(int))
    rel_pos = positions[idx] - model.min_translation.numpy().astype(np.float64)
    try:
        with t.no_grad():
            model.obj.copy_(t.as_tensor(obj))
            (index, trans), _ = dataset[idx]
            sim = model.forward(index, trans).numpy().astype(np.float64)
            probe = (model.probe_norm * model.probe).numpy()
            ref = numpy_intensities(obj, probe, rel_pos)
            rel = float(np.max(np.abs(sim - ref)) / np.max(ref))
            # Sub-pixel sensitivity: integer-grid translations vs. the same + 0.3 px.
            grid = np.round(positions[idx])
            basis = model.probe_basis.to(t.float64)
            on_grid = tools.interactions.pixel_to_translations(basis, t.as_tensor(grid))
            off_grid = tools.interactions.pixel_to_translations(basis, t.as_tensor(grid + 0.3))
            a = model.forward(index, on_grid.to(trans.dtype)).numpy()
            b = model.forward(index, off_grid.to(trans.dtype)).numpy()
            integer = bool(np.array_equal(a, b))
    finally:
        with t.no_grad():
            model.obj.copy_(saved)
    return rel, integer


def run_adam(model, dataset, iterations, batch_size, opt_kwargs):
    """Run Adam_optimize for ``iterations`` epochs; return (per-epoch seconds, per-epoch losses)."""
    times, losses = [], []
    gen = model.Adam_optimize(iterations, dataset, batch_size=batch_size, **opt_kwargs)
    while True:
        t0 = time.perf_counter()
        try:
            loss = next(gen)
        except StopIteration:
            break
        times.append(time.perf_counter() - t0)
        losses.append(float(loss))
    return times, losses


def time_to_quality(model, dataset, args, batch_size, opt_kwargs):
    """Epochs of Adam_optimize until the object NRMSE reaches ``--quality-target``: wall time
    from the first epoch's start, the NRMSE evaluation's own time taken off."""
    with np.load(args.data) as z:
        truth = np.asarray(z["object_true"])
        mask = np.asarray(z["quality_mask"], bool)
    if args.fixed_probe:
        model.probe.requires_grad_(False)
    rows, overhead, reached = [], 0.0, None
    started = time.perf_counter()
    gen = model.Adam_optimize(args.epochs, dataset, batch_size=batch_size, **opt_kwargs)
    for epoch, loss in enumerate(gen, start=1):
        begin = time.perf_counter()
        estimate = model.obj.detach().cpu().numpy()[:truth.shape[0], :truth.shape[1]]
        t_sel, e_sel = truth[mask], estimate[mask]
        factor = np.vdot(e_sel, t_sel) / max(np.vdot(e_sel, e_sel).real, 1e-30)
        error = float(np.linalg.norm(t_sel - factor * e_sel) / np.linalg.norm(t_sel))
        wall = begin - started - overhead
        overhead += time.perf_counter() - begin
        rows.append({"epoch": epoch, "nrmse": error, "wall_s": wall, "loss": float(loss)})
        if error <= args.quality_target:
            reached = rows[-1]
            break
    print(f"cdtools time to NRMSE {args.quality_target}: "
          + (f"epoch {reached['epoch']}, {reached['wall_s']:.2f} s" if reached
             else f"not reached in {len(rows)} epochs (final {rows[-1]['nrmse']:.4f})"))
    return {"target": args.quality_target, "reached": reached, "curve": rows,
            "fixed_probe": bool(args.fixed_probe), "epochs": len(rows)}


def main(argv=None):
    args = parse_args(argv)
    import torch as t
    from cdtools.models import SimplePtycho

    t.set_num_threads(args.threads)
    t.manual_seed(args.seed)

    adam_sig = inspect.signature(SimplePtycho.Adam_optimize).parameters
    batch_size = args.batch_size if args.batch_size is not None else adam_sig["batch_size"].default
    lr = args.lr if args.lr is not None else adam_sig["lr"].default
    width = (args.calculation_width if args.calculation_width is not None
             else adam_sig["calculation_width"].default)
    opt_kwargs = {"lr": lr, "calculation_width": width, "thread": bool(args.cdtools_thread)}

    patterns, positions, probe, object_shape, truth = load_problem(args.data)
    n, h, w = patterns.shape
    dataset, geometry = build_dataset(patterns, positions)
    model = build_model(dataset, probe, object_shape, positions, args.init_probe, args.object_extent)
    rel_err, integer_empirical = verify_geometry(model, dataset, positions)
    if rel_err > 1e-3:
        raise RuntimeError("cdtools model disagrees with the reference forward model "
                           f"(max rel. err {rel_err:.2e}): geometry set-up is wrong")
    uses_round = "ptycho_2D_round" in inspect.getsource(SimplePtycho.interaction)

    result = {
        "peer": "cdtools SimplePtycho + Adam_optimize",
        "data": args.data,
        "n_patterns": n, "pattern_shape": [h, w], "object_shape": list(object_shape),
        "model_object_shape": list(model.obj.shape),
        "init_probe": args.init_probe, "object_extent": args.object_extent,
        "batch_size": batch_size,
        "batch_size_is_cdtools_default": args.batch_size is None,
        "cdtools_default_batch_size": adam_sig["batch_size"].default,
        "lr": lr, "calculation_width": width, "cdtools_thread": bool(args.cdtools_thread),
        "refined": [name for name, _ in model.named_parameters()],
        "threads": args.threads, "device": "cpu",
        "torch_version": t.__version__,
        "cdtools_version": importlib.metadata.version("cdtools-py"),
        "python_version": platform.python_version(),
        "integer_positions": bool(uses_round and integer_empirical),
        "integer_positions_note": (
            "SimplePtycho.interaction calls tools.interactions.ptycho_2D_round, which slices the "
            "object at torch.round(translation) (no sub-pixel probe shift); a 0.3 px translation "
            f"change left the simulated patterns {'unchanged' if integer_empirical else 'CHANGED'}"),
        "geometry": geometry,
        "geometry_check_max_rel_err": rel_err,
    }

    if args.quality_target is not None:
        result["time_to_quality"] = time_to_quality(model, dataset, args, batch_size, opt_kwargs)
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump(result, f, indent=2)
        return 0

    if args.check:
        c_times, c_losses = run_adam(model, dataset, args.check_epochs, batch_size, opt_kwargs)
        ok = c_losses[-1] < c_losses[0]
        result["check"] = {"epochs": args.check_epochs, "first_loss": c_losses[0],
                           "last_loss": c_losses[-1], "loss_ratio": c_losses[-1] / c_losses[0],
                           "losses": c_losses, "seconds": sum(c_times), "loss_decreased": ok}
        if truth is not None:
            result["check"]["truth_loss"] = truth_loss(patterns, positions, truth)
            print(f"check: loss of the true object and probe (noise floor) "
                  f"{result['check']['truth_loss']:.6g}")
        print(f"check: {args.check_epochs} epochs, loss {c_losses[0]:.6g} -> {c_losses[-1]:.6g} "
              f"(x{c_losses[-1] / c_losses[0]:.3g}) {'OK' if ok else 'FAILED'}")
        # Time from a fresh model so the timed run does not depend on the check.
        model = build_model(dataset, probe, object_shape, positions, args.init_probe, args.object_extent)

    times, losses = run_adam(model, dataset, args.warmup + args.epochs, batch_size, opt_kwargs)
    timed = times[args.warmup:]
    med = statistics.median(timed) if timed else float("nan")
    result.update({
        "warmup_epochs": args.warmup, "timed_epochs": len(timed),
        "epoch_seconds": timed, "warmup_epoch_seconds": times[:args.warmup],
        "median_s_per_epoch": med, "patterns_per_s": n / med,
        "losses": losses, "final_loss": losses[-1] if losses else None,
    })
    print(f"cdtools {result['cdtools_version']} / torch {result['torch_version']}, "
          f"{args.threads} threads: N={n} {h}x{w}, object {tuple(model.obj.shape)}, batch {batch_size}")
    print(f"median {med:.4f} s/epoch over {len(timed)} epochs (after {args.warmup} warm-up), "
          f"{n / med:.1f} patterns/s, final loss {result['final_loss']:.6g}")
    print(f"integer_positions={result['integer_positions']}, geometry check rel. err {rel_err:.2e}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2)
    if args.check and not result["check"]["loss_decreased"]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

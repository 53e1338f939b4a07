"""The oversampling experiment of Barutcu, Katsaggelos & Gursoy (tables 1, 2, 3/4 and 5).

Protocol (the paper's Sec. 3.1, with our choices where it gives none):

* object: a 240x240 pure phase object, phase = scikit-image ``camera`` (grey, scaled to
  [0, pi]), amplitude 1, embedded in free space (transmission 1) on a larger grid so that the
  probe windows of the sparse and the oversampled scans fit;
* probe (``--probe diffuser``, default): a circular aperture of 60 px diameter (2-px soft
  edge) in a ``--window`` (128) px window times a smooth random phase (a diffuser:
  Gaussian-filtered noise, sigma 4 px, phase std pi, seeded), 1e6 photons per exposure; known
  to every algorithm (the paper assumes a known probe; it uses "a scaled version of the probe
  used in the PtychoGAN implementation", not published). ``--probe zoneplate``: the tike
  zone-plate probe scaled to a 60-px diameter holding 90% of its power (``zoneplate_probe``;
  needs ``../shared/data``), whose weak tails reach the gaps of negative-overlap scans, which
  the hard-edged aperture never lights. A flat-phase aperture leaves the twin-image
  ambiguity of a centrosymmetric illumination at 0% overlap: measured at window 128, 0%
  overlap, noise-free, the TV initial reconstruction reached phase MSE 0.048 with the flat
  aperture, 0.016 with a defocused one and 0.0078 with the diffuser (plain ePIE: 0.079, 0.066,
  0.061);
* scans: square rasters with steps 45, 60, 75, 90 px (linear overlap 25%, 0%, -25%, -50%),
  probe centres spanning the 240-px field symmetrically (5x5, 4x4, 3x3, 3x3 positions);
* noise: noise-free, and Poisson counts at ``--noisy-photons`` (1e5) photons per exposure;
* initial reconstruction ("the best representation available now"): pixels, phase-only
  parametrisation (amplitude 1, like PtychoGAN's ``exp(j G)``), Adam on the amplitude loss plus
  ``lambda_TV`` times the isotropic total variation of the phase (Barutcu et al. Eq. 5), full
  batch, ``--init-steps`` steps. This is a small Adam loop in this file (the model's
  ``train_step`` has no regulariser hook). ``lambda_TV`` is chosen once by the error against
  the ground truth on the 0% noise-free scan from a small grid (simulation study, stated);
* plain ePIE: known probe, empty (all-ones) start, sequential, random order,
  ``--epochs`` epochs;
* oversampling: ``adptycho.training.oversampling.oversample`` (Y, w, repeats), sequential
  ePIE, ``--epochs`` epochs per repeat, started from the object the simulation used
  (``warm_start``; ``--cold-start`` gives Algorithm 1's empty start). Why: the paper runs
  2000-6000 ePIE iterations; with our budget an empty start has not converged (measured with
  ``--cold-start --tables 1``, 0% noise-free, Y = 3, w = 20, 150 epochs: phase MSE 0.0122
  against 0.0071 for the initial reconstruction), while the warm start is at its fixed point. With the
  warm start, ``w -> infinity`` is ePIE on the measured data started from the initial
  reconstruction (plain ePIE from an empty object is reported separately);
* error: MSE of the phase in units of pi (the grey picture's scale [0, 1]) on the 240x240 field
  after removing the global phase (``adptycho.analysis.align``); this is our reading of the
  paper's "MSE" on grey images. The complex NRMSE is recorded as well.

Outputs in ``--out-dir`` (default ``experiments/oversampling``): ``table1_weight.csv``,
``table2_factor.csv``, ``table3_overlap.csv`` (noise-free and Poisson: the paper's Tables 3
and 4), ``table5_repeats.csv``, PNG figures of each with the phase images they show in
``table*.npz`` (``--plot-only`` redraws the figures from these files), ``results.json`` with
every number, the
paper's values next to ours. Every finished run is cached in ``<out-dir>/cache`` so an
interrupted run resumes where it stopped.

Run::

    nohup nice -n 5 python experiments/oversampling.py > experiments/oversampling/log.txt 2>&1 &
    python experiments/oversampling.py --quick      # a few minutes, small settings
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FIELD = 240
DIAMETER = 60.0
STEPS = {0.25: 45, 0.0: 60, -0.25: 75, -0.5: 90}
WEIGHTS = [1e-4, 0.1, 1, 2, 5, 10, 20, 100, 1e4]
FACTORS = [2, 3, 4, 6]

# The paper's MSE (x 1e-3), images 1 and 2 (face photographs, PtychoGAN initial reconstructions).
PAPER = {
    "table1": {"initial": [6.32, 2.31], "epie": [63.09, 177.69],
               "w": {"0.0001": [5.75, 2.43], "0.1": [5.60, 2.30], "1": [4.51, 1.87],
                     "2": [4.15, 1.53], "5": [4.60, 1.22], "10": [5.20, 1.07],
                     "20": [3.04, 0.86], "100": [6.94, 53.17], "10000": [66.96, 198.15]}},
    "table2": {"initial": [6.32, 2.31], "epie": [63.08, 177.69],
               "Y": {"2": [2.32, 7.98], "3": [3.04, 1.04], "4": [4.35, 1.15], "6": [3.84, 1.26]}},
    "table3": {"25": {"epie": [2.68, 43.71], "initial": [6.77, 4.58], "proposed": [2.18, 0.78]},
               "0": {"epie": [63.09, 177.69], "initial": [6.32, 2.31], "proposed": [3.04, 1.04]},
               "-25": {"epie": [97.45, 232.06], "initial": [6.83, 3.56], "proposed": [2.70, 2.77]},
               "-50": {"epie": [95.69, 227.65], "initial": [8.32, 5.94], "proposed": [2.89, 3.86]}},
    "table4_noisy": {"25": {"epie": [6.39, 61.90], "initial": [7.66, 2.45], "proposed": [4.38, 1.35]},
                     "0": {"epie": [68.32, 178.79], "initial": [1.66, 1.81], "proposed": [1.43, 1.72]},
                     "-25": {"epie": [103.18, 233.59], "initial": [3.76, 7.31], "proposed": [2.92, 3.78]},
                     "-50": {"epie": [109.95, 244.33], "initial": [5.71, 8.02], "proposed": [4.57, 4.53]}},
    "table5": {"25": {"single": [2.18, 0.78], "multiple": [0.00, 0.00]},
               "0": {"single": [3.04, 1.04], "multiple": [0.03, 0.64]},
               "-25": {"single": [2.70, 2.77], "multiple": [0.85, 1.71]},
               "-50": {"single": [2.89, 3.86], "multiple": [1.41, 3.12]}},
}


# -- problem ------------------------------------------------------------------------------
class Problem:
    """Truth, probe and sparse scan for one overlap and noise level."""

    def __init__(self, overlap, noisy, window, noisy_photons, picture_name="camera",
                 probe="diffuser"):
        from adptycho.geometry import normalize_probe_power
        from adptycho.samples import picture
        from adptycho.simulate import simulate

        self.overlap, self.noisy, self.window = overlap, noisy, window
        step = STEPS[overlap]
        self.step = step
        # grid: room for the windows of the dense scans (offsets up to step / 2 each side)
        self.pad = int(np.ceil(window / 2 - DIAMETER / 2 + 45 + 2))
        size = FIELD + 2 * self.pad
        self.phase = np.pi * picture(picture_name, (FIELD, FIELD))
        truth = np.ones((size, size), np.complex64)
        truth[self.field] = np.exp(1j * self.phase)
        self.truth = truth
        photons = noisy_photons if noisy else 1e6
        self.probe = normalize_probe_power(make_probe(probe, window), photons)
        n = int((FIELD - DIAMETER) // step) + 1
        first = DIAMETER / 2 + (FIELD - DIAMETER - (n - 1) * step) / 2
        centres = first + step * np.arange(n)
        cy, cx = np.meshgrid(centres, centres, indexing="ij")
        self.corners = np.stack([cy.ravel(), cx.ravel()], 1) - window / 2 + self.pad
        self.scan = simulate(truth, self.probe, self.corners, poisson=noisy, seed=7)

    @property
    def field(self):
        return (slice(self.pad, self.pad + FIELD), slice(self.pad, self.pad + FIELD))

    def errors(self, obj):
        """(phase MSE in units of pi, complex NRMSE) on the 240x240 field."""
        from adptycho.analysis import align, nrmse

        truth = self.truth[self.field]
        estimate = np.asarray(obj)[self.field]
        aligned = align(estimate, truth, scale=False)
        difference = np.angle(aligned * np.conj(truth))
        return float(np.mean((difference / np.pi) ** 2)), nrmse(truth, estimate)

    def mse(self, obj):
        return self.errors(obj)[0]


def diffuser_probe(window, seed=3):
    """(window, window) complex64: 60-px aperture times a smooth random phase (std pi)."""
    from scipy.ndimage import gaussian_filter

    from adptycho.geometry import circular_aperture

    noise = gaussian_filter(np.random.default_rng(seed).normal(size=(window, window)), 4.0)
    phase = np.pi * noise / noise.std()
    return (circular_aperture((window, window), DIAMETER, 2.0) * np.exp(1j * phase)).astype(np.complex64)


def _power_centroid(power):
    """(y, x) intensity centroid of a 2-D power map, in pixels."""
    yy, xx = np.indices(power.shape)
    return (power * yy).sum() / power.sum(), (power * xx).sum() / power.sum()


def enclosed_diameter(probe, fraction=0.9):
    """Diameter (px) of the centroid-centred disc holding ``fraction`` of |probe|^2."""
    power = np.abs(np.asarray(probe)) ** 2
    cy, cx = _power_centroid(power)
    yy, xx = np.indices(power.shape)
    r = np.hypot(yy - cy, xx - cx).ravel()
    order = np.argsort(r)
    cumulative = np.cumsum(power.ravel()[order]) / power.sum()
    return 2.0 * r[order][np.searchsorted(cumulative, fraction)]


def zoneplate_probe(window, data_dir=None):
    """(window, window) complex64: the APS Velociprobe zone-plate probe of the tike Siemens-star
    file (``../shared/data/tike_siemens_star``; the probe family of the PtychoGAN/tike authors'
    simulations), centred on its intensity centroid and scaled so that the disc holding 90% of
    its power has a diameter of 60 px (the paper's "scaled version of the probe ... with a
    diameter size 60 pixels"). Unlike the hard aperture it has weak tails (about 1% of the peak
    intensity 36 px from the centre), so a negative-overlap scan still touches the gaps."""
    import bz2
    import io

    from scipy.ndimage import map_coordinates

    root = data_dir or os.environ.get("ADPTYCHO_DATA_DIR") or os.path.join(
        os.path.dirname(HERE), "..", "shared", "data")
    path = os.path.join(root, "tike_siemens_star", "siemens-star-small.npz.bz2")
    if not os.path.exists(path):
        raise SystemExit(f"--probe zoneplate needs {path} (the shared tike data set)")
    with bz2.open(path) as f:
        stored = np.load(io.BytesIO(f.read()))["probe"]  # (1, 1, 1, 1, 128, 128)
    source = stored.reshape(-1, *stored.shape[-2:])[0]
    cy, cx = _power_centroid(np.abs(source) ** 2)
    scale = DIAMETER / enclosed_diameter(source, 0.9)
    gy, gx = np.indices((window, window), dtype=np.float64)
    coords = [(gy - (window - 1) / 2) / scale + cy, (gx - (window - 1) / 2) / scale + cx]
    probe = (map_coordinates(source.real, coords, order=3, cval=0.0)
             + 1j * map_coordinates(source.imag, coords, order=3, cval=0.0))
    return probe.astype(np.complex64)


def add_probe_and_noise_bound_arguments(parser):
    """``--probe`` and ``--fourier-relaxation``, shared with ``ptychogan_oversampling/run.py``."""
    parser.add_argument("--probe", default="diffuser", choices=["diffuser", "zoneplate"],
                        help="diffuser: 60-px aperture x random phase; zoneplate: the tike "
                             "zone-plate probe scaled to a 60-px (90%% power) diameter")
    parser.add_argument("--fourier-relaxation", type=float, default=0.0,
                        help="also oversample the Poisson scans with this noise bound on the "
                             "measured patterns (0 = the paper's exact projection; an extra "
                             "column of the Poisson table)")


def make_probe(kind, window):
    """The experiment's probe: ``diffuser`` (default) or ``zoneplate``."""
    if kind == "diffuser":
        return diffuser_probe(window)
    if kind == "zoneplate":
        return zoneplate_probe(window)
    raise SystemExit(f"unknown probe {kind!r}")


def tv_initial(problem, lam, steps, lr=0.1, seed=0):
    """Phase-only pixel reconstruction: Adam on amplitude loss / mean counts + lam * TV(phase)."""
    import keras
    import tensorflow as tf

    from adptycho.model import PtychoModel
    from adptycho.objects import PixelObject

    keras.utils.set_random_seed(seed)
    shape = problem.truth.shape
    model = PtychoModel(PixelObject(shape, "phase"), problem.probe, problem.corners,
                        loss="amplitude")
    variables = model.object_representation.trainable_weights
    optimizer = keras.optimizers.Adam(learning_rate=lr)
    optimizer.build(variables)
    measured = tf.constant(problem.scan.patterns)
    indices = tf.range(problem.scan.num_patterns)
    counts = float(problem.scan.patterns.sum(axis=(1, 2)).mean())
    lam = tf.constant(lam, tf.float32)

    @tf.function(jit_compile=True)
    def step():
        with tf.GradientTape() as tape:
            predicted = model(indices)
            data = tf.reduce_mean(model.pattern_losses(measured, predicted)) / counts
            phase = tf.convert_to_tensor(variables[0])
            dy = phase[1:, :-1] - phase[:-1, :-1]
            dx = phase[:-1, 1:] - phase[:-1, :-1]
            tv = tf.reduce_mean(tf.sqrt(dy * dy + dx * dx + 1e-6))
            loss = data + lam * tv
        gradients = tape.gradient(loss, variables)
        optimizer.apply(gradients, variables)
        return data, tv

    for _ in range(steps):
        step()
    return model.get_object()


def plain_epie(problem, epochs, seed=0):
    from adptycho.model import PtychoModel
    from adptycho.objects import PixelObject
    from adptycho.training.epie import PIETrainer, pie_settings

    model = PtychoModel(PixelObject(problem.truth.shape), problem.probe, problem.corners)
    PIETrainer(model, pie_settings("epie", refine_probe=False)).fit(
        problem.scan.patterns, epochs, seed=seed)
    return model.get_object()


def long_pie(problem, engine, checkpoints, seed=0):
    """Plain PIE (known probe, empty start) run to ``max(checkpoints)`` epochs; the phase MSE
    after each checkpoint. Checks whether plain ePIE's failure is convergence-limited."""
    from adptycho.model import PtychoModel
    from adptycho.objects import PixelObject
    from adptycho.training.epie import PIETrainer, pie_settings

    model = PtychoModel(PixelObject(problem.truth.shape), problem.probe, problem.corners)
    trainer = PIETrainer(model, pie_settings(engine, refine_probe=False))
    errors, done = [], 0
    for k, stop in enumerate(sorted(checkpoints)):
        trainer.fit(problem.scan.patterns, stop - done, seed=seed + k, initial_epoch=done)
        done = stop
        errors.append(problem.mse(model.get_object()))
    return np.asarray(errors)


def run_oversample(problem, initial, factor, weight, repeats, epochs, schedule=None, seed=0,
                   warm_start=True, fourier_relaxation=0.0):
    from adptycho.training.oversampling import oversample

    return oversample(problem.scan, initial, problem.probe, factor=factor, weight=weight,
                      repeats=repeats, weight_schedule=schedule, epochs=epochs,
                      step_px=problem.step, seed=seed, error_fn=problem.mse,
                      warm_start=warm_start, fourier_relaxation=fourier_relaxation)


# -- cache --------------------------------------------------------------------------------
class Cache:
    def __init__(self, directory):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)

    def get(self, key, compute):
        path = os.path.join(self.directory, key + ".npz")
        if os.path.exists(path):
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        started = time.perf_counter()
        value = compute()
        value["seconds"] = np.float64(time.perf_counter() - started)
        tmp = path + ".tmp.npz"
        np.savez(tmp, **value)
        os.replace(tmp, path)
        print(f"[{time.strftime('%H:%M:%S')}] {key}: {value['seconds']:.1f} s", flush=True)
        return value


def _key(*parts):
    return "_".join(str(p).replace(".", "p").replace("-", "m") for p in parts)


# -- figures ------------------------------------------------------------------------------
def _save_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


MSE_NOTE = "numbers: phase MSE in (phase/\u03c0)\u00b2, x1e-3, on the 240 x 240 px field"


def _aligned_phase(problem, obj):
    from adptycho.analysis import align

    truth = problem.truth[problem.field]
    return np.angle(align(np.asarray(obj)[problem.field], truth, scale=False))


def _figure(path, panels, ncols, note=None):
    """Save the panels' aligned phases (``path`` with ``.npz``: ``phases`` (P, 240, 240)
    float16 rad, ``titles``, ``ncols``, ``note``: what the titles' numbers are, default
    ``MSE_NOTE``) and draw the figure from that file."""
    phases = np.stack([_aligned_phase(problem, obj) for problem, obj, _ in panels])
    arrays = path[:-len(".png")] + ".npz"
    np.savez_compressed(arrays, phases=phases.astype(np.float16),
                        titles=np.array([title for _, _, title in panels]), ncols=ncols,
                        note=np.array(note or MSE_NOTE))
    draw_panels(arrays, path)


def draw_panels(arrays, path):
    """Draw a table figure from its ``.npz`` (see ``_figure``): phase images on one colour scale
    with one labelled colour bar; the titles' numbers are phase MSEs x 1e3 (said in the title)."""
    sys.path.insert(0, HERE)
    from figstyle import colour_bar, figure, save

    saved = np.load(arrays)
    phases, titles, ncols = saved["phases"].astype(np.float32), saved["titles"], int(saved["ncols"])
    note = str(saved["note"]) if "note" in saved.files else MSE_NOTE
    nrows = int(np.ceil(len(phases) / ncols))
    fig, axes = figure(nrows, ncols, panel=(1.9, 2.0), squeeze=False,
                       title=f"Phase of each reconstruction ({note})")
    image = None
    for ax in axes.ravel():
        ax.axis("off")
    for ax, phase, title in zip(axes.ravel(), phases, titles):
        ax.axis("on")
        image = ax.imshow(phase, cmap="gray", vmin=-0.2, vmax=np.pi + 0.2)
        ax.set_title(str(title), fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    first = axes[0, 0]
    first.set_xticks([0, 120, 239])
    first.set_yticks([0, 120, 239])
    first.tick_params(labelsize=6)
    first.set_xlabel("x (px)", fontsize=7)
    first.set_ylabel("y (px)", fontsize=7)
    colour_bar(axes, image, "phase (rad)", shrink=0.5)
    save(fig, path)


# -- main ---------------------------------------------------------------------------------
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", default=os.path.join(HERE, "oversampling"))
    parser.add_argument("--quick", action="store_true", help="small settings (a few minutes)")
    parser.add_argument("--window", type=int, default=128, help="probe/detector window (px)")
    parser.add_argument("--epochs", type=int, default=150, help="ePIE epochs per run/repeat")
    parser.add_argument("--repeats", type=int, default=10, help="repeats for table 5")
    parser.add_argument("--init-steps", type=int, default=500, help="Adam steps of the TV init")
    parser.add_argument("--cold-start", action="store_true",
                        help="ePIE from an empty object every repeat (Algorithm 1 literally)")
    parser.add_argument("--lambdas", default="0.003,0.01,0.03,0.1", help="TV weights tried")
    parser.add_argument("--noisy-photons", type=float, default=1e5)
    add_probe_and_noise_bound_arguments(parser)
    parser.add_argument("--tables", default="1,2,3,5", help="which tables to produce")
    parser.add_argument("--cache-dir", help="cache of finished runs (default <out-dir>/cache)")
    parser.add_argument("--plot-only", action="store_true",
                        help="only redraw the figures of --out-dir from its saved files")
    args = parser.parse_args(argv)
    if args.plot_only:
        plot(args.out_dir)
        return 0
    if args.quick:
        args.window, args.epochs, args.repeats, args.init_steps = 64, 20, 3, 150
        args.lambdas = "0.01,0.03"
        if args.out_dir == os.path.join(HERE, "oversampling"):
            args.out_dir = os.path.join(HERE, "oversampling", "quick")
    out = args.out_dir
    os.makedirs(out, exist_ok=True)
    tag = f"win{args.window}_ep{args.epochs}_init{args.init_steps}"
    if args.probe != "diffuser":
        tag += f"_{args.probe}"
    otag = tag + ("_cold" if args.cold_start else "_warm")
    cache = Cache(args.cache_dir or os.path.join(out, "cache"))
    started = time.perf_counter()
    problems = {}

    def problem(overlap, noisy):
        if (overlap, noisy) not in problems:
            problems[(overlap, noisy)] = Problem(overlap, noisy, args.window, args.noisy_photons,
                                                 probe=args.probe)
        return problems[(overlap, noisy)]

    # -- TV weight, chosen once on the 0% noise-free scan --------------------------------
    lambdas = [float(v) for v in args.lambdas.split(",")]
    p0 = problem(0.0, False)
    lam_errors = {}
    for lam in lambdas:
        res = cache.get(_key("init", tag, 0.0, "free", "lam", lam),
                        lambda: {"object": tv_initial(p0, lam, args.init_steps)})
        lam_errors[lam] = p0.mse(res["object"])
    lam_best = min(lam_errors, key=lam_errors.get)
    print(f"TV weight errors {lam_errors}; using {lam_best}", flush=True)

    def initial(overlap, noisy):
        p = problem(overlap, noisy)
        res = cache.get(_key("init", tag, overlap, "poisson" if noisy else "free", "lam", lam_best),
                        lambda: {"object": tv_initial(p, lam_best, args.init_steps)})
        return res["object"]

    def epie(overlap, noisy):
        p = problem(overlap, noisy)
        return cache.get(_key("epie", tag, overlap, "poisson" if noisy else "free"),
                         lambda: {"object": plain_epie(p, args.epochs)})["object"]

    def proposed(overlap, noisy, factor, weight, repeats=1, schedule_name="const", relax=0.0):
        p = problem(overlap, noisy)
        init = initial(overlap, noisy)
        schedule = None
        if schedule_name == "lower":
            schedule = [weight * 0.75 ** r for r in range(repeats)]

        def compute():
            r = run_oversample(p, init, factor, weight, repeats, args.epochs, schedule,
                               warm_start=not args.cold_start, fourier_relaxation=relax)
            return {"objects": r.objects, "errors": r.error_history,
                    "measured_residual": r.measured_residual, "weights": r.weights,
                    "num_patterns": np.int64(r.settings["num_patterns"])}
        relax_tag = () if relax == 0 else ("rho", relax)
        return cache.get(_key("over", otag, overlap, "poisson" if noisy else "free", "Y", factor,
                              "w", weight, "R", repeats, schedule_name, *relax_tag), compute)

    results = {"settings": vars(args) | {"tv_lambda": lam_best,
                                         "tv_lambda_errors": {str(k): v for k, v in lam_errors.items()}},
               "paper": PAPER}

    tables = set(args.tables.split(","))
    # -- Table 1: w sweep at 0%, Y = 3 ------------------------------------------------
    if "1" in tables:
        rows, panels, t1 = [], [], {}
        init0, epie0 = initial(0.0, False), epie(0.0, False)
        t1["initial"], t1["epie"] = p0.mse(init0), p0.mse(epie0)
        panels += [(p0, p0.truth, "truth"), (p0, init0, f"TV init {1e3 * t1['initial']:.2f}")]
        t1["w"] = {}
        for w in WEIGHTS:
            res = proposed(0.0, False, 3, w)
            t1["w"][f"{w:g}"] = float(res["errors"][0])
            panels.append((p0, res["objects"][0], f"w={w:g} {1e3 * t1['w'][f'{w:g}']:.2f}"))
            rows.append([f"w={w:g}", 1e3 * t1["w"][f"{w:g}"], *PAPER["table1"]["w"][f"{w:g}"]])
        panels.append((p0, epie0, f"ePIE {1e3 * t1['epie']:.2f}"))
        rows = ([["initial (TV pixels)", 1e3 * t1["initial"], *PAPER["table1"]["initial"]]] + rows
                + [["ePIE", 1e3 * t1["epie"], *PAPER["table1"]["epie"]]])
        _save_csv(os.path.join(out, "table1_weight.csv"),
                  ["method", "ours_mse_1e-3", "paper_image1_1e-3", "paper_image2_1e-3"], rows)
        _figure(os.path.join(out, "table1_weight.png"), panels, 6)
        results["table1"] = t1

    # -- Table 2: Y sweep at 0%, w = 20 -----------------------------------------------
    if "2" in tables:
        rows, panels, t2 = [], [(p0, p0.truth, "truth")], {"initial": p0.mse(initial(0.0, False)),
                                                     "epie": p0.mse(epie(0.0, False)), "Y": {}}
        for factor in FACTORS:
            res = proposed(0.0, False, factor, 20)
            t2["Y"][str(factor)] = float(res["errors"][0])
            panels.append((p0, res["objects"][0], f"Y={factor} {1e3 * t2['Y'][str(factor)]:.2f}"))
            rows.append([f"Y={factor}", int(res["num_patterns"]), 1e3 * t2["Y"][str(factor)],
                         *PAPER["table2"]["Y"][str(factor)]])
        _save_csv(os.path.join(out, "table2_factor.csv"),
                  ["method", "patterns", "ours_mse_1e-3", "paper_image1_1e-3", "paper_image2_1e-3"], rows)
        _figure(os.path.join(out, "table2_factor.png"), panels, 5)
        results["table2"] = t2

    # -- Table 3 (noise-free) / Table 4 (Poisson): overlaps, Y = 3, w = 20 ------------
    # -- Table 5: repeats (noise-free), w = 20 constant and lowered by 0.75 per repeat -
    if "3" in tables:
        rows, rows5, panels, t3, t5 = [], [], [], {}, {}
        for noisy in (False, True):
            name = "poisson" if noisy else "free"
            t3[name] = {}
            for overlap in STEPS:
                p = problem(overlap, noisy)
                init, plain = initial(overlap, noisy), epie(overlap, noisy)
                single = proposed(overlap, noisy, 3, 20)
                entry = {"epie": p.mse(plain), "initial": p.mse(init),
                         "proposed": float(single["errors"][0]),
                         "nrmse": {"epie": p.errors(plain)[1], "initial": p.errors(init)[1],
                                   "proposed": p.errors(single["objects"][0])[1]}}
                relaxed = float("nan")
                if noisy and args.fourier_relaxation > 0:
                    relaxed = float(proposed(overlap, noisy, 3, 20,
                                             relax=args.fourier_relaxation)["errors"][0])
                    entry["proposed_relaxed"] = relaxed
                t3[name][f"{overlap * 100:g}"] = entry
                paper = PAPER["table4_noisy" if noisy else "table3"][f"{overlap * 100:g}"]
                rows.append([name, f"{overlap * 100:g}%", 1e3 * entry["epie"], 1e3 * entry["initial"],
                             1e3 * entry["proposed"], 1e3 * relaxed, paper["epie"][0],
                             paper["initial"][0], paper["proposed"][0], paper["epie"][1],
                             paper["initial"][1], paper["proposed"][1]])
                if not noisy:
                    panels += [(p, p.truth, f"truth {overlap * 100:g}%"),
                               (p, plain, f"ePIE {1e3 * entry['epie']:.2f}"),
                               (p, init, f"TV init {1e3 * entry['initial']:.2f}"),
                               (p, single["objects"][0], f"proposed {1e3 * entry['proposed']:.2f}")]
        _save_csv(os.path.join(out, "table3_overlap.csv"),
                  ["noise", "overlap", "ours_epie", "ours_initial", "ours_proposed",
                   f"ours_proposed_rho{args.fourier_relaxation:g}", "paper1_epie", "paper1_initial", "paper1_proposed",
                   "paper2_epie", "paper2_initial", "paper2_proposed"], rows)
        _figure(os.path.join(out, "table3_overlap.png"), panels, 4)
        results["table3"] = t3
        _write_json(out, results, started)

    if "5" in tables:
        panels, rows5, t5 = [], [], {}
        for schedule_name in ("const", "lower"):
            t5[schedule_name] = {}
            for overlap in (STEPS if schedule_name == "const" else (0.25, 0.0)):
                p = problem(overlap, False)
                res = proposed(overlap, False, 3, 20, args.repeats, schedule_name)
                errors = [float(e) for e in res["errors"]]
                t5[schedule_name][f"{overlap * 100:g}"] = {
                    "errors": errors, "measured_residual": [float(v) for v in res["measured_residual"]],
                    "weights": [float(v) for v in res["weights"]]}
                paper = PAPER["table5"][f"{overlap * 100:g}"]
                best = int(np.argmin(errors))
                rows5.append([schedule_name, f"{overlap * 100:g}%", 1e3 * errors[0], 1e3 * errors[-1],
                              1e3 * errors[best], best + 1, paper["single"][0], paper["multiple"][0],
                              paper["single"][1], paper["multiple"][1]])
                if schedule_name == "const":
                    panels += [(p, res["objects"][0], f"{overlap * 100:g}% 1 rep {1e3 * errors[0]:.2f}"),
                               (p, res["objects"][-1],
                                f"{overlap * 100:g}% {len(errors)} reps {1e3 * errors[-1]:.2f}")]
        _save_csv(os.path.join(out, "table5_repeats.csv"),
                  ["schedule", "overlap", "ours_single", "ours_last", "ours_best", "best_repeat",
                   "paper1_single", "paper1_multiple", "paper2_single", "paper2_multiple"], rows5)
        _figure(os.path.join(out, "table5_repeats.png"), panels, 4)
        _repeat_curve(os.path.join(out, "table5_repeat_curve.png"), t5)
        results["table5"] = t5
        _write_json(out, results, started)
    _write_json(out, results, started)
    print(f"done in {time.perf_counter() - started:.0f} s; wrote {out}", flush=True)
    return 0


def _repeat_curve(path, t5):
    sys.path.insert(0, HERE)
    from figstyle import figure, save, scaled_label

    fig, ax = figure(1, 1, panel=(5.6, 4.6))
    every = [e for entries in t5.values() for entry in entries.values() for e in entry["errors"]]
    label, factor = scaled_label("phase MSE in (phase/\u03c0)\u00b2", every)
    for schedule_name, style in (("const", "-o"), ("lower", "--s")):
        for overlap, entry in t5[schedule_name].items():
            errors = factor * np.asarray(entry["errors"])
            ax.plot(np.arange(1, len(errors) + 1), errors, style, ms=3,
                    label=f"{overlap}% overlap, "
                          f"{'w = 20' if schedule_name == 'const' else 'w = 20 x 0.75^r'}")
    ax.set_xlabel("repeat r")
    ax.set_ylabel(label)
    ax.set_yscale("log")
    ax.set_title("Table 5: error after each repeat of Algorithm 1")
    ax.grid(True, which="both")
    ax.legend(ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    save(fig, path)


def plot(out):
    """Redraw the figures of ``out`` from its saved files: ``table5_repeat_curve.png`` from
    ``results.json``, each ``table*.png`` from its ``.npz`` where one was saved."""
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    if "table5" in results:
        _repeat_curve(os.path.join(out, "table5_repeat_curve.png"), results["table5"])
    for arrays in sorted(glob.glob(os.path.join(out, "table*.npz"))):
        draw_panels(arrays, arrays[:-len(".npz")] + ".png")
    missing = [os.path.basename(p) for p in sorted(glob.glob(os.path.join(out, "table*.png")))
               if not os.path.exists(p[:-len(".png")] + ".npz") and "curve" not in p]
    if missing:
        print(f"oversampling: no saved arrays for {', '.join(missing)} (written before the "
              "arrays were saved): rerun the tables to redraw them")


def _write_json(out, results, started):
    results["seconds"] = time.perf_counter() - started
    tmp = os.path.join(out, "results.json.tmp")
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1, default=float)
    os.replace(tmp, os.path.join(out, "results.json"))


if __name__ == "__main__":
    sys.exit(main())

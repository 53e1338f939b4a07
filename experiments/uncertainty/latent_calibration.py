"""Calibration of the latent Laplace posterior, and HMC against Laplace (issue 22, item 4).

Problem (the latent model is adequate by construction): a small IRMAE with an 8-value latent and
random weights (seeded; ``adptycho.nn.irmae``) decodes the true object from a fixed true latent
into a 32x32 region of a 40x40 grid (background 0.3); a 16x16 detector, a known 10 px aperture
probe, 49 integer positions (4 px step); Poisson noise at each dose. Two decoders
(``--activations``): ``relu`` (the paper's: piecewise linear before the sigmoid, so the
likelihood has kinks in the latent) and ``gelu`` (the same layers with a smooth activation).
Every noise draw is reconstructed with ``adptycho.reconstruction.reconstruct`` (latent object,
``poisson`` loss, L-BFGS, ``--epochs`` iterations, from the stored mean latent) and gets its
posterior from ``adptycho.uncertainty.object_uncertainty(..., "laplace")`` with a broad prior
(``--prior-std`` 1e3: the fits have none), which first takes Newton steps from the fit to the
posterior mode (``uncertainty.latent.posterior_mode``). Errors are those of the mode (the
Laplace centre). Reported per activation and dose:

* ``latent_coverage68 / 95``: fraction of (latent value, draw) pairs whose true value lies within
  1 / 1.96 Laplace std of the mode;
* ``amplitude_coverage68 / 95`` and ``amplitude_std_over_spread``: the same for the decoded
  amplitude on the pixels whose Laplace std is positive (the decoded region), and the median over
  those pixels of the mean std map over the std of the draws' decoded modes (1 is perfect);
* ``hmc_over_laplace_latent_std`` / ``..._amplitude_std``: median ratio of the HMC std to the
  Laplace std (first accepted draw; ``hmc_acceptance``: the chain's acceptance rate);
* ``newton_steps_max``: the most Newton steps a draw took (10 = the cap: no mode reached);
  ``median_fit_to_mode_std``: the median distance from the L-BFGS fit to the mode, in posterior
  standard deviations;
* ``refused_draws``: draws whose Hessian at the end is indefinite (Laplace refuses them; they
  are left out of the coverage).

Results: ``experiments/uncertainty/latent_results.json`` (README table rendered by
``python experiments/report.py``).

Run::

    python experiments/uncertainty/latent_calibration.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "latent_results.json")
LATENT = 8
REGION = (4, 4, 32, 32)


def problem(directory, activation="relu"):
    import keras

    from adptycho.geometry.probes import circular_aperture
    from adptycho.nn.irmae import IRMAE, save_irmae
    from adptycho.objects.latent import LatentObject

    keras.utils.set_random_seed(0)
    save_irmae(IRMAE(LATENT, 2, activation), directory,
               np.random.default_rng(6).normal(size=LATENT).astype(np.float32))
    true_latent = np.random.default_rng(5).normal(size=LATENT).astype(np.float32)
    obj = LatentObject.from_pretrained((40, 40), directory, initial_latent=true_latent,
                                       region_px=REGION, background=0.3)
    probe = circular_aperture((16, 16), 10.0)
    positions = np.array([(y, x) for y in range(0, 25, 4) for x in range(0, 25, 4)], float)
    return obj.to_numpy(), true_latent, probe, positions


def _coverage(z, prefix):
    z = np.abs(np.asarray(z))
    return {f"{prefix}_coverage68": float(np.mean(z <= 1.0)),
            f"{prefix}_coverage95": float(np.mean(z <= 1.96))}


def run_dose(dose, args, directory, truth, true_latent, probe, positions):
    from adptycho.errors import AdptychoError
    from adptycho.reconstruction import reconstruct
    from adptycho.simulate import simulate
    from adptycho.uncertainty import object_uncertainty

    latent_z, amp_err, amp_std, shifts = [], [], [], []
    row = {"activation": args.activation_now, "dose": dose, "draws": args.draws,
           "refused_draws": 0}
    settings = {"samples": args.samples, "prior_std": args.prior_std}
    for draw in range(args.draws):
        scan = simulate(truth, probe, positions, photons_per_pattern=dose, poisson=True,
                        seed=1000 * draw + 3)
        rec = reconstruct(scan, object=directory, refine=("object",), loss="poisson",
                          probe=scan.probe, optimizer="lbfgs", epochs=args.epochs, object_shape=(40, 40),
                          latent_options={"region_px": REGION, "background": 0.3}, verbose=0,
                          engine="adam", seed=draw)
        try:
            laplace = object_uncertainty(scan, rec, "laplace", settings={**settings, "seed": draw})
        except AdptychoError as exc:  # the fit stopped off a minimum: Laplace refuses it
            row["refused_draws"] = row.get("refused_draws", 0) + 1
            print(f"  dose {dose:.0e} draw {draw}: refused: {exc}", flush=True)
            continue
        fit = np.asarray(laplace.extras["latent_mode"], np.float64)  # the Laplace centre
        row["newton_steps_max"] = max(row.get("newton_steps_max", 0),
                                      laplace.info["newton_steps"])
        shifts.append(laplace.info["mode_shift_std"])
        latent_z.append((fit - true_latent) / laplace.extras["latent_std"])
        amp_err.append(np.abs(laplace.extras["object"]) - np.abs(truth))
        amp_std.append(laplace.object_amplitude_std)
        if "hmc_acceptance" not in row and args.hmc:
            hmc = object_uncertainty(scan, rec, "hmc", settings={
                **settings, "burnin": args.burnin, "seed": draw})
            pixels = laplace.object_amplitude_std > 1e-6
            row.update(hmc_acceptance=float(hmc.info["acceptance"]),
                       hmc_over_laplace_latent_std=float(np.median(
                           hmc.extras["latent_std"] / laplace.extras["latent_std"])),
                       hmc_over_laplace_amplitude_std=float(np.median(
                           hmc.object_amplitude_std[pixels]
                           / laplace.object_amplitude_std[pixels])))
        print(f"  dose {dose:.0e} draw {draw}: latent |z| max {np.abs(latent_z[-1]).max():.2f}",
              flush=True)
    amp_err, amp_std = np.array(amp_err), np.array(amp_std)
    pixels = np.all(amp_std > 1e-6, axis=0)
    row.update(_coverage(np.array(latent_z), "latent"))
    row.update(_coverage(amp_err[:, pixels] / amp_std[:, pixels], "amplitude"))
    row["amplitude_std_over_spread"] = float(np.median(
        amp_std.mean(axis=0)[pixels] / amp_err.std(axis=0, ddof=1)[pixels]))
    row["pixels"] = int(pixels.sum())
    row["median_fit_to_mode_std"] = float(np.median(shifts))
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--doses", type=float, nargs="+", default=[1e3, 1e4])
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--burnin", type=int, default=200)
    parser.add_argument("--no-hmc", dest="hmc", action="store_false")
    parser.add_argument("--activations", nargs="+", default=["relu", "gelu"],
                        help="decoder activations (relu: the paper's, piecewise linear; gelu)")
    parser.add_argument("--epochs", type=int, default=60, help="L-BFGS iterations per fit")
    parser.add_argument("--prior-std", type=float, default=1e3,
                        help="latent prior std of the posterior (broad: the fits have no prior)")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    started = time.perf_counter()
    rows = []
    for activation in args.activations:
        with tempfile.TemporaryDirectory() as root:
            directory = os.path.join(root, "tiny-irmae")
            truth, true_latent, probe, positions = problem(directory, activation)
            args.activation_now = activation
            for dose in args.doses:
                rows.append(run_dose(dose, args, directory, truth, true_latent, probe, positions))
                print(json.dumps(rows[-1]), flush=True)
    results = {"meta": {"latent": LATENT, "draws": args.draws, "samples": args.samples,
                        "burnin": args.burnin, "lbfgs_iterations": args.epochs,
                        "prior_std": args.prior_std,
                        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
                        "seconds": time.perf_counter() - started,
                        "command": "python experiments/uncertainty/latent_calibration.py"},
               "rows": rows}
    from adptycho.io.atomic import atomic_path

    with atomic_path(args.out, suffix=".json.tmp") as tmp, open(tmp, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

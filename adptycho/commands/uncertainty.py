"""``adptycho uncertainty``: registration of ``adptycho.commands.uncertainty_cli`` (its parser
and run) with the applicability rules of its options."""

from __future__ import annotations

from adptycho.commands.landscape import _saved
from adptycho.commands.options import APPLIES

NAME = "uncertainty"


def _method(args):
    """The method that will run: ``--method`` or the default of the object kind."""
    if args.method is not None:
        return args.method
    latent, _ = _saved(args)
    return "laplace" if latent else "fisher"


def _fisher_only(flag):
    def rule(args):
        method = _method(args)
        if method != "fisher":
            return f"{flag} applies to the fisher method, not to {method}"
        return None
    return rule


def _samples(args):
    method = _method(args)
    if method != "hmc":
        return f"--samples applies to the hmc method, not to {method}"
    return None


def _readout_noise(args):
    model = args.noise_model or _saved(args)[1].get("loss", "amplitude")
    if model != "poisson-gaussian":
        return (f"--readout-noise applies to the poisson-gaussian noise model only (the {model} "
                "model ignores it)")
    return None


def add_parser(sub) -> dict:
    from adptycho.commands import uncertainty_cli

    uncertainty_cli.add_parser(sub)
    rules = {dest: APPLIES for dest in ("input", "reconstruction", "out", "method",
                                        "noise_model", "truth", "png", "no_png", "seed")}
    rules.update({"covariance": _fisher_only("--covariance"), "probes": _fisher_only("--probes"),
                  "preset": _fisher_only("--preset"), "estimator": _fisher_only("--estimator"),
                  "samples": _samples, "readout_noise": _readout_noise})
    return rules


def run(args):
    from adptycho.commands import uncertainty_cli

    uncertainty_cli.run(args)

"""Checks of a parsed ``adptycho`` command line before the command runs.

* every input file exists; every output can be written (its directory exists and is writable);
  no output is an input or another output (``adptycho.io.validation``);
* options that contradict each other, or that the chosen mode would silently ignore, are refused.

Options given explicitly are told apart from defaults by parsing the command line a second time
with every default suppressed (``explicit_options``), so abbreviations (``--latent`` for
``--latent-mode``) and ``--opt=value`` count too. Every failure is an ``AdptychoError`` (one line,
exit status 2); ``docs/errors.md`` lists them.
"""

from __future__ import annotations

import argparse
import os

from adptycho.errors import AdptychoError
from adptycho.io.validation import check_no_overwrite, check_output_path

__all__ = ["check_arguments", "explicit_options"]

# per command: output options (dest, flag, is a directory) and input options (dest, flag)
_OUTPUTS = {
    "simulate": [("out", "--out", False), ("truth_out", "--truth-out", False)],
    "reconstruct": [("out", "--out", False), ("png", "--png", False)],
    "calibrate": [("out", "--out", False)],
    "oversample": [("out", "--out", False)],
    "show": [("out", "--out", False)],
    "landscape": [("out", "--out", False), ("csv", "--csv", False)],
    "train-irmae": [("out", "--out", True)],
    "train-stylegan2": [("out", "--out", True)],
    "demo": [("out", "--out", True)],
}
_INPUTS = [("input", "input"), ("init", "--init"), ("calibration", "--calibration"),
           ("reconstruction", "--reconstruction"), ("truth", "--truth"), ("data", "--data")]

_PTYCHOGAN_ONLY = ("latent_steps", "block_steps", "blocks", "tv_weight", "discriminator_weight",
                   "generator_lr", "region")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _flags(dests) -> str:
    return ", ".join(_flag(d) for d in dests)


def _apply(dests) -> str:
    return "applies" if len(dests) == 1 else "apply"


def _conflicts(command: str, args, given: set):
    """Yield the message of every contradictory or ignored option (the first one is raised)."""
    if command == "reconstruct":
        if {"png", "no_png"} <= given:
            yield "--png and --no-png contradict each other"
        for other in ("checkpoint_dir", "keep_checkpoint"):
            if {"no_checkpoint", other} <= given:
                yield f"--no-checkpoint and {_flag(other)} contradict each other"
        latent_only = sorted(given & {"latent_mode", "train_decoder"})
        if latent_only and args.object == "pixels":
            yield (f"{_flags(latent_only)} {_apply(latent_only)} to latent objects (--object "
                   "irmae-mnist, a model directory, ...), not to --object pixels")
        ptychogan_only = [d for d in _PTYCHOGAN_ONLY if d in given]
        if ptychogan_only and not args.ptychogan:
            yield f"{_flags(ptychogan_only)} {_apply(ptychogan_only)} to --ptychogan fits only"
        if "readout_noise" in given and args.loss != "poisson-gaussian":
            yield (f"--readout-noise applies to --loss poisson-gaussian only (the {args.loss} "
                   "loss ignores it)")
        if getattr(args, "stream", "auto") == "yes" and "stream" in given and (
                args.engine not in ("adam", "auto") or args.optimizer != "adam"
                or args.ptychogan):
            yield ("--stream yes applies to the adam engine and optimizer (the others load every "
                   "pattern; the default engine uses adam alone on a streamed scan)")
    elif command == "calibrate":
        if {"no_distance", "farfield_distance"} <= given:
            yield "--no-distance and --farfield-distance contradict each other"
    elif command == "oversample":
        if {"weight", "weight_schedule"} <= given:
            yield "--weight and --weight-schedule contradict each other (the schedule sets w)"
    elif command == "train-stylegan2":
        if {"export_only", "no_export"} <= given:
            yield "--export-only and --no-export contradict each other"


def explicit_options(argv) -> set:
    """The ``dest`` names of the options (and positionals) given on the command line ``argv``
    (``None``: ``sys.argv[1:]``), defaults excluded."""
    from adptycho.cli import build_parser

    parser = build_parser()

    def suppress(p):
        p._defaults.clear()  # set_defaults(...) values
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    suppress(sub)
            elif action.dest != "help":
                action.default = argparse.SUPPRESS

    suppress(parser)
    return set(vars(parser.parse_args(argv)))


def _derived_outputs(command: str, args) -> dict:
    """Outputs whose default path is derived from another argument."""
    if command == "reconstruct" and not args.no_png and args.png is None:
        return {"the figure (default next to --out)": os.path.splitext(args.out)[0] + ".png"}
    if command == "show" and args.out is None:
        return {"the figure (default next to the input)": os.path.splitext(args.input)[0] + ".png"}
    if command == "landscape" and args.csv is None:
        return {"the CSV (default next to --out)": os.path.splitext(args.out)[0] + ".csv"}
    return {}


def check_arguments(args, argv=None) -> None:
    """Raise ``AdptychoError`` for a command line that must not run (see the module docstring).

    Args:
        args: the ``argparse.Namespace`` of ``adptycho.cli.build_parser().parse_args(argv)``.
        argv: the same command line (``None``: ``sys.argv[1:]``).
    """
    command = args.command
    inputs = {flag: getattr(args, dest) for dest, flag in _INPUTS
              if getattr(args, dest, None) is not None}
    for flag, path in inputs.items():
        if flag != "--data" and not os.path.exists(path):  # --data: the commands say what they need
            raise AdptychoError(f"no such file: {path}" + ("" if flag == "input" else f" ({flag})"))
    outputs = {}
    for dest, flag, directory in _OUTPUTS.get(command, []):
        path = getattr(args, dest, None)
        if path is not None:
            check_output_path(path, flag, directory=directory)
            outputs[flag] = path
    derived = _derived_outputs(command, args)
    check_no_overwrite({**outputs, **derived}, inputs)
    given = explicit_options(argv)
    for message in _conflicts(command, args, given):
        raise AdptychoError(message)

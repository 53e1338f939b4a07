"""Checks of a parsed ``adptycho`` command line before the command runs.

* every input file exists; every output can be written (its directory exists and is writable);
  no output is an input or another output (``adptycho.io.validation``);
* options that contradict each other, or that the chosen mode would silently ignore, are refused
  (the rule of every option is next to its definition: ``adptycho.commands``).

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

__all__ = ["check_arguments", "explicit_options", "ignored_options"]

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


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


# per command: options that contradict each other (both given)
_CONTRADICTIONS = {
    "reconstruct": [("png", "no_png"), ("no_checkpoint", "checkpoint_dir"),
                    ("no_checkpoint", "keep_checkpoint")],
    "calibrate": [("no_distance", "farfield_distance")],
    "oversample": [("weight", "weight_schedule", " (the schedule sets w)")],
    "train-stylegan2": [("export_only", "no_export")],
}


def _contradictions(command: str, given: set):
    """Yield the message of every pair of contradictory options given."""
    for first, second, *why in _CONTRADICTIONS.get(command, []):
        if {first, second} <= given:
            yield f"{_flag(first)} and {_flag(second)} contradict each other{''.join(why)}"


def ignored_options(args, given: set, rules: dict):
    """Yield the message of every option in ``given`` that its rule says would be ignored."""
    for dest, rule in rules.items():
        if dest in given:
            message = rule(args)
            if message:
                yield message


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


def check_arguments(args, argv=None, rules=None) -> None:
    """Raise ``AdptychoError`` for a command line that must not run (see the module docstring).

    Args:
        args: the ``argparse.Namespace`` of ``adptycho.cli.build_parser().parse_args(argv)``.
        argv: the same command line (``None``: ``sys.argv[1:]``).
        rules: {dest: rule} of the command's options (default: those of ``build_parser``).
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
    if rules is None:
        from adptycho.cli import build_parser

        rules = build_parser().option_rules[command]
    for message in _contradictions(command, given):
        raise AdptychoError(message)
    for message in ignored_options(args, given, rules):
        raise AdptychoError(message)

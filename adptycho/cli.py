"""Command-line interface: ``adptycho simulate | reconstruct | calibrate | ... | demo``.

Every command that writes a result takes ``--out``; bad input ends the command with a one-line
``adptycho: error: ...`` message and exit status 2, and nothing is written half-way (files are
written to a temporary name and renamed). Inputs, outputs, contradictory options and options the
chosen mode would ignore are checked before a command starts (``adptycho.commands.checks``). An
internal error (a bug) is not disguised as bad input: its traceback is printed and the exit
status is 1. ``docs/errors.md`` lists the bad inputs and their messages.

The commands live in ``adptycho.commands`` (one module each: ``add_parser`` and ``run``); a new
command is a new module there and one line in ``_MODULES``.
"""

from __future__ import annotations

import argparse
import sys

from adptycho.commands import (calibrate, convert, demo, landscape, orient, oversample,
                               reconstruct, show, simulate, tensorboard, train_irmae,
                               train_stylegan2, uncertainty)
from adptycho.errors import AdptychoError

__all__ = ["main", "build_parser", "COMMANDS"]

_MODULES = (simulate, reconstruct, calibrate, oversample, orient, show, landscape, train_irmae,
            train_stylegan2, uncertainty, demo, convert)
COMMANDS = {module.NAME: module.run for module in _MODULES}

EXIT_USER_ERROR = 2  # bad input: one line "adptycho: error: ..." on stderr (docs/errors.md)
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command. Its ``option_rules`` attribute maps each command to the
    {dest: rule} of its options (``adptycho.commands.options``)."""
    from adptycho import __version__

    parser = argparse.ArgumentParser(
        prog="adptycho", description="Ptychography reconstruction by automatic differentiation.")
    parser.add_argument("--version", action="version", version=f"adptycho {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    rules = {module.NAME: module.add_parser(sub) for module in _MODULES}
    rules["reconstruct"].update(convert.RECONSTRUCT_RULES)  # --init (added by convert)
    for name, extra in tensorboard.add_options(sub).items():
        rules[name].update(extra)
    parser.option_rules = rules
    return parser


def _user_error(message) -> int:
    line = " ".join(str(message).split())  # exactly one line
    print(f"adptycho: error: {line}", file=sys.stderr)
    return EXIT_USER_ERROR


def main(argv=None) -> int:
    """Run one command; returns the exit status: 0 done, 2 bad input or a file-system refusal
    (one line on stderr, nothing written), 130 interrupted. Any other exception is a bug: it
    propagates, so the console script prints its traceback and exits with status 1."""
    from adptycho.runtime import configure

    configure()  # the command opts into the process settings (quiet TF start-up, allocator)
    from adptycho.commands.checks import check_arguments

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_arguments(args, argv, parser.option_rules[args.command])
        COMMANDS[args.command](args)
    except AdptychoError as exc:
        return _user_error(exc)
    except OSError as exc:  # the file system refused (permissions, disk full, unreadable file)
        where = f"{exc.filename}: " if exc.filename else ""
        return _user_error(f"{where}{exc.strerror or exc}")
    except KeyboardInterrupt:
        print("adptycho: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``adptycho convert`` and ``reconstruct --init``: registration of ``adptycho.cli_convert`` with
the rules of its options."""

from __future__ import annotations

from adptycho.commands.options import APPLIES

NAME = "convert"


def _init(args):
    if args.ptychogan:
        return "--init does not apply to --ptychogan fits (the generator makes the object)"
    if args.object != "pixels":
        return f"--init seeds a pixel object; it does not combine with --object {args.object}"
    if args.calibration:
        return "--init and --calibration both set the probe and positions: give one"
    return None


def add_parser(sub) -> dict:
    """``convert``, and ``--init`` on ``reconstruct`` (registered before it)."""
    from adptycho import cli_convert

    cli_convert.add_parser(sub)
    return {"input": APPLIES, "to": APPLIES, "out": APPLIES}


RECONSTRUCT_RULES = {"init": _init}


def run(args):
    from adptycho import cli_convert

    cli_convert.run(args)

"""``--tensorboard DIR`` on the fitting commands (``adptycho.cli_tensorboard``) and its rule."""

from __future__ import annotations

from adptycho.commands.options import APPLIES


def _reconstruct(args):
    if args.ptychogan or args.optimizer == "lbfgs":
        return ("--tensorboard logs the epochs of the adam and PIE engines; the PtychoGAN fit and "
                "the lbfgs optimizer have none (drop --tensorboard)")
    return None


def _train_stylegan2(args):
    if args.export_only:
        return "--tensorboard logs training steps; --export-only trains nothing (drop one)"
    return None


RULES = {"reconstruct": _reconstruct, "train-stylegan2": _train_stylegan2}


def add_options(sub) -> dict:
    """Add the option; returns {command: {"tensorboard": rule}}."""
    from adptycho.cli_tensorboard import TENSORBOARD_COMMANDS, add_tensorboard_option

    add_tensorboard_option(sub)
    return {name: {"tensorboard": RULES.get(name, APPLIES)} for name in TENSORBOARD_COMMANDS}

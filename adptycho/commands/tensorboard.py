"""``--tensorboard DIR`` on the fitting commands (``adptycho.cli_tensorboard``) and its rule."""

from __future__ import annotations

from adptycho.commands.options import APPLIES


def _reconstruct(args):
    if args.ptychogan or args.optimizer == "lbfgs":
        return ("--tensorboard logs the epochs of the adam and PIE engines; the PtychoGAN fit and "
                "the lbfgs optimizer have none (drop --tensorboard)")
    return None


def add_options(sub) -> dict:
    """Add the option; returns {command: {"tensorboard": rule}}."""
    from adptycho.cli_tensorboard import TENSORBOARD_COMMANDS, add_tensorboard_option

    add_tensorboard_option(sub)
    return {name: {"tensorboard": _reconstruct if name == "reconstruct" else APPLIES}
            for name in TENSORBOARD_COMMANDS}

"""``--tensorboard DIR`` on the fitting commands (``reconstruct``, ``calibrate``, ``oversample``,
``train-irmae``, ``train-stylegan2``): the option, its rules and the callbacks it makes.

Kept free of TensorFlow imports, so that ``adptycho --help`` stays quick and the command's process
settings (``runtime.configure``) come before TensorFlow starts. The logger itself is
``adptycho.training.tensorboard.TensorBoardLogger``.
"""

from __future__ import annotations

import os

from adptycho.commands.options import APPLIES

__all__ = ["add_options", "add_tensorboard_option", "tensorboard_callbacks", "TENSORBOARD_COMMANDS"]

TENSORBOARD_COMMANDS = ("reconstruct", "calibrate", "oversample", "train-irmae",
                        "train-stylegan2")


def add_tensorboard_option(subparsers, commands=TENSORBOARD_COMMANDS) -> None:
    """Add ``--tensorboard DIR`` to the fitting subcommands of an argparse ``subparsers``."""
    for name in commands:
        parser = subparsers.choices.get(name)
        if parser is not None:
            parser.add_argument("--tensorboard", metavar="DIR",
                                help="write TensorBoard event files to DIR (scalars every "
                                     "epoch, object and probe images every 5 epochs, the "
                                     "settings; view with `tensorboard --logdir DIR`)")


def tensorboard_callbacks(args) -> list:
    """``[TensorBoardLogger]`` for a parsed command with ``--tensorboard``, else ``[]``."""
    from adptycho.errors import AdptychoError

    log_dir = getattr(args, "tensorboard", None)
    if not log_dir:
        return []
    if getattr(args, "ptychogan", False) or getattr(args, "optimizer", None) == "lbfgs":
        raise AdptychoError("--tensorboard logs the epochs of the adam and PIE engines; the "
                            "PtychoGAN fit and the lbfgs optimizer have none (drop --tensorboard)")
    if os.path.exists(log_dir) and not os.path.isdir(log_dir):
        raise AdptychoError(f"--tensorboard {log_dir} exists and is not a folder")
    settings = {k: v for k, v in vars(args).items() if k != "tensorboard"}
    from adptycho.training.tensorboard import TensorBoardLogger

    return [TensorBoardLogger(log_dir, settings=settings)]


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
    add_tensorboard_option(sub)
    return {name: {"tensorboard": RULES.get(name, APPLIES)} for name in TENSORBOARD_COMMANDS}

"""Option types, the option groups several commands share, and their applicability rules.

Each shared group (geometry, loss, seed, fitting length, probe constraints) is defined once here
and added to every command that takes it. Next to each option is its *rule*: a function
``rule(args) -> message or None`` that says why the option, given explicitly on the command
line, would have no effect in the mode the other options chose (``None``: it applies).
``adptycho.commands.checks`` refuses such an option with ``adptycho: error: MESSAGE`` (exit status 2);
``APPLIES`` marks an option that always takes effect. A rule looks at the parsed arguments only
(a few at a small file an option names: a model's ``config.json``, a reconstruction's header). Every command module lists a rule for every
option of its parser in ``RULES`` (``tests/test_cli_options.py`` walks the parsers to check it).

Nothing here imports TensorFlow: the checks run before it is loaded.
"""

from __future__ import annotations

import argparse
import os
import shlex

from adptycho.errors import AdptychoError

LOSSES = ("amplitude", "poisson", "poisson-gaussian")
GROUPS = ("object", "probe", "positions", "distance")
STREAM_ABOVE_BYTES = 2 << 30


# -- types -----------------------------------------------------------------------------------
def groups(text):
    names = [g.strip() for g in text.split(",") if g.strip()]
    for g in names:
        if g not in GROUPS:
            raise argparse.ArgumentTypeError(f"unknown group {g!r} (choose from {', '.join(GROUPS)})")
    return names


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def nonnegative_float(text):
    value = float(text)
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def fraction(text):
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def probe_power(text):
    return text if text == "auto" else positive_float(text)


# -- rules -----------------------------------------------------------------------------------
def APPLIES(args):  # noqa: N802 (a constant-like rule)
    """The rule of an option that takes effect in every mode."""
    return None


def is_tike(args) -> bool:
    """The input is a tike ``.npz.bz2`` scan (far field, loaded whole, geometry in the file)."""
    return str(getattr(args, "input", "")).endswith(".npz.bz2")


def _geometry_rule(flag):
    def rule(args):
        if is_tike(args):
            return (f"{flag} does not apply to a tike .npz.bz2 scan (a far-field scan whose "
                    "geometry is in the file)")
        return None
    return rule


def is_nearfield(args) -> bool:
    return bool(getattr(args, "nearfield", False) or getattr(args, "focus_distance", None))


# -- shared groups ---------------------------------------------------------------------------
def add_geometry_options(p):
    """``--focus-distance``, ``--nearfield``: the propagation of a CXI scan."""
    p.add_argument("--focus-distance", type=positive_float,
                   help="cone-beam near field: focus-to-sample distance z1 in metres")
    p.add_argument("--nearfield", action="store_true",
                   help="parallel-beam near field (angular spectrum over the detector distance)")
    return {"focus_distance": _geometry_rule("--focus-distance"),
            "nearfield": _geometry_rule("--nearfield")}


def add_loss_option(p, default="amplitude", help="noise model (default amplitude)"):
    p.add_argument("--loss", choices=LOSSES, default=default, help=help)
    return {"loss": APPLIES}


def add_seed_option(p, help="seed of every random choice (repeatable runs)"):
    p.add_argument("--seed", type=int, default=0, help=help)
    return {"seed": APPLIES}


def add_probe_constraints(p):
    p.add_argument("--probe-power", type=probe_power,
                   help="hold the total probe power at this many photons per exposure, or 'auto' "
                        "(the largest total count of a pattern)")
    p.add_argument("--probe-support", type=positive_float, metavar="DIAMETER_PX",
                   help="circular probe support of this diameter in pixels (zero outside)")
    return {"probe_power": APPLIES, "probe_support": APPLIES}


def add_length_options(p, *, epochs=None, epochs_help=None, batch_size=None, batch_help=None,
                       batch=True):
    """``--epochs`` and (unless ``batch=False``) ``--batch-size``."""
    p.add_argument("--epochs", type=positive_int, default=epochs, help=epochs_help)
    rules = {"epochs": APPLIES}
    if batch:
        p.add_argument("--batch-size", type=positive_int, default=batch_size, help=batch_help)
        rules["batch_size"] = APPLIES
    return rules


# -- shared steps of the commands ---------------------------------------------------------------
def probe_constraint_kwargs(args, scan) -> dict:
    """``probe_power`` and ``probe_support`` keyword arguments of ``--probe-power`` and
    ``--probe-support`` for ``scan``."""
    import numpy as np

    from adptycho.geometry import circular_aperture

    power = args.probe_power
    if power == "auto":
        power = float(np.max(np.sum(np.clip(scan.patterns, 0, None), axis=(1, 2))))
    support = None
    if args.probe_support is not None:
        support = np.abs(circular_aperture(scan.detector_shape, args.probe_support, edge_px=2.0))
    return {"probe_power": power, "probe_support": support}


def _stream_choice(path, stream: str) -> bool:
    if stream == "auto":
        import h5py

        try:
            with h5py.File(path, "r") as f:
                data = next((f[k] for k in ("entry_1/instrument_1/detector_1/data",
                                            "entry_1/data_1/data") if k in f), None)
                size = 0 if data is None else data.size * 4
        except OSError:
            size = 0  # load_cxi reports the problem
        stream = "yes" if size > STREAM_ABOVE_BYTES else "no"
    return stream == "yes"


def load_scan(args):
    """The scan of ``args.input`` (CXI, or a tike ``.npz.bz2``) with the geometry options."""
    from adptycho.io import load_cxi, load_tike_siemens_star

    path = args.input
    if not os.path.exists(path):
        raise AdptychoError(f"no such file: {path}")
    if is_tike(args):
        return load_tike_siemens_star(path)
    geometry = "nearfield" if is_nearfield(args) else None
    return load_cxi(path, geometry=geometry, focus_distance_m=args.focus_distance,
                    allow_negative=getattr(args, "loss", None) == "poisson-gaussian",
                    stream=_stream_choice(path, getattr(args, "stream", "no")))


def command_line(name: str, options) -> str:
    """The ``adptycho NAME --flag value ...`` line (for model cards) of the given options."""
    return f"adptycho {name} " + " ".join(
        f"{flag} {shlex.quote(str(value))}" for flag, value in options if value is not None)


def engine_names(spec: str) -> list:
    """The engine names of a schedule ``"epie:30,adam:200"`` (``parse_schedule`` validates)."""
    return [item.partition(":")[0].strip() for item in str(spec).split(",")]

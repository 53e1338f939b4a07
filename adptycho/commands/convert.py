"""``adptycho convert IN --to FORMAT --out OUT``: scans and reconstructions between formats.

Reconstructions (adptycho, CXI, NeXus NXcxi_ptycho, Ptychodus HDF5/NPZ, PtychoShelves .mat,
ptypy .ptyr) convert to ``adptycho``, ``cxi``, ``nexus`` or ``ptychodus`` (NPZ when OUT ends in
``.npz``); scans (CXI, NeXus) to ``cxi`` or ``nexus``. The input's format is detected from its
contents. An unknown or malformed input, or a target its kind cannot be written as, ends the
command with one line and exit status 2, and nothing is written. ``docs/formats.md`` has the
conventions.

Also ``reconstruct --init FILE`` (``apply_init``: start from any reconstruction this reads),
registered here with the rules of its options.
"""

from __future__ import annotations

from adptycho.commands.options import APPLIES
from adptycho.errors import AdptychoError, DataError

__all__ = ["add_parser", "run", "apply_init", "read_initial"]

NAME = "convert"
TARGETS = ("adptycho", "cxi", "nexus", "ptychodus")


def add_parser(sub) -> dict:
    """Register ``convert``, and ``--init`` on ``reconstruct`` (registered before it); returns
    the rules of the options of ``convert``."""
    p = sub.add_parser("convert", help="convert a scan or reconstruction between formats "
                                       "(CXI, NeXus, Ptychodus, PtychoShelves, ptypy)")
    p.add_argument("input", help="scan or reconstruction file (format detected from contents)")
    p.add_argument("--to", required=True, choices=TARGETS, help="output format")
    p.add_argument("--out", required=True, help="output file")
    reconstruct = sub.choices.get("reconstruct")
    if reconstruct is not None:
        reconstruct.add_argument(
            "--init", help="start from this reconstruction (any format `adptycho convert` reads): "
                           "its object (and grid), probe and, where it has one per pattern, "
                           "positions")
    return {"input": APPLIES, "to": APPLIES, "out": APPLIES}


def apply_init(args, scan, probe):
    """``(scan, probe, initial_object)`` for ``reconstruct --init`` (unchanged without it).

    The object grid becomes the file's object grid: its positions replace the scan's when it has
    one per pattern (they are corners on that grid); otherwise the scan's positions must fit it.
    """
    if not getattr(args, "init", None):
        return scan, probe, None
    if getattr(args, "object", "pixels") != "pixels":
        raise AdptychoError("--init seeds a pixel object; it does not combine with --object "
                            f"{args.object}")
    if getattr(args, "calibration", None):
        raise AdptychoError("--init and --calibration both set the probe and positions: give one")
    initial = read_initial(args.init)
    if len(initial.positions_px) == scan.num_patterns:
        scan = scan.replace(positions_px=initial.positions_px)
    elif len(initial.positions_px):
        raise AdptychoError(f"--init {args.init} has {len(initial.positions_px)} positions, the "
                            f"scan {scan.num_patterns}")
    if tuple(initial.probe.shape[-2:]) != tuple(scan.detector_shape):
        raise AdptychoError(f"--init probe is {initial.probe.shape[-2:]}, the detector "
                            f"{scan.detector_shape}")
    return scan, (initial.probe if probe is None else probe), initial.object


def _read(path):
    from adptycho.io.formats import read_file

    try:
        return read_file(path)
    except AdptychoError:
        raise
    except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
        raise DataError(f"{path} is malformed: {type(exc).__name__}: {exc}") from None


def _init(args):
    if args.ptychogan:
        return "--init does not apply to --ptychogan fits (the generator makes the object)"
    if args.object != "pixels":
        return f"--init seeds a pixel object; it does not combine with --object {args.object}"
    if args.calibration:
        return "--init and --calibration both set the probe and positions: give one"
    return None


RECONSTRUCT_RULES = {"init": _init}


def run(args) -> None:
    from adptycho.io.formats import SCAN_WRITERS, write_reconstruction, write_scan
    from adptycho.io.validation import check_no_overwrite, check_output_path

    check_output_path(args.out, "--out")
    check_no_overwrite({"--out": args.out}, {"input": args.input})
    kind, value = _read(args.input)
    if kind == "scan":
        if args.to not in SCAN_WRITERS:
            raise AdptychoError(f"{args.input} is a scan; scans convert to "
                                f"{' or '.join(SCAN_WRITERS)}, not {args.to}")
        write_scan(args.out, value, args.to)
        what = f"scan of {value.num_patterns} patterns"
    else:
        write_reconstruction(args.out, value, args.to)
        what = (f"reconstruction (object {value.object.shape[0]}x{value.object.shape[1]}, "
                f"{len(value.probe)} probe mode(s), {len(value.positions_px)} positions)")
    print(f"adptycho: {args.input} -> {args.to}: {what}; wrote {args.out}")


def read_initial(path):
    """The reconstruction of any readable format, for ``reconstruct --init``."""
    kind, value = _read(path)
    if kind != "reconstruction":
        raise AdptychoError(f"--init {path} is a scan, not a reconstruction")
    return value

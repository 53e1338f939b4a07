"""The bad-input catalogue (docs/errors.md), each case through the command line: exit status 2,
exactly one line ``adptycho: error: ...`` on stderr naming the problem, no traceback, nothing
written and no input changed. Also: internal errors are not disguised as bad input, ignored
options are errors, a disabled fast path warns once."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from adptycho.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DETECTOR = "entry_1/instrument_1/detector_1"
SOURCE = "entry_1/instrument_1/source_1"
TRANSLATION = "entry_1/sample_1/geometry_1/translation"
N, H = 6, 16
PIXEL_M = 1e-9 * 0.5 / (H * 75e-6)  # object pixel of the files below (far field)


def _cxi(path, *, patterns=None, translation=None, drop=(), **fields):
    """Write a small far-field CXI file by hand (so that any field can be broken); ``fields``
    override datasets by their last path component (``distance=0`` ...); ``drop`` omits them."""
    if patterns is None:
        patterns = np.random.default_rng(0).poisson(20.0, (N, H, H)).astype(np.float32)
    if translation is None:
        grid = np.stack(np.meshgrid(np.arange(3), np.arange(2), indexing="ij"), -1).reshape(-1, 2)
        translation = np.zeros((N, 3))
        translation[:, 1], translation[:, 0] = grid[:, 0] * 5 * PIXEL_M, grid[:, 1] * 5 * PIXEL_M
    values = {f"{DETECTOR}/data": patterns, TRANSLATION: translation,
              f"{DETECTOR}/distance": 0.5, f"{DETECTOR}/x_pixel_size": 75e-6,
              f"{SOURCE}/wavelength": 1e-9}
    for name, value in fields.items():
        key = next((k for k in values if k.endswith("/" + name)), None)
        key = key or (f"{DETECTOR}/{name}" if name in ("mask", "y_pixel_size")
                      else f"{SOURCE}/{name}")
        values[key] = value
    with h5py.File(path, "w") as f:
        for key, value in values.items():
            if not any(key.endswith("/" + d) for d in drop):
                f[key] = value
    return str(path)


def _reconstruction(path, object_shape=(40, 40), probe_shape=(H, H)):
    from adptycho.io import ReconstructionResult, save_reconstruction

    save_reconstruction(path, ReconstructionResult(
        object=np.ones(object_shape, np.complex64), probe=np.ones((1,) + probe_shape, np.complex64),
        positions_px=np.zeros((N, 2)), nominal_positions_px=np.zeros((N, 2)),
        loss_history=np.zeros(1), residual_history=np.zeros(1)))
    return str(path)


def _calibration(path, geometry="farfield", probe_shape=(H, H)):
    from adptycho.calibration import Calibration

    Calibration(probe=np.ones((1,) + probe_shape, np.complex64), positions_px=np.zeros((N, 2)),
                nominal_positions_px=np.zeros((N, 2)), affine=np.eye(2), distance_m=0.5,
                geometry=geometry, mean_counts=5000.0).save(path)
    return str(path)


def _patterns(transform):
    return transform(np.random.default_rng(0).poisson(20.0, (N, H, H)).astype(np.float32))


def _with(index, value):
    def change(p):
        p = p.astype(np.float32)
        p[index] = value
        return p
    return change


def _truncated(path):
    _cxi(path)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])
    return str(path)


def _empty(path):
    open(path, "wb").close()
    return str(path)


def _tampered_model(directory):
    shutil.copytree(os.path.join(ROOT, "models", "irmae-mnist"), directory)
    weights = os.path.join(directory, "decoder.weights.h5")
    with open(weights, "r+b") as f:
        f.seek(os.path.getsize(weights) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    return str(directory)


def _read_only_directory(tmp, monkeypatch):
    directory = tmp / "read-only"
    directory.mkdir()
    directory.chmod(0o555)
    if os.access(directory, os.W_OK):
        # running as root, which writes anywhere: make the access check see what an ordinary
        # user (or a read-only mount) would see for this directory
        real = os.access
        target = os.path.realpath(directory)
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: (
            False if os.path.realpath(p) == target and mode & os.W_OK else real(p, mode, **kw)))
    return directory


def _tf_started(tmp):
    import tensorflow as tf

    tf.constant(1.0) + 1.0  # TensorFlow's runtime is now initialised in this process
    return tmp


SCAN = "scan.cxi"  # written with _cxi() unless a case writes its own
# (id, docs description, setup(tmp, monkeypatch) -> argv with OUT for the output, words)
CASES = [
    ("missing-file", lambda t, m: ["reconstruct", str(t / "missing.cxi"), "--out", "OUT"],
     ["no such file"]),
    ("empty-file", lambda t, m: ["reconstruct", _empty(t / "empty.cxi"), "--out", "OUT"],
     ["cannot read", "empty.cxi"]),
    ("truncated-file", lambda t, m: ["reconstruct", _truncated(t / "cut.cxi"), "--out", "OUT"],
     ["cannot read", "cut.cxi", "truncated"]),
    ("no-patterns", lambda t, m: ["reconstruct", _cxi(t / SCAN, drop=("data",)), "--out", "OUT"],
     ["detector_1/data"]),
    ("wrong-rank", lambda t, m: ["reconstruct", _cxi(t / SCAN, patterns=np.ones((N, H), np.float32)),
                                 "--out", "OUT"], ["(N, H, W)", f"({N}, {H})"]),
    ("missing-translations", lambda t, m: ["reconstruct", _cxi(t / SCAN, drop=("translation",)),
                                           "--out", "OUT"], ["translation", "scan positions"]),
    ("count-mismatch", lambda t, m: ["reconstruct", _cxi(t / SCAN, translation=np.zeros((N - 1, 3))),
                                     "--out", "OUT"], [f"{N - 1} rows", f"{N} patterns"]),
    ("missing-distance", lambda t, m: ["reconstruct", _cxi(t / SCAN, drop=("distance",)),
                                       "--out", "OUT"], ["distance"]),
    ("missing-wavelength", lambda t, m: ["reconstruct", _cxi(t / SCAN, drop=("wavelength",)),
                                         "--out", "OUT"], ["wavelength", "energy"]),
    ("nan-patterns", lambda t, m: ["reconstruct", _cxi(t / SCAN, patterns=_patterns(
        _with((2, 3, 4), np.nan))), "--out", "OUT"], ["non-finite", "pattern 2"]),
    ("inf-patterns", lambda t, m: ["reconstruct", _cxi(t / SCAN, patterns=_patterns(
        _with((4, 0, 1), np.inf))), "--out", "OUT"], ["non-finite", "inf", "pattern 4"]),
    ("negative-counts", lambda t, m: ["reconstruct", _cxi(t / SCAN, patterns=_patterns(
        _with((1, 5, 5), -3.0))), "--out", "OUT"], ["negative counts", "pattern 1"]),
    ("all-zero", lambda t, m: ["reconstruct", _cxi(t / SCAN, patterns=np.zeros((N, H, H), np.float32)),
                               "--out", "OUT"], ["all 6 patterns are zero"]),
    ("all-zero-streamed", lambda t, m: ["reconstruct", _cxi(t / SCAN, patterns=np.zeros(
        (N, H, H), np.uint16)), "--stream", "yes", "--out", "OUT"], ["all 6 patterns", "zero"]),
    ("complex-patterns", lambda t, m: ["reconstruct", _cxi(t / SCAN, patterns=_patterns(
        lambda p: p.astype(np.complex64))), "--out", "OUT"], ["real photon counts", "complex"]),
    ("string-patterns", lambda t, m: ["reconstruct", _cxi(t / SCAN, patterns=np.full(
        (N, H, H), b"7", "S1")), "--out", "OUT"], ["real photon counts", "dtype"]),
    ("mask-shape", lambda t, m: ["reconstruct", _cxi(t / SCAN, mask=np.zeros((H, H - 1), np.uint32)),
                                 "--out", "OUT"], ["mask has shape", f"({H}, {H - 1})"]),
    ("nan-positions", lambda t, m: ["reconstruct", _cxi(t / SCAN, translation=np.where(
        np.arange(N)[:, None] == 3, np.nan, np.zeros((N, 3)))), "--out", "OUT"],
     ["translation", "non-finite", "row 3"]),
    ("positions-off-object", lambda t, m: [
        "landscape", _cxi(t / SCAN, translation=np.full((N, 3), 500 * PIXEL_M)), "--reconstruction",
        _reconstruction(t / "rec.h5"), "--out", "OUT.png"], ["6 scan positions", "outside"]),
    ("positions-wrong-unit", lambda t, m: ["reconstruct", _cxi(
        t / SCAN, translation=np.arange(3 * N).reshape(N, 3) * 1e-2), "--out", "OUT"],
     ["object grid would be", "metres"]),
    ("zero-energy", lambda t, m: ["reconstruct", _cxi(t / SCAN, drop=("wavelength",), energy=0.0),
                                  "--out", "OUT"], ["energy must be positive"]),
    ("negative-wavelength", lambda t, m: ["reconstruct", _cxi(t / SCAN, wavelength=-1e-9),
                                          "--out", "OUT"], ["wavelength must be positive"]),
    ("zero-distance", lambda t, m: ["reconstruct", _cxi(t / SCAN, distance=0.0), "--out", "OUT"],
     ["distance must be positive"]),
    ("negative-pixel-size", lambda t, m: ["reconstruct", _cxi(t / SCAN, x_pixel_size=-75e-6),
                                          "--out", "OUT"], ["x_pixel_size must be positive"]),
    ("zero-y-pixel-size", lambda t, m: ["reconstruct", _cxi(t / SCAN, y_pixel_size=0.0),
                                        "--out", "OUT"], ["y_pixel_size must be positive"]),
    ("probe-guess-shape", lambda t, m: ["reconstruct", _cxi(
        t / SCAN, illumination=np.ones((1, H, H - 2), np.complex64)), "--out", "OUT"],
     ["probe has shape", f"(1, {H}, {H - 2})"]),
    ("calibration-other-geometry", lambda t, m: [
        "reconstruct", _cxi(t / SCAN), "--calibration", _calibration(t / "cal.h5", "nearfield"),
        "--out", "OUT"], ["calibration is nearfield", "scan is farfield"]),
    ("calibration-other-detector", lambda t, m: [
        "reconstruct", _cxi(t / SCAN), "--calibration", _calibration(t / "cal.h5", probe_shape=(32, 32)),
        "--out", "OUT"], ["calibrated probe (32, 32)", f"detector ({H}, {H})"]),
    ("reconstruction-as-scan", lambda t, m: ["reconstruct", _reconstruction(t / "rec.h5"),
                                             "--out", "OUT"], ["reconstruction file, not a scan"]),
    ("calibration-as-scan", lambda t, m: ["reconstruct", _calibration(t / "cal.h5"), "--out", "OUT"],
     ["calibration file, not a scan", "--calibration"]),
    ("scan-as-reconstruction", lambda t, m: ["show", _cxi(t / SCAN), "--out", "OUT.png"],
     ["is a CXI scan, not a reconstruction"]),
    ("scan-as-calibration", lambda t, m: ["reconstruct", _cxi(t / SCAN), "--calibration",
                                          _cxi(t / "other.cxi"), "--out", "OUT"],
     ["is a CXI scan, not a calibration file"]),
    ("weights-hash-mismatch", lambda t, m: ["reconstruct", _cxi(t / SCAN), "--object",
                                            _tampered_model(t / "model"), "--out", "OUT"],
     ["decoder.weights.h5 does not match its card", "sha256"]),
    ("out-missing-directory", lambda t, m: ["reconstruct", _cxi(t / SCAN), "--out",
                                            str(t / "no-such-dir" / "rec.h5")], ["does not exist"]),
    ("out-read-only-directory", lambda t, m: ["reconstruct", _cxi(t / SCAN), "--out",
                                              str(_read_only_directory(t, m) / "rec.h5")],
     ["not writable"]),
    ("out-is-a-directory", lambda t, m: ["reconstruct", _cxi(t / SCAN), "--out", str(t)],
     ["is a directory"]),
    ("out-equals-input", lambda t, m: ["reconstruct", _cxi(t / SCAN), "--out", str(t / SCAN)],
     ["--out", "is the input", "refusing to overwrite"]),
    ("png-equals-input", lambda t, m: ["reconstruct", _cxi(t / SCAN), "--out", "OUT", "--png",
                                       str(t / SCAN)], ["--png", "is the input"]),
    ("conflicting-png", lambda t, m: ["reconstruct", _cxi(t / SCAN), "--out", "OUT", "--no-png",
                                      "--png", "OUT.png"], ["--png and --no-png contradict"]),
    ("conflicting-checkpoint", lambda t, m: ["reconstruct", _cxi(t / SCAN), "--out", "OUT",
                                             "--no-checkpoint", "--checkpoint-dir", "OUT.ck"],
     ["--no-checkpoint and --checkpoint-dir contradict"]),
    ("conflicting-weights", lambda t, m: ["oversample", _cxi(t / SCAN), "--init",
                                          _reconstruction(t / "rec.h5"), "--out", "OUT",
                                          "--weight", "5", "--weight-schedule", "5,10"],
     ["--weight and --weight-schedule contradict"]),
    ("ignored-readout-noise", lambda t, m: ["reconstruct", _cxi(t / SCAN), "--out", "OUT",
                                            "--readout-noise", "2"],
     ["--readout-noise applies to --loss poisson-gaussian", "amplitude"]),
    ("ignored-latent-option", lambda t, m: ["reconstruct", _cxi(t / SCAN), "--out", "OUT",
                                            "--latent-m", "phase"],  # abbreviation of --latent-mode
     ["--latent-mode applies to latent objects"]),
    ("ignored-threads", lambda t, m: ["train-stylegan2", "--out", str(_tf_started(t) / "model"),
                                      "--threads", "3"], ["--threads 3 cannot take effect"]),
]


def _snapshot(directory):
    """{relative path: hash of the content} of every file below ``directory``."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = hash(f.read())
    return out


@pytest.mark.parametrize("setup, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, monkeypatch,
                                                          setup, words):
    inputs = tmp_path / "in"
    inputs.mkdir()
    outputs = tmp_path / "out"
    outputs.mkdir()
    argv = [a.replace("OUT", str(outputs / "result.h5")) if a.startswith("OUT") else a
            for a in setup(inputs, monkeypatch)]
    argv = [a.replace("result.h5.png", "result.png") for a in argv]
    before = _snapshot(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("adptycho: error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert _snapshot(tmp_path) == before  # no output written, no input changed
    assert not os.listdir(outputs)


def test_the_catalogue_in_the_docs_lists_every_case():
    with open(os.path.join(ROOT, "docs", "errors.md")) as f:
        text = f.read()
    rows = set(re.findall(r"^\| `([a-z0-9-]+)` \|", text, re.M))
    assert rows == {c[0] for c in CASES}
    assert len(rows) >= 20


def test_internal_error_prints_a_traceback_and_exits_1(tmp_path):
    """A bug (here: a KeyError injected into 'show') is not turned into a one-line user error:
    the console script shows the traceback and exits with status 1, not 2."""
    rec = _reconstruction(tmp_path / "rec.h5")
    code = ("import sys, adptycho.cli as cli\n"
            "def broken(args):\n"
            "    return {}['missing key']\n"
            "cli.COMMANDS['show'] = broken\n"
            f"sys.exit(cli.main(['show', {rec!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2"),
                          timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" in proc.stderr and "KeyError: 'missing key'" in proc.stderr
    assert "adptycho: error:" not in proc.stderr


def test_fast_path_needs_no_private_tensorflow_module(monkeypatch):
    """The fast path is chosen once at compile (``accel.ExecutionPlan``), not from the trace
    context through a private TensorFlow module: with that module "moved" (importing it fails)
    the plan, the window loops and the fused far field are unchanged, and nothing warns."""
    import warnings

    import tensorflow as tf
    from tensorflow.python import ops

    import adptycho.accel.forward as accel_forward
    from adptycho.accel import ExecutionPlan, choose_plan

    monkeypatch.delattr(ops, "control_flow_util", raising=False)
    monkeypatch.setitem(sys.modules, "tensorflow.python.ops.control_flow_util", None)
    calls = []
    original = accel_forward.fused_far_field_intensities
    monkeypatch.setattr(accel_forward, "fused_far_field_intensities",
                        lambda *a: calls.append(1) or original(*a))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan, jit = choose_plan(True, (128, 128), True)
        assert plan.xla and jit and plan.use_fused((128, 128)) and plan.window_loops((128, 128))
        small = ExecutionPlan(xla=True, window_min_pixels=0)
        intensity = tf.function(lambda: accel_forward.forward_intensities(
            (tf.ones((20, 20)), tf.zeros((20, 20))), tf.ones((1, 8, 8), tf.complex64),
            tf.constant([[1.0, 2.0], [3.0, 4.0]]), plan=small), jit_compile=True)()
    assert calls and intensity.shape == (2, 8, 8)


def test_bad_input_is_reported_before_tensorflow_is_imported(tmp_path):
    """Argument checks need no TensorFlow (adptycho.io loads its modules on first use): a typo
    costs half a second, not the seconds of importing TensorFlow."""
    code = ("import sys, adptycho.cli as cli\n"
            f"code = cli.main(['reconstruct', {str(tmp_path / 'typo.cxi')!r}, '--out', "
            f"{str(tmp_path / 'out.h5')!r}])\n"
            "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n"
            "sys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == f"adptycho: error: no such file: {tmp_path / 'typo.cxi'}"

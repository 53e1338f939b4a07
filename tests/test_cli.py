"""Command line: simulate -> reconstruct -> show, one-line errors, nothing written on failure."""

import os
import re
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from adptycho.cli import main
from adptycho.io import load_cxi, load_reconstruction

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_simulate_reconstruct_show_round_trip(tmp_path, capsys):
    cxi = tmp_path / "scan.cxi"
    truth = tmp_path / "truth.h5"
    assert main(["simulate", "--out", str(cxi), "--truth-out", str(truth), "--object-size", "128",
                 "--probe-size", "32", "--probe-diameter", "16", "--overlap", "0.6",
                 "--photons", "1e5", "--poisson"]) == 0
    scan = load_cxi(cxi)
    assert scan.detector_shape == (32, 32) and scan.num_patterns > 20
    out = tmp_path / "rec.h5"
    assert main(["reconstruct", str(cxi), "--out", str(out), "--epochs", "3", "--batch-size", "8",
                 "--refine", "probe", "--quiet"]) == 0
    result = load_reconstruction(out)
    with h5py.File(out, "r") as f:  # the public file contract
        assert f["object"].dtype == np.complex64 and f["object"].ndim == 2
        assert f["probe"].dtype == np.complex64 and f["probe"].shape == (1, 32, 32)
        assert f["positions_px"].shape == (scan.num_patterns, 2)
        # the default schedule: 50 sequential ePIE epochs, then the 3 adam epochs asked for
        assert f["loss_history"].shape == (53,)
        assert "settings" in f.attrs
    assert result.settings["engine"] == "epie:50,adam:3"
    assert result.settings["loss"] == "amplitude"
    # the simulated file carries a probe guess: it is used, not searched
    assert "probe_search_defocus_diameter_px" not in result.settings
    assert (tmp_path / "rec.png").exists()
    png = tmp_path / "shown.png"
    assert main(["show", str(out), "--out", str(png)]) == 0
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize("argv, message", [
    (["reconstruct", "missing.cxi", "--out", "OUT"], "no such file"),
    (["show", "missing.h5", "--out", "OUT"], "no such file"),
])
def test_bad_input_gives_one_line_error_and_writes_nothing(tmp_path, capsys, argv, message):
    argv = [a.replace("OUT", str(tmp_path / "out.h5")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("adptycho: error:") and message in err[0]
    assert not list(tmp_path.iterdir())


def test_cxi_without_translations_is_reported(tmp_path, capsys):
    bad = tmp_path / "bad.cxi"
    with h5py.File(bad, "w") as f:
        f["entry_1/instrument_1/detector_1/data"] = np.ones((3, 8, 8), np.float32)
    out = tmp_path / "out.h5"
    assert main(["reconstruct", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "translation" in err and "Traceback" not in err
    assert not out.exists()


def test_console_script_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "adptycho.cli", "reconstruct",
                           str(tmp_path / "nope.cxi"), "--out", str(tmp_path / "o.h5")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "no such file" in proc.stderr


def test_calibrate_then_reconstruct_with_calibration(tmp_path):
    bright = tmp_path / "bright.cxi"
    assert main(["simulate", "--out", str(bright), "--object-size", "128", "--probe-size", "32",
                 "--probe-diameter", "16", "--overlap", "0.7", "--photons", "1e6"]) == 0
    calibration = tmp_path / "calibration.h5"
    assert main(["calibrate", str(bright), "--out", str(calibration), "--epochs", "4",
                 "--batch-size", "8"]) == 0
    with h5py.File(calibration, "r") as f:  # the public calibration contract
        assert f["probe"].dtype == np.complex64 and f["probe"].shape == (1, 32, 32)
        assert f["positions_px"].shape[1] == 2
        assert "distance_m" in f.attrs
    dim = tmp_path / "dim.cxi"
    assert main(["simulate", "--out", str(dim), "--object-size", "128", "--probe-size", "32",
                 "--probe-diameter", "16", "--overlap", "0.7", "--photons", "1e4", "--poisson"]) == 0
    out = tmp_path / "dim.h5"
    assert main(["reconstruct", str(dim), "--out", str(out), "--calibration", str(calibration),
                 "--epochs", "2", "--quiet", "--no-png"]) == 0
    result = load_reconstruction(out)
    assert result.settings["refine"] == ["object"]
    assert result.settings["calibration"].endswith("calibration.h5")


def test_readme_demo_writes_its_figures_and_reports_the_object_error(tmp_path):
    """README's first command, ``adptycho demo``, as a user runs it: the console script, in an
    empty directory, default options."""
    import matplotlib.image

    script = shutil.which("adptycho")
    command = [script] if script else [sys.executable, "-m", "adptycho.cli"]
    proc = subprocess.run(command + ["demo"], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2"),
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    match = re.search(r"^adptycho demo: object NRMSE (\d+\.\d+) \(.*\) after (\d+) epochs "
                      r"\(epie:50,adam\); total \d+ s$", proc.stdout, re.M)
    assert match, proc.stdout[-3000:]
    # blind (the probe found from the data): measured 0.047; the old Adam default from a
    # Gaussian guess gave 0.1005; a failed fit gives ~1
    assert float(match.group(1)) < 0.1
    assert "probe from the data" in proc.stdout and "adam stopped after" in proc.stdout
    out = tmp_path / "adptycho-demo"
    assert sorted(os.listdir(out)) == ["demo_reconstruction.h5", "demo_reconstruction.png",
                                       "demo_scan.cxi", "demo_truth_vs_reconstruction.png"]
    for name in ("demo_reconstruction.png", "demo_truth_vs_reconstruction.png"):
        image = matplotlib.image.imread(out / name)  # a readable PNG ...
        assert image.ndim == 3 and min(image.shape[:2]) >= 300, image.shape
        assert np.std(image[..., :3]) > 0.05  # ... with something drawn on it
    assert f"wrote {os.path.join('adptycho-demo', 'demo_reconstruction.png')}" in proc.stdout
    assert load_cxi(out / "demo_scan.cxi").detector_shape == (64, 64)
    history = load_reconstruction(out / "demo_reconstruction.h5").loss_history
    assert len(history) == int(match.group(2)) > 50  # 50 ePIE epochs, then adam to a plateau

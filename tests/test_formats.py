"""Interoperability (``adptycho.io.formats``, ``adptycho convert``, ``reconstruct --init``): a known
object, probe and positions survive a round trip through every writable format, and land where
they should when read from files built by hand in the other programs' own conventions
(PtychoShelves MATLAB axes, v7.3 HDF5 transposition, ptypy storages); bad files are refused."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.io

from adptycho.cli import main
from adptycho.io.formats import detect_format, read_file, read_reconstruction, write_reconstruction
from adptycho.io.results import ReconstructionResult

PIXEL = (2e-8, 3e-8)  # (dy, dx): unequal, so a swap of axes shows


def _known(num=7, modes=2):
    rng = np.random.default_rng(3)
    obj = (rng.random((48, 40)) + 1j * rng.random((48, 40))).astype(np.complex64)  # not square
    probe = (rng.random((modes, 16, 12)) + 1j * rng.random((modes, 16, 12))).astype(np.complex64)
    corners = np.stack([rng.uniform(0, 30, num), rng.uniform(0, 26, num)], axis=1)
    return ReconstructionResult(object=obj, probe=probe, positions_px=corners,
                                nominal_positions_px=corners, loss_history=np.array([3.0, 2.0]),
                                residual_history=np.array([]), pixel_size_m=PIXEL)


def _same(result, known, loss=True):
    np.testing.assert_array_equal(result.object, known.object)
    np.testing.assert_array_equal(result.probe, known.probe)
    np.testing.assert_allclose(result.positions_px, known.positions_px, atol=1e-9)
    np.testing.assert_allclose(result.pixel_size_m, known.pixel_size_m, rtol=1e-12)
    if loss:
        np.testing.assert_allclose(result.loss_history, known.loss_history)


@pytest.mark.parametrize("fmt, name", [("adptycho", "rec.h5"), ("cxi", "rec.cxi"),
                                       ("nexus", "rec.nxs"), ("ptychodus", "product.h5"),
                                       ("ptychodus", "product.npz")])
def test_round_trip_keeps_object_probe_positions_and_pixel_size(tmp_path, fmt, name):
    known = _known()
    path = tmp_path / name
    write_reconstruction(path, known, fmt)
    assert detect_format(path) == ("reconstruction", fmt)
    _same(read_reconstruction(path), known)


def test_ptychodus_positions_are_probe_centres_from_the_object_centre(tmp_path):
    known = _known()
    write_reconstruction(tmp_path / "p.h5", known, "ptychodus")
    with h5py.File(tmp_path / "p.h5", "r") as f:
        x_m, y_m = f["probe_position_x_m"][()], f["probe_position_y_m"][()]
        centre_x, centre_y = f["object"].attrs["center_x_m"], f["object"].attrs["center_y_m"]
        assert f["object"].attrs["pixel_width_m"] == PIXEL[1]
    # corner + half the probe, measured from the object's centre, in metres
    expected_x = (known.positions_px[:, 1] + 6 - 20) * PIXEL[1]
    expected_y = (known.positions_px[:, 0] + 8 - 24) * PIXEL[0]
    np.testing.assert_allclose(x_m - centre_x, expected_x, atol=1e-18)
    np.testing.assert_allclose(y_m - centre_y, expected_y, atol=1e-18)


def _shelves_positions(known):
    """outputs.probe_positions: probe centre from the object centre, columns (x, y), pixels."""
    rows, cols = known.object.shape
    height, width = known.probe.shape[1:]
    y = known.positions_px[:, 0] + height / 2 - rows / 2
    x = known.positions_px[:, 1] + width / 2 - cols / 2
    return np.stack([x, y], axis=1)


def test_ptychoshelves_mat_v5_lands_where_it_should(tmp_path):
    known = _known()
    path = tmp_path / "Niter100.mat"
    scipy.io.savemat(path, {"object": known.object,  # MATLAB (Y, X)
                            "probe": np.moveaxis(known.probe, 0, -1),  # MATLAB (H, W, modes)
                            "p": {"dx_spec": np.array(PIXEL), "lambda": 1e-10},
                            "outputs": {"probe_positions": _shelves_positions(known)}})
    assert detect_format(path) == ("reconstruction", "ptychoshelves")
    _same(read_reconstruction(path), known, loss=False)


def test_ptychoshelves_mat_v73_hdf5_is_transposed_back(tmp_path):
    known = _known()
    path = tmp_path / "Niter100_v73.mat"
    complex_type = np.dtype([("real", "<f4"), ("imag", "<f4")])

    def matlab(values):  # what MATLAB writes for a complex array: column-major, compound
        values = np.asarray(values).T
        out = np.empty(values.shape, complex_type)
        out["real"], out["imag"] = values.real, values.imag
        return out

    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset("object", data=matlab(known.object))
        f.create_dataset("probe", data=matlab(np.moveaxis(known.probe, 0, -1)))
        f.create_group("p").create_dataset("dx_spec", data=np.array([PIXEL]).T)
        f.create_group("outputs").create_dataset("probe_positions",
                                                 data=_shelves_positions(known).T)
    with open(path, "r+b") as handle:
        handle.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .")
    _same(read_reconstruction(path), known, loss=False)


def test_ptypy_ptyr_views_land_where_they_should(tmp_path):
    known = _known()
    origin = np.array([-1.5e-7, 4e-8])  # (y, x) metres of pixel (0, 0)
    centres = (known.positions_px + np.array([8, 6])) * np.array(PIXEL) + origin
    path = tmp_path / "recon.ptyr"
    with h5py.File(path, "w") as f:
        obj = f.create_group("content/obj/S00G00")
        obj.create_dataset("data", data=known.object[None])
        obj.create_dataset("_psize", data=np.array(PIXEL))
        obj.create_dataset("_origin", data=origin)
        f.create_group("content/probe/S00G00").create_dataset("data", data=known.probe)
        f.create_group("content/positions").create_dataset("S00", data=centres)
    assert detect_format(path) == ("reconstruction", "ptypy")
    _same(read_reconstruction(path), known, loss=False)


def _scan(tmp_path):
    path = tmp_path / "scan.cxi"
    assert main(["simulate", "--out", str(path), "--object-size", "64", "--probe-size", "32",
                 "--probe-diameter", "16", "--overlap", "0.5", "--truth-out",
                 str(tmp_path / "truth.h5")]) == 0
    return path


def test_convert_scans_between_cxi_and_nexus_and_reconstructions_to_every_writer(tmp_path, capsys):
    scan_path = _scan(tmp_path)
    nexus = tmp_path / "scan.nxs"
    assert main(["convert", str(scan_path), "--to", "nexus", "--out", str(nexus)]) == 0
    with h5py.File(nexus, "r") as f:
        assert f["entry_1/definition"][()].decode() == "NXcxi_ptycho"
        assert f["entry_1/instrument_1/detector_1"].attrs["NX_class"] == "NXdetector"
        assert f["entry_1/instrument_1/detector_1/distance"].attrs["units"] == "m"
    _, original = read_file(scan_path)
    kind, back = read_file(nexus)
    assert kind == "scan"
    np.testing.assert_array_equal(back.patterns, original.patterns)
    np.testing.assert_allclose(back.positions_px, original.positions_px, rtol=1e-12)
    known_path = tmp_path / "known.h5"
    write_reconstruction(known_path, _known(), "adptycho")
    for target, name in (("cxi", "r.cxi"), ("nexus", "r.nxs"), ("ptychodus", "r.npz"),
                         ("adptycho", "r2.h5")):
        assert main(["convert", str(known_path), "--to", target, "--out",
                     str(tmp_path / name)]) == 0
        _same(read_reconstruction(tmp_path / name), _known())


def _refused(capsys, argv, out):
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("adptycho: error:"), err
    assert not out.exists()


def test_convert_refuses_unknown_and_malformed_files_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out.h5"
    text = tmp_path / "notes.txt"
    text.write_text("not a scan\n")
    _refused(capsys, ["convert", str(text), "--to", "cxi", "--out", str(out)], out)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["something"] = np.arange(3)
    _refused(capsys, ["convert", str(other), "--to", "cxi", "--out", str(out)], out)
    broken = tmp_path / "broken.h5"  # a Ptychodus product without the object's geometry
    with h5py.File(broken, "w") as f:
        f["object"] = np.ones((4, 4), np.complex64)
        f["probe"] = np.ones((1, 2, 2), np.complex64)
        f["probe_position_x_m"] = np.zeros(2)
        f["probe_position_y_m"] = np.zeros(2)
    _refused(capsys, ["convert", str(broken), "--to", "cxi", "--out", str(out)], out)
    truncated = tmp_path / "cut.npz"
    truncated.write_bytes(b"PK\x03\x04 truncated")
    _refused(capsys, ["convert", str(truncated), "--to", "cxi", "--out", str(out)], out)
    bad_mat = tmp_path / "bad.mat"
    scipy.io.savemat(bad_mat, {"object": np.ones((4, 4))})
    _refused(capsys, ["convert", str(bad_mat), "--to", "cxi", "--out", str(out)], out)
    scan_path = _scan(tmp_path)
    _refused(capsys, ["convert", str(scan_path), "--to", "ptychodus", "--out", str(out)], out)
    before = scan_path.read_bytes()
    assert main(["convert", str(scan_path), "--to", "cxi", "--out", str(scan_path)]) == 2
    assert scan_path.read_bytes() == before  # the input is never overwritten


def test_reconstruct_init_from_a_ptychodus_product_starts_at_the_truth(tmp_path):
    """The truth written as a Ptychodus NPZ seeds ``reconstruct --init``: the first epoch's
    residual is far below that of the default start (it would not be if the object, probe or
    positions were misplaced)."""
    scan_path = _scan(tmp_path)
    _, scan = read_file(scan_path)
    with h5py.File(tmp_path / "truth.h5", "r") as f:
        obj, probe = f["object"][()], f["probe"][()]
    truth = ReconstructionResult(object=obj, probe=probe, positions_px=scan.positions_px,
                                 nominal_positions_px=scan.positions_px,
                                 loss_history=np.array([]), residual_history=np.array([]),
                                 pixel_size_m=scan.pixel_size_m)
    write_reconstruction(tmp_path / "truth.npz", truth, "ptychodus")
    common = ["reconstruct", str(scan_path), "--engine", "adam", "--epochs", "1",
              "--no-checkpoint", "--quiet", "--no-png"]
    assert main(common + ["--out", str(tmp_path / "init.h5"), "--init",
                          str(tmp_path / "truth.npz")]) == 0
    assert main(common + ["--out", str(tmp_path / "cold.h5")]) == 0
    warm = read_reconstruction(tmp_path / "init.h5")
    cold = read_reconstruction(tmp_path / "cold.h5")
    assert warm.object.shape == obj.shape
    assert warm.residual_history[0] < 0.2 * cold.residual_history[0], (
        warm.residual_history[0], cold.residual_history[0])


def test_reconstruct_init_refuses_what_it_cannot_seed(tmp_path, capsys):
    scan_path = _scan(tmp_path)
    known = tmp_path / "known.h5"
    write_reconstruction(known, _known(), "adptycho")
    out = tmp_path / "rec.h5"
    for extra in (["--object", "irmae-mnist"], []):
        # a latent object cannot start from pixels; the known result has 7 positions, the scan more
        _refused(capsys, ["reconstruct", str(scan_path), "--out", str(out), "--init", str(known),
                          "--no-checkpoint"] + extra, out)

"""``TensorBoardLogger`` and ``--tensorboard``: the event files, read back with TensorBoard's own
event reader, hold the scalars, images and settings of the fit."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from adptycho.cli import main  # noqa: E402
from adptycho.geometry import circular_aperture, normalize_probe_power, raster_scan  # noqa: E402
from adptycho.model import NearFieldGeometry  # noqa: E402
from adptycho.reconstruction import reconstruct  # noqa: E402
from adptycho.simulate import simulate  # noqa: E402
from adptycho.training.tensorboard import TensorBoardLogger  # noqa: E402


def _events(log_dir):
    accumulator = EventAccumulator(os.fspath(log_dir), size_guidance={"tensors": 0})
    accumulator.Reload()
    by_plugin = {}
    for tag in accumulator.Tags()["tensors"]:
        plugin = accumulator.SummaryMetadata(tag).plugin_data.plugin_name
        by_plugin.setdefault(plugin, {})[tag] = accumulator.Tensors(tag)
    return by_plugin


def _values(events):
    import tensorflow as tf

    return [(e.step, tf.make_ndarray(e.tensor_proto)) for e in events]


def test_logger_writes_scalars_images_and_settings_of_a_near_field_fit(tmp_path):
    rng = np.random.default_rng(0)
    obj = (0.7 + 0.3 * rng.random((64, 64))) * np.exp(1j * rng.random((64, 64)))
    probe = normalize_probe_power(circular_aperture((32, 32), 16, 2.0), 1e4)
    near = NearFieldGeometry(wavelength_m=1e-10, pixel_size_m=(180e-9, 180e-9),
                             distance_m=3.6e-3)
    scan = simulate(obj, probe, raster_scan((4, 4), 8.0, start_px=(4, 4), jitter_px=0.5, seed=0),
                    near_field=near)
    logger = TensorBoardLogger(tmp_path / "tb", image_every=2, settings={"note": "near field"})
    result = reconstruct(scan, probe=probe, refine=("object", "probe", "positions", "distance"),
                         engine="adam", epochs=5, batch_size=4, verbose=0,
                         validation_fraction=0.25, callbacks=[logger])
    events = _events(tmp_path / "tb")
    scalars = {tag: _values(v) for tag, v in events["scalars"].items()}
    for tag in ("loss", "residual", "val_loss", "val_residual", "distance_m",
                "position_change_px", "learning_rate/object", "learning_rate/probe",
                "learning_rate/positions", "learning_rate/distance"):
        assert tag in scalars, (tag, sorted(scalars))
    assert [step for step, _ in scalars["loss"]] == [0, 1, 2, 3, 4]
    np.testing.assert_allclose([float(v) for _, v in scalars["loss"]], result.loss_history,
                               rtol=1e-5)
    # the last logged distance is the fit's result; the step decays by 0.97 per epoch
    assert float(scalars["distance_m"][-1][1]) == pytest.approx(result.distance_m, rel=1e-6)
    rates = [float(v) for _, v in scalars["learning_rate/object"]]
    assert rates[1] == pytest.approx(rates[0] * 0.97, rel=1e-4)
    assert all(float(v) >= 0 for _, v in scalars["position_change_px"])
    images = events["images"]
    assert {"object/amplitude", "object/phase", "probe/mode_0"} <= set(images)
    # every 2 epochs (0, 2, 4) and the last one (4, not twice)
    assert [e.step for e in images["object/phase"]] == [0, 2, 4]
    import tensorflow as tf

    png = tf.make_ndarray(images["object/amplitude"][-1].tensor_proto)
    width, height = int(png[0]), int(png[1])  # an image summary: width, height, PNG bytes
    assert (height, width) == result.object.shape
    decoded = tf.io.decode_png(png[2]).numpy()
    assert decoded.shape == result.object.shape + (1,) and decoded.max() == 255
    text = _values(events["text"]["settings"])[0][1]
    assert "near field" in text.item().decode()


def test_cli_tensorboard_continues_the_steps_across_epie_and_adam(tmp_path, capsys):
    scan, out, log_dir = tmp_path / "scan.cxi", tmp_path / "rec.h5", tmp_path / "tb"
    assert main(["simulate", "--out", str(scan), "--object-size", "64", "--probe-size", "32",
                 "--probe-diameter", "16", "--overlap", "0.5"]) == 0
    assert main(["reconstruct", str(scan), "--out", str(out), "--engine", "epie:2,adam",
                 "--epochs", "2", "--batch-size", "8", "--tensorboard", str(log_dir),
                 "--no-checkpoint", "--quiet"]) == 0
    events = _events(log_dir)
    assert [e.step for e in events["scalars"]["loss"]] == [0, 1, 2, 3]
    # Adam's learning rates are logged for the Adam epochs only, not the ePIE ones
    assert [e.step for e in events["scalars"]["learning_rate/object"]] == [2, 3]
    settings = _values(events["text"]["settings"])[0][1].item().decode()
    assert "epie:2,adam" in settings
    assert "probe/mode_0" in events["images"]
    # the lbfgs optimizer (and PtychoGAN) have no epochs to log: refused, one line, nothing written
    capsys.readouterr()
    for extra in (["--optimizer", "lbfgs"], ["--object", "stylegan2-faces", "--ptychogan"]):
        other_dir, other_out = tmp_path / "tb2", tmp_path / "rec2.h5"
        code = main(["reconstruct", str(scan), "--out", str(other_out), "--tensorboard",
                     str(other_dir)] + extra)
        assert code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("adptycho: error: --tensorboard"), err
        assert not other_dir.exists() and not other_out.exists()

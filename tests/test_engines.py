"""The engine registry and interface: every engine behind ``Engine.fit -> History``, one table
that ``reconstruct`` reads, a new engine = one class + one registry line, no private state."""

import pathlib

import numpy as np
import pytest
import tensorflow as tf

from adptycho.engines import ENGINES, Engine, History, available_engines, get_engine
from adptycho.errors import AdptychoError
from adptycho.geometry import gaussian_probe, raster_scan
from adptycho.io.scan_data import ScanData
from adptycho.model import PtychoModel
from adptycho.objects import PixelObject
from adptycho.samples import complex_test_object
from adptycho.training.epie import PIETrainer, pie_settings

ROOT = pathlib.Path(__file__).resolve().parents[1] / "adptycho"


def _problem():
    """A 4 x 4 raster of 16 x 16 windows on a 40 x 40 object, noise-free far-field patterns."""
    obj = complex_test_object((40, 40))
    probe = gaussian_probe((16, 16), fwhm_px=8.0) * 30.0
    positions = raster_scan((4, 4), 8.0)
    model = PtychoModel(PixelObject(obj.shape, initial=obj), probe, positions)
    patterns = model(tf.range(len(positions))).numpy()
    return probe, positions, patterns, obj.shape


def test_registry_lists_every_engine_and_refuses_unknown_names():
    assert set(available_engines()) >= {"adam", "epie", "rpie", "mpie", "lbfgs", "ptychogan"}
    assert all(issubclass(cls, Engine) for cls in ENGINES.values())
    assert get_engine("rpie") is ENGINES["rpie"]
    with pytest.raises(AdptychoError, match="unknown engine 'foo'"):
        get_engine("foo")


def test_pie_engine_is_the_pie_trainer_behind_the_interface():
    probe, positions, patterns, shape = _problem()
    twins = [PtychoModel(PixelObject(shape), probe, positions) for _ in range(2)]
    history = get_engine("rpie")(refine=("object", "probe"), seed=3).fit(
        twins[0], patterns, 3, first_epoch=2)
    reference = PIETrainer(twins[1], pie_settings("rpie")).fit(patterns, 3, seed=3)
    assert isinstance(history, History) and history.epoch == [2, 3, 4]
    np.testing.assert_allclose(history.history["loss"], reference["loss"], rtol=1e-6)
    np.testing.assert_allclose(twins[0].get_object(), twins[1].get_object(), atol=1e-6)
    np.testing.assert_allclose(twins[0].get_probe(), twins[1].get_probe(), atol=1e-5)
    with pytest.raises(AdptychoError, match="distance"):
        get_engine("epie")(refine=("object", "distance"))


def test_a_new_engine_is_one_class_and_one_registry_line(monkeypatch):
    """An engine registered in ``ENGINES`` runs as a stage of ``reconstruct``'s schedule, on the
    same model, through public model methods only, with one merged history."""
    calls = []

    class Halve(Engine):
        name = "halve"

        def fit(self, model, data, epochs, *, callbacks=None, sample_weight=None, verbose=0,
                first_epoch=0):
            calls.append((epochs, first_epoch, data.num_patterns))
            history = History()
            for epoch in range(epochs):
                model.assign_object(model.object_tensor() * 0.5)
                history.on_epoch_end(first_epoch + epoch, {"loss": 1.0, "residual": 1.0})
            return history

    monkeypatch.setitem(ENGINES, "halve", Halve)
    from adptycho.reconstruction import reconstruct

    probe, positions, patterns, shape = _problem()
    scan = ScanData(patterns, positions)
    result = reconstruct(scan, engine="halve:2,adam:1", probe=probe, object_shape=shape,
                         padding_px=0, refine=("object",), verbose=0,
                         learning_rates={"object": 1e-9})
    assert calls == [(2, 0, 16)]
    assert list(result.extra_histories["stage_history"]) == [0, 0, 1]
    assert result.settings["engine"] == "halve:2,adam:1"
    # two halvings of the all-ones start, then an Adam epoch that barely moves
    np.testing.assert_allclose(np.abs(result.object), 0.25, atol=1e-3)


def test_engines_and_training_touch_no_private_object_state():
    for folder in ("engines", "training"):
        for path in (ROOT / folder).glob("*.py"):
            assert "_parts[" not in path.read_text(), path


def test_lbfgs_is_a_schedule_stage_like_any_engine():
    from adptycho.reconstruction import reconstruct

    probe, positions, patterns, shape = _problem()
    scan = ScanData(patterns, positions)
    result = reconstruct(scan, engine="epie:2,lbfgs:3", probe=probe, object_shape=shape,
                         padding_px=0, refine=("object",), verbose=0)
    assert list(result.extra_histories["stage_history"]) == [0, 0, 1, 1, 1]
    assert result.loss_history[-1] < result.loss_history[2]
    with pytest.raises(AdptychoError, match="object only"):
        reconstruct(scan, engine="lbfgs:3", probe=probe, object_shape=shape, padding_px=0,
                    refine=("object", "probe"), verbose=0)


def test_engines_without_per_pattern_weights_refuse_them_in_one_line():
    with pytest.raises(TypeError):
        Engine()  # fit is abstract: an engine that forgets it cannot be made
    for name in ("adam", "lbfgs"):
        with pytest.raises(AdptychoError, match=f"the {name} engine takes no per-pattern"):
            get_engine(name)().fit(None, None, 1, sample_weight=np.ones(4))

"""Config-first calibration and oversampling (``adptycho.workflow_config``): validation, keyword
calls and configs are the same call, the config saved verbatim in the settings."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from adptycho.errors import AdptychoError
from adptycho.workflow_config import CalibrationConfig, OversamplingConfig


@pytest.mark.parametrize("cls, field, value, message", [
    (CalibrationConfig, "epochs", 0, "epochs must be at least 1"),
    (CalibrationConfig, "position_model", "spline", "unknown position_model"),
    (CalibrationConfig, "loss", "l2", "unknown loss"),
    (CalibrationConfig, "probe_power", "max", "probe_power must be a number or 'auto'"),
    (CalibrationConfig, "probe_power", -1.0, "probe_power must be a number or 'auto'"),
    (CalibrationConfig, "distance_search_factors", (0.5, -1.0), "must be positive"),
    (CalibrationConfig, "learning_rates", {"scale": 1.0}, "unknown parameter group"),
    (CalibrationConfig, "refine_positions", "yes", "refine_positions must be True or False"),
    (OversamplingConfig, "repeats", 0, "repeats must be at least 1"),
    (OversamplingConfig, "weight", 0.0, "weight must be a positive number"),
    (OversamplingConfig, "engine", "adam", "unknown engine 'adam' for oversampling"),
    (OversamplingConfig, "fourier_relaxation", -2.0, "fourier_relaxation must be a non-negative"),
    (OversamplingConfig, "object_origin_px", (1.0,), "object_origin_px must be 2 finite numbers"),
    (OversamplingConfig, "weight_schedule", "20,10", "weight_schedule must be a sequence"),
])
def test_bad_values_are_one_line_errors_naming_the_option(cls, field, value, message):
    with pytest.raises(AdptychoError, match=message) as error:
        cls(**{field: value})
    assert "\n" not in str(error.value)


def test_configs_round_trip_and_refuse_unknown_options():
    config = CalibrationConfig(epochs=5, probe_power="auto", distance_search_factors=[0.9, 1.1],
                               learning_rates={"positions": 0.1})
    assert config.distance_search_factors == (0.9, 1.1)
    assert CalibrationConfig.from_dict(config.to_dict()) == config
    over = OversamplingConfig(weight_schedule=[20, 10], repeats=2, step_px=np.float64(16))
    assert over.weight_schedule == (20.0, 10.0) and over.step_px == 16.0
    assert OversamplingConfig.from_dict(over.to_dict()) == over
    assert OversamplingConfig.build(over, seed=3) == OversamplingConfig(
        weight_schedule=(20.0, 10.0), repeats=2, step_px=16.0, seed=3)
    with pytest.raises(TypeError, match="oversample\\(\\) got an unexpected keyword argument"):
        OversamplingConfig.build(None, weigth=3.0)
    with pytest.raises(TypeError, match="config must be a CalibrationConfig"):
        CalibrationConfig.build(over)
    with pytest.raises(AdptychoError, match="unknown calibrate options"):
        CalibrationConfig.from_dict({"epochs": 3, "speed": 1})


def test_workflow_signatures_list_the_config_fields():
    from adptycho.calibration import calibrate
    from adptycho.training.oversampling import oversample

    for function, cls in ((calibrate, CalibrationConfig), (oversample, OversamplingConfig)):
        parameters = inspect.signature(function).parameters
        for name in cls.field_names():
            assert parameters[name].kind == inspect.Parameter.KEYWORD_ONLY
            assert parameters[name].default == cls.__dataclass_fields__[name].default


def _tiny_scan():
    from adptycho.geometry import circular_aperture, normalize_probe_power, raster_scan
    from adptycho.samples import complex_test_object
    from adptycho.simulate import simulate

    obj = complex_test_object((48, 48))
    probe = normalize_probe_power(circular_aperture((16, 16), 10, 1.0), 1e5)
    return simulate(obj, probe, raster_scan((4, 4), 8.0) + 4.0), obj, probe


def test_oversample_with_a_config_is_the_keyword_call_and_saves_it():
    from adptycho.training.oversampling import oversample

    scan, obj, probe = _tiny_scan()
    guess = np.ones_like(obj)
    config = OversamplingConfig(factor=2, epochs=2, repeats=2, weight_schedule=(20.0, 5.0))
    by_config = oversample(scan, guess, probe, config)
    by_keywords = oversample(scan, guess, probe, factor=2, epochs=2, repeats=2,
                             weight_schedule=[20.0, 5.0])
    np.testing.assert_array_equal(by_config.object, by_keywords.object)
    assert by_config.settings["config"] == config.to_dict()
    assert OversamplingConfig.from_dict(by_config.settings["config"]) == config
    assert by_config.settings["weights"] == [20.0, 5.0]
    # a schedule given as a function is a run-time argument, not a field
    by_function = oversample(scan, guess, probe, config, weight_schedule=lambda r: [20.0, 5.0][r])
    np.testing.assert_array_equal(by_function.object, by_config.object)
    assert by_function.settings["config"]["weight_schedule"] == [20.0, 5.0]


def test_calibrate_saves_its_config_and_the_fit_config():
    from adptycho.calibration import calibrate
    from adptycho.config import ReconstructConfig

    scan, _, probe = _tiny_scan()
    calibration = calibrate(scan, CalibrationConfig(epochs=2, batch_size=8), probe=probe,
                            refine_positions=False)
    config = CalibrationConfig.from_dict(calibration.settings["config"])
    assert config == CalibrationConfig(epochs=2, batch_size=8, refine_positions=False)
    fit = ReconstructConfig.from_dict(calibration.settings["reconstruct_config"])
    assert fit.epochs == 2 and fit.refine == ("object", "probe")
    assert len(calibration.loss_history) == 2

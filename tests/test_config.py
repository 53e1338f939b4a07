"""``ReconstructConfig``: defaults, validation, keyword/config equivalence of ``reconstruct`` and
the config saved verbatim in the result's settings."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from adptycho.config import ReconstructConfig
from adptycho.errors import AdptychoError
from adptycho.geometry import circular_aperture, normalize_probe_power, raster_scan
from adptycho.io import load_reconstruction, save_reconstruction
from adptycho.reconstruction import reconstruct
from adptycho.simulate import simulate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _scan(grid=4, probe_size=16):
    size = 24 + 6 * grid
    rng = np.random.default_rng(1)
    obj = (0.7 + 0.3 * rng.random((size, size))) * np.exp(1j * rng.random((size, size)))
    probe = normalize_probe_power(circular_aperture((probe_size, probe_size), 8, 2.0), 1e4)
    positions = raster_scan((grid, grid), 6.0, start_px=(3, 3), jitter_px=0.5, seed=1)
    return simulate(obj, probe, positions), probe.astype(np.complex64)


def test_defaults_are_those_of_the_keyword_api():
    assert ReconstructConfig().to_dict() == {
        "engine": "auto", "epochs": None, "batch_size": None, "refine": ["object", "probe"],
        "loss": "amplitude", "readout_noise": 1.0, "learning_rates": None,
        "start_epochs": None, "decay_rate": None, "object": "pixels",
        "parametrisation": "complex", "tv_weight": 0.0, "probe_modes": 1, "object_shape": None,
        "padding_px": 8,
        "seed": 0, "verbose": 1, "checkpoint_dir": None, "jit_compile": "auto",
        "subpixel": "auto", "position_model": "offsets", "optimizer": "adam",
        "probe_power": None, "latent_options": None, "pie_options": None,
        "validation_fraction": 0.0, "early_stopping_patience": None, "strategy": None}


def test_vocabularies_match_the_modules_that_use_them():
    from adptycho import config
    from adptycho.losses import LOSSES
    from adptycho.model import PARAMETER_GROUPS
    from adptycho.objects.pixels import PIXEL_PARAMETRISATIONS
    from adptycho.training.distribute import STRATEGIES

    assert config.LOSS_NAMES == tuple(LOSSES)
    assert config.PARAMETER_GROUPS == tuple(PARAMETER_GROUPS)
    assert config.PARAMETRISATIONS == tuple(PIXEL_PARAMETRISATIONS)
    assert set(config.STRATEGY_NAMES) - {None} == set(STRATEGIES)


@pytest.mark.parametrize("field, value, words", [
    ("epochs", 0, "epochs must be at least 1, got 0"),
    ("epochs", 2.5, "epochs must be an integer"),
    ("batch_size", -1, "batch_size must be at least 1"),
    ("refine", ("object", "focus"), "unknown parameter group 'focus'"),
    ("refine", "object,probe", "refine must be a sequence"),
    ("refine", ("object", "object"), "names a group twice"),
    ("loss", "gauss", "unknown loss 'gauss'"),
    ("readout_noise", -1.0, "readout_noise must be a number >= 0"),
    ("learning_rates", {"probe": 0.0}, "learning_rates['probe'] must be a positive number"),
    ("learning_rates", {"focus": 0.1}, "unknown parameter group 'focus'"),
    ("start_epochs", {"positions": -2}, "start_epochs['positions'] must be an integer >= 0"),
    ("decay_rate", 0.0, "decay_rate must be a positive number"),
    ("engine", "", "engine must be 'auto'"),
    ("object", "no-such-model", "unknown object representation 'no-such-model'"),
    ("parametrisation", "polar", "unknown parametrisation 'polar'"),
    ("probe_modes", 0, "probe_modes must be at least 1"),
    ("object_shape", (10,), "object_shape must be two positive integers"),
    ("padding_px", -1, "padding_px must be an integer >= 0"),
    ("position_model", "spline", "unknown position_model 'spline'"),
    ("optimizer", "sgd", "unknown optimizer 'sgd'"),
    ("probe_power", 0.0, "probe_power must be a positive number"),
    ("latent_options", {"mode": "phase"}, "latent_options apply to latent objects"),
    ("pie_options", [("momentum", 0.5)], "pie_options must be a dict"),
    ("validation_fraction", 1.0, "validation_fraction must be in [0, 1), got 1.0"),
    ("early_stopping_patience", 0, "early_stopping_patience must be at least 1"),
    ("strategy", "tpu", "unknown strategy 'tpu'"),
    ("verbose", 5, "unknown verbose 5"),
    ("jit_compile", "yes", "unknown jit_compile 'yes'"),
    ("seed", 1.5, "seed must be an integer"),
])
def test_a_bad_value_is_one_line_naming_the_option(field, value, words):
    with pytest.raises(AdptychoError) as info:
        ReconstructConfig(**{field: value})
    message = str(info.value)
    assert words in message and "\n" not in message, message


def test_lbfgs_refines_the_object_only():
    with pytest.raises(AdptychoError, match="lbfgs optimizer refines the object only"):
        ReconstructConfig(optimizer="lbfgs")
    assert ReconstructConfig(optimizer="lbfgs", refine=["object"]).refine == ("object",)


def test_values_are_normalised_and_the_config_is_frozen():
    config = ReconstructConfig(refine=["object"], object_shape=[40, 41], readout_noise=2,
                               checkpoint_dir=os.path.join("a", "b"))
    assert config.refine == ("object",) and config.object_shape == (40, 41)
    assert config.readout_noise == 2.0 and isinstance(config.readout_noise, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3


def test_build_overrides_fields_and_refuses_unknown_names():
    base = ReconstructConfig(epochs=5, loss="poisson")
    assert ReconstructConfig.build(base) is base
    changed = ReconstructConfig.build(base, seed=3)
    assert (changed.epochs, changed.loss, changed.seed) == (5, "poisson", 3)
    assert ReconstructConfig.build(None, epochs=4) == ReconstructConfig(epochs=4)
    with pytest.raises(TypeError, match="unexpected keyword argument 'epoch'"):
        ReconstructConfig.build(base, epoch=3)
    with pytest.raises(TypeError, match="ReconstructConfig"):
        ReconstructConfig.build({"epochs": 3})
    with pytest.raises(AdptychoError, match="epochs must be at least 1"):
        ReconstructConfig.build(base, epochs=0)  # an override is validated too


def test_dict_round_trip_through_json():
    config = ReconstructConfig(engine="epie:3,adam:4", refine=("object", "positions"),
                               learning_rates={"positions": 0.1}, start_epochs={"positions": 2},
                               object_shape=(50, 60), pie_options={"momentum": 0.5},
                               checkpoint_dir="ck", seed=7)
    again = ReconstructConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    with pytest.raises(AdptychoError, match="unknown reconstruct options"):
        ReconstructConfig.from_dict({**config.to_dict(), "turbo": True})


def test_importing_the_config_imports_no_tensorflow():
    code = ("import sys, adptycho.config as c; c.ReconstructConfig(epochs=3); "
            "assert 'tensorflow' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_reconstruct_refuses_unknown_keywords_and_bad_values_before_fitting():
    scan, probe = _scan()
    with pytest.raises(TypeError, match="unexpected keyword argument 'epoch'"):
        reconstruct(scan, epoch=3)
    with pytest.raises(AdptychoError, match="unknown loss"):
        reconstruct(scan, ReconstructConfig(engine="adam"), loss="gauss")
    with pytest.raises(AdptychoError, match="pie_options apply to the PIE engines"):
        reconstruct(scan, engine="adam", probe=probe, pie_options={"momentum": 0.5}, verbose=0)


def test_keywords_and_config_give_the_same_fit_and_the_config_is_saved(tmp_path):
    scan, probe = _scan()
    options = dict(engine="adam", epochs=2, batch_size=5, refine=("object", "probe"),
                   decay_rate=1.0, seed=4, verbose=0, jit_compile=False)
    by_keywords = reconstruct(scan, probe=probe, **options)
    config = ReconstructConfig(**options)
    by_config = reconstruct(scan, config, probe=probe)
    overridden = reconstruct(scan, dataclasses.replace(config, seed=9, epochs=1), probe=probe,
                             seed=4, epochs=2)
    for other in (by_config, overridden):
        np.testing.assert_array_equal(other.object, by_keywords.object)
        np.testing.assert_array_equal(other.loss_history, by_keywords.loss_history)
        assert other.settings == by_keywords.settings
    # saved verbatim next to the resolved values the tests and tools read
    path = tmp_path / "rec.h5"
    save_reconstruction(path, by_config)
    settings = load_reconstruction(path).settings
    assert ReconstructConfig.from_dict(settings["config"]) == config
    assert settings["engine"] == "adam" and settings["epochs"] == 2
    assert settings["refine"] == ["object", "probe"] and settings["batch_size"] == 5


def test_a_readout_noise_map_is_a_runtime_argument():
    scan, probe = _scan()
    noise = np.full(scan.detector_shape, 1.5, np.float32)
    options = dict(engine="adam", epochs=1, batch_size=8, loss="poisson-gaussian",
                   refine=("object",), verbose=0, jit_compile=False)
    mapped = reconstruct(scan, probe=probe, readout_noise=noise, **options)
    uniform = reconstruct(scan, probe=probe, readout_noise=1.5, **options)
    assert mapped.settings["readout_noise"] == "per-pixel"
    assert uniform.settings["readout_noise"] == 1.5
    np.testing.assert_allclose(mapped.loss_history, uniform.loss_history, rtol=1e-5)


def test_the_signature_of_reconstruct_lists_every_config_field():
    import inspect

    signature = inspect.signature(reconstruct)
    fields = [f.name for f in dataclasses.fields(ReconstructConfig)]
    assert set(fields) < set(signature.parameters)
    assert signature.parameters["epochs"].default is None
    assert signature.parameters["engine"].default == "auto"
    signature.bind(None, None, epochs=3, probe=None, callbacks=[])
    with pytest.raises(TypeError):
        signature.bind(None, epoch=3)  # as the call itself (test above)

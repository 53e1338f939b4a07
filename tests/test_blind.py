"""Blind reconstruction: the probe found from the data, the default schedule, engine schedules.

The scans here are made by a small numpy simulator written in this file (not
``adptycho.simulate``): a zone-plate-like pupil (annulus in the detector plane) with a defocus
of known sign and size, a complex object from scikit-image pictures, integer raster positions.
"""

import numpy as np
import pytest

from adptycho.analysis.metrics import illuminated_region, nrmse
from adptycho.errors import AdptychoError
from adptycho.io import ScanData

N = 64


def _object(size):
    from skimage import data, transform

    amplitude = transform.resize(data.camera().astype(float), (size, size), anti_aliasing=True)
    phase = transform.resize(data.astronaut().mean(-1), (size, size), anti_aliasing=True)
    amplitude = (amplitude - amplitude.min()) / np.ptp(amplitude)
    phase = (phase - phase.min()) / np.ptp(phase)
    return (0.6 + 0.4 * amplitude) * np.exp(2j * phase)


def _pupil_probe(defocus_waves, x_waves=None):
    """Annular pupil (radii 8 and 20 detector px) with a defocus phase of ``defocus_waves``
    half-waves at its edge (along x ``x_waves`` if given: astigmatism); returns the (N, N)
    sample-plane probe."""
    k = np.arange(N) - N // 2
    ky, kx = np.meshgrid(k, k, indexing="ij")
    r2 = ky ** 2 + kx ** 2
    x_waves = defocus_waves if x_waves is None else x_waves
    phase = np.pi * (defocus_waves * ky ** 2 + x_waves * kx ** 2) / 20 ** 2
    pupil = (r2 < 20 ** 2) * (r2 > 8 ** 2) * np.exp(1j * phase)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(pupil)))


def _scan(defocus_waves, photons=1e6, grid=9, step=8, seed=0, x_waves=None):
    rng = np.random.default_rng(seed)
    size = N + step * (grid - 1) + 1
    obj = _object(size)
    probe = _pupil_probe(defocus_waves, x_waves)
    probe = probe * np.sqrt(photons / np.sum(np.abs(probe) ** 2))
    g = np.arange(grid) * step
    positions = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2).astype(float)
    positions = np.clip(positions + rng.integers(-1, 2, positions.shape), 0, size - N)
    patterns = []
    for r, c in positions.astype(int):
        wave = np.fft.fftshift(np.fft.fft2(probe * obj[r:r + N, c:c + N])) / N
        patterns.append(rng.poisson(np.abs(wave) ** 2))
    scan = ScanData(patterns=np.asarray(patterns, np.float32), positions_px=positions)
    return scan, obj, probe


def _geometric_diameter(defocus_waves, pupil_radius):
    # a = pi * waves / R^2 per detector px^2; diameter = 2 N a K / pi (initial.defocused_pupil_probe)
    a = np.pi * defocus_waves / 20 ** 2
    return 2 * N * a * pupil_radius / np.pi


@pytest.mark.parametrize("waves", [3.0, -3.0])
def test_probe_search_finds_the_side_and_size_of_the_defocus(waves):
    from adptycho.probe_search import search_probe
    from adptycho.reconstruction import build_model

    scan, _, probe = _scan(waves)
    result = search_probe(scan, lambda guess: build_model(scan, probe=guess)[0])
    expected = _geometric_diameter(waves, result.pupil_radius_px)
    assert np.sign(result.defocus_diameter_px) == np.sign(waves)
    assert abs(result.defocus_diameter_px - expected) <= 0.25 * abs(expected)
    # the chosen candidate beats the in-focus (zero-phase) guess and the opposite sign clearly
    plain = result.candidates[(result.candidates[:, 1] == 0) & (result.candidates[:, 2] == 0)]
    table = {round(d, 3): r for d, r in plain[:, [0, 3]]}
    best = table[round(result.defocus_diameter_px, 3)]
    assert best < 0.8 * table[0.0]
    assert best < 0.8 * table[round(-result.defocus_diameter_px, 3)]
    assert result.probe.shape == (1, N, N)
    assert "defocus diameter" in result.summary()


def test_probe_search_finds_a_line_focus():
    """Astigmatism: defocused along y, in focus along x (a line focus, far from every pure
    defocus). The search must land on the right axis and side, and beat every pure defocus."""
    from adptycho.probe_search import search_probe
    from adptycho.reconstruction import build_model

    scan, _, probe = _scan(4.0, x_waves=0.0)
    result = search_probe(scan, lambda guess: build_model(scan, probe=guess)[0])
    expected_y = _geometric_diameter(4.0, result.pupil_radius_px)
    a0, a45 = result.astigmatism_px
    diameter_y = result.defocus_diameter_px + a0  # initial.defocused_pupil_probe's axes
    diameter_x = result.defocus_diameter_px - a0
    assert a45 == 0.0
    assert 0.5 * expected_y <= diameter_y <= 1.5 * expected_y, (diameter_y, expected_y)
    assert abs(diameter_x) <= 0.35 * expected_y, (diameter_x, expected_y)
    plain = result.candidates[(result.candidates[:, 1] == 0) & (result.candidates[:, 2] == 0)]
    chosen = result.finalists[np.argmin(result.finalists[:, 4])]
    assert chosen[3] < 0.9 * plain[:, 3].min()


def test_pupil_radius_and_autocorrelation_diameter_read_the_pupil():
    from adptycho.initial import probe_diameter_px, pupil_radius_px

    scan, _, probe = _scan(0.0)
    assert 17 <= pupil_radius_px(scan) <= 23  # the pupil's outer radius is 20 detector px
    assert 2 <= probe_diameter_px(scan) <= N


def test_default_reconstruct_recovers_object_and_probe_blind():
    from adptycho.reconstruction import reconstruct

    scan, obj, probe = _scan(3.0)
    result = reconstruct(scan, verbose=0)
    settings = result.settings
    assert settings["adaptive"] and settings["engine"].startswith("epie:")
    assert "plateau" in settings["stop_reason"] or "cap" in settings["stop_reason"]
    assert settings["probe_search_defocus_diameter_px"] > 0
    stages = result.extra_histories["stage_history"]
    assert set(np.unique(stages)) == {0, 1} and len(stages) == len(result.loss_history)
    size = obj.shape[0]
    mask = illuminated_region(scan.positions_px, probe, obj.shape, 0.3)
    estimate = result.object[:size, :size]
    error = nrmse(obj, estimate, mask=mask, registration=True, ramp=True)
    assert error < 0.08, error
    # the old default (Adam, 50 epochs, probe from the zero-phase mean-pattern guess) fails here
    old = reconstruct(scan, engine="adam", epochs=20, verbose=0)
    old_error = nrmse(obj, old.object[:size, :size], mask=mask, registration=True, ramp=True)
    assert old_error > 2 * error


def test_engine_schedules_parse_and_refuse_bad_stages():
    from adptycho.reconstruction import ENGINES
    from adptycho.training.schedule import Stage, format_schedule, parse_schedule

    assert parse_schedule("epie:20,adam:80", ENGINES) == [Stage("epie", 20), Stage("adam", 80)]
    assert parse_schedule("rpie", ENGINES, 7) == [Stage("rpie", 7)]
    assert parse_schedule("epie:5,adam", ENGINES, None) == [Stage("epie", 5), Stage("adam")]
    assert format_schedule([Stage("epie", 5), Stage("adam")]) == "epie:5,adam"
    for bad in ("epie:0,adam:5", "epie:x", "foo:3", "epie:3,,adam:2", "epie:2.5"):
        with pytest.raises(AdptychoError):
            parse_schedule(bad, ENGINES)


def test_schedule_runs_stages_in_order_on_one_model():
    from adptycho.reconstruction import reconstruct

    scan, obj, probe = _scan(3.0, grid=6)
    result = reconstruct(scan, engine="epie:3,adam:2", probe=probe, verbose=0)
    assert result.settings["engine"] == "epie:3,adam:2"
    assert list(result.extra_histories["stage_history"]) == [0, 0, 0, 1, 1]
    assert len(result.loss_history) == 5
    with pytest.raises(AdptychoError, match="adam stage"):
        reconstruct(scan, engine="adam:2,epie:3", probe=probe, verbose=0)


def test_plateau_schedule_halves_steps_then_stops():
    import keras

    from adptycho.training.schedule import PlateauSchedule

    class Model:
        stop_training = False
        step_size_factor = keras.Variable(1.0)

    callback = PlateauSchedule(patience=2, min_delta=0.01, max_reductions=2)
    callback.set_model(Model)
    losses = [10.0, 9.0, 8.999, 8.998, 8.997, 8.996]
    for epoch, loss in enumerate(losses):
        callback.on_epoch_end(epoch, {"loss": loss})
    assert float(Model.step_size_factor.numpy()) == 0.5
    assert Model.stop_training and "plateau" in callback.stop_reason
    assert callback.stopped_epoch == 5


def test_orientation_check_finds_flipped_positions_and_the_cli_reports_it(tmp_path, capsys):
    import dataclasses
    import json

    from adptycho.cli import main
    from adptycho.io import save_cxi
    from adptycho.orientation import TWINS, check_orientation, transform_positions
    from adptycho.reconstruction import build_model

    scan, _, _ = _scan(3.0, grid=7)
    # the twin (180-degree rotation) maps a flip-y file onto flip-x: both count as found
    assert np.allclose(transform_positions(transform_positions(scan.positions_px, "transpose"),
                                           "transpose"), scan.positions_px)
    flipped = dataclasses.replace(scan, positions_px=transform_positions(scan.positions_px,
                                                                         "flip-y"))
    result = check_orientation(flipped, lambda s, p: build_model(s, probe=p)[0], epochs=4,
                               max_patterns=49)
    assert result.best == "flip-y" and TWINS["flip-y"] == "flip-x"
    assert result.file_excess > 0.25 and result.margin > 0.1
    assert result.residuals["flip-y"] == result.residuals["flip-x"]
    # as written in the file the scan fits best as it is
    path = tmp_path / "scan.cxi"
    pixel_m = 1e-9 * 1.0 / (N * 75e-6)
    save_cxi(str(path), dataclasses.replace(scan, wavelength_m=1e-9, detector_distance_m=1.0,
                                            detector_pixel_size_m=(75e-6, 75e-6),
                                            pixel_size_m=(pixel_m, pixel_m)))
    out = tmp_path / "orient.json"
    main(["orient", str(path), "--epochs", "4", "--patterns", "49", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "the file's orientation fits best" in printed and "twin" in printed
    saved = json.loads(out.read_text())
    assert saved["best"] == "as-is" and saved["file_excess"] == 0.0


def test_default_reconstruct_warns_about_flipped_positions():
    import dataclasses

    from adptycho.orientation import transform_positions
    from adptycho.reconstruction import reconstruct

    scan, _, _ = _scan(3.0, grid=6)
    flipped = dataclasses.replace(scan, positions_px=transform_positions(scan.positions_px,
                                                                         "transpose"))
    with pytest.warns(UserWarning, match="fit better as 'transpose'"):
        result = reconstruct(flipped, epochs=1, verbose=0)
    assert result.settings["orientation_check"]["best"] in ("transpose", "anti-transpose")


def test_named_pie_schedules_search_the_probe_like_the_default():
    """``--engine epie`` (or a schedule with a PIE stage) searches an unknown far-field probe
    from the data, as the default schedule does; a given or stored probe, a near-field scan, an
    Adam-only schedule or a latent object keep the mean-pattern path."""
    import dataclasses

    from adptycho.training.planning import _pie_probe_search
    from adptycho.training.schedule import parse_schedule
    from adptycho.engines import available_engines

    scan, _, probe = _scan(3.0, grid=3)
    stages = lambda spec: parse_schedule(spec, available_engines(), 10)  # noqa: E731
    kw = dict(probe=None, object="pixels", parametrisation="complex")
    assert _pie_probe_search(scan, stages("epie"), **kw)
    assert _pie_probe_search(scan, stages("rpie:5,adam:5"), **kw)
    assert not _pie_probe_search(scan, stages("adam"), **kw)
    assert not _pie_probe_search(scan, stages("epie"), **{**kw, "probe": probe})
    assert not _pie_probe_search(dataclasses.replace(scan, probe=probe), stages("epie"), **kw)
    assert not _pie_probe_search(scan, stages("epie"), **{**kw, "parametrisation": "phase"})
    near = dataclasses.replace(scan, geometry="nearfield", wavelength_m=1e-10,
                               pixel_size_m=(1e-6, 1e-6), propagation_distance_m=0.5)
    assert not _pie_probe_search(near, stages("epie"), **kw)


def test_every_stage_of_a_schedule_shows_the_same_keras_progress_display(capsys):
    """A PIE stage prints Keras' own display (``Epoch k/N`` and the epoch's loss and residual),
    as the adam stage does; quiet prints nothing."""
    import re

    from adptycho.geometry import circular_aperture, normalize_probe_power, raster_scan
    from adptycho.reconstruction import reconstruct
    from adptycho.samples import complex_test_object
    from adptycho.simulate import simulate

    obj = complex_test_object((48, 48), "camera", "astronaut")
    probe = normalize_probe_power(circular_aperture((16, 16), 8.0, 2.0), 1e4)
    scan = simulate(obj, probe, np.round(raster_scan((6, 6), 5, start_px=(2, 2))))
    reconstruct(scan, engine="epie:3,adam:2", probe=probe, verbose=1)
    out = capsys.readouterr().out
    headers = re.findall(r"Epoch (\d)/(\d)", out)
    assert headers[:3] == [("1", "3"), ("2", "3"), ("3", "3")], out
    assert ("1", "2") in headers[3:] and ("2", "2") in headers[3:], out
    assert len(re.findall(r"loss: [\d.]+ - residual: [\d.]+", out)) >= 5, out
    assert "epie epoch" not in out
    reconstruct(scan, engine="epie:2", probe=probe, verbose=0)
    assert "Epoch" not in capsys.readouterr().out

"""Loss landscapes: PCA directions, filter-normalised directions, batched grids vs pointwise."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from adptycho.analysis.landscape import (filter_normalised_directions, latent_landscape,
                                         pca_directions, pixel_landscape, plot_landscape,
                                         write_landscape_csv)
from adptycho.errors import AdptychoError
from adptycho.geometry import circular_aperture, raster_scan
from adptycho.model import NearFieldGeometry, PtychoModel
from adptycho.nn.irmae import build_decoder
from adptycho.objects import LatentObject, PixelObject
from adptycho.simulate import simulate

LATENT = 16


def _pointwise(model, patterns):
    indices = tf.range(model.num_patterns)
    return float(tf.reduce_mean(model.pattern_losses(tf.constant(patterns), model(indices))))


def test_pca_directions_find_the_dominant_axes():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(8, 8)))[0]
    latents = rng.normal(size=(2000, 8)) * np.array([5, 2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]) @ basis.T
    directions, variance, spectrum = pca_directions(latents)
    assert directions.shape == (2, 8)
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1, atol=1e-6)
    assert abs(directions[0] @ basis[:, 0]) > 0.999 and abs(directions[1] @ basis[:, 1]) > 0.99
    np.testing.assert_allclose(variance, [25, 4], rtol=0.1)
    assert np.all(np.diff(spectrum) <= 0)
    with pytest.raises(AdptychoError):
        pca_directions(np.zeros((1, 3)))


@pytest.mark.parametrize("near", [False, True])
def test_latent_landscape_in_batches_matches_pointwise(near):
    keras.utils.set_random_seed(0)
    decoder = build_decoder(LATENT)
    rng = np.random.default_rng(1)
    shape, region = (40, 40), (4, 4, 32, 32)
    probe = circular_aperture((16, 16), 10).astype(np.complex64)
    positions = raster_scan((3, 3), 10.0) + np.array([2.3, 1.6])  # fractional: sub-pixel shifts
    geometry = NearFieldGeometry(561e-9, (13.8e-6, 13.8e-6), 0.005) if near else None
    h_opt = rng.normal(size=LATENT).astype(np.float32)
    truth = LatentObject(shape, decoder, h_opt, region_px=region)
    scan = simulate(truth.to_numpy(), probe, positions, photons_per_pattern=1e4, near_field=geometry)
    obj = LatentObject(shape, decoder, h_opt, region_px=region)
    model = PtychoModel(obj, probe * np.sqrt(1e4 / np.sum(np.abs(probe) ** 2)), positions,
                        near_field=geometry, loss="poisson-gaussian", readout_noise=0.3)
    v1, v2 = np.linalg.qr(rng.normal(size=(LATENT, 2)))[0].T
    alphas, betas = np.linspace(-2, 2, 5), np.linspace(-1, 1, 3)
    grid = latent_landscape(model, scan.patterns, h_opt, v1, v2, alphas, betas,
                            max_patterns_per_batch=40)  # 4 grid points per batch
    assert grid.shape == (5, 3)
    for i, j in [(0, 0), (2, 1), (4, 2), (1, 2)]:
        obj.assign_latent(h_opt + alphas[i] * v1 + betas[j] * v2)
        assert grid[i, j] == pytest.approx(_pointwise(model, scan.patterns), rel=2e-5, abs=1e-4)
    # noise-free data: the amplitude loss vanishes at the truth and nowhere else on the grid
    amplitude = latent_landscape(model, scan.patterns, h_opt, v1, v2, alphas, betas,
                                 loss="amplitude")
    assert amplitude[2, 1] == pytest.approx(0.0, abs=1e-3)
    assert np.argmin(amplitude) == np.ravel_multi_index((2, 1), grid.shape)
    assert np.sort(amplitude.ravel())[1] > 100 * max(amplitude[2, 1], 1e-6)


def test_pixel_landscape_with_filter_normalised_directions(tmp_path):
    rng = np.random.default_rng(2)
    shape = (40, 40)
    obj_true = (0.6 + 0.4 * rng.uniform(size=shape)).astype(np.complex64)
    probe = circular_aperture((16, 16), 10).astype(np.complex64)
    positions = raster_scan((3, 3), 10.0) + 2.0
    scan = simulate(obj_true, probe, positions, photons_per_pattern=1e4)
    obj = PixelObject(shape, "amplitude", initial=obj_true)
    model = PtychoModel(obj, probe * np.sqrt(1e4 / np.sum(np.abs(probe) ** 2)), positions)
    weights = [w.numpy() for w in obj.trainable_weights]
    d1, d2 = filter_normalised_directions(weights + [np.ones(3, np.float32)], seed=0)
    np.testing.assert_allclose(np.linalg.norm(d1[0], axis=1), np.linalg.norm(weights[0], axis=1),
                               rtol=1e-5)
    assert np.all(d2[1] == 0)  # 1-D variables get no direction (Li et al.: ignore biases)
    assert abs(np.sum(d1[0] * d2[0])) < 0.2 * np.sum(d1[0] ** 2)  # nearly orthogonal
    d1, d2 = d1[:1], d2[:1]
    alphas = betas = np.linspace(-0.2, 0.2, 3)
    grid = pixel_landscape(model, scan.patterns, d1, d2, alphas, betas, max_patterns_per_batch=20)
    np.testing.assert_array_equal(obj.trainable_weights[0].numpy(), weights[0])  # restored
    for i, j in [(0, 2), (1, 1), (2, 0)]:
        obj.trainable_weights[0].assign(weights[0] + alphas[i] * d1[0] + betas[j] * d2[0])
        assert grid[i, j] == pytest.approx(_pointwise(model, scan.patterns), rel=2e-5, abs=1e-6)
    assert grid[1, 1] == pytest.approx(0.0, abs=1e-4) and grid.min() == grid[1, 1]
    write_landscape_csv(tmp_path / "l.csv", alphas, betas, grid)
    rows = (tmp_path / "l.csv").read_text().strip().splitlines()
    assert rows[0] == "a,b,loss" and len(rows) == 10
    plot_landscape(tmp_path / "l.png", alphas, betas, grid, title="test")
    assert (tmp_path / "l.png").stat().st_size > 1000


def test_cli_landscape_of_a_pixel_reconstruction(tmp_path, capsys):
    from adptycho.cli import main

    scan = tmp_path / "scan.cxi"
    assert main(["simulate", "--out", str(scan), "--object-size", "48", "--probe-size", "16",
                 "--probe-diameter", "8", "--photons", "1e4"]) == 0
    rec = tmp_path / "rec.h5"
    assert main(["reconstruct", str(scan), "--out", str(rec), "--epochs", "2", "--refine", "",
                 "--no-png", "--quiet"]) == 0
    png = tmp_path / "land.png"
    assert main(["landscape", str(scan), "--reconstruction", str(rec), "--out", str(png),
                 "--points", "5", "--range", "0.5"]) == 0
    rows = (tmp_path / "land.csv").read_text().strip().splitlines()
    assert png.stat().st_size > 1000 and len(rows) == 26
    values = np.array([float(r.split(",")[2]) for r in rows[1:]]).reshape(5, 5)
    assert values[2, 2] < values[0, 0] and values[2, 2] < values[4, 4]
    capsys.readouterr()
    assert main(["landscape", str(scan), "--reconstruction", str(tmp_path / "none.h5"),
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "no such file" in capsys.readouterr().err

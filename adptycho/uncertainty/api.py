"""``object_uncertainty(scan, reconstruction, method=...)``: error bars of a reconstruction.

* ``fisher`` (pixel objects): per-pixel std from the Fisher information of the noise model at
  the fitted optimum (``pixels.py``, ``fisher.py``);
* ``laplace`` / ``hmc`` (latent objects): the posterior of the latent vector, from its full
  Hessian or from Hamiltonian Monte Carlo, pushed through the decoder (``latent.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from adptycho.errors import AdptychoError
from adptycho.io.results import ReconstructionResult
from adptycho.io.scan_data import NEARFIELD, ScanData
from adptycho.uncertainty.far_field import FarFieldFisher
from adptycho.uncertainty.fisher import (NOISE_MODELS, AutodiffFisher, estimator_c, fisher_c,
                                         residual_curvature)
from adptycho.uncertainty.pixels import (PixelSettings, amplitude_phase_std,
                                         pixel_covariance_blocks, pixel_settings)
from adptycho.uncertainty.result import UncertaintyResult

__all__ = ["object_uncertainty", "check_belongs", "METHODS", "pixel_fisher"]

METHODS = ("fisher", "laplace", "hmc")


def check_belongs(scan: ScanData, reconstruction: ReconstructionResult) -> None:
    """Raise ``AdptychoError`` unless ``reconstruction`` was made from ``scan`` (same number of
    patterns, detector, geometry and nominal positions)."""
    rec = reconstruction
    probe = np.asarray(rec.probe)
    if probe.shape[-2:] != tuple(scan.detector_shape):
        raise AdptychoError(f"the reconstruction's probe is {probe.shape[-2]}x{probe.shape[-1]} "
                            f"but the scan's detector is {scan.detector_shape[0]}x"
                            f"{scan.detector_shape[1]}: the reconstruction is not of this scan")
    if len(rec.positions_px) != scan.num_patterns:
        raise AdptychoError(f"the reconstruction has {len(rec.positions_px)} positions but the "
                            f"scan {scan.num_patterns} patterns: it is not of this scan")
    if rec.geometry != scan.geometry:
        raise AdptychoError(f"the reconstruction is {rec.geometry} but the scan {scan.geometry}")
    offset = np.asarray(rec.nominal_positions_px) - np.asarray(scan.positions_px, np.float64)
    spread = float(np.abs(offset - offset.mean(axis=0)).max())
    if spread > 0.05:  # a constant offset is the grid origin (CXI files store metres)
        raise AdptychoError(f"the reconstruction's nominal positions differ from the scan's by "
                            f"up to {spread:.3g} px beyond a common shift: it is not of this scan")
    _check_residual(scan, rec)


def _check_residual(scan: ScanData, rec: ReconstructionResult, patterns: int = 16,
                    factor: float = 3.0) -> None:
    """Refuse when the reconstruction predicts the scan's patterns much worse than it predicted
    the patterns it was fitted to (its last recorded relative amplitude residual)."""
    if not len(rec.residual_history) or scan.geometry == NEARFIELD:
        return
    from adptycho.physics.forward import forward_intensities

    recorded = float(rec.residual_history[-1])
    index = np.linspace(0, scan.num_patterns - 1, min(patterns, scan.num_patterns)).astype(int)
    predicted = forward_intensities(np.asarray(rec.object, np.complex64),
                                    np.asarray(rec.probe, np.complex64),
                                    np.asarray(rec.positions_px, np.float32)[index]).numpy()
    measured = np.maximum(scan.read_patterns(index), 0)
    valid = scan.valid_mask
    residual = float(np.sum(((np.sqrt(predicted) - np.sqrt(measured)) ** 2)[:, valid])
                     / max(np.sum(measured[:, valid]), 1e-30))
    if residual > factor * recorded + 1e-3:
        raise AdptychoError(f"the reconstruction does not fit this scan (relative residual "
                            f"{residual:.3g} on {len(index)} patterns, {recorded:.3g} when it was "
                            "fitted): it is not of this scan")


def _noise_model(rec: ReconstructionResult, noise_model, readout_noise):
    noise_model = noise_model or rec.settings.get("loss", "poisson")
    if noise_model not in NOISE_MODELS:
        raise AdptychoError(f"unknown noise model {noise_model!r}; choose one of "
                            f"{', '.join(NOISE_MODELS)}")
    if readout_noise is None:
        stored = rec.settings.get("readout_noise", 1.0)
        if isinstance(stored, str):
            if noise_model == "poisson-gaussian":
                raise AdptychoError("the reconstruction used a per-pixel readout noise: give it "
                                    "(readout_noise=...)")
            stored = 1.0
        readout_noise = float(stored)
    return noise_model, readout_noise


COVARIANCES = ("estimator", "fisher")


def pixel_fisher_transfer(scan: ScanData, rec: ReconstructionResult, probe):
    """The (H, W) near-field transfer function of the reconstruction, or None (far field)."""
    if scan.geometry != NEARFIELD:
        return None
    from adptycho.physics.propagators import angular_spectrum_transfer

    distance = rec.distance_m or scan.propagation_distance_m
    pixel = rec.pixel_size_m or scan.pixel_size_m
    return angular_spectrum_transfer(probe.shape[1:], pixel, scan.wavelength_m, distance)


def pixel_fisher(scan: ScanData, rec: ReconstructionResult, weights, single: bool = False,
                 waves=None):
    """The Fisher-type operator of a pixel reconstruction for per-pixel ``weights`` (see
    ``fisher.fisher_c``): ``FarFieldFisher`` (far field, one mode, at any positions;
    ``single``: complex64 products; ``waves``: a ``FarFieldWaves`` of the same fit to share) or
    ``AutodiffFisher`` (probe modes, near field)."""
    probe = np.asarray(rec.probe)
    probe = probe[None] if probe.ndim == 2 else probe
    positions = np.asarray(rec.positions_px, np.float64)
    if scan.geometry != NEARFIELD and probe.shape[0] == 1:
        return FarFieldFisher(rec.object, probe, positions, weights, mask=scan.mask,
                              single=single, waves=waves)
    integral = np.allclose(positions, np.round(positions), atol=1e-4)
    transfer = pixel_fisher_transfer(scan, rec, probe)
    return AutodiffFisher(rec.object, probe, positions, weights, mask=scan.mask,
                          transfer=transfer, subpixel=not integral)


def object_uncertainty(scan: ScanData, reconstruction: ReconstructionResult, method: str = "fisher",
                       *, noise_model: Optional[str] = None, readout_noise=None,
                       covariance: str = "estimator",
                       settings: Optional[dict] = None) -> UncertaintyResult:
    """Per-pixel standard deviations of the amplitude and phase of a reconstructed object.

    Args:
        scan: the measured scan the reconstruction was made from (checked: ``check_belongs``).
        reconstruction: a ``ReconstructionResult`` (``reconstruct`` or ``load_reconstruction``).
        method: ``fisher`` (pixel objects), ``laplace`` or ``hmc`` (latent objects).
        noise_model: ``poisson``, ``amplitude`` or ``poisson-gaussian``; default the loss the
            reconstruction used.
        readout_noise: camera readout std (photons) for ``poisson-gaussian``; default the
            reconstruction's.
        covariance: ``fisher`` method: ``estimator`` (default) is the covariance of the
            minimiser of the loss the reconstruction used, for Poisson data (the sandwich
            ``H^-1 B H^-1``, ``fisher.estimator_c``, with the Hessian ``H`` the expected
            Gauss-Newton part plus the exact diagonal of the residual part at the fit,
            ``fisher.residual_curvature``; the offset Poisson and the amplitude losses are not
            the exact likelihood and lose information in dark detector pixels);
            ``fisher`` is the inverse Fisher information of ``noise_model`` (the Cramer-Rao
            bound of an exact maximum-likelihood fit).
        settings: method settings: ``pixels.PixelSettings`` fields for ``fisher`` (and
            ``preset``: ``"fast"`` for large objects, ``pixels.PRESETS``),
            ``latent.LatentSettings`` fields for ``laplace`` / ``hmc``.

    Returns:
        ``UncertaintyResult`` (``.save(path)`` writes it); std maps on the reconstruction's grid,
        NaN where the data do not determine the object.
    """
    if method not in METHODS:
        raise AdptychoError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    check_belongs(scan, reconstruction)
    noise_model, readout_noise = _noise_model(reconstruction, noise_model, readout_noise)
    latent = "latent" in reconstruction.extra_histories
    if latent != (method != "fisher"):
        raise AdptychoError(
            f"method {method} is for {'pixel' if method == 'fisher' else 'latent'} objects, "
            f"and this reconstruction has a {'latent' if latent else 'pixel'} object (use "
            f"{'laplace or hmc' if latent else 'fisher'})")
    if latent:
        from adptycho.uncertainty.latent import latent_uncertainty

        result = latent_uncertainty(scan, reconstruction, method, noise_model, readout_noise,
                                    settings or {})
        result.extras.setdefault("object", np.asarray(reconstruction.object, np.complex64))
        return result
    options, preset = pixel_settings(settings)
    if covariance not in COVARIANCES:
        raise AdptychoError(f"unknown covariance {covariance!r}; choose one of "
                            f"{', '.join(COVARIANCES)}")
    blind = "probe" in reconstruction.settings.get("refine", [])
    if covariance == "fisher":
        hessian_c, score_c = fisher_c(noise_model, readout_noise), None
    else:
        hessian_c, score_c = estimator_c(noise_model, readout_noise)
    single = options.single_precision
    fisher = pixel_fisher(scan, reconstruction, hessian_c, single)
    waves = getattr(fisher, "waves", None)  # far field: one FFT per pattern for everything
    score = None if score_c is None else pixel_fisher(scan, reconstruction, score_c, single,
                                                      waves)
    ridge = None
    if covariance == "estimator" and options.residual_curvature:
        ridge = (_residual_curvature(scan, reconstruction, noise_model, readout_noise)
                 if waves is None else waves.residual_curvature(
                     scan.read_patterns, noise_model, readout_noise, scan.mask))
    blocks, bound, determined, reference, info = pixel_covariance_blocks(
        fisher, np.asarray(reconstruction.object), options, blind=blind, score=score,
        ridge=ridge)
    amplitude_std, phase_std = amplitude_phase_std(reconstruction.object, blocks, bound,
                                                   determined, options.smoothing_px)
    info.update(operator=type(fisher).__name__, gauges="global phase" + (
        ", phase ramps, scale (probe refined; conditional on the fitted probe)" if blind else ""))
    extras = {"object": np.asarray(reconstruction.object, np.complex64)}
    extras.update(_parameter_stds(scan, reconstruction, hessian_c, score_c, options, info,
                                  waves))
    return UncertaintyResult(
        amplitude_std.astype(np.float32), phase_std.astype(np.float32), determined, reference,
        method="fisher", noise_model=noise_model,
        settings={**dataclasses.asdict(options), "preset": preset, "readout_noise": readout_noise,
                  "covariance": covariance}, info=info, extras=extras)


def _residual_curvature(scan: ScanData, rec: ReconstructionResult, loss: str, readout_noise):
    """``fisher.residual_curvature`` of a pixel reconstruction against its scan's counts."""
    probe = np.asarray(rec.probe)
    probe = probe[None] if probe.ndim == 2 else probe
    positions = np.asarray(rec.positions_px, np.float64)
    integral = np.allclose(positions, np.round(positions), atol=1e-4)
    return residual_curvature(rec.object, probe, positions, scan.read_patterns, loss,
                              readout_noise, mask=scan.mask,
                              transfer=pixel_fisher_transfer(scan, rec, probe),
                              subpixel=not integral)


def _parameter_stds(scan: ScanData, rec: ReconstructionResult, hessian_c, score_c,
                    options: PixelSettings, info: dict, waves=None) -> dict:
    """``positions_std_px`` (N, 2) and ``probe_std`` / ``probe_phase_std`` (M, H, W) of the
    refined groups (``parameters.py``: conditional on the rest of the fit; ``waves``: the object
    map's ``FarFieldWaves``, shared); notes in ``info``."""
    from adptycho.uncertainty.parameters import positions_std_px, probe_std

    refine = rec.settings.get("refine", [])
    probe = np.asarray(rec.probe)
    probe = probe[None] if probe.ndim == 2 else probe
    positions = np.asarray(rec.positions_px, np.float64)
    out = {}
    if "positions" in refine:
        transfer = pixel_fisher_transfer(scan, rec, probe)
        out["positions_std_px"] = positions_std_px(rec.object, probe, positions, hessian_c,
                                                   score_c, mask=scan.mask, transfer=transfer)
        info["positions_std"] = "conditional on the fitted object and probe"
    if "probe" in refine:
        if scan.geometry == NEARFIELD or probe.shape[0] != 1:
            info["probe_std"] = "not computed: implemented for a far-field, single-mode probe"
            return out
        amplitude, phase, solver = probe_std(
            rec.object, probe, positions, hessian_c, score_c, mask=scan.mask, settings=options,
            waves=waves)
        out["probe_std"], out["probe_phase_std"] = amplitude[None], phase[None]
        info.update(solver, probe_std="conditional on the fitted object and positions")
    return out

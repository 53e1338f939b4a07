"""Fixed case table and an independent numpy simulator: the blind-reconstruction robustness suite.

Nothing here imports adptycho: probes, objects, scans, forward models and noise are written from
scratch with numpy / scipy / scikit-image. The only link to adptycho is the CXI layout that
``adptycho/io/cxi.py`` documents (read, not imported), so that ``adptycho reconstruct`` can read
the files.

Conventions (all in pixels of the object grid unless stated otherwise)
---------------------------------------------------------------------
* Object ``O``: (200, 200) complex128. Probe ``P``: (64, 64) complex128 window.
* A scan position is the (row, col) of the probe window's top-left corner on the object grid,
  possibly fractional. Far field: pattern j is made from the exit wave
  ``psi(r) = P(r - f) * O[R0 + r]`` with ``R0 = floor(corner)``, ``f = corner - R0`` and
  ``P(r - f)`` a Fourier (sinc) sub-pixel shift of the probe (the window frame's sub-pixel
  offset only adds a detector phase ramp). Near field: the detector images the lab frame, so
  ``psi(r) = P(r) * O(corner + r)`` with a Fourier-interpolated object patch (see ``exit_wave``);
  the near-field cases use whole-pixel positions (see ``make_positions``), so no interpolation
  is involved there.
* Far field: ``I = |fftshift(fft2(psi, norm="ortho"))|^2``, zero frequency at (32, 32) -- the
  orthonormal, centred convention documented in ``adptycho/physics/propagators.py``.
* Near field (parallel beam): ``I = |ifft2(fft2(psi) * H)|^2``, ``H = exp(i 2 pi z
  (sqrt(1/lambda^2 - f^2) - 1/lambda))`` (angular spectrum, no fftshift: the detector image is a
  real-space image; no zero padding, the window is the field of view). The distance is chosen as
  ``z = N dx^2 / lambda`` so that the far-field pixel formula ``lambda z / (N dx)`` also gives the
  detector pixel (then tools that derive the sample pixel that way, e.g. PtyLab, sample the
  probe correctly), and the Fresnel fringe width ``sqrt(lambda z) / dx`` is sqrt(64) = 8 px.
* Dose: the probe is scaled so that ``sum |P|^2`` equals the case's photons per pattern; the
  expected counts are then Poisson-sampled.
* Positions: the CXI file holds the *nominal* positions (raster, optionally with a known
  jitter, or a Fermat spiral); the patterns are made at the *true* ones = nominal + position
  error (Gaussian, ``pos_error_px`` standard deviation per axis, clipped to +-3 px).

Files per case (``data/<case>/``): ``scan.cxi`` (CXI: ``entry_1/instrument_1/detector_1/{data,
distance,x_pixel_size,y_pixel_size}``, ``entry_1/instrument_1/source_1/{wavelength,energy}``,
``entry_1/sample_1/geometry_1/translation`` (N, 3) metres (x = column, y = row), NO
illumination: the probe is unknown) and ``truth.npz`` (object, probe, true / nominal corners,
``corner_offset`` = object-grid corner of translation (0, 0), mask of the well-illuminated
region, geometry).

Run ``python experiments/robustness/cases.py`` to (re)write every case (seeded, deterministic),
``--list`` to print the table, ``--cases a,b`` for a subset, ``--png`` for a probe/object sheet.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = os.path.join(HERE, "data")

N_DET = 64            # detector / probe window side
OBJ = 200             # object side
PLANCK_C = 6.62607015e-34 * 299792458.0  # h c, J m

# Far field: 10 keV, 5 m, 75 um pixels -> object pixel lambda z / (N dx) = 129 nm.
FF_WAVELENGTH = 1.2398e-10
FF_DISTANCE = 5.0
FF_PIXEL = 75e-6
# Near field (parallel beam): 10 keV, 1 um (effective) pixels, z = N dx^2 / lambda = 0.516 m.
NF_WAVELENGTH = 1.2398e-10
NF_PIXEL = 1.0e-6
NF_DISTANCE = N_DET * NF_PIXEL ** 2 / NF_WAVELENGTH

MASK_SMOOTH = 3.0     # well illuminated: summed probe intensity, smoothed (Gaussian, 3 px) ...
MASK_THRESHOLD = 0.3  # ... >= 0.3 x its maximum ...
MASK_EROSION = 4      # ... then eroded by 4 px (see metric.py)


@dataclasses.dataclass(frozen=True)
class Case:
    """One simulated case. Every parameter that changes the data is a field (and seeded)."""

    name: str
    geometry: str            # "farfield" or "nearfield"
    probe: str               # disc | zoneplate | diffuser | gaussian | astigmatic | nf_diffuser
    #                          | nf_structured
    probe_params: tuple      # ((key, value), ...) see make_probe
    obj: str                 # strong_phase | phase_wrap | weak_phase | amplitude | sparse | mixed
    images: tuple            # (amplitude picture, phase picture) from skimage.data
    photons: float           # photons per pattern (sum |P|^2)
    scan: str                # raster | fermat
    overlap: float           # linear overlap 1 - step / probe diameter (90%-power diameter)
    jitter_px: float = 0.0   # raster only: known jitter (std, px), part of the nominal positions
    pos_error_px: float = 0.0  # unknown position error (std per axis, px, clipped to +-3)
    n_positions: int = 180   # target; raster uses the nearest rows x cols grid
    seed: int = 0
    issue_example: str = ""  # which of issue 18's example cases this is, if any
    note: str = ""

    @property
    def refine(self):
        """--refine for the blind default: positions too when the file positions are wrong."""
        return "probe,positions" if self.pos_error_px > 0 else "probe"

    def params(self):
        return dict(self.probe_params)


# ---------------------------------------------------------------------------------------------
# The fixed case table. Do not change a case once results exist: add a new one instead.
# ---------------------------------------------------------------------------------------------
CASES = [
    Case("ff_disc_strongphase_1e6", "farfield", "disc", (("pupil", 14.0), ("defocus", 12.0)),
         "strong_phase", ("astronaut", "camera"), 1e6, "fermat", 0.75, seed=1,
         issue_example="defocused disc, strong phase, 1e6 photons"),
    Case("ff_zoneplate_pos_1e5", "farfield", "zoneplate",
         (("pupil", 22.0), ("stop", 0.45), ("defocus", 20.0)),
         "mixed", ("coins", "moon"), 1e5, "fermat", 0.75, n_positions=160, seed=2,
         issue_example="zone plate with central stop, strong defocus, 1e5 photons"),
    Case("ff_zoneplate_neg_1e5", "farfield", "zoneplate",
         (("pupil", 22.0), ("stop", 0.45), ("defocus", -20.0)),
         "mixed", ("brick", "clock"), 1e5, "raster", 0.72, jitter_px=1.0, n_positions=160, seed=3,
         note="same zone plate, defocus of the other sign"),
    Case("ff_phasewrap_1e7", "farfield", "disc", (("pupil", 12.0), ("defocus", 10.0)),
         "phase_wrap", ("camera", "astronaut"), 1e7, "fermat", 0.75, n_positions=160, seed=4,
         issue_example="pure phase object wrapping past 2 pi, 1e7 photons"),
    Case("ff_lowdose_1e4", "farfield", "disc", (("pupil", 14.0), ("defocus", 12.0)),
         "mixed", ("moon", "coins"), 1e4, "raster", 0.75, jitter_px=1.0, seed=5,
         issue_example="low dose, 1e4 photons per pattern"),
    Case("ff_diffuser_raster_1e6", "farfield", "diffuser",
         (("radius", 14.0), ("phase_std", 2.0), ("corr", 1.5), ("spread", 20.0)),
         "mixed", ("gravel", "astronaut"), 1e6, "raster", 0.65, jitter_px=1.0,
         n_positions=160, seed=6,
         issue_example="diffuser probe, raster with jitter, 1e6 photons",
         note="'mixed' object: with the 2.2 pi 'strong_phase' object the 60-epoch known-probe "
              "ePIE gave 0.69 (0.47 after 200 epochs)"),
    Case("ff_gaussian_amplitude_1e5", "farfield", "gaussian", (("sigma", 7.0), ("curvature", 0.0)),
         "amplitude", ("camera", "moon"), 1e5, "fermat", 0.60, seed=7,
         note="flat-phase Gaussian probe"),
    Case("ff_astigmatic_weakphase_1e6", "farfield", "astigmatic",
         (("pupil", 16.0), ("defocus", 6.0), ("astig", 8.0)),
         "weak_phase", ("grass", "coins"), 1e6, "raster", 0.65, jitter_px=1.0, seed=8),
    Case("ff_sparse_1e5", "farfield", "disc", (("pupil", 16.0), ("defocus", -14.0)),
         "sparse", ("", ""), 1e5, "fermat", 0.75, seed=9,
         note="random discs on a clear background; defocus of negative sign"),
    Case("ff_sparse_dose1e3", "farfield", "disc", (("pupil", 14.0), ("defocus", 12.0)),
         "sparse", ("", ""), 1e3, "fermat", 0.80, seed=10,
         note="1e3 photons per pattern: a high-contrast sparse object and 80% overlap (with the "
              "'mixed' picture object and 85% overlap the 60-epoch known-probe ePIE gave 0.40)"),
    Case("ff_overlap50_1e6", "farfield", "disc", (("pupil", 14.0), ("defocus", 6.0)),
         "mixed", ("astronaut", "brick"), 1e6, "raster", 0.50, jitter_px=0.5, n_positions=160,
         seed=11,
         note="sparse overlap (50%)"),
    Case("ff_poserr1_1e6", "farfield", "disc", (("pupil", 14.0), ("defocus", 12.0)),
         "strong_phase", ("coins", "camera"), 1e6, "raster", 0.72, jitter_px=1.0, n_positions=160,
         pos_error_px=1.0, seed=12, note="unknown position errors, 1 px std"),
    Case("ff_poserr3_diffuser_1e6", "farfield", "diffuser",
         (("radius", 14.0), ("phase_std", 2.0), ("corr", 1.5), ("spread", 20.0)),
         "mixed", ("clock", "moon"), 1e6, "fermat", 0.75, pos_error_px=2.0, seed=13,
         note="unknown position errors, 2 px std clipped at 3 px"),
    Case("nf_diffuser_strongphase_1e6", "nearfield", "nf_diffuser",
         (("width", 52.0), ("phase_std", 1.5), ("corr", 2.0)),
         "strong_phase", ("astronaut", "camera"), 1e6, "raster", 0.82, jitter_px=1.0,
         n_positions=160, seed=14),
    Case("nf_structured_weakphase_1e6", "nearfield", "nf_structured",
         (("width", 52.0), ("curvature", 6.0), ("dirt", 0.3)),
         "weak_phase", ("moon", "grass"), 1e6, "fermat", 0.85, n_positions=160, seed=15,
         note="smooth beam with mild structure (dirt) and curvature; at 1e5 photons the "
              "known-probe ePIE gave 0.096 (noise-dominated: near-field phase contrast is weak "
              "at low spatial frequencies)"),
    Case("nf_diffuser_poserr_amplitude_1e5", "nearfield", "nf_diffuser",
         (("width", 52.0), ("phase_std", 1.5), ("corr", 2.0)),
         "amplitude", ("coins", "brick"), 1e5, "raster", 0.82, jitter_px=1.0, n_positions=160,
         pos_error_px=1.0, seed=16, note="unknown position errors, 1 px std"),
]

# Real scans in ../shared/data (no truth: the default command's data residual is reported).
REAL_CASES = {
    "tike_siemens_star": dict(
        path=os.path.join("tike_siemens_star", "siemens-star-small.npz.bz2"), flags=[],
        note="far field, 516 x 128^2 (APS Velociprobe); read directly by the CLI"),
    "petra_p25_nearfield": dict(
        path=os.path.join("petra_p25_nearfield", "PETRAIII_P25_Near_Field_Ptycho.cxi"),
        flags=["--focus-distance", "3.65e-3"],
        note="cone-beam near field, 200 x 100^2; z1 is not in the file: --focus-distance 3.65e-3 "
             "is a geometry flag"),
}

CASES_BY_NAME = {c.name: c for c in CASES}


def shared_data_dir():
    for candidate in (os.environ.get("ADPTYCHO_DATA_DIR"),
                      os.path.join(HERE, "..", "..", "..", "shared", "data")):
        if candidate and os.path.isdir(candidate):
            return os.path.abspath(candidate)
    return None


# ---------------------------------------------------------------------------------------------
# Propagators (numpy, float64)
# ---------------------------------------------------------------------------------------------
def far_field(psi):
    return np.fft.fftshift(np.fft.fft2(psi, norm="ortho"), axes=(-2, -1))


def inverse_far_field(wave):
    return np.fft.ifft2(np.fft.ifftshift(wave, axes=(-2, -1)), norm="ortho")


def asm_transfer(n, pixel_m, wavelength_m, distance_m):
    """Angular-spectrum transfer function (FFT order), constant phase 2 pi z / lambda dropped."""
    f = np.fft.fftfreq(n, d=pixel_m)
    f2 = f[:, None] ** 2 + f[None, :] ** 2
    inv = 1.0 / wavelength_m
    # cancellation-free sqrt(1/l^2 - f^2) - 1/l
    kz = -f2 / (inv + np.sqrt(np.maximum(inv ** 2 - f2, 0.0)))
    return np.exp(2j * np.pi * distance_m * kz)


class Propagator:
    """Forward / adjoint detector propagation for one geometry (far field or parallel-beam ASM)."""

    def __init__(self, geometry, n=N_DET):
        self.geometry = geometry
        if geometry == "nearfield":
            self.h = asm_transfer(n, NF_PIXEL, NF_WAVELENGTH, NF_DISTANCE)
            self.h_conj = np.conj(self.h)

    def forward(self, psi):
        if self.geometry == "farfield":
            return far_field(psi)
        return np.fft.ifft2(np.fft.fft2(psi) * self.h)

    def backward(self, wave):
        if self.geometry == "farfield":
            return inverse_far_field(wave)
        return np.fft.ifft2(np.fft.fft2(wave) * self.h_conj)


def fourier_shift(field, shift):
    """``field(r - shift)`` by a Fourier phase ramp (periodic), shift = (dy, dx) in px."""
    h, w = field.shape[-2:]
    ky = np.fft.fftfreq(h)[:, None]
    kx = np.fft.fftfreq(w)[None, :]
    ramp = np.exp(-2j * np.pi * (ky * shift[0] + kx * shift[1]))
    return np.fft.ifft2(np.fft.fft2(field) * ramp)


# ---------------------------------------------------------------------------------------------
# Probes
# ---------------------------------------------------------------------------------------------
def _smooth_noise(rng, shape, corr):
    from scipy.ndimage import gaussian_filter

    noise = gaussian_filter(rng.standard_normal(shape), corr, mode="wrap")
    return noise / noise.std()


def _pupil_probe(n, pupil, defocus, stop=0.0, astig=0.0, edge=1.0):
    """Focusing optic seen out of focus: pupil (detector plane) with a defocus / astigmatism
    phase, inverse-Fourier transformed to the sample plane. ``pupil`` radius in detector pixels,
    ``defocus`` / ``astig`` radians at the pupil edge, ``stop`` central stop / pupil radius."""
    k = np.arange(n) - n // 2
    ky, kx = np.meshgrid(k, k, indexing="ij")
    rho = np.hypot(ky, kx) / pupil
    theta = np.arctan2(ky, kx)
    # soft edges (error-function-like ramp over ``edge`` px)
    outer = np.clip(0.5 + (pupil - rho * pupil) / (2 * edge), 0, 1)
    inner = np.clip(0.5 + (rho * pupil - stop * pupil) / (2 * edge), 0, 1) if stop > 0 else 1.0
    amp = outer * inner
    phase = defocus * rho ** 2 + astig * rho ** 2 * np.cos(2 * theta)
    # centred in the window (inverse_far_field puts the origin at pixel (0, 0))
    return np.fft.fftshift(inverse_far_field(amp * np.exp(1j * phase)))


def make_probe(case: Case, rng):
    n = N_DET
    p = case.params()
    y, x = np.mgrid[:n, :n] - (n - 1) / 2.0
    r = np.hypot(y, x)
    kind = case.probe
    if kind == "disc":
        probe = _pupil_probe(n, p["pupil"], p["defocus"])
    elif kind == "zoneplate":
        probe = _pupil_probe(n, p["pupil"], p["defocus"], stop=p["stop"])
    elif kind == "astigmatic":
        probe = _pupil_probe(n, p["pupil"], p["defocus"], astig=p["astig"])
    elif kind == "gaussian":
        rho = r / p["sigma"]
        probe = np.exp(-rho ** 2 / 2 + 1j * p["curvature"] * rho ** 2)
    elif kind == "diffuser":
        aperture = np.clip(0.5 + (p["radius"] - r) / 2.0, 0, 1)
        screen = np.exp(1j * p["phase_std"] * _smooth_noise(rng, (n, n), p["corr"]))
        # short Fresnel propagation (lambda z = spread px^2) turns the phase screen into speckle
        f = np.fft.fftfreq(n)
        kernel = np.exp(-1j * np.pi * p["spread"] * (f[:, None] ** 2 + f[None, :] ** 2))
        probe = np.fft.ifft2(np.fft.fft2(aperture * screen) * kernel)
        probe *= np.clip(0.5 + (p["radius"] + 8 - r) / 3.0, 0, 1)  # keep it inside the window
    elif kind in ("nf_diffuser", "nf_structured"):
        half = p["width"] / 2.0
        # super-Gaussian beam filling most of the window (near-field illumination)
        envelope = np.exp(-0.5 * (r / half) ** 8)
        if kind == "nf_diffuser":
            screen = np.exp(1j * p["phase_std"] * _smooth_noise(rng, (n, n), p["corr"]))
            field = envelope * screen
        else:
            dirt = 1.0 - p["dirt"] * np.clip(_smooth_noise(rng, (n, n), 3.0), 0, None) / 3.0
            field = envelope * dirt * np.exp(1j * p["curvature"] * (r / half) ** 2)
        # the illumination has travelled: free-space propagation by the detector distance
        field = np.fft.ifft2(np.fft.fft2(field) * asm_transfer(n, NF_PIXEL, NF_WAVELENGTH,
                                                                NF_DISTANCE))
        probe = field
    else:
        raise ValueError(f"unknown probe kind {kind}")
    probe = probe.astype(np.complex128)
    probe *= np.sqrt(case.photons / np.sum(np.abs(probe) ** 2))
    return probe


def probe_diameter(probe, fraction=0.9):
    """Diameter (px) of the circle about the power centroid holding ``fraction`` of the power."""
    power = np.abs(probe) ** 2
    y, x = np.mgrid[:probe.shape[0], :probe.shape[1]]
    total = power.sum()
    cy, cx = (power * y).sum() / total, (power * x).sum() / total
    r = np.hypot(y - cy, x - cx).ravel()
    order = np.argsort(r)
    cumulative = np.cumsum(power.ravel()[order]) / total
    return 2.0 * r[order][np.searchsorted(cumulative, fraction)]


# ---------------------------------------------------------------------------------------------
# Objects
# ---------------------------------------------------------------------------------------------
def picture(name, size=OBJ):
    """A scikit-image picture as a (size, size) float in [0, 1]."""
    import skimage.data
    from skimage.color import rgb2gray
    from skimage.transform import resize

    image = np.asarray(getattr(skimage.data, name)(), dtype=np.float64)
    if image.ndim == 3:
        image = rgb2gray(image[..., :3])
    h, w = image.shape
    side = min(h, w)
    image = image[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    image = resize(image, (size, size), anti_aliasing=True)
    image -= image.min()
    return image / image.max()


def _sparse_discs(rng, size=OBJ, fill=0.08):
    """Random non-overlapping soft discs covering about ``fill`` of the area."""
    y, x = np.mgrid[:size, :size]
    amp_drop = np.zeros((size, size))
    phase = np.zeros((size, size))
    covered, tries, centres = 0.0, 0, []
    while covered < fill * size * size and tries < 5000:
        tries += 1
        radius = rng.uniform(3, 9)
        cy, cx = rng.uniform(radius + 2, size - radius - 2, 2)
        if any(np.hypot(cy - a, cx - b) < radius + c + 3 for a, b, c in centres):
            continue
        centres.append((cy, cx, radius))
        disc = np.clip(0.5 + radius - np.hypot(y - cy, x - cx), 0, 1)
        amp_drop = np.maximum(amp_drop, disc * rng.uniform(0.2, 0.6))
        phase += disc * rng.uniform(0.5, 2.0)
        covered += np.pi * radius ** 2
    return (1.0 - amp_drop) * np.exp(1j * phase)


def make_object(case: Case, rng):
    kind = case.obj
    if kind == "sparse":
        return _sparse_discs(rng)
    a, b = picture(case.images[0]), picture(case.images[1])
    if kind == "strong_phase":      # phase well past 2 pi plus moderate absorption
        amplitude, phase = 0.6 + 0.4 * a, 2.2 * np.pi * b
    elif kind == "phase_wrap":      # pure phase, 0 .. 3 pi
        amplitude, phase = np.ones_like(a), 3.0 * np.pi * a
    elif kind == "weak_phase":      # 0.3 rad phase, 2% absorption
        amplitude, phase = 1.0 - 0.02 * b, 0.3 * a
    elif kind == "amplitude":       # amplitude 0.15 .. 1, 0.2 rad phase
        amplitude, phase = 0.15 + 0.85 * a, 0.2 * b
    elif kind == "mixed":           # amplitude 0.5 .. 1, phase 0 .. 1.5 rad
        amplitude, phase = 0.5 + 0.5 * a, 1.5 * b
    else:
        raise ValueError(f"unknown object kind {kind}")
    return amplitude * np.exp(1j * phase)


# ---------------------------------------------------------------------------------------------
# Scans
# ---------------------------------------------------------------------------------------------
def make_positions(case: Case, diameter, rng):
    """(nominal, true) corners (N, 2) (row, col) on the object grid."""
    step = diameter * (1.0 - case.overlap)
    centre = (OBJ - N_DET) / 2.0
    if case.scan == "raster":
        side = int(round(np.sqrt(case.n_positions)))
        rows, cols = side, int(round(case.n_positions / side))
        gy = (np.arange(rows) - (rows - 1) / 2.0) * step
        gx = (np.arange(cols) - (cols - 1) / 2.0) * step
        nominal = np.stack(np.meshgrid(gy, gx, indexing="ij"), -1).reshape(-1, 2)
        if case.jitter_px:
            nominal = nominal + rng.normal(0.0, case.jitter_px, nominal.shape)
    elif case.scan == "fermat":
        k = np.arange(case.n_positions)
        c = step / np.sqrt(np.pi)  # area per point pi c^2 = step^2
        radius, angle = c * np.sqrt(k + 0.5), k * np.deg2rad(137.50776405)
        nominal = np.stack([radius * np.sin(angle), radius * np.cos(angle)], -1)
    else:
        raise ValueError(case.scan)
    nominal = nominal - nominal.mean(0) + centre
    error = np.zeros_like(nominal)
    if case.pos_error_px:
        error = np.clip(rng.normal(0.0, case.pos_error_px, nominal.shape), -3.0, 3.0)
    if case.geometry == "nearfield":
        # whole pixels: a sub-pixel near-field position needs the object (or the exit wave)
        # interpolated, and the two choices differ by 5-10% in intensity for the strong-phase
        # object (cdtools and adptycho shift the exit wave inside the periodic window); integer
        # positions keep every model exact, so the comparison is about blindness, not
        # interpolation
        nominal, error = np.round(nominal), np.round(error)
    true = nominal + error
    lo, hi = true.min(), true.max()
    if lo < 0.0 or hi > OBJ - N_DET - 1:
        raise ValueError(f"{case.name}: scan does not fit the object (corners {lo:.1f}..{hi:.1f}, "
                         f"step {step:.1f} px)")
    return nominal, true, step


# ---------------------------------------------------------------------------------------------
# Simulation
# ---------------------------------------------------------------------------------------------
NF_MARGIN = 8  # near field: object patches are interpolated with this margin


def exit_wave(obj, probe, corner, geometry="farfield"):
    """Exit wave of the probe window at ``corner``.

    Far field: ``P(r - f) O[R0 + r]`` (probe shifted inside the window; a sub-pixel shift of the
    window frame only multiplies the detector wave by a phase ramp, so intensities are those of
    the lab frame). Near field: the detector images the lab frame, where the probe is fixed and
    the object moves, so the exit wave is ``P(r) O(corner + r)`` with the object patch
    Fourier-interpolated (on a patch with an ``NF_MARGIN`` px margin, from the edge-padded
    object, so the interpolation does not wrap around the window).
    """
    r0 = np.floor(corner).astype(int)
    frac = corner - r0
    if geometry == "farfield":
        p = probe if not np.any(frac) else fourier_shift(probe, frac)
        return p * obj[r0[0]:r0[0] + N_DET, r0[1]:r0[1] + N_DET]
    m = NF_MARGIN
    padded = np.pad(obj, m, mode="edge")  # index i of padded <-> i - m of obj
    patch = padded[r0[0]:r0[0] + N_DET + 2 * m, r0[1]:r0[1] + N_DET + 2 * m]
    if np.any(frac):
        patch = fourier_shift(patch, -frac)  # patch(r + frac)
    return probe * patch[m:m + N_DET, m:m + N_DET]


def intensities(obj, probe, corners, geometry):
    prop = Propagator(geometry)
    return np.stack([np.abs(prop.forward(exit_wave(obj, probe, c, geometry))) ** 2
                     for c in corners])


def illumination(probe, corners, shape=(OBJ, OBJ)):
    total = np.zeros(shape)
    for c in corners:
        r0 = np.floor(c).astype(int)
        frac = c - r0
        p = probe if not np.any(frac) else fourier_shift(probe, frac)
        total[r0[0]:r0[0] + N_DET, r0[1]:r0[1] + N_DET] += np.abs(p) ** 2
    return total


def well_illuminated(probe, corners, shape=(OBJ, OBJ)):
    from scipy.ndimage import binary_erosion

    from scipy.ndimage import gaussian_filter

    light = gaussian_filter(illumination(probe, corners, shape), MASK_SMOOTH)
    mask = light >= MASK_THRESHOLD * light.max()
    return binary_erosion(mask, iterations=MASK_EROSION)


def geometry_of(case: Case):
    if case.geometry == "farfield":
        pixel = FF_WAVELENGTH * FF_DISTANCE / (N_DET * FF_PIXEL)
        return dict(wavelength_m=FF_WAVELENGTH, distance_m=FF_DISTANCE, detector_pixel_m=FF_PIXEL,
                    object_pixel_m=pixel)
    return dict(wavelength_m=NF_WAVELENGTH, distance_m=NF_DISTANCE, detector_pixel_m=NF_PIXEL,
                object_pixel_m=NF_PIXEL)


def simulate(case: Case):
    rng = np.random.default_rng(1000 + case.seed)
    probe = make_probe(case, rng)
    obj = make_object(case, rng)
    diameter = probe_diameter(probe)
    nominal, true, step = make_positions(case, diameter, rng)
    expected = intensities(obj, probe, true, case.geometry)
    counts = rng.poisson(expected).astype(np.float32)
    mask = well_illuminated(probe, true)
    return dict(obj=obj, probe=probe, nominal=nominal, true=true, counts=counts,
                expected=expected, mask=mask, diameter=diameter, step=step)


def write_cxi(path, counts, translations_m, geo):
    import h5py

    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["creator"] = "experiments/robustness/cases.py (numpy simulator)"
        f.create_dataset("cxi_version", data=150)
        det = f.create_group("entry_1/instrument_1/detector_1")
        det.create_dataset("data", data=counts, chunks=(1,) + counts.shape[1:],
                           compression="gzip", compression_opts=1)
        det.create_dataset("distance", data=geo["distance_m"])
        det.create_dataset("x_pixel_size", data=geo["detector_pixel_m"])
        det.create_dataset("y_pixel_size", data=geo["detector_pixel_m"])
        src = f.create_group("entry_1/instrument_1/source_1")
        src.create_dataset("wavelength", data=geo["wavelength_m"])
        src.create_dataset("energy", data=PLANCK_C / geo["wavelength_m"])
        f.create_dataset("entry_1/sample_1/geometry_1/translation", data=translations_m)
        f["entry_1/data_1/data"] = h5py.SoftLink("/entry_1/instrument_1/detector_1/data")
    os.replace(tmp, path)


def case_dir(name, data_dir=DATA_DIR):
    return os.path.join(data_dir, name)


def write_case(case: Case, data_dir=DATA_DIR):
    sim = simulate(case)
    geo = geometry_of(case)
    out = case_dir(case.name, data_dir)
    os.makedirs(out, exist_ok=True)
    # translation (0, 0) <-> this object-grid corner; x = column, y = row (adptycho/io/cxi.py)
    offset = np.array([(OBJ - N_DET) / 2.0, (OBJ - N_DET) / 2.0])
    rel = sim["nominal"] - offset
    translations = np.zeros((len(rel), 3))
    translations[:, 0] = rel[:, 1] * geo["object_pixel_m"]
    translations[:, 1] = rel[:, 0] * geo["object_pixel_m"]
    write_cxi(os.path.join(out, "scan.cxi"), sim["counts"], translations, geo)
    np.savez_compressed(
        os.path.join(out, "truth.npz"), object=sim["obj"], probe=sim["probe"],
        true_corners=sim["true"], nominal_corners=sim["nominal"], corner_offset=offset,
        mask=sim["mask"], geometry=case.geometry, probe_diameter_px=sim["diameter"],
        step_px=sim["step"], photons=case.photons,
        counts_per_pattern=float(sim["counts"].sum(1).sum(1).mean()),
        **{k: v for k, v in geo.items()})
    summary = dict(case=case.name, patterns=int(len(rel)), diameter_px=round(sim["diameter"], 1),
                   step_px=round(sim["step"], 2),
                   mean_counts=float(sim["counts"].sum((1, 2)).mean()),
                   max_count=float(sim["counts"].max()), mask_px=int(sim["mask"].sum()))
    with open(os.path.join(out, "case.json"), "w") as f:
        json.dump({"case": dataclasses.asdict(case), "summary": summary, "geometry": geo}, f,
                  indent=1, default=str)
    return summary


def load_truth(name, data_dir=DATA_DIR):
    with np.load(os.path.join(case_dir(name, data_dir), "truth.npz")) as z:
        return {k: z[k] for k in z.files}


def load_scan(name, data_dir=DATA_DIR):
    """(counts (N, H, W) float32, file positions (N, 2) row/col px) read back from the CXI."""
    import h5py

    with h5py.File(os.path.join(case_dir(name, data_dir), "scan.cxi"), "r") as f:
        counts = f["entry_1/instrument_1/detector_1/data"][()]
        tr = f["entry_1/sample_1/geometry_1/translation"][()]
    truth = load_truth(name, data_dir)
    pix = float(truth["object_pixel_m"])
    return counts, np.stack([tr[:, 1] / pix, tr[:, 0] / pix], 1)


def describe(case: Case):
    p = ", ".join(f"{k}={v:g}" for k, v in case.probe_params)
    scan = case.scan + (f"+jitter {case.jitter_px:g}px" if case.jitter_px else "")
    err = f", pos.err {case.pos_error_px:g}px" if case.pos_error_px else ""
    pics = "/".join(i for i in case.images if i) or "random discs"
    return (f"{case.geometry}, {case.probe} ({p}), {case.obj} ({pics}), {case.photons:.0e} ph, "
            f"{scan}, overlap {case.overlap:.0%}{err}")


def probe_sheet(path, names):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(names), 3, figsize=(7, 2.3 * len(names)))
    for row, name in zip(np.atleast_2d(axes), names):
        t = load_truth(name)
        row[0].imshow(np.abs(t["probe"]), cmap="gray")
        row[0].set_title(f"{name}\n|probe|", fontsize=6)
        row[1].imshow(np.angle(t["probe"]), cmap="twilight")
        row[2].imshow(np.angle(t["object"]) * t["mask"], cmap="twilight")
        row[2].plot(t["true_corners"][:, 1] + 32, t["true_corners"][:, 0] + 32, ".r", ms=1)
        for a in row:
            a.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main(argv=None):
    parser = argparse.ArgumentParser(description="write the robustness cases (CXI + truth)")
    parser.add_argument("--cases", default="", help="comma-separated subset (default all)")
    parser.add_argument("--list", action="store_true", help="print the table and exit")
    parser.add_argument("--png", default="", help="also write a probe/object sheet here")
    args = parser.parse_args(argv)
    names = [c.name for c in CASES] if not args.cases else args.cases.split(",")
    if args.list:
        for c in CASES:
            print(f"{c.name}: {describe(c)}")
        return 0
    for name in names:
        summary = write_case(CASES_BY_NAME[name])
        print(json.dumps(summary), flush=True)
    if args.png:
        probe_sheet(args.png, names)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Far-field Fisher-type operators of a pixel object (one probe mode; numpy).

With the detector wave of pattern j written ``Psi_j = F P_j O`` (``F``: the orthonormal 2-D DFT,
``P_j``: the probe window at corner ``c_j``) and the per-pixel weights ``c = 4 I w(I)``
(``fisher.fisher_c``, ``fisher.estimator_c``), the Fisher information is
``F = sum_j J_j^T diag(w) J_j`` (``fisher.py``). With the orthonormal DFT
``F_kr`` (``|F_kr|^2 = 1/N``), unit phasors ``u = Psi / |Psi|`` and ``c = 4 I w`` (4 for
Poisson), the Fisher information along a complex direction ``d`` at object pixel p is

    F_p(d) = 1/2 sum_j [ |P_r|^2 |d|^2 T_j + Re(d^2 P_r^2 G_j(r)) ],   r = p - corner_j,
    T_j = (1/N) sum_k c_jk,    G_j(r) = (1/N) DFT[c_j conj(u_j)^2](2 r),

one FFT per pattern for the exact 2x2 diagonal block of every pixel. Its trace,
``sum_j |P_r|^2 T_j``, is the probe intensity summed over the positions that see the pixel
(times 4 for Poisson: ``F_aa + F_bb = 4 sum_j |P(p - c_j)|^2``). ``tests/test_uncertainty.py``
checks the blocks against the Fisher matrix that TensorFlow's autodiff builds from the forward
model's Jacobian.

At a non-integer scan position the forward model shifts the probe by the sub-pixel remainder
(``physics.forward.exit_waves``: ``P_j(r) = P(r - frac_j)`` by the Fourier shift theorem, the
window at ``floor(position)``). Everything above then holds with ``P`` replaced by the shifted
probe ``P_j`` of each pattern (``FarFieldWaves.probes``): the operator stays exact, at the cost of
one (cached) shifted probe per pattern instead of the general autodiff operator.

``FarFieldWaves`` computes the fitted waves once (one FFT per pattern) for every operator of a
map (the Hessian's and the score's weights, the residual curvature).
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from adptycho.errors import AdptychoError

__all__ = ["FarFieldWaves", "FarFieldFisher", "corners_and_fractions", "shift_spectra"]


def corners_and_fractions(positions_px, atol: float = 1e-4):
    """Split (N, 2) float positions (y, x) as the forward model does
    (``physics.shifts.split_positions``: ``corner = floor(position)``).

    Returns:
        ``(corners, fractions)``: (N, 2) int corners and (N, 2) float64 remainders in [0, 1),
        or ``fractions=None`` when every position lies within ``atol`` of an integer (those are
        rounded: the sub-pixel shift is then the identity).
    """
    positions = np.asarray(positions_px, np.float64)
    rounded = np.round(positions)
    if np.allclose(positions, rounded, rtol=0.0, atol=atol):
        return rounded.astype(int), None
    corners = np.floor(positions)
    return corners.astype(int), positions - corners


def shift_spectra(fractions, shape):
    """(B, H, W) complex128 ``exp(-2 pi i (k_y f_y + k_x f_x))`` at the FFT frequencies ``k`` of
    an (H, W) window: ``IFFT(ramp FFT(P))`` is ``P(r - f)``, the sub-pixel shift of the forward
    model (``physics.forward.shifted_probes``: the same frequencies and sign)."""
    fractions = np.asarray(fractions, np.float64)
    ramp_y = np.exp(-2j * np.pi * fractions[:, 0, None] * np.fft.fftfreq(shape[0]))  # (B, H)
    ramp_x = np.exp(-2j * np.pi * fractions[:, 1, None] * np.fft.fftfreq(shape[1]))  # (B, W)
    return ramp_y[:, :, None] * ramp_x[:, None, :]


class FarFieldWaves:
    """The fitted far-field detector waves of every pattern, computed once and shared.

    One FFT per pattern gives the unit phasors ``u = Psi / |Psi|`` and intensities
    ``I = |Psi|^2`` that every far-field operator of the same fit needs (the Fisher-type
    operators of the Hessian and of the score differ only in the weights ``c(I)``; the residual
    curvature needs ``I`` and the counts). They are kept between passes when they take at most
    ``cache_bytes``, else recomputed per pass.

    Args:
        object_: (Y, X) complex fitted object; probe: (H, W) complex probe (photon units).
        positions_px: (N, 2) float top-left corners (y, x) of the probe windows; non-integer
            ones shift the probe (``corners_and_fractions``, ``probes``).
        batch: patterns per vectorised step.
        single: keep the phasors (and shifted probes) in complex64 (else complex128).
    """

    def __init__(self, object_, probe, positions_px, batch: int = 64, single: bool = False,
                 cache_bytes: int = 1 << 30):
        self.object = np.asarray(object_, np.complex128)
        self.probe = np.asarray(probe, np.complex128)
        self.corners, self.fractions = corners_and_fractions(positions_px)
        self.batch = int(batch)
        self.complex_dtype = np.complex64 if single else np.complex128
        h, w = self.probe.shape
        n = len(self.corners)
        item = np.dtype(self.complex_dtype).itemsize * 3 // 2  # phasor + intensity
        self._keep = n * h * w * item <= int(cache_bytes)
        self._cache = None
        self.cache_bytes = int(cache_bytes)
        self.weight_cache = {}  # FarFieldFisher._amplitude_weights, shared by operators
        self._object = self.object.astype(self.complex_dtype, copy=False)
        self._shifted = None
        self._ramps = None
        self._back_windows = None
        self.index_chunks = [np.arange(start, min(start + self.batch, n))
                             for start in range(0, n, self.batch)]

    def _kept(self, name, compute, dtype):
        """``compute(all indices)`` kept in ``self._<name>`` when it fits ``cache_bytes``."""
        if getattr(self, name) is None:
            h, w = self.probe.shape
            n = len(self.corners)
            if n * h * w * np.dtype(dtype).itemsize > self.cache_bytes:
                return None
            kept = np.empty((n, h, w), dtype)
            for idx in self.index_chunks:
                kept[idx[0]:idx[-1] + 1] = compute(idx)
            setattr(self, name, kept)
        return getattr(self, name)

    @staticmethod
    def _rows(kept, idx):
        """``kept[idx]``: a view (no copy) when ``idx`` is a contiguous run, as every chunk is."""
        idx = np.asarray(idx)
        if len(idx) and np.all(np.diff(idx) == 1):
            return kept[idx[0]:idx[-1] + 1]
        return kept[idx]

    def ramps(self, idx):
        """(B, H, W) spectra of the sub-pixel shifts of patterns ``idx`` (``shift_spectra``;
        ``S_j = IFFT diag(ramp_j) FFT``), or None at integer positions."""
        if self.fractions is None:
            return None

        def compute(index):
            return shift_spectra(self.fractions[index], self.probe.shape)

        kept = self._kept("_ramps", compute, self.complex_dtype)
        out = compute(idx) if kept is None else self._rows(kept, idx)
        return out.astype(self.complex_dtype, copy=False)

    def back_shifted_windows(self, idx):
        """(B, H, W) complex128 object windows shifted back by their sub-pixel remainders,
        ``S_j^H O_j`` (the object windows themselves at integer positions)."""
        if self.fractions is None:
            return self.windows(self.object, idx)

        def compute(index):
            window = self.windows(self.object, index)
            return sfft.ifft2(np.conj(self.ramps(index)) * sfft.fft2(window, workers=-1),
                              workers=-1)

        kept = self._kept("_back_windows", compute, np.complex128)
        return compute(idx) if kept is None else self._rows(kept, idx)

    def probes(self, idx):
        """The probe of patterns ``idx``: (H, W) complex128 when every position is an integer,
        else (B, H, W) probes shifted by their sub-pixel remainders, in the precision of
        ``single`` (kept for all patterns when small enough)."""
        if self.fractions is None:
            return self.probe

        def compute(index):
            spectrum = sfft.fft2(self.probe, workers=-1)[None] * shift_spectra(
                self.fractions[index], self.probe.shape)
            return sfft.ifft2(spectrum, workers=-1, overwrite_x=True)

        kept = self._kept("_shifted", compute, self.complex_dtype)
        out = compute(idx) if kept is None else self._rows(kept, idx)
        return out.astype(self.complex_dtype, copy=False)

    def windows(self, array, idx):
        """(..., B, H, W) the probe-sized windows of ``array`` at the corners ``idx``."""
        h, w = self.probe.shape
        return np.stack([array[..., cy:cy + h, cx:cx + w] for cy, cx in self.corners[idx]],
                        axis=-3)

    def object_windows(self, idx):
        """(B, H, W) windows of the fitted object at the corners ``idx``, in the precision of
        ``single``."""
        return self.windows(self._object, idx)

    def add_windows(self, out, idx, values):
        """``out[..., window of pattern idx[b]] += values[..., b, :, :]`` (slices: faster than
        one fancy-indexed addition)."""
        h, w = self.probe.shape
        for b, (cy, cx) in enumerate(self.corners[idx]):
            out[..., cy:cy + h, cx:cx + w] += values[..., b, :, :]

    def compute(self, idx):
        """(B, H, W) phasors and intensities of patterns ``idx`` (unshifted FFT order), in the
        precision of ``single``."""
        dtype = self.complex_dtype
        exit_waves = self.probes(idx).astype(dtype, copy=False) * self.object_windows(idx)
        waves = sfft.fft2(exit_waves, norm="ortho", workers=-1, overwrite_x=True)
        intensity = waves.real ** 2 + waves.imag ** 2
        amplitude = np.sqrt(intensity)
        phasors = np.divide(waves, amplitude, out=np.ones_like(waves), where=amplitude > 0)
        return phasors, intensity

    def chunks(self):
        """Yield ``(idx, phasors, intensity)`` per chunk (``index_chunks``)."""
        if self._cache is not None:
            yield from self._cache
            return
        kept = []
        for idx in self.index_chunks:
            phasors, intensity = self.compute(idx)
            item = (idx, phasors, intensity)
            if self._keep:
                kept.append(item)
            yield item
        if self._keep:
            self._cache = kept

    def residual_curvature(self, read_counts, loss: str, readout_noise=1.0, mask=None):
        """``fisher.residual_curvature`` from the cached waves: no second forward pass.

        Args:
            read_counts: ``indices -> (B, H, W)`` measured counts, centred as stored.
            loss, readout_noise: as ``fisher.residual_curvature``; mask: (H, W) bool, as
                stored.
        """
        from adptycho.uncertainty.fisher import pattern_slopes

        valid = None if mask is None else np.fft.ifftshift(np.asarray(mask, np.float64))
        out = np.zeros(self.object.shape)
        for idx, _, intensity in self.chunks():
            counts = np.fft.ifftshift(np.asarray(read_counts(idx), np.float32), axes=(-2, -1))
            means = pattern_slopes(loss, counts, intensity, readout_noise, valid)
            intensity_p = np.abs(self.probes(idx)) ** 2
            self.add_windows(out, idx, 2.0 * means[:, None, None] * intensity_p)
        return out


class FarFieldFisher:
    """Fisher information of a far-field, single-mode pixel object (numpy).

    Args:
        object_: (Y, X) complex object at which F is evaluated (the fitted optimum).
        probe: (H, W) or (1, H, W) complex probe in photon units.
        positions_px: (N, 2) float top-left corners (y, x) on the object grid (sub-pixel
            remainders shift the probe, as in the forward model).
        weights: ``I -> c`` per-pixel weights in amplitude form (``fisher_c`` or one of
            ``fisher.estimator_c``), applied to (B, H, W) intensities.
        mask: optional (H, W) bool valid detector pixels (centred, as stored).
        batch: patterns per vectorised step.
        single: products and the diagonal blocks' terms in complex64 (about twice as fast;
            relative error ~1e-6, checked in ``tests/test_uncertainty_speed.py``); the blocks
            are summed in float64, the products in complex64.
        cache_bytes: the detector-side weights ``u sqrt(c)`` of all patterns are computed once
            and kept when they take at most this many bytes (else recomputed per product).
        waves: optional ``FarFieldWaves`` of the same fit to share (one FFT per pattern for
            all the operators of a map); made here when not given.
    """

    def __init__(self, object_, probe, positions_px, weights, mask=None, batch: int = 64,
                 single: bool = False, cache_bytes: int = 1 << 30, waves=None):
        probe = np.asarray(probe, np.complex128)
        if probe.ndim == 3:
            if probe.shape[0] != 1:
                raise AdptychoError("FarFieldFisher takes one probe mode (use AutodiffFisher)")
            probe = probe[0]
        self.probe = probe
        self.object = np.asarray(object_, np.complex128)
        self.shape = self.object.shape
        h, w = probe.shape
        self.npix = h * w
        self.weights = weights
        # detector-side arrays in unshifted FFT order (the DFT sums do not depend on the order)
        self._mask = None if mask is None else np.fft.ifftshift(np.asarray(mask, bool))
        self.batch = int(batch)
        self.complex_dtype = np.complex64 if single else np.complex128
        self.cache_bytes = int(cache_bytes)
        self.waves = waves if waves is not None else FarFieldWaves(
            self.object, probe, positions_px, batch, single, cache_bytes)
        self.corners = self.waves.corners

    # -- per-pattern detector quantities ------------------------------------------------
    def _detector_weights(self, intensity):
        """(B, H, W) weights c = 4 I w(I) of intensities in unshifted FFT order, masked."""
        c = np.fft.ifftshift(self.weights(np.fft.fftshift(intensity, axes=(-2, -1))),
                             axes=(-2, -1))
        return c if self._mask is None else c * self._mask

    def _detector_chunks(self):
        """Yield ``(idx, u, c)`` per chunk: (B, H, W) unit phasors ``u = Psi/|Psi|`` and weights
        ``c = 4 I w(I)``, from the shared (cached) waves."""
        for idx, u, intensity in self.waves.chunks():
            yield idx, u, self._detector_weights(np.asarray(intensity, np.float64))

    def _amplitude_weights(self):
        """Yield ``(idx, w)`` per chunk: (B, H, W) ``w = u sqrt(c)`` (so ``c Re(conj(u) d) u =
        w Re(conj(w) d)`` and ``c conj(u)^2 = conj(w)^2``), cached when small enough."""
        key = (self.weights, None if self._mask is None else self._mask.tobytes(),
               np.dtype(self.complex_dtype).str)  # operators of one fit share the weights
        cached = self.waves.weight_cache.get(key)
        if cached is not None:
            yield from cached
            return
        h, w = self.probe.shape
        keep = len(self.corners) * h * w * np.dtype(self.complex_dtype).itemsize
        keep = keep <= self.cache_bytes
        chunks = []
        for idx, u, c in self._detector_chunks():
            item = (idx, (u * np.sqrt(np.maximum(c, 0.0))).astype(self.complex_dtype))
            if keep:
                chunks.append(item)
            yield item
        if keep:
            self.waves.weight_cache[key] = chunks

    def sample_rhs(self, count: int, rng):
        """(S, Y, X) complex ``K^T e`` for S draws of real standard-normal detector noise e,
        where ``F = K^T K`` (``K v = Re(conj(w) DFT(P v))`` per pattern): solving ``F' x = K^T
        e`` gives ``x`` with covariance ``F'^-1 F F'^-1`` (``pixels.py``, sampling)."""
        out = np.zeros((count,) + self.shape, np.complex128)
        for idx, weight in self._amplitude_weights():
            probe = np.conj(self.waves.probes(idx)).astype(self.complex_dtype, copy=False)
            noise = rng.standard_normal((count,) + weight.shape).astype(weight.real.dtype)
            back = probe * sfft.ifft2(weight * noise, norm="ortho", workers=-1,
                                      overwrite_x=True)
            self.waves.add_windows(out, idx, back)
        return out

    # -- products and diagonal -------------------------------------------------------------
    def matvec(self, v):
        """``F v`` for (S, Y, X) complex perturbations (S independent vectors); (S, Y, X)
        complex128."""
        v = np.asarray(v).astype(self.complex_dtype, copy=False)
        out = np.zeros(v.shape, self.complex_dtype)  # summed in the products' precision
        for idx, weight in self._amplitude_weights():
            probe = self.waves.probes(idx).astype(self.complex_dtype, copy=False)
            dv = sfft.fft2(probe * self.waves.windows(v, idx), norm="ortho", workers=-1,
                           overwrite_x=True)  # (S, B, H, W)
            dv = weight * (weight.real * dv.real + weight.imag * dv.imag)
            back = np.conj(probe) * sfft.ifft2(dv, norm="ortho", workers=-1, overwrite_x=True)
            self.waves.add_windows(out, idx, back)
        return out.astype(np.complex128, copy=False)

    def diagonal_blocks(self):
        """(Y, X, 2, 2) float64 exact diagonal blocks of F over (real, imag) of each pixel."""
        h, w = self.probe.shape
        yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        twice = ((2 * yy) % h, (2 * xx) % w)
        parts = np.zeros((3,) + self.shape)  # block entries (0,0), (1,1), (0,1)
        for idx, weight in self._amplitude_weights():  # complex64 terms when ``single``
            probe = self.waves.probes(idx).astype(self.complex_dtype, copy=False)
            psq, p2 = probe ** 2, np.abs(probe) ** 2
            t = np.sum(np.abs(weight) ** 2, axis=(-2, -1), dtype=np.float64) / self.npix
            g = sfft.fft2(np.conj(weight) ** 2, workers=-1)[:, twice[0], twice[1]]
            q = psq * g * (1.0 / self.npix)  # (B, H, W)
            iso = p2 * t[:, None, None].astype(p2.dtype)
            self.waves.add_windows(parts, idx, 0.5 * np.stack(
                [iso + q.real, iso - q.real, -q.imag]))
        blocks = np.empty(self.shape + (2, 2))
        blocks[..., 0, 0], blocks[..., 1, 1] = parts[0], parts[1]
        blocks[..., 0, 1] = blocks[..., 1, 0] = parts[2]
        return blocks

    def mean_detector_weight(self):
        """(H, W) float64 mean over the patterns of the detector weights ``c = |w|^2``
        (unshifted FFT order; ``preconditioners.FourierPreconditioner``)."""
        total = np.zeros(self.probe.shape)
        for _, weight in self._amplitude_weights():
            total += np.sum(weight.real ** 2 + weight.imag ** 2, axis=0, dtype=np.float64)
        return total / len(self.corners)

    def illumination(self):
        """(Y, X) float64 sum over positions of |P|^2 (photons per pixel over the scan)."""
        out = np.zeros(self.shape)
        for idx in self.waves.index_chunks:
            intensity = np.abs(self.waves.probes(idx)) ** 2
            self.waves.add_windows(out, idx, np.broadcast_to(intensity, (len(idx),) +
                                                             self.probe.shape))
        return out

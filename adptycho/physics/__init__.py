"""Differentiable physics of ptychography as pure TensorFlow functions."""

from adptycho.physics.forward import exit_waves, forward_intensities, intensities_from_waves
from adptycho.physics.propagators import (angular_spectrum_kernel, angular_spectrum_transfer,
                                          far_field, inverse_far_field, near_field)
from adptycho.physics.shifts import extract_patches, fourier_shift, split_positions

__all__ = [
    "exit_waves", "forward_intensities", "intensities_from_waves", "angular_spectrum_kernel",
    "angular_spectrum_transfer", "far_field", "inverse_far_field", "near_field",
    "extract_patches", "fourier_shift", "split_positions",
]

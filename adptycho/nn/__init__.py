"""Neural-network parts: the IRMAE decoder used as a deep generative object prior
(Seifert, Shao & Mosk 2024), its MNIST data, training and the Mitchell-Netravali resize matrices."""

from adptycho.nn.resize import mitchell_matrix, mitchell_resize_matrices, resize_with_matrices

__all__ = ["mitchell_matrix", "mitchell_resize_matrices", "resize_with_matrices"]

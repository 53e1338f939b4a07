"""Object representations behind one interface (``ObjectRepresentation.transmission()``)."""

from adptycho.objects.base import ObjectRepresentation
from adptycho.objects.generator import GeneratorObject
from adptycho.objects.latent import LATENT_MODES, LatentObject
from adptycho.objects.pixels import PIXEL_PARAMETRISATIONS, PixelObject

__all__ = ["ObjectRepresentation", "PixelObject", "PIXEL_PARAMETRISATIONS", "LatentObject",
           "LATENT_MODES", "GeneratorObject"]

"""Object representations behind one interface (``ObjectRepresentation.transmission()``)."""

from adptycho.objects.base import ObjectRepresentation
from adptycho.objects.generator import GeneratorObject
from adptycho.objects.latent import LATENT_MODES, LatentObject
from adptycho.objects.pixels import PIXEL_PARAMETRISATIONS, PixelObject

__all__ = ["ObjectRepresentation", "PixelObject", "PIXEL_PARAMETRISATIONS", "LatentObject",
           "LATENT_MODES", "GeneratorObject", "object_representation"]


def object_representation(name: str, shape, parametrisation="complex", initial_object=None,
                          latent_options=None, tv_weight: float = 0.0) -> ObjectRepresentation:
    """The representation named ``name`` covering the (Y, X) grid ``shape``: ``pixels``
    (``PixelObject``), a StyleGAN2 model (``GeneratorObject``) or an IRMAE model name or
    directory (``LatentObject``, options ``latent_options``)."""
    from adptycho.nn.stylegan2 import is_stylegan2_model

    if name == "pixels":
        return PixelObject(shape, parametrisation, initial=initial_object, tv_weight=tv_weight)
    if is_stylegan2_model(name):
        return GeneratorObject.from_pretrained(shape, name, **(latent_options or {}))
    return LatentObject.from_pretrained(shape, name, **(latent_options or {}))

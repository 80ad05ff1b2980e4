"""pix2pix with Instance-Level Meta Normalization (ILM Norm, Jia, Chen & Chen, CVPR 2019)."""

from pix2pix_ilm.version import __version__

__all__ = ["Translator", "__version__"]


def __getattr__(name: str) -> type:
    """The library's API, imported when first used: ``import pix2pix_ilm`` loads no torch."""
    if name == "Translator":
        from pix2pix_ilm.deploy.translator import Translator

        return Translator
    raise AttributeError(f"module 'pix2pix_ilm' has no attribute {name!r}")

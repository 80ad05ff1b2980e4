"""pix2pix with Instance-Level Meta Normalization (ILM Norm, Jia, Chen & Chen, CVPR 2019)."""

__version__ = "0.1.0"

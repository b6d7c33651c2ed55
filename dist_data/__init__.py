"""dist_data: torchrun-native, distributed data preparation for training embedding models."""

__version__ = "0.1.0"

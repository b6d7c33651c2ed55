"""dist_data: torchrun-native, distributed data preparation for training embedding models."""

import os as _os

# MKL's strict reproducibility mode: its matrix products give the same bits whatever the number
# of threads (measured: without it, all-MiniLM-L6-v2 vectors differ by ~2e-7 between 1 and 2
# threads, which torchrun's one-thread-per-rank default turns into world-size-dependent output).
# No measurable cost on CPU; set before torch loads MKL, and only if the user has not chosen.
_os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__version__ = "0.1.0"

from .core.compat import prepare_torchvision as _prepare_torchvision  # noqa: E402

_prepare_torchvision()  # before transformers, timm or open_clip import torchvision (see core/compat.py)

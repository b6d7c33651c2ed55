"""Importing torchvision (and what imports it: timm, open_clip) on a machine where it is broken.

PyPI's torchvision wheel carries compiled operators for one torch build. Beside another build (a
CPU torch next to torchvision's CUDA wheel, as on some CI images) ``import torchvision`` fails in
its own module init with ``RuntimeError: operator torchvision::nms does not exist``: it registers
fake kernels for two operators (``nms``, ``qnms``) whose schemas its library should have defined.
Defining those two schemas first lets the pure-Python parts import and work (transforms,
``ImageFolder``, timm and open_clip models); torchvision's compiled ops (detection ops,
``torchvision.io`` decoding) stay unavailable, and dist_data uses none of them (PIL decodes).

This is the only place that knows about it. It acts only on that exact failure, says so once in
the log, and does nothing where torchvision imports normally.
"""

from __future__ import annotations

import sys

from ..core.log import logger

_MISSING_OPS = {  # what torchvision's _meta_registrations registers fake kernels for
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library = None  # the torch.library.Library holding the schemas (kept alive: dropping it removes them)


def _is_op_mismatch(error: BaseException) -> bool:
    return isinstance(error, RuntimeError) and any(f"operator torchvision::{op} does not exist" in str(error)
                                                   for op in _MISSING_OPS)


def import_torchvision():
    """``import torchvision``, working around a compiled-ops mismatch with torch (see the module doc).

    Raises:
        ImportError: torchvision is not installed (with the install command).
        RuntimeError: any other import failure, unchanged.
    """
    global _library
    if "torchvision" in sys.modules:  # imported already (a failed import leaves no entry)
        return sys.modules["torchvision"]
    try:
        import torchvision

        return torchvision
    except ModuleNotFoundError as e:
        raise ImportError("images need torchvision: pip install torchvision (the build that matches your torch)") from e
    except RuntimeError as e:
        if not _is_op_mismatch(e):
            raise
        first_line = str(e).splitlines()[0]
    import torch

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # the half-initialised package
    _library = torch.library.Library("torchvision", "DEF")
    for schema in _MISSING_OPS.values():
        _library.define(schema)
    import torchvision

    logger.warning("torchvision %s does not match torch %s (%s): its compiled ops are unavailable; defined the "
                   "schemas of %s so that its Python parts (transforms, ImageFolder, timm, open_clip) work. "
                   "Install the torchvision build made for this torch to silence this.", torchvision.__version__,
                   torch.__version__, first_line, ", ".join(_MISSING_OPS))
    return torchvision

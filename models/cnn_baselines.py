"""ImageNet-style CNN baselines for 2D slice classification (ad-lite card, Table 1), built without downloads.

``build(arch, num_classes)`` returns an :class:`ImageNetInput` around one of

- ``densenet121``: MONAI's ``DenseNet121`` (2D, 3 channels): 6,957,956 parameters for 4 classes, 7,978,856 for
  1000 (torchvision's count);
- ``mobilenet_v2``: :class:`~.mobilenet_v2.MobileNetV2` (torchvision names);
- ``vgg16``: :class:`~.vgg.VGG16`, Keras-style head (include_top=False + global pool + Dense);
- ``xception``: :class:`~.xception.Xception` (Keras layout).

The wrapper takes raw 0–255 pixels (what ad-lite's loader gives) and normalises them with the ImageNet mean/sd
(torchvision's convention), so user-supplied ImageNet weights see the input they were trained on. Its state
dict is the network's under ``net.``; :data:`HEADS` names each network's classifier prefix (the part replaced
when the class count differs), :func:`from_torchvision` renames a torchvision DenseNet state dict to MONAI's keys.
"""

from __future__ import annotations

import re

import torch
from torch import nn

ARCHS = ("densenet121", "mobilenet_v2", "vgg16", "xception")
HEADS = {"densenet121": "class_layers.out.", "mobilenet_v2": "classifier.", "vgg16": "classifier.",
         "xception": "fc."}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# torchvision's DenseNet keys, as saved (``denselayer1.norm.1.weight``) or as its modules name them (``.norm1.``)
_DENSE = re.compile(
    r"^(.*denselayer\d+)\.(norm|relu|conv)\.?([12])\.(weight|bias|running_mean|running_var|num_batches_tracked)$")


def densenet121(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    from monai.networks.nets import DenseNet121

    return DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=num_classes)


def network(arch: str, num_classes: int) -> nn.Module:
    """The bare network (no input scaling)."""
    if arch == "densenet121":
        return densenet121(num_classes)
    if arch == "mobilenet_v2":
        from .mobilenet_v2 import MobileNetV2

        return MobileNetV2(num_classes)
    if arch == "vgg16":
        from .vgg import VGG16

        return VGG16(num_classes)
    if arch == "xception":
        from .xception import Xception

        return Xception(num_classes)
    raise ValueError(f"unknown baseline {arch!r}; known: {', '.join(ARCHS)}")


class ImageNetInput(nn.Module):
    """``net((x / 255 − mean) / sd)``: raw 0–255 RGB in, logits out."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.register_buffer("mean", 255 * torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", 255 * torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def build(arch: str = "mobilenet_v2", num_classes: int = 4) -> ImageNetInput:
    return ImageNetInput(network(arch, num_classes))


def from_torchvision(arch: str, state: dict) -> dict:
    """A torchvision state dict under this module's names (DenseNet: ``denselayerN.norm.1.…`` or
    ``denselayerN.norm1.…`` → ``denselayerN.layers.norm1.…``, as MONAI's own loader does; the others already
    match)."""
    if arch != "densenet121":
        return dict(state)
    out = {}
    for k, v in state.items():
        m = _DENSE.match(k)
        out[f"{m.group(1)}.layers.{m.group(2)}{m.group(3)}.{m.group(4)}" if m else k] = v
    return out

"""Target classifiers F for the attack (CycleAdvGAN card): an ImageNet-normalising wrapper around a backbone and
the card's two-FC head, for images in [0, 1].

- ``resnet50`` / ``resnet18``: MONAI ``ResNet`` in torchvision's configuration (7×7 stride-2 stem, max pool,
  downsample convolutions without bias): 23,508,032 / 11,176,512 feature parameters, torchvision's counts.
- ``densenet121``: MONAI ``DenseNet121`` features (6,953,856 parameters, torchvision's count).
- ``inception_v3``: ``models.inception_v3`` without the auxiliary head (the card: 224 px, ``aux_logits=False``),
  torchvision's layout and names: 21,785,568 feature parameters (torchvision's count less ``fc`` and ``AuxLogits``).
- ``medvit_s``: MedViT-S from its paper's description (``models.medvit``), 31,136,440 feature parameters.
- ``vit_s``: MONAI ``ViT`` at ViT-S/16 size (384 wide, 12 layers, 6 heads): the earlier stand-in for MedViT-S, kept
  as an extra, separately named model.
- ``small_cnn``: four conv blocks, a CPU stand-in for fixture runs.

Head (the card: "two FC layers", width unstated): Linear(feat → hidden) → ReLU → Dropout(p) → Linear(hidden → 2).
"""

from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ARCHS = ("resnet50", "densenet121", "inception_v3", "medvit_s", "vit_s", "resnet18", "small_cnn")
STAND_INS = {"vit_s": "MONAI ViT-S/16 (not MedViT)", "resnet18": "ResNet-18 (CPU stand-in)",
             "small_cnn": "4-conv CNN (CPU stand-in)"}


class TargetClassifier(nn.Module):
    """x in [0, 1], (N, 3, H, W) → 2 logits. ``features`` maps normalised images to (N, feat)."""

    def __init__(self, features: nn.Module, feat: int, hidden: int = 512, dropout: float = 0.5, num_classes: int = 2):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.features = features
        self.head = nn.Sequential(nn.Linear(feat, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                  nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features((x - self.mean) / self.std))


class _ViTFeatures(nn.Module):
    def __init__(self, img_size: int):
        super().__init__()
        from monai.networks.nets import ViT

        patch = 16 if img_size % 16 == 0 and img_size >= 64 else 8
        self.vit = ViT(in_channels=3, img_size=img_size, patch_size=patch, hidden_size=384, mlp_dim=1536, num_layers=12,
                       num_heads=6, classification=True, num_classes=2, spatial_dims=2, post_activation=None)
        self.vit.classification_head = nn.Identity()

    def forward(self, x):
        return self.vit(x)[0]


def _monai_resnet(depth: int) -> tuple[nn.Module, int]:
    from monai.networks import nets

    net = getattr(nets, f"resnet{depth}")(spatial_dims=2, n_input_channels=3, conv1_t_stride=2, bias_downsample=False,
                                          num_classes=2)
    feat = net.fc.in_features
    net.fc = nn.Identity()
    return net, feat


def small_cnn(width: int = 32) -> tuple[nn.Module, int]:
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True), nn.MaxPool2d(2)]

    layers = block(3, width) + block(width, width) + block(width, 2 * width) + block(2 * width, 2 * width)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()), 2 * width


def build(arch: str, img_size: int = 224, hidden: int = 512, dropout: float = 0.5) -> TargetClassifier:
    if arch in ("resnet50", "resnet18"):
        features, feat = _monai_resnet(int(arch[6:]))
    elif arch == "densenet121":
        from monai.networks.nets import DenseNet121

        net = DenseNet121(spatial_dims=2, in_channels=3, out_channels=2)
        feat = net.class_layers.out.in_features
        net.class_layers.out = nn.Identity()
        features = net
    elif arch == "vit_s":
        features, feat = _ViTFeatures(img_size), 384
    elif arch == "small_cnn":
        features, feat = small_cnn()
    elif arch == "inception_v3":
        from .inception_v3 import InceptionV3

        features, feat = InceptionV3(num_classes=None, aux_logits=False), 2048
    elif arch == "medvit_s":
        from .medvit import medvit_s

        features, feat = medvit_s(num_classes=None), 1024
    else:
        raise ValueError(f"unknown target arch {arch!r}; choose from {', '.join(ARCHS)}")
    return TargetClassifier(features, feat, hidden, dropout)

"""VGG-16 (Simonyan & Zisserman 2015, configuration D) on plain torch blocks, with torchvision's module names.

``features`` is torchvision's: 13 Conv k3 (padding 1, bias) + ReLU, five MaxPool 2/2, indices as in
``torchvision.models.vgg16``, so an ImageNet state dict's ``features.*`` load unchanged. Two heads:

- ``head="gap"`` (default): global average pool → ``classifier`` = Linear(512, C), Keras'
  ``VGG16(include_top=False)`` + GlobalAveragePooling + Dense(C), the fine-tuning setup whose size the ad-lite
  paper prints (147.17 lakh = 14,716,740 parameters for 4 classes: 14,714,688 convolutional + 2,052).
- ``head="classic"``: torchvision's AdaptiveAvgPool(7) → 25088→4096→4096→C with ReLU and Dropout(0.5)
  (138,357,544 parameters for 1000 classes).
"""

from __future__ import annotations

import torch
from torch import nn

CFG_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16(nn.Module):
    def __init__(self, num_classes: int = 1000, head: str = "gap", in_channels: int = 3, dropout: float = 0.5):
        super().__init__()
        if head not in ("gap", "classic"):
            raise ValueError(f"head must be 'gap' or 'classic', not {head!r}")
        layers: list[nn.Module] = []
        cin = in_channels
        for v in CFG_D:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.head = head
        if head == "gap":
            self.classifier = nn.Linear(512, num_classes)
        else:
            self.avgpool = nn.AdaptiveAvgPool2d(7)
            self.classifier = nn.Sequential(
                nn.Linear(512 * 49, 4096), nn.ReLU(True), nn.Dropout(dropout),
                nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(dropout), nn.Linear(4096, num_classes))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        if self.head == "gap":
            return self.classifier(f.mean(dim=(2, 3)))
        return self.classifier(torch.flatten(self.avgpool(f), 1))

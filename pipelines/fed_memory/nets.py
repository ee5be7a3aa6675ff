"""fed-memory's client networks: a backbone (ResNet50, DenseNet121, AlexNet with one skip; or the tiny stand-ins of
the card's learning check) under the common 128-128-4 head of the paper (l. 2560).

Head layers are named so that the card's layers read off the state dict: ``head.fc1`` (feature → 128, layer l−2),
``head.fc2`` (128 → 128, layer l−1: its weight is the 16,384-value analysis layer of the CMEs) and ``head.out``
(128 → 4, layer l). ReLU between them; the softmax is in the cross-entropy loss.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

HEAD_SHARED = ("head.fc2.weight", "head.fc2.bias", "head.out.weight", "head.out.bias")  # averaged when archs differ
ANALYSIS = "head.fc2.weight"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Head(nn.Module):
    def __init__(self, features: int, num_classes: int = 4, hidden: int = 128):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(features, hidden), nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.out(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class AlexNetSkip(nn.Module):
    """The card's resolution of "AlexNet with skip connections": torchvision AlexNet ``features`` with one residual
    around conv4–conv5, x5 = ReLU(conv5(ReLU(conv4(x3)))) + Conv1×1(384→256)(x3), then MaxPool(3, 2),
    AdaptiveAvgPool(6×6) and flatten (9216). ``width`` scales the channels (1.0 = AlexNet; the tiny set uses 1/8)."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        c = [max(4, round(n * width)) for n in (64, 192, 384, 256, 256)]
        self.stem = nn.Sequential(
            nn.Conv2d(3, c[0], 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(c[0], c[1], 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(c[1], c[2], 3, padding=1), nn.ReLU(inplace=True))
        self.conv4, self.conv5 = nn.Conv2d(c[2], c[3], 3, padding=1), nn.Conv2d(c[3], c[4], 3, padding=1)
        self.skip = nn.Conv2d(c[2], c[4], 1)
        self.pool, self.avg = nn.MaxPool2d(3, 2), nn.AdaptiveAvgPool2d(6)
        self.out_features = c[4] * 36

    def forward(self, x):
        x3 = self.stem(x)
        x5 = torch.relu(self.conv5(torch.relu(self.conv4(x3)))) + self.skip(x3)
        return torch.flatten(self.avg(self.pool(x5)), 1)


class _Pooled(nn.Module):
    """A feature extractor followed by ReLU (DenseNet) and global average pooling → (B, C)."""

    def __init__(self, features: nn.Module, out_features: int, relu: bool):
        super().__init__()
        self.features, self.relu, self.out_features = features, relu, out_features

    def forward(self, x):
        x = self.features(x)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(torch.relu(x) if self.relu else x, 1), 1)


def backbone(arch: str) -> nn.Module:
    """The backbone of ``arch`` with ``out_features`` (its pooled feature size), randomly initialised. ResNet50 and
    DenseNet121 are MONAI's 2D builds (torchvision is not a dependency): DenseNet121's features have exactly
    torchvision's 6,953,856 parameters; MONAI's ResNet50 adds a bias to the four downsample convolutions (+3,840 to
    torchvision's 23,508,032 without fc)."""
    if arch == "resnet50":
        from monai.networks.nets import resnet50

        net = resnet50(spatial_dims=2, n_input_channels=3, feed_forward=False, conv1_t_size=7, conv1_t_stride=2,
                       shortcut_type="B")
        net.out_features = 2048
        return net
    if arch == "densenet121":
        from monai.networks.nets import DenseNet121

        return _Pooled(DenseNet121(spatial_dims=2, in_channels=3, out_channels=4).features, 1024, relu=True)
    if arch == "alexnet_skip":
        return AlexNetSkip(1.0)
    if arch == "alexnet_skip_tiny":
        return AlexNetSkip(0.125)
    if arch == "densenet_tiny":
        from monai.networks.nets import DenseNet

        d = DenseNet(spatial_dims=2, in_channels=3, out_channels=4, init_features=16, growth_rate=8,
                     block_config=(2, 2, 2))
        return _Pooled(d.features, d.class_layers.out.in_features, relu=True)
    if arch == "cnn4":
        layers, cin = [], 3
        for cout in (16, 32, 64, 64):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            cin = cout
        return _Pooled(nn.Sequential(*layers), 64, relu=False)
    raise ValueError(f"unknown architecture {arch}")


class ClientNet(nn.Module):
    """Backbone + common head. Takes raw 0–255 RGB and normalises with ImageNet mean/std (the card's default)."""

    def __init__(self, arch: str, num_classes: int = 4):
        super().__init__()
        self.arch = arch
        self.backbone = backbone(arch)
        self.head = Head(self.backbone.out_features, num_classes)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)

    def forward(self, x):
        return self.head(self.backbone((x - self.mean) / self.std))


TORCHVISION_FILES = {"resnet50": "resnet50*.pth", "densenet121": "densenet121*.pth", "alexnet_skip": "alexnet*.pth"}


def load_imagenet(net: ClientNet, weights_dir: Path) -> list[str]:
    """Copy torchvision ImageNet weights (``resnet50-*.pth`` …, the files torchvision downloads) from the user's
    folder into the backbone, through the project's safe loader (weights_only). Returns the tensors loaded; the head
    and AlexNet-skip's new 1×1 skip stay random. A missing file is an EnvError naming the pattern."""
    import re

    from medrun.errors import EnvError

    from .. import training

    pattern = TORCHVISION_FILES.get(net.arch)
    if pattern is None:
        return []
    found = sorted(Path(weights_dir).glob(pattern))
    if not found:
        raise EnvError(f"no {pattern} in {weights_dir} for {net.arch}",
                       fix="put torchvision's ImageNet .pth there, or leave model.weights_dir empty (random init)")
    state = training.load_state(found[0])
    if net.arch == "densenet121":  # torchvision's old key names (norm.1 → norm1), as its own loader fixes them
        rx = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
                        r"([12]\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")
        state = {(rx.sub(lambda m: m.group(1) + m.group(2), k)): v for k, v in state.items()}
        state = {re.sub(r"(denselayer\d+)\.", r"\1.layers.", k[len("features."):]): v  # MONAI's layer names
                 for k, v in state.items() if k.startswith("features.")}
        target = net.backbone.features
    elif net.arch == "alexnet_skip":
        idx = {"features.0": "stem.0", "features.3": "stem.3", "features.6": "stem.6", "features.8": "conv4",
               "features.10": "conv5"}
        state = {idx[k.rsplit(".", 1)[0]] + "." + k.rsplit(".", 1)[1]: v for k, v in state.items()
                 if k.rsplit(".", 1)[0] in idx}
        target = net.backbone
    else:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        target = net.backbone
    own = target.state_dict()
    fit = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    if not fit:
        raise EnvError(f"{found[0]} holds no tensor of {net.arch}'s backbone", fix="pass torchvision's ImageNet file")
    target.load_state_dict(fit, strict=False)
    return sorted(fit)

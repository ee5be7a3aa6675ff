"""Binary classifiers with a CAM-ready head (svd-gradcam card).

``CamNet`` = input normalisation → ``features`` → ``relu`` (the CAM target layer: M ∈ R^{R×P×Q}) → global average
pool → ``head`` → one logit (abnormal). The ReLU is its own, not in-place module, so hooks on it see the map the
card names ("the output of the final ReLU after features.norm5").

- ``densenet169``: MONAI ``DenseNet169`` features (the torchvision layout; R = 1664, P = Q = 7 at 224²) with
  Linear(1664, 1): 12,486,145 parameters, or the optional head Linear(1664, 256)-LeakyReLU-Linear(256, 1).
- ``tiny``: four 3×3 conv layers (conv-ReLU, max-pool after the first two; no BatchNorm, whose running statistics
  do not settle in a 15-step smoke run) — the card's small CNN for learning checks; the last conv has no ReLU of
  its own, so ``relu`` is again the target.

Inputs are raw 0–255 RGB (B, 3, H, W); the network divides by 255 and applies the ImageNet mean/std itself.
``load_torchvision_densenet`` initialises ``features`` from a torchvision ``densenet169`` state dict (the offline
stand-in for ImageNet weights), renaming its ``denselayerN.norm1`` keys to MONAI's ``denselayerN.layers.norm1``
as ``monai.networks.nets.densenet`` does when it downloads them.
"""

from __future__ import annotations

import re

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class CamNet(nn.Module):
    def __init__(self, features: nn.Module, channels: int, head: str = "linear", hidden: int = 256):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)
        self.features = features
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        if head == "linear":
            self.head = nn.Linear(channels, 1)
        elif head == "mlp":
            self.head = nn.Sequential(nn.Linear(channels, hidden), nn.LeakyReLU(), nn.Linear(hidden, 1))
        else:
            raise ValueError(f"head must be 'linear' or 'mlp', got {head!r}")
        self.channels = channels

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The target layer's map M (B, R, P, Q)."""
        return self.relu(self.features((x - self.mean) / self.std))

    def forward_head(self, m: torch.Tensor) -> torch.Tensor:
        """Logits (B, 1) from the target map: GAP then the head (re-run alone by Ablation-CAM)."""
        return self.head(self.pool(m).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def densenet169(head: str = "linear") -> CamNet:
    from monai.networks.nets import DenseNet169

    return CamNet(DenseNet169(spatial_dims=2, in_channels=3, out_channels=1).features, 1664, head)


def tiny_cnn(width: int = 32, head: str = "linear") -> CamNet:
    def block(cin, cout, pool, act=True):
        layers = [nn.Conv2d(cin, cout, 3, padding=1)]
        layers += [nn.ReLU()] if act else []
        layers += [nn.MaxPool2d(2)] if pool else []
        return layers

    w = width
    features = nn.Sequential(*block(3, w // 2, True), *block(w // 2, w, True), *block(w, w, False),
                             *block(w, w, False, act=False))
    return CamNet(features, w, head)


# torchvision's denselayer keys: "norm1.weight" (model.state_dict()) or "norm.1.weight" (the released .pth files)
_TV_KEY = re.compile(
    r"^(.*denselayer\d+)\.(norm|relu|conv)\.?([12])\.(weight|bias|running_mean|running_var|num_batches_tracked)$"
)


def torchvision_to_monai(state: dict) -> dict:
    """torchvision DenseNet keys (``features.denseblock1.denselayer1.norm1.weight``, or ``norm.1.weight`` as in the
    released files) → MONAI (``features.denseblock1.denselayer1.layers.norm1.weight``); other keys unchanged."""
    out = {}
    for k, v in state.items():
        m = _TV_KEY.match(k)
        out[f"{m.group(1)}.layers.{m.group(2)}{m.group(3)}.{m.group(4)}" if m else k] = v
    return out


def load_torchvision_densenet(net: CamNet, state: dict) -> tuple[list[str], list[str]]:
    """Copy the ``features.*`` tensors of a torchvision densenet169 state dict into ``net.features``.

    Returns (missing, mismatched) key lists for the caller to report; copies nothing unless both are empty.
    The ImageNet classifier (1000 classes) is not used: the head stays randomly initialised."""
    state = torchvision_to_monai({k.removeprefix("module."): v for k, v in state.items()})
    own = {f"features.{k}": v for k, v in net.features.state_dict().items()}
    missing = sorted(k for k in own if k not in state)
    wrong = sorted(f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                   for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape))
    if not missing and not wrong:
        net.features.load_state_dict({k.removeprefix("features."): state[k] for k in own})
    return missing, wrong

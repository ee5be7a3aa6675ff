"""AlexNet deep-hashing network with a multi-label head (hamming-retrieval card; the backbone every pairwise
multi-label hashing baseline of that paper shares).

- ``features`` (net_e, Eq. 4): the AlexNet convolution stack with ``in_channels`` inputs (1 for chest X-rays):
  Conv 64 k11 s4 p2, ReLU, MaxPool 3/2; Conv 192 k5 p2, ReLU, MaxPool 3/2; Conv 384 k3 p1, ReLU; Conv 256 k3 p1,
  ReLU; Conv 256 k3 p1, ReLU, MaxPool 3/2 — then ``AdaptiveAvgPool2d(pool)`` (the identity at 224² input, where
  the map is already 6×6) and flatten: z, 256·pool² = 9,216 values.
- ``fc_h`` (Eq. 5): Linear → ``fc_width`` (4096), ReLU, Linear → K; h = tanh(·) ∈ [−1, 1]^K; b = sign(h) at test.
- ``net_c`` (Eq. 12): a separate Linear → ``fc_width``, ReLU, Linear → L head giving multi-label logits.

Initialisation (``init``): ``"torch"`` keeps PyTorch's layer defaults (torchvision's AlexNet does the same);
``"kaiming"`` draws every convolution and hidden Linear He-normal (fan-in, ReLU gain) with zero biases and the two
output Linears Glorot-normal, which keeps activations from shrinking through the eight layers, so codes differ
between images from the first steps instead of after a plateau.

Module indices follow torchvision's ``alexnet`` (``features.0`` … ``features.10``), so :meth:`load_alexnet` takes
a torchvision AlexNet state dict: conv1 is averaged over its RGB inputs, and AlexNet's first FC layer
(``classifier.1``) initialises the first Linear of both heads when ``fc_width`` is 4096. Parameters at the paper's
size (1 channel, K = 16, L = 13): 78,078,685.
"""

from __future__ import annotations

import torch
from torch import nn


class AlexNetHash(nn.Module):
    def __init__(self, code_bits: int = 16, num_labels: int = 13, in_channels: int = 1, fc_width: int = 4096,
                 pool: int = 6, init: str = "torch"):
        super().__init__()
        if init not in ("torch", "kaiming"):
            raise ValueError(f"init must be 'torch' or 'kaiming', not {init!r}")
        self.code_bits, self.num_labels, self.in_channels = code_bits, num_labels, in_channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(pool)
        feat = 256 * pool * pool
        self.fc_h = nn.Sequential(nn.Linear(feat, fc_width), nn.ReLU(inplace=True), nn.Linear(fc_width, code_bits))
        self.net_c = nn.Sequential(nn.Linear(feat, fc_width), nn.ReLU(inplace=True), nn.Linear(fc_width, num_labels))
        if init == "kaiming":
            self.reset_kaiming()

    @torch.no_grad()
    def reset_kaiming(self) -> None:
        """He-normal convolutions and hidden Linears, Glorot-normal output Linears, zero biases."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        for out in (self.fc_h[2], self.net_c[2]):
            nn.init.xavier_normal_(out.weight)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """z = net_e(x), (B, 256·pool²)."""
        return torch.flatten(self.avgpool(self.features(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Real-valued hash codes h = tanh(fc_h(z)), (B, K); binary codes are their signs."""
        return torch.tanh(self.fc_h(self.embed(x)))

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, multi-label logits) from one pass through net_e, for training."""
        z = self.embed(x)
        return torch.tanh(self.fc_h(z)), self.net_c(z)

    @torch.no_grad()
    def load_alexnet(self, state: dict[str, torch.Tensor]) -> list[str]:
        """Copy a torchvision AlexNet state dict into the convolutions (conv1 averaged over RGB to ``in_channels``)
        and, when the shapes allow, AlexNet's first FC layer into the first Linear of both heads. Returns the names
        of this network's tensors that were set; a missing or misshapen conv tensor raises a KeyError/ValueError."""
        done = []
        for i in (0, 3, 6, 8, 10):
            for kind in ("weight", "bias"):
                key = f"features.{i}.{kind}"
                if key not in state:
                    raise KeyError(key)
                src, dst = state[key], getattr(self.features[i], kind)
                if i == 0 and kind == "weight" and src.shape[1] != dst.shape[1]:
                    src = src.mean(1, keepdim=True).expand(-1, dst.shape[1], -1, -1)
                if tuple(src.shape) != tuple(dst.shape):
                    raise ValueError(f"{key}: {tuple(src.shape)} vs {tuple(dst.shape)}")
                dst.copy_(src)
                done.append(key)
        w, b = state.get("classifier.1.weight"), state.get("classifier.1.bias")
        for head in ("fc_h", "net_c"):
            lin = getattr(self, head)[0]
            if w is not None and b is not None and tuple(w.shape) == tuple(lin.weight.shape):
                lin.weight.copy_(w)
                lin.bias.copy_(b)
                done += [f"{head}.0.weight", f"{head}.0.bias"]
        return done

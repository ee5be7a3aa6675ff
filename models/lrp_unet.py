"""U-Nets for layer-wise relevance propagation (unet-lrp card: "Applying LRP on U-Net Architectures").

Networks (MONAI, 2D, ReLU, batch or instance norm, one output channel; the sigmoid is applied outside):
- ``unet``: ``BasicUNet(features=(32, 64, 128, 256, 512, 32))``: stride-1 3×3 convs, max-pool down, transposed-conv
  up, concatenation skips.
- ``resunet``: ``UNet(channels=(32, 64, 128, 256, 512), strides=(2, 2, 2, 2), num_res_units=2, kernel_size=3,
  up_kernel_size=3)``: strided convs and residual units.
- ``unetpp``: ``BasicUNetPlusPlus(features=(32, 32, 64, 128, 256, 32))``: nested dense skips (its list output is
  unwrapped to the one full-resolution map).

LRP (Captum's ``LRP`` engine with the ε-rule everywhere):
- ``lrp_model(net, mask)`` is ``Sequential(net, Sigmoid, MaskedSum)``. ``MaskedSum`` keeps the pixels of one
  selected object (a fixed mask, see ``select_object``) and sums them to one scalar per channel; that masked sum of
  sigmoid outputs is the relevance the propagation starts from. Sigmoid, ReLU, PReLU, LeakyReLU and Dropout pass
  relevance through unchanged (Captum's non-linear list, extended here: a private API, so captum is pinned).
- The residual fix (``residual_fix``): every ``a + b`` in a MONAI ``ResidualUnit`` goes through Captum's
  ``Addition_Module`` (ε-rule: R_a = a/(a+b+ε)·R), instead of plain autograd, which hands the whole R to both
  summands and blows relevance up. Concatenation skips need no change.
- ε-rules are attached to every leaf: Conv2d, ConvTranspose2d, BatchNorm2d, InstanceNorm2d, MaxPool2d, Upsample,
  Identity, Addition_Module and MaskedSum (Captum removes rules after each call, so they are attached per call).
- ``lrp_epsilon_reference`` is a pure-torch LRP-ε for a chain of Conv2d/Linear/ReLU layers ending in a sum, the
  reference Captum is checked against (same ε convention: z + ε·sign(z), sign(0) = 1).
- ``log_scale`` is the paper's signed thresholded log transform (Eq. 2): f_pos(x) = log(max(t, x)/t),
  f_neg(x) = −log(|min(−t, x)|/t), R_scaled = f_pos + f_neg; values in (−t, t) map to 0.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

ARCHS = ("unet", "resunet", "unetpp")
NORMS = ("batch", "instance")
FEATURES = {
    "unet": (32, 64, 128, 256, 512, 32),
    "resunet": (32, 64, 128, 256, 512),
    "unetpp": (32, 32, 64, 128, 256, 32),
}


class Segmenter(nn.Module):
    """One of the card's three MONAI U-Nets; ``forward`` returns logits (N, out_channels, H, W)."""

    def __init__(self, arch: str = "unet", norm: str = "batch", in_channels: int = 1, out_channels: int = 1,
                 features: tuple[int, ...] | None = None):
        super().__init__()
        from monai.networks.nets import BasicUNet, BasicUNetPlusPlus, UNet

        if arch not in ARCHS:
            raise ValueError(f"unknown arch '{arch}' (known: {', '.join(ARCHS)})")
        if norm not in NORMS:
            raise ValueError(f"unknown norm '{norm}' (known: {', '.join(NORMS)})")
        f = tuple(features or FEATURES[arch])
        self.arch, self.norm = arch, norm
        if arch == "unet":
            self.net = BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels, features=f,
                                 act="relu", norm=norm)
        elif arch == "resunet":
            self.net = UNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels, channels=f,
                            strides=(2,) * (len(f) - 1), num_res_units=2, kernel_size=3, up_kernel_size=3,
                            act="relu", norm=norm)
        else:
            self.net = BasicUNetPlusPlus(spatial_dims=2, in_channels=in_channels, out_channels=out_channels,
                                         features=f, act="relu", norm=norm)

    @property
    def divisor(self) -> int:
        """Input sides must be multiples of this (four down-samplings)."""
        return 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        return y[0] if isinstance(y, (list, tuple)) else y


# -- the residual fix ------------------------------------------------------------------------------------------
def _residual_unit_cls():
    from captum.attr._utils.custom_modules import Addition_Module
    from monai.networks.blocks.convolutions import ResidualUnit

    class LRPResidualUnit(ResidualUnit):
        """MONAI ResidualUnit whose ``conv(x) + residual(x)`` is an ``Addition_Module`` (an LRP layer)."""

        def forward(self, x):
            return self.add(self.conv(x), self.residual(x))

    return ResidualUnit, LRPResidualUnit, Addition_Module


def residual_fix(net: nn.Module, on: bool = True) -> int:
    """Switch every MONAI ResidualUnit in ``net`` to (``on``) or from the Addition_Module form, in place.
    Parameters and state dict are untouched. Returns the number of units switched."""
    base, fixed, addition = _residual_unit_cls()
    n = 0
    for m in list(net.modules()):
        if on and type(m) is base:
            m.__class__ = fixed
            m.add = addition()
            n += 1
        elif not on and type(m).__name__ == "LRPResidualUnit":
            m.__class__ = base
            if "add" in m._modules:
                del m._modules["add"]
            n += 1
    return n


# -- the LRP target: Sequential(net, Sigmoid, MaskedSum) -------------------------------------------------------
class MaskedSum(nn.Module):
    """Keeps the pixels of ``mask`` (N, 1 or C, H, W) and sums over H×W: (N, C, H, W) → (N, C)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.mask).sum(dim=(2, 3))


def select_object(prob: np.ndarray, which: str | int = "largest", threshold: float = 0.5) -> np.ndarray:
    """Binarise a probability map (H, W) at ``threshold`` and keep one connected component (8-connectivity):
    the largest, or the one with label ``which`` (skimage.measure.label's raster order, from 1). Empty if none."""
    from skimage.measure import label

    lab = label(np.asarray(prob) > threshold, connectivity=2)
    if lab.max() == 0:
        return np.zeros(lab.shape, dtype=bool)
    if which == "largest":
        counts = np.bincount(lab.ravel())
        counts[0] = 0
        return lab == int(counts.argmax())
    k = int(which)
    if not 1 <= k <= lab.max():
        raise ValueError(f"object {k} does not exist: the prediction has {lab.max()} objects (1–{lab.max()})")
    return lab == k


def n_objects(prob: np.ndarray, threshold: float = 0.5) -> int:
    from skimage.measure import label

    return int(label(np.asarray(prob) > threshold, connectivity=2).max())


def lrp_model(net: nn.Module, mask: torch.Tensor) -> nn.Sequential:
    return nn.Sequential(net, nn.Sigmoid(), MaskedSum(mask))


_NON_LINEAR = (nn.ReLU, nn.PReLU, nn.LeakyReLU, nn.Sigmoid, nn.Dropout)


def _register_non_linear() -> None:
    from captum.attr._core import lrp

    for cls in _NON_LINEAR:
        if cls not in lrp.SUPPORTED_NON_LINEAR_LAYERS:
            lrp.SUPPORTED_NON_LINEAR_LAYERS.append(cls)


def attach_rules(model: nn.Module, epsilon: float = 1e-9) -> None:
    """An ε-rule on every leaf that is not a pass-through non-linearity (Captum deletes them after each call)."""
    from captum.attr._utils.lrp_rules import EpsilonRule

    _register_non_linear()
    for m in model.modules():
        if len(list(m.children())) == 0 and not isinstance(m, _NON_LINEAR):
            m.rule = EpsilonRule(epsilon)


def relevance(net: nn.Module, x: torch.Tensor, mask: torch.Tensor, epsilon: float = 1e-9,
              fix: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """LRP-ε relevance of the masked object's summed sigmoid output with respect to the input.

    ``x`` (N, C, H, W), ``mask`` (N, 1, H, W). Returns (R with x's shape, the start value per image (N,)). With
    ``fix`` the residual additions are LRP layers (the paper's fix); without it they are plain autograd sums."""
    from captum.attr import LRP

    net.eval()
    switched = residual_fix(net, on=fix)
    try:
        model = lrp_model(net, mask.to(x.dtype)).eval()
        attach_rules(model, epsilon)
        with torch.no_grad():
            start = model(x)[:, 0]
        r = LRP(model).attribute(x.clone().requires_grad_(True), target=0)
    finally:
        if fix and switched:
            residual_fix(net, on=False)
    return r.detach(), start.detach()


def layer_names(net: nn.Module) -> list[str]:
    """Names of the layers of a ``Segmenter`` one can explain at (``explain.layer``): the MONAI net's leaf layers
    that carry an LRP rule (convolutions, norms, pools; not the pass-through activations), e.g.
    ``down_4.convs.conv_1.conv`` (BasicUNet's bottleneck) or ``model.1.submodule.1.conv.unit1.conv``."""
    inner = net.net if isinstance(net, Segmenter) else net
    return [k for k, m in inner.named_modules()
            if k and len(list(m.children())) == 0 and not isinstance(m, _NON_LINEAR)]


def layer_relevance(net: nn.Module, x: torch.Tensor, mask: torch.Tensor, layer: str, epsilon: float = 1e-9,
                    fix: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Like ``relevance`` but at the output of the block named ``layer`` (Captum ``LayerLRP``): (N, C_layer, h, w)."""
    from captum.attr import LayerLRP

    names = layer_names(net)
    if layer not in names:
        raise KeyError(layer)
    net.eval()
    switched = residual_fix(net, on=fix)
    try:
        model = lrp_model(net, mask.to(x.dtype)).eval()
        attach_rules(model, epsilon)
        with torch.no_grad():
            start = model(x)[:, 0]
        target = (net.net if isinstance(net, Segmenter) else net).get_submodule(layer)
        r = LayerLRP(model, target).attribute(x.clone().requires_grad_(True), target=0)
    finally:
        if fix and switched:
            residual_fix(net, on=False)
    return r.detach(), start.detach()


def log_scale(r, t: float = 0.1):
    """The paper's signed, thresholded log transform of raw relevance (numpy or torch, elementwise)."""
    if isinstance(r, torch.Tensor):
        pos = torch.log(torch.clamp(r, min=t) / t)
        neg = -torch.log(torch.abs(torch.clamp(r, max=-t)) / t)
        return pos + neg
    r = np.asarray(r, dtype=np.float64)
    return np.log(np.maximum(t, r) / t) - np.log(np.abs(np.minimum(-t, r)) / t)


# -- a pure-torch LRP-ε reference --------------------------------------------------------------------------------
def lrp_epsilon_reference(layers: list[nn.Module], x: torch.Tensor, epsilon: float = 1e-9) -> torch.Tensor:
    """LRP-ε through ``layers`` (Conv2d, Linear, MaxPool2d, a final reduction to one score per image …; ReLU
    passes relevance through). The output's relevance is the output itself.

    R_j = Σ_k a_j w_jk / (z_k + ε·sign(z_k)) · R_k, evaluated per layer with the gradient trick
    (c = ∂(z·s)/∂a with s = R/(z + ε sign z), R_prev = a·c)."""
    acts = [x.detach()]
    for layer in layers:
        acts.append(layer(acts[-1]).detach())
    rel = acts[-1].clone()
    for layer, a in zip(reversed(layers), reversed(acts[:-1]), strict=True):
        if isinstance(layer, nn.ReLU):
            continue
        a = a.clone().requires_grad_(True)
        z = layer(a)
        sign = torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))
        s = (rel / (z + epsilon * sign)).detach()
        (c,) = torch.autograd.grad((z * s).sum(), a)
        rel = (a * c).detach()
    return rel


# -- relevance statistics ----------------------------------------------------------------------------------------
def relevance_stats(r: np.ndarray, obj: np.ndarray, start: float, dilate_px: int = 10) -> dict:
    """max |R|, conservation (Σ R / start value), and focus: the share of positive relevance inside the object
    dilated by ``dilate_px`` (a disk), beside that region's share of the image area. ``r`` (H, W) summed over
    channels, ``obj`` (H, W) bool."""
    from scipy.ndimage import binary_dilation

    r = np.asarray(r, dtype=np.float64)
    obj = np.asarray(obj, dtype=bool)
    if dilate_px > 0 and obj.any():
        yy, xx = np.mgrid[-dilate_px:dilate_px + 1, -dilate_px:dilate_px + 1]
        region = binary_dilation(obj, structure=(yy ** 2 + xx ** 2) <= dilate_px ** 2)
    else:
        region = obj
    pos = np.clip(r, 0, None)
    total = float(pos.sum())
    return {
        "max_abs_r": float(np.abs(r).max()),
        "sum_r": float(r.sum()),
        "start": float(start),
        "conservation": float(r.sum() / start) if start else float("nan"),
        "focus": float(pos[region].sum() / total) if total > 0 else float("nan"),
        "area_share": float(region.mean()),
        "object_px": int(obj.sum()),
    }

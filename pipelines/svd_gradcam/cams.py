"""Class activation maps for a one-logit classifier: SVD-Grad-CAM (the paper) and the card's baselines.

Gradients (``gradient``): by default taken before the target ReLU (see ``activations_and_grads``).

Every method takes ``net`` (logits (B, 1)), a target ``layer`` (an ``nn.Module`` inside ``net``), a batch ``x``
and ``sign`` (B,) ∈ {+1, −1}: the class score is Y^c = sign · logit (the card: −logit explains "normal"). Each
returns the low-resolution map L (B, P, Q) after the ReLU of Σ_k w_k M^k; ``upsample`` then resizes it bilinearly
to the input and min-max normalises each map to [0, 1] (a constant map becomes 0).

- ``gradcam``: w_k = mean of G^k (Selvaraju et al.); with ``gradient="map"`` checked against captum ``LayerGradCam``.
- ``svd``: the card's SVD-Grad-CAM; each channel's P×Q gradient map is decomposed (``torch.linalg.svd``, batched,
  in float64) and w_k is the mean of (a) U_n, (b) V_n^T, (c) U_n V_n^T or (d) U_n Σ_n V_n^T (variant ``u``, ``v``,
  ``uv``, ``usv``; ``usv`` is the paper's final method). ``literal_eq`` uses the printed Eq. 7–10 instead: the sum
  of the first n columns divided by n·P. With n = min(P, Q), ``usv`` equals Grad-CAM.
- ``cam``: w_k = the linear head's weight (Zhou et al.); only for a single Linear head after GAP (equal to Grad-CAM
  with ``gradient="map"``).
- ``gradcampp``: Grad-CAM++ (Chattopadhay et al.) with the exp(score) closed form used by common implementations.
- ``smooth``: Smooth-Grad-CAM, the mean Grad-CAM map over ``n`` copies of x + N(0, σ²), σ = ``sigma``·(max − min)
  of each image.
- ``score``: Score-CAM; each channel upsampled and normalised to [0, 1] masks the input, w_k = σ(Y^c(x ⊙ M_k)).
- ``ablation``: Ablation-CAM, w_k = (Y − Y_k)/Y with channel k set to 0; the differences Y − Y_k come from captum
  (``FeatureAblation`` on the head alone when the target is the net's own ``relu`` (only the head needs re-running),
  ``LayerFeatureAblation`` on the whole net for any other layer).
- ``eigen``: Eigen-CAM, the projection of the activations (PQ × R, not centred, as in Muhammad & Yeasin) on their
  first right singular vector, its sign chosen so the projection sums to ≥ 0; class-agnostic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

METHODS = ("cam", "gradcam", "gradcampp", "smooth", "ablation", "score", "eigen", "svd")
VARIANTS = ("u", "v", "uv", "usv")


def _capture(net: nn.Module, layer: nn.Module, x: torch.Tensor, with_input: bool = False):
    """(logits (B,), activations M[, the layer's input]) with M kept in the graph."""
    store = {}

    def hook(_m, inputs, out):
        store["a"], store["in"] = out, inputs[0] if inputs else None

    h = layer.register_forward_hook(hook)
    try:
        logits = net(x).reshape(len(x))
    finally:
        h.remove()
    return (logits, store["a"], store["in"]) if with_input else (logits, store["a"])


GRADIENTS = ("pre_relu", "map")


def activations_and_grads(net, layer, x, sign, gradient: str = "pre_relu"):
    """M (B, R, P, Q), G (same shape), Y^c (B,).

    ``gradient="map"``: G = ∂Y^c/∂M. ``"pre_relu"`` (default) when ``layer`` is a ReLU: G = ∂Y^c/∂(its input),
    i.e. ∂Y^c/∂M masked by M > 0 — what Grad-CAM code computes on torchvision's DenseNet, whose in-place final
    ReLU makes a hook on ``features.norm5`` see the ReLU output as activations and the pre-ReLU gradient. (At the
    ReLU output of a GAP + linear head ∂Y^c/∂M^k is constant, so rank-n filtering would change nothing.) For any
    other layer both are the same."""
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits, a, inp = _capture(net, layer, x, with_input=True)
        score = sign.to(logits) * logits
        wrt = inp if gradient == "pre_relu" and isinstance(layer, nn.ReLU) and inp is not None else a
        (g,) = torch.autograd.grad(score.sum(), wrt)
    return a.detach(), g.detach(), score.detach()


def _combine(weights: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return F.relu((weights[:, :, None, None] * a).sum(1))


def gradcam(net, layer, x, sign, gradient: str = "pre_relu"):
    a, g, _ = activations_and_grads(net, layer, x, sign, gradient)
    return _combine(g.mean((2, 3)), a)


def svd_weights(g: torch.Tensor, n: int = 1, variant: str = "usv", literal_eq: bool = False) -> torch.Tensor:
    """w (B, R) from gradients (B, R, P, Q) per the card's options (a)–(d)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    P, Q = g.shape[-2:]
    n = max(1, min(n, min(P, Q)))
    u, s, vh = torch.linalg.svd(g.double(), full_matrices=False)  # u (…, P, k), s (…, k), vh (…, k, Q)
    un, sn, vhn = u[..., :, :n], s[..., :n], vh[..., :n, :]
    if variant == "u":
        w = un.mean((-2, -1))
    elif variant == "v":
        w = vhn.mean((-2, -1))
    else:
        m = un @ vhn if variant == "uv" else (un * sn[..., None, :]) @ vhn
        w = m[..., :, :n].sum((-2, -1)) / (n * P) if literal_eq else m.mean((-2, -1))
    return w.to(g.dtype)


def svd_gradcam(net, layer, x, sign, n: int = 1, variant: str = "usv", literal_eq: bool = False,
                gradient: str = "pre_relu"):
    a, g, _ = activations_and_grads(net, layer, x, sign, gradient)
    return _combine(svd_weights(g, n, variant, literal_eq), a)


def cam(net, layer, x, sign):
    head = getattr(net, "head", None)
    if not isinstance(head, nn.Linear) or layer is not getattr(net, "relu", None):
        raise ValueError("CAM needs a single Linear head after global average pooling of the target layer")
    with torch.no_grad():
        _, a = _capture(net, layer, x)
        w = sign.to(a)[:, None] * head.weight[0][None, :]
    return _combine(w, a)


def gradcampp(net, layer, x, sign, gradient: str = "pre_relu"):
    a, g, _ = activations_and_grads(net, layer, x, sign, gradient)
    g2, g3 = g**2, g**3
    denom = 2 * g2 + a.sum((2, 3), keepdim=True) * g3
    alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    return _combine((alpha * F.relu(g)).sum((2, 3)), a)


def smooth_gradcam(net, layer, x, sign, n: int = 25, sigma: float = 0.15, generator: torch.Generator | None = None,
                   gradient: str = "pre_relu"):
    span = (x.amax((1, 2, 3)) - x.amin((1, 2, 3))).view(-1, 1, 1, 1)
    total = None
    for _ in range(n):
        noisy = x + torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device) * sigma * span
        m = gradcam(net, layer, noisy, sign, gradient)
        total = m if total is None else total + m
    return total / n


def score_cam(net, layer, x, sign, batch: int = 64):
    with torch.no_grad():
        _, a = _capture(net, layer, x)
        masks = normalise(F.interpolate(a, size=x.shape[-2:], mode="bilinear", align_corners=False))  # (B, R, H, W)
        weights = torch.empty(a.shape[:2], dtype=a.dtype, device=a.device)
        for i in range(len(x)):
            for k0 in range(0, a.shape[1], batch):
                m = masks[i, k0:k0 + batch, None]  # (b, 1, H, W)
                scores = sign[i].to(a) * net(x[i:i + 1] * m).reshape(-1)
                weights[i, k0:k0 + batch] = torch.sigmoid(scores)
    return _combine(weights, a)


def ablation_cam(net, layer, x, sign, batch: int = 64):
    from captum.attr import FeatureAblation, LayerFeatureAblation

    s = sign.to(x)
    with torch.no_grad():
        y, a = _capture(net, layer, x)
        y = s * y
        R = a.shape[1]
        channel_mask = torch.arange(R, device=a.device).view(1, R, 1, 1)
        def signed(out):  # captum stacks perturbations along the batch: repeat the signs to match
            out = out.reshape(-1)
            return s.repeat(len(out) // len(s)) * out

        if layer is getattr(net, "relu", None) and hasattr(net, "forward_head"):
            diff = FeatureAblation(lambda m: signed(net.forward_head(m))).attribute(
                a, baselines=0.0, feature_mask=channel_mask, perturbations_per_eval=batch)
        else:
            diff = LayerFeatureAblation(lambda inp: signed(net(inp)), layer).attribute(
                x, layer_baselines=0.0, layer_mask=channel_mask, perturbations_per_eval=batch)
        w = diff[:, :, 0, 0] / torch.where(y.abs() > 1e-12, y, torch.full_like(y, 1e-12))[:, None]
    return _combine(w, a)


def eigen_cam(net, layer, x, sign=None):
    with torch.no_grad():
        _, a = _capture(net, layer, x)
        B, R, P, Q = a.shape
        flat = a.permute(0, 2, 3, 1).reshape(B, P * Q, R).double()
        _, _, vh = torch.linalg.svd(flat, full_matrices=False)
        proj = flat @ vh[:, 0, :, None]  # (B, PQ, 1)
        proj = proj * torch.where(proj.sum(1, keepdim=True) < 0, -1.0, 1.0)
    return F.relu(proj.reshape(B, P, Q)).to(a.dtype)


def compute(method: str, net, layer, x, sign, *, n: int = 1, variant: str = "usv", literal_eq: bool = False,
            smooth_n: int = 25, smooth_sigma: float = 0.15, batch: int = 64, generator=None,
            gradient: str = "pre_relu") -> torch.Tensor:
    """The low-resolution map (B, P, Q) of ``method`` (one of ``METHODS``)."""
    if method == "svd":
        return svd_gradcam(net, layer, x, sign, n, variant, literal_eq, gradient)
    if method == "smooth":
        return smooth_gradcam(net, layer, x, sign, smooth_n, smooth_sigma, generator, gradient)
    if method in ("score", "ablation"):
        return (score_cam if method == "score" else ablation_cam)(net, layer, x, sign, batch)
    if method in ("gradcam", "gradcampp"):
        return (gradcam if method == "gradcam" else gradcampp)(net, layer, x, sign, gradient)
    fn = {"cam": cam, "eigen": eigen_cam}.get(method)
    if fn is None:
        raise ValueError(f"unknown CAM method {method!r}; one of {', '.join(METHODS)}")
    return fn(net, layer, x, sign)


def normalise(m: torch.Tensor) -> torch.Tensor:
    """Min-max to [0, 1] over the last two axes; constant maps become 0."""
    lo = m.amin((-2, -1), keepdim=True)
    span = m.amax((-2, -1), keepdim=True) - lo
    return torch.where(span > 0, (m - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(m))


def upsample(low: torch.Tensor, size) -> torch.Tensor:
    """(B, P, Q) → (B, H, W): bilinear, then min-max per map."""
    return normalise(F.interpolate(low[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0])

"""endo-depth's differentiable pieces: shear, stereo warping, 3×3 SSIM, the photometric and smoothness losses,
input masking, and the median-scaled AbsRel used for model selection (torch, batched)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def shear(x: torch.Tensor, degrees) -> torch.Tensor:
    """Horizontal shear of (B, C, H, W) by ``degrees`` (a number or a (B,) tensor) about the image centre: the pixel
    at row y is taken from column x − tan(θ)·(y − H/2) (bilinear, border values outside)."""
    b, _, h, w = x.shape
    t = torch.tan(torch.as_tensor(degrees, dtype=x.dtype, device=x.device) * math.pi / 180).expand(b)
    theta = torch.zeros(b, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = 1
    theta[:, 1, 1] = 1
    theta[:, 0, 1] = -t * h / w  # normalised coordinates: x_n shift = tan θ · (H/W) · y_n
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def warp_right_to_left(right: torch.Tensor, disp_px: torch.Tensor) -> torch.Tensor:
    """Î_l(u, v) = I_r(u − disp(u, v), v): (B, C, H, W) right view, (B, 1, H, W) disparity in pixels."""
    b, _, h, w = right.shape
    ys, xs = torch.meshgrid(torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=right.device, dtype=right.dtype),
                            torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=right.device, dtype=right.dtype),
                            indexing="ij")
    gx = xs.expand(b, h, w) - 2 * disp_px[:, 0] / w
    grid = torch.stack([gx, ys.expand(b, h, w)], -1)
    return F.grid_sample(right, grid, mode="bilinear", padding_mode="border", align_corners=False)


def ssim(x: torch.Tensor, y: torch.Tensor, c1: float = 0.01**2, c2: float = 0.03**2) -> torch.Tensor:
    """Per-pixel SSIM over 3×3 windows (Monodepth2's form: mean filters, reflection padding), images in [0, 1]."""
    x, y = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x, mu_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    sxx = F.avg_pool2d(x * x, 3, 1) - mu_x**2
    syy = F.avg_pool2d(y * y, 3, 1) - mu_y**2
    sxy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))


def photometric(target: torch.Tensor, recon: torch.Tensor, alpha: float = 0.85, beta: float = 0.15) -> torch.Tensor:
    """SCL = mean(α(1 − SSIM)/2 + β|I − Î|) (the paper's +SSIM read as the dissimilarity)."""
    return (alpha * (1 - ssim(target, recon)) / 2 + beta * (target - recon).abs()).mean()


def smoothness(disp: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """ESL = mean(|∂x d*| e^{−|∂x I|} + |∂y d*| e^{−|∂y I|}), d* = d / mean(d) per image, |∂I| averaged over colour."""
    d = disp / (disp.mean((2, 3), keepdim=True) + 1e-7)
    dx, dy = (d[..., :, :-1] - d[..., :, 1:]).abs(), (d[..., :-1, :] - d[..., 1:, :]).abs()
    ix = (image[..., :, :-1] - image[..., :, 1:]).abs().mean(1, keepdim=True)
    iy = (image[..., :-1, :] - image[..., 1:, :]).abs().mean(1, keepdim=True)
    return (dx * torch.exp(-ix)).mean() + (dy * torch.exp(-iy)).mean()


def patch_mask(b: int, h: int, w: int, ratio: float, patch: int = 16, generator=None, device=None) -> torch.Tensor:
    """(B, 1, H, W) of 1 with round(ratio · patches) random patch×patch patches per image set to 0."""
    gh, gw = math.ceil(h / patch), math.ceil(w / patch)
    k = round(ratio * gh * gw)
    keep = torch.ones(b, gh * gw, device=device)
    if k:
        idx = torch.rand(b, gh * gw, generator=generator, device=device).argsort(1)[:, :k]
        keep.scatter_(1, idx, 0.0)
    m = keep.reshape(b, 1, gh, gw).repeat_interleave(patch, 2).repeat_interleave(patch, 3)
    return m[..., :h, :w]


def scaled_abs_rel(pred_depth: torch.Tensor, gt: torch.Tensor, max_depth: float | None = None) -> torch.Tensor:
    """Per image (B,): AbsRel after median scaling on the valid GT pixels (gt > 0, ≤ max_depth); NaN if none. For
    model selection only (torch.median takes the lower of the middle two; the reported metrics use metrics.depth)."""
    out = []
    for p, g in zip(pred_depth.flatten(1), gt.flatten(1), strict=True):
        v = g > 0
        if max_depth is not None:
            v &= g <= max_depth
        if not v.any():
            out.append(torch.tensor(float("nan"), device=g.device))
            continue
        p, g = p[v], g[v]
        p = p * (g.median() / p.median())
        out.append(((g - p).abs() / g).mean())
    return torch.stack(out)

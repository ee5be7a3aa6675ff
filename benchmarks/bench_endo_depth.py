"""endo-depth predict frames/s at 256×320 (issue 18: "endo-depth predict frames/s at 256×320").

Frames of 256×320 (H×W, the hamlyn fixture's synthetic scenes rendered at that size) go through what ``predict``
does per frame: the 5 % side crop, resize to the network input, the sheared second view, DVTwin at the card's size
(p 4, D 384, 4 blocks, 15.25 M parameters), upsampling the disparity back and converting to a 16-bit depth array.
Two inputs: the pipeline's 224² resize, and the frame at its own 256×320 (DVTwin takes any multiple of 32). Batch 1
and 2, no_grad, float32, best of 2 after a warm-up call. The open3d point cloud is timed separately (per frame).
"""

from __future__ import annotations

import os
import platform

import numpy as np
import torch
import torch.nn.functional as F
from _timing import best

from medrun.datasets.hamlyn import stereo_scene
from medrun.models.dvtwin import DVTwin
from medrun.pipelines.endo_depth import method as M
from medrun.pipelines.endo_depth.pipeline import crop_cols, to_input
from medrun.pipelines.endo_depth.predict import point_cloud_ply

H, W = 256, 320


def frames(n: int):
    rng = np.random.default_rng(0)
    return [stereo_scene(rng, H, W)[0] for _ in range(n)]


def predict(net, imgs, size):
    crops = [crop_cols(im, 0.05) for im in imgs]
    x = torch.stack([to_input(c, size[0]) if size[0] == size[1] else
                     F.interpolate(torch.from_numpy(c).permute(2, 0, 1).float()[None] / 255, size=size,
                                   mode="bilinear", align_corners=False)[0] for c in crops])
    with torch.no_grad():
        disp = net(x, M.shear(x, 5.0))
    out = []
    for c, d in zip(crops, disp, strict=True):
        d = F.interpolate(d[None], size=c.shape[:2], mode="bilinear", align_corners=False)[0, 0].numpy()
        out.append(np.clip(np.round(30 / np.clip(d, 1e-6, None)), 0, 65535).astype(np.uint16))
    return out


def main() -> None:
    torch.manual_seed(0)
    net = DVTwin().eval()
    imgs = frames(4)
    print("## endo-depth: predict frames/s at 256×320 (benchmarks/bench_endo_depth.py)\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads). DVTwin at the card's size, "
          f"{sum(p.numel() for p in net.parameters()):,} parameters; crop, resize, sheared view, forward, depth array; "
          "best of 2.\n")
    print("| network input | batch | frames/s | s/frame |")
    print("|---|---:|---:|---:|")
    for size in ((224, 224), (H, W)):
        for b in (1, 2):
            t = best(lambda b=b, size=size: predict(net, imgs[:b], size), repeats=2, warmup=True)
            print(f"| {size[0]}×{size[1]} | {b} | {b / t:.2f} | {t / b:.3f} |")
    img = imgs[0]
    depth = np.full((H, W), 60.0, np.float32)
    t = best(lambda: point_cloud_ply(img, depth, float(W)), repeats=3)
    print(f"\nopen3d coloured point cloud (.ply bytes, {H * W:,} points): {t * 1000:.1f} ms per frame.")


if __name__ == "__main__":
    main()

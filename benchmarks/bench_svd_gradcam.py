"""Maps per second for each svd-gradcam explanation method on DenseNet-169 at 224² (batch 1, CPU).

Side by side with captum's ``LayerGradCam`` for Grad-CAM. The ``grad-cam`` package (pytorch-grad-cam) would be the
reference for the other methods, but it imports torchvision (and cv2, ttach), which does not import beside medrun's
CPU torch; the script says so instead of timing it. Score-CAM needs one forward per channel (1664 masked copies per
image): it is timed on 2 of its 26 batches of 64 and extrapolated, and the table says so.

Prints a Markdown section (heading, machine, table). Run directly or through ``benchmarks/run.py``.
"""

from __future__ import annotations

import math
import os
import platform

import _timing
import torch

SIZE = 224
REPEATS = 3



def best(fn, repeats: int = REPEATS) -> float:
    return _timing.best(fn, repeats)


def main() -> None:
    from captum.attr import LayerGradCam

    from medrun.models.camnet import densenet169
    from medrun.pipelines.svd_gradcam import cams

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    net = densenet169().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.rand(1, 3, SIZE, SIZE) * 255
    s = torch.ones(1)
    layer = net.relu
    rows = []

    def add(name, secs, ref=None, note=""):
        rows.append((name, secs, ref, note))

    add("Grad-CAM", best(lambda: cams.gradcam(net, layer, x, s, "map")),
        best(lambda: LayerGradCam(lambda i: net(i).reshape(-1), layer).attribute(x)), "captum LayerGradCam")
    add("SVD-Grad-CAM (d), n = 1", best(lambda: cams.svd_gradcam(net, layer, x, s, n=1)))
    add("SVD-Grad-CAM (c), n = 1", best(lambda: cams.svd_gradcam(net, layer, x, s, n=1, variant="uv")))
    add("CAM", best(lambda: cams.cam(net, layer, x, s)))
    add("Grad-CAM++", best(lambda: cams.gradcampp(net, layer, x, s)))
    add("Eigen-CAM", best(lambda: cams.eigen_cam(net, layer, x, s)))
    add("Ablation-CAM (head re-run, captum)", best(lambda: cams.ablation_cam(net, layer, x, s, batch=64)))
    add("Smooth-Grad-CAM (25 copies)", best(lambda: cams.smooth_gradcam(net, layer, x, s, n=25), repeats=1))
    # Score-CAM: the feature pass plus 26 batches of 64 masked copies; time 2 batches and scale
    with torch.no_grad():
        a = net.forward_features(x)
        masks = cams.normalise(torch.nn.functional.interpolate(a, size=(SIZE, SIZE), mode="bilinear"))[0, :64, None]
        t_feat = best(lambda: net(x), 1)
        t_batch = best(lambda: net(x * masks), 2)
    add("Score-CAM", t_feat + t_batch * math.ceil(1664 / 64), None, "extrapolated from 2 of 26 mask batches")
    batch8 = torch.rand(8, 3, SIZE, SIZE) * 255
    s8 = torch.ones(8)
    add("SVD-Grad-CAM (d), batch of 8 (per map)", best(lambda: cams.svd_gradcam(net, layer, batch8, s8), 2) / 8)

    import captum

    load = os.getloadavg()[0]
    print(f"## svd-gradcam: explanation maps per second, DenseNet-169 at {SIZE}²\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU, {platform.system()}, Python "
          f"{platform.python_version()}, torch {torch.__version__}, captum {captum.__version__}; load average "
          f"{load:.1f} when the run ended (the machine is shared with other jobs). Batch 1 unless stated, random init "
          f"(speed does not depend on the weights), best of {REPEATS} (Smooth: 1 run).\n")
    print("| method | medrun s/map | maps/s | × Grad-CAM time | reference s/map | reference maps/s | reference |")
    print("|---|---:|---:|---:|---:|---:|---|")
    base = rows[0][1]
    for name, secs, ref, note in rows:
        r = f"{ref:.3f} | {1 / ref:.3f}" if ref else "— | —"
        print(f"| {name} | {secs:.3f} | {1 / secs:.4f} | {secs / base:.2f} | {r} | {note} |")
    try:
        import pytorch_grad_cam  # noqa: F401

        print("\n`grad-cam` imported: add its timings here.")
    except Exception as e:  # torchvision / cv2 / ttach missing
        print(f"\n`grad-cam` (pytorch-grad-cam 1.5.7) does not import here ({e.__class__.__name__}: {e}); it needs "
              "torchvision, opencv and ttach, and torchvision does not import beside this CPU torch build, so there is "
              "no side-by-side figure for Grad-CAM++, Score-CAM, Ablation-CAM and Eigen-CAM.")


if __name__ == "__main__":
    main()

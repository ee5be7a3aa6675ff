"""dense-unet-teachers: sliding-window inference per 128³ volume against MONAI's UNet of similar size, and the peak
memory of one training step at the manifest's patch size (dense-unet-teachers.md, issue 17 "Performance").

Standalone: ``python benchmarks/bench_dense_unet_teachers.py`` prints a Markdown section (heading, machine, table).
Models, all with random weights (timings do not depend on them), two input channels (the fusion model) and 4
classes: the 3D-DenseUNet at the manifest's size (F = 32, depth 3) with the paper's attention up-blocks and with the
released code's plain decoder, and MONAI's ``UNet`` (channels 32-64-128, strides 2-2, 3 residual units: 1.71 M
parameters, the nearest of its configurations to ours). Inference: one 128³ z-scored volume through
``monai.inferers.sliding_window_inference`` with 32³ windows (the training patch), batch of 4 windows, mode
constant, without overlap (64 windows): the time grows linearly with the windows, and the card's step 8 (75 %
overlap) means 2,197 windows (34× as many; 50 % overlap 343, 5.4×), too long to measure on this shared CPU for
the attention model, so the table gives the measured time and its extrapolation to step 8.
Training step: one forward + backward + Adam step on a batch of 8 random 32³ patches (the manifest's). Each
configuration runs in a fresh subprocess with one intra-op thread; times are the best of ``REPEATS``; memory is the
peak resident set size during the measured work minus the resident size before it.
"""

from __future__ import annotations

from _timing import machine, run_child

REPEATS = 1
THREADS = 1

CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(THREADS)
which, task = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
if which == "monai-unet":
    from monai.networks.nets import UNet
    net = UNet(3, 2, 4, channels=(32, 64, 128), strides=(2, 2), num_res_units=3)
else:
    from medrun.models.dense_unet3d import DenseUNet3D
    net = DenseUNet3D(2, 4, 32, 3, up_attention=which == "dense-unet-attention")
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
def current():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
out = {"params": sum(p.numel() for p in net.parameters())}
if task == "infer":
    from monai.inferers import sliding_window_inference
    net.eval()
    x = torch.randn(1, 2, 128, 128, 128)
    before, times = current(), []
    with torch.no_grad():
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            y = sliding_window_inference(x, (32, 32, 32), 4, lambda t: torch.softmax(net(t), 1), overlap=0.0,
                                         mode="constant")
            times.append(time.perf_counter() - t0)
    assert y.shape == (1, 4, 128, 128, 128)
else:
    net.train()
    opt = torch.optim.Adam(net.parameters(), 3e-5)
    x, t = torch.randn(8, 2, 32, 32, 32), torch.randint(0, 4, (8, 32, 32, 32))
    before, times = current(), []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
out.update(best=min(times), peak_delta_mib=rss() - before, peak_mib=rss())
print(json.dumps(out))
""".replace("REPEATS", str(REPEATS)).replace("THREADS", str(THREADS))

MODELS = {"dense-unet-attention": "3D-DenseUNet, attention up-blocks (paper)",
          "dense-unet-plain": "3D-DenseUNet, plain decoder (released code)",
          "monai-unet": "MONAI UNet 32-64-128, 3 res units"}


def _run(which: str, task: str) -> dict:
    return run_child(CHILD, [which, task], THREADS)


def main() -> None:
    rows = [(name, _run(name, "infer"), _run(name, "train")) for name in MODELS]
    print("## dense-unet-teachers: sliding-window inference per 128³ volume, training-step memory\n")
    print(f"Machine: {machine(THREADS)}. Shared with other jobs while measured.\n")
    print("| model (2 input channels, 4 classes) | params | s / 128³ volume (64 windows of 32³) | "
          "s / 128³ volume at step 8 (2,197 windows, extrapolated) | peak RSS during inference (MiB) | "
          "s / training step (8 × 32³) | peak RSS of the step (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for name, inf, tr in rows:
        print(f"| {MODELS[name]} | {inf['params']:,} | {inf['best']:.1f} | {inf['best'] * 2197 / 64:.0f} | "
              f"{inf['peak_delta_mib']:.0f} | {tr['best']:.2f} | {tr['peak_delta_mib']:.0f} |")
    print(f"\nBest of {REPEATS}; random weights; windows in batches of 4, softmax averaged (mode constant), as the "
          "pipeline's eval, but without overlap; the step-8 column scales the measured time by 2,197 / 64. "
          "Memory: peak resident set size during the work minus the resident size before it.")


if __name__ == "__main__":
    main()

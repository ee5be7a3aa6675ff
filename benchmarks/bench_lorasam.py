"""lorasam at full size (SAM ViT-B at 256², LoRA r = 4 + TAL, 974,080 trainable): forward+backward time of a batch
of 2 (image, class name) pairs with the LoRA branches unmerged (training form) and merged into the base weights,
inference images/s in both forms, and the peak memory of each measurement (a fresh process each, so the peaks do
not mix).

CPU only; torch on one thread (on this shared 2-core machine two threads thrash when other jobs run). Median of 3
timed repetitions after one warm-up.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from statistics import median

REPS = 3


def measure(mode: str) -> dict:
    import torch

    from medrun.models.sam import build_sam_vit_b, count_params
    from medrun.models.sam_lora import LoraSam, set_lora_merged
    from medrun.pipelines.lorasam.pipeline import text_logits

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = LoraSam(build_sam_vit_b(256), r=4)
    merged = mode.endswith("merged")
    set_lora_merged(model.sam.image_encoder, merged)
    x = torch.randn(2, 3, 256, 256)
    emb = torch.randn(1, 512)  # one class name per image
    times = []
    if mode.startswith("train"):
        model.train()
        for i in range(REPS + 1):
            t0 = time.perf_counter()
            logits = text_logits(model, x, emb)
            logits.float().mean().backward()
            model.zero_grad(set_to_none=True)
            if i:
                times.append(time.perf_counter() - t0)
        value = median(times)
    else:
        model.eval()
        with torch.no_grad():
            for i in range(REPS + 1):
                t0 = time.perf_counter()
                text_logits(model, x, emb)
                if i:
                    times.append(time.perf_counter() - t0)
        value = x.shape[0] / median(times)
    return {"mode": mode, "value": value, "trainable": count_params(model, trainable_only=True),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    if len(sys.argv) > 1:
        print(json.dumps(measure(sys.argv[1])))
        return
    import torch

    rows = {}
    for mode in ("train-unmerged", "train-merged", "infer-unmerged", "infer-merged"):
        out = subprocess.run([sys.executable, __file__, mode], capture_output=True, text=True, check=True).stdout
        rows[mode] = json.loads(out.strip().splitlines()[-1])
    load = os.getloadavg()
    print(
        "## lorasam: full-size LoRASAM (SAM ViT-B, 256², r = 4) forward+backward and inference "
        "(benchmarks/bench_lorasam.py)\n"
    )
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU, torch {torch.__version__} on 1 thread, "
          f"Python {platform.python_version()}. Shared with other jobs while measured (load average "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on 2 cores), so the figures are noisy upper bounds. "
          f"Median of {REPS} after a warm-up; peak = the process's maximum resident set size (model + activations + "
          "Python).\n")
    print("| measurement | LoRA unmerged | LoRA merged | peak memory unmerged / merged (MB) |")
    print("|---|---:|---:|---:|")
    tu, tm = rows["train-unmerged"], rows["train-merged"]
    iu, im = rows["infer-unmerged"], rows["infer-merged"]
    print(
        f"| forward+backward, batch 2 (s) | {tu['value']:.2f} | {tm['value']:.2f} | "
        f"{tu['peak_mb']:.0f} / {tm['peak_mb']:.0f} |"
    )
    print(
        f"| inference, batch 2 (images/s) | {iu['value']:.2f} | {im['value']:.2f} | "
        f"{iu['peak_mb']:.0f} / {im['peak_mb']:.0f} |"
    )
    print(f"\nTrainable parameters: {tu['trainable']:,}. Merged, the LoRA branches are folded into the frozen weights "
          "(peft `merge`), so their gradients are no longer computed: the merged forward+backward only trains the "
          "norms, position embedding and TAL, and is the inference form.")


if __name__ == "__main__":
    main()

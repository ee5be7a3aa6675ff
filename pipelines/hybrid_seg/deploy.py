"""hybrid-seg deployment stages on a trained run: ``compress``, ``bench``, ``export-onnx``, ``export-review``.

- ``compress``: L1 structured channel pruning of every Conv2d (``torch.nn.utils.prune.ln_structured``, n=1, dim=0)
  at each ``compress.prune`` amount (the 1×1 heads excepted: their channels are the outputs), fine-tuned
  ``compress.finetune_epochs`` epochs with the masks in place (AdamW
  at ``train.lr × compress.finetune_lr_factor``, cosine; ours: the card gives no fine-tuning rate), then made
  permanent. Masks give no CPU speed-up and torch-pruning is not installed, so sparsity (zeroed output channels) is
  reported, not latency. int8 dynamic quantisation (``torch.ao.quantization.quantize_dynamic`` on ``nn.Linear``):
  the checkpoint ``checkpoints/int8_dynamic.safetensors`` stores each quantised Linear as its int8 weight with its
  scale and zero point (plus the fp32 rest), since safetensors cannot hold packed parameters; its size is compared
  with the fp32 safetensors. Every variant is scored on the eval split: NP Dice, bPQ, mPQ and the drop from fp32.
  Static FX post-training quantisation of the convolutions (card) is not done: HybridNet's shape checks and
  variable token grid do not trace with ``prepare_fx``.
- ``bench``: median latency over ``bench.runs`` runs after ``bench.warmup`` at batch 1 with
  ``torch.set_num_threads(bench.threads)`` of fp32, int8-dynamic and ONNX Runtime (same input, one test image);
  these time the bare modules, not the predictor, which would add its own overhead; peak RSS of the process.
- ``export-onnx``: ``torch.onnx.export`` (TorchScript exporter, opset 17, dynamic batch and side) of the network's
  three heads; ``onnx.checker``; onnxruntime and PyTorch (through the predictor) on the same test image, max
  absolute difference per head (pass: < 1e-3).
- ``export-review``: the card's R9 stub — a blinded reader-study pack: overlays under random case codes and a key.
"""

from __future__ import annotations

import copy
import io
import time

import numpy as np
import torch

from medrun.errors import EnvError

from .. import training
from ..report import markdown_table, paper_md

KEYS = ("np_dice", "bpq", "mpq")


class Heads(torch.nn.Module):
    """The network's dict output as a tuple (np, hv, nc), for ONNX and timing."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        o = self.net(x)
        return o["np"], o["hv"], o["nc"]


def _no_meta(p):
    if p.use_meta:
        raise EnvError("compress, bench and export-onnx take image-only models (model.fusion none)",
                       fix="run them on a train run with -o model.fusion=none")


def _score(p, net, data) -> dict:
    metrics, _ = p.evaluate(net, data)
    return {k: metrics[k] for k in KEYS}


def int8_dynamic(net):
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(copy.deepcopy(net).eval(), {torch.nn.Linear}, dtype=torch.qint8)


def int8_state(qnet) -> dict[str, torch.Tensor]:
    """A dynamic-quantised network's weights as plain tensors: int8 weights with scale/zero point, the rest fp32."""
    state = {}
    for name, mod in qnet.named_modules():
        if hasattr(mod, "_packed_params") and hasattr(mod, "weight") and callable(mod.weight):
            w, b = mod._packed_params._weight_bias()
            state[f"{name}.weight_int8"] = w.int_repr()
            state[f"{name}.weight_scale"] = torch.tensor([w.q_scale()], dtype=torch.float32)
            state[f"{name}.weight_zero_point"] = torch.tensor([w.q_zero_point()], dtype=torch.int32)
            if b is not None:
                state[f"{name}.bias"] = b.detach()
    for k, v in qnet.state_dict().items():
        if isinstance(v, torch.Tensor) and not v.is_quantized and "_packed_params" not in k and k not in state:
            state[k] = v
    return state


def _prune(net, amount: float):
    from torch.nn.utils import prune

    for name, m in net.named_modules():
        if isinstance(m, torch.nn.Conv2d) and not name.startswith("head_"):  # the heads' channels are the classes
            prune.ln_structured(m, "weight", amount=amount, n=1, dim=0)
    return net


def _unprune(net) -> float:
    """Make the pruning permanent; the fraction of Conv2d output channels that are all zero."""
    from torch.nn.utils import prune

    zero = total = 0
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            if prune.is_pruned(m):
                prune.remove(m, "weight")
            zero += int((m.weight.detach().flatten(1).abs().sum(1) == 0).sum())
            total += m.out_channels
    return zero / max(1, total)


def compress(p) -> dict:
    _no_meta(p)
    c, ctx = p.m.compress, p.ctx
    splits = p.splits()
    data = p.split_of(splits)
    net = p.trained_model().eval()
    fp32_bytes = training.safetensors_bytes(net.state_dict())
    base = _score(p, net, data)
    rows = [{"variant": "fp32", **base, "size_mb": len(fp32_bytes) / 1e6, "sparsity": 0.0}]
    for amount in c.prune:
        pruned = _prune(copy.deepcopy(net), amount)
        if c.finetune_epochs:
            module = p.lit_module(pruned).train()
            module.t = module.t.model_copy(update={"lr": p.m.train.lr * c.finetune_lr_factor, "warmup_epochs": 0,
                                                   "epochs": c.finetune_epochs})
            trainer = training.make_trainer(ctx, c.finetune_epochs, checkpoint=False, logger=False)
            training.fit(trainer, module, train_dataloaders=p.train_loader(splits))
        sparsity = _unprune(pruned.eval())
        rows.append({"variant": f"pruned{int(round(amount * 100))}", **_score(p, pruned, data),
                     "size_mb": len(training.safetensors_bytes(pruned.state_dict())) / 1e6, "sparsity": sparsity})
    if "dynamic" in c.quant:
        q = int8_dynamic(net)
        blob = training.safetensors_bytes(int8_state(q), {"pipeline": "hybrid-seg", "quant": "int8-dynamic-linear"})
        ctx.write_bytes("checkpoints/int8_dynamic.safetensors", blob)
        rows.append({"variant": "int8-dynamic", **_score(p, q, data), "size_mb": len(blob) / 1e6, "sparsity": 0.0})
    for r in rows[1:]:
        r.update({f"{k}_drop": base[k] - r[k] for k in KEYS})
    ctx.write_csv("compress.csv", rows)
    metrics = {f"{r['variant']}_{k}": r[k] for r in rows for k in (*KEYS, "size_mb", "sparsity")}
    if "dynamic" in c.quant:
        metrics["int8_smaller"] = float(metrics["int8-dynamic_size_mb"] < metrics["fp32_size_mb"])
        metrics["int8_bpq_drop"] = base["bpq"] - metrics["int8-dynamic_bpq"]
    table = markdown_table(["variant", *KEYS, "size MB", "sparsity"],
                           [[r["variant"], *[r[k] for k in KEYS], r["size_mb"], r["sparsity"]] for r in rows])
    ctx.write_text("paper.md", paper_md(ctx.spec, p.m, metrics, ctx, title="HybridNet: pruning and quantisation",
                                        expect={}, keys=["int8_smaller", "int8_bpq_drop"], present_only=True,
                                        sections=["## Variants on the eval split\n\n" + table,
                                                  "Card target (c): int8 lowers CPU latency (see `bench`) with at "
                                                  "most 1 point PQ drop (`int8_bpq_drop` ≤ 0.01)."]))
    return metrics


def _median_ms(fn, x, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def onnx_bytes(net, side: int) -> bytes:
    buf = io.BytesIO()
    heads = Heads(net).eval()
    torch.onnx.export(heads, (torch.zeros(1, 3, side, side),), buf, opset_version=17, dynamo=False,
                      input_names=["image"], output_names=["np", "hv", "nc"],
                      dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}})
    heads.eval()  # the exporter restores the wrapper's mode, which would put the network back in training mode
    return buf.getvalue()


def _session(blob: bytes, threads: int):
    try:
        import onnxruntime as ort
    except ImportError:
        raise EnvError("onnxruntime is not installed", fix="pip install onnxruntime") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    return ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])


def _one_image(p) -> tuple[torch.Tensor, str]:
    data = p.split_of(p.splits())
    img = data.images[:1]
    side = p.m.bench.size or img.shape[1]
    from .method import normalise

    x = normalise(img, *p.stats)
    if side != x.shape[-1]:
        x = torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    return x, data.ids[0]


def bench(p) -> dict:
    import resource

    _no_meta(p)
    b, ctx = p.m.bench, p.ctx
    net = p.trained_model().eval()
    x, case = _one_image(p)
    before = torch.get_num_threads()
    torch.set_num_threads(b.threads)
    try:
        fp32, q = Heads(net).eval(), Heads(int8_dynamic(net)).eval()
        sess = _session(onnx_bytes(net, x.shape[-1]), b.threads)
        with torch.no_grad():
            ms = {"fp32": _median_ms(fp32, x, b.runs, b.warmup), "int8_dynamic": _median_ms(q, x, b.runs, b.warmup),
                  "onnxruntime": _median_ms(lambda t: sess.run(None, {"image": t.numpy()}), x, b.runs, b.warmup)}
    finally:
        torch.set_num_threads(before)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    metrics = {**{f"latency_ms_{k}": v for k, v in ms.items()}, "peak_rss_mb": rss, "threads": b.threads,
               "side": int(x.shape[-1]), "runs": b.runs}
    metrics["int8_speedup"] = ms["fp32"] / ms["int8_dynamic"]
    ctx.write_csv("bench.csv", [{"engine": k, "median_ms": v} for k, v in ms.items()])
    ctx.log("latency (median ms, batch 1, " + f"{x.shape[-1]}², {b.threads} threads): "
            + ", ".join(f"{k} {v:.2f}" for k, v in ms.items()))
    ctx.write_text("paper.md", paper_md(ctx.spec, p.m, metrics, ctx, title="HybridNet: CPU latency", expect={},
                                        keys=list(metrics), present_only=True,
                                        sections=[f"Input: `{case}` at {x.shape[-1]}², batch 1; median over "
                                                  f"{b.runs} runs after {b.warmup} warm-ups. Peak RSS is the whole "
                                                  "process's (data and three engines loaded)."]))
    return metrics


def export_onnx(p) -> dict:
    import onnx

    _no_meta(p)
    ctx = p.ctx
    net = p.trained_model().eval()
    x, case = _one_image(p)
    blob = onnx_bytes(net, x.shape[-1])
    onnx.checker.check_model(onnx.load_from_string(blob))
    ctx.write_bytes("model.onnx", blob)
    ours = p.predictor(Heads(net), x)
    theirs = _session(blob, 1).run(None, {"image": x.numpy()})
    diffs = {f"max_abs_diff_{k}": float(np.abs(a.numpy() - b).max())
             for k, a, b in zip(("np", "hv", "nc"), ours, theirs, strict=True)}
    metrics = {**diffs, "max_abs_diff": max(diffs.values()), "onnx_mb": len(blob) / 1e6, "opset": 17,
               "matches": float(max(diffs.values()) < 1e-3)}
    ctx.write_text("paper.md", paper_md(ctx.spec, p.m, metrics, ctx, title="HybridNet: ONNX export", expect={},
                                        keys=list(metrics), present_only=True,
                                        sections=[f"`model.onnx` (opset 17; inputs `image` (B, 3, H, W) normalised as "
                                                  f"in training, H and W multiples of 16; outputs np, hv, nc) checked "
                                                  f"by onnxruntime against PyTorch on `{case}`."]))
    return metrics


def export_review(p) -> dict:
    """Blinded reader-study pack (stub): overlays named by random codes, and the key in a separate CSV."""
    from .pipeline import overlay_figure

    ctx = p.ctx
    data = p.split_of(p.splits())
    net = p.trained_model()
    n = min(p.m.eval.overlays or 4, len(data))
    decoded = p.decode_all(net, data.take(range(n)))
    codes = np.random.default_rng(p.m.seed).permutation(10_000)[:n]
    key = []
    for i, (code, d) in enumerate(zip(codes, decoded, strict=True)):
        name = f"case_{code:04d}"
        overlay_figure(ctx, f"review/{name}", data.images[i], d["inst"], None, name, d["type_map"])
        key.append({"code": name, "case": data.ids[i], "nuclei": len(d["types"])})
    ctx.write_csv("review_key.csv", key)
    ctx.write_csv("review_form.csv", [{"code": k["code"], "acceptable (y/n)": "", "comments": ""} for k in key])
    return {"cases": n}

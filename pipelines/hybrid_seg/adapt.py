"""hybrid-seg ``adapt``: cross-dataset transfer of a PanNuke-trained HybridNet to CoNSeP (card R6).

- Target: ``adapt.target_root`` (a CoNSeP folder); with ``--fixture`` and none given, the generated CoNSeP fixture
  (written once under medrun's cache). Its files are not part of the run id (the parent train run's data is);
  their combined sha256 is recorded in ``run.json`` (``target_sha256``).
- Zero-shot: the parent model on CoNSeP Test (whole images), images normalised with the source's statistics.
- Few-shot: ``adapt.shots`` Train images (a seeded draw), tiled as ``dataset.tile``/``overlap``, ``adapt.steps``
  optimiser steps (AdamW, ``adapt.lr``, batch ``train.batch_size``, augmentation on) through Lightning (max_steps).
  ``adapt.mode: full`` trains every weight; ``lora`` wraps the network with peft LoRA (r, α, dropout) on the
  transformer's q/k/v/o and MLP fc1/fc2 Linear layers, the three heads trainable (``modules_to_save``), then
  merges the adapters for scoring and saving (``checkpoints/model.safetensors``).
- Domain gap: ``ot.sliced_wasserstein_distance`` (``adapt.projections`` projections, seed = manifest seed) between
  the pooled bottleneck features of the source test split and of the target test images, next to the bPQ drop.
Primary cross-dataset scores are binary (NP Dice, bPQ, AJI); mPQ over the mapped CoNSeP types is reported too.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from medrun.errors import UsageError

from .. import training
from ..predictor import Forward
from ..report import markdown_table, paper_md, paper_table

KEYS = ("np_dice", "bpq", "aji", "mpq")
LORA_TARGETS = ["q", "k", "v", "o", "fc1", "fc2"]


def target_root(p) -> Path:
    a = p.m.adapt
    if a.target_root:
        return Path(a.target_root).expanduser()
    if p.ctx.fixture and p.ctx.cache_dir is not None:
        from medrun.datasets import consep

        root = Path(p.ctx.cache_dir) / "hybrid-seg" / f"consep-fixture-seed{p.m.seed}" / "CoNSeP"
        if not (root / "Test" / "Labels").is_dir():
            consep.fixture(root.parent, p.m.seed)
        return root
    raise UsageError("adapt needs a CoNSeP folder", fix="-o adapt.target_root=/path/to/CoNSeP (holding Train/, Test/)")


def _sha(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        if f.is_file():
            h.update(f.relative_to(root).as_posix().encode())
            h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def lora_wrap(net, a):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=a.rank, lora_alpha=a.alpha, lora_dropout=a.lora_dropout, target_modules=LORA_TARGETS,
                     modules_to_save=["head_np", "head_hv", "head_nc"])
    return get_peft_model(net, cfg)


def _features(p, net, images) -> np.ndarray:
    from .method import normalise

    feats = [p.predictor(Forward(net, "features"), normalise(images[i:i + 4], *p.stats))
             for i in range(0, len(images), 4)]
    return torch.cat(feats).numpy().astype(np.float64)


def adapt(p) -> dict:
    import ot


    a, ctx = p.m.adapt, p.ctx
    if p.use_meta:
        raise UsageError("adapt takes an image-only model: CoNSeP has no tissue metadata",
                         fix="adapt a train run with model.fusion none")
    source = p.splits()  # the source statistics and its test split
    root = target_root(p)
    ctx.run.update_info(target_root=str(root), target_sha256=_sha(root))
    saved_root = ctx.data_roots.get(p.m.dataset.name)
    ctx.data_roots[p.m.dataset.name] = root
    try:
        train = p.read_consep("Train")
        test = p._whole(p.read_consep("Test"))
    finally:
        ctx.data_roots[p.m.dataset.name] = saved_root
    k = min(a.shots, len(train))
    pick = np.random.default_rng(p.m.seed).permutation(len(train))[:k].tolist()
    shots = p._tiled([train[i] for i in pick])
    ctx.record_splits({"target_shots": [str(train[i][0].image) for i in pick],
                       "target_test": sorted(set(test.files))}, merge=True)

    net = p.trained_model().eval()
    zero, _ = p.evaluate(net, test)
    gap = float(ot.sliced_wasserstein_distance(_features(p, net, source["test"].images), _features(p, net, test.images),
                                               n_projections=a.projections, seed=p.m.seed))
    src_metrics, _ = p.evaluate(net, source["test"])

    model = lora_wrap(net, a) if a.mode == "lora" else net
    total = sum(q.numel() for q in model.parameters())
    trainable = sum(q.numel() for q in model.parameters() if q.requires_grad)
    module = p.lit_module(model).train()
    module.t = module.t.model_copy(update={"lr": a.lr, "warmup_epochs": 0, "epochs": 1})
    loader = training.ResumableLoader(p.dataset(shots, True), min(p.m.train.batch_size, len(shots)), p.m.seed)
    epochs = -(-a.steps // max(1, len(loader)))
    trainer = training.make_trainer(ctx, epochs, checkpoint=False, logger=False, max_steps=a.steps)
    training.fit(trainer, module, train_dataloaders=loader)
    adapted = model.merge_and_unload() if a.mode == "lora" else model
    adapted.eval()
    training.save_weights(adapted, ctx.path / "checkpoints" / "model.safetensors",
                          {"pipeline": "hybrid-seg", "adapt": a.mode, "shots": k})
    after, rows = p.evaluate(adapted, test)
    ctx.write_csv("per_case.csv", rows)
    table_rows = [["source test (PanNuke)", *[src_metrics[x] for x in KEYS]],
                  ["CoNSeP zero-shot", *[zero[x] for x in KEYS]],
                  [f"CoNSeP {a.mode}, {k} shot(s), {a.steps} steps", *[after[x] for x in KEYS]]]
    metrics = {**{f"source_{x}": src_metrics[x] for x in KEYS}, **{f"zero_shot_{x}": zero[x] for x in KEYS},
               **{x: after[x] for x in KEYS}, "mode": a.mode, "shots": k, "steps": a.steps,
               "params_total": total, "params_trainable": trainable, "trainable_fraction": trainable / total,
               "domain_gap_swd": gap, "zero_shot_bpq_drop": src_metrics["bpq"] - zero["bpq"]}
    ctx.log(f"{a.mode}: trainable {trainable:,} of {total:,} ({trainable / total:.2%}); bPQ zero-shot "
            f"{zero['bpq']:.4f} → {after['bpq']:.4f}; sliced Wasserstein gap {gap:.4f}")
    ctx.write_text("paper.md", paper_md(
        ctx.spec, p.m, metrics, ctx, title="HybridNet: PanNuke → CoNSeP", expect={},
        keys=["trainable_fraction", "domain_gap_swd", "zero_shot_bpq_drop", *KEYS], present_only=True,
        sections=["## Cross-dataset scores (binary metrics primary)\n\n"
                  + markdown_table(["model", *KEYS], table_rows), paper_table(ctx.spec, "acceptance")]))
    return metrics

"""idqce's ``linear-eval`` (frozen features, one linear layer per encoder × label fraction × subset seed) and
``predict`` (the full-label probe's probabilities)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from medrun.errors import UsageError
from medrun.metrics.classification import multilabel_auroc
from medrun.models import idqce as M

from .. import training
from ..report import markdown_table, paper_data, paper_md, paper_note, paper_table
from . import figures
from .pipeline import Images, LitProbe, Trunk, to_trunk

# the paper's table shown beside each dataset's results (paper.yaml)
TABLES = {"nih": "nih", "vindr": "nih", "mimic": "mimic", "mured": "fundus", "odir": "fundus", "eyepacs": "fundus"}


def pct(frac: float) -> str:
    return f"{frac * 100:g}pct"


class Probe(torch.nn.Module):
    """A LinearProbe on grey [0, 1] input → probabilities."""

    def __init__(self, net: M.LinearProbe):
        super().__init__()
        self.net = net

    def forward(self, x):
        return torch.sigmoid(self.net(to_trunk(x)))


def _encoders(pl):
    """(name, trunk) of each encoder the probe is trained on; ImageNet init without weights is skipped."""
    lin, arch = pl.m.linear, pl.m.model.backbone
    for name in lin.encoders:
        trunk = M.ResNetTrunk(arch)
        if name == "ssl":
            pl.trained_model(trunk)
        elif name == "imagenet":
            if not lin.init_checkpoint:
                pl.ctx.log("warning: the ImageNet-init baseline is skipped: no weights "
                           "(-o linear.init_checkpoint=/path/to/resnet50-imagenet.pth, torchvision's state dict)")
                continue
            state = {k: v for k, v in training.load_state(lin.init_checkpoint).items() if not k.startswith("fc.")}
            own = trunk.state_dict()
            wrong = sorted(set(own) ^ set(state)) or [k for k in own if own[k].shape != state[k].shape]
            if wrong:
                raise UsageError(f"{lin.init_checkpoint} is not a torchvision {arch} state dict (first mismatch: "
                                 f"{wrong[0]})", fix=f"pass torchvision's {arch} ImageNet weights")
            trunk.load_state_dict(state)
        yield name, trunk


def _features(pl, trunk, arr) -> np.ndarray:
    loader = DataLoader(Images(arr), batch_size=pl.m.linear.feature_batch)
    return torch.cat(pl.predictor.map(Trunk(trunk), loader)).numpy()


def _fit_probe(pl, ftr, ytr, fva, yva, tag: str) -> LitProbe:
    from lightning.pytorch.callbacks import ModelCheckpoint

    lin = pl.m.linear
    module = LitProbe(ftr.shape[1], ytr.shape[1], lin.lr)
    best = ModelCheckpoint(dirpath=pl.ctx.path / "checkpoints" / "probes", filename=tag, monitor="val_auc",
                           mode="max", save_top_k=1, enable_version_counter=False)
    trainer = training.make_trainer(pl.ctx, lin.epochs, checkpoint=False, logger=False, callbacks=[best],
                                    enable_checkpointing=True)
    train = training.ResumableLoader(TensorDataset(torch.from_numpy(ftr), torch.from_numpy(ytr)),
                                     lin.batch_size, pl.m.seed)
    val = DataLoader(TensorDataset(torch.from_numpy(fva), torch.from_numpy(yva)), batch_size=1024)
    training.fit(trainer, module, train_dataloaders=train, val_dataloaders=val)
    if best.best_model_path:
        state = training.load_state(best.best_model_path)
        module.load_state_dict(state)
    return module


def linear_eval(pl) -> dict:
    lin, d, ctx = pl.m.linear, pl.m.dataset, pl.ctx
    s = pl.splits()
    arrs = {k: pl.images(s[k]) for k in ("train", "val", "test")}
    ytr, yva, yte = (s[k].y.astype(np.float32) for k in ("train", "val", "test"))
    rows, heads, main = [], {}, None
    main_enc = "ssl" if "ssl" in lin.encoders else None
    for enc, trunk in _encoders(pl):
        feats = {k: _features(pl, trunk, a) for k, a in arrs.items()}
        for frac in sorted(lin.fractions):
            seeds = lin.subset_seeds if frac < 1 else lin.subset_seeds[:1]
            for seed in seeds:
                n = len(ytr)
                k = max(1, round(frac * n))
                idx = np.sort(np.random.default_rng(seed).choice(n, k, replace=False)) if k < n else np.arange(n)
                probe = _fit_probe(pl, feats["train"][idx], ytr[idx], feats["val"], yva, f"{enc}-{pct(frac)}-s{seed}")
                probs = torch.sigmoid(pl.predictor(probe, torch.from_numpy(feats["test"]))).numpy()
                auc = multilabel_auroc(yte, probs)
                rows.append({"encoder": enc, "fraction": frac, "subset_seed": seed, "n_labelled": int(k), "auc": auc})
                ctx.log(f"{enc} {pct(frac)} seed {seed}: {k} labelled images, test macro AUC {auc:.4f}")
                if seed == seeds[0]:
                    heads[(enc, frac)] = probe.head
                    main_enc = main_enc or enc
                    if enc == main_enc and (main is None or frac >= main[1]):
                        main = (enc, frac, probe, trunk, probs)
    if main is None:
        raise UsageError("linear-eval trained no probe (linear.encoders lists only baselines without weights)",
                         fix="add ssl to linear.encoders, or give linear.init_checkpoint")
    enc, frac, probe, trunk, probs = main
    net = M.LinearProbe(pl.m.model.backbone, len(d.labels))
    net.encoder.load_state_dict(trunk.state_dict())
    net.head.load_state_dict(probe.head.state_dict())
    meta = {"pipeline": "idqce", "labels": ",".join(d.labels), "encoder": enc, "fraction": str(frac)}
    training.save_weights(net, ctx.path / "checkpoints" / "model.safetensors", meta)
    head_state = {}
    for (e, f), h in heads.items():
        if e == enc:
            head_state[f"{pct(f)}.weight"], head_state[f"{pct(f)}.bias"] = h.weight, h.bias
    ctx.write_bytes("checkpoints/heads.safetensors", training.safetensors_bytes(head_state, meta))
    ctx.write_csv("probes.csv", rows)
    per_case = []
    for i, name in enumerate(s["test"].names):
        per_case.append({"image": name, "labels": "|".join(lab for j, lab in enumerate(d.labels) if yte[i, j])
                         or "No Finding", **{f"prob_{lab}": float(probs[i, j]) for j, lab in enumerate(d.labels)}})
    ctx.write_csv("per_case.csv", per_case)
    summary = {}
    for r in rows:
        summary.setdefault(f"auc_{r['encoder']}_{pct(r['fraction'])}", []).append(r["auc"])
    metrics = {"auc": multilabel_auroc(yte, probs), "encoder": enc, "fraction": frac}
    for key, vals in summary.items():
        finite = [v for v in vals if math.isfinite(v)]
        metrics[key] = float(np.mean(finite)) if finite else math.nan
        if len(finite) > 1:
            metrics[f"{key}_sd"] = float(np.std(finite, ddof=1))
    from sklearn.metrics import roc_auc_score

    for j, lab in enumerate(d.labels):
        if 0 < yte[:, j].sum() < len(yte):
            metrics[f"auc_{lab}"] = float(roc_auc_score(yte[:, j], probs[:, j]))
    figures.auc_by_fraction(ctx, [{**r, "auc": metrics[f"auc_{r['encoder']}_{pct(r['fraction'])}"]} for r in rows])
    expect = None
    if pl.m.pretrain.method == "byol":
        expect = paper_data(ctx.spec).get("expect_byol", {}).get(d.name, {})
    table = markdown_table(["encoder", "fraction", "subset seed", "labelled", "test macro AUC"],
                           [[r["encoder"], r["fraction"], r["subset_seed"], r["n_labelled"], r["auc"]] for r in rows])
    keys = [k for k in metrics if k.startswith("auc_") and k.endswith("pct")]
    ctx.write_text("paper.md", paper_md(ctx.spec, pl.m, metrics, ctx, title=f"IDQCE linear evaluation "
                                        f"({pl.m.pretrain.method} pre-training)", expect=expect,
                                        keys=["auc", *keys], sections=["## Probes\n\n" + table,
                                                                        paper_table(ctx.spec, TABLES[d.name]),
                                                                        paper_note(ctx.spec, "comparison")]))
    ctx.log(f"test macro AUC ({enc}, {pct(frac)} of labels): {metrics['auc']:.4f}")
    return metrics


def predict(pl) -> dict:
    d, ctx = pl.m.dataset, pl.ctx
    net = pl.trained_model(M.LinearProbe(pl.m.model.backbone, len(d.labels)))
    if pl.m.predict.input:
        from .data import load_gray

        files = ctx.predict_inputs(pl.m.predict.input)
        arr = np.stack([load_gray(f, d.img_size) for f in files])
        names = [str(f) for f in files]
    else:
        part = pl.splits()["test"]
        arr, names = pl.images(part), part.names
    loader = DataLoader(Images(arr), batch_size=pl.m.predict.batch_size)
    probs = torch.cat(pl.predictor.map(Probe(net), loader)).numpy()
    rows = [{"file": n, "top": d.labels[int(p.argmax())],
             **{f"prob_{lab}": float(p[j]) for j, lab in enumerate(d.labels)}}
            for n, p in zip(names, probs, strict=True)]
    ctx.write_csv("per_case.csv", rows)
    ctx.log(f"predicted {len(rows)} images")
    return {"n": len(rows)}

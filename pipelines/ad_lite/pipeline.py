"""ad-lite, the method (card: docs/papers/ad-lite.md).

Data: the dataset's public layout → (path, label) samples (OASIS undersampled as the authors' code does) →
every image resized to ``img_size`` as 3-channel raw 0–255 values (the network's first layer is a BatchNorm) →
stratified 80/20 train/test (random_state 43), then 80/20 of train for validation with the same seed. Splits
are per image, as in the paper (the Kaggle files carry no subject ids), so slices of a subject can leak.

Training: AD-Lite Net, unweighted cross-entropy, Adam (β 0.9/0.999, eps 1e-7), lr 0.00095, batch 64, no early
stopping; the last epoch is evaluated. lr × 0.95 every epoch from ``train.lr_decay.from_epoch`` (0-indexed).

Evaluation: accuracy, per-class and macro/weighted precision/recall/F1 (sklearn ``classification_report``), ROC-AUC
micro (Keras ``AUC()`` on one-hot labels, Table 3) and macro one-vs-rest, a confusion matrix.

Choices where the card is silent: the train stage also evaluates the test split at its last epoch (the paper's
protocol), so ``metrics.json`` of a train run holds test metrics. ``cv`` (Table 3) is a sweep: one train run per
fold (``dataset.fold`` = 0 … ``dataset.folds`` − 1, stratified k-fold with ``split_seed``; 20 % of each fold's
training part for validation), each reused when complete, then mean ± sd over folds.

Table 1 baselines: ``model.arch`` (densenet121 from MONAI, mobilenet_v2, vgg16, xception from ``models/``) trains
one of them with the same data, loss, optimiser and schedule, its input scaled from 0–255 to ImageNet
normalisation inside the network (``models.cnn_baselines``); ``model.weights`` starts from a user's weights file
(safe loaders only; a classifier of another class count keeps its random init). Extra stages, each a sweep of
train runs: ``ablate`` (``ablate.py``, Table 2: with and without the pcb branch) and ``baselines``
(``baselines.py``, Table 1: one run per ``baselines.archs``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from medrun.datasets import alzheimer
from medrun.errors import UsageError
from medrun.models.adlite import AdLiteNet

from .. import training
from ..report import confusion_axes, markdown_table, paper_md, paper_note
from ..sweep import Child, headline, mean_sd_table, summarise
from ..tasks import classification as clf
from ..tasks.supervised import Supervised

READERS = {"ad": alzheimer.read_ad, "adni": alzheimer.read_adni}
CLASSES = {"ad": alzheimer.AD_CLASSES, "adni": alzheimer.ADNI_CLASSES, "oasis": alzheimer.OASIS_CLASSES,
           "merged": alzheimer.ADNI_CLASSES}
CV_KEYS = ("accuracy", "precision_weighted", "recall_weighted", "f1_weighted", "auroc_micro")


class AdLite(clf.OwnImages, Supervised):
    def build_model(self):
        mm = self.m.model
        if mm.arch == "adlite":
            net = AdLiteNet(mm.num_classes, tx=mm.tx, pcb=mm.pcb, bn_momentum=mm.bn_momentum)
        else:
            from medrun.models import cnn_baselines

            net = cnn_baselines.build(mm.arch, mm.num_classes)
        if mm.weights and self.ctx.stage == "train":  # later stages load the train run's own weights
            load_initial_weights(net, mm.arch, Path(mm.weights), self.ctx.log)
        return net

    # -- data -----------------------------------------------------------------------------------------------
    def samples(self):
        d, roots = self.m.dataset, self.ctx.data_roots
        if d.name == "oasis":
            samples, classes = alzheimer.read_oasis(roots["oasis"], d.undersample, d.undersample_seed)
        elif d.name == "merged":
            samples, classes = alzheimer.read_merged(roots["ad"], roots["adni"])
        elif self.own:
            samples, classes = self.read_own()
        else:
            samples, classes = READERS[d.name](roots[d.name])
        if self.m.model.num_classes != len(classes):
            raise UsageError(f"model.num_classes is {self.m.model.num_classes} but dataset {d.name} has "
                             f"{len(classes)} classes", fix=f"-o model.num_classes={len(classes)}")
        counts = Counter(classes[s.label] for s in samples)
        self.ctx.log(f"{d.name}: {len(samples)} images — " + ", ".join(f"{c} {counts[c]}" for c in classes))
        return samples, classes

    def splits(self) -> dict:
        samples, self.classes = self.samples()
        d = self.m.dataset
        if d.fold is None:
            rest, test = clf.stratified_split(samples, d.test_fraction, d.split_seed)
        else:
            from sklearn.model_selection import StratifiedKFold

            labels = np.array([s.label for s in samples])
            folds = StratifiedKFold(n_splits=d.folds, shuffle=True, random_state=d.split_seed)
            tr, te = list(folds.split(np.zeros(len(labels)), labels))[d.fold]
            rest, test = [samples[j] for j in tr], [samples[j] for j in te]
        train, val = clf.stratified_split(rest, d.val_fraction, d.split_seed)
        splits = {"train": train, "val": val, "test": test}
        self.ctx.record_splits(splits)
        return splits

    # -- the template's hooks -------------------------------------------------------------------------------
    def dataset(self, samples, train: bool):
        return clf.ImageSamples(samples, self.m.dataset.img_size, self.m.dataset.intensity)

    def lit_module(self, net):
        t = self.m.train
        return clf.LitClassifier(net, t.lr, t.betas, t.eps, t.lr_decay.from_epoch if t.lr_decay else None,
                                 t.lr_decay.factor if t.lr_decay else 1.0)

    def weights_metadata(self) -> dict:
        return {"pipeline": "ad-lite", "arch": self.m.model.arch, **self.classes_metadata(self.classes)}

    def after_fit(self) -> dict:
        w = self.m.model.weights
        return {"initial_weights_sha256": _sha256(Path(w))} if w else {}

    def paper_kwargs(self, split, metrics) -> dict:
        arch = self.m.model.arch
        if arch == "adlite":
            return {}
        from .baselines import paper_row

        row = paper_row(self.ctx.spec, arch, self.m.dataset.name)
        return {"title": f"{arch} baseline (ad-lite Table 1)", "table": "Table 1",
                "expect": {"accuracy": row[0], "f1_weighted": row[1]} if row else {}}

    def evaluate(self, net, samples):
        return clf.evaluate(net, samples, self.m.dataset.img_size, self.classes, self.m.train.batch_size,
                            self.predictor, self.m.dataset.intensity)

    def figures(self, net, samples, metrics, rows, split):
        cm = np.asarray(metrics["confusion_matrix"])
        with self.ctx.figure("confusion_matrix", figsize=(1.2 * len(cm) + 2.5, 1.1 * len(cm) + 2)) as (_, ax):
            confusion_axes(ax, cm, self.classes, f"{self.m.dataset.name} {split}")

    def summary_line(self, split, metrics):
        return (f"{split}: accuracy {metrics['accuracy']:.4f}  F1 weighted {metrics['f1_weighted']:.4f}  "
                f"F1 macro {metrics['f1_macro']:.4f}  AUROC micro {metrics['auroc_micro']:.4f}")

    def paper_sections(self, metrics):
        return [clf.per_class_table(metrics), paper_note(self.ctx.spec, "comparison")]

    # -- extra stages: Table 2's ablation and Table 1's baselines, each a sweep of train runs --------------------
    def ablate(self) -> dict:
        from .ablate import ablate

        return ablate(self)

    def baselines(self) -> dict:
        from .baselines import baselines

        return baselines(self)

    def trained_classes(self, weights: str = "model.safetensors") -> list[str]:
        """The dataset's class names; for ``imagefolder`` the training run's class folders (the kit's)."""
        return super().trained_classes(weights) if self.own else list(CLASSES[self.m.dataset.name])

    def predict_items(self):
        if self.m.predict.input:
            self.classes = self.trained_classes()
            return [alzheimer.Sample(p, -1) for p in self.ctx.predict_inputs(self.m.predict.input,
                                                                              self.predict_suffixes())]
        return super().predict_items()

    def predict_rows(self, net, samples):
        d = self.m.dataset
        probs = clf.predict_probs(net, clf.ImageSamples(samples, d.img_size, d.intensity), self.m.train.batch_size,
                                  self.predictor)
        return [{"file": str(s.path), "pred": self.classes[int(p.argmax())],
                 **{f"prob_{c}": float(p[j]) for j, c in enumerate(self.classes)}}
                for s, p in zip(samples, probs, strict=True)]

    def predict_summary(self, rows):
        counts = Counter(r["pred"] for r in rows)
        self.ctx.log("predicted: " + ", ".join(f"{c} {counts[c]}" for c in self.classes))
        return {"predicted": {c: counts[c] for c in self.classes}}

    # -- export ------------------------------------------------------------------------------------------------
    def bundle_parts(self) -> dict:
        """What `medrun export --format monai-bundle` needs: the network, preprocessing identical to training's
        (PIL: RGB, bilinear resize to img_size, raw 0–255 floats, channels first) and softmax class scores."""
        mm, size = self.m.model, self.m.dataset.img_size
        classes = self.trained_classes()
        return {
            "task": f"Alzheimer's stage classification from one MRI slice ({len(classes)} classes)",
            "network_def": {
                "_target_": "medrun.models.create",
                "name": "adlite",
                "num_classes": mm.num_classes,
                "tx": mm.tx,
                "pcb": mm.pcb,
                "bn_momentum": mm.bn_momentum,
            } if mm.arch == "adlite" else {
                "_target_": "medrun.models.create",
                "name": "cnn-baseline",
                "arch": mm.arch,
                "num_classes": mm.num_classes,
            },
            "classes": classes,
            "suffixes": [".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"],
            "preprocessing": [
                {
                    "_target_": "LoadImage",
                    "reader": "PILReader",
                    "reverse_indexing": False,
                    "image_only": True,
                    "converter": f"$lambda im: im.convert('RGB').resize(({size}, {size}), PIL.Image.BILINEAR)",
                },
                {"_target_": "EnsureChannelFirst", "channel_dim": -1},
                {"_target_": "EnsureType", "dtype": "$torch.float32", "track_meta": False},
            ],
            "predict": "$torch.no_grad()(lambda f: dict(zip(@classes, torch.softmax(@network(@preprocessing(f)[None]"
            ".to(@device)), 1)[0].tolist())))",
            "input": {
                "type": "image",
                "format": "magnitude",
                "modality": "MR",
                "num_channels": 3,
                "spatial_shape": [size, size],
                "dtype": "float32",
                "value_range": [0, 255],
                "is_patch_data": False,
                "channel_def": {"0": "R", "1": "G", "2": "B"},
            },
            "output": {
                "type": "probabilities",
                "format": "classes",
                "num_channels": len(classes),
                "spatial_shape": [1, 1],
                "dtype": "float32",
                "value_range": [0, 1],
                "is_patch_data": False,
                "channel_def": dict(enumerate(classes)),
            },
            "readme": f"Input: one axial MRI slice per file (any size; resized to {size}×{size}, RGB, raw 0–255 "
            "values). "
            f"Output: softmax scores over {', '.join(classes)}.",
        }

    # -- k-fold cross-validation (Table 3): one train run per fold ----------------------------------------------
    def cv(self) -> dict:
        k = self.m.dataset.folds
        runs = self.ctx.sweep([Child(f"fold{i + 1}", {"dataset.fold": i}, labels={"fold": i + 1}) for i in range(k)],
                              title="fold")
        per_fold = [r.row for r in runs]
        self.ctx.write_csv("per_fold.csv", per_fold)
        summary = summarise(per_fold, [*CV_KEYS, "secs_per_epoch"])[0]
        metrics = {"folds": k, **headline(summary, [*CV_KEYS, "secs_per_epoch"])}
        table = markdown_table(["fold", *CV_KEYS, "run"], [[r["fold"], *[r[c] for c in CV_KEYS], r["run_id"]]
                                                           for r in per_fold])
        self.ctx.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx,
                                                 title=f"AD-Lite Net, {k}-fold CV", sections=[
                                                     "## Folds (each a train run of its own)\n\n" + table,
                                                     "## Mean over folds\n\n" + mean_sd_table([summary], CV_KEYS)]))
        return metrics


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_initial_weights(net, arch: str, path: Path, log=print):
    """Load a user's weights into ``net`` before training, through the safe loader (``training.load_state``:
    safetensors, or ``torch.load(weights_only=True)``). Accepted: this pipeline's own ``model.safetensors``, a bare
    state dict of the network (torchvision names for mobilenet_v2/vgg16, torchvision or MONAI names for densenet121),
    with or without a ``model.``/``module.``/``net.`` prefix. Keys of the classifier that do not fit (ImageNet's
    1000 classes) are left at their random init and logged; any other missing, unexpected or misshapen key is an
    error naming it."""
    from medrun.models import cnn_baselines

    state = training.load_state(path)
    if arch != "adlite" and state and all(k.startswith("net.") for k in state):  # a baseline trained here
        state = {k[4:]: v for k, v in state.items()}
    for prefix in ("model.", "module.", "net."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    target, head = (net, "head.") if arch == "adlite" else (net.net, cnn_baselines.HEADS[arch])
    if arch != "adlite":
        state = cnn_baselines.from_torchvision(arch, state)
    own = target.state_dict()
    fits = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    skipped = sorted(k for k in set(state) | set(own) if k.startswith(head) and k not in fits)
    missing = sorted(k for k in own if k not in state and not k.startswith(head)
                     and not k.endswith("num_batches_tracked"))  # older torchvision files lack these counters
    unexpected = sorted(k for k in state if k not in own and not k.startswith(head))
    wrong = sorted(k for k in state if k in own and k not in fits and not k.startswith(head))
    if missing or unexpected or wrong:
        parts = [f"{len(v)} {what} (e.g. {v[0]})" for what, v in
                 (("missing", missing), ("unexpected", unexpected), ("with other shapes", wrong)) if v]
        raise UsageError(f"weights in {path} do not fit model.arch={arch}: " + ", ".join(parts),
                         fix="pass a state dict of this architecture (torchvision names for mobilenet_v2/vgg16/"
                             "densenet121), or check model.arch")
    target.load_state_dict({**own, **fits})
    log(f"initial weights: {len(fits)} tensors from {path}"
        + (f"; classifier left at random init ({', '.join(skipped)})" if skipped else ""))
    return net

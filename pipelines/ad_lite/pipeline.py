"""ad-lite, the method (card: shared/papers/ad-lite.md).

Data: the dataset's public layout → (path, label) samples (OASIS undersampled as the authors' code does) →
every image resized to ``img_size`` as 3-channel raw 0–255 values (the network's first layer is a BatchNorm) →
stratified 80/20 train/test (random_state 43), then 80/20 of train for validation with the same seed. Splits
are per image, as in the paper (the Kaggle files carry no subject ids), so slices of a subject can leak.

Training: AD-Lite Net, unweighted cross-entropy, Adam (β 0.9/0.999, eps 1e-7), lr 0.00095, batch 64, no early
stopping; the last epoch is evaluated. lr × 0.95 every epoch from ``train.lr_decay.from_epoch`` (0-indexed).

Evaluation: accuracy, per-class and macro/weighted precision/recall/F1 (sklearn ``classification_report``), ROC-AUC
micro (Keras ``AUC()`` on one-hot labels, Table 3) and macro one-vs-rest, a confusion matrix.

Choices where the card is silent: the train stage also evaluates the test split at its last epoch (the paper's
protocol), so ``metrics.json`` of a train run holds test metrics; ``cv`` keeps 20 % of each fold's training part
for validation (stratified, seed 43) and reports mean ± sd over folds.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np

from medrun.datasets import alzheimer
from medrun.datasets._images import list_images
from medrun.errors import DataError, UsageError
from medrun.models.adlite import AdLiteNet

from .. import classification as clf
from .. import training
from ..base import Pipeline
from ..report import confusion_png, learning_curves, markdown_table, paper_md


class AdLite(Pipeline):
    def build_model(self) -> AdLiteNet:
        mm = self.m.model
        return AdLiteNet(mm.num_classes, tx=mm.tx, pcb=mm.pcb, bn_momentum=mm.bn_momentum)

    # -- data -----------------------------------------------------------------------------------------------
    def samples(self):
        d, roots = self.m.dataset, self.ctx.data_roots
        if d.name == "ad":
            samples, classes = alzheimer.read_ad(roots["ad"])
        elif d.name == "adni":
            samples, classes = alzheimer.read_adni(roots["adni"])
        elif d.name == "oasis":
            samples, classes = alzheimer.read_oasis(roots["oasis"], d.undersample, d.undersample_seed)
        else:
            samples, classes = alzheimer.read_merged(roots["ad"], roots["adni"])
        if self.m.model.num_classes != len(classes):
            raise UsageError(f"model.num_classes is {self.m.model.num_classes} but dataset {d.name} has "
                             f"{len(classes)} classes", fix=f"-o model.num_classes={len(classes)}")
        counts = Counter(classes[s.label] for s in samples)
        self.ctx.log(f"{d.name}: {len(samples)} images — " + ", ".join(f"{c} {counts[c]}" for c in classes))
        return samples, classes

    def splits(self):
        samples, classes = self.samples()
        d = self.m.dataset
        rest, test = clf.stratified_split(samples, d.test_fraction, d.split_seed)
        train, val = clf.stratified_split(rest, d.val_fraction, d.split_seed)
        splits = {"train": train, "val": val, "test": test}
        self._record_splits(splits)
        return splits, classes

    def _record_splits(self, splits: dict) -> None:
        lock = self.ctx.run.path / "data.lock.json"
        import json

        data = json.loads(lock.read_text())
        roots = [Path(r).resolve() for r in self.ctx.data_roots.values()]

        def rel(p: Path) -> str:
            p = Path(p).resolve()
            for r in roots:
                if p.is_relative_to(r):
                    return p.relative_to(r).as_posix()
            return str(p)

        data["splits"] = {k: [rel(s.path) for s in v] for k, v in splits.items()}
        self.ctx.run.write_json("data.lock.json", data)

    # -- training -------------------------------------------------------------------------------------------
    def _fit(self, train, val, ckpt: bool = True, resume: bool = True):
        t, size = self.m.train, self.m.dataset.img_size
        module = clf.LitClassifier(self.build_model(), t.lr, t.betas, t.eps,
                                   t.lr_decay.from_epoch if t.lr_decay else None, t.lr_decay.factor if t.lr_decay else 1.0)
        trainer = training.make_trainer(self.ctx, t.epochs, checkpoint=ckpt, logger=ckpt)
        t0 = time.perf_counter()
        training.fit(trainer, module,
                     train_dataloaders=clf.loader(clf.ImageSamples(train, size), t.batch_size, True, t.num_workers,
                                                  seed=self.m.seed),
                     val_dataloaders=clf.loader(clf.ImageSamples(val, size), t.batch_size, False, t.num_workers),
                     ckpt_path=training.resume_checkpoint(self.ctx.run) if resume else None)
        return module.net, (time.perf_counter() - t0) / max(1, t.epochs)

    def train(self) -> dict:
        splits, classes = self.splits()
        self.ctx.log(f"train {len(splits['train'])} · val {len(splits['val'])} · test {len(splits['test'])} images")
        net, secs = self._fit(splits["train"], splits["val"])
        training.save_weights(net, self.ctx.run.path / "checkpoints" / "model.safetensors",
                              {"pipeline": "ad-lite", "classes": ",".join(classes)})
        learning_curves(self.ctx.run.path / "logs" / "metrics.csv", self.ctx.run.path / "figures" / "learning_curves.png")
        metrics = self._report(net, splits["test"], classes, "test")
        metrics["secs_per_epoch"] = round(secs, 3)
        metrics.update(training.count_params(net))
        return metrics

    def _report(self, net, samples, classes, split: str) -> dict:
        metrics, rows = clf.evaluate(net, samples, self.m.dataset.img_size, classes, self.m.train.batch_size)
        metrics["split"] = split
        run = self.ctx.run
        clf.write_csv(run.path / "per_case.csv", rows)
        confusion_png(metrics["confusion_matrix"], classes, run.path / "figures" / "confusion_matrix.png",
                      f"{self.m.dataset.name} {split}")
        self.ctx.log(f"{split}: accuracy {metrics['accuracy']:.4f}  F1 weighted {metrics['f1_weighted']:.4f}  "
                     f"F1 macro {metrics['f1_macro']:.4f}  AUROC micro {metrics['auroc_micro']:.4f}")
        run.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx, sections=[
            clf.per_class_table(metrics), _PAPER_NOTES]))
        return metrics

    # -- evaluation and prediction on a finished run ---------------------------------------------------------
    def _trained_net(self) -> AdLiteNet:
        return self.trained_model()

    def eval(self) -> dict:
        splits, classes = self.splits()
        split = self.m.eval.split
        if split not in splits:
            raise UsageError(f"unknown split '{split}'", fix=f"use --split {' | '.join(splits)}")
        return self._report(self._trained_net(), splits[split], classes, split)

    def predict(self) -> dict:
        net = self._trained_net()
        classes = _class_names(self.m.dataset.name)
        if self.m.predict.input:
            folder = Path(self.m.predict.input)
            if not folder.is_dir():
                raise DataError(f"predict.input folder not found: {folder}", fix="-o predict.input=/path/to/images")
            samples = [alzheimer.Sample(p, -1) for p in list_images(folder)]
            if not samples:
                raise DataError(f"no images in {folder}", fix="point predict.input at a folder of .jpg/.png files")
        else:
            splits, classes = self.splits()
            samples = splits[self.m.eval.split]
        probs = clf.predict_probs(net, clf.ImageSamples(samples, self.m.dataset.img_size), self.m.train.batch_size)
        rows = [{"file": str(s.path), "pred": classes[int(p.argmax())],
                 **{f"prob_{c}": round(float(p[j]), 6) for j, c in enumerate(classes)}} for s, p in zip(samples, probs, strict=True)]
        clf.write_csv(self.ctx.run.path / "per_case.csv", rows)
        counts = Counter(r["pred"] for r in rows)
        self.ctx.log(f"predicted {len(rows)} images: " + ", ".join(f"{c} {counts[c]}" for c in classes))
        return {"n": len(rows), "predicted": {c: counts[c] for c in classes}}

    # -- export ------------------------------------------------------------------------------------------------
    def bundle_parts(self) -> dict:
        """What `medrun export --format monai-bundle` needs: the network, preprocessing identical to training's
        (PIL: RGB, bilinear resize to img_size, raw 0–255 floats, channels first) and softmax class scores."""
        mm, size = self.m.model, self.m.dataset.img_size
        classes = _class_names(self.m.dataset.name)
        return {
            "task": f"Alzheimer's stage classification from one MRI slice ({len(classes)} classes)",
            "network_def": {"_target_": "medrun.models.adlite.AdLiteNet", "num_classes": mm.num_classes, "tx": mm.tx,
                            "pcb": mm.pcb, "bn_momentum": mm.bn_momentum},
            "classes": classes,
            "suffixes": [".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"],
            "preprocessing": [
                {"_target_": "LoadImage", "reader": "PILReader", "reverse_indexing": False, "image_only": True,
                 "converter": f"$lambda im: im.convert('RGB').resize(({size}, {size}), PIL.Image.BILINEAR)"},
                {"_target_": "EnsureChannelFirst", "channel_dim": -1},
                {"_target_": "EnsureType", "dtype": "$torch.float32", "track_meta": False},
            ],
            "predict": "$torch.no_grad()(lambda f: dict(zip(@classes, torch.softmax(@network(@preprocessing(f)[None]"
                       ".to(@device)), 1)[0].tolist())))",
            "input": {"type": "image", "format": "magnitude", "modality": "MR", "num_channels": 3,
                      "spatial_shape": [size, size], "dtype": "float32", "value_range": [0, 255],
                      "is_patch_data": False, "channel_def": {"0": "R", "1": "G", "2": "B"}},
            "output": {"type": "probabilities", "format": "classes", "num_channels": len(classes),
                       "spatial_shape": [1, 1], "dtype": "float32", "value_range": [0, 1], "is_patch_data": False,
                       "channel_def": dict(enumerate(classes))},
            "readme": f"Input: one axial MRI slice per file (any size; resized to {size}×{size}, RGB, raw 0–255 values). "
                      f"Output: softmax scores over {', '.join(classes)}.",
        }

    # -- 10-fold cross-validation (Table 3) -----------------------------------------------------------------
    def cv(self) -> dict:
        from sklearn.model_selection import StratifiedKFold

        samples, classes = self.samples()
        k = self.m.cv.folds
        labels = np.array([s.label for s in samples])
        folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=self.m.dataset.split_seed)
        per_fold, rows = [], []
        for i, (tr, te) in enumerate(folds.split(np.zeros(len(labels)), labels)):
            train_all = [samples[j] for j in tr]
            test = [samples[j] for j in te]
            train, val = clf.stratified_split(train_all, self.m.cv.val_fraction, self.m.dataset.split_seed)
            self.ctx.log(f"fold {i + 1}/{k}: train {len(train)} · val {len(val)} · test {len(test)}")
            net, secs = self._fit(train, val, ckpt=False, resume=False)
            training.save_weights(net, self.ctx.run.path / "checkpoints" / f"fold{i + 1}.safetensors")
            m, case_rows = clf.evaluate(net, test, self.m.dataset.img_size, classes, self.m.train.batch_size)
            per_fold.append({"fold": i + 1, **{key: m[key] for key in _CV_KEYS}, "secs_per_epoch": round(secs, 3)})
            rows += [{"fold": i + 1, **r} for r in case_rows]
        clf.write_csv(self.ctx.run.path / "per_case.csv", rows)
        clf.write_csv(self.ctx.run.path / "per_fold.csv", per_fold)
        metrics: dict = {"folds": k}
        for key in (*_CV_KEYS, "secs_per_epoch"):
            vals = np.array([f[key] for f in per_fold], dtype=float)
            metrics[key] = float(vals.mean())
            metrics[f"{key}_sd"] = float(vals.std(ddof=1))
        table = markdown_table(["fold", *_CV_KEYS], [[f["fold"], *[f[k] for k in _CV_KEYS]] for f in per_fold])
        self.ctx.run.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx,
                                                     title="AD-Lite Net, 10-fold CV", sections=["## Folds\n\n" + table]))
        return metrics


_CV_KEYS = ("accuracy", "precision_weighted", "recall_weighted", "f1_weighted", "auroc_micro")

_PAPER_NOTES = """## Notes on the comparison

- Splits are per image (StratifiedShuffleSplit, random_state 43) as in the paper; slices of one subject can fall in
  both train and test, so the paper's near-100 % figures are optimistic (the card's "Ambiguities" section).
- Table 1 reports weighted averages; AUROC micro corresponds to the Keras `AUC()` of Table 3."""


def _class_names(name: str) -> list[str]:
    return {"ad": alzheimer.AD_CLASSES, "adni": alzheimer.ADNI_CLASSES, "oasis": alzheimer.OASIS_CLASSES,
            "merged": alzheimer.ADNI_CLASSES}[name]

"""sm-safe, the method (card: docs/papers/sm-safe.md; seed 000_394d5b9c0e15e5ea.txt).

Model (``models.fusion.SMSAFE``): per-modality stems (2 × Conv3d 3³ + InstanceNorm + LeakyReLU, 32 channels) →
adaptive multi-modal fusion (AMF, as written: w_i = s_i / (Σ s_j + 1e-6), s_i = sigmoid(Vᵀ M_i + b)) → attentive
structural encoder (ASE, the card's design: 3 attention layers at 1/4, 1/8, 1/16 of the patch, 64 channels, 4 heads)
→ MONAI ``UNet(32→K, channels (32, 64, 128, 256, 320), strides 2, 2 residual units, instance norm)``.
``model.variant`` gives the card's comparison models from the same class: ``amf-net`` (no ASE) and ``unet`` (the
same U-Net on the raw channels concatenated); ``model.amf_levels: 2`` the abstract's "hierarchical" fusion
(``models.fusion_hierarchical``: a second AMF after a stride-2 stage, projected by a 1×1×1 convolution (ours) and
added at the U-Net's second level). One model per MSD task, sized from its ``dataset.json`` (``model.modalities``
/ ``num_classes`` only size ``--dry-run`` and ``show``; ``params_total`` of a train run is its first task's).

Data (``data.py``, ``datasets.msd``): header checks (channels against ``modality``, label grid against the image,
imagesTs too) before any voxel is read, label values on load. Preprocessing (card, "ours"): RAS → the task's
median spacing of its training cases → crop to the foreground (MRI: any channel non-zero; CT: HU > −500) → CT:
clip to the [0.5, 99.5] percentiles of the training cases' foreground HU, z-score with its mean and SD; MRI:
per-channel z-score over non-zero voxels. Every case is preprocessed once and kept in memory. Augmentation:
``RandCropByPosNegLabeld`` (1:1) to the patch, flips on 3 axes, ``RandRotate90d`` (first two axes when their
patch sides are equal), intensity scale and shift ±0.1 (each p 0.5).

Splits: MSD hides its test labels, so ``dataset.folds``-fold patient-level CV on imagesTr (``KFold``, shuffled,
``dataset.split_seed`` 0); ``train`` holds out fold ``dataset.fold``, ``cv`` runs every fold (the card's protocol).

Training: ``DiceCELoss(softmax=True, to_onehot_y=True)``, equal weights; Adam (lr 1e-3, betas 0.9/0.999, weight
decay 1e-5) or ``train.optimizer: sgd`` (momentum 0.99, nesterov); polynomial decay (power 0.9) per step;
batch 8 (``train.accumulate`` for gradient accumulation); 300 epochs × 250 steps of patches, cases visited in a
shuffled round-robin. No validation (the paper has none): the held-out fold is scored once at the end.

Inference and metrics: the predictor's sliding window (``inference:``: roi = the patch, overlap 0.5, Gaussian,
on the manifest's hardware and precision), softmax, argmax. Per case and foreground class, on the preprocessed
grid: Dice, IoU = TP/(TP+FP+FN), HD95 in mm (``empty="diagonal"``: empty GT and prediction → 1, HD95 left out;
empty GT, non-empty prediction → Dice 0, HD95 the image diagonal). Task score = mean over classes and cases;
the table value = mean ± SD (ddof 1) across the run's tasks.

Stages: ``train`` (weights ``checkpoints/<task>.safetensors``; ``per_case.csv``, ``per_task.csv``, overlays),
``eval``, ``predict`` (label maps mapped back to each image's grid with ``Invertd``), ``cv`` and ``ablate``
(``sweeps.py``: one train run per fold or per ``ablate.variants`` entry, reused when complete), ``fuse-maps``
(``fuse_maps.py``: AMF weight maps as NIfTI) and ``summarize`` (mean ± SD across a train run's tasks).

Choices where the card is silent (ours): a patch larger than a preprocessed volume is an error naming the image;
resuming is per task (``checkpoints/<task>/last.ckpt``; a task with written weights is not trained again);
``determinism: seeded`` (MONAI's random transforms seeded from ``seed`` and per worker). The fixture smoke uses
8 stem channels and 3 × 20 steps; on a shared 2-core CPU set ``OMP_NUM_THREADS=1`` (small 3D convolutions).
"""

from __future__ import annotations

import csv
import math
import time
from functools import cached_property

import numpy as np
import torch

from medrun.datasets import msd
from medrun.errors import DataError, UsageError
from medrun.models.fusion import SMSAFE
from medrun.models.fusion_hierarchical import SMSAFEHierarchical

from .. import training
from ..base import Pipeline
from ..report import learning_curves_figure, markdown_table, paper_data, paper_md, paper_note
from ..tasks import segmentation as seg
from .data import Item, Patches, Prep, ct_statistics, folds, median_spacing, worker_init

METRICS = ("dice", "iou", "hd95")


def build_net(mm, modalities: int, num_classes: int) -> SMSAFE:
    if mm.amf_levels == 2:
        return SMSAFEHierarchical(modalities, num_classes, 3, mm.fusion_channels, tuple(mm.unet_channels),
                                  num_res_units=mm.num_res_units, ase_layers=mm.ase_layers,
                                  use_ase=mm.variant == "sm-safe", concat_raw=mm.concat_raw)
    return SMSAFE(modalities, num_classes, spatial_dims=3, fusion_channels=mm.fusion_channels,
                  unet_channels=tuple(mm.unet_channels), num_res_units=mm.num_res_units, ase_layers=mm.ase_layers,
                  use_amf=mm.variant != "unet", use_ase=mm.variant == "sm-safe", concat_raw=mm.concat_raw)


def _lit(net, t, total_steps: int):
    import lightning as L
    from monai.losses import DiceCELoss

    class LitSeg(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = net
            self.loss = DiceCELoss(softmax=True, to_onehot_y=True, lambda_dice=1.0, lambda_ce=1.0)

        def training_step(self, batch, _):
            loss = self.loss(self.net(batch["image"]), batch["label"])
            self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                     batch_size=batch["image"].shape[0])
            return loss

        def configure_optimizers(self):
            if t.optimizer == "adam":
                opt = torch.optim.Adam(self.parameters(), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
            else:
                opt = torch.optim.SGD(self.parameters(), lr=t.lr, momentum=t.momentum, nesterov=True,
                                      weight_decay=t.weight_decay)
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: max(0.0, 1 - min(s, total_steps) / total_steps) ** t.poly_power)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return LitSeg()


class SmSafe(Pipeline):
    def build_model(self, modalities: int | None = None, num_classes: int | None = None) -> SMSAFE:
        mm = self.m.model
        return build_net(mm, modalities or mm.modalities, num_classes or mm.num_classes)

    # -- data -------------------------------------------------------------------------------------------------
    @cached_property
    def tasks(self) -> list[msd.Task]:
        """The selected tasks with their filtered training cases, every header checked."""
        d, out = self.m.dataset, []
        for root in self.ctx.data_roots.values():
            task = msd.read_task(root)
            cases = [c for c in task.training if c.id not in set(d.exclude)][: d.max_cases]
            if not cases:
                how = ("dataset.exclude" if d.exclude else "dataset.max_cases") if task.training else None
                if how is None:
                    raise DataError(f"{task.dataset_json} lists no training cases", fix="restore dataset.json")
                raise UsageError(f"no training cases left in {task.dataset_json} after filtering with {how} "
                                 f"({len(task.training)} listed)", fix=f"remove cases from {how} (-o {how}=...)")
            for c in [*cases, *task.test]:
                msd.check_headers(task, c)
            out.append(msd.Task(task.name, task.root, task.modalities, task.labels, cases, task.test))
        self.ctx.log(" · ".join(f"{t.name}: {len(t.training)} training cases, {len(t.modalities)} modalities "
                                f"({', '.join(t.modalities.values())}), {t.num_classes - 1} foreground labels"
                                for t in out))
        return out

    def held_out(self) -> list[tuple[msd.Task, list[msd.Case], list[msd.Case]]]:
        """(task, training cases, held-out cases) of fold ``dataset.fold`` per task, recorded in data.lock.json."""
        d, out = self.m.dataset, []
        for task in self.tasks:
            test_idx = set(folds(len(task.training), d.folds, d.split_seed)[d.fold].tolist())
            out.append((task, [c for i, c in enumerate(task.training) if i not in test_idx],
                        [c for i, c in enumerate(task.training) if i in test_idx]))
        self.ctx.record_splits({f"{t.name}/{s}": cases for t, tr, te in out
                                for s, cases in (("train", tr), ("test", te))})
        return out

    def prep(self, task: msd.Task, train_cases: list[msd.Case]) -> Prep:
        d = self.m.dataset
        prep = Prep(task, d.spacing or median_spacing(train_cases))
        if task.is_ct:
            prep.ct_stats = ct_statistics(prep, train_cases, d.ct_percentiles, seed=d.split_seed)
        return prep

    def load(self, prep: Prep, cases, with_label=True, keep_meta=False) -> list[Item]:
        items = [prep.load(c, with_label, keep_meta) for c in cases]
        patch = self.m.train.patch_size
        for it in items:
            shape = tuple(it.image.shape[1:])
            if any(p > s for p, s in zip(patch, shape, strict=True)):
                fit = [min(p, s) for p, s in zip(patch, shape, strict=True)]
                raise UsageError(f"train.patch_size {list(patch)} is larger than {it.source} after preprocessing "
                                 f"(shape {list(shape)} at spacing {list(it.spacing)} mm)",
                                 fix=f"-o train.patch_size=[{','.join(map(str, fit))}] or smaller")
        return items

    # -- training and evaluation ------------------------------------------------------------------------------
    def fit(self, task: msd.Task, items: list[Item]) -> SMSAFE:
        """Train one task's model on its preprocessed cases (weights, logs and resume checkpoint named by task)."""
        from lightning.pytorch.loggers import CSVLogger

        t, tag = self.m.train, task.name
        weights = self.ctx.path / "checkpoints" / f"{tag}.safetensors"
        net = self.build_model(len(task.modalities), task.num_classes)
        if weights.exists():  # finished before an interruption
            self.ctx.log(f"{tag}: weights already written, not training again")
            return training.load_weights(net, weights)
        module = _lit(net, t, math.ceil(t.epochs * t.steps_per_epoch / t.accumulate))
        data = Patches(items, t.steps_per_epoch * t.batch_size * t.accumulate, t.patch_size, t.pos_neg, self.m.seed)
        loader = torch.utils.data.DataLoader(data, batch_size=t.batch_size, shuffle=True, num_workers=t.num_workers,
                                             generator=torch.Generator().manual_seed(self.m.seed),
                                             persistent_workers=t.num_workers > 0, worker_init_fn=worker_init)
        ck_dir = self.ctx.path / "checkpoints" / tag
        ckpt = training.ModelCheckpoint(dirpath=ck_dir, filename="last", save_top_k=1, monitor=None,
                                        enable_version_counter=False)
        trainer = training.make_trainer(self.ctx, t.epochs, checkpoint=False, callbacks=[ckpt],
                                        enable_checkpointing=True, accumulate_grad_batches=t.accumulate,
                                        logger=False, limit_val_batches=0)
        trainer.loggers = [CSVLogger(save_dir=self.ctx.path / "logs", name=tag, version="")]  # one log per task
        last = ck_dir / "last.ckpt"
        t0 = time.perf_counter()
        training.fit(trainer, module, train_dataloaders=loader, ckpt_path=last if last.exists() else None)
        self.ctx.log(f"{tag}: trained {t.epochs} × {t.steps_per_epoch} steps in {time.perf_counter() - t0:.1f} s")
        training.save_weights(net, weights, {"pipeline": "sm-safe", "task": task.name, "variant": self.m.model.variant,
                                             "modalities": len(task.modalities), "classes": task.num_classes})
        fig = learning_curves_figure(self.ctx.path / "logs" / tag / "metrics.csv")
        if fig is not None:
            self.ctx.save_figure(fig, f"learning_curves_{tag}")
        return net

    @cached_property
    def predictor(self):
        return self.ctx.predictor()

    def segment(self, net, image: torch.Tensor) -> torch.Tensor:
        """The argmax label map (*S) of one (C, *S) volume: sliding-window softmax through the predictor."""
        return torch.softmax(self.predictor.sliding_window(net, image[None])[0], 0).argmax(0)

    def score(self, net, task: msd.Task, items: list[Item]) -> list[dict]:
        net, rows = self.predictor.setup(net), []
        for k, it in enumerate(self.ctx.track(items, f"{task.name}: scoring")):
            pred, gt = self.segment(net, it.image).numpy(), it.label[0].numpy()
            rows += [{"task": task.name, "case": it.id, "class": c, "label": task.labels.get(c, str(c)),
                      **seg.case_metrics(pred == c, gt == c, METRICS, spacing=it.spacing, empty="diagonal")}
                     for c in range(1, task.num_classes)]
            if k < self.m.eval.overlays:
                z = int(np.argmax((gt > 0).sum(axis=(0, 1)))) if gt.any() else gt.shape[2] // 2
                seg.overlay(self.ctx, f"overlay_{task.name}_{it.id}", it.image[:, :, :, z].mean(0).numpy().T,
                            (gt[:, :, z] > 0).T, (pred[:, :, z] > 0).T,
                            title=f"{task.name} {it.id} z={z}: truth green, prediction red")
        return rows

    def summarise(self, rows: list[dict], sections=(), title_extra: str = "") -> dict:
        """Task scores, mean ± SD across tasks; ``per_case.csv``, ``per_task.csv`` and ``paper.md``."""
        per_task = task_scores(rows)
        metrics = {**across_tasks(per_task), "variant": self.m.model.variant, "fold": self.m.dataset.fold,
                   "tasks": per_task}
        self.ctx.write_csv("per_case.csv", rows)
        self.ctx.write_csv("per_task.csv", [{"task": t, **v} for t, v in per_task.items()])
        self.ctx.log(f"held-out{title_extra}: " + format_summary(metrics))
        self.ctx.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx, sections=[
            task_table(per_task), class_table(rows), *sections, paper_note(self.ctx.spec, "comparison")]))
        return metrics

    def task_net(self, task: msd.Task) -> SMSAFE:
        """A task's trained model: ``checkpoints/<task>.safetensors`` of the train run, or ``--checkpoint``."""
        if self.ctx.checkpoint is not None and len(self.ctx.data_roots) > 1:
            raise UsageError(f"--checkpoint holds one task's weights but {len(self.ctx.data_roots)} tasks are selected",
                             fix="select that task with -o dataset.tasks=[TaskXX_Name]")
        return self.trained_model(self.build_model(len(task.modalities), task.num_classes),
                                  weights=f"{task.name}.safetensors")

    # -- stages -----------------------------------------------------------------------------------------------
    def train(self) -> dict:
        d, rows = self.m.dataset, []
        for task, train, test in self.held_out():
            self.ctx.log(f"{task.name}: fold {d.fold} of {d.folds}: train {len(train)} · test {len(test)}")
            prep = self.prep(task, train)
            train_items, test_items = self.load(prep, train), self.load(prep, test)  # all checked first
            rows += self.score(self.fit(task, train_items), task, test_items)
        metrics = self.summarise(rows)
        first = self.tasks[0]
        metrics.update(training.count_params(self.build_model(len(first.modalities), first.num_classes)))
        return metrics

    def eval(self) -> dict:
        rows = []
        for task, train, test in self.held_out():
            rows += self.score(self.task_net(task), task, self.load(self.prep(task, train), test))
        return self.summarise(rows)

    def predict(self) -> dict:
        from monai import transforms as T
        from monai.data import MetaTensor

        rows = []
        for task, train, _ in self.held_out():
            net, prep = self.predictor.setup(self.task_net(task)), self.prep(task, train)
            invert = T.Invertd(keys="pred", transform=prep.spatial(["image"]), orig_keys="image", nearest_interp=True)
            cases = self.predict_cases(task)
            for c in self.ctx.track(cases, f"{task.name}: predicting"):
                (it,) = self.load(prep, [c], with_label=False, keep_meta=True)
                pm = MetaTensor(self.segment(net, it.image)[None].float(), meta=dict(it.meta.meta),
                                applied_operations=list(it.meta.applied_operations))
                back = invert({"image": it.meta, "pred": pm})["pred"]
                lab = back.as_tensor()[0].round().numpy().astype(np.uint8)
                rel = f"predictions/{task.name}/{c.id}.nii.gz"
                self.ctx.write_nifti(rel, lab, back.affine)
                counts = np.bincount(lab.ravel(), minlength=task.num_classes)
                rows.append({"task": task.name, "case": c.id, "image": str(c.image), "prediction": rel,
                             "foreground_voxels": int(counts[1:].sum()),
                             "voxels_per_label": " ".join(f"{task.labels.get(k, k)}={int(counts[k])}"
                                                          for k in range(1, task.num_classes))})
            self.ctx.log(f"{task.name}: {len(cases)} label maps in {self.ctx.path / 'predictions' / task.name}")
        self.ctx.write_csv("per_case.csv", rows)
        return {"n": len(rows)}

    def predict_cases(self, task: msd.Task) -> list[msd.Case]:
        """``predict.input`` (a .nii.gz file, folder or glob; header-checked against the task) or its imagesTs."""
        if not self.m.predict.input:
            if not task.test:
                raise DataError(f"no images to predict for {task.name}", fix="set predict.input to a folder of .nii.gz")
            return task.test
        files = self.ctx.predict_inputs(self.m.predict.input, (".nii.gz", ".nii"), what="NIfTI images")
        cases = [msd.Case(msd._stem(p), p, None) for p in files]
        for c in cases:
            msd.check_headers(task, c)
        return cases

    def cv(self) -> dict:
        from .sweeps import cv

        return cv(self)

    def ablate(self) -> dict:
        from .sweeps import ablate

        return ablate(self)

    def fuse_maps(self) -> dict:
        from .fuse_maps import fuse_maps

        return fuse_maps(self)

    def summarize(self) -> dict:
        """Mean ± SD across the tasks of a finished train run (its per_task.csv, checked against its manifest)."""
        with open(self.ctx.parent_file("per_task.csv")) as f:
            per_task = {r.pop("task"): {k: float(v) for k, v in r.items() if v not in ("", None)}
                        for r in csv.DictReader(f)}
        metrics = {**across_tasks(per_task), "tasks": per_task}
        self.ctx.log(f"{len(per_task)} task(s): " + format_summary(metrics))
        self.ctx.write_csv("summary.csv", [{"metric": k, "mean": metrics[k], "sd": metrics[f"{k}_sd"],
                                            "n_tasks": len(per_task)} for k in METRICS])
        ours = ["this run", *[f"{metrics[k]:.3f} ± {metrics[k + '_sd']:.3f}" for k in METRICS]]
        table = paper_data(self.ctx.spec)["tables"]["table1"]
        self.ctx.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx, sections=[
            "## Mean ± SD across tasks\n\n" + markdown_table(table["header"], [ours, *table["rows"]]),
            task_table(per_task), paper_note(self.ctx.spec, "comparison")]))
        return metrics


# -- tables --------------------------------------------------------------------------------------------------------
def task_scores(rows: list[dict]) -> dict:
    """Per task: mean over classes and cases of each metric (NaN HD95 left out), and the case count."""
    out = {}
    for task in dict.fromkeys(r["task"] for r in rows):
        trows = [r for r in rows if r["task"] == task]
        s = seg.summarise(trows, METRICS)
        out[task] = {k: s[k] for k in METRICS} | {"n_cases": len({(r.get("fold"), r["case"]) for r in trows})}
    return out


def across_tasks(per_task: dict) -> dict:
    out: dict = {"n_tasks": len(per_task)}
    for k in METRICS:
        v = np.array([t[k] for t in per_task.values()], dtype=float)
        v = v[np.isfinite(v)]
        out[k] = float(v.mean()) if v.size else math.nan
        out[f"{k}_sd"] = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return out


def format_summary(metrics: dict) -> str:
    return (f"Dice {metrics['dice']:.4f} ± {metrics['dice_sd']:.4f}  "
            f"IoU {metrics['iou']:.4f} ± {metrics['iou_sd']:.4f}  "
            f"HD95 {metrics['hd95']:.2f} ± {metrics['hd95_sd']:.2f} mm (mean ± SD across {metrics['n_tasks']} task(s))")


def task_table(per_task: dict) -> str:
    return "## Per task (mean over foreground classes and cases)\n\n" + markdown_table(
        ["task", "cases", *METRICS], [[t, v.get("n_cases"), *[v[k] for k in METRICS]] for t, v in per_task.items()])


def class_table(rows: list[dict]) -> str:
    body = []
    for task, label in dict.fromkeys((r["task"], r["label"]) for r in rows):
        s = seg.summarise([r for r in rows if r["task"] == task and r["label"] == label], METRICS)
        body.append([task, label, s["n_cases"], *[s[k] for k in METRICS]])
    return "## Per class\n\n" + markdown_table(["task", "label", "cases", *METRICS], body)

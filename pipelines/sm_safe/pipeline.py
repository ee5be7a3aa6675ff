"""sm-safe, the method (card: shared/papers/sm-safe.md; seed 000_394d5b9c0e15e5ea.txt).

Model (``models.fusion.SMSAFE``): per-modality stems (2 × Conv3d 3³ + InstanceNorm + LeakyReLU, 32 channels) →
adaptive multi-modal fusion (AMF, as written: w_i = s_i / (Σ s_j + 1e-6), s_i = sigmoid(Vᵀ M_i + b)) → attentive
structural encoder (ASE, the card's design: 3 attention layers at 1/4, 1/8, 1/16 of the patch, 64 channels, 4 heads)
→ MONAI ``UNet(32→K, channels (32, 64, 128, 256, 320), strides 2, 2 residual units, instance norm)``.
``model.variant`` gives the card's comparison models from the same class: ``amf-net`` (no ASE) and ``unet`` (the
same U-Net on the raw channels concatenated). One model per MSD task; each task's modalities and classes come from
its ``dataset.json``.

Data (``datasets.msd``): dataset.json via MONAI ``load_decathlon_datalist``; header checks (channel count against
``modality``, label grid against the image) before any voxel is read, label values against ``labels`` on load.
Preprocessing (card, "ours"): ``LoadImaged`` → ``EnsureChannelFirstd`` → ``Orientationd`` RAS → ``Spacingd`` to the
task's median spacing of its training cases (bilinear / nearest) → ``CropForegroundd`` (MRI: any channel non-zero;
CT: HU > −500, i.e. the body) → CT: clip to the [0.5, 99.5] percentiles of the training cases' foreground HU, then
z-score with that foreground's mean and SD; MRI: per-channel z-score over non-zero voxels (``NormalizeIntensity``
``nonzero=True, channel_wise=True``). Every case is preprocessed once and kept in memory.
Augmentation (card): ``RandCropByPosNegLabeld`` (pos:neg 1:1) to the patch, flips on 3 axes (p 0.5 each),
``RandRotate90d`` (p 0.5, in the first two axes when they have equal patch sides), intensity scale and shift ±0.1
(p 0.5 each).

Splits: test labels of MSD are hidden, so ``dataset.folds``-fold patient-level CV on imagesTr (sklearn ``KFold``,
shuffled, ``dataset.split_seed`` 0). ``train`` holds out fold ``dataset.fold`` and reports it; ``cv`` runs every
fold and reports the out-of-fold means (the card's protocol).

Training: ``DiceCELoss(softmax=True, to_onehot_y=True)`` with equal weights; Adam (lr 1e-3, betas 0.9/0.999, weight
decay 1e-5) or ``train.optimizer: sgd`` (momentum 0.99, nesterov); polynomial decay (power 0.9) per step over
``epochs × steps_per_epoch``; batch 8 (``train.accumulate`` for gradient accumulation); ``epochs × steps_per_epoch``
default 300 × 250. An epoch is ``steps_per_epoch × batch_size`` patches, cases visited in a shuffled round-robin.

Inference and metrics: MONAI ``sliding_window_inference`` (roi = the patch, overlap 0.5, Gaussian blending) then
argmax. Per case and foreground class: Dice, IoU = TP/(TP+FP+FN), HD95 in mm (``metrics.segmentation`` with
``empty="diagonal"``: empty GT and prediction → Dice = IoU = 1, HD95 left out; empty GT with a non-empty prediction
→ Dice 0 and HD95 the image diagonal). Task score = mean over classes and cases; the table value = mean ± SD across
the tasks of the run (SD with ddof 1; 0 for a single task).

Stages: ``train`` (one model per task of ``dataset.tasks``; weights ``checkpoints/<task>.safetensors``; held-out
metrics, ``per_case.csv``, ``per_task.csv``, overlays), ``eval`` (the same held-out fold with a train run's weights),
``predict`` (label maps for imagesTs or ``predict.input``, mapped back to each image's own grid with MONAI
``Invertd``), ``cv`` (all folds), ``fuse-maps`` (the per-modality AMF weight maps of the held-out cases as NIfTI,
plus the mean weight of each modality inside each label), ``summarize`` (mean ± SD across the train run's tasks),
``ablate`` (the paper's Table 1 as manifest variants: each variant is this manifest with dotted overrides, trained
and evaluated inside the one ablate run; one table ``ablation.csv`` + ``paper.md``).

Choices where the card is silent (ours):

- Metrics are computed on the preprocessed grid (RAS, target spacing, foreground crop), so HD95 is in mm of the
  target spacing; the crop only removes background of the image, never labelled voxels.
- A patch larger than a preprocessed volume is an error (exit 2) naming the image, not silently padded.
- No validation during training (the paper has no validation protocol); the held-out fold is scored once at the end.
- The checkpoint for resuming is per task (``checkpoints/<task>/last.ckpt``); a task whose weights are already
  written is not trained again when an interrupted multi-task run resumes.
- ``model.amf_levels: 2`` (the card's ``--amf-levels 2``, the abstract's "hierarchical" fusion) uses
  ``models.fusion_hierarchical.SMSAFEHierarchical``: a second AMF after a stride-2 stage per modality, projected by
  a 1×1×1 convolution (ours) and added at the U-Net's second level. It is a fourth ablation variant.
- ``model.modalities`` / ``model.num_classes`` (default 4 / 4, BrainTumour) only size the model when no task is at
  hand (``--dry-run``, ``show``); a run sizes each task's model from its dataset.json. ``params_total`` in a train
  run's metrics is the first task's model.
- Weights: ``checkpoints/<task>.safetensors`` (train), ``fold<k>_<task>`` (cv), ``<variant>_<task>`` (ablate).
- The test images (imagesTs) are header-checked with the training cases, so a wrong channel count anywhere in the
  task stops a run before training.
- ``determinism: seeded`` in the manifests (``strict`` is not exercised for the 3D kernels). MONAI's random
  transforms carry their own generator, seeded from ``seed`` (and per DataLoader worker).
- The fixture manifest (the card's smoke run) uses 8 stem/fusion channels instead of 32 and 3 × 20 steps; on a
  shared 2-core CPU, small 3D convolutions run many times faster with one OpenMP thread (``OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medrun.datasets import msd
from medrun.errors import DataError, UsageError
from medrun.models.fusion import SMSAFE
from medrun.models.fusion_hierarchical import SMSAFEHierarchical

from .. import training
from ..base import Pipeline
from ..report import learning_curves, markdown_table, paper_md
from ..tasks import segmentation as seg
from ..tasks.classification import write_csv

_RAS = (("L", "R"), ("P", "A"), ("I", "S"))
METRICS = ("dice", "iou", "hd95")
# Table 1 of the paper (mean ± SD across the 10 MSD tasks)
TABLE1 = {"unet": {"dice": (0.78, 0.12), "iou": (0.69, 0.08), "hd95": (15.2, 5.1)},
          "amf-net": {"dice": (0.82, 0.10), "iou": (0.73, 0.06), "hd95": (12.8, 4.3)},
          "sm-safe": {"dice": (0.87, 0.08), "iou": (0.78, 0.05), "hd95": (10.5, 3.6)}}


@dataclass
class Item:
    """One preprocessed case: image (C, X, Y, Z) float32, label (1, X, Y, Z) int64 or None, on the target grid."""

    id: str
    image: torch.Tensor
    label: torch.Tensor | None
    spacing: tuple[float, float, float]
    source: Path
    meta: object = None  # the MetaTensor image (affine, applied operations) for mapping predictions back


def build_net(mm, modalities: int, num_classes: int) -> SMSAFE:
    if mm.amf_levels == 2:
        return SMSAFEHierarchical(modalities, num_classes, 3, mm.fusion_channels, tuple(mm.unet_channels),
                                  num_res_units=mm.num_res_units, ase_layers=mm.ase_layers,
                                  use_ase=mm.variant == "sm-safe", concat_raw=mm.concat_raw)
    use_amf = mm.variant != "unet"
    return SMSAFE(modalities, num_classes, spatial_dims=3, fusion_channels=mm.fusion_channels,
                  unet_channels=tuple(mm.unet_channels), num_res_units=mm.num_res_units, ase_layers=mm.ase_layers,
                  use_amf=use_amf, use_ase=mm.variant == "sm-safe", concat_raw=mm.concat_raw)


# -- data ----------------------------------------------------------------------------------------------------------
class Prep:
    """A task's preprocessing: target spacing and intensity statistics from its training cases."""

    def __init__(self, task: msd.Task, spacing, ct_stats: dict | None = None):
        from monai import transforms as T

        self.task, self.spacing, self.ct_stats = task, tuple(float(s) for s in spacing), ct_stats
        self.T = T
        self._spatial: dict = {}

    def spatial(self, keys):
        """Orientation, spacing and foreground crop; one instance per key set (``Invertd`` needs the same objects)."""
        key = tuple(keys)
        if key not in self._spatial:
            self._spatial[key] = self._make_spatial(list(keys))
        return self._spatial[key]

    def _make_spatial(self, keys):
        T = self.T
        modes = ("bilinear", "nearest")[: len(keys)]
        return T.Compose([
            T.Orientationd(keys, axcodes="RAS", labels=_RAS),
            T.Spacingd(keys, pixdim=self.spacing, mode=modes),
            T.CropForegroundd(keys, source_key="image", select_fn=self._body, allow_smaller=True),
        ])

    def _body(self, x):
        return (x > -500).any(0, keepdim=True) if self.task.is_ct else (x != 0).any(0, keepdim=True)

    def load(self, case: msd.Case, with_label: bool = True, keep_meta: bool = False) -> Item:
        T = self.T
        keys = ["image", "label"] if with_label and case.label is not None else ["image"]
        data = {"image": str(case.image), **({"label": str(case.label)} if "label" in keys else {})}
        try:
            data = T.Compose([T.LoadImaged(keys, image_only=True), T.EnsureChannelFirstd(keys)])(data)
        except Exception as e:  # noqa: BLE001 - unreadable NIfTI
            raise DataError(f"cannot read {case.image} or its label: {e.__class__.__name__}: {str(e).splitlines()[0][:160]}",
                            fix="re-extract the task's tarball") from None
        if "label" in keys:
            lab = data["label"]
            if lab.shape[1:] != data["image"].shape[1:]:  # headers were checked; this catches a changed file
                raise DataError(f"{case.label} has shape {tuple(lab.shape[1:])} but its image has "
                                f"{tuple(data['image'].shape[1:])}", fix="a label map must lie on its image's grid")
            values = torch.unique(lab)
            if not torch.equal(values, values.round()):
                raise DataError(f"{case.label} holds non-integer label values", fix="labels must be integers")
            msd.check_label_values(self.task, case.label, values.tolist())
        data = self.spatial(keys)(data)
        image = data["image"].as_tensor().float()
        image = self.normalise(image)
        label = data["label"].as_tensor().round().long() if "label" in keys else None
        return Item(case.id, image, label, self.spacing, case.image, data["image"] if keep_meta else None)

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        if self.task.is_ct:
            s = self.ct_stats
            return (image.clamp(s["lo"], s["hi"]) - s["mean"]) / max(s["std"], 1e-6)
        return self.T.NormalizeIntensity(nonzero=True, channel_wise=True)(image).as_tensor().float()


def median_spacing(cases: list[msd.Case]) -> tuple[float, float, float]:
    """The median voxel size (RAS axes) of the cases, from their headers."""
    import nibabel as nib

    sp = []
    for c in cases:
        img = nib.load(str(c.image))
        ornt = nib.orientations.io_orientation(img.affine)
        zooms = np.array(img.header.get_zooms()[:3], dtype=float)
        sp.append(zooms[np.argsort(ornt[:, 0])])  # axis order after reorientation
    return tuple(float(v) for v in np.median(np.array(sp), axis=0))


def ct_statistics(prep: Prep, cases: list[msd.Case], percentiles, max_voxels: int = 2_000_000, seed: int = 0) -> dict:
    """Foreground HU of the training cases (a random sample of at most ``max_voxels``): clip range and moments."""
    rng = np.random.default_rng(seed)
    fg = []
    raw = Prep(prep.task, prep.spacing, {"lo": -1e9, "hi": 1e9, "mean": 0.0, "std": 1.0})
    per_case = max(1, max_voxels // max(1, len(cases)))
    for c in cases:
        item = raw.load(c)
        v = item.image[0][item.label[0] > 0].numpy()
        if v.size > per_case:
            v = rng.choice(v, per_case, replace=False)
        fg.append(v)
    v = np.concatenate(fg) if fg else np.zeros(1)
    if v.size < 2:
        raise DataError(f"{prep.task.dataset_json}: the training labels have no foreground to normalise CT with",
                        fix="check labelsTr")
    lo, hi = np.percentile(v, percentiles)
    clipped = np.clip(v, lo, hi)
    return {"lo": float(lo), "hi": float(hi), "mean": float(clipped.mean()), "std": float(clipped.std())}


class Patches(torch.utils.data.Dataset):
    """``steps × batch`` random training patches per epoch from the cases, in a shuffled round-robin."""

    def __init__(self, items: list[Item], length: int, patch, pos_neg, seed: int):
        from monai import transforms as T

        keys = ["image", "label"]
        rot = [T.RandRotate90d(keys, prob=0.5, max_k=3, spatial_axes=(0, 1))] if patch[0] == patch[1] else []
        self.items, self.length, self.seed = items, length, seed
        self.transform = T.Compose([
            T.RandCropByPosNegLabeld(keys, label_key="label", spatial_size=tuple(patch), pos=pos_neg[0],
                                     neg=pos_neg[1], num_samples=1, allow_smaller=False),
            T.RandFlipd(keys, prob=0.5, spatial_axis=0), T.RandFlipd(keys, prob=0.5, spatial_axis=1),
            T.RandFlipd(keys, prob=0.5, spatial_axis=2), *rot,
            T.RandScaleIntensityd("image", factors=0.1, prob=0.5), T.RandShiftIntensityd("image", offsets=0.1, prob=0.5),
        ]).set_random_state(seed=seed)

    def __len__(self) -> int:
        return self.length

    def reseed(self, worker_id: int) -> None:
        self.transform.set_random_state(seed=self.seed + 7919 * (worker_id + 1))

    def __getitem__(self, i: int) -> dict:
        item = self.items[i % len(self.items)]
        out = self.transform({"image": item.image, "label": item.label})
        out = out[0] if isinstance(out, list) else out
        return {"image": torch.as_tensor(out["image"]).float(), "label": torch.as_tensor(out["label"]).long()}


def _worker_init(worker_id: int) -> None:  # each DataLoader worker draws its own patches
    torch.utils.data.get_worker_info().dataset.reseed(worker_id)


def folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    """Patient-level k folds of ``n`` cases: the test indices of each fold."""
    from sklearn.model_selection import KFold

    if n < k:
        raise DataError(f"{n} training case(s) cannot be split into {k} folds", fix=f"-o dataset.folds={max(2, n)}")
    return [te for _, te in KFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(n))]


# -- Lightning module ----------------------------------------------------------------------------------------------
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
            self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=batch["image"].shape[0])
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


# -- the pipeline --------------------------------------------------------------------------------------------------
class SmSafe(Pipeline):
    def build_model(self, modalities: int | None = None, num_classes: int | None = None, m=None) -> SMSAFE:
        mm = (m or self.m).model
        return build_net(mm, modalities or mm.modalities, num_classes or mm.num_classes)

    # -- data -------------------------------------------------------------------------------------------------
    def tasks(self, m=None) -> list[msd.Task]:
        """The selected tasks with their filtered training cases, headers checked (read once per dataset section)."""
        m = m or self.m
        key = m.dataset.model_dump_json()
        cache = self.__dict__.setdefault("_tasks", {})
        if key not in cache:
            cache[key] = self._read_tasks(m)
        return cache[key]

    def _read_tasks(self, m) -> list[msd.Task]:
        out = []
        for root in self.ctx.data_roots.values():
            task = msd.read_task(root)
            cases = [c for c in task.training if c.id not in set(m.dataset.exclude)]
            if m.dataset.max_cases:
                cases = cases[: m.dataset.max_cases]
            if not cases:
                how = ("dataset.exclude" if m.dataset.exclude else "dataset.max_cases") if task.training else None
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

    def prep(self, task: msd.Task, train_cases: list[msd.Case], m=None) -> Prep:
        d = (m or self.m).dataset
        spacing = d.spacing or median_spacing(train_cases)
        prep = Prep(task, spacing)
        if task.is_ct:
            prep.ct_stats = ct_statistics(prep, train_cases, d.ct_percentiles, seed=d.split_seed)
        return prep

    def _load(self, prep: Prep, cases, m, with_label=True, keep_meta=False) -> list[Item]:
        items = [prep.load(c, with_label, keep_meta) for c in cases]
        patch = m.train.patch_size
        for it in items:
            shape = tuple(it.image.shape[1:])
            if any(p > s for p, s in zip(patch, shape, strict=True)):
                fit = [min(p, s) for p, s in zip(patch, shape, strict=True)]
                raise UsageError(f"train.patch_size {list(patch)} is larger than {it.source} after preprocessing "
                                 f"(shape {list(shape)} at spacing {list(it.spacing)} mm)",
                                 fix=f"-o train.patch_size=[{','.join(map(str, fit))}] or smaller")
        return items

    def split(self, task: msd.Task, fold: int, m=None) -> tuple[list[msd.Case], list[msd.Case]]:
        d = (m or self.m).dataset
        test_idx = set(folds(len(task.training), d.folds, d.split_seed)[fold].tolist())
        train = [c for i, c in enumerate(task.training) if i not in test_idx]
        test = [c for i, c in enumerate(task.training) if i in test_idx]
        return train, test

    def _record_splits(self, splits: dict) -> None:
        lock = self.ctx.run.path / "data.lock.json"
        data = json.loads(lock.read_text())
        data["splits"] = splits
        self.ctx.run.write_json("data.lock.json", data)

    # -- training and evaluation ------------------------------------------------------------------------------
    def _fit(self, task: msd.Task, items: list[Item], tag: str, m) -> SMSAFE:
        """Train one model on a task's preprocessed cases; ``tag`` names its weights and logs (resumable)."""
        from lightning.pytorch.loggers import CSVLogger

        run, t = self.ctx.run, m.train
        weights = run.path / "checkpoints" / f"{tag}.safetensors"
        net = self.build_model(len(task.modalities), task.num_classes, m)
        if weights.exists():  # finished before an interruption
            self.ctx.log(f"{tag}: weights already written, not training again")
            return training.load_weights(net, weights)
        total = t.epochs * t.steps_per_epoch
        module = _lit(net, t, math.ceil(total / t.accumulate))
        data = Patches(items, t.steps_per_epoch * t.batch_size * t.accumulate, t.patch_size, t.pos_neg, m.seed)
        loader = torch.utils.data.DataLoader(data, batch_size=t.batch_size, shuffle=True, num_workers=t.num_workers,
                                             generator=torch.Generator().manual_seed(m.seed),
                                             persistent_workers=t.num_workers > 0, worker_init_fn=_worker_init)
        ck_dir = run.path / "checkpoints" / tag
        ckpt = training.ModelCheckpoint(dirpath=ck_dir, filename="last", save_top_k=1, monitor=None,
                                        enable_version_counter=False)
        trainer = training.make_trainer(self.ctx, t.epochs, checkpoint=False, callbacks=[ckpt],
                                        enable_checkpointing=True, accumulate_grad_batches=t.accumulate,
                                        logger=False, limit_val_batches=0)
        trainer.loggers = [CSVLogger(save_dir=run.path / "logs", name=tag, version="")]  # one log per task/variant
        last = ck_dir / "last.ckpt"
        t0 = time.perf_counter()
        training.fit(trainer, module, train_dataloaders=loader, ckpt_path=last if last.exists() else None)
        self.ctx.log(f"{tag}: trained {t.epochs} × {t.steps_per_epoch} steps in {time.perf_counter() - t0:.1f} s")
        training.save_weights(net, weights, {"pipeline": "sm-safe", "task": task.name, "variant": m.model.variant,
                                             "modalities": len(task.modalities), "classes": task.num_classes})
        learning_curves(run.path / "logs" / tag / "metrics.csv", run.path / "figures" / f"learning_curves_{tag}.png")
        return net

    @torch.no_grad()
    def segment(self, net, image: torch.Tensor, m) -> tuple[torch.Tensor, torch.Tensor]:
        """Sliding-window softmax probabilities (K, *S) and the argmax label map (*S) of one volume."""
        from monai.inferers import sliding_window_inference

        net.eval()
        logits = sliding_window_inference(image[None], roi_size=tuple(m.train.patch_size),
                                          sw_batch_size=m.eval.sw_batch_size, predictor=net, overlap=m.eval.overlap,
                                          mode=m.eval.blend)
        probs = torch.softmax(logits[0], 0)
        return probs, probs.argmax(0)

    def _score(self, net, task: msd.Task, items: list[Item], m, figures: str | None = "", extra=None) -> list[dict]:
        rows = []
        for k, it in enumerate(items):
            _, pred = self.segment(net, it.image, m)
            pred, gt = pred.numpy(), it.label[0].numpy()
            for c in range(1, task.num_classes):
                r = seg.case_metrics(pred == c, gt == c, METRICS, spacing=it.spacing, empty="diagonal")
                rows.append({**(extra or {}), "task": task.name, "case": it.id, "class": c,
                             "label": task.labels.get(c, str(c)), **r})
            if figures is not None and k < m.eval.overlays:
                z = int(np.argmax((gt > 0).sum(axis=(0, 1)))) if gt.any() else gt.shape[2] // 2
                seg.overlay_png(it.image[:, :, :, z].mean(0).numpy().T, (gt[:, :, z] > 0).T, (pred[:, :, z] > 0).T,
                                self.ctx.run.path / "figures" / f"overlay_{figures}{task.name}_{it.id}.png",
                                title=f"{task.name} {it.id} z={z}: truth green, prediction red")
        return rows

    def _train_tasks(self, m, tag_prefix: str = "", figures: str = "") -> tuple[list[dict], dict]:
        """Train and score every task on its held-out fold; returns per-case rows and the splits used."""
        rows, splits = [], {}
        for task in self.tasks(m):
            train, test = self.split(task, m.dataset.fold, m)
            splits[task.name] = {"train": [c.id for c in train], "test": [c.id for c in test]}
            self.ctx.log(f"{task.name}: fold {m.dataset.fold} of {m.dataset.folds}: train {len(train)} · test {len(test)}")
            prep = self.prep(task, train, m)
            train_items, test_items = self._load(prep, train, m), self._load(prep, test, m)  # all checked first
            net = self._fit(task, train_items, f"{tag_prefix}{task.name}", m)
            rows += self._score(net, task, test_items, m, figures=figures)
        return rows, splits

    # -- reports ----------------------------------------------------------------------------------------------
    def _summarise(self, rows: list[dict], m, title_extra: str = "") -> dict:
        per_task = task_scores(rows)
        metrics = across_tasks(per_task)
        metrics.update({"variant": m.model.variant, "fold": m.dataset.fold, "tasks": per_task})
        run = self.ctx.run
        seg.write_per_case(run, rows)
        write_csv(run.path / "per_task.csv", [{"task": t, **v} for t, v in per_task.items()])
        self.ctx.log(f"held-out{title_extra}: " + format_summary(metrics))
        run.write_text("paper.md", paper_md(self.ctx.spec, m, metrics, self.ctx, sections=[
            task_table(per_task), class_table(rows), _NOTES]))
        return metrics

    def _task_net(self, task: msd.Task) -> SMSAFE:
        """A task's trained model: ``checkpoints/<task>.safetensors`` of the train run, or ``--checkpoint``."""
        if self.ctx.checkpoint is not None and len(self.ctx.data_roots) > 1:
            raise UsageError(f"--checkpoint holds one task's weights but {len(self.ctx.data_roots)} tasks are selected",
                             fix="select that task with -o dataset.tasks=[TaskXX_Name]")
        return self.trained_model(self.build_model(len(task.modalities), task.num_classes),
                                  weights=f"{task.name}.safetensors")

    # -- stages -----------------------------------------------------------------------------------------------
    def train(self) -> dict:
        rows, splits = self._train_tasks(self.m)
        self._record_splits(splits)
        metrics = self._summarise(rows, self.m)
        first = self.tasks()[0]
        metrics.update(training.count_params(self.build_model(len(first.modalities), first.num_classes)))
        return metrics

    def eval(self) -> dict:
        rows, splits = [], {}
        for task in self.tasks():
            train, test = self.split(task, self.m.dataset.fold)
            splits[task.name] = {"train": [c.id for c in train], "test": [c.id for c in test]}
            net = self._task_net(task)
            prep = self.prep(task, train)
            rows += self._score(net, task, self._load(prep, test, self.m), self.m)
        self._record_splits(splits)
        return self._summarise(rows, self.m)

    def cv(self) -> dict:
        m, rows, per_fold = self.m, [], []
        for fold in range(m.dataset.folds):
            fm = _with(m, {"dataset.fold": fold})
            fold_rows, _ = self._train_tasks(fm, tag_prefix=f"fold{fold}_", figures=f"fold{fold}_")
            rows += [{"fold": fold, **r} for r in fold_rows]
            per_fold.append({"fold": fold, **across_tasks(task_scores(fold_rows))})
        write_csv(self.ctx.run.path / "per_fold.csv", per_fold)
        metrics = self._summarise(rows, m, title_extra=" (out-of-fold, all folds)")
        metrics["fold"] = "all"
        return metrics

    def predict(self) -> dict:
        import nibabel as nib
        from monai import transforms as T
        from monai.data import MetaTensor

        rows = []
        for task in self.tasks():
            net = self._task_net(task)
            train, _ = self.split(task, self.m.dataset.fold)
            prep = self.prep(task, train)
            cases = task.test
            if self.m.predict.input:
                folder = Path(self.m.predict.input)
                if not folder.is_dir():
                    raise DataError(f"predict.input folder not found: {folder}", fix="-o predict.input=/path/to/images")
                cases = [msd.Case(msd._stem(p), p, None) for p in sorted(folder.glob("*.nii*"))
                         if not p.name.startswith("._")]
                for c in cases:
                    msd.check_headers(task, c)
            if not cases:
                raise DataError(f"no images to predict for {task.name}", fix="set predict.input to a folder of .nii.gz")
            invert = T.Invertd(keys="pred", transform=prep.spatial(["image"]), orig_keys="image", nearest_interp=True)
            out_dir = self.ctx.run.path / "predictions" / task.name
            out_dir.mkdir(parents=True, exist_ok=True)
            for c in cases:
                it = prep.load(c, with_label=False, keep_meta=True)
                shape = tuple(it.image.shape[1:])
                if any(p > s for p, s in zip(self.m.train.patch_size, shape, strict=True)):
                    raise UsageError(f"train.patch_size {list(self.m.train.patch_size)} is larger than {c.image} "
                                     f"after preprocessing (shape {list(shape)})", fix="predict with a smaller patch")
                _, pred = self.segment(net, it.image, self.m)
                pm = MetaTensor(pred[None].float(), meta=dict(it.meta.meta),
                                applied_operations=list(it.meta.applied_operations))
                back = invert({"image": it.meta, "pred": pm})["pred"]
                lab = back.as_tensor()[0].round().numpy().astype(np.uint8)
                path = out_dir / f"{c.id}.nii.gz"
                tmp = out_dir / f".{c.id}.tmp.nii.gz"
                nib.save(nib.Nifti1Image(lab, np.asarray(back.affine, dtype=float)), str(tmp))
                tmp.replace(path)
                counts = np.bincount(lab.ravel(), minlength=task.num_classes)
                rows.append({"task": task.name, "case": c.id, "image": str(c.image),
                             "prediction": str(path.relative_to(self.ctx.run.path)),
                             "foreground_voxels": int(counts[1:].sum()),
                             "voxels_per_label": " ".join(f"{task.labels.get(k, k)}={int(counts[k])}"
                                                          for k in range(1, task.num_classes))})
            self.ctx.log(f"{task.name}: {len(cases)} label maps in {out_dir}")
        write_csv(self.ctx.run.path / "per_case.csv", rows)
        return {"n": len(rows)}

    def fuse_maps(self) -> dict:
        """Per-modality AMF weight maps (NIfTI, the preprocessed grid) of the held-out cases; mean weight per label."""
        import nibabel as nib
        from monai.inferers import sliding_window_inference

        if self.m.model.variant == "unet":
            raise UsageError("model.variant unet has no AMF, so there are no fusion weights",
                             fix="use a train run of variant sm-safe or amf-net")
        rows = []
        for task in self.tasks():
            net = self._task_net(task).eval()
            train, test = self.split(task, self.m.dataset.fold)
            prep = self.prep(task, train)
            out_dir = self.ctx.run.path / "fuse_maps" / task.name
            out_dir.mkdir(parents=True, exist_ok=True)
            for it in self._load(prep, test, self.m, keep_meta=True):
                with torch.no_grad():
                    w = sliding_window_inference(it.image[None], tuple(self.m.train.patch_size),
                                                 self.m.eval.sw_batch_size, net.fusion_weights,
                                                 overlap=self.m.eval.overlap, mode=self.m.eval.blend)[0]
                affine = np.asarray(it.meta.affine, dtype=float)
                gt = it.label[0]
                for i, name in sorted(task.modalities.items()):
                    nib.save(nib.Nifti1Image(w[i].numpy().astype(np.float32), affine),
                             str(out_dir / f"{it.id}_w{i}_{name}.nii.gz"))
                for c in range(task.num_classes):
                    inside = gt == c
                    if inside.any():
                        rows += [{"task": task.name, "case": it.id, "label": task.labels.get(c, str(c)),
                                  "modality": name, "mean_weight": float(w[i][inside].mean())}
                                 for i, name in sorted(task.modalities.items())]
        write_csv(self.ctx.run.path / "per_case.csv", rows)
        table = _mean_weights(rows)
        self.ctx.run.write_text("paper.md", paper_md(self.ctx.spec, self.m, {}, self.ctx, title="SM-SAFE AMF weight maps",
                                                     sections=["## Mean AMF weight per modality inside each label\n\n"
                                                               + table]))
        return {"n_cases": len({(r["task"], r["case"]) for r in rows}), "maps_dir": "fuse_maps"}

    def summarize(self) -> dict:
        """Mean ± SD across the tasks of a finished train run (reads its per_task.csv)."""
        import csv

        path = self.ctx.parent.path / "per_task.csv" if self.ctx.parent else None
        if path is None or not path.is_file():
            raise UsageError("summarize needs a train run with per_task.csv", fix="pass --run ID of a train run")
        with open(path) as f:
            per_task = {r.pop("task"): {k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)}
        metrics = across_tasks(per_task)
        metrics["tasks"] = per_task
        self.ctx.log(f"{len(per_task)} task(s): " + format_summary(metrics))
        write_csv(self.ctx.run.path / "summary.csv", [
            {"metric": k, "mean": metrics[k], "sd": metrics[f"{k}_sd"], "n_tasks": len(per_task)} for k in METRICS])
        self.ctx.run.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx, sections=[
            "## Mean ± SD across tasks\n\n" + markdown_table(
                ["method", *METRICS], [["this run", *[f"{metrics[k]:.3f} ± {metrics[k + '_sd']:.3f}" for k in METRICS]],
                                       *[[v, *[f"{a} ± {b}" for a, b in TABLE1[v].values()]] for v in TABLE1]]),
            task_table(per_task), _NOTES]))
        return metrics

    def ablate(self) -> dict:
        """The paper's Table 1 as manifest variants trained and scored inside this run (``ablate.variants``)."""
        variants = self.m.ablate.variants
        if not variants:
            raise UsageError("ablate.variants is empty", fix="list variants in the manifest: name → {dotted.key: value}")
        manifests = {name: _with(self.m, over, where=f"ablate.variants.{name}") for name, over in variants.items()}
        rows, table, all_rows = [], [], []
        for name, vm in manifests.items():
            self.ctx.log(f"ablate: variant {name} ({vm.model.variant})")
            vrows, _ = self._train_tasks(vm, tag_prefix=f"{name}_", figures=f"{name}_")
            all_rows += [{"variant": name, **r} for r in vrows]
            s = across_tasks(task_scores(vrows))
            n = training.count_params(self.build_model(len(self.tasks(vm)[0].modalities),
                                                       self.tasks(vm)[0].num_classes, vm))["params_total"]
            rows.append({"variant": name, "model": vm.model.variant, **s, "params": n})
            paper = TABLE1.get(vm.model.variant, {})
            table.append([name, vm.model.variant, *[f"{s[k]:.3f} ± {s[k + '_sd']:.3f}" for k in METRICS],
                          *[f"{paper[k][0]} ± {paper[k][1]}" if k in paper else "—" for k in METRICS], n])
        seg.write_per_case(self.ctx.run, all_rows)
        write_csv(self.ctx.run.path / "ablation.csv", rows)
        metrics = {r["variant"]: {k: r[k] for k in (*METRICS, *(f"{k}_sd" for k in METRICS), "n_tasks")} for r in rows}
        order = [r["dice"] for r in rows]
        metrics["ordering_as_paper"] = _ordering(rows)
        self.ctx.log("ablate: " + "  ".join(f"{r['variant']} Dice {r['dice']:.3f}" for r in rows))
        header = ["variant", "model", "Dice (run)", "IoU (run)", "HD95 (run)", "Dice (paper)", "IoU (paper)",
                  "HD95 (paper)", "params"]
        self.ctx.run.write_text("paper.md", paper_md(self.ctx.spec, self.m, {}, self.ctx,
                                                     title="SM-SAFE ablation (Table 1)", sections=[
            "## Table 1: mean ± SD across tasks\n\n" + markdown_table(header, table),
            f"Paper's ordering U-Net < AMF-Net < SM-SAFE on Dice reproduced: {metrics['ordering_as_paper']} "
            f"(Dice {', '.join(f'{d:.3f}' for d in order)}).", _NOTES]))
        return metrics


# -- helpers -------------------------------------------------------------------------------------------------------
def _with(m, overrides: dict, where: str = "overrides"):
    """A copy of manifest ``m`` with dotted-key overrides, validated again (a bad key is a manifest error)."""
    from pydantic import ValidationError

    data = m.model_dump(mode="json")
    for key, value in overrides.items():
        node, parts = data, key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise UsageError(f"{where}: unknown key '{key}'", fix="use dotted keys of this manifest, e.g. model.variant")
            node = node[p]
        if parts[-1] not in node:
            raise UsageError(f"{where}: unknown key '{key}'", fix="use dotted keys of this manifest, e.g. model.variant")
        node[parts[-1]] = value
    try:
        return type(m).model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise UsageError(f"{where}: {'.'.join(map(str, err['loc']))}: {err['msg']}",
                         fix="correct the override's value") from None


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
    return (f"Dice {metrics['dice']:.4f} ± {metrics['dice_sd']:.4f}  IoU {metrics['iou']:.4f} ± {metrics['iou_sd']:.4f}  "
            f"HD95 {metrics['hd95']:.2f} ± {metrics['hd95_sd']:.2f} mm (mean ± SD across {metrics['n_tasks']} task(s))")


def task_table(per_task: dict) -> str:
    return "## Per task (mean over foreground classes and cases)\n\n" + markdown_table(
        ["task", "cases", *METRICS], [[t, v.get("n_cases"), *[v[k] for k in METRICS]] for t, v in per_task.items()])


def class_table(rows: list[dict]) -> str:
    keys = list(dict.fromkeys((r["task"], r["label"]) for r in rows))
    body = []
    for task, label in keys:
        s = seg.summarise([r for r in rows if r["task"] == task and r["label"] == label], METRICS)
        body.append([task, label, s["n_cases"], *[s[k] for k in METRICS]])
    return "## Per class\n\n" + markdown_table(["task", "label", "cases", *METRICS], body)


def _mean_weights(rows: list[dict]) -> str:
    if not rows:
        return "(no held-out cases)"
    keys = list(dict.fromkeys((r["task"], r["label"]) for r in rows))
    body = []
    for task, label in keys:
        sel = [r for r in rows if r["task"] == task and r["label"] == label]
        mods = list(dict.fromkeys(r["modality"] for r in sel))
        body.append([task, label, ", ".join(
            f"{m} {np.mean([r['mean_weight'] for r in sel if r['modality'] == m]):.3f}" for m in mods)])
    return markdown_table(["task", "label", "mean weight per modality"], body)


def _ordering(rows: list[dict]) -> bool | None:
    by = {r["model"]: r["dice"] for r in rows}
    if not {"unet", "amf-net", "sm-safe"} <= set(by):
        return None
    return bool(by["unet"] < by["amf-net"] < by["sm-safe"])


_NOTES = """## Notes on the comparison

- The paper's Table 1 is mean ± SD across the 10 MSD tasks with an unspecified split; its test labels are hidden,
  so this pipeline reports held-out folds of a patient-level 5-fold CV on imagesTr (the card's protocol).
- The paper gives no per-task numbers, loss, epochs or patch size; the card's resolved design is used (see the
  pipeline's docstring). Its IoU column is inconsistent with its Dice column (IoU = D/(2−D) per structure).
- HD95 is in mm on the resampled grid; empty truth and prediction are left out of HD95, an empty truth with a
  non-empty prediction scores the image diagonal."""

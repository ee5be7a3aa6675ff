"""dense-unet-teachers, the method (card: docs/papers/dense-unet-teachers.md).

Data (``datasets/iseg2017.py``, ``datasets/mrbrains13.py``): every subject's T1, T2 (MRBrainS13: T2-FLAIR) and label
volume, checked to share one grid (shape, voxel size, orientation; a mismatch is refused, naming the file: the
pipeline never resamples), labels mapped to 0 bg / 1 CSF / 2 GM / 3 WM (a value outside the layout's set is refused).
Each volume is cropped to the bounding box of its non-zero T1 voxels (released code), grown to at least one patch
per axis (a patch larger than the whole volume is a UsageError naming the file), and z-scored per modality over its
non-zero voxels (the paper states no normalisation; card). Split: ``dataset.val_subject`` (iSEG released config:
8) is validation, the others (or ``dataset.train_subjects``) train. iSEG's test labels are hidden, so the only
scored split is ``val``; MRBrainS13 is validated leave-one-out (``loo`` stage: one ``fuse`` run per subject).

Network (``models/dense_unet3d.py``): the card's 3D-DenseUNet, F = ``model.base`` (32), depth 3, bottom MHSA with 2
heads, attention up-blocks on by default (``model.up_attention``; the released code has plain transposed
convolutions there), dropout 0.5 before the 1×1×1 output and on attention matrices, He init. Full size:
1,820,260 parameters with 1 input channel (1,517,412 without the attention up-blocks, the card's ≈1.52 M); the
paper's 2.12 M / 2,331,160 are not reproduced by any reading of the released configuration (card), so nothing is
gated on them.

Training, each phase its own Lightning fit: random ``train.patch_size``³ patches (32), uniform over the training
subjects and over positions inside each cropped volume, ``train.patches_per_epoch`` (2000, the paper's
"iteration") per epoch, batch 8 (paper text), Adam lr 3e-5 (released config), no schedule, no augmentation; loss =
mean voxel cross-entropy (Eq. 6) + ``train.l2``·Σ‖w‖²/2 over convolution kernels (released code; the released
``class_weights · logits`` term is a bug and is left out). Each epoch ends with a validation on
``train.val_patches`` fixed random patches of the validation subject (val loss and voxel accuracy).

- ``train-teacher``: one teacher on ``teacher.modality`` alone (1 input channel).
- ``fuse``: the two teachers as child runs (``ctx.sweep``: reused when complete; their final weights, as the
  released code; the children get the ``fusion`` section's defaults, so fusion variants share one pair of
  teachers), then the fusion model (2 input channels: T1, T2; its own He init) for ``fusion.epochs``. Every
  ``fusion.every`` optimizer steps (default: one epoch = one validation cycle, released code; the paper's "each
  iteration" is ``-o fusion.every=1``) a fusion event: for every trainable tensor (conv kernels/biases, BN γ/β; not
  BN running statistics) W ← α·W + (1−α)·(W¹ + W²) (Eq. 4, the literal sum; ``fusion.op: mean`` halves it). The
  first convolution's input channel 0 is blended with the T1 teacher's kernel, channel 1 with the T2 teacher's
  (card's resolution). α (``fusion.alpha``): ``eq5`` = (P+1)/(1/L+N), literally, clamped to [0, 1], with P the
  voxel accuracy and L the cross-entropy of the fusion model's last validation (the one right after the previous
  event) and N the batch size, and 0.01 before the first validation; ``ramp`` (0.01 → 1 linearly over the events)
  and ``const:<v>`` (Table 7's ablation). Every α goes into ``fusion_events.csv`` and the logs.
- Loss "falls" is measured per phase as the last epoch's mean training loss over the first epoch's
  (``loss_ratio``, ``t1_loss_ratio``, ``t2_loss_ratio``; the teachers' from their runs' metrics). For the fusion
  model also from the first epoch after its first fusion event (``loss_ratio_after_first_event``): before it the
  model is an untrained network that the first event (α = 0.01) all but replaces by the teachers' term, so the
  phase's loss jumps there; the fixture's smoke gates this one.
- The background inside the crop box is 0 after z-scoring (as the non-zero-voxel statistics leave it) and the
  network must tell it from tissue by context; predictions are not masked to the non-zero T1 voxels.

Evaluation: MONAI sliding windows of the training patch (``inference.overlap`` 0.75 = the card's step 8 of 32; MONAI
puts the last window flush with the far edge) over the cropped volume, softmax averaged (``mode: constant``), argmax,
pasted back into the uncropped grid (background outside). Dice per tissue on the whole volume (``dice_csf``,
``dice_gm``, ``dice_wm``, ``mean_dice``) and voxel accuracy over all four classes; ``chance_*`` is each tissue's voxel
frequency, the Dice of a random guess at that rate. ``per_case.csv``, a three-plane overlay of each scored subject,
learning curves, α per event, ``paper.md`` beside Tables 4 / 2 / 3 / 7.

``predict`` (``predict.py``) writes iSEG's submission files: ``predictions/subject-N-label.hdr/.img`` (Analyze,
uint8, values 0/10/150/250, the input's grid and voxel size); MRBrainS13 inputs give
``predictions/<N>/segmentation.nii.gz`` with 0–3.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from medrun.datasets import iseg2017, mrbrains13
from medrun.errors import UsageError
from medrun.metrics import segmentation as segm

from .. import training
from ..predictor import Forward
from ..report import markdown_table, paper_md, paper_note, paper_table, read_series
from ..sweep import Child, headline, mean_sd_table, summarise
from ..tasks.segmentation import summarise as summarise_cases
from ..tasks.supervised import Supervised

TISSUES = ("csf", "gm", "wm")
MODALITY_INDEX = {"t1": 0, "t2": 1}


@dataclass
class Volume:
    id: str
    number: int
    files: list[str]
    image: np.ndarray  # (2, d, h, w) float32, cropped and z-scored
    label: np.ndarray | None  # (d, h, w) uint8 0..3, cropped
    box: tuple[slice, slice, slice]
    full_label: np.ndarray | None  # (D, H, W) uint8, the uncropped ground truth
    shape: tuple[int, int, int]
    ref: object  # nibabel image of the T1 (grid, affine, header of predictions)


def build_net(mm, in_channels: int) -> torch.nn.Module:
    from medrun.models.dense_unet3d import DenseUNet3D

    return DenseUNet3D(in_channels, 4, mm.base, mm.depth, mm.heads, mm.up_attention, mm.dropout, mm.attn_dropout)


def prepare(s, patch: int, label_values) -> Volume:
    """Read one subject, crop to the non-zero T1 box (at least ``patch`` per axis) and z-score."""
    image, label, ref = iseg2017.load_subject(s, ("t1", "t2"), label_values)
    shape = image.shape[1:]
    if any(n < patch for n in shape):
        raise UsageError(f"train.patch_size {patch} is larger than {s.images['t1']} ({'×'.join(map(str, shape))})",
                         fix=f"-o train.patch_size=<at most {min(shape)}, divisible by 2^(model.depth−1)>")
    box = iseg2017.crop_box(image[0] != 0, patch)
    files = [str(p) for p in s.images.values()] + ([str(s.label)] if s.label else [])
    return Volume(s.id, s.number, files, iseg2017.zscore(image[(slice(None), *box)]),
                  None if label is None else label[box], box, label, tuple(shape), ref)


class PatchData(Dataset):
    """``n`` random cubic patches per epoch: a subject uniformly, then a corner uniformly inside its cropped volume
    (torch's generator, so Lightning's seeding and exact resume apply)."""

    def __init__(self, vols: list[Volume], channels: list[int], patch: int, n: int):
        self.vols, self.ch, self.p, self.n = vols, channels, patch, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        v = self.vols[int(torch.randint(len(self.vols), (1,)))]
        corner = [int(torch.randint(s - self.p + 1, (1,))) for s in v.label.shape]
        sl = tuple(slice(c, c + self.p) for c in corner)
        x = torch.from_numpy(np.ascontiguousarray(v.image[(self.ch, *sl)]))
        return x, torch.from_numpy(v.label[sl].astype(np.int64))


def fixed_patches(vols: list[Volume], channels: list[int], patch: int, n: int, seed: int) -> TensorDataset:
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k in range(n):
        v = vols[k % len(vols)]
        sl = tuple(slice(c, c + patch) for c in (int(rng.integers(s - patch + 1)) for s in v.label.shape))
        xs.append(v.image[(channels, *sl)])
        ys.append(v.label[sl].astype(np.int64))
    return TensorDataset(torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)))


class LitSeg(L.LightningModule):
    """Eq. 6 (mean voxel cross-entropy) + l2·Σ‖w‖²/2 over convolution kernels; Adam, no schedule."""

    def __init__(self, net: torch.nn.Module, lr: float, l2: float):
        super().__init__()
        self.net, self.lr, self.l2 = net, lr, l2

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        ce = F.cross_entropy(self.net(x), y)
        loss = ce
        if self.l2 > 0:
            convs = (torch.nn.Conv3d, torch.nn.ConvTranspose3d)
            kernels = [m.weight for m in self.net.modules() if isinstance(m, convs)]
            loss = ce + self.l2 * sum((w ** 2).sum() for w in kernels) / 2
        self.log("train_loss", ce, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", F.cross_entropy(logits, y), on_epoch=True, batch_size=len(x))
        self.log("val_accuracy", (logits.argmax(1) == y).float().mean(), on_epoch=True, batch_size=len(x))

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.parameters(), lr=self.lr)


def loss_ratio(metrics_csv) -> dict:
    """First and last epoch's mean training cross-entropy and their ratio."""
    pts = read_series(metrics_csv).get("train_loss", [])
    if not pts:
        return {}
    first, last = pts[0][1], pts[-1][1]
    return {"loss_first": first, "loss_last": last, "loss_ratio": last / first if first > 0 else float("nan")}


class DenseUnetTeachers(Supervised):
    report_split = "val"

    # -- phase: a teacher (one modality) or the fusion model (both) -----------------------------------------------
    @property
    def teacher_phase(self) -> bool:
        return self.ctx is not None and self.ctx.stage == "train-teacher"

    @property
    def channels(self) -> list[int]:
        return [MODALITY_INDEX[self.m.teacher.modality]] if self.teacher_phase else [0, 1]

    def build_model(self) -> torch.nn.Module:
        return build_net(self.m.model, len(self.channels))

    @property
    def epochs(self) -> int:
        phase = self.m.teacher if self.teacher_phase else self.m.fusion
        return phase.epochs or self.m.train.epochs

    # -- data -------------------------------------------------------------------------------------------------------
    @property
    def reader(self):
        return iseg2017 if self.m.dataset.name == "iseg2017" else mrbrains13

    @property
    def label_values(self):
        return self.reader.LABEL_VALUES

    @cached_property
    def _splits(self) -> dict[str, list[Volume]]:
        d, root = self.m.dataset, self.ctx.data_roots[self.m.dataset.name]
        subjects = self.reader.read(root)
        numbers = [s.number for s in subjects]
        if d.val_subject not in numbers:
            raise UsageError(f"dataset.val_subject {d.val_subject} is not a labelled subject of {root}",
                             fix=f"use one of {numbers}")
        train_n = d.train_subjects or [n for n in numbers if n != d.val_subject]
        unknown = sorted(set(train_n) - set(numbers))
        if unknown or d.val_subject in train_n:
            raise UsageError(f"dataset.train_subjects {train_n}: " + (f"{unknown} not in {root}" if unknown
                             else "includes the validation subject"), fix=f"choose from {numbers}")
        p = self.m.train.patch_size
        vols = {s.number: prepare(s, p, self.label_values)
                for s in self.ctx.track(subjects, "reading subjects") if s.number in {*train_n, d.val_subject}}
        splits = {"train": [vols[n] for n in train_n], "val": [vols[d.val_subject]]}
        self.ctx.record_splits({k: [f for v in vs for f in v.files] for k, vs in splits.items()})
        return splits

    def splits(self) -> dict:
        return self._splits

    def dataset(self, vols, train: bool):
        t = self.m.train
        if train:
            return PatchData(vols, self.channels, t.patch_size, t.patches_per_epoch)
        return fixed_patches(vols, self.channels, t.patch_size, t.val_patches, self.m.seed)

    def lit_module(self, net):
        return LitSeg(net, self.m.train.lr, self.m.train.l2)

    def trainer_kwargs(self) -> dict:
        return {"callbacks": [self._events]} if getattr(self, "_events", None) is not None else {}

    def weights_metadata(self) -> dict:
        role = f"teacher-{self.m.teacher.modality}" if self.teacher_phase else "fusion"
        return {"pipeline": self.ctx.spec.slug, "role": role, "in_channels": str(len(self.channels))}

    # -- evaluation ---------------------------------------------------------------------------------------------------
    def segment(self, net, vol: Volume) -> np.ndarray:
        """The label map (D, H, W) uint8 0..3 of one volume: sliding windows over the crop, averaged softmax,
        argmax, pasted into the full grid."""
        x = torch.from_numpy(np.ascontiguousarray(vol.image[self.channels]))[None]
        probs = self.predictor.sliding_window(Forward(net, lambda n, t: torch.softmax(n(t), 1)), x)
        full = np.zeros(vol.shape, np.uint8)
        full[vol.box] = probs[0].argmax(0).numpy().astype(np.uint8)
        return full

    def evaluate(self, net, vols: list[Volume]):
        rows, self._pred = [], {}
        for v in self.ctx.track(vols, "segmenting"):
            pred = self._pred[v.id] = self.segment(net, v)
            gt = v.full_label
            row = {"subject": v.id, **{f"dice_{t}": float(segm.dice(pred == c, gt == c))
                                       for c, t in enumerate(TISSUES, 1)}}
            row["mean_dice"] = float(np.mean([row[f"dice_{t}"] for t in TISSUES]))
            row["accuracy"] = float((pred == gt).mean())
            brain = max(1, int((gt > 0).sum()))
            row.update({f"chance_{t}": float((gt == c).sum() / brain) for c, t in enumerate(TISSUES, 1)})
            rows.append(row)
        keys = [f"dice_{t}" for t in TISSUES] + ["mean_dice", "accuracy"] + [f"chance_{t}" for t in TISSUES]
        metrics = summarise_cases(rows, keys)
        metrics.update(training.count_params(net))
        return metrics, rows

    def figures(self, net, vols, metrics, rows, split):
        if not self.m.eval.overlays:
            return
        from .predict import overlay_three_planes

        for v, r in zip(vols, rows, strict=True):
            t1 = np.zeros(v.shape, np.float32)
            t1[v.box] = v.image[0]
            overlay_three_planes(self.ctx, f"overlay_{v.id}", t1, v.full_label, self._pred[v.id],
                                 f"{v.id}: Dice CSF {r['dice_csf']:.3f} GM {r['dice_gm']:.3f} WM {r['dice_wm']:.3f}")

    def summary_line(self, split, metrics):
        return (f"{split}: Dice CSF {metrics['dice_csf']:.4f}  GM {metrics['dice_gm']:.4f}  WM {metrics['dice_wm']:.4f}"
                f"  (mean {metrics['mean_dice']:.4f}, voxel accuracy {metrics['accuracy']:.4f})")

    def paper_kwargs(self, split, metrics):
        if self.teacher_phase:
            row = {"t1": "First teacher (T1)", "t2": "Second teacher (T2)"}[self.m.teacher.modality]
            table = {r[0]: r for r in self.paper_rows("table4")}
            if self.m.dataset.name == "iseg2017" and row in table:
                return {"expect": dict(zip(("dice_csf", "dice_gm", "dice_wm"), table[row][1:4], strict=True)),
                        "title": f"{self.ctx.spec.title}: {row}"}
            return {"expect": {}}
        return {}

    def paper_rows(self, name: str) -> list:
        from ..report import paper_data

        return paper_data(self.ctx.spec)["tables"][name]["rows"]

    def paper_sections(self, metrics):
        ds = self.m.dataset.name
        out = []
        if getattr(self, "_fusion_section", None):
            out.append(self._fusion_section)
        out += [paper_table(self.ctx.spec, "table4" if ds == "iseg2017" else "table3")]
        if ds == "iseg2017":
            out += [paper_table(self.ctx.spec, "table2"), paper_table(self.ctx.spec, "table7")]
        out.append(paper_note(self.ctx.spec, "comparison"))
        return out

    def after_fit(self) -> dict:
        out = loss_ratio(self.ctx.path / "logs" / "metrics.csv")
        if getattr(self, "_events", None) is not None:
            from .fusion import after_fusion

            out.update(after_fusion(self, self._events))
        return out

    # -- stages -----------------------------------------------------------------------------------------------------
    def train_teacher(self) -> dict:
        return {**self.train(), "modality": self.m.teacher.modality}

    def fuse(self) -> dict:
        from .fusion import fuse_stage

        return fuse_stage(self)

    def predict(self) -> dict:
        from .predict import predict_stage

        return predict_stage(self)

    def loo(self) -> dict:
        subjects = self.m.loo.subjects or [s.number for s in self.reader.read(self.ctx.data_roots[self.m.dataset.name])]
        runs = self.ctx.sweep([Child(f"subject{n}", {"dataset.val_subject": n, "dataset.train_subjects": None},
                                     stage="fuse", labels={"held_out": n}) for n in subjects], title="held-out subject")
        keys = [f"dice_{t}" for t in TISSUES] + ["mean_dice", "accuracy"]
        rows = [r.row for r in runs]
        self.ctx.write_csv("per_subject.csv", rows)
        summary = summarise(rows, keys)[0]
        metrics = {"subjects": len(rows), **headline(summary, keys)}
        table = markdown_table(["held out", "CSF", "GM", "WM", "mean", "run"],
                               [[r["held_out"], r.get("dice_csf"), r.get("dice_gm"), r.get("dice_wm"),
                                 r.get("mean_dice"), r["run_id"]] for r in rows])
        self.ctx.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx, present_only=True, sections=[
            f"## Leave-one-out over {len(rows)} subjects (each a fuse run of its own)\n\n" + table,
            "## Mean over held-out subjects\n\n" + mean_sd_table([summary], keys),
            paper_table(self.ctx.spec, "table3" if self.m.dataset.name == "mrbrains13" else "table4"),
            paper_note(self.ctx.spec, "comparison")]))
        return metrics

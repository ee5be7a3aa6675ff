"""totalct-sam, the method (card: docs/papers/totalct-sam.md).

Model: SAM-Med3D in its released `vit_b_ori` layout (`models.sam3d`) with the card's two changes
(`models.memorizing.TotalCTSAM`): C + 1 class tokens and one shared hypernetwork give (C+1) class logits
prompt-free ("Change 1"); a memorizing-transformer block (local attention + top-k attention over a FIFO kNN
memory, mixed by a per-head gate g = sigmoid(b_h), bias −5 so g ≈ 0.007 at start) acts on the decoder's image
tokens ("Change 2"). `model.memory: false` is the Table 3 ablation. SAM-Med3D's own mask token stays for the
point-prompted binary mask. `model.sammed3d_checkpoint` loads a SAM-Med3D `.pth` (vit_b_ori or turbo) by name;
missing and unexpected keys go to `sammed3d_load.json`; a 2D SAM or another width is a UsageError (exit 2), an
unreadable file a DataError (exit 3).

Data (`data.py`, `datasets.totalsegmentator`): cases and splits from `meta.csv`, classes from the mask file names
(sorted, or `dataset.classes` in the user's order; `classes.json`), label = the last mask covering a voxel.
MONAI preprocessing: RAS, 1.5 mm isotropic (bilinear CT, nearest label), CT window (`dataset.hu_window`, default
[−1000, 1000] HU, ours), per-volume z-score. Training crops: zero-pad to `img_size`³, class-balanced random crops
(`RandCropByLabelClassesd`, equal ratios, `crops_per_volume` = 2), flips on each axis with p = 0.5.

Training: Adam, constant lr (`train.lr` 5e-7 for SAM-Med3D modules, `train.lr_new` for the new ones, default the
same), batch 2 (= one volume's two crops), 20 epochs, seed 0, no validation loop (the paper evaluates the last
epoch). Loss: DiceCE (softmax, one-hot, C + 1 classes) on the class logits with the Dice over the whole batch (a
per-crop Dice of a class absent from a crop pushes small classes towards never being predicted). With
probability `train.prompt_prob` = 0.5 a step also trains the prompted path: per volume one class present in the
crop, 1–`max_clicks` (5) clicks, the first inside the class, the others in the error region of the same step's
prompt-free prediction (positive on misses, negative on false positives; SAM-Med3D's simulation without its
re-prediction), Dice + BCE on the binary mask. The encoder runs once per step; the memory block writes every
training forward's keys/values (not the prompted pass), is frozen in eval and saved with the weights.

Evaluation: prompt-free sliding window through the predictor (`inference:`: img_size³ windows, 50 % overlap,
constant blending, on the manifest's hardware and precision), argmax. Per case and per foreground class present
in the ground truth: Dice, IoU and recall ("Accuracy", the card's reading of Eq. 1), averaged over classes, then
cases; voxel accuracy as `pixel_accuracy`; on the resampled grid. `secs_per_case` times the window pass only.
The train stage scores `eval.split` (val, the paper's); `medrun eval --split test` the test split.

Predict: label maps `predictions/<case>.nii.gz` (uint8, int16 from 255 classes) for the eval split or
`predict.input`: NIfTI, NRRD/MHA files or DICOM series folders (read by `datasets.imageio`: rescale slope and
intercept applied, slices ordered by position), or a folder of TotalSegmentator cases. Each map is resampled back
(nearest) from the 1.5 mm RAS grid to the input's own voxel grid and written with the input's affine, so it
overlays the CT it came from in any viewer (a DICOM series gives NIfTI). `-o predict.point=[x,y,z]` (voxel of the
resampled RAS volume) gives the clicked binary mask of the img_size³ window centred on it,
`predictions/<case>_point.nii.gz`, mapped back the same way.

Choices: the card's `--no-memory`, `--lr-new`, `--sammed3d-checkpoint` and `--point` are manifest keys; dry runs
build 104 classes (v1) unless `dataset.classes` is set. Known limitation: the window pass accumulates the
(C+1)-channel float32 logits of the whole volume (≈15 GB for 300 × 300 × 400 voxels and 104 classes).

Fixture smoke (`totalsegmentator.fixture.yaml`): random init, lr 1e-3 for every module, batch 4 × 399 steps (the
card's limit is 400), CT window [−200, 300] HU (soft-tissue organs only), no flips (`dataset.flip_prob: 0`): on
the fixture liver and spleen differ by 15 HU under noise of SD 20 and mainly by side, a cue that flips on every axis
erase. With flips the smoke gave Dice 0.68 / 0.63 (seeds 0 / 1) against the card's ≥ 0.6; without, 0.791 / 0.772 /
0.769 (seeds 0 / 1 / 2). The paper's RandomFlip stays the default of the real-data manifest.

Baselines and extra stages: `model.arch` unetr | swinunetr trains MONAI's UNETR or SwinUNETR (`models.ct_baselines`)
on the same data, crops, split and scoring, from random init, with DiceCE only and every weight at `train.lr_new`
(default `train.lr`); no SAM-Med3D weights and no clicks for them. `ablate` (Table 3, `ablate.py`): with and
without the memorizing block as two train runs, one paired table. `baselines` (Table 1, `baselines.py`): one train
run per `baselines.archs`, plus `zeroshot` (`zeroshot.py`): SAM-Med3D without fine-tuning, clicked per structure.
"""

from __future__ import annotations

import time
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medrun.datasets import totalsegmentator as ts
from medrun.errors import DataError, UsageError
from medrun.models import ct_baselines
from medrun.models.memorizing import TotalCTSAM
from medrun.models.sam3d import Sam3dConfig, load_sammed3d_checkpoint

from ..predictor import Forward
from ..report import markdown_table, paper_data, paper_note, paper_table
from ..tasks import segmentation as segm
from ..tasks.supervised import Supervised
from .data import Crops, LoadCase, collate, preprocess_transforms


# -- the LightningModule -------------------------------------------------------------------------------------------
def _lit(net: TotalCTSAM, t):
    import lightning as L
    from monai.losses import DiceCELoss, DiceLoss

    class _Lit(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = net
            self.semantic_loss = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
            self.binary_dice = DiceLoss(sigmoid=True)

        def configure_optimizers(self):  # a baseline (UNETR, SwinUNETR) is new throughout: train.lr_new
            new = net.new_module_prefixes() if hasattr(net, "new_module_prefixes") else ("",)
            groups = {"sam": [], "new": []}
            for name, p in self.net.named_parameters():
                if p.requires_grad:
                    groups["new" if name.startswith(new) else "sam"].append(p)
            return torch.optim.Adam([{"params": groups["sam"], "lr": t.lr},
                                     {"params": groups["new"], "lr": t.lr_new or t.lr}])

        def training_step(self, batch, _):
            x, y = batch["image"], batch["label"]
            if not hasattr(self.net, "decode"):  # a baseline: class logits only, no prompt path
                loss = self.semantic_loss(self.net(x), y)
                self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=x.shape[0])
                return loss
            emb = self.net.image_encoder(x)
            _, logits = self.net.decode(emb)
            loss = self.semantic_loss(logits, y)
            self.log("train_semantic_loss", loss, on_step=False, on_epoch=True, batch_size=x.shape[0])
            if t.prompt_prob > 0 and float(torch.rand(())) < t.prompt_prob:
                points, target = simulate_clicks(y[:, 0], logits.detach().argmax(1), t.max_clicks)
                if points is not None:
                    masks, _ = self.net.decode(emb, points, write_memory=False)
                    bl = self.binary_dice(masks, target) + F.binary_cross_entropy_with_logits(masks, target)
                    self.log("train_prompt_loss", bl, on_step=False, on_epoch=True, batch_size=x.shape[0])
                    loss = loss + bl
            self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=x.shape[0])
            return loss

    return _Lit()


def simulate_clicks(label: torch.Tensor, pred: torch.Tensor, max_clicks: int):
    """Per volume of (B, X, Y, Z) labels: one class present (uniform), n ∈ 1…max_clicks clicks — the first a random
    voxel of the class, the rest random voxels of the prediction's error region for it (positive where the class
    was missed, negative where it was wrongly predicted). Returns ((coords (B, n, 3), labels (B, n)), binary target
    (B, 1, X, Y, Z)), or (None, None) when some volume has no foreground."""
    b = label.shape[0]
    n = int(torch.randint(1, max_clicks + 1, ()))
    coords = torch.zeros(b, n, 3)
    labels = -torch.ones(b, n, dtype=torch.long)  # -1: padding (not-a-point)
    targets = []
    for i in range(b):
        present = torch.unique(label[i])
        present = present[present > 0]
        if present.numel() == 0:
            return None, None
        c = present[int(torch.randint(len(present), ()))]
        gt = label[i] == c
        targets.append(gt)

        def pick(mask):
            idx = mask.nonzero()
            return idx[int(torch.randint(len(idx), ()))].float()

        coords[i, 0], labels[i, 0] = pick(gt), 1
        err = gt ^ (pred[i] == c)
        for j in range(1, n):
            if not err.any():
                break
            v = pick(err)
            coords[i, j], labels[i, j] = v, int(gt[tuple(v.long())])
    return (coords.to(label.device), labels.to(label.device)), torch.stack(targets)[:, None].float()


# -- metrics -------------------------------------------------------------------------------------------------------
def case_scores(pred: np.ndarray, gt: np.ndarray, classes: list[str]) -> tuple[dict, dict]:
    """(per-case means over the foreground classes present in gt, {class: {dice, iou, recall}})."""
    per_class = {}
    for i, name in enumerate(classes, start=1):
        g = gt == i
        if not g.any():
            continue
        per_class[name] = segm.case_metrics(pred == i, g, ("dice", "iou", "recall"))
    mean = {k: float(np.mean([v[k] for v in per_class.values()])) if per_class else float("nan")
            for k in ("dice", "iou", "recall")}
    return {"dice": mean["dice"], "iou": mean["iou"], "accuracy": mean["recall"],
            "pixel_accuracy": float((pred == gt).mean()), "n_classes": len(per_class)}, per_class



class TotalCTSam(Supervised):
    val_split = None  # no validation loop: the paper evaluates the last epoch

    @property
    def report_split(self) -> str:  # the train stage scores eval.split (val, the paper's)
        return self.m.eval.split

    def build_model(self, num_classes: int | None = None):
        """TotalCT-SAM, or the ``model.arch`` baseline (UNETR / SwinUNETR) for the same classes."""
        if num_classes is None:  # the dataset's classes in a stage; the v1 default of 104 in a dry run
            d = self.m.dataset
            num_classes = len(self.classes) if self.ctx is not None else len(d.classes) if d.classes else 104
        mm = self.m.model
        if mm.arch == "unetr":
            return ct_baselines.unetr(num_classes, mm.img_size, mm.feature_size or 16, mm.embed_dim,
                                      4 * mm.embed_dim, mm.num_heads)
        if mm.arch == "swinunetr":
            return ct_baselines.swinunetr(num_classes, mm.feature_size or 48)
        return TotalCTSAM(self.sam3d_config(num_classes), memory=mm.memory, memory_size=mm.memory_size,
                          topk=mm.memory_topk, memory_heads=mm.memory_heads, gate_init=mm.gate_init)

    def sam3d_config(self, num_classes: int) -> Sam3dConfig:
        """The manifest's SAM-Med3D sizes; ``num_classes`` 0 is plain SAM-Med3D (the zeroshot stage)."""
        mm = self.m.model
        return Sam3dConfig(img_size=mm.img_size, patch_size=mm.patch_size, embed_dim=mm.embed_dim, depth=mm.depth,
                          num_heads=mm.num_heads, window_size=mm.window_size,
                          global_attn_indexes=tuple(mm.global_attn_indexes), prompt_dim=mm.prompt_dim,
                          decoder_depth=mm.decoder_depth, decoder_mlp_dim=mm.decoder_mlp_dim, num_classes=num_classes)

    # -- data -------------------------------------------------------------------------------------------------
    @cached_property
    def _read(self) -> tuple[list[ts.Case], list[str]]:
        return ts.read(self.ctx.data_roots["data"], self.m.dataset.classes)

    @property
    def classes(self) -> list[str]:
        return self._read[1]

    def splits(self) -> dict:
        cases, classes = self._read
        by_split = {s: [c for c in cases if c.split == s] for s in ts.SPLITS}
        sizes = ", ".join(f"{s} {len(v)}" for s, v in by_split.items())
        self.ctx.log(f"totalsegmentator: {len(cases)} cases ({sizes}), {len(classes)} classes")
        self.ctx.write_json("classes.json", {"background": 0, **{c: i for i, c in enumerate(classes, start=1)}})
        self.ctx.record_splits({s: [c.id for c in v] for s, v in by_split.items()})
        split = self.m.eval.split
        if split not in by_split:
            raise UsageError(f"unknown split '{split}'", fix=f"use --split {' | '.join(by_split)}")
        for name in (split, "train") if self.ctx.stage == "train" else (split,):
            if not by_split[name]:
                raise DataError(f"meta.csv in {self.ctx.data_roots['data']} has no '{name}' cases",
                                fix="check its split column" if name == "train" else "pick another --split")
        return by_split

    def volume(self, case) -> dict:
        from monai.transforms import Compose

        item = LoadCase(self.classes)({"case": case})
        return Compose(preprocess_transforms(self.m.dataset))(item)

    def unlabelled(self, loaded) -> dict:
        """A CT read by ``datasets.imageio`` (values in HU) → ``{"image"}`` on the training grid (RAS, spacing,
        window, z-score), its spatial steps tracked so a prediction can be mapped back to the input's grid."""
        from monai.data import MetaTensor
        from monai.transforms import Compose

        if loaded.array.ndim != 3:
            raise DataError(f"{loaded.path} is not a 3D volume (shape {loaded.array.shape})",
                            fix="pass a CT volume: .nii.gz, .nrrd, .mha or a folder holding one DICOM series")
        item = {"image": MetaTensor(loaded.array[None], affine=torch.as_tensor(loaded.affine))}
        return Compose(self._image_transforms)(item)

    @cached_property
    def _image_transforms(self) -> list:
        """One set of instances: MONAI inverts a step only with the instance that applied it."""
        return preprocess_transforms(self.m.dataset, keys=("image",))

    def to_input_grid(self, labels: np.ndarray, image) -> np.ndarray:
        """A label map on the training grid → the input's own voxel grid (MONAI's inverse of the orientation and
        spacing steps, nearest neighbour)."""
        from monai.data import MetaTensor
        from monai.transforms import Compose, Invertd

        spatial = Compose(self._image_transforms[:2])
        pred = MetaTensor(torch.from_numpy(labels.astype(np.float32))[None], meta=dict(image.meta),
                          applied_operations=list(image.applied_operations))
        back = Invertd(keys="pred", transform=spatial, orig_keys="image", nearest_interp=True)(
            {"image": image, "pred": pred})["pred"]
        return back.as_tensor()[0].round().numpy().astype(labels.dtype)

    # -- training ---------------------------------------------------------------------------------------------
    def train_loader(self, splits: dict):
        t, d, size = self.m.train, self.m.dataset, self.m.model.img_size
        crops = Crops(splits["train"], self.classes, d, size, self.m.seed, cache=self.ctx.fixture or t.cache)
        loader = torch.utils.data.DataLoader(crops, batch_size=max(1, t.batch_size // d.crops_per_volume),
                                             shuffle=True, num_workers=t.num_workers, collate_fn=collate,
                                             generator=torch.Generator().manual_seed(self.m.seed))
        self.steps_per_epoch = len(loader)
        self.ctx.log(f"train {len(splits['train'])} volumes × {d.crops_per_volume} crops of {size}³, "
                     f"{len(loader)} steps/epoch × {t.epochs} epochs")
        return loader

    def lit_module(self, net):
        return _lit(net, self.m.train)

    def fit(self, splits: dict, net=None, **kw):
        net, path = self.build_model(), self.m.model.sammed3d_checkpoint
        if path:  # SAM-Med3D weights by name; the keys missing (the new modules) or unexpected are recorded
            from medrun.artifacts import sha256_file

            report = load_sammed3d_checkpoint(Path(path), net)
            self.sammed3d = {"file": str(path), "sha256": sha256_file(path), "missing": report.missing,
                             "unexpected": report.unexpected, "resized": report.resized}
            self.ctx.write_json("sammed3d_load.json", self.sammed3d)
            self.ctx.run.update_info(sammed3d_sha256=self.sammed3d["sha256"])
            self.ctx.log(f"SAM-Med3D weights from {path}: {report.summary()}")
        self.net, secs = super().fit(splits, net, **kw)
        return self.net, secs

    def weights_metadata(self) -> dict:
        return {"pipeline": "totalct-sam", "arch": self.m.model.arch, "classes": ",".join(self.classes),
                "memory": self.m.model.memory}

    def train(self) -> dict:
        metrics = super().train()
        if getattr(self, "sammed3d", None):
            metrics.update(sammed3d_missing=len(self.sammed3d["missing"]),
                           sammed3d_unexpected=len(self.sammed3d["unexpected"]))
        metrics["steps"] = self.steps_per_epoch * self.m.train.epochs
        block = getattr(self.net, "memory_block", None)
        if block is not None:
            metrics["memory_entries"] = len(block.memory)
            metrics["memory_gate"] = [round(float(g), 5) for g in torch.sigmoid(block.gate.detach())]
        return metrics

    # -- evaluation -------------------------------------------------------------------------------------------
    def segment(self, semantic, image) -> tuple[np.ndarray, float]:
        """Prompt-free sliding-window inference on a (1, X, Y, Z) volume → (argmax labels, seconds)."""
        x = image.as_tensor()[None].float() if hasattr(image, "as_tensor") else image[None].float()
        t0 = time.perf_counter()
        logits = self.predictor.sliding_window(semantic, x)
        secs = time.perf_counter() - t0
        return logits.argmax(1)[0].numpy().astype(np.int16), secs

    def evaluate(self, net, cases) -> tuple[dict, list[dict]]:
        semantic = self.predictor.setup(Forward(net, "semantic"))
        rows, per_class_rows, secs = [], {c: [] for c in self.classes}, []
        for i, case in enumerate(cases):
            vol = self.volume(case)
            gt = vol["label"][0].numpy().astype(np.int16)
            pred, s = self.segment(semantic, vol["image"])
            secs.append(s)
            scores, per_class = case_scores(pred, gt, self.classes)
            rows.append({"case": case.id, "split": self.m.eval.split, **scores, "secs": round(s, 4),
                         **{f"dice_{c}": v["dice"] for c, v in per_class.items()}})
            for c, v in per_class.items():
                per_class_rows[c].append(v)
            if i == 0:
                self.first = (vol["image"][0].numpy(), gt, pred, case.id)
        metrics = segm.summarise(rows, ("dice", "iou", "accuracy", "pixel_accuracy"))
        metrics["secs_per_case"] = round(float(np.mean(secs)), 4)
        metrics["per_class"] = {c: {k: float(np.mean([v[k] for v in vs])) for k in ("dice", "iou", "recall")}
                                | {"n_cases": len(vs)} for c, vs in per_class_rows.items() if vs}
        return metrics, rows

    def report(self, net, split: str, data) -> dict:
        metrics = super().report(net, split, data)
        self.ctx.write_csv("per_class.csv", [{"class": c, **v} for c, v in metrics["per_class"].items()])
        return metrics

    def summary_line(self, split: str, metrics: dict) -> str:
        return (f"{split}: Dice {metrics['dice']:.4f}  IoU {metrics['iou']:.4f}  Acc (mean recall) "
                f"{metrics['accuracy']:.4f}  PA {metrics['pixel_accuracy']:.4f}  "
                f"({metrics['secs_per_case']:.2f} s/case)")

    def figures(self, net, data, metrics, rows, split) -> None:
        image, gt, pred, case_id = self.first
        counts = np.bincount(gt.ravel(), minlength=len(self.classes) + 1)[1:]
        if counts.any():
            c = int(counts.argmax()) + 1
            z, name = int(np.argmax((gt == c).sum((0, 1)))), self.classes[c - 1]
            segm.overlay(self.ctx, f"overlay_{case_id}_{name}", image[:, :, z], gt[:, :, z] == c, pred[:, :, z] == c,
                         f"{case_id} {name} (axial z={z}): green truth, red prediction")

    def paper_kwargs(self, split: str, metrics: dict) -> dict:
        """A baseline's page compares with its own Table 1 row (UNETR) or with none (SwinUNETR is not in it)."""
        arch = self.m.model.arch
        if arch == "unetr":
            return {"title": "UNETR baseline (totalct-sam Table 1)", "expect": {"dice": 0.7722, "iou": 0.6289,
                                                                                "accuracy": 0.7023}}
        if arch == "swinunetr":
            return {"title": "SwinUNETR baseline (not in the paper)", "expect": {}}
        if not self.m.model.memory:
            return {"title": "TotalCT-SAM without memory (Table 3)", "table": "Table 3",
                    "expect": {"dice": 0.8066, "iou": 0.6759, "accuracy": 0.7989}}
        return {}

    # -- extra stages: Table 3 as a paired sweep, Table 1's baselines, SAM-Med3D zero-shot ------------------------
    def ablate(self) -> dict:
        from .ablate import ablate

        return ablate(self)

    def baselines(self) -> dict:
        from .baselines import baselines

        return baselines(self)

    def zeroshot(self) -> dict:
        from .zeroshot import zeroshot

        return zeroshot(self)

    def paper_sections(self, metrics: dict) -> list[str]:
        spec, mem, arch = self.ctx.spec, self.m.model.memory, self.m.model.arch
        paper = {r[0]: r[1:] for r in paper_data(spec)["tables"]["table2"]["rows"]}
        cell = lambda c, i: f"{paper[c][i]:.2f} / {paper[c][i + 1]:.2f}" if c in paper else "—"  # noqa: E731
        rows = [[c, v["n_cases"], f"{100 * v['dice']:.2f}", f"{100 * v['iou']:.2f}", cell(c, 0), cell(c, 2)]
                for c, v in sorted(metrics["per_class"].items())]
        per_class = "## Per class (Table 2)\n\n" + markdown_table(
            ["class", "cases", "Dice %", "IoU %", "paper TotalCT-SAM Dice / IoU", "paper SAM-Med3D Dice / IoU"], rows)
        label = f"{'with' if mem else 'without'} memory" if arch == "totalct-sam" else arch
        ours = [f"**this run** ({label})", f"{100 * metrics['dice']:.2f}",
                f"{100 * metrics['iou']:.2f}", f"{100 * metrics['accuracy']:.2f}", "—",
                f"{metrics['secs_per_case']:.2f}"]
        table1 = paper_table(spec, "table1") + "\n" + "| " + " | ".join(ours) + " |"
        notes = paper_note(spec, "comparison") + (
            "" if arch != "totalct-sam" else "" if mem else
            "\n- This run has no memorizing block: compare with the Table 3 'without memory' row.")
        if arch != "totalct-sam":
            notes += "\n" + paper_note(spec, "baselines")
        return [per_class, table1, notes]

    # -- prediction -------------------------------------------------------------------------------------------
    def predict_items(self) -> list[tuple[str, Path]]:
        """(case id, CT) of ``predict.input`` (a volume file, a DICOM series folder, a folder of them or of
        TotalSegmentator cases, a glob) or of eval.split."""
        from medrun.datasets import imageio

        src = self.m.predict.input
        if not src:
            return [(c.id, c.ct) for c in self.split_of(self.splits())]
        folder = Path(src).expanduser()
        cases = folder.is_dir() and not imageio.is_dicom_series(folder)
        files = (sorted(folder.rglob("ct.nii.gz")) if cases else []) or \
            self.ctx.predict_inputs(src, imageio.VOLUME_SUFFIXES, what="CT volumes", series=True)
        return [(f.parent.name if f.name == "ct.nii.gz" else imageio.stem(f), f) for f in files]

    def predict_rows(self, net, items) -> list[dict]:
        point = self.m.predict.point
        if point is not None and self.m.model.arch != "totalct-sam":
            raise UsageError(f"predict.point needs the promptable model; model.arch {self.m.model.arch} has no prompt "
                             "path", fix="drop -o predict.point, or predict with a totalct-sam train run")
        run = self.predictor.setup(Forward(net, "semantic" if point is None else "prompted"))
        from medrun.datasets import imageio

        labels = self.classes if point is None else ["foreground"]
        rows = []
        for case_id, path in self.ctx.track(items, "predicting"):
            loaded = imageio.read(path)
            image = self.unlabelled(loaded)["image"]
            out, secs = (self.segment(run, image) if point is None else (self.prompted(run, image, point), 0.0))
            out = self.to_input_grid(out.astype(np.uint8 if out.max() < 255 else np.int16), image)
            rel = self.ctx.write_like(f"predictions/{case_id}{'_point' if point is not None else ''}", out, loaded)
            rows.append({"case": case_id, "input": str(path), "prediction": rel.relative_to(self.ctx.path).as_posix(),
                         "shape": "x".join(map(str, out.shape)), "secs": round(secs, 4),
                         **{f"voxels_{c}": int((out == i).sum()) for i, c in enumerate(labels, start=1)}})
        self.ctx.log(f"predictions in {self.ctx.path / 'predictions'}")
        return rows

    def predict_summary(self, rows: list[dict]) -> dict:
        return {"mode": "prompt-free" if self.m.predict.point is None else "point",
                "secs_per_case": round(float(np.mean([r["secs"] for r in rows])), 4),
                "voxels": {r["case"]: {k.removeprefix("voxels_"): v for k, v in r.items() if k.startswith("voxels_")}
                           for r in rows}}

    def prompted(self, prompted, image, point) -> np.ndarray:
        """Binary mask from one positive click: the img_size³ window centred on it (clamped inside the volume)."""
        s = self.m.model.img_size
        x = image.as_tensor().float()
        shape = x.shape[1:]
        if any(not 0 <= c < n for c, n in zip(point, shape, strict=True)):
            raise UsageError(f"predict.point {list(point)} lies outside the resampled volume {tuple(shape)}",
                             fix="give voxel indices of the 1.5 mm RAS volume")
        pad = [max(0, s - n) for n in shape]
        x = F.pad(x, [v for pd in reversed(pad) for v in (0, pd)])
        start = [min(max(0, c - s // 2), n - s) for c, n in zip(point, x.shape[1:], strict=True)]
        win = x[:, start[0]:start[0] + s, start[1]:start[1] + s, start[2]:start[2] + s]
        coords = torch.tensor([[[c - o for c, o in zip(point, start, strict=True)]]], dtype=torch.float32)
        mask = self.predictor(prompted, win[None], coords, torch.ones(1, 1, dtype=torch.long))[0, 0] > 0
        out = torch.zeros(x.shape[1:], dtype=torch.bool)
        out[start[0]:start[0] + s, start[1]:start[1] + s, start[2]:start[2] + s] = mask
        return out[: shape[0], : shape[1], : shape[2]].numpy().astype(np.uint8)

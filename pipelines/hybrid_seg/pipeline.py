"""hybrid-seg, the method (card: docs/papers/hybrid-seg.md). The seed paper is an outline with no method, data or
results; every design choice is the card's or, where the card is silent, ours (listed here).

Data. PanNuke (``datasets/pannuke.py``): the three fold rotations (``dataset.rotation`` 1, 2, 3: train/val/test =
folds 1/2/3, 2/1/3, 3/2/1). CoNSeP (``datasets/consep.py``): Train images tiled into ``dataset.tile``² crops
overlapping by ``dataset.overlap`` (256/64); a ``dataset.val_fraction`` of the Train images (random,
``split_seed``) is held out, tiled the same way, for validation; Test images are scored whole (reflect-padded to a
multiple of 16 for the network, cropped back). CoNSeP's "other" nuclei (type 1) keep their instances (binary
metrics count them) but have no type (NC target background; ours: the card says "ignored" without saying how).
Targets: NP (nucleus vs background), HV (MONAI ``ComputeHoVerMaps``, recomputed after each augmentation so the
distances stay right under rotation), NC (type map). Images are scaled to [0, 1], then normalised by the per-channel
mean/sd of the training split (recomputed by every stage from the same split). Augmentation (train only): rot90,
flip, HED jitter ±5 %, brightness/contrast ±10 %, Gaussian blur σ ≤ 1 (photometric ones with p 0.5; ours).

Metadata. A 19-way tissue one-hot from types.npy (CoNSeP: no tissue, all zeros), plus an optional
``dataset.metadata_csv`` (``image_id`` = our patch id, e.g. ``fold1_0003``): numeric columns z-scored with the mean
imputed and a missing flag, other columns one-hot with "unknown". Images given to ``predict`` have no metadata: a
zero vector.

Network (``models/hybridnet.py``): HybridNet as the card (full: widths 32/64/128/256, d 256, 4 layers, 8 heads,
MLP 1024, 8,735,018 parameters without fusion); ``model.arch: cnn`` is the CNN-only ablation, ``swin`` MONAI
SwinUNETR (6,303,100). Fusion modes as the card; "gated" scales the FiLM residual and the metadata token by a
softmax over two learned logits (our reading of "softmax-normalised learned source weights").

Loss: MONAI ``HoVerNetLoss`` with weight 2 on MSGE and 1 elsewhere (MONAI's default puts 2 on the HV MSE; the card's
weights are set explicitly). AdamW (lr 1e-4, wd 1e-4), linear warm-up over 5 epochs then cosine (per epoch), batch
16, 100 epochs. Model selection: Lightning ``ModelCheckpoint(monitor="val_bpq")`` — binary PQ on the validation
split after post-processing (the card says "validation PQ"; bPQ needs no type head to be right first).

Post-processing (``method.instances``): the card's recipe with HoVer-Net's / MONAI's signed form of the boundary map,
S = max(1 − norm(Sobel_x h), 1 − norm(Sobel_y v)) (3×3 ``ndimage.sobel`` on min-max-normalised HV maps); the card's
norm|Sobel| made the interior of small nuclei (steep HV slope) look like boundary, so they got no marker and
vanished. Markers opened with a disk of radius 1; a mask component with no marker is kept as one instance (ours).
Checked against MONAI ``HoVerNetInstanceMapPostProcessing`` in the tests. Instance type = majority NC vote over
classes 1–5, score = mean p_NP.

Fixture runs (the card's smoke: tiny HybridNet, 3 epochs): 12 training patches are too few for 3 epochs at batch
16, so the fixture manifests use batch 2, lr 3e-3 without warm-up and ``train.repeats`` augmented passes per epoch.

Metrics per image, averaged over images (NaN/inf left out): NP Dice/IoU (both empty → 1), HD95 in px and boundary
F1 at 2 px of the nucleus mask (``medrun.metrics.segmentation``), bPQ (with DQ, SQ), mPQ (PanNuke: per-image PQ of
each class present in the ground truth, averaged over those classes), per-class PQ and type-map Dice/IoU, AJI, AP50
and AP@[.5:.95] (COCO-style, ``medrun.metrics.instance``). The train stage scores the test split with the selected
weights.

``predict`` writes ``predictions/<id>_inst.png`` (16-bit instance ids), ``<id>_type.png`` (type codes 0–5) and an
overlay figure per image. Extra stages live in ``fusions.py``, ``explain.py``, ``generative.py`` (gen-train,
generate, synth-train), ``adapt.py`` and ``deploy.py`` (compress, bench, export-onnx, export-review); their choices
are in their docstrings. The card's ``export`` verb is ``export-onnx`` (``medrun export`` is the bundle command).
"""

from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medrun.datasets import consep, pannuke
from medrun.errors import DataError

from .. import training
from ..report import markdown_table, paper_note, paper_table
from ..tasks.supervised import Supervised
from . import method as M
from .method import Nuclei

ROTATIONS = {1: (1, 2, 3), 2: (2, 1, 3), 3: (3, 2, 1)}
KEYS = ("np_dice", "bpq", "mpq", "aji", "ap50")


def build_net(mm, meta_dim: int) -> torch.nn.Module:
    from medrun.models.hybridnet import HybridNet, SwinHeads

    if mm.arch == "swin":
        return SwinHeads(3, M.N_TYPES, mm.swin_feature_size)
    return HybridNet(3, tuple(mm.widths), mm.d_model, mm.heads, mm.layers, mm.mlp, mm.dropout, M.N_TYPES,
                     mm.fusion, meta_dim if mm.fusion != "none" else 0, mm.meta_embed,
                     "cnn" if mm.arch == "cnn" else "transformer")


def tiles(side: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` over ``side`` with the given overlap; the last one flush with the end."""
    if side <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, side - tile + 1, step))
    return starts if starts[-1] == side - tile else [*starts, side - tile]


class HybridSeg(Supervised):
    report_split = "test"
    best = None
    synthetic: Nuclei | None = None  # generated pairs mixed into training (synth-train)

    # -- data -----------------------------------------------------------------------------------------------------
    def _root(self) -> Path:
        return self.ctx.data_roots[self.m.dataset.name]

    @cached_property
    def metadata_table(self):
        path = self.m.dataset.metadata_csv
        return M.read_metadata(path) if path else None

    @property
    def meta_dim(self) -> int:
        t = self.metadata_table
        extra = 0 if t is None else 2 * len(t["numeric"]) + sum(len(v) for v in t["categorical"].values())
        return len(pannuke.TISSUES) + extra

    def _nuclei(self, ids, files, images, inst, types, tissue) -> Nuclei:
        meta = M.metadata_vectors(tissue, ids, self.metadata_table, pannuke.TISSUES)
        return Nuclei(list(ids), list(files), images, inst, types, meta)

    def read_fold(self, k: int) -> Nuclei:
        f = pannuke.read_fold(self._root(), k, self.m.dataset.limit)
        return self._nuclei(f.ids, f.files, f.images, f.inst, f.types, f.tissue)

    def read_consep(self, part: str) -> list[tuple]:
        cases = consep.read(self._root(), part)
        cases = cases[:self.m.dataset.limit] if self.m.dataset.limit else cases
        return [(c, *consep.load(c)) for c in cases]

    def _tiled(self, loaded) -> Nuclei:
        d = self.m.dataset
        ids, files, imgs, insts, types = [], [], [], [], []
        for c, img, ins, typ in loaded:
            if min(img.shape[:2]) < d.tile:
                raise DataError(f"{c.image} is {img.shape[1]}×{img.shape[0]}, smaller than dataset.tile {d.tile}",
                                fix=f"lower -o dataset.tile (a multiple of 16 ≤ {min(img.shape[:2])})")
            for y in tiles(img.shape[0], d.tile, d.overlap):
                for x in tiles(img.shape[1], d.tile, d.overlap):
                    sl = np.s_[y:y + d.tile, x:x + d.tile]
                    ids.append(f"{c.id}_y{y}_x{x}")
                    files.append(str(c.image))
                    imgs.append(img[sl])
                    insts.append(_relabel(ins[sl]))
                    types.append(typ[sl])
        return self._nuclei(ids, files, np.stack(imgs), np.stack(insts), np.stack(types), [""] * len(ids))

    def _whole(self, loaded) -> Nuclei:
        shapes = {img.shape for _, img, _, _ in loaded}
        if len(shapes) > 1:
            raise DataError(f"CoNSeP test images differ in size ({sorted(shapes)[:3]})",
                            fix="CoNSeP's images are all 1000×1000; check the Test/Images folder")
        return self._nuclei([c.id for c, *_ in loaded], [str(c.image) for c, *_ in loaded],
                            np.stack([x[1] for x in loaded]), np.stack([x[2] for x in loaded]),
                            np.stack([x[3] for x in loaded]), [""] * len(loaded))

    def splits(self) -> dict[str, Nuclei]:
        d = self.m.dataset
        if d.name == "pannuke":
            tr, va, te = ROTATIONS[d.rotation]
            splits = {"train": self.read_fold(tr), "val": self.read_fold(va), "test": self.read_fold(te)}
        else:
            train = self.read_consep("Train")
            n_val = max(1, round(d.val_fraction * len(train))) if len(train) > 1 else 0
            pick = set(np.random.default_rng(d.split_seed).permutation(len(train))[:n_val].tolist())
            splits = {"train": self._tiled([x for i, x in enumerate(train) if i not in pick]),
                      "val": self._tiled([x for i, x in enumerate(train) if i in pick]) if pick else None,
                      "test": self._whole(self.read_consep("Test"))}
            splits = {k: v for k, v in splits.items() if v is not None}
        self.ctx.record_splits({k: sorted(set(v.files)) for k, v in splits.items()})
        self._stats = self.channel_stats(splits["train"])
        return splits

    @staticmethod
    def channel_stats(data: Nuclei) -> tuple[list[float], list[float]]:
        x = data.images.reshape(-1, 3).astype(np.float64) / 255
        return x.mean(0).tolist(), np.maximum(x.std(0), 1e-3).tolist()

    @property
    def stats(self):
        if not hasattr(self, "_stats"):
            self.splits()
        return self._stats

    # -- the template's hooks -------------------------------------------------------------------------------------
    def build_model(self) -> torch.nn.Module:
        return build_net(self.m.model, self.meta_dim)

    @property
    def use_meta(self) -> bool:
        return self.m.model.fusion != "none"

    def dataset(self, data: Nuclei, train: bool):
        t = self.m.train
        return M.NucleiData(data, *self.stats, train, self.synthetic if train else None,
                            self.m.synth_train.rho if self.synthetic is not None else 0.0, t.repeats if train else 1,
                            t.augment)

    def lit_module(self, net):
        return M.LitHybrid(net, self.m.loss, self.m.train, self.m.post, self.use_meta)

    def trainer_kwargs(self) -> dict:
        if self.m.train.select != "val_pq":
            return {}
        self.best = training.ModelCheckpoint(dirpath=self.ctx.path / "checkpoints", filename="best",
                                             monitor="val_bpq", mode="max", save_top_k=1, save_weights_only=True,
                                             enable_version_counter=False)
        return {"callbacks": [self.best]}

    def fit(self, splits, net=None, *, checkpoint: bool = True):
        net, secs = super().fit(splits, net, checkpoint=checkpoint)
        if self.best is not None and self.best.best_model_path:
            training.load_weights(net, Path(self.best.best_model_path), prefix="net.")
            self.best_val_bpq = float(self.best.best_model_score)
        return net.eval(), secs

    def after_fit(self) -> dict:
        score = getattr(self, "best_val_bpq", None)
        return {"best_val_bpq": score} if score is not None else {}

    def weights_metadata(self) -> dict:
        mean, std = self.stats
        return {"pipeline": "hybrid-seg", "arch": self.m.model.arch, "fusion": self.m.model.fusion,
                "mean": mean, "std": std}

    # -- inference ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def outputs(self, net, images: np.ndarray, meta: np.ndarray | None = None, pred=None) -> list[dict]:
        """The network's heads per image (CPU tensors), in batches, reflect-padded to a multiple of 16."""
        pred = pred or self.predictor
        bs, out = self.m.eval.batch_size, []
        h, w = images.shape[1:3]
        ph, pw = (-h) % 16, (-w) % 16
        for i in range(0, len(images), bs):
            x = M.normalise(images[i:i + bs], *self.stats)
            if ph or pw:
                x = F.pad(x, (0, pw, 0, ph), mode="reflect")
            args = (x, torch.from_numpy(meta[i:i + bs])) if self.use_meta and meta is not None else (x,)
            o = pred(net, *args)
            out += [{k: v[j, :, :h, :w] for k, v in o.items()} for j in range(len(x))]
        return out

    def decode_all(self, net, data: Nuclei) -> list[dict]:
        return [M.decode(o, self.m.post) for o in self.ctx.track(self.outputs(net, data.images, data.meta),
                                                                 "post-processing")]

    def evaluate(self, net, data: Nuclei):
        self._decoded = self.decode_all(net, data)
        rows = [{"case": cid, **M.image_metrics(d, gi, gt)}
                for cid, d, gi, gt in zip(data.ids, self._decoded, data.inst, data.types, strict=True)]
        metrics = M.summarise(rows)
        metrics.pop("n_true", None), metrics.pop("n_pred", None)
        metrics["n_nuclei_true"] = int(sum(r["n_true"] for r in rows))
        metrics["n_nuclei_pred"] = int(sum(r["n_pred"] for r in rows))
        metrics.update(training.count_params(net))
        return metrics, rows

    def figures(self, net, data: Nuclei, metrics, rows, split):
        for i in range(min(self.m.eval.overlays, len(data))):
            overlay_figure(self.ctx, f"overlay_{data.ids[i]}", data.images[i], self._decoded[i]["inst"],
                           data.inst[i], f"{data.ids[i]}  bPQ {rows[i]['bpq']:.2f}  Dice {rows[i]['np_dice']:.2f}")

    def summary_line(self, split, metrics):
        return f"{split}: " + "  ".join(f"{k} {metrics.get(k, math.nan):.4f}" for k in KEYS)

    def paper_kwargs(self, split, metrics):
        return {"keys": [*KEYS, "ap", "dq", "sq", "hd95", "boundary_f1", *[f"pq_{c}" for c in M.CLASS_NAMES]],
                "present_only": True}

    def paper_sections(self, metrics):
        mm = self.m.model
        run = (f"## This run\n\nModel: {mm.arch}" + (f" (fusion {mm.fusion})" if mm.arch != "swin" else "")
               + f", {metrics['params_total']:,} parameters. Split `{metrics['split']}`: {metrics['n_images']} "
               f"images, {metrics['n_nuclei_true']} true and {metrics['n_nuclei_pred']} predicted nuclei. bPQ and "
               "mPQ follow PanNuke (per image, then averaged); AP is COCO-style (score = mean p_NP).")
        return [run, paper_table(self.ctx.spec, "reference"), paper_table(self.ctx.spec, "acceptance"),
                paper_note(self.ctx.spec, "comparison")]

    # -- predict --------------------------------------------------------------------------------------------------
    def predict_rows(self, net, items) -> list[dict]:
        if isinstance(items, Nuclei):
            names, images, metas = items.ids, list(items.images), list(items.meta)
        else:
            from medrun.datasets.images import open_image, to_8bit

            names, images = [], []
            for f in items:
                with open_image(f) as im:
                    images.append(np.asarray(to_8bit(im, f).convert("RGB"), np.uint8))
                names.append(f.stem)
            metas = [np.zeros(self.meta_dim, np.float32)] * len(images)
        rows = []
        for name, img, meta in self.ctx.track(list(zip(names, images, metas, strict=True)), "predicting"):
            d = M.decode(self.outputs(net, img[None], meta[None])[0], self.m.post)
            self.ctx.write_png(f"predictions/{name}_inst.png", d["inst"].astype(np.uint16))
            self.ctx.write_png(f"predictions/{name}_type.png", d["type_map"])
            overlay_figure(self.ctx, f"predictions/{name}_overlay", img, d["inst"], None, name, d["type_map"])
            counts = np.bincount(list(d["types"].values()), minlength=M.N_TYPES) if d["types"] else [0] * 6
            rows.append({"image": name, "nuclei": len(d["types"]),
                         **{f"n_{c}": int(counts[i + 1]) for i, c in enumerate(M.CLASS_NAMES)},
                         "mean_score": float(np.mean(list(d["scores"].values()))) if d["scores"] else math.nan})
        return rows

    def predict_summary(self, rows):
        return {"nuclei": int(sum(r["nuclei"] for r in rows))}

    # -- extra stages ---------------------------------------------------------------------------------------------
    def fusions(self):
        from .fusions import fusions

        return fusions(self)

    def explain(self):
        from .explain import explain

        return explain(self)

    def gen_train(self):
        from .generative import gen_train

        return gen_train(self)

    def generate(self):
        from .generative import generate

        return generate(self)

    def synth_train(self):
        from .generative import synth_train

        return synth_train(self)

    def adapt(self):
        from .adapt import adapt

        return adapt(self)

    def compress(self):
        from .deploy import compress

        return compress(self)

    def bench(self):
        from .deploy import bench

        return bench(self)

    def export_onnx(self):
        from .deploy import export_onnx

        return export_onnx(self)

    def export_review(self):
        from .deploy import export_review

        return export_review(self)

    def table(self, rows: list[dict], label: str) -> str:
        return markdown_table([label, *KEYS], [[r.get(label), *[r.get(k) for k in KEYS]] for r in rows])


def _relabel(inst: np.ndarray) -> np.ndarray:
    """Instance ids of a crop made consecutive (1…n)."""
    ids, inv = np.unique(inst, return_inverse=True)
    return inv.reshape(inst.shape).astype(np.int32) if ids[0] == 0 else (inv.reshape(inst.shape) + 1).astype(np.int32)


TYPE_COLOURS = np.array([[0, 0, 0], [230, 30, 30], [30, 200, 30], [30, 90, 230], [240, 200, 0], [230, 120, 220]],
                        np.float32) / 255


def overlay_figure(ctx, name: str, image, pred_inst, true_inst=None, title: str = "", type_map=None):
    """The image with predicted instance outlines (red, or coloured by type) and true outlines (green)."""
    from skimage.segmentation import find_boundaries

    img = image.astype(np.float32) / 255
    if true_inst is not None:
        img[find_boundaries(true_inst, mode="inner")] = (0.1, 0.9, 0.1)
    edge = find_boundaries(pred_inst, mode="inner")
    img[edge] = TYPE_COLOURS[type_map[edge]] if type_map is not None else (0.95, 0.1, 0.1)
    with ctx.figure(name, figsize=(4, 4)) as (fig, ax):
        ax.imshow(img, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(title + ("  (green: truth, red: prediction)" if true_inst is not None else ""), fontsize=7)

"""icu-vitals, the method (card: docs/papers/icu-vitals.md).

Data (``datasets/icu_monitors.py``): the card's canonical layout, images/ + corners.csv (+ vitals.csv, boxes.csv,
ecg.csv). Photos are split at random (``split_seed``) into train / val / test by ``val_fraction`` and
``test_fraction`` (the paper gives no split). The CloudPhysician CSV adapter (``--format cloudphysician``) is not
written: its layout could not be checked offline; convert to corners.csv / vitals.csv (docs/papers/icu-vitals.md).

Corner regressor (``models/corner_regressor.py``): MONAI EfficientNet-B4 features (the issue asks for MONAI's
EfficientNet instead of the card's torchvision one; torchvision is not installed) → Conv3×3 1280 → 1540 → 1960
('valid', ReLU; 12 → 10 → 8 → 6 at 380²) → GAP → Dense 1024 → 128 (ReLU) → 8 (linear). Backbones B0–B4,
MobileNetV2 (when torchvision is installed) or ``tiny`` (4 stride-2 conv blocks with two coordinate channels
appended to every block's input and to its output, for CPU smoke runs; the fixture also narrows the head to
64/96/128 → 128/32 and puts BatchNorm after each head conv, ``model.head_norm``: without both, the tiny network
trained from scratch did not get below the predict-the-mean baseline in 30 epochs). The 8 outputs are
0.5 + 0.1·Dense(…) (a fixed affine, no parameters) so that targets in 0–1 train at unit scale. ImageNet weights only
from ``model.backbone_weights`` (nothing is downloaded); without them the backbone starts at random, with a warning.
Inputs: the photo padded white by 300/1280 of its width and 169/720 of its height on each side (the code), resized
to ``input_size``², ImageNet-normalised. Targets: the corners (TL, TR, BR, BL, clockwise from the top-left; the
code's order could not be checked) in the padded frame divided by its size (0–1), MSE (ours: pixel targets would only
rescale the loss). ``rms_px`` is the RMS over the 8 coordinates in the padded frame resized back to the photo's size,
the unit of the code's 6.87 / 8.67 px; ``corner_err_px`` the mean corner distance in photo pixels;
``rms_px_mean_baseline`` predicts the training mean for every photo.

Training: Adam lr 1e-4, batch 16, 50 epochs (card, "ours" where the paper is silent); the code's ×4 augmentation is
``train.copies`` passes per epoch, the first unaugmented, the others with a random affine (±8°, scale 0.9–1.1,
shift ±5 %), perspective jitter (±3 % per corner) and brightness/contrast (±20 %), corners moved with the image.
The last epoch's weights are kept. The fixture uses the tiny backbone at 128² (the card says 192²: at 192² the
ratio to the mean baseline was 0.51 after 30 epochs, at 128² about 0.4) and lr 2e-3 (from scratch, 30 epochs).
Decoded photos are kept in memory when a split has at most 256 of them.

Extraction (``extract.py``, ``deskew.py``, ``ocr.py``, ``rules.py``; their docstrings hold the details):
ARP deskew (Hann-windowed central square, R = side/2 − 1, coarse ±45° step 0.1°, correction ±1° step 0.02° on
s ∈ [R/8, R], D = 0.5°: ours, the reference code was not available) → corners → box crop (+20/1280 on the right)
resized to 1280×720 → ECG by green masking → OCR → rules (exclusive assignment, BP first; sanity rules of the code).
OCR engines: ``oracle`` (labelled boxes), ``crnn-tiny`` (classical detection + CRNN/CTC trained by ``train-ocr`` on
synthetic crops; ``extract.crnn_weights`` or else a ``train-ocr`` run of this manifest, run or reused as a child),
``paddle`` / ``easyocr`` (exit 4 naming the package or model folder that is missing). crnn-tiny reads one channel,
the crop's brightness stretched from its background to its brightest pixel (``ocr.normalise``), through a conv stack
that leaves 16 time steps for a 128-px crop (``models.crnn``, ``time_stride=8``); from RGB with 32 time steps its
CTC loss stayed on the all-blank plateau for the whole CPU budget. The fixture trains it for ~440 steps (batch 32,
Adam 3e-3 one-cycle) and its smoke run checks the card's "crnn-tiny HR > 50 %" (``hr_acc_crnn_tiny``).

Evaluation (``eval``): the corner metrics, then per engine in ``eval.ocr`` the vital accuracy = exact integer match
over the photos with ground truth for that vital (BP: SBP and DBP both right), a photo with no screen counting as
wrong; ``ecg_corr`` = mean Pearson r between the traced y(x) and the drawn polyline rasterised in the crop and reduced
the same way (column-wise mean row; fixture only); the box crop grows by ``extract.margin`` (5 %, ours) on every
side so that a corner predicted a few pixels inside the screen does not cut its edge words; optionally the
deskew check (synthetic ±10° rotations of each rectified screen) and the B4 forward/backward at 380².
Metric names: ``<vital>_acc_<engine>`` (``hr_acc_oracle``, ``hr_acc_crnn_tiny`` …) and, for the first engine,
``<vital>_acc``, the paper's Table 4 columns.
"""

from __future__ import annotations

import math
import time
from functools import cached_property

import lightning as L
import numpy as np
import torch

from medrun.datasets import icu_monitors
from medrun.errors import DataError, EnvError

from .. import training
from ..report import paper_md, paper_note, paper_table
from ..tasks.supervised import Supervised
from . import extract as ex

VITAL_KEYS = {"hr": ("HR",), "spo2": ("SpO2",), "rr": ("RR",), "bp": ("SBP", "DBP"), "map": ("MAP",)}


def build_net(mm):
    from medrun.models.corner_regressor import CornerRegressor

    try:
        return CornerRegressor(mm.backbone, head_convs=mm.head_convs, head_dense=mm.head_dense, head_norm=mm.head_norm)
    except ImportError as e:
        raise EnvError(str(e), fix="pip install torchvision, or pick another model.backbone") from None


class CornerSet(torch.utils.data.Dataset):
    """Photos → (input, 8 normalised corner coordinates); ``copies`` passes, augmented after the first."""

    CACHE = 256  # decoded photos kept in memory when the split is at most this large (the fixture: all)

    def __init__(self, photos, mm, augment: bool, copies: int = 1):
        self.photos, self.mm, self.augment, self.copies = photos, mm, augment, copies if augment else 1
        self.cache: dict = {}

    def load(self, p):
        if p.name in self.cache:
            return self.cache[p.name]
        image = icu_monitors.load_rgb(p.path)
        if len(self.photos) <= self.CACHE:
            self.cache[p.name] = image
        return image

    def __len__(self):
        return len(self.photos) * self.copies

    def __getitem__(self, i):
        p = self.photos[i % len(self.photos)]
        image = self.load(p)
        h, w = image.shape[:2]
        size = self.mm.input_size
        norm = ex.padded_norm(w, h, self.mm.pad)
        aug = np.eye(3)
        if self.augment and i >= len(self.photos):
            r = torch.rand(8).numpy()
            a, s = np.deg2rad((r[0] - 0.5) * 16), 0.9 + 0.2 * r[1]
            tx, ty = (r[2] - 0.5) * 0.1, (r[3] - 0.5) * 0.1
            c = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
            rot = np.array([[s * math.cos(a), -s * math.sin(a), tx], [s * math.sin(a), s * math.cos(a), ty], [0, 0, 1]])
            aug = c @ rot @ np.linalg.inv(c)
            import cv2

            src = np.float32([[0, 0], [1, 0], [1, 1], [0, 1]])
            dst = src + (torch.rand(4, 2).numpy().astype(np.float32) - 0.5) * 0.06
            aug = cv2.getPerspectiveTransform(src, dst) @ aug
        scale = np.diag([size, size, 1.0])
        x = ex.warp_input(image, scale @ aug @ norm, size)
        if self.augment and i >= len(self.photos):
            g = torch.rand(2).numpy()
            x = np.clip((x.astype(np.float32) - 128) * (0.8 + 0.4 * g[0]) + 128 + (g[1] - 0.5) * 50,
                        0, 255).astype(np.uint8)
        y = ex.apply(aug @ norm, p.corners).reshape(-1).astype(np.float32)
        return ex.to_tensor(x[None])[0], torch.from_numpy(y)


class LitCorners(L.LightningModule):
    def __init__(self, net, lr: float):
        super().__init__()
        self.net, self.lr = net, lr

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        loss = torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(batch[0]))
        return loss

    def validation_step(self, batch, _):
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(batch[0]), batch[1]), batch_size=len(batch[0]))

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.parameters(), lr=self.lr)


def vital_scores(rows: list[dict], truths: dict[str, dict], engine: str) -> dict:
    """Exact-match accuracy per vital over the photos with ground truth for it (BP: SBP and DBP both)."""
    out = {}
    for key, cols in VITAL_KEYS.items():
        hits = [all(r[c] == truths[r["image"]].get(c) for c in cols) for r in rows
                if all(truths.get(r["image"], {}).get(c) is not None for c in cols)]
        out[f"{key}_acc_{engine.replace('-', '_')}"] = float(np.mean(hits)) if hits else float("nan")
        out[f"{key}_n"] = len(hits)
    return out


class IcuVitals(Supervised):
    report_split = "test"

    def build_model(self):
        net = build_net(self.m.model)
        w = self.m.model.backbone_weights
        if w:
            from pathlib import Path

            path = Path(w).expanduser()
            if not path.is_file():
                raise EnvError(f"backbone weights not found: {path}", fix="fix -o model.backbone_weights=PATH")
            training.load_weights(net.backbone, path, prefix="backbone.")
        elif self.m.model.backbone != "tiny" and self.ctx is not None and self.ctx.stage == "train":
            self.ctx.log(f"warning: {self.m.model.backbone} starts from random weights (no model.backbone_weights); "
                         "the paper fine-tunes ImageNet weights")
        return net

    # -- data ----------------------------------------------------------------------------------------------------
    def root(self):
        return self.ctx.data_roots[self.m.dataset.name]

    @cached_property
    def _photos(self):
        photos = icu_monitors.read(self.root())
        return photos[:self.m.dataset.limit] if self.m.dataset.limit else photos

    def photos(self):
        return self._photos

    def splits(self) -> dict:
        d, photos = self.m.dataset, self.photos()
        order = np.random.default_rng(d.split_seed).permutation(len(photos))
        n_test, n_val = int(round(d.test_fraction * len(photos))), int(round(d.val_fraction * len(photos)))
        if len(photos) - n_test - n_val < 1 or n_test < 1:
            raise DataError(f"{len(photos)} photo(s) in {self.root()} leave no training or test photo after the "
                            f"{d.test_fraction:.0%} test / {d.val_fraction:.0%} val hold-out",
                            fix="point at more photos or lower dataset.test_fraction / dataset.val_fraction")
        pick = lambda idx: [photos[i] for i in sorted(idx)]  # noqa: E731
        splits = {"train": pick(order[n_test + n_val:]), "test": pick(order[:n_test])}
        if n_val:
            splits["val"] = pick(order[n_test:n_test + n_val])
        self.ctx.record_splits({k: [p.path for p in v] for k, v in splits.items()})
        return splits

    def dataset(self, photos, train: bool):
        t = self.m.train
        return CornerSet(photos, self.m.model, train and t.augment, t.copies if train else 1)

    def lit_module(self, net):
        return LitCorners(net, self.m.train.lr)

    # -- corners ---------------------------------------------------------------------------------------------------
    def evaluate(self, net, photos):
        mm = self.m.model
        loader = torch.utils.data.DataLoader(self.dataset(photos, False), batch_size=self.m.train.batch_size)
        pred = torch.cat([self.predictor(net, x) for x, _ in loader]).numpy().reshape(-1, 4, 2)
        true = torch.cat([y for _, y in loader]).numpy().reshape(-1, 4, 2)
        mean = np.mean([ex.apply(ex.padded_norm(*self._size(p), mm.pad), p.corners) for p in self._train_photos()], 0)
        rows, sq, sq0 = [], [], []
        for p, u, t in zip(photos, pred, true, strict=True):
            w, h = self._size(p)
            scale = np.array([w, h])
            e, e0 = ((u - t) * scale) ** 2, ((mean - t) * scale) ** 2
            sq.append(e)
            sq0.append(e0)
            back = np.linalg.inv(ex.padded_norm(w, h, mm.pad))
            dist = np.linalg.norm(ex.apply(back, u) - np.asarray(p.corners), axis=1)
            rows.append({"image": p.name, "rms_px": float(np.sqrt(e.mean())), "corner_err_px": float(dist.mean()),
                         "rms_px_mean_baseline": float(np.sqrt(e0.mean())),
                         **{f"{a}{i + 1}": float(v) for i, q in enumerate(ex.apply(back, u))
                            for a, v in zip("xy", q, strict=True)}})
        self._pred_corners = {r["image"]: np.array([[r[f"x{i}"], r[f"y{i}"]] for i in range(1, 5)]) for r in rows}
        rms, rms0 = float(np.sqrt(np.mean(sq))), float(np.sqrt(np.mean(sq0)))
        metrics = {"rms_px": rms, "rms_px_mean_baseline": rms0, "rms_ratio": rms / rms0 if rms0 else float("nan"),
                   "corner_err_px": float(np.mean([r["corner_err_px"] for r in rows])), "n_photos": len(rows),
                   **training.count_params(net)}
        return metrics, rows

    def _size(self, p):
        if not hasattr(self, "_sizes"):
            self._sizes = {}
        if p.name not in self._sizes:
            from PIL import Image

            with Image.open(p.path) as im:
                self._sizes[p.name] = im.size
        return self._sizes[p.name]

    def _train_photos(self):
        if not hasattr(self, "_train"):
            self._train = self.splits()["train"]
        return self._train

    def figures(self, net, photos, metrics, rows, split):
        n = min(6, len(photos))
        if not n:
            return
        with self.ctx.figure("corners", nrows=(n + 1) // 2, ncols=2, figsize=(10, 2.9 * ((n + 1) // 2)),
                             squeeze=False) as (fig, axes):
            for ax, p in zip(axes.flat, photos[:n], strict=False):
                ax.imshow(icu_monitors.load_rgb(p.path))
                for q, colour in ((np.asarray(p.corners), "lime"), (self._pred_corners[p.name], "red")):
                    q = np.vstack([q, q[:1]])
                    ax.plot(q[:, 0], q[:, 1], color=colour, lw=1.2)
                ax.set_title(f"{p.name}  (green truth, red predicted)", fontsize=8)
                ax.axis("off")
            for ax in list(axes.flat)[n:]:
                ax.axis("off")

    def summary_line(self, split, metrics):
        return (f"{split}: corner RMS {metrics['rms_px']:.2f} px (mean baseline {metrics['rms_px_mean_baseline']:.2f}, "
                f"ratio {metrics['rms_ratio']:.3f}), mean corner error {metrics['corner_err_px']:.2f} px")

    def paper_kwargs(self, split, metrics):
        return {"expect": {"rms_px": 8.67}, "table": "code README (val RMS)", "keys": ["rms_px", "rms_ratio"],
                "title": "ICU monitor vitals: corner regressor"}

    def paper_sections(self, metrics):
        return [paper_table(self.ctx.spec, "corners"), paper_note(self.ctx.spec, "comparison")]

    # -- OCR engines and their weights -----------------------------------------------------------------------------
    def engine(self, name: str):
        from . import ocr

        return ocr.build(name, self)

    def crnn(self):
        """crnn-tiny weights: extract.crnn_weights, or a train-ocr run of this manifest (run or reused)."""
        from pathlib import Path

        from . import ocr

        net = ocr.build_crnn(self.m.train_ocr)
        w = self.m.extract.crnn_weights
        if w:
            path = Path(w).expanduser()
            if not path.is_file():
                raise EnvError(f"crnn-tiny weights not found: {path}",
                               fix="fix -o extract.crnn_weights=PATH or drop it to train them (medrun train-ocr)")
        else:
            from ..sweep import Child

            child = self.ctx.sweep([Child("crnn-tiny", {}, stage="train-ocr")], title="ocr")[0]
            path = child.run_dir / "checkpoints" / "model.safetensors"
            self.ctx.run.update_info(ocr_run=child.run_id)
        return training.load_weights(net, path).eval()

    def labelled_words(self) -> list[tuple[str, str, np.ndarray]]:
        """(image, text, rectified crop) of every labelled word (boxes.csv) of the dataset."""
        from .ocr import word_crop

        out = []
        for p in self.photos():
            if p.boxes:
                image = icu_monitors.load_rgb(p.path)
                out += [(p.name, t, word_crop(image, poly, self.m.train_ocr.height)) for t, poly in p.boxes]
        return out

    # -- stages ------------------------------------------------------------------------------------------------------
    def eval(self) -> dict:
        e = self.m.eval
        engines = list(dict.fromkeys(e.ocr))
        from . import ocr

        for name in engines:
            ocr.require(name, self.m.extract)
        photos = self.split_of(self.splits())
        net = self.trained_model()
        metrics, rows = self.evaluate(net, photos)
        metrics["split"] = e.split
        sections = []
        if engines:
            if any(not p.vitals for p in photos):
                icu_monitors.read(self.root(), need_vitals=True)  # names vitals.csv when it is missing
            m2, rows = self.score_extraction(net, photos, engines, rows)
            metrics.update(m2)
            sections.append(self.vitals_table(metrics, engines))
        if e.deskew_check:
            from .deskew import rotation_check

            check, _ = rotation_check(photos, self.m.deskew, np.random.default_rng(self.m.seed), self.ctx.log)
            metrics.update(check)
        if e.full_size_check:
            metrics.update(full_size_check(self.ctx.log))
        self.ctx.write_csv("per_case.csv", rows)
        self.figures(net, photos, metrics, rows, e.split)
        self.ctx.log(self.summary_line(e.split, metrics))
        expect = dict(self.m.paper.expect) if self.m.paper else {}
        keys = [k for k in ("rms_px", "rms_ratio", "hr_acc", "spo2_acc", "rr_acc", "bp_acc", "map_acc", "ecg_corr",
                            "deskew_err_max_deg") if k in metrics or k in expect]
        self.ctx.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx, keys=keys,
                                                 title="ICU monitor vitals: evaluation", sections=[
            *sections, paper_table(self.ctx.spec, "table4"), paper_note(self.ctx.spec, "comparison")]))
        return metrics

    def score_extraction(self, net, photos, engines, rows):
        objs = {name: self.engine(name) for name in engines}
        truths = {p.name: p.vitals for p in photos}
        by_engine = {name: [] for name in engines}
        corrs, secs = [], {name: 0.0 for name in engines}
        row_of = {r["image"]: r for r in rows}
        for i, p in enumerate(photos):
            s = ex.locate(self, net, [p.name], [icu_monitors.load_rgb(p.path)])[0]
            boxes = [(t, np.float32(b)) for t, b in p.boxes] if p.boxes else None
            if p.ecg:
                corrs.append(ex.ecg_correlation(s, p.ecg))
                row_of[p.name]["ecg_corr"] = corrs[-1]
            row_of[p.name]["screen_found"] = int(s.found)
            for name, engine in objs.items():
                if name == "oracle" and boxes is None:
                    raise DataError(f"OCR engine 'oracle' needs labelled word boxes; {p.path} has none in boxes.csv",
                                    fix="drop oracle from -o eval.ocr=[...]")
                t0 = time.perf_counter()
                vitals, words = ex.read(self, engine, s, boxes)
                secs[name] += time.perf_counter() - t0
                by_engine[name].append({"image": p.name, **vitals})
                key = name.replace("-", "_")
                row_of[p.name].update({f"{k}_{key}": vitals[k] for k in icu_monitors.VITALS})
                if i < self.m.eval.figures and name == engines[-1]:
                    ex.screen_figure(self.ctx, p.name.rsplit(".", 1)[0], s, words, vitals, p.vitals)
        metrics = {}
        for name in engines:
            metrics.update(vital_scores(by_engine[name], truths, name))
            metrics[f"ocr_secs_per_image_{name.replace('-', '_')}"] = secs[name] / max(1, len(photos))
        first = engines[0].replace("-", "_")
        metrics.update({f"{k}_acc": metrics[f"{k}_acc_{first}"] for k in VITAL_KEYS})
        if corrs:
            metrics["ecg_corr"] = float(np.mean(corrs))
            metrics["ecg_corr_min"] = float(np.min(corrs))
        for r in rows:
            for k in icu_monitors.VITALS:
                r[f"{k}_true"] = truths.get(r["image"], {}).get(k)
        return metrics, rows

    def vitals_table(self, metrics, engines) -> str:
        from ..report import markdown_table

        body = [[e, *[metrics.get(f"{k}_acc_{e.replace('-', '_')}") for k in VITAL_KEYS]] for e in engines]
        return ("## This run: vital accuracy (exact match) per OCR engine, backbone " + self.m.model.backbone + "\n\n"
                + markdown_table(["OCR engine", "HR", "SpO2", "RR", "BP", "MAP"], body))

    def extract(self) -> dict:
        from .extract import stage

        return stage(self)

    def deskew(self) -> dict:
        from .deskew import stage

        return stage(self)

    def train_ocr(self) -> dict:
        from .ocr import train_ocr

        return train_ocr(self)

    def ocr_bench(self) -> dict:
        from .ocr import ocr_bench

        return ocr_bench(self)


def full_size_check(log=print) -> dict:
    """The paper's regressor at full size: EfficientNet-B4 + the card's head, one forward/backward at 380²."""
    from medrun.models.corner_regressor import corner_regressor_b4

    t0 = time.perf_counter()
    net = corner_regressor_b4()
    x = torch.randn(1, 3, 380, 380)
    feats = net.backbone(x)
    shapes = [tuple(feats.shape[1:])]
    h = feats
    for layer in net.convs:
        h = layer(h)
        if isinstance(layer, torch.nn.Conv2d):
            shapes.append(tuple(h.shape[1:]))
    y = net.offset + net.scale * net.dense(h.mean(dim=(2, 3)))
    y.sum().backward()
    ok = shapes == [(1792, 12, 12), (1280, 10, 10), (1540, 8, 8), (1960, 6, 6)] and tuple(y.shape) == (1, 8)
    n = sum(p.numel() for p in net.parameters())
    nb = sum(p.numel() for p in net.backbone.parameters())
    log(f"B4 regressor: {n:,} parameters ({nb:,} backbone), shapes {shapes}, forward/backward "
        f"{time.perf_counter() - t0:.1f} s")
    return {"b4_shapes_ok": float(ok), "b4_params": n, "b4_backbone_params": nb,
            "b4_grad_ok": float(all(p.grad is not None for p in net.parameters()))}

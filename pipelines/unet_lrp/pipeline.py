"""unet-lrp, the method (paper notes, with the card's resolutions: docs/papers/unet-lrp.md).

Data: Montgomery (the default medical set; lung = leftMask OR rightMask), Shenzhen (third-party masks in ``mask/``;
images without one left out), Cityscapes (train split, mask = labelIds == ``dataset.label``, 24 = person) or a
``pairs`` folder (``images/`` + ``masks/``, the private NDT slices' stand-in). Each image is min-max scaled to [0, 1],
image and mask resized to ``dataset.resize`` (H, W) = (623, 512) (Cityscapes (512, 623)); training takes
``crops_per_image`` = 2 random ``crop``² = 512² crops per image and epoch, no other augmentation. The last
``val_fraction`` = 20 % of the sorted cases validate (a tail split, as the author code does), by sliding window
(window = crop; the ``inference:`` section) on the manifest's hardware (the predictor).

Training: the card's three MONAI U-Nets (``models.lrp_unet.Segmenter``, batch or instance norm, 1 output + sigmoid),
Generalized Dice Focal loss (λ 1/1, γ 2; the paper's, not the code's Dice loss), Adam, Table 1's epochs / lr, batch
4 crops. Validation Dice (MONAI ``DiceMetric``, sigmoid > 0.5) every ``val_every`` = 3 epochs; Lightning's
``ModelCheckpoint`` on ``val_dice`` keeps the best epoch (``checkpoints/best.ckpt``), whose weights become
``model.safetensors`` (the last epoch's when no validation ran). The train run scores that epoch on the validation
split and ends with the LRP check of ``explain.py`` on its first ``train.lrp_images`` images, so the smoke run checks
Dice and LRP together.

LRP (``models.lrp_unet``, stages in ``explain.py``): Captum LRP-ε (ε 1e-9) on ``Sequential(net, Sigmoid, MaskedSum)``,
Sigmoid/ReLU/Dropout passing relevance through, the residual fix swapping each residual ``a + b`` for Captum's
``Addition_Module``; the explained object is a connected component of the prediction (the largest or
``explain.object``) on the centre ``crop``² window. The paper reports no numbers, so runs report the card's proxies:
validation Dice; max |R| and conservation with and without the fix (``fix_ratio`` = median of their ratio, compared
with Fig. 3's 2e15 / 4000); focus = positive relevance inside the object dilated by ``explain.dilate_px`` against
that region's area share. ``predict`` writes binarised masks (at ``dataset.resize``) of the eval split or of
``predict.input``; the MONAI bundle reads a file as :class:`Prepare` does and returns the same mask. Stage options
are manifest keys (``-o model.arch=resunet``, ``-o explain.object=2``, ``-o explain.residual_fix=false``).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import lightning as pl
import numpy as np
import torch

from medrun.datasets import cityscapes, montgomery, pairs, shenzhen
from medrun.errors import DataError, UsageError
from medrun.models import lrp_unet as L

from ..base import IMAGE_SUFFIXES
from ..report import markdown_table, paper_data, paper_note
from ..tasks import segmentation as seg
from ..tasks.supervised import Supervised

SEG_METRICS = ("dice", "iou", "hd95")


def prepare(image: np.ndarray, size) -> np.ndarray:
    """Eval's preprocessing of an image (H, W) or (H, W, 3): scaled to [0, 1] by its own min and max, resized to
    ``size`` (H, W) (bilinear, anti-aliased), channels first, float32."""
    from skimage.transform import resize

    lo, hi = float(image.min()), float(image.max())
    image = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    image = resize(image, tuple(size) + image.shape[2:], order=1, preserve_range=True, anti_aliasing=True)
    image = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
    return image.astype(np.float32)


class Prepare:
    """One image file → the (C, H, W) tensor eval feeds the network: read as ``pairs`` reads its images
    (``datasets.imageio``: 8/16-bit or float PNG/TIFF/JPEG or DICOM, scaled by ``intensity``; grey for one channel,
    RGB for three), then :func:`prepare`. The preprocessing of ``predict.input`` and of the MONAI bundle."""

    def __init__(self, size, channels: int = 1, intensity=None):
        self.size, self.channels, self.intensity = tuple(size), channels, intensity

    def read(self, path) -> np.ndarray:
        return pairs.load_image(Path(path), self.channels, self.intensity)

    def __call__(self, path) -> torch.Tensor:
        return torch.from_numpy(prepare(self.read(path), self.size))


class UnetLrp(Supervised):
    report_split = "val"  # the train run scores its best epoch on the validation split (the paper has no test)

    @property
    def features(self) -> tuple[int, ...]:
        mm = self.m.model
        return tuple(mm.features) if mm.features else tuple(max(1, f // mm.width_div) for f in L.FEATURES[mm.arch])

    def build_model(self) -> L.Segmenter:
        mm = self.m.model
        return L.Segmenter(mm.arch, mm.norm, mm.in_channels, 1, self.features)

    # -- data -----------------------------------------------------------------------------------------------
    def cases(self) -> list:
        d, log = self.m.dataset, self.ctx.log
        root = self.ctx.data_roots[d.name]
        read = {"montgomery": lambda: montgomery.read(root), "shenzhen": lambda: shenzhen.read(root, log),
                "pairs": lambda: pairs.read(root), "cityscapes": lambda: cityscapes.read(root, "train")}
        cases = read[d.name]()[: d.limit or None]
        channels = 3 if d.name == "cityscapes" else 1 if d.name != "pairs" else self.m.model.in_channels
        if self.m.model.in_channels != channels:
            raise UsageError(f"model.in_channels is {self.m.model.in_channels} but {d.name} images have {channels}",
                             fix=f"-o model.in_channels={channels}")
        return cases

    def splits(self) -> dict:
        cases = self.cases()
        n_val = max(1, round(len(cases) * self.m.dataset.val_fraction))
        if len(cases) - n_val < 1:
            raise DataError(f"only {len(cases)} cases in {self.ctx.data_roots[self.m.dataset.name]}",
                            fix="at least 2 cases are needed (one to train, one to validate)")
        splits = {"train": cases[:-n_val], "val": cases[-n_val:]}
        self.ctx.record_splits(splits)
        self.ctx.log(f"{self.m.dataset.name}: train {len(splits['train'])} · val {len(splits['val'])} images "
                     f"({self.m.model.arch}, {self.m.model.norm} norm)")
        return splits

    def raw(self, case) -> tuple[np.ndarray, np.ndarray]:
        """(image, mask) of a case as its dataset stores them, at the file's own size."""
        d = self.m.dataset
        return {"montgomery": lambda: montgomery.load(case), "shenzhen": lambda: shenzhen.load(case),
                "pairs": lambda: pairs.load(case, self.m.model.in_channels, d.intensity),
                "cityscapes": lambda: cityscapes.load(case, d.label)}[d.name]()

    def load(self, case) -> tuple[np.ndarray, np.ndarray]:
        """(image (C, H, W) float32 scaled to [0, 1] per image, mask (H, W) uint8), resized to dataset.resize."""
        from skimage.transform import resize

        d = self.m.dataset
        image, mask = self.raw(case)
        mask = resize(mask, d.resize, order=0, preserve_range=True, anti_aliasing=False)
        return prepare(image, d.resize), (mask > 0.5).astype(np.uint8)

    def arrays(self, cases) -> list[tuple[np.ndarray, np.ndarray]]:
        """The loaded (image, mask) of each case, read once per stage."""
        cache = self.__dict__.setdefault("_arrays", {})
        return [cache[c.id] if c.id in cache else cache.setdefault(c.id, self.load(c)) for c in cases]

    # -- training -------------------------------------------------------------------------------------------
    @cached_property
    def sliding(self) -> dict:
        """The ``inference:`` section, the window defaulting to ``dataset.crop``²."""
        i = self.m.inference
        return {**i.model_dump(), "roi_size": list(i.roi_size or (self.m.dataset.crop,) * 2)}

    @cached_property
    def predictor(self):
        return self.ctx.predictor(roi_size=self.sliding["roi_size"])

    def dataset(self, cases, train: bool):
        d = self.m.dataset
        return RandomCrops(self.arrays(cases), d.crop, d.crops_per_image) if train else Whole(self.arrays(cases))

    def val_loader(self, splits: dict):  # whole images, one at a time, through the sliding window
        return torch.utils.data.DataLoader(self.dataset(splits["val"], False), batch_size=1,
                                           num_workers=self.m.train.num_workers)

    def lit_module(self, net):
        return LitSegmenter(net, self.m.train.lr, self.sliding)

    def trainer_kwargs(self) -> dict:
        from lightning.pytorch.callbacks import ModelCheckpoint

        self.best = ModelCheckpoint(dirpath=self.ctx.path / "checkpoints", filename="best", monitor="val_dice",
                                    mode="max", save_top_k=1, save_weights_only=True, enable_version_counter=False)
        return {"callbacks": [self.best], "check_val_every_n_epoch": self.m.train.val_every}

    def fit(self, splits: dict, net=None, *, checkpoint: bool = True):
        """Train, then take the best validation epoch's weights (ModelCheckpoint's ``best.ckpt``)."""
        net, secs = super().fit(splits, net, checkpoint=checkpoint)
        self.best_epoch = self.epochs
        if self.best.best_model_path:
            ck = torch.load(self.best.best_model_path, map_location="cpu", weights_only=True)
            net.load_state_dict({k[4:]: v for k, v in ck["state_dict"].items() if k.startswith("net.")})
            self.best_epoch = int(ck["epoch"]) + 1
        return net, secs

    def weights_metadata(self) -> dict:
        mm = self.m.model
        return {"pipeline": "unet-lrp", "arch": mm.arch, "norm": mm.norm, "best_epoch": self.best_epoch}

    def train(self) -> dict:
        return {**super().train(), "best_epoch": self.best_epoch}

    # -- evaluation -----------------------------------------------------------------------------------------
    def prob(self, net, image: np.ndarray) -> np.ndarray:
        """Sigmoid probabilities (H, W) of one image (C, H, W): sliding-window inference on the manifest's hardware."""
        return torch.sigmoid(self.predictor.sliding_window(net, torch.from_numpy(image)[None]))[0, 0].numpy()

    def evaluate(self, net, cases) -> tuple[dict, list[dict]]:
        """Dice, IoU, HD95 per image; a train run adds the LRP check on its first ``train.lrp_images`` images."""
        run, rows, self.shown = self.predictor.setup(net), [], []
        for case, (image, mask) in zip(cases, self.arrays(cases), strict=True):
            prob = self.prob(run, image)
            rows.append({"case": case.id, **seg.case_metrics(prob > 0.5, mask, SEG_METRICS),
                         "objects": L.n_objects(prob)})
            if len(self.shown) < 4:
                self.shown.append((case, image, mask, prob > 0.5, rows[-1]["dice"]))
        metrics = seg.summarise(rows, SEG_METRICS)
        if self.ctx.stage == "train" and (n := self.m.train.lrp_images):
            from .explain import lrp_stats

            self.lrp = lrp_stats(self, net, cases[:n], self.arrays(cases[:n]), self.m.explain)
            metrics.update({f"lrp_{k}": v for k, v in self.lrp[0].items()})
        return metrics, rows

    def figures(self, net, cases, metrics: dict, rows: list[dict], split: str) -> None:
        for case, image, mask, pred, dice in self.shown:
            seg.overlay(self.ctx, f"overlay_{case.id}", image, mask, pred, f"{case.id}  Dice {dice:.3f}")

    def summary_line(self, split: str, metrics: dict) -> str:
        return f"{split}: Dice {metrics['dice']:.4f} ± {metrics['dice_sd']:.4f} over {metrics['n_cases']} images"

    def paper_sections(self, metrics: dict) -> list[str]:
        mm, spec = self.m.model, self.ctx.spec
        out = ["## Segmentation (validation split)\n\n" + markdown_table(
            ["arch", "norm", "Dice", "IoU", "HD95 (px)", "images"],
            [[mm.arch, mm.norm, metrics["dice"], metrics["iou"], metrics["hd95"], metrics["n_cases"]]])
            + "\n\nThe paper reports no Dice (its evaluation is qualitative); the card adds it as check (i)."]
        if self.ctx.stage == "train":
            from .explain import lrp_section

            t1 = paper_data(spec)["tables"]["table1"]
            out.append(f"## {t1['title']}\n\n" + markdown_table(t1["header"], t1["rows"]))
            if self.m.train.lrp_images:
                out.append(lrp_section(self, *self.lrp, "LRP check on the first validation images"))
        return [*out, paper_note(spec, "comparison")]

    # -- predict --------------------------------------------------------------------------------------------
    def predict_items(self):
        """``predict.input`` (a file, folder or glob of PNG/TIFF/JPEG/DICOM images; no masks needed) or the eval
        split's cases."""
        src = self.m.predict.input
        return self.ctx.predict_inputs(src, pairs.IMAGES) if src else super().predict_items()

    def predict_rows(self, net, items) -> list[dict]:
        """Binarised masks as ``predictions/<name>.png`` at each input's own size (the probability map is resized
        bilinearly, then thresholded); items are cases of a split or image files."""
        from medrun.datasets.imageio import stem

        run, rows = self.predictor.setup(net), []
        d = self.m.dataset
        prep = Prepare(d.resize, self.m.model.in_channels, d.intensity)
        for item in self.ctx.track(items, "predicting"):
            if isinstance(item, Path):  # predict.input
                path, name, full = item, stem(item), prep.read(item)
            else:
                path, name, full = getattr(item, "image", item.id), item.id, self.raw(item)[0]
            prob = self.prob(run, prepare(full, d.resize))
            mask = seg.write_mask(self.ctx, f"predictions/{name}.png", prob, (full.shape[1], full.shape[0]),
                                  threshold=0.5)
            rows.append({"case": name, "input": str(path), "height": full.shape[0], "width": full.shape[1],
                         "foreground_share": float(mask.mean()), "objects": L.n_objects(mask.astype(np.float32)),
                         "nifti": seg.write_like_dicom(self.ctx, f"predictions/{name}", mask, path) or ""})
        return rows

    def predict_summary(self, rows: list[dict]) -> dict:
        return {"foreground_share": float(np.mean([r["foreground_share"] for r in rows]))}

    # -- stages on a finished run (explain.py) ---------------------------------------------------------------
    def explain(self) -> dict:
        from .explain import explain

        return explain(self)

    def lrp_stats(self) -> dict:
        from .explain import stats_stage

        return stats_stage(self)

    def compare(self) -> dict:
        from .compare import compare

        return compare(self)

    # -- export ---------------------------------------------------------------------------------------------
    def bundle_parts(self) -> dict:
        """The segmenter as a MONAI bundle: :class:`Prepare` (eval's preprocessing), sliding-window inference with
        the ``inference:`` settings, sigmoid > 0.5; the mask (at ``dataset.resize``) as nested lists of 0/1."""
        d, mm, s = self.m.dataset, self.m.model, self.sliding
        shape, what = list(d.resize), "person" if d.name == "cityscapes" else "pore" if d.name == "pairs" else "lung"
        common = {"type": "image", "spatial_shape": shape, "value_range": [0, 1], "is_patch_data": False}
        return {
            "task": f"{what} segmentation ({d.name}), the {mm.arch} ({mm.norm} norm) of 'LRP on U-Nets'",
            "network_def": {"_target_": "medrun.models.create", "name": "lrp-segmenter", "arch": mm.arch,
                            "norm": mm.norm, "in_channels": mm.in_channels, "out_channels": 1,
                            "features": list(self.features)},
            "suffixes": list(IMAGE_SUFFIXES),
            "preprocessing": [{"_target_": "medrun.pipelines.unet_lrp.pipeline.Prepare", "size": shape,
                               "channels": mm.in_channels}],
            "predict": "$torch.no_grad()(lambda f: torch.sigmoid(monai.inferers.sliding_window_inference("
                       f"@preprocessing(f)[None].to(@device), {s['roi_size']}, {s['sw_batch_size']}, @network, "
                       f"overlap={s['overlap']}, mode='{s['mode']}'))[0, 0].gt(0.5).int().tolist())",
            "input": {**common, "format": "magnitude", "modality": "RGB" if mm.in_channels == 3 else "XR",
                      "num_channels": mm.in_channels, "dtype": "float32", "channel_def": {"0": "image"}},
            "output": {**common, "format": "segmentation", "num_channels": 1, "dtype": "int",
                       "channel_def": {"0": what}},
            "readme": f"Input: one image per file ({'RGB' if mm.in_channels == 3 else 'grey'}; scaled to [0, 1] by "
                      f"its own min and max, resized to {shape[0]}×{shape[1]} (H×W)). Output: the binary {what} mask "
                      f"at that size (sigmoid > 0.5, sliding window {s['roi_size']}), as rows of 0/1.",
        }


# -- data and model glue ------------------------------------------------------------------------------------
class RandomCrops(torch.utils.data.Dataset):
    """``per_image`` random ``size``² crops of each (image, mask) per epoch."""

    def __init__(self, arrays, size: int, per_image: int):
        self.arrays, self.size, self.per_image = arrays, size, per_image

    def __len__(self):
        return len(self.arrays) * self.per_image

    def __getitem__(self, i):
        image, mask = self.arrays[i // self.per_image]
        h, w = mask.shape
        y = int(torch.randint(0, h - self.size + 1, ()).item())
        x = int(torch.randint(0, w - self.size + 1, ()).item())
        s = self.size
        return (torch.from_numpy(image[:, y:y + s, x:x + s].copy()),
                torch.from_numpy(mask[None, y:y + s, x:x + s].astype(np.float32)))


class Whole(torch.utils.data.Dataset):
    def __init__(self, arrays):
        self.arrays = arrays

    def __len__(self):
        return len(self.arrays)

    def __getitem__(self, i):
        image, mask = self.arrays[i]
        return torch.from_numpy(image), torch.from_numpy(mask[None].astype(np.float32))


class LitSegmenter(pl.LightningModule):
    """Generalized Dice Focal loss, Adam; validation Dice (MONAI DiceMetric over the sliding-window prediction),
    logged as ``val_dice`` for the best-epoch checkpoint."""

    def __init__(self, net, lr: float, sliding: dict):
        super().__init__()
        from monai.losses import GeneralizedDiceFocalLoss
        from monai.metrics import DiceMetric

        self.net, self.lr, self.sliding = net, lr, sliding
        self.loss = GeneralizedDiceFocalLoss(sigmoid=True, lambda_gdl=1.0, lambda_focal=1.0, gamma=2.0)
        self.dice = DiceMetric(include_background=True, reduction="mean")

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        loss = self.loss(self.net(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False, prog_bar=True, batch_size=len(x))
        return loss

    def validation_step(self, batch, _):
        from monai.inferers import sliding_window_inference

        x, y = batch
        s = self.sliding
        logits = sliding_window_inference(x, s["roi_size"], s["sw_batch_size"], self.net, overlap=s["overlap"],
                                          mode=s["mode"])
        self.dice((torch.sigmoid(logits) > 0.5).float(), y)

    def on_validation_epoch_end(self):
        dice = float(self.dice.aggregate().item())
        self.dice.reset()
        self.log("val_dice", dice, prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.parameters(), lr=self.lr)

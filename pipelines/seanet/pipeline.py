"""seanet, the method (card: docs/papers/seanet.md).

Data (``datasets/mayo.py``): the Mayo 2016 LDCT challenge, one folder per patient with ``quarter_3mm/`` and
``full_3mm/`` DICOM series paired by InstanceNumber (SliceLocation checked), or CTformer's preconverted
``<pid>_<idx>_{input,target}.npy``. HU = stored · slope + intercept, values below −1024 raised to −1024, then
normalised as (HU + 1024) / 4096 (CTformer's −1024…3072). ``dataset.test_patients`` (L506) is the test split; 10 %
of the other patients' slices (``val_fraction``, drawn with ``split_seed``) validate, the rest train. Slices are
read once into memory as float32 (the real 2378 pairs take about 5 GB).

Networks (``models/seanet.py``, ``model.arch``): ``seanet`` (CTformer whose two skips run through SRUs, the skip
un-shifted after the SRU: card ambiguity 7), ``ctformer`` (the same network without SRUs), ``seanet2`` (RED-CNN +
SRUs on its two feature shortcuts), ``redcnn`` and ``unet`` (MONAI BasicUNet predicting the noise). Paper preset:
token dim 64, E = 64, depth 12, 8 heads (ambiguity 1: "heads 12" cannot divide 64; ``-o model.embed_dim=768 -o
model.heads=12`` gives CTformer's class default), dilation [2, 1, 1, 2], SRU 3L7G (c_l 19 / c_g 45; 29 / 67 on
RED-CNN's 96 channels), dropout / attention dropout / drop-path 0.1 (CTformer's class defaults).

Training (card): MSE on normalised units, Adam lr 1e-5, 200 epochs, batch 16 slices × ``patch_n`` 4 random 64×64
patches (the same crop of LDCT and NDCT) = 64 patches a step, rotation by a random multiple of 90° (no
interpolation; the paper states no angle). Constant learning rate unless ``train.decay_iters`` (CTformer's step
decay: halved every N steps). Validation: ``patch_n`` fixed crops of every validation slice (drawn once with
``split_seed``), RMSE in HU inside the evaluation window; the weights of the epoch with the lowest validation RMSE
are kept (Lightning ``ModelCheckpoint(monitor="val_rmse")``, the card's "checkpoint on validation RMSE";
``train.select: last`` keeps the last epoch). ``train.repeats`` visits every slice several times per epoch.

Evaluation (card, CTformer/RED-CNN convention; the paper gives none): whole slices through MONAI's sliding window
(roi = the training patch, overlap 0.5, Gaussian blending: ``inference:``), de-normalised to HU and clipped to
[−160, 240] (data range 400): RMSE in HU, PSNR = 20·log10(400 / RMSE), SSIM (Gaussian 11×11, σ 1.5) × 100, and
MAPE = 100·mean|ŷ − y| / y on the clipped images in normalised units (y ∈ [0.21, 0.31], so never ≈ 0; the paper
divides by the LDCT input, ambiguity 3; without the clip the air at −1024 HU would be a division by 0). Every
metric is averaged over slices; the LDCT input is scored the same way (``ldct_*``) and ``delta_psnr`` = PSNR(ŷ) −
PSNR(LDCT) (signed; the paper prints |Δ|). FSI is not computed: its weights reward a lower PSNR and a higher RMSE
and its normalisation is undefined (ambiguity 4). ``paper.md`` sets the run beside Table 1's row for the
architecture trained (the manifest's ``expect`` is SEANet's row).

Stages: ``train``/``eval`` (the template), ``denoise`` (``denoise.py``: DICOM or .npy in, the same format out with
HU preserved), ``spectral-map`` (``spectral.py``: Fig. 6). The card's ``--arch`` is ``-o model.arch=…``,
``--data-root``/``--npy-root`` are ``--data-dir`` (the layout is detected), ``--test-patient`` is
``-o dataset.test_patients=[L506]``, ``--decay-iters`` is ``-o train.decay_iters=…``, ``--embed 768 --heads 12``
are ``-o model.embed_dim=768 -o model.heads=12``; ``make-fixture`` is ``medrun fixture mayo``.

Choices the sources leave open, beyond those above: ``model.zero_output`` (false by default) starts the noise
estimate at 0; the fixture manifest turns it on, with dropout 0 and lr 3e-4, so a few hundred CPU steps learn
(with CTformer's initialisation the first ~50 steps only undo a random noise estimate hundreds of HU large). The
Performer's random features are a buffer saved with the weights. WGAN-VGG and MAP-NN are not reproduced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from medrun.datasets import mayo
from medrun.errors import DataError
from medrun.metrics import reconstruction as R

from .. import training
from ..report import markdown_table, paper_data, paper_note, paper_table
from ..tasks.supervised import Supervised

METRICS = ("psnr", "ssim", "rmse", "mape")
TABLE1_ROW = {"seanet": "SEANet (CTformer + SRU)", "seanet2": "SEANet² (RED-CNN + SRU)", "ctformer": "CTformer",
              "redcnn": "RED-CNN", "unet": "UNet"}


# -- network ----------------------------------------------------------------------------------------------------
def build_net(mm, patch: int = 64) -> torch.nn.Module:
    """The manifest's ``model`` section → network mapping (B, 1, H, W) normalised LDCT to the denoised image."""
    from medrun.models import seanet as S

    if mm.arch in ("seanet", "ctformer"):
        net = S.SEANet(patch=patch, token_dim=mm.token_dim, embed_dim=mm.embed_dim, depth=mm.depth,
                       num_heads=mm.heads, mlp_ratio=mm.mlp_ratio, kernel_ratio=mm.kernel_ratio,
                       dilation=tuple(mm.dilation), sru=mm.arch == "seanet", sru_global=mm.sru_global,
                       fourier=mm.fourier, drop_rate=mm.drop_rate, attn_drop_rate=mm.attn_drop_rate,
                       drop_path_rate=mm.drop_path_rate, performer_drop=mm.performer_drop)
    elif mm.arch in ("redcnn", "seanet2"):
        net = S.REDCNN(channels=mm.redcnn_channels, sru=mm.arch == "seanet2", sru_global=mm.sru_global)
    else:
        net = S.ResidualUNet(features=tuple(mm.unet_features))
    return S.zero_noise_estimate(net) if mm.zero_output else net


# -- data -------------------------------------------------------------------------------------------------------
@dataclass
class Slices:
    pairs: list  # mayo.Pair
    ld: list  # (H, W) float32, normalised units
    nd: list

    def __len__(self):
        return len(self.pairs)

    def take(self, idx) -> Slices:
        return Slices([self.pairs[i] for i in idx], [self.ld[i] for i in idx], [self.nd[i] for i in idx])

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.pairs]


def _crop(a: np.ndarray, r: int, c: int, p: int) -> np.ndarray:
    return a[r:r + p, c:c + p]


class RandomPatches(torch.utils.data.Dataset):
    """Training: ``patch_n`` random crops (the same for LDCT and NDCT) of a slice, each rotated by k·90°; one item
    is (patch_n, 1, P, P) input and target. ``repeats`` visits of every slice per epoch."""

    def __init__(self, s: Slices, patch: int, patch_n: int, rotate: bool, repeats: int = 1):
        self.s, self.p, self.n, self.rotate, self.repeats = s, patch, patch_n, rotate, repeats

    def __len__(self):
        return len(self.s) * self.repeats

    def __getitem__(self, i):
        i %= len(self.s)
        ld, nd, p = self.s.ld[i], self.s.nd[i], self.p
        xs, ys = [], []
        for _ in range(self.n):
            r = int(torch.randint(ld.shape[0] - p + 1, (1,)))
            c = int(torch.randint(ld.shape[1] - p + 1, (1,)))
            k = int(torch.randint(4, (1,))) if self.rotate else 0
            xs.append(np.rot90(_crop(ld, r, c, p), k))
            ys.append(np.rot90(_crop(nd, r, c, p), k))
        return (torch.from_numpy(np.ascontiguousarray(np.stack(xs)[:, None])),
                torch.from_numpy(np.ascontiguousarray(np.stack(ys)[:, None])))


class FixedPatches(RandomPatches):
    """Validation: the same ``patch_n`` crops of every slice in every epoch (drawn once with ``seed``)."""

    def __init__(self, s: Slices, patch: int, patch_n: int, seed: int):
        super().__init__(s, patch, patch_n, False)
        rng = np.random.default_rng(seed)
        self.at = [[(int(rng.integers(a.shape[0] - patch + 1)), int(rng.integers(a.shape[1] - patch + 1)))
                    for _ in range(patch_n)] for a in s.ld]

    def __getitem__(self, i):
        xs = [_crop(self.s.ld[i], r, c, self.p) for r, c in self.at[i]]
        ys = [_crop(self.s.nd[i], r, c, self.p) for r, c in self.at[i]]
        return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys)[:, None])


def to_hu_window(x, window) -> torch.Tensor | np.ndarray:
    """Normalised units → HU clipped to the evaluation window."""
    hu = x * (mayo.NORM_MAX - mayo.NORM_MIN) + mayo.NORM_MIN
    return hu.clamp(*window) if isinstance(hu, torch.Tensor) else np.clip(hu, *window)


def slice_metrics(pred: np.ndarray, target: np.ndarray, window) -> dict:
    """Card metrics of one slice (normalised units in): RMSE (HU), PSNR (dB), SSIM ×100 inside the window, MAPE
    (%) on the windowed images in normalised units."""
    lo, hi = window
    p, t = to_hu_window(pred.astype(np.float64), window), to_hu_window(target.astype(np.float64), window)
    rmse = R.rmse(p, t)
    return {"psnr": 20 * math.log10((hi - lo) / rmse) if rmse > 0 else math.inf, "ssim": 100 * R.ssim(p, t, hi - lo),
            "rmse": rmse, "mape": R.mape(mayo.normalise(p), mayo.normalise(t))}


class LitDenoiser(L.LightningModule):
    def __init__(self, net: torch.nn.Module, train, window):
        super().__init__()
        self.net, self.cfg, self.window = net, train, tuple(window)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = (t.flatten(0, 1) for t in batch)  # (B, n, 1, P, P) → (B·n, 1, P, P)
        loss = F.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    def validation_step(self, batch, _):
        x, y = (t.flatten(0, 1) for t in batch)
        out = self.net(x)
        self.log("val_loss", F.mse_loss(out, y), on_epoch=True, batch_size=len(x))
        err = (to_hu_window(out, self.window) - to_hu_window(y, self.window)).square().mean((1, 2, 3)).sqrt()
        self.log("val_rmse", err.mean(), on_epoch=True, prog_bar=True, batch_size=len(x))

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.net.parameters(), lr=self.cfg.lr)
        if not self.cfg.decay_iters:
            return opt
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=self.cfg.decay_iters, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class Seanet(Supervised):
    report_split = "test"

    def build_model(self) -> torch.nn.Module:
        return build_net(self.m.model, self.m.train.patch)

    # -- data ---------------------------------------------------------------------------------------------------
    def read_slices(self, pairs) -> Slices:
        d = self.m.dataset
        ld, nd = [], []
        for p in pairs:
            a, b = mayo.load(p, d.npy_units)
            if min(a.shape) < self.m.train.patch:
                raise DataError(f"{p.ldct} is {a.shape[0]}×{a.shape[1]}, smaller than the {self.m.train.patch}² "
                                "training patch", fix="lower -o train.patch or remove the slice")
            ld.append(mayo.normalise(a).astype(np.float32))
            nd.append(mayo.normalise(b).astype(np.float32))
        return Slices(list(pairs), ld, nd)

    def splits(self) -> dict[str, Slices]:
        d = self.m.dataset
        root = self.ctx.data_roots["mayo"]
        pairs = mayo.read(root, d.series, d.patients)
        found = sorted({p.patient for p in pairs})
        missing = [t for t in d.test_patients if t not in found]
        if missing:
            raise DataError(f"test patient(s) {', '.join(missing)} not in {root} (found {', '.join(found)})",
                            fix="set -o dataset.test_patients=[...] to patients the folder holds")
        test = [p for p in pairs if p.patient in d.test_patients]
        rest = [p for p in pairs if p.patient not in d.test_patients]
        if not rest:
            raise DataError(f"no training patients in {root}: every patient found ({', '.join(found)}) is a test "
                            "patient", fix="add patients or shorten dataset.test_patients")
        n_val = min(len(rest) - 1, max(1, round(d.val_fraction * len(rest)))) if d.val_fraction > 0 else 0
        pick = set(np.random.default_rng(d.split_seed).choice(len(rest), n_val, replace=False).tolist())
        parts = {"train": [p for i, p in enumerate(rest) if i not in pick],
                 "val": [p for i, p in enumerate(rest) if i in pick], "test": test}
        parts = {k: v for k, v in parts.items() if v}
        self.ctx.record_splits({k: [p.ldct for p in v] for k, v in parts.items()})
        self.ctx.log(" · ".join(f"{k}: {len(v)} slices ({', '.join(sorted({p.patient for p in v}))})"
                                for k, v in parts.items()))
        if self.ctx.stage != "train":  # eval / denoise / spectral-map read only what they score
            want = {self.m.eval.split, getattr(getattr(self.m, "spectral_map", None), "split", None)}
            return {k: (self.read_slices(v) if k in want else v) for k, v in parts.items()}
        return {k: self.read_slices(v) for k, v in parts.items()}

    def dataset(self, s: Slices, train: bool):
        t = self.m.train
        if train:
            return RandomPatches(s, t.patch, t.patch_n, t.rotate, t.repeats)
        return FixedPatches(s, t.patch, t.patch_n, self.m.dataset.split_seed)

    def lit_module(self, net):
        return LitDenoiser(net, self.m.train, self.m.eval.window)

    # -- best validation epoch ----------------------------------------------------------------------------------
    def trainer_kwargs(self) -> dict:
        kw = {"check_val_every_n_epoch": self.m.train.val_every}
        return {**kw, "callbacks": [self._best]} if self._best is not None else kw

    def fit(self, splits: dict, net=None, *, checkpoint: bool = True):
        self._best, self.fit_info = None, {}
        if self.m.train.select == "best_val" and "val" in splits:
            self._best = training.ModelCheckpoint(
                dirpath=self.ctx.path / "checkpoints", filename="best", monitor="val_rmse", mode="min",
                save_top_k=1, save_weights_only=True, enable_version_counter=False)
        net, secs = super().fit(splits, net, checkpoint=checkpoint)
        self.fit_info["steps"] = self.epochs * math.ceil(len(splits["train"]) * self.m.train.repeats
                                                         / self.m.train.batch_size)
        if self._best is not None and self._best.best_model_path:
            best = self._best.best_model_path
            training.load_weights(net, best, prefix="net.")
            epoch = int(torch.load(best, map_location="cpu", weights_only=True)["epoch"]) + 1
            self.fit_info.update(best_epoch=epoch, best_val_rmse=float(self._best.best_model_score))
            self.ctx.log(f"kept epoch {epoch} (validation RMSE {float(self._best.best_model_score):.2f} HU)")
        return net, secs

    def train(self) -> dict:
        return {**super().train(), **self.fit_info}

    def weights_metadata(self) -> dict:
        return {"pipeline": "seanet", "arch": self.m.model.arch, "patch": self.m.train.patch,
                "units": "(HU + 1024) / 4096", **{k: v for k, v in getattr(self, "fit_info", {}).items()}}

    # -- evaluation ---------------------------------------------------------------------------------------------
    def denoise_array(self, net, ld: np.ndarray) -> np.ndarray:
        """One whole slice (H, W) in normalised units → the denoised slice, by sliding-window inference."""
        x = torch.from_numpy(np.ascontiguousarray(ld, np.float32))[None, None]
        return self.predictor.sliding_window(net, x)[0, 0].numpy()

    def evaluate(self, net, s: Slices) -> tuple[dict, list[dict]]:
        window, net = self.m.eval.window, self.predictor.setup(net)
        rows, self._shown = [], []
        for pair, ld, nd in zip(s.pairs, s.ld, s.nd, strict=True):
            out = self.denoise_array(net, ld)
            ours, base = slice_metrics(out, nd, window), slice_metrics(ld, nd, window)
            rows.append({"slice": pair.id, "patient": pair.patient, "file": str(pair.ldct), **ours,
                         **{f"ldct_{k}": v for k, v in base.items()}, "delta_psnr": ours["psnr"] - base["psnr"]})
            if len(self._shown) < self.m.eval.figures:
                self._shown.append((pair.id, ld, out, nd, rows[-1]))
        keys = [*METRICS, *(f"ldct_{k}" for k in METRICS), "delta_psnr"]
        metrics = {k: float(np.mean([r[k] for r in rows])) for k in keys}
        metrics.update(abs_delta_psnr=abs(metrics["delta_psnr"]), n_slices=len(rows),
                       rmse_gain=metrics["ldct_rmse"] - metrics["rmse"], **training.count_params(net))
        return metrics, rows

    def figures(self, net, s, metrics, rows, split):
        lo, hi = self.m.eval.window
        for sid, ld, out, nd, row in self._shown:
            imgs = [to_hu_window(a, (lo, hi)) for a in (ld, out, nd)]
            with self.ctx.figure(f"denoised_{sid}", ncols=5, figsize=(17, 3.8)) as (fig, ax):
                titles = [f"LDCT  {row['ldct_psnr']:.2f} dB", f"{self.m.model.arch}  {row['psnr']:.2f} dB", "NDCT"]
                for a, im, t in zip(ax[:3], imgs, titles, strict=True):
                    a.imshow(im, cmap="gray", vmin=lo, vmax=hi)
                    a.set_title(t)
                for a, d, t in ((ax[3], imgs[1] - imgs[2], "output − NDCT"), (ax[4], imgs[0] - imgs[2], "LDCT − NDCT")):
                    fig.colorbar(a.imshow(d, cmap="coolwarm", vmin=-100, vmax=100), ax=a, shrink=0.8)
                    a.set_title(f"{t} (HU)")
                for a in ax:
                    a.axis("off")
        if rows:
            with self.ctx.figure("psnr_per_slice", figsize=(5, 4)) as (fig, ax):
                x, y = [r["ldct_psnr"] for r in rows], [r["psnr"] for r in rows]
                ax.scatter(x, y, s=14)
                lim = [min(x + y) - 0.5, max(x + y) + 0.5]
                ax.plot(lim, lim, "k--", lw=0.8, label="no change")
                ax.set_xlabel("PSNR of the LDCT input (dB)")
                ax.set_ylabel(f"PSNR of {self.m.model.arch} (dB)")
                ax.legend()

    def summary_line(self, split, metrics):
        return (f"{split}: PSNR {metrics['psnr']:.2f} dB (LDCT {metrics['ldct_psnr']:.2f}, "
                f"Δ {metrics['delta_psnr']:+.2f})"
                f"  SSIM {metrics['ssim']:.2f}  RMSE {metrics['rmse']:.2f} HU (LDCT {metrics['ldct_rmse']:.2f})"
                f"  MAPE {metrics['mape']:.2f} %")

    def paper_kwargs(self, split, metrics):
        """Table 1's row for the architecture trained (the manifest's expect is SEANet's)."""
        arch = self.m.model.arch
        row = paper_data(self.ctx.spec).get("expect_by_arch", {}).get(arch)
        keys = [*METRICS, "delta_psnr", *(f"ldct_{k}" for k in METRICS)]
        if arch == "seanet" or row is None:
            return {"keys": keys}
        return {"expect": row, "keys": keys, "setting": f"{TABLE1_ROW[arch]} row of Table 1, test patient L506"}

    def paper_sections(self, metrics):
        mm, lo, hi = self.m.model, *self.m.eval.window
        ours = [["LDCT input (this data)", metrics["ldct_psnr"], 0.0, metrics["ldct_ssim"], metrics["ldct_rmse"],
                 metrics["ldct_mape"]],
                [f"{TABLE1_ROW[mm.arch]} (this run)", metrics["psnr"], metrics["delta_psnr"], metrics["ssim"],
                 metrics["rmse"], metrics["mape"]]]
        run = (f"## This run\n\nArchitecture `{mm.arch}`, {metrics['params_total']:,} parameters; "
               f"{metrics['n_slices']} slices of split `{metrics['split']}`, whole slices by sliding window "
               f"(roi {self.m.inference.roi_size}, overlap {self.m.inference.overlap}, {self.m.inference.mode}), "
               f"scored in [{lo:g}, {hi:g}] HU.\n\n"
               + markdown_table(["", "PSNR", "ΔPSNR", "SSIM", "RMSE (HU)", "MAPE (%)"], ours))
        return [run, paper_table(self.ctx.spec, "table1"), paper_note(self.ctx.spec, "comparison")]

    # -- the card's extra verbs ---------------------------------------------------------------------------------
    def denoise(self) -> dict:
        from .denoise import denoise

        return denoise(self)

    def spectral_map(self) -> dict:
        from .spectral import spectral_map

        return spectral_map(self)

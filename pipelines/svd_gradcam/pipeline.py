"""svd-gradcam, the method (card: shared/papers/svd-gradcam.md).

Data: MURA v1.1, one study type (``XR_ELBOW``); ``train/`` trains, ``valid/`` is both the early-stopping monitor
and the evaluation split, as in the paper (the official test set is hidden). Labels come from the study folder
(``*_positive`` = abnormal = 1); the CSVs are not needed. Images are resized to ``img_size``² (224, no aspect
preservation), replicated to 3 channels, and normalised with the ImageNet mean/std inside the network.

Classifier (``models.camnet``): MONAI DenseNet-169 features → ReLU (the CAM target layer, 1664×7×7 at 224²) →
global average pool → Linear(1664, 1) (12,486,145 parameters), or the optional Linear-LeakyReLU-Linear head. The
features start from a user-supplied torchvision ``densenet169`` state dict (``model.weights``; nothing is
downloaded) or random init with a warning. Training: binary focal loss (MONAI ``FocalLoss``, sigmoid, α 0.25,
γ 2), Adam (default betas), lr 0.01 (the paper; 1e-4 is the card's alternative), batch 8, up to 65 epochs, early
stopping on the valid loss with patience 10 (the last epoch's weights are kept, like Keras' default), random
horizontal flip and ±10° rotation on training batches.

Explanations (``cams.py``): the class explained is the predicted one, Y^c = logit for "abnormal" and −logit for
"normal", y = σ(Y^c) (p or 1 − p). SVD-Grad-CAM with the card's variants (a)–(d), rank n (default (d), n = 1), and
the baselines CAM, Grad-CAM (checked against captum ``LayerGradCam``), Grad-CAM++, Smooth-Grad-CAM (25 copies,
σ = 0.15·(max − min)), Score-CAM, Ablation-CAM (captum feature ablation of the target channels), Eigen-CAM. Each
map is upsampled bilinearly to the input and min-max normalised to [0, 1].

Metrics (``metrics.saliency``, Poppi et al. as the card defines them) with E = x ⊙ L applied to the raw image
(masked pixels become black before the network's normalisation; the card leaves the space open); the class and
sign stay those of the original image; the CAM of E for coherency uses the same method. Average Drop and Average
Increase in percent, Coherency and Complexity ×100, ADCC from the averaged terms ×100, as in Table 2.

Choices where the card is silent or offers options:
- Gradients are taken before the target ReLU (``explain.gradient: pre_relu``): G^k = ∂Y^c/∂M^k · 1[M^k > 0].
  Taken literally at the ReLU output, a GAP + linear head gives every channel a constant gradient map (w_k/PQ),
  which has rank 1, so SVD-Grad-CAM would equal Grad-CAM (and CAM) for every n and the paper's Table 2 could not
  differ; Grad-CAM code run on torchvision's DenseNet (in-place final ReLU, hook on ``features.norm5``) sees exactly
  the pre-ReLU gradient with the post-ReLU activations. ``gradient: map`` gives the literal reading. Table 2's
  identical CAM and Grad-CAM rows are then not reproduced exactly (CAM ≠ Grad-CAM under pre-ReLU gradients).
- The train stage also runs two cheap checks on the valid split (``train.check_rank_full``): the largest
  difference between full-rank SVD-Grad-CAM and Grad-CAM maps, and, where the data carries lesion positions
  (the fixture's ``fixture_lesions.csv``), the pointing accuracy of SVD-Grad-CAM for the "abnormal" score on
  abnormal images (peak within the blob radius plus half a feature cell; ``pointing_chance`` is that disc's area
  over the image's). They make the card's smoke thresholds checkable by ``medrun smoke`` on the train stage.
- The card's verbs map onto stages and options: ``explain`` writes the ``cam-metrics`` table for every method in
  ``explain.methods`` (Table 2's seven by default; ``gradcampp`` can be added); ``sweep-n`` (Exp. 1) and the variant
  comparison (Exp. 2) are extra rows from ``explain.sweep_ranks`` and ``explain.variants``; ``--method/--n/--variant``
  are ``-o explain.methods=[svd] -o explain.rank=2 -o explain.variant=uv``; ``--literal-eq`` is ``explain.literal_eq``.
- Eigen-CAM is not centred (the original paper) and its sign is fixed so the projection sums to ≥ 0.
- Score-CAM's weight is σ(Y^c(x ⊙ M_k)) (the card), not a softmax difference to a baseline.
- CAM needs a single Linear head on the default target layer; with the MLP head it is left out with a note.
- The fixture's tiny CNN (card: a 4-conv CNN for the learning test) has no BatchNorm and trains with batch 4,
  lr 0.003 for 3 epochs; with focal loss (α 0.25) it ranks well (AUROC) but its 0-logit threshold calls most
  images normal, so accuracy sits near 0.5 and the fixture's CAM metrics explain the "normal" class.
- The explain stage's ``maps/<method>.npy`` hold the low-resolution maps (N, P, Q) before upsampling (the
  upsampled ones are a deterministic function of them and 32× larger at 224²).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from medrun.artifacts import atomic_write
from medrun.datasets import mura
from medrun.errors import DataError, UsageError
from medrun.metrics import classification as cm
from medrun.metrics import saliency
from medrun.models.camnet import CamNet, densenet169, load_torchvision_densenet, tiny_cnn

from .. import training
from ..base import Pipeline
from ..report import confusion_png, learning_curves, markdown_table, paper_md, save_figure
from ..tasks import classification as clf
from . import cams

# Table 2 of the paper (MURA elbow valid, DenseNet-169): AvgDrop, AvgInc, Coherency, Complexity, ADCC (percent).
PAPER_TABLE2 = {
    "cam": (10.43, 48, 73.19, 43.81, 70.38), "gradcam": (10.43, 48, 73.19, 43.81, 70.38),
    "smooth": (11.5, 49.50, 74.56, 25.13, 78.80), "ablation": (8.20, 52.6, 84.05, 36.83, 77.66),
    "score": (7.60, 53.6, 86.05, 30.46, 81.46), "eigen": (8.95, 54.8, 81.77, 27.63, 80.73),
    "svd": (7.3, 52.4, 87.77, 20.62, 86.26),
}
# Table 1 (154 random elbow images, n = 1): the (c) and (d) variants.
PAPER_TABLE1 = {"svd_uv": (6.80, 40.12, 86.05, 18.89, 88.36), "svd_usv": (3.47, 43.33, 88.82, 15.34, 90.714)}
CAM_KEYS = ("avg_drop", "avg_increase", "coherency", "complexity", "adcc")
NAMES = {"cam": "CAM", "gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++", "smooth": "Smooth-Grad-CAM",
         "ablation": "Ablation-CAM", "score": "Score-CAM", "eigen": "Eigen-CAM", "svd": "SVD-Grad-CAM"}


class TwoClass(torch.nn.Module):
    """One logit z → two logits (−z/2, z/2), whose softmax is (1 − σ(z), σ(z)): reuses the shared evaluation."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        z = self.net(x)
        return torch.cat([-z / 2, z / 2], dim=1)


def augment(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Random horizontal flip (p = 0.5) and rotation in ±degrees per image (bilinear, zero fill)."""
    b = len(x)
    flip = torch.rand(b) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if degrees > 0:
        t = (torch.rand(b) * 2 - 1) * math.radians(degrees)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = t.cos(), -t.sin(), t.sin(), t.cos()
        grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return x


class LitBinary(L.LightningModule):
    """One-logit classifier with sigmoid focal loss and Adam."""

    def __init__(self, net: CamNet, lr: float, betas, alpha: float, gamma: float, augment_deg: float | None):
        super().__init__()
        from monai.losses import FocalLoss

        self.net, self.lr, self.betas, self.augment_deg = net, lr, tuple(betas), augment_deg
        self.loss = FocalLoss(gamma=gamma, alpha=alpha, use_softmax=False, reduction="mean")

    def _step(self, batch, prefix: str):
        x, y = batch
        if prefix == "train" and self.augment_deg is not None:
            x = augment(x, self.augment_deg)
        logits = self.net(x)
        loss = self.loss(logits, y.float()[:, None])
        acc = ((logits[:, 0] > 0).long() == y).float().mean()
        self.log(f"{prefix}_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y), sync_dist=True)
        self.log(f"{prefix}_acc", acc, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y), sync_dist=True)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr, betas=self.betas)


class SvdGradCam(Pipeline):
    def build_model(self) -> CamNet:
        mm = self.m.model
        return densenet169(mm.head) if mm.arch == "densenet169" else tiny_cnn(mm.width, mm.head)

    def _initial_model(self) -> CamNet:
        net, mm = self.build_model(), self.m.model
        if mm.weights:
            if mm.arch != "densenet169":
                raise UsageError("model.weights initialises DenseNet-169 features", fix="set model.arch=densenet169 or drop model.weights")
            path = Path(mm.weights).expanduser()
            missing, wrong = load_torchvision_densenet(net, training.load_state(path))
            if missing or wrong:
                what = (f"{len(missing)} missing (e.g. {missing[0]})" if missing else "") + \
                       (", " if missing and wrong else "") + (f"{len(wrong)} with other shapes (e.g. {wrong[0]})" if wrong else "")
                raise UsageError(f"weights in {path} do not fit DenseNet-169's features: {what}",
                                 fix="pass a torchvision densenet169 state dict (model.weights) or drop it for random init")
            self.ctx.log(f"features initialised from {path}")
        elif mm.arch == "densenet169":
            self.ctx.log("warning: no model.weights — DenseNet-169 starts from random init (the paper fine-tunes "
                         "ImageNet weights; pass a torchvision densenet169 .pth with -o model.weights=FILE)")
        return net

    # -- data -----------------------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self.ctx.data_roots["mura"]

    def samples(self, split: str) -> list[mura.Sample]:
        s = mura.read(self.root, split, self.m.dataset.study_type)
        counts = Counter(x.label for x in s)
        self.ctx.log(f"{split} {self.m.dataset.study_type}: {len(s)} images — normal {counts[0]}, abnormal {counts[1]}")
        return s

    def _record_splits(self, splits: dict) -> None:
        import json

        lock = self.ctx.run.path / "data.lock.json"
        data = json.loads(lock.read_text())
        data["splits"] = {k: [Path(s.path).relative_to(self.root).as_posix() for s in v] for k, v in splits.items()}
        self.ctx.run.write_json("data.lock.json", data)

    def _images(self, samples) -> torch.Tensor:
        ds = clf.ImageSamples(samples, self.m.dataset.img_size)
        return torch.stack([ds[i][0] for i in range(len(ds))]) if len(ds) else torch.zeros(0, 3, 1, 1)

    # -- training -------------------------------------------------------------------------------------------
    def train(self) -> dict:
        from lightning.pytorch.callbacks import EarlyStopping

        t, size = self.m.train, self.m.dataset.img_size
        train, valid = self.samples("train"), self.samples("valid")
        self._record_splits({"train": train, "valid": valid})
        net = self._initial_model()
        module = LitBinary(net, t.lr, t.betas, t.focal_alpha, t.focal_gamma, t.rotate_deg if t.augment else None)
        callbacks = [EarlyStopping(monitor="val_loss", patience=t.patience, mode="min")] if t.patience else []
        trainer = training.make_trainer(self.ctx, t.epochs, callbacks=callbacks)
        t0 = time.perf_counter()
        training.fit(trainer, module,
                     train_dataloaders=clf.loader(clf.ImageSamples(train, size), t.batch_size, True, t.num_workers),
                     val_dataloaders=clf.loader(clf.ImageSamples(valid, size), t.batch_size, False, t.num_workers),
                     ckpt_path=training.resume_checkpoint(self.ctx.run))
        epochs = trainer.current_epoch
        secs = (time.perf_counter() - t0) / max(1, epochs)
        net.eval()
        training.save_weights(net, self.ctx.run.path / "checkpoints" / "model.safetensors",
                              {"pipeline": "svd-gradcam", "arch": self.m.model.arch, "classes": ",".join(mura.CLASSES)})
        learning_curves(self.ctx.run.path / "logs" / "metrics.csv", self.ctx.run.path / "figures" / "learning_curves.png")
        checks = self._cam_checks(net, valid) if t.check_rank_full else {}
        metrics = self._report(net, valid, "valid", extra=checks)
        metrics.update(epochs_run=epochs, secs_per_epoch=round(secs, 3), **training.count_params(net))
        return metrics

    def _report(self, net, samples, split: str, extra: dict | None = None) -> dict:
        metrics, rows = clf.evaluate(TwoClass(net), samples, self.m.dataset.img_size, mura.CLASSES, self.m.train.batch_size)
        y = np.array([mura.CLASSES.index(r["true"]) for r in rows])
        pred = np.array([mura.CLASSES.index(r["pred"]) for r in rows])
        metrics.update(split=split, auroc=metrics["auroc_macro"], kappa=cm.quadratic_kappa(y, pred), **(extra or {}))
        run = self.ctx.run
        clf.write_csv(run.path / "per_case.csv", rows)
        confusion_png(metrics["confusion_matrix"], mura.CLASSES, run.path / "figures" / "confusion_matrix.png",
                      f"MURA {self.m.dataset.study_type} {split}")
        self.ctx.log(f"{split}: AUROC {metrics['auroc']:.4f}  accuracy {metrics['accuracy']:.4f}  kappa {metrics['kappa']:.4f}"
                     + (f"  pointing(SVD-Grad-CAM) {extra['pointing_svd']:.3f}" if extra and "pointing_svd" in extra else ""))
        sections = [clf.per_class_table(metrics), _TRAIN_NOTES]
        if extra:
            sections.insert(1, "## Explanation checks (this run)\n\n" + markdown_table(["check", "value"], [[k, v] for k, v in extra.items()]))
        run.write_text("paper.md", self._paper_md(metrics, sections, "SVD-Grad-CAM classifier (DenseNet-169, MURA)"))
        return metrics

    def _paper_md(self, metrics: dict, sections: list[str], title: str) -> str:
        return paper_md(self.ctx.spec, self.m, metrics, self.ctx, title=title, sections=sections, present_only=True)

    def _cam_checks(self, net: CamNet, samples) -> dict:
        """Full-rank SVD-Grad-CAM vs Grad-CAM (max |Δ| of the normalised maps) and, with lesion positions, pointing."""
        x = self._images(samples)
        with torch.no_grad():
            sign = torch.where(net(x).reshape(-1) >= 0, 1.0, -1.0)
        size = x.shape[-2:]
        gradient = self.m.explain.gradient
        full = cams.upsample(cams.svd_gradcam(net, net.relu, x, sign, n=10**6, gradient=gradient), size)
        grad = cams.upsample(cams.gradcam(net, net.relu, x, sign, gradient), size)
        out = {"svd_fullrank_vs_gradcam_maxdiff": float((full - grad).abs().max())}
        out.update(self._pointing(net, net.relu, samples, x, {"svd": {"gradient": gradient}}))
        return out

    def _pointing(self, net, layer, samples, x, methods: dict) -> dict:
        """Share of abnormal images with a known lesion whose map (for the "abnormal" score) peaks inside it."""
        from PIL import Image

        lesions = mura.read_lesions(self.root)
        idx = [i for i, s in enumerate(samples) if s.label == 1 and Path(s.path).relative_to(self.root).as_posix() in lesions]
        if not idx:
            return {}
        size = self.m.dataset.img_size
        xs = x[idx]
        discs = []
        for i in idx:
            cy, cx, r = lesions[Path(samples[i].path).relative_to(self.root).as_posix()]
            with Image.open(samples[i].path) as im:
                w, h = im.size
            discs.append((cy * size / h, cx * size / w, r * size / max(w, h)))
        out = {}
        for name, kw in methods.items():
            low = cams.compute(name.split("_")[0], net, layer, xs, torch.ones(len(xs)), **kw)
            cell = size / low.shape[-1]
            maps = cams.upsample(low, (size, size)).reshape(len(xs), -1)
            peaks = maps.argmax(1)
            hits = [math.hypot(int(p) // size - cy, int(p) % size - cx) <= r + cell / 2
                    for p, (cy, cx, r) in zip(peaks, discs, strict=True)]
            out[f"pointing_{name}"] = float(np.mean(hits))
        cell = size / low.shape[-1]
        out["pointing_chance"] = float(np.mean([min(1.0, math.pi * (r + cell / 2) ** 2 / size**2) for _, _, r in discs]))
        out["pointing_n"] = len(idx)
        return out

    # -- evaluation and prediction on a finished run ---------------------------------------------------------
    def eval(self) -> dict:
        split = self.m.eval.split
        return self._report(self.trained_model().eval(), self.samples(split), split)

    def predict(self) -> dict:
        net = self.trained_model().eval()
        if self.m.predict.input:
            folder = Path(self.m.predict.input)
            if not folder.is_dir():
                raise DataError(f"predict.input folder not found: {folder}", fix="-o predict.input=/path/to/images")
            samples = [mura.Sample(p, -1, "", "") for p in sorted(folder.rglob("*.png")) if not p.name.startswith(".")]
            if not samples:
                raise DataError(f"no PNG images in {folder}", fix="point predict.input at a folder of .png files")
        else:
            samples = self.samples(self.m.eval.split)
        probs = clf.predict_probs(TwoClass(net), clf.ImageSamples(samples, self.m.dataset.img_size), self.m.train.batch_size)
        rows = [{"file": str(s.path), "pred": mura.CLASSES[int(p[1] >= 0.5)], "prob_abnormal": round(float(p[1]), 6)}
                for s, p in zip(samples, probs, strict=True)]
        clf.write_csv(self.ctx.run.path / "per_case.csv", rows)
        counts = Counter(r["pred"] for r in rows)
        self.ctx.log(f"predicted {len(rows)} images: normal {counts['normal']}, abnormal {counts['abnormal']}")
        return {"n": len(rows), "predicted": {c: counts[c] for c in mura.CLASSES}}

    # -- explanations (Table 1, Table 2) --------------------------------------------------------------------
    def _layer(self, net):
        name = self.m.explain.target_layer
        modules = dict(net.named_modules())
        if name not in modules or name == "":
            top = [n for n, _ in net.named_children()]
            last = [n for n in modules if n.startswith("features.")][-6:]
            raise UsageError(f"target layer '{name}' is not a module of the {self.m.model.arch} classifier",
                             fix=f"-o explain.target_layer=NAME with NAME one of {', '.join(top + last)} "
                                 f"(or any of the {len(modules) - 1} names of net.named_modules())")
        return modules[name]

    def _method_rows(self, net, layer) -> dict[str, tuple[str, dict]]:
        """{row name: (method, kwargs)}: the manifest's methods, then the rank sweep and the variant rows."""
        ex = self.m.explain
        svd = {"n": ex.rank, "variant": ex.variant, "literal_eq": ex.literal_eq}
        rows: dict[str, tuple[str, dict]] = {}
        for method in ex.methods:
            if method == "cam" and not (isinstance(getattr(net, "head", None), torch.nn.Linear) and layer is net.relu):
                self.ctx.log("CAM left out: it needs the single Linear head on the default target layer")
                continue
            rows[method] = (method, svd if method == "svd" else {})
        for n in ex.sweep_ranks:
            rows[f"svd_n{n}"] = ("svd", {**svd, "n": n})
        for v in ex.variants:
            rows[f"svd_{v}"] = ("svd", {**svd, "variant": v})
        return rows

    def explain(self) -> dict:
        ex = self.m.explain
        net = self.trained_model().eval()
        for p in net.parameters():
            p.requires_grad_(False)
        layer = self._layer(net)
        samples = self.samples(ex.split)
        if ex.max_images and ex.max_images < len(samples):
            keep = np.random.default_rng(self.m.seed).choice(len(samples), ex.max_images, replace=False)
            samples = [samples[i] for i in sorted(keep)]
        self._record_splits({ex.split: samples})
        x = self._images(samples)
        size = tuple(x.shape[-2:])
        with torch.no_grad():
            logits = torch.cat([net(x[i:i + ex.batch_size]).reshape(-1) for i in range(0, len(x), ex.batch_size)])
        sign = torch.where(logits >= 0, 1.0, -1.0)
        y = torch.sigmoid(sign * logits)
        gen = torch.Generator().manual_seed(self.m.seed)
        common = {"smooth_n": ex.smooth_samples, "smooth_sigma": ex.smooth_sigma, "batch": ex.mask_batch, "generator": gen,
                  "gradient": ex.gradient}
        rows = self._method_rows(net, layer)
        run = self.ctx.run
        per_case = [{"file": Path(s.path).relative_to(self.root).as_posix(), "label": mura.CLASSES[s.label],
                     "pred": mura.CLASSES[int(z >= 0)], "y": round(float(p), 6)} for s, z, p in zip(samples, logits, y, strict=True)]
        table, upsampled, secs = {}, {}, {}
        for name, (method, kw) in rows.items():
            t0 = time.perf_counter()
            lows, maps, maps_e, y_e = [], [], [], []
            for i in range(0, len(x), ex.batch_size):
                xb, sb = x[i:i + ex.batch_size], sign[i:i + ex.batch_size]
                low = cams.compute(method, net, layer, xb, sb, **kw, **common)
                lmap = cams.upsample(low, size)
                e = xb * lmap[:, None]
                with torch.no_grad():
                    y_e.append(torch.sigmoid(sb * net(e).reshape(-1)))
                maps_e.append(cams.upsample(cams.compute(method, net, layer, e, sb, **kw, **common), size))
                lows.append(low)
                maps.append(lmap)
            secs[name] = (time.perf_counter() - t0) / max(1, len(x))
            low, lmap, lmap_e, ye = torch.cat(lows), torch.cat(maps), torch.cat(maps_e), torch.cat(y_e)
            atomic_write(run.path / "maps" / f"{name}.npy", _npy(low.numpy().astype(np.float32)))
            upsampled[name] = lmap
            drop = saliency.average_drop(y, ye)
            coh, comp = saliency.coherency(lmap_e, lmap), saliency.complexity(lmap)
            table[name] = {"avg_drop": drop, "avg_increase": saliency.increase_in_confidence(y, ye),
                           "coherency": 100 * coh, "complexity": 100 * comp, "adcc": 100 * saliency.adcc(drop, coh, comp)}
            for j, r in enumerate(per_case):
                yy, yej = float(y[j]), float(ye[j])
                r[f"{name}_drop"] = round(100 * max(0.0, yy - yej) / yy, 4)
                r[f"{name}_increase"] = int(yy < yej)
                r[f"{name}_coherency"] = round(100 * saliency.coherency(lmap_e[j], lmap[j]), 4)
                r[f"{name}_complexity"] = round(100 * float(lmap[j].mean()), 4)
            self.ctx.log(f"{NAMES.get(method, method)} [{name}]: " + "  ".join(f"{k} {v:.2f}" for k, v in table[name].items())
                         + f"  ({secs[name]:.2f} s/image)")
        clf.write_csv(run.path / "per_case.csv", per_case)
        metrics: dict = {"n_images": len(samples), "split": ex.split, "target_layer": ex.target_layer,
                         "rank": ex.rank, "variant": ex.variant}
        for name, vals in table.items():
            metrics.update({f"{k}_{name}": round(v, 4) for k, v in vals.items()})
            metrics[f"secs_per_image_{name}"] = round(secs[name], 4)
        if "svd" in rows or "gradcam" in rows:
            full = cams.upsample(cams.svd_gradcam(net, layer, x, sign, n=10**6, gradient=ex.gradient), size)
            grad = cams.upsample(cams.gradcam(net, layer, x, sign, ex.gradient), size)
            metrics["svd_fullrank_vs_gradcam_maxdiff"] = float((full - grad).abs().max())
        metrics.update(self._pointing(net, layer, samples, x, {k: {**v[1], "gradient": ex.gradient}
                                                               for k, v in rows.items() if v[0] in ("svd", "gradcam")}))
        self._overlays(samples, x, upsampled, [r["pred"] for r in per_case])
        run.write_text("paper.md", self._paper_md(metrics, self._explain_sections(table), "SVD-Grad-CAM explanations"))
        return metrics

    def _explain_sections(self, table: dict) -> list[str]:
        head = ["method", "AvgDrop↓", "AvgInc↑", "Coherency↑", "Complexity↓", "ADCC↑", "paper AvgDrop", "paper AvgInc",
                "paper Coherency", "paper Complexity", "paper ADCC"]
        ref = {**PAPER_TABLE2, **PAPER_TABLE1}
        body = [[name, *[round(v[k], 2) for k in CAM_KEYS], *(ref.get(name) or ("—",) * 5)] for name, v in table.items()]
        ex = self.m.explain
        return [f"## CAM metrics (this run beside Table 2; Table 1 for svd_uv / svd_usv)\n\n"
                f"SVD-Grad-CAM: variant {ex.variant}, n = {ex.rank}{', printed Eq. 7–10' if ex.literal_eq else ''}; "
                f"target layer `{ex.target_layer}`. All values in percent.\n\n" + markdown_table(head, body), _EXPLAIN_NOTES]

    def _overlays(self, samples, x, maps: dict, explained: list[str] | None = None) -> None:
        n = self.m.explain.overlays
        if not n or not maps:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        order = sorted(range(len(samples)), key=lambda i: -samples[i].label)[:n]
        names = list(maps)
        for i in order:
            fig, axes = plt.subplots(1, len(names) + 1, figsize=(2.2 * (len(names) + 1), 2.5), squeeze=False)
            img = x[i, 0].numpy() / 255.0
            axes[0, 0].imshow(img, cmap="gray", vmin=0, vmax=1)
            axes[0, 0].set_title(mura.CLASSES[samples[i].label] + (f" (maps: {explained[i]})" if explained else ""), fontsize=8)
            for ax, name in zip(axes[0, 1:], names, strict=True):
                ax.imshow(img, cmap="gray", vmin=0, vmax=1)
                ax.imshow(maps[name][i].numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
                ax.set_title(name, fontsize=8)
            for ax in axes[0]:
                ax.axis("off")
            fig.tight_layout()
            rel = Path(samples[i].path).relative_to(self.root / self.m.explain.split / self.m.dataset.study_type)
            out = self.ctx.run.path / "figures" / ("overlay_" + "_".join(rel.with_suffix("").parts) + ".png")
            save_figure(fig, out, dpi=90)


def _npy(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


_TRAIN_NOTES = """## Notes on the comparison

- The paper reports no classifier metrics; AUROC, accuracy and Cohen's kappa are given for the valid split.
- The paper fine-tunes ImageNet weights; without `model.weights` DenseNet-169 starts from random init."""

_EXPLAIN_NOTES = """## Notes on the comparison

- The paper's validation set is given as 564, 526 and 464 images; this run uses the whole valid split of the study
  type (or `explain.max_images` of it) and reports its size as `n_images`.
- E = x ⊙ L on the raw image; coherency uses the same method's map of E; ADCC from the averaged terms (the card).
- Score-CAM and Ablation-CAM cost one forward per channel (1664 for DenseNet-169) per image."""

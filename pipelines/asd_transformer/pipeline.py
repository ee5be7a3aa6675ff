"""asd-transformer, the method (card: docs/papers/asd-transformer.md).

Data: ABIDE I FC in either public layout (``datasets.abide``): BNT/Com-TF's ``abide.npy`` (its ``corr``) or PCP
``rois_cc200`` time series with the phenotype CSV (Pearson FC computed here). ASD is the positive class.
``roi_communities.csv`` gives each ROI's community (Com-TF's 8 for CC200). The PCP denoising strategy is whatever
folder the user points at; the run records the data fingerprint, not the strategy.

Features (``features.py``): ComBat (neuroCombat 0.2.12, parametric EB, batch = site, no covariates) on the
R(R−1)/2 upper-triangle features, fitted on all subjects (label-free, transductive, as the paper) or with
``preprocess.combat_fit: train`` on each run's train split; the symmetric matrix is rebuilt with diagonal 1.
Nodal local efficiency (Latora–Marchiori) of a binary graph keeping the strongest positive correlations at density
``preprocess.le_density`` (0.2), vectorised and checked against networkx; each ROI's row is scaled by it; rows and
columns are reordered by community (stable). ``le_mode: weighted`` needs bctpy, which is not installed here.

Network (``models.asd_transformer``): shared local encoder over [prompt_k; block_k], the interaction module
(``model.interaction``: ``add``, the card's resolution; ``concat``, the paper's literal reordering, which provably
changes nothing; ``none``, Com-TF), a global encoder over 8 + N tokens, OCRead with frozen orthonormal centres and
the Com-TF/BNT head. 1,172,986 parameters at N = 200.

Protocol: stratified 70 % train split (``dataset.split_seed``), then the remaining 30 % split 1:2 into val/test,
re-drawn for each of ``protocol.runs`` runs with seed ``seed + run − 1`` (which also seeds the initialisation);
``protocol.scheme: resplit`` re-draws the whole 7:1:2 split instead. A user split file (``dataset.splits``,
``subject,split``) replaces the random split for every run. Adam (weight decay 1e-4), lr 1e-4 with cosine decay to
1e-5, batch 64, 50 epochs, cross-entropy; in each run the epoch with the highest validation AUROC (ties: the lower
validation loss; Lightning's ``ModelCheckpoint`` on ``val_select``, mode max) gives the test metrics: AUROC on
softmax P(ASD), accuracy (argmax), sensitivity, specificity. ``metrics.json`` holds their mean, sample sd
(``<metric>_sd``, ddof 1) and 95 % t-interval over runs (``sweep.summarise``), like the paper's "mean ± std of 5 runs".

Stages: ``train`` (the protocol; weights ``run<i>.safetensors``, ``model.safetensors`` = run 1), ``eval`` (the
train run's weights on the same splits, or ``--checkpoint`` weights on every run's split), ``predict`` (run 1's
model on ``predict.split``), ``ablate`` (``ablate.py``: one train run per variant), ``baselines`` (``baselines.py``:
one train run per Table 1 model), ``prepare`` (the card's verb:
``features.npz``, the ComBat check, a per-site figure). Features come from an .npz cache under
``$MEDRUN_CACHE/asd-transformer/`` keyed by data, settings and the code of ``features.py``. Evaluation and
prediction run on the manifest's hardware (the predictor).

Choices where the card is silent or offers options:
- The community score is the local layer's attention paid to the prompt token (the card's step 7); the attention
  figure (``figures.py``) shows the global layer's, as the paper's Fig. 4, in community order, for test ASD and
  control subjects, with the mean community scores.
- Train runs do not resume inside the multi-run protocol (each run trains in memory; an interrupted train stage
  starts again); each run's best-epoch checkpoint lives in a temporary folder until its weights are saved.
- The ComBat check (``combat_site_var_fall``: 1 − between-site variance of the feature means after / before) and
  the mean local efficiency go into ``metrics.json``.
- ``com-tf`` in ``ablate`` is the Com-TF reduction.

Table 1 baselines (``model.arch``; ``baselines.py`` runs them as one sweep): BrainNetCNN (``models.brainnetcnn``),
FBNETGEN (``models.fbnetgen``) and BNT (``models.bnt``), trained by this same protocol (splits, seeds, recipe,
best-validation-AUROC epoch), so their rows are comparable with the proposed model's as the paper's are. Choices:
- Input: the FC rows in community order (the order does not matter to them beyond being the same for every
  subject); ``medrun baselines`` gives them Pearson FC without ComBat or Nle (``baselines.features: raw``, as in
  their papers), while ``medrun train -o model.arch=…`` uses the manifest's ``preprocess`` as it stands.
- BNT: 4 heads (BNT's), FFN and dropout from ``model.dim_feedforward`` / ``model.dropout`` (1024 / 0.1 in the
  paper's manifest, BNT's values), ``model.bnt_clusters`` centres (BNT: 100; at most the ROI count).
- FBNETGEN: the time series (``timeseires`` of abide.npy, or the PCP .1D files read again), the first
  ``model.time_length`` points (fewer when a subject's series is shorter, rounded down to the GRU window of 4),
  each ROI z-scored per subject, appended to the FC rows as one input tensor; its loss adds the paper's group and
  sparsity terms on the generated graph (``training_loss``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tempfile
import time
from functools import cached_property
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from medrun.datasets import abide
from medrun.errors import DataError, EnvError, UsageError
from medrun.metrics import classification as cm
from medrun.models.asd_transformer import CC200_BLOCKS, AsdTransformer
from medrun.models.fbnetgen import FBNETGEN

from .. import training
from ..base import Pipeline
from ..report import markdown_table, paper_data, paper_md, paper_note
from ..sweep import headline, summarise
from ..tasks.classification import loader
from . import features as feat
from . import figures

METRICS = ("accuracy", "auroc", "sensitivity", "specificity")
PAPER_ROW = {"asd-transformer": "Proposed (paper)", "brainnetcnn": "BrainNetCNN", "fbnetgen": "FBNETGEN", "bnt": "BNT"}


class LitAsd(L.LightningModule):
    """Cross-entropy; Adam with weight decay and cosine decay; logs the validation AUROC (P(ASD)) and loss of every
    epoch and ``val_select``, which Lightning's ``ModelCheckpoint`` maximises to keep the best epoch (highest AUROC,
    ties broken by the lower validation loss)."""

    def __init__(self, net: AsdTransformer, lr: float, weight_decay: float, lr_min: float, epochs: int):
        super().__init__()
        self.net = net
        self.lr, self.weight_decay, self.lr_min, self.epochs = lr, weight_decay, lr_min, epochs
        self._val: list = []
        self.val_auroc: dict[int, float] = {}  # epoch → validation AUROC (for the record of the chosen epoch)

    def training_step(self, batch, batch_idx):
        x, y = batch
        # FBNETGEN adds its graph regularisers to the cross-entropy
        loss = self.net.training_loss(x, y) if hasattr(self.net, "training_loss") else F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self._val.append((torch.softmax(logits, 1)[:, 1].detach(), y, F.cross_entropy(logits, y, reduction="sum")))

    def on_validation_epoch_end(self):
        p = torch.cat([v[0] for v in self._val]).float().cpu().numpy()
        y = torch.cat([v[1] for v in self._val]).cpu().numpy()
        loss = float(sum(float(v[2]) for v in self._val) / max(1, len(y)))
        self._val = []
        auc = self.val_auroc[self.current_epoch] = cm.auroc(y, p)
        self.log("val_auroc", auc)
        self.log("val_loss", loss)
        # the selection key (AUROC, then the lower loss) as one float64 for ModelCheckpoint: AUROC moves in steps of
        # at least 1/(2·pairs), and the loss term stays below half a step, so it only orders epochs of equal AUROC
        pairs = max(1, int(y.sum()) * int(len(y) - y.sum()))
        select = (auc if np.isfinite(auc) else -1.0) + 0.25 / pairs / (1.0 + loss)
        self.log("val_select", torch.tensor(select, dtype=torch.float64))

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.epochs), eta_min=self.lr_min)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


class AsdTransformerPipeline(Pipeline):
    _data: abide.Connectivity | None = None

    # -- model ------------------------------------------------------------------------------------------------
    def blocks(self) -> tuple[int, ...]:
        """Community block sizes: from the data when read, else from roi_communities.csv, else CC200's."""
        if self._data is not None:
            return feat.community_order(self._data.communities)[1]
        root = Path(self.m.dataset.root) if self.m.dataset.root else None
        if root is not None and (root / abide.COMMUNITIES).is_file():
            import pandas as pd

            comm = pd.read_csv(root / abide.COMMUNITIES)["community"].to_numpy().astype(int)
            return tuple(int(c) for c in np.bincount(comm))
        return CC200_BLOCKS

    def build_model(self):
        mm = self.m.model
        blocks = self.blocks()
        if mm.arch != "asd-transformer":
            return self._baseline(sum(blocks))
        if sum(blocks) % mm.nhead:
            raise UsageError(f"model.nhead {mm.nhead} does not divide d_model = {sum(blocks)} ROIs",
                             fix="choose a head count that divides the number of ROIs (8 for CC200's 200)")
        return AsdTransformer(blocks, mm.nhead, mm.dim_feedforward, mm.dropout, mm.clusters, mm.interaction)

    def _baseline(self, n: int):
        """A Table 1 baseline at ``n`` ROIs, its sizes from the manifest; an impossible size is a usage error."""
        mm = self.m.model
        if mm.arch == "brainnetcnn":
            from medrun.models.brainnetcnn import BrainNetCNN

            return BrainNetCNN(n)
        if mm.arch == "fbnetgen":
            return FBNETGEN(n)
        from medrun.models.bnt import BNT

        if n % 4 or mm.bnt_clusters > n:
            raise UsageError(f"bnt needs 4 heads dividing {n} ROIs and model.bnt_clusters ≤ {n} "
                             f"(got {mm.bnt_clusters})", fix=f"-o model.bnt_clusters={min(mm.bnt_clusters, n)}")
        return BNT(n, mm.bnt_clusters, 4, mm.dim_feedforward, mm.dropout)

    # -- FBNETGEN's time series ---------------------------------------------------------------------------------
    def timeseries(self) -> np.ndarray:
        """(subjects, ROIs, T) float32, the first T points of every subject (T: ``model.time_length`` or the
        shortest series, a multiple of 4), each ROI z-scored per subject (a constant ROI gives zeros); atlas order."""
        if "_ts" not in self.__dict__:
            data, d = self.data(), self.m.dataset
            root = self.ctx.data_roots[d.name]
            if d.name == "abide":
                raw = abide.load_npy_dict(root / abide.NPY).get("timeseires")
                if raw is None:
                    raise DataError(f"{root / abide.NPY} has no timeseires, which model.arch fbnetgen needs",
                                    fix="use BNT's abide.npy (with time series) or another model.arch")
                series = [np.asarray(s, dtype=np.float32) for s in raw]  # (R, T) each
            else:
                series = [abide.read_1d(root / abide.ROIS / f"{s}_rois_cc200.1D").T.astype(np.float32)
                          for s in data.subject]
            t = min(self.m.model.time_length, *(s.shape[1] for s in series)) // 4 * 4
            if t < 4:
                raise DataError(f"{data.source}: a subject has fewer than 4 time points", fix="drop that subject")
            x = np.stack([s[:, :t] for s in series])
            x = x - x.mean(2, keepdims=True)
            sd = x.std(2, keepdims=True)
            self._ts = np.divide(x, sd, out=np.zeros_like(x), where=sd > 0)
            self.ctx.log(f"fbnetgen: {t} time points per ROI")
        return self._ts

    def model_input(self, prepared: dict) -> np.ndarray:
        """The network's input: the node features, for FBNETGEN followed by each ROI's time series (same order)."""
        if self.m.model.arch != "fbnetgen":
            return prepared["x"]
        return np.concatenate([prepared["x"], self.timeseries()[:, prepared["order"]]], axis=2)

    @cached_property
    def predictor(self):
        return self.ctx.predictor()

    # -- data -------------------------------------------------------------------------------------------------
    def data(self) -> abide.Connectivity:
        if self._data is None:
            d = self.m.dataset
            self._data = abide.read(d.name, self.ctx.data_roots[d.name], d.asd_label)
            n_asd = int(self._data.label.sum())
            self.ctx.log(f"{d.name}: {len(self._data)} subjects ({n_asd} ASD, {len(self._data) - n_asd} control), "
                         f"{self._data.corr.shape[1]} ROIs, {len(set(self._data.site))} sites, "
                         f"{len(self.blocks())} communities")
        return self._data

    def splits(self) -> list[dict[str, np.ndarray]]:
        """One {train, val, test: subject indices} per run (disjoint: sklearn's splits, or a split file that
        ``abide.read_splits`` checks), recorded in data.lock.json."""
        from sklearn.model_selection import train_test_split

        data, d, p = self.data(), self.m.dataset, self.m.protocol
        idx, y = np.arange(len(data)), data.label
        runs = []
        if d.splits:
            path = Path(d.splits) if Path(d.splits).is_absolute() else self.ctx.data_roots[d.name] / d.splits
            given = abide.read_splits(path, data.subject)
            pos = {s: i for i, s in enumerate(data.subject)}
            fixed = {k: np.array(sorted(pos[s] for s in v), dtype=int) for k, v in given.items()}
            runs = [fixed] * p.runs
        else:
            for r in range(p.runs):
                seed = self.m.seed + r
                try:
                    train, rest = train_test_split(idx, train_size=d.train_fraction, stratify=y,
                                                   random_state=d.split_seed if p.scheme == "fixed-train" else seed)
                    val, test = train_test_split(rest, train_size=d.val_fraction, stratify=y[rest], random_state=seed)
                except ValueError as e:
                    raise DataError(f"{data.source}: cannot split {len(idx)} subjects 7:1:2 by label ({e})",
                                    fix="each class needs enough subjects for every split") from None
                runs.append({"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)})
        self.ctx.record_splits({f"run{r + 1}/{k}": [data.subject[i] for i in v] for r, s in enumerate(runs)
                                for k, v in s.items()})
        return runs

    def features(self, fit: np.ndarray | None = None, *, combat: bool | None = None, nle: bool | None = None) -> dict:
        """The node features (``combat``, ``nle`` override ``preprocess``), cached in $MEDRUN_CACHE/asd-transformer."""
        pp, data = self.m.preprocess, self.data()
        combat = pp.combat if combat is None else combat
        nle = pp.nle if nle is None else nle
        if pp.le_mode == "weighted":
            raise EnvError("preprocess.le_mode weighted needs bctpy (efficiency_wei), which is not installed",
                           fix="pip install bctpy, or use -o preprocess.le_mode=binary")
        key = (combat, nle, None if fit is None else fit.tobytes())
        memo = self.__dict__.setdefault("_features", {})
        if key not in memo:
            h = hashlib.sha256(json.dumps([self.ctx.run.info().get("data_sha256"), self.m.dataset.name,
                                           self.m.dataset.asd_label, combat, nle, pp.le_density]).encode())
            h.update(b"" if fit is None else np.packbits(fit).tobytes())
            h.update(Path(feat.__file__).read_bytes())
            what = f"features (ComBat {'on' if combat else 'off'}, local efficiency {'on' if nle else 'off'})"

            def compute():
                t0 = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):  # neuroCombat prints its progress to stdout
                    out = feat.prepare(data.corr, data.site, data.communities, use_combat=combat, use_nle=nle,
                                       density=pp.le_density, fit=fit)
                self.ctx.log(f"{what} in {time.perf_counter() - t0:.1f} s")
                return out

            path = Path(self.ctx.cache_dir) / "asd-transformer" / f"features-{h.hexdigest()[:32]}.npz"
            memo[key] = feat.cached(path, compute, log=lambda s: self.ctx.log(f"{what} {s}"))
        return memo[key]

    def features_for(self, split: dict | None, **kw) -> dict:
        """One run's features: ComBat fitted on every subject, or on ``split``'s train part (``combat_fit: train``)."""
        fit = None
        if split is not None and self.m.preprocess.combat and self.m.preprocess.combat_fit == "train":
            fit = np.zeros(len(self.data()), bool)
            fit[split["train"]] = True
        return self.features(fit, **kw)

    # -- one run of the protocol ------------------------------------------------------------------------------
    def _fit(self, x: np.ndarray, split: dict, seed: int, tag: str):
        """Train one run; the weights of the best validation epoch (``ModelCheckpoint`` on ``val_select``)."""
        t, y = self.m.train, self.data().label
        training.apply_determinism(self.m.determinism, seed)
        module = LitAsd(self.build_model(), t.lr, t.weight_decay, t.lr_min, t.epochs)
        with tempfile.TemporaryDirectory(prefix="medrun-asd-best-") as tmp:
            best = ModelCheckpoint(dirpath=tmp, filename="best", monitor="val_select", mode="max", save_top_k=1,
                                   save_weights_only=True, enable_version_counter=False)
            trainer = training.make_trainer(self.ctx, t.epochs, checkpoint=False, logger=False, callbacks=[best],
                                            enable_checkpointing=True)
            # one CSV log per run of the protocol: logs/<run>/metrics.csv
            trainer.loggers = [CSVLogger(save_dir=self.ctx.path / "logs", name=tag, version=""),
                               *self.ctx.extras.get("loggers", ())]
            t0 = time.perf_counter()
            training.fit(trainer, module,
                         train_dataloaders=loader(_tensors(x, y, split["train"]), t.batch_size, True, t.num_workers,
                                                  seed=seed),
                         val_dataloaders=DataLoader(_tensors(x, y, split["val"]), batch_size=t.batch_size))
            secs = (time.perf_counter() - t0) / max(1, t.epochs)
            epoch = int(torch.load(best.best_model_path, map_location="cpu", weights_only=True)["epoch"])
            net = training.load_weights(module.net, Path(best.best_model_path), prefix="net.")
        return net.eval(), {"best_epoch": epoch + 1, "secs_per_epoch": round(secs, 3),
                            "val_auroc": module.val_auroc.get(epoch, float("nan"))}

    def probs(self, net: AsdTransformer, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Softmax P(ASD) of the subjects ``idx`` through the predictor (the manifest's hardware), batches of 64."""
        if not len(idx):
            return np.zeros(0)
        out = self.predictor.map(net, DataLoader(TensorDataset(torch.from_numpy(x[idx])), batch_size=64))
        return torch.softmax(torch.cat(out), 1)[:, 1].numpy()

    def score(self, y: np.ndarray, p: np.ndarray) -> dict:
        pred = (p >= 0.5).astype(int)  # argmax of two softmax classes
        return {"accuracy": cm.accuracy(y, pred), "auroc": cm.auroc(y, p),
                "sensitivity": cm.sensitivity(y, pred), "specificity": cm.specificity(y, pred), "n": int(len(y))}

    def rows(self, r: int, idx: np.ndarray, p: np.ndarray) -> list[dict]:
        data = self.data()
        return [{"run": r, "subject": data.subject[i], "site": data.site[i], "true": int(data.label[i]),
                 "prob_asd": round(float(q), 6), "pred": int(q >= 0.5)} for i, q in zip(idx, p, strict=True)]

    # -- stages -----------------------------------------------------------------------------------------------
    def train(self) -> dict:
        if self.ctx.world_size > 1:
            raise UsageError("asd-transformer trains on one device: the best-validation-AUROC epoch is chosen "
                             "in-process over the whole validation split", fix="use --devices 1 (a run is minutes)")
        mm, pp, data = self.m.model, self.m.preprocess, self.data()
        self.build_model()  # a size the data cannot take fails now, not after the features
        if mm.arch == "fbnetgen":
            self.timeseries()  # likewise a file without time series
        runs = self.splits()
        per_run, rows, first = [], [], None
        for r, split in enumerate(runs):
            prepared = self.features_for(split)
            x = self.model_input(prepared)
            self.ctx.log(f"run {r + 1}/{len(runs)}: train {len(split['train'])} · val {len(split['val'])} · "
                         f"test {len(split['test'])}")
            net, info = self._fit(x, split, self.m.seed + r, f"run{r + 1}")
            meta = {"medrun": json.dumps({"pipeline": "asd-transformer", "arch": mm.arch, "run": r + 1,
                                          "interaction": mm.interaction,
                                          "combat": pp.combat, "nle": pp.nle}, sort_keys=True)}
            for name in (f"run{r + 1}", *(["model"] if r == 0 else [])):  # model.safetensors: run 1's
                training.save_weights(net, self.ctx.path / "checkpoints" / f"{name}.safetensors", meta)
            if r == 0:
                first = (net, x, split["test"], prepared)
            test = split["test"]
            p = self.probs(net, x, test)
            s = self.score(data.label[test], p)
            per_run.append({"run": r + 1, **s, **info})
            rows += self.rows(r + 1, test, p)
            self.ctx.log(f"run {r + 1}: test AUROC {s['auroc']:.4f}  accuracy {s['accuracy']:.4f}  "
                         f"(best epoch {info['best_epoch']})")
        metrics = {**summary(per_run), **checks(first[3]), **training.count_params(first[0])}
        self.ctx.write_csv("per_case.csv", rows)
        self.ctx.write_csv("per_run.csv", per_run)
        from ..report import learning_curves_figure

        fig = learning_curves_figure(self.ctx.path / "logs" / "run1" / "metrics.csv")
        if fig is not None:
            self.ctx.save_figure(fig, "learning_curves")
        if mm.arch == "asd-transformer":  # the others have no community prompts
            figures.attention(self, *first[:3])
        figures.roc(self.ctx, rows)
        self._paper(metrics, per_run, "train")
        return metrics

    def eval(self) -> dict:
        data, split_name = self.data(), self.m.eval.split
        if split_name not in ("train", "val", "test"):
            raise UsageError(f"unknown split '{split_name}'", fix="use --split train | val | test")
        per_run, rows = [], []
        for r, split in enumerate(self.splits()):
            x = self.model_input(self.features_for(split))
            net = self.trained_model(weights=f"run{r + 1}.safetensors")
            idx = split[split_name]
            p = self.probs(net, x, idx)
            per_run.append({"run": r + 1, **self.score(data.label[idx], p)})
            rows += self.rows(r + 1, idx, p)
        metrics = {**summary(per_run), "split": split_name}
        self.ctx.write_csv("per_case.csv", rows)
        self.ctx.write_csv("per_run.csv", per_run)
        figures.roc(self.ctx, rows)
        self._paper(metrics, per_run, f"eval ({split_name})")
        return metrics

    def predict(self) -> dict:
        data, split, which = self.data(), self.splits()[0], self.m.predict.split  # run 1's split and model
        idx = np.arange(len(data)) if which == "all" else split[which]
        p = self.probs(self.trained_model(), self.model_input(self.features_for(split)), idx)
        self.ctx.write_csv("per_case.csv", [{"subject": data.subject[i], "site": data.site[i],
                                             "prob_asd": round(float(q), 6), "pred": "ASD" if q >= 0.5 else "control"}
                                            for i, q in zip(idx, p, strict=True)])
        n_asd = int((p >= 0.5).sum())
        self.ctx.log(f"predicted {len(idx)} subjects: ASD {n_asd}, control {len(idx) - n_asd}")
        return {"n": len(idx), "predicted": {"ASD": n_asd, "control": len(idx) - n_asd}}

    def prepare(self) -> dict:
        """The card's ``prepare`` verb: FC → ComBat → local efficiency → community order, written into the run
        (``features.npz``: node features, ROI order, block sizes, local efficiencies, subjects, sites, labels) with
        the ComBat check, per-subject mean local efficiency and a figure of the per-site FC means before/after."""
        pp, data = self.m.preprocess, self.data()
        split = self.splits()[0] if pp.combat and pp.combat_fit == "train" else None
        prepared = self.features_for(split)
        eff = prepared["efficiency"]
        self.ctx.write_npz("features.npz", x=prepared["x"], order=prepared["order"],
                           blocks=np.array(prepared["blocks"]), efficiency=eff, subject=np.array(data.subject),
                           site=np.array(data.site), label=data.label)
        self.ctx.write_csv("per_case.csv", [
            {"subject": s, "site": site, "asd": int(y), "local_efficiency_mean": round(float(e.mean()), 6)}
            for s, site, y, e in zip(data.subject, data.site, data.label, eff, strict=True)])
        # the per-site means before and after ComBat alone (the mean FC does not depend on the ROI order)
        harmonised = self.features_for(split, combat=True, nle=False)["x"] if pp.combat else None
        figures.combat_sites(self.ctx, data, harmonised)
        metrics = {"subjects": len(data), "rois": int(data.corr.shape[1]), "sites": len(set(data.site)),
                   **checks(prepared)}
        self.ctx.log("prepared: " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                               for k, v in metrics.items()))
        return metrics

    def ablate(self) -> dict:
        from .ablate import ablate

        return ablate(self)

    def baselines(self) -> dict:
        from .baselines import baselines

        return baselines(self)

    # -- reports ----------------------------------------------------------------------------------------------
    def _paper(self, metrics: dict, per_run: list[dict], what: str) -> None:
        spec, arch = self.ctx.spec, self.m.model.arch
        name = "this run" if arch == "asd-transformer" else f"this run, {arch}"
        ours = [f"{name} (" + ("fixture" if self.ctx.fixture else self.m.dataset.name) + f", {len(per_run)} runs)",
                *[pm(metrics, k) for k in METRICS]]
        t = paper_data(spec)["tables"]["table1"]
        t1 = f"## {t['title']}\n\n" + markdown_table(t["header"], [*t["rows"], ours])
        runs = markdown_table(["run", *METRICS, "best_epoch"],
                              [[r["run"], *[r[k] for k in METRICS], r.get("best_epoch")] for r in per_run])
        shown = [f"- {k}: {metrics[k]:.4f}" for k in ("combat_site_var_fall", "local_efficiency_mean") if k in metrics]
        self.ctx.write_text("paper.md", paper_md(
            spec, self.m, {k: metrics.get(k) for k in METRICS}, self.ctx,
            title=f"ASD attention transformer, {what}" if arch == "asd-transformer" else
            f"{PAPER_ROW[arch]} baseline (asd-transformer Table 1), {what}",
            expect=None if arch == "asd-transformer" else paper_expect(spec, arch),
            sections=[t1, "## Runs\n\n" + runs, *(["## Feature checks\n\n" + "\n".join(shown)] if shown else []),
                      paper_note(spec, "comparison")]))


def paper_expect(spec, arch: str) -> dict:
    """The paper's Table 1 means of ``arch`` as fractions ({metric: value})."""
    row = next(r for r in paper_data(spec)["tables"]["table1"]["rows"] if r[0] == PAPER_ROW[arch])
    return {k: round(float(str(v).split("±")[0]) / 100, 4) for k, v in zip(METRICS, row[1:], strict=True)}


def _tensors(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> TensorDataset:
    return TensorDataset(torch.from_numpy(x[idx]), torch.from_numpy(y[idx]))


def summary(per_run: list[dict]) -> dict:
    """Mean, sample sd (ddof 1) and 95 % t-interval of each metric over the runs of the protocol."""
    return {"runs": len(per_run), **headline(summarise(per_run, METRICS)[0], METRICS)}


def checks(prepared: dict) -> dict:
    return {k: float(v) for k, v in prepared["info"].items()}


def pm(s: dict, k: str) -> str:
    """mean ± sd in percent, as the paper's tables."""
    return f"{100 * s[k]:.2f} ± {100 * s[f'{k}_sd']:.2f}"

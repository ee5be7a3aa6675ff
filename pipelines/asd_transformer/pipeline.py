"""asd-transformer, the method (card: shared/papers/asd-transformer.md).

Data: ABIDE I FC in either public layout (``datasets.abide``): BNT/Com-TF's ``abide.npy`` dictionary (its ``corr``
is used as the FC) or PCP ``rois_cc200`` time series with the phenotype CSV (Pearson FC computed here; a constant
ROI gives zeros). ASD is the positive class. ``roi_communities.csv`` gives each ROI's community (Com-TF's 8 for
CC200). The denoising strategy of the PCP download is whatever folder the user points at (e.g. ``filt_noglobal``);
the run records the data fingerprint, not the strategy.

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
1e-5, batch 64, 50 epochs, cross-entropy; in each run the epoch with the highest validation AUROC (ties: lower
validation loss) gives the test metrics: AUROC on softmax P(ASD), accuracy (argmax), sensitivity, specificity.
``metrics.json`` holds their mean and sd over runs (``<metric>_sd``), like the paper's "mean ± std of 5 runs".

Stages: ``train`` (the protocol; weights ``run<i>.safetensors``, ``model.safetensors`` = run 1), ``eval`` (the
train run's weights on the same splits, or ``--checkpoint`` weights on every run's split), ``predict`` (run 1's
model on ``predict.split``), ``ablate`` (``ablate.variants`` through the same protocol, beside Table 2), ``prepare``
(the card's verb: the features written as ``features.npz`` with the ComBat check and a per-site figure). Every
stage reuses features from an .npz cache under ``$MEDRUN_CACHE/asd-transformer/`` keyed by data and settings.

Choices where the card is silent or offers options:
- The community score is the local layer's attention paid to the prompt token (the card's step 7); the attention
  maps figure shows the global (second) layer's head-averaged attention, as the paper's Fig. 4, mapped back to
  community order so that subjects can be averaged, for test ASD and control subjects, with the mean community
  scores.
- Train runs do not resume inside the multi-run protocol (each run trains in memory; an interrupted train stage
  starts again). The epoch selection keeps the best validation weights in memory.
- The ComBat check (``combat_site_var_fall``: 1 − between-site variance of the feature means after / before) and
  the mean local efficiency go into ``metrics.json``.
- No FBNETGEN / BrainNetCNN / BNT baselines are trained; ``com-tf`` in ``ablate`` is the Com-TF reduction.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from medrun.datasets import abide
from medrun.errors import DataError, EnvError, UsageError
from medrun.metrics import classification as cm
from medrun.models.asd_transformer import CC200_BLOCKS, AsdTransformer

from .. import training
from ..base import Pipeline
from ..report import learning_curves, markdown_table, paper_md, save_figure
from ..tasks.classification import write_csv
from . import features as feat

METRICS = ("accuracy", "auroc", "sensitivity", "specificity")
VARIANTS = {  # name: (combat, nle, interaction)
    "proposed": (True, True, "add"),
    "with-nle": (True, True, "none"),
    "with-interaction": (True, False, "add"),
    "com-tf": (False, False, "none"),
    "literal-concat": (True, True, "concat"),
}


class LitAsd(L.LightningModule):
    """Cross-entropy; Adam with weight decay and cosine decay; keeps the weights of the best validation epoch
    (highest AUROC, ties broken by lower validation loss)."""

    def __init__(self, net: AsdTransformer, lr: float, weight_decay: float, lr_min: float, epochs: int):
        super().__init__()
        self.net = net
        self.lr, self.weight_decay, self.lr_min, self.epochs = lr, weight_decay, lr_min, epochs
        self._val: list = []
        self.best_key, self.best_state, self.best_epoch = None, None, -1

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self._val.append((torch.softmax(logits, 1)[:, 1].detach(), y, F.cross_entropy(logits, y, reduction="sum")))

    def on_validation_epoch_end(self):
        p = torch.cat([v[0] for v in self._val]).cpu().numpy()
        y = torch.cat([v[1] for v in self._val]).cpu().numpy()
        loss = float(sum(float(v[2]) for v in self._val) / max(1, len(y)))
        self._val = []
        auc = cm.auroc(y, p)
        auc = float("-inf") if np.isnan(auc) else auc
        self.log("val_auroc", auc if np.isfinite(auc) else 0.0)
        self.log("val_loss", loss)
        key = (auc, -loss)
        if self.best_key is None or key > self.best_key:
            self.best_key, self.best_epoch = key, self.current_epoch
            self.best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}

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

    def build_model(self, interaction: str | None = None) -> AsdTransformer:
        mm = self.m.model
        blocks = self.blocks()
        if sum(blocks) % mm.nhead:
            raise UsageError(f"model.nhead {mm.nhead} does not divide d_model = {sum(blocks)} ROIs",
                             fix="choose a head count that divides the number of ROIs (8 for CC200's 200)")
        return AsdTransformer(blocks, mm.nhead, mm.dim_feedforward, mm.dropout, mm.clusters,
                              interaction or mm.interaction)

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
        """One {train, val, test: subject indices} per run, checked to be disjoint, recorded in data.lock.json."""
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
        for r, s in enumerate(runs):
            seen: dict[int, str] = {}
            for fold, members in s.items():
                for i in members:
                    if i in seen:
                        raise DataError(f"subject {data.subject[i]} is in two folds ({seen[i]} and {fold}) of run {r + 1}",
                                        fix="each subject belongs to exactly one of train, val, test")
                    seen[int(i)] = fold
        self._record_splits(runs)
        return runs

    def _record_splits(self, runs) -> None:
        import json

        lock = self.ctx.run.path / "data.lock.json"
        info = json.loads(lock.read_text())
        subj = self.data().subject
        info["splits"] = {f"run{r + 1}/{k}": [subj[i] for i in v] for r, s in enumerate(runs) for k, v in s.items()}
        self.ctx.run.write_json("data.lock.json", info)

    def features(self, combat: bool, nle: bool, fit: np.ndarray | None = None) -> dict:
        pp = self.m.preprocess
        if pp.le_mode == "weighted":
            raise EnvError("preprocess.le_mode weighted needs bctpy (efficiency_wei), which is not installed",
                           fix="pip install bctpy, or use -o preprocess.le_mode=binary")
        key = (combat, nle, None if fit is None else fit.tobytes())
        cache = self.__dict__.setdefault("_features", {})
        if key not in cache:
            cache[key] = self._cached_features(combat, nle, fit)
        return cache[key]

    def _cached_features(self, combat: bool, nle: bool, fit: np.ndarray | None) -> dict:
        """``features.prepare`` through an .npz cache under ``$MEDRUN_CACHE/asd-transformer/`` keyed by the data
        fingerprint, the settings, the train mask and the code of ``features.py`` (local efficiency of 1009 subjects
        takes about a minute; every stage and variant needs it)."""
        import hashlib
        import json
        import os

        from ..runner import cache_dir

        pp, data = self.m.preprocess, self.data()
        h = hashlib.sha256(json.dumps([self.ctx.run.info().get("data_sha256"), self.m.dataset.name,
                                       self.m.dataset.asd_label, combat, nle, pp.le_density]).encode())
        h.update(b"" if fit is None else np.packbits(fit).tobytes())
        h.update(Path(feat.__file__).read_bytes())
        path = cache_dir() / "asd-transformer" / f"features-{h.hexdigest()[:32]}.npz"
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    out = {"x": z["x"], "blocks": tuple(int(b) for b in z["blocks"]), "order": z["order"],
                           "info": json.loads(str(z["info"])), "efficiency": z["efficiency"]}
                self.ctx.log(f"features (ComBat {'on' if combat else 'off'}, local efficiency {'on' if nle else 'off'}) "
                             f"from the cache {path.name}")
                return out
            except Exception:  # noqa: BLE001 (a damaged cache entry is recomputed)
                path.unlink(missing_ok=True)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # neuroCombat prints its progress to stdout
            out = feat.prepare(data.corr, data.site, data.communities, use_combat=combat, use_nle=nle,
                               density=pp.le_density, fit=fit)
        self.ctx.log(f"features (ComBat {'on' if combat else 'off'}, local efficiency {'on' if nle else 'off'}) "
                     f"in {time.perf_counter() - t0:.1f} s")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
            np.savez(tmp, x=out["x"], blocks=np.array(out["blocks"]), order=out["order"], info=json.dumps(out["info"]),
                     efficiency=out["efficiency"])
            os.replace(tmp, path)
        except OSError:  # a read-only cache only costs time
            pass
        return out

    def _features_for(self, split: dict, combat: bool, nle: bool) -> dict:
        fit = None
        if combat and self.m.preprocess.combat_fit == "train":
            fit = np.zeros(len(self.data()), bool)
            fit[split["train"]] = True
        return self.features(combat, nle, fit)

    # -- one run of the protocol ------------------------------------------------------------------------------
    def _fit(self, x: np.ndarray, split: dict, seed: int, interaction: str, tag: str):
        t, y = self.m.train, self.data().label
        training.apply_determinism(self.m.determinism, seed)
        module = LitAsd(self.build_model(interaction), t.lr, t.weight_decay, t.lr_min, t.epochs)
        from lightning.pytorch.loggers import CSVLogger

        logger = CSVLogger(save_dir=self.ctx.run.path / "logs", name=tag, version="")
        trainer = training.make_trainer(self.ctx, t.epochs, checkpoint=False, logger=False)
        trainer.loggers = [logger, *self.ctx.extras.get("loggers", ())]  # one CSV log per run: logs/<run>/metrics.csv
        from ..tasks.classification import loader

        train_ds = _tensors(x, y, split["train"])
        t0 = time.perf_counter()
        training.fit(trainer, module, train_dataloaders=loader(train_ds, t.batch_size, True, t.num_workers, seed=seed),
                     val_dataloaders=DataLoader(_tensors(x, y, split["val"]), batch_size=t.batch_size))
        secs = (time.perf_counter() - t0) / max(1, t.epochs)
        if module.best_state is not None:
            module.net.load_state_dict(module.best_state)
        return module.net.eval(), {"best_epoch": module.best_epoch + 1, "secs_per_epoch": round(secs, 3),
                                   "val_auroc": module.best_key[0] if module.best_key else float("nan")}

    @torch.no_grad()
    def _probs(self, net: AsdTransformer, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        net.eval()
        xs = torch.from_numpy(x[idx])
        return torch.cat([torch.softmax(net(b), 1)[:, 1] for b in xs.split(64)]).numpy() if len(idx) else np.zeros(0)

    def _score(self, y: np.ndarray, p: np.ndarray) -> dict:
        pred = (p >= 0.5).astype(int)  # argmax of two softmax classes
        return {"accuracy": cm.accuracy(y, pred), "auroc": cm.auroc(y, p),
                "sensitivity": cm.sensitivity(y, pred), "specificity": cm.specificity(y, pred), "n": int(len(y))}

    def _protocol(self, combat: bool, nle: bool, interaction: str, tag: str, save: bool = True):
        """Train + select + test every run; returns (summary, per-run rows, per-case rows, last test context)."""
        from ..runner import world_size

        if world_size(self.m.trainer.model_dump()) > 1:
            raise UsageError("asd-transformer trains on one device: the best-validation-AUROC epoch is chosen "
                             "in-process over the whole validation split", fix="use --devices 1 (a run is minutes)")
        data = self.data()
        runs = self.splits()
        per_run, rows, attention = [], [], None
        for r, split in enumerate(runs):
            prepared = self._features_for(split, combat, nle)
            x = prepared["x"]
            self.ctx.log(f"{tag + ' ' if tag else ''}run {r + 1}/{len(runs)}: train {len(split['train'])} · val {len(split['val'])} · "
                         f"test {len(split['test'])}")
            net, info = self._fit(x, split, self.m.seed + r, interaction, f"{tag}/run{r + 1}" if tag else f"run{r + 1}")
            if save:
                # one metadata key: safetensors writes several in a per-process random order, which would make
                # the file's sha256 (what `medrun rerun --compare` checks) differ between identical runs
                meta = {"pipeline": "asd-transformer", "run": r + 1, "interaction": interaction, "combat": combat,
                        "nle": nle}
                training.save_weights(net, self.ctx.run.path / "checkpoints" / f"{tag + '-' if tag else ''}run{r + 1}"
                                      ".safetensors", {"medrun": json.dumps(meta, sort_keys=True)})
            test = split["test"]
            p = self._probs(net, x, test)
            s = self._score(data.label[test], p)
            per_run.append({"run": r + 1, **s, **info})
            rows += [{"run": r + 1, "subject": data.subject[i], "site": data.site[i], "true": int(data.label[i]),
                      "prob_asd": round(float(q), 6), "pred": int(q >= 0.5)} for i, q in zip(test, p, strict=True)]
            if r == 0:
                attention = (net, x, test, prepared)
            self.ctx.log(f"{tag + ' ' if tag else ''}run {r + 1}: test AUROC {s['auroc']:.4f}  accuracy {s['accuracy']:.4f}  "
                         f"(best epoch {info['best_epoch']})")
        return _summary(per_run), per_run, rows, attention

    # -- stages -----------------------------------------------------------------------------------------------
    def train(self) -> dict:
        pp, mm = self.m.preprocess, self.m.model
        metrics, per_run, rows, att = self._protocol(pp.combat, pp.nle, mm.interaction, "")
        run = self.ctx.run
        import shutil

        shutil.copyfile(run.path / "checkpoints" / "run1.safetensors", run.path / "checkpoints" / "model.safetensors")
        metrics.update(self._checks(att[3]))
        metrics.update(training.count_params(att[0]))
        write_csv(run.path / "per_case.csv", rows)
        write_csv(run.path / "per_run.csv", per_run)
        learning_curves(run.path / "logs" / "run1" / "metrics.csv", run.path / "figures" / "learning_curves.png")
        self._attention_figure(*att[:3])
        self._roc_figure(rows)
        self._paper(metrics, per_run, "train")
        return metrics

    def _checks(self, prepared: dict) -> dict:
        info = prepared["info"]
        return {k: float(v) for k, v in info.items()}

    def prepare(self) -> dict:
        """The card's ``prepare`` verb: FC → ComBat → local efficiency → community order, written into the run
        (``features.npz``: node features, ROI order, block sizes, local efficiencies, subjects, sites, labels) with
        the ComBat check, per-subject mean local efficiency and a figure of the per-site FC means before/after."""
        import io as _io

        pp, data = self.m.preprocess, self.data()
        fit = None
        if pp.combat and pp.combat_fit == "train":
            fit = np.zeros(len(data), bool)
            fit[self.splits()[0]["train"]] = True
        prepared = self.features(pp.combat, pp.nle, fit)
        buf = _io.BytesIO()
        np.savez_compressed(buf, x=prepared["x"], order=prepared["order"], blocks=np.array(prepared["blocks"]),
                            efficiency=prepared["efficiency"], subject=np.array(data.subject), site=np.array(data.site),
                            label=data.label)
        from medrun.artifacts import atomic_write

        atomic_write(self.ctx.run.path / "features.npz", buf.getvalue())
        eff = prepared["efficiency"]
        write_csv(self.ctx.run.path / "per_case.csv", [
            {"subject": s, "site": site, "asd": int(y), "local_efficiency_mean": round(float(e.mean()), 6)}
            for s, site, y, e in zip(data.subject, data.site, data.label, eff, strict=True)])
        self._site_figure(self.features(True, False, fit)["x"] if pp.combat else None)
        metrics = {"subjects": len(data), "rois": int(data.corr.shape[1]), "sites": len(set(data.site)),
                   **self._checks(prepared)}
        self.ctx.log("prepared: " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                               for k, v in metrics.items()))
        return metrics

    def _site_figure(self, harmonised: np.ndarray | None) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        data = self.data()
        sites = np.array(data.site)
        names = sorted(set(data.site))
        before = feat.upper(data.corr.astype(np.float64)).mean(1)
        # the mean off-diagonal FC does not depend on the ROI order, so the community-ordered matrices will do
        after = before if harmonised is None else feat.upper(harmonised.astype(np.float64)).mean(1)
        fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(names) + 2), 4))
        pos = np.arange(len(names))
        ax.bar(pos - 0.2, [before[sites == s].mean() for s in names], 0.4, label="before ComBat")
        ax.bar(pos + 0.2, [after[sites == s].mean() for s in names], 0.4, label="after ComBat")
        ax.set_xticks(pos, names, rotation=45, ha="right")
        ax.set_ylabel("mean FC (upper triangle)")
        ax.set_title("per-site mean connectivity")
        ax.legend()
        fig.tight_layout()
        out = self.ctx.run.path / "figures" / "combat_sites.png"
        save_figure(fig, out)

    def eval(self) -> dict:
        pp, mm, data = self.m.preprocess, self.m.model, self.data()
        split_name = self.m.eval.split
        if split_name not in ("train", "val", "test"):
            raise UsageError(f"unknown split '{split_name}'", fix="use --split train | val | test")
        per_run, rows = [], []
        for r, split in enumerate(self.splits()):
            x = self._features_for(split, pp.combat, pp.nle)["x"]
            net = self.trained_model(self.build_model(mm.interaction), weights=f"run{r + 1}.safetensors")
            idx = split[split_name]
            p = self._probs(net, x, idx)
            per_run.append({"run": r + 1, **self._score(data.label[idx], p)})
            rows += [{"run": r + 1, "subject": data.subject[i], "site": data.site[i], "true": int(data.label[i]),
                      "prob_asd": round(float(q), 6), "pred": int(q >= 0.5)} for i, q in zip(idx, p, strict=True)]
        metrics = {**_summary(per_run), "split": split_name}
        write_csv(self.ctx.run.path / "per_case.csv", rows)
        write_csv(self.ctx.run.path / "per_run.csv", per_run)
        self._roc_figure(rows)
        self._paper(metrics, per_run, f"eval ({split_name})")
        return metrics

    def predict(self) -> dict:
        pp, mm, data = self.m.preprocess, self.m.model, self.data()
        split = self.splits()[0]
        x = self._features_for(split, pp.combat, pp.nle)["x"]
        net = self.trained_model(self.build_model(mm.interaction))
        which = self.m.predict.split
        idx = np.arange(len(data)) if which == "all" else split[which]
        p = self._probs(net, x, idx)
        rows = [{"subject": data.subject[i], "site": data.site[i], "prob_asd": round(float(q), 6),
                 "pred": "ASD" if q >= 0.5 else "control"} for i, q in zip(idx, p, strict=True)]
        write_csv(self.ctx.run.path / "per_case.csv", rows)
        n_asd = int((p >= 0.5).sum())
        self.ctx.log(f"predicted {len(rows)} subjects: ASD {n_asd}, control {len(rows) - n_asd}")
        return {"n": len(rows), "predicted": {"ASD": n_asd, "control": len(rows) - n_asd}}

    def ablate(self) -> dict:
        table, all_rows, metrics = [], [], {"variants": list(self.m.ablate.variants)}
        for v in self.m.ablate.variants:
            combat, nle, interaction = VARIANTS[v]
            self.ctx.log(f"ablation: {v} (ComBat {combat}, Nle {nle}, interaction {interaction})")
            s, per_run, rows, _ = self._protocol(combat, nle, interaction, v)
            all_rows += [{"variant": v, **r} for r in rows]
            paper = _TABLE2.get(v)
            table.append([v, "on" if combat else "off", "on" if nle else "off", interaction,
                          *[_pm(s, k) for k in METRICS], *(paper or ("—",) * 4)])
            for k in METRICS:
                metrics[f"{v}.{k}"] = s[k]
                metrics[f"{v}.{k}_sd"] = s[f"{k}_sd"]
        write_csv(self.ctx.run.path / "per_case.csv", all_rows)
        md = markdown_table(["variant", "ComBat", "Nle", "interaction", *[f"{k} (run)" for k in METRICS],
                             *[f"{k} (paper)" for k in METRICS]], table)
        head = {k: metrics.get(f"{self.m.ablate.variants[0]}.{k}") for k in METRICS}
        self.ctx.run.write_text("paper.md", paper_md(
            self.ctx.spec, self.m, head, self.ctx, title="ASD attention transformer ablation (Table 2)",
            sections=["## Ablation: this run beside the paper's Table 2 (mean ± sd over runs, %)\n\n" + md,
                      _ABLATION_NOTES]))
        return metrics

    # -- reports ----------------------------------------------------------------------------------------------
    def _paper(self, metrics: dict, per_run: list[dict], what: str) -> None:
        ours = ["this run (" + ("fixture" if self.ctx.fixture else self.m.dataset.name) + f", {len(per_run)} runs)",
                *[_pm(metrics, k) for k in METRICS]]
        table = markdown_table(["model", *METRICS], [*[[k, *v] for k, v in _TABLE1.items()], ours])
        runs = markdown_table(["run", *METRICS, "best_epoch"],
                              [[r["run"], *[r[k] for k in METRICS], r.get("best_epoch")] for r in per_run])
        checks = [f"- {k}: {metrics[k]:.4f}" for k in ("combat_site_var_fall", "local_efficiency_mean") if k in metrics]
        self.ctx.run.write_text("paper.md", paper_md(
            self.ctx.spec, self.m, {k: metrics.get(k) for k in METRICS}, self.ctx,
            title=f"ASD attention transformer, {what}",
            sections=["## Table 1 (paper, ABIDE, 5 runs) and this run: mean ± sd over runs, %\n\n"
                      + table, "## Runs\n\n" + runs, *(["## Feature checks\n\n" + "\n".join(checks)] if checks else []),
                      _NOTES]))

    def _roc_figure(self, rows: list[dict]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from sklearn.metrics import roc_curve

        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        for r in sorted({row["run"] for row in rows}):
            sub = [row for row in rows if row["run"] == r]
            y = np.array([row["true"] for row in sub])
            if len(set(y.tolist())) < 2:
                continue
            fpr, tpr, _ = roc_curve(y, [row["prob_asd"] for row in sub])
            ax.plot(fpr, tpr, label=f"run {r}")
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_xlabel("1 − specificity")
        ax.set_ylabel("sensitivity")
        ax.set_title("ROC, test split (ASD positive)")
        ax.legend(loc="lower right")
        fig.tight_layout()
        out = self.ctx.run.path / "figures" / "roc.png"
        save_figure(fig, out)

    @torch.no_grad()
    def _attention_figure(self, net: AsdTransformer, x: np.ndarray, idx: np.ndarray) -> None:
        """Fig. 4 analogue: the global layer's head-averaged attention (prompts then nodes, in community order),
        averaged over test ASD and control subjects, and the mean community scores a_k."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        net.eval()
        y = self.data().label[idx]
        enc = net.encode(torch.from_numpy(x[idx]))
        w = canonical_attention(enc, len(net.blocks)).numpy()
        score = enc["score"].numpy()
        fig, axes = plt.subplots(1, 3, figsize=(14, 4.4))
        for ax, cls, name in ((axes[0], 1, "ASD"), (axes[1], 0, "control")):
            sel = y == cls
            if sel.any():
                im = ax.imshow(w[sel].mean(0), cmap="viridis")
                fig.colorbar(im, ax=ax, fraction=0.046)
            ax.set_title(f"global-layer attention, {name} (n={int(sel.sum())})")
            edges = np.cumsum([len(net.blocks), *net.blocks])[:-1] - 0.5
            for e in edges:
                ax.axhline(e, color="w", lw=0.4)
                ax.axvline(e, color="w", lw=0.4)
            ax.set_xlabel("key (8 prompts, then ROIs by community)")
            ax.set_ylabel("query")
        k = np.arange(len(net.blocks))
        for off, cls, name in ((-0.2, 1, "ASD"), (0.2, 0, "control")):
            if (y == cls).any():
                axes[2].bar(k + off, score[y == cls].mean(0), width=0.4, label=name)
        axes[2].set_xlabel("community")
        axes[2].set_ylabel("local attention to the prompt (a_k)")
        axes[2].set_title("community scores")
        axes[2].legend()
        fig.tight_layout()
        out = self.ctx.run.path / "figures" / "attention_maps.png"
        save_figure(fig, out)


def canonical_attention(enc: dict, kc: int) -> torch.Tensor:
    """The global layer's attention (B, K+N, K+N) with tokens put back in canonical order: prompts of communities
    0..K−1, then ROIs in community order (undoing the interaction module's per-subject reordering)."""
    w, order, node_perm = enc["global_attention"], enc["order"], enc["node_perm"]
    b = w.shape[0]
    token_ids = torch.cat([order.flip(1), node_perm + kc], 1)  # canonical id of each position
    pos = torch.argsort(token_ids, 1)  # position of each canonical id
    w = w.gather(1, pos[:, :, None].expand(b, *w.shape[1:]))
    return w.gather(2, pos[:, None, :].expand(b, *w.shape[1:]))


def _tensors(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> TensorDataset:
    return TensorDataset(torch.from_numpy(x[idx]), torch.from_numpy(y[idx]))


def _summary(per_run: list[dict]) -> dict:
    out: dict = {"runs": len(per_run)}
    for k in METRICS:
        vals = np.array([r[k] for r in per_run], dtype=float)
        out[k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        out[f"{k}_sd"] = float(np.nanstd(vals, ddof=1)) if np.isfinite(vals).sum() > 1 else 0.0
    return out


def _pm(s: dict, k: str) -> str:
    """mean ± sd in percent, as the paper's tables."""
    return f"{100 * s[k]:.2f} ± {100 * s[f'{k}_sd']:.2f}"


_TABLE1 = {  # the card's "Headline results" (paper Table 1, %)
    "FBNETGEN": ("65.6 ± 8.5", "72.68 ± 8.9", "66.7 ± 8.0", "64.53 ± 9.2"),
    "BrainNetCNN": ("69.2 ± 4.7", "76.15 ± 4.2", "66.56 ± 12.6", "71.99 ± 7.6"),
    "BNT": ("69.8 ± 3.0", "77.78 ± 1.9", "65.13 ± 20.2", "75.56 ± 18.3"),
    "Com-TF": ("70 ± 5.8", "77.76 ± 4.4", "75.31 ± 13.8", "63.95 ± 10.5"),
    "Proposed (paper)": ("73.4 ± 1.8", "79.97 ± 2.6", "68.1 ± 11.5", "78.63 ± 13.3"),
}
_TABLE2 = {  # paper Table 2 (%); com-tf is Table 1's Com-TF row
    "proposed": ("73.4 ± 1.8", "79.97 ± 2.6", "68.1 ± 11.5", "78.63 ± 13.3"),
    "with-nle": ("70.4 ± 6.4", "79.38 ± 4.7", "76.48 ± 8.4", "64.73 ± 17.7"),
    "with-interaction": ("71 ± 5.3", "79.53 ± 4.8", "60.58 ± 14.2", "80.21 ± 9.1"),
    "com-tf": ("70 ± 5.8", "77.76 ± 4.4", "75.31 ± 13.8", "63.95 ± 10.5"),
}

_NOTES = """## Notes on the comparison

- The paper's split: a fixed 70 % train set, val/test re-drawn per run, so its std reflects test-set variation only.
  `protocol.scheme: resplit` re-draws the whole split instead.
- ComBat is fitted on all subjects without the diagnosis (label-free but transductive), as the paper's pipeline
  implies; `preprocess.combat_fit: train` learns it on the train split only.
- The interaction module as written is a reordering, which a transformer without positions and OCRead cannot see;
  `model.interaction: add` (default) adds each block's paired low-attention prompt to its nodes (the card's
  resolution), `concat` is the literal form and predicts exactly what `none` (Com-TF) does.
- Baseline rows are the paper's own runs under its protocol; they are not re-trained here."""

_ABLATION_NOTES = """## Notes

- Table 2's rows are not defined in the paper; read as in the card: "With Nle-weighted" = ComBat + Nle on Com-TF
  without the interaction module, "With interaction" = ComBat + interaction without Nle weighting; `com-tf` has
  ComBat, Nle and the interaction off (Table 1's Com-TF row).
- `literal-concat` is the paper's literal interaction (reordering only); it equals no interaction up to float
  rounding, which is why the card adds the prompt instead."""

"""drivpocket, the method (card: docs/papers/drivpocket.md).

Data (``datasets/binding_sites.py``): scPDB entries (``protein.mol2``, ``ligand.mol2``, ``cavity6.mol2``) for training;
COACH420 / HOLO4K (p2rank-datasets PDB files, ligands as HETATM), SC6K and PDBbind for testing (``eval --dataset
coach420 --run <scpdb train run>``). Atoms are typed into libmolgrid's 14 default receptor channels (hydrogens and
waters removed). Everything parsed and gridded is kept in the content-addressed cache (``preprocess.py``).

Split: DeepPocket's fold lists when ``dataset.split_lists`` names them, else a protein-level random split (protein =
the entry name before its last ``_``; ``test_fraction`` 0.1, seed ``split_seed`` 0). No validation split (the card
selects no epoch). Test sets are test only; training on one is a DataError that says what to do.

Inputs of one site: the 65³ grid at 0.5 Å (32 Å) centred on the pocket (the cavity6 centroid; the ligand's centroid
where no cavity file exists) with libmolgrid's density (``geometry.density``); voxel labels = voxels within
``dataset.label_radius`` (1 Å, our choice) of a cavity6 point, or of a ligand atom for the test sets (DVO's true
pocket there; our choice). Training adds a random rotation and a shift of up to 2 Å (DeepPocket's augmentation,
assumed), gridded on the fly; without augmentation the cached grids are used. Point stream: the atoms inside the box,
FPS to 1024 from atom 0, repeated when fewer, centred on the box and divided by its half-diagonal (a fixed scale
keeps the radii in Å comparable between boxes; the card says "unit sphere"), 14-type one-hot features; an atom is
binding within 3 Å of a ligand atom.

Network (``models/drivpocket.py``): stem 2 × (Conv3d + GN + ReLU) 14→32; 4 encoder stages of a non-overlapping
stride-2 Conv3d (the paper's downsampling; 65→32→16→8→4), a conv block and DRIA; decoder ConvTranspose ×2, skip
concat, conv block, DRIA; the last stage ConvTranspose k3 s2 (32→65), stem skip, a residual conv block; 1×1×1 head.
DRIA: shared Q/K, Q̃ = Q ⊙ F_RI (``model.ri_gate: residual`` for Q ⊙ (1 + F_RI)), F_RI projected to the stage width;
ProbSparse spatial branch (c = 5; a fixed sampling generator at inference so results repeat) or EPA
(``model.spatial_attn: epa``); channel branch with L2-normalised Q̃, K and a learned temperature; X + γ·(X̂_s + X̂_c)
(γ starts at 1e-6 as UNETR++) and a residual conv block. Point stream: RID ×4 (n 128/64/32/16, radius
0.2/0.4/0.6/0.9, k 4/8/16/32, widths 64–512), RIU ×4, head Conv1d 64→32, BN, ReLU, Dropout 0.4, Conv1d 32→1;
RID levels feed the encoder DRIAs, RIU levels the decoder DRIAs, averaged per voxel of the stage on the true box
coordinates. The card's configuration builds 44,038,380 parameters, not the paper's 30.21 M (see the docs page).

Training (the card): loss BCE(atoms) + BCE(voxels), equal weights; SGD lr 1e-3, momentum 0.9, StepLR 30 epochs ×
0.1 (assumed), 100 epochs, batch 8. ``train.optimizer: adam``, ``voxel_pos_weight`` and ``dice_weight`` exist for
small runs (the fixture uses them; the paper does not).

Evaluation (DeepPocket protocol): candidate centres from ``eval.candidates`` (CSV protein,x,y,z,score, ranked by
score), else the lattice fallback (8 Å lattice points 2–6 Å from the nearest atom, each box scored by its mean P_v,
pockets closer than 4 Å to a better one dropped). The top n (n = ligands of the protein) and top n+2 candidates are
segmented: P_v, SFM fusion with P_pc (``geometry.sfm``), threshold 0.5, the connected component with the largest
summed probability; its centroid is the pocket centre. DCC / DCA success at 4 Å, DVO (IoU of the pocket with the true
voxels on the same box when DCC succeeds), in % of sites (``metrics.pockets``); atom AUROC over the atoms of the
top-n boxes (scikit-learn); ``dcc_grid_centre`` scores the candidate centres themselves (the baseline the smoke run
is read against).
"""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medrun.datasets import binding_sites as bs
from medrun.errors import DataError
from medrun.metrics import pockets

from ..report import paper_data, paper_table
from ..tasks.supervised import Supervised
from . import geometry as geo
from . import preprocess as prep


class LitPocket(L.LightningModule):
    def __init__(self, net, t):
        super().__init__()
        self.net, self.t = net, t

    def forward(self, *x):
        return self.net(*x)

    def training_step(self, batch, _):
        grid, pts, feats, vox, yv, ya = batch
        v, a = self.net(grid, pts, feats, vox)
        t = self.t
        lv = F.binary_cross_entropy_with_logits(v, yv, pos_weight=torch.tensor(t.voxel_pos_weight, device=v.device))
        la = F.binary_cross_entropy_with_logits(a, ya)
        loss = lv + la
        if t.dice_weight:
            p = torch.sigmoid(v).flatten(1)
            y = yv.flatten(1)
            loss = loss + t.dice_weight * (1 - (2 * (p * y).sum(1) + 1) / (p.sum(1) + y.sum(1) + 1)).mean()
        n = len(grid)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("voxel_bce", lv, on_step=False, on_epoch=True, batch_size=n)
        self.log("atom_bce", la, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def configure_optimizers(self):
        t = self.t
        if t.optimizer == "adam":
            opt = torch.optim.Adam(self.net.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        else:
            opt = torch.optim.SGD(self.net.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=t.step_size, gamma=t.gamma)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


def box_inputs(m, coords, channels, centre):
    """Grid (14, n, n, n) and point set of one box."""
    g = m.grid
    grid = geo.density(coords, channels, centre, g.size, g.spacing, bs.RADII)
    pts, feats, vox, atoms = geo.point_set(coords, channels, centre, g.size, g.spacing, g.points)
    return grid, pts, feats, vox, atoms


class Sites(Dataset):
    """Training items: one (protein, site) box each, augmented (rotation about the pocket + shift) when asked."""

    def __init__(self, proteins: list, m, augment: bool):
        self.proteins, self.m, self.augment = proteins, m, augment
        self.items = [(i, s) for i, p in enumerate(proteins) for s in range(len(p.ligands))] * m.train.repeats

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        pi, s = self.items[i]
        p, m = self.proteins[pi], self.m
        centre = p.centres[s].astype(np.float64)
        coords, ligs, lab_pts = p.coords.astype(np.float64), p.ligands, p.label_points(s)
        if self.augment:
            rng = np.random.default_rng(int(torch.randint(2 ** 31, (1,))))
            r = geo.random_rotation(rng)
            coords = (coords - centre) @ r.T + centre
            ligs = [(x - centre) @ r.T + centre for x in ligs]
            lab_pts = (lab_pts - centre) @ r.T + centre
            centre = centre + geo.random_shift(rng, m.train.max_shift)
        g = m.grid
        if not self.augment and p.grids is not None:
            grid = p.grids[s].astype(np.float32)
            pts, feats, vox, atoms = geo.point_set(coords, p.channels, centre, g.size, g.spacing, g.points)
            label = p.labels[s]
        else:
            grid, pts, feats, vox, atoms = box_inputs(m, coords, p.channels, centre)
            label = geo.label_grid(lab_pts, centre, g.size, g.spacing, m.dataset.label_radius)
        ya = geo.atom_labels(coords[atoms], ligs, g.atom_label_distance)
        return (torch.from_numpy(grid), torch.from_numpy(pts), torch.from_numpy(feats), torch.from_numpy(vox),
                torch.from_numpy(label[None].astype(np.float32)), torch.from_numpy(ya))


class DrivPocket(Supervised):
    val_split = None

    # -- model -------------------------------------------------------------------------------------------------
    def build_model(self):
        from medrun.models.drivpocket import DRIVPocket

        mm = self.m.model
        return DRIVPocket(14, self.m.grid.size, tuple(mm.channels), mm.heads, mm.spatial_attn, mm.c, mm.ri_gate,
                          mm.attention, tuple(mm.npoints), tuple(mm.radii), tuple(mm.k),
                          tuple(mm.point_widths) if mm.point_widths else None, mm.epa_proj, mm.dropout)

    def weights_metadata(self) -> dict:
        mm, g = self.m.model, self.m.grid
        return {"pipeline": "drivpocket", "grid": f"{g.size}x{g.spacing}", "channels": ",".join(map(str, mm.channels)),
                "attention": mm.attention, "spatial_attn": mm.spatial_attn}

    # -- data ----------------------------------------------------------------------------------------------------
    def root(self) -> Path:
        return self.ctx.data_roots[self.m.dataset.name]

    def cache_dir(self) -> Path:
        return Path(self.ctx.cache_dir) / "drivpocket"  # content-addressed, shared by every run ($MEDRUN_CACHE)

    def cached(self, items) -> tuple[dict, dict]:
        paths, stats = prep.compute(self.m.dataset.name, items, prep.settings_of(self.m), self.cache_dir(),
                                    self.ctx.log)
        self.ctx.run.append_event("cache", **{k: round(v, 3) if isinstance(v, float) else v for k, v in stats.items()})
        return paths, stats

    def proteins(self, items) -> list:
        store = self.__dict__.setdefault("_proteins", {})
        missing = [it for it in items if str(it) not in store]
        if missing:
            paths, _ = self.cached(missing)
            store.update({str(it): prep.load(paths[str(it)]) for it in missing})
        return [store[str(it)] for it in items]

    def splits(self) -> dict:
        if "_splits" in self.__dict__:
            return self._splits
        d = self.m.dataset
        items = bs.list_entries(d.name, self.root())
        if d.name != "scpdb":
            splits = {"train": [], "test": items}
        elif d.split_lists:
            splits = {k: self._listed(items, f) for k, f in zip(("train", "test"), d.split_lists, strict=True)}
        else:
            prot = sorted({it.name.rsplit("_", 1)[0] for it in items})
            order = np.random.default_rng(d.split_seed).permutation(len(prot))
            test = {prot[i] for i in order[:max(1, round(d.test_fraction * len(prot)))]}
            splits = {"train": [it for it in items if it.name.rsplit("_", 1)[0] not in test],
                      "test": [it for it in items if it.name.rsplit("_", 1)[0] in test]}
        self.ctx.record_splits(splits)
        self._splits = splits
        return splits

    def _listed(self, items, name: str) -> list:
        path = Path(name) if Path(name).is_absolute() else self.root() / name
        if not path.is_file():
            raise DataError(f"split list not found: {path}", fix="give DeepPocket's .types files in "
                                                                 "dataset.split_lists, or drop it for a random split")
        by = {it.name: it for it in items}
        seen = {}
        for line in path.read_text().splitlines():
            for tok in line.split():
                for part in Path(tok).parts:
                    if part in by:
                        seen[part] = by[part]
        if not seen:
            raise DataError(f"{path} names none of the {len(items)} entries under {self.root()}",
                            fix="pass the .types lists of this scPDB copy")
        return sorted(seen.values())

    def dataset(self, items, train: bool):
        return Sites(self.proteins(items), self.m, train and self.m.train.augment)

    def lit_module(self, net):
        return LitPocket(net, self.m.train)

    def train(self) -> dict:
        splits = self.splits()
        if not splits["train"]:
            d = self.m.dataset
            raise DataError(f"{self.root()}: {d.name} is a test set, with nothing to train on",
                            fix=f"train on scpdb and evaluate here with `medrun eval drivpocket --dataset {d.name} "
                                f"--run <train run id>`")
        self.proteins([it for v in splits.values() for it in v])  # read and check every protein first
        return super().train()

    def preprocess(self) -> dict:
        return prep.preprocess_stage(self)

    # -- inference ---------------------------------------------------------------------------------------------
    def candidates(self, source: str | None) -> dict | None:
        if not source:
            return None
        path = Path(source) if Path(source).is_absolute() else self.root() / source
        if not path.is_file():
            raise DataError(f"candidates file not found: {path}", fix="a CSV protein,x,y,z,score, or leave "
                                                                      "eval.candidates empty for the lattice fallback")
        out: dict = {}
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if rows and not {"protein", "x", "y", "z", "score"} <= set(rows[0]):
            raise DataError(f"{path}: columns {list(rows[0])}", fix="expected protein,x,y,z,score")
        for r in rows:
            try:
                out.setdefault(r["protein"], []).append((float(r["score"]),
                                                         np.array([float(r[k]) for k in "xyz"])))
            except (TypeError, ValueError):
                raise DataError(f"{path}: unreadable row {r}", fix="x, y, z and score must be numbers") from None
        return {k: [c for _, c in sorted(v, key=lambda t: -t[0])] for k, v in out.items()}

    def run_boxes(self, net, p, centres: list) -> list[dict]:
        """P_v, P_pc, the fused map and its pocket for boxes around each centre."""
        g, mm, out = self.m.grid, self.m.model, []
        for i in range(0, len(centres), 4):
            chunk = centres[i:i + 4]
            inputs = [box_inputs(self.m, p.coords, p.channels, c) for c in chunk]
            batch = [torch.from_numpy(np.stack([x[j] for x in inputs])) for j in range(4)]
            v, a = self.predictor(net, *batch)
            for c, x, pv, pa in zip(chunk, inputs, torch.sigmoid(v[:, 0]).numpy(), torch.sigmoid(a).numpy(),
                                    strict=True):
                atoms = x[4]
                xyz = p.coords[atoms].astype(np.float64)
                fused = geo.sfm(pv, xyz, pa, c, g.spacing, 0.5) if mm.sfm else pv
                centre, mask, score = geo.pocket(fused, c, g.spacing, self.m.eval.threshold)
                out.append({"box": np.asarray(c, np.float64), "pv": pv, "pa": pa, "atoms": atoms, "fused": fused,
                            "centre": centre, "mask": mask, "score": score, "mean_pv": float(pv.mean())})
        return out

    def ranked_boxes(self, net, p, cands: dict | None, keep: int) -> list[dict]:
        if cands is not None:
            if p.name not in cands:
                raise DataError(f"the candidates file has no rows for protein {p.name}",
                                fix="add its fpocket + DeepPocket centres, or leave the candidates out (lattice)")
            return self.run_boxes(net, p, cands[p.name][:keep])
        boxes = self.run_boxes(net, p, list(geo.lattice_candidates(p.coords.astype(np.float64),
                                                                   self.m.eval.lattice)))
        boxes.sort(key=lambda b: -b["mean_pv"])
        kept = []
        for b in boxes:
            ref = b["centre"] if b["centre"] is not None else b["box"]
            if all(np.linalg.norm(ref - (k["centre"] if k["centre"] is not None else k["box"])) > 4.0 for k in kept):
                kept.append(b)
            if len(kept) == keep:
                break
        return kept

    def evaluate(self, net, items):
        from sklearn.metrics import roc_auc_score

        e, g = self.m.eval, self.m.grid
        cands = self.candidates(e.candidates)
        rows, centres_n, centres_n2, boxes_n, ligs, pred_vox, true_vox, scores, labels = ([] for _ in range(9))
        self._shown = []
        for p in self.proteins(items):
            n = len(p.ligands)
            boxes = self.ranked_boxes(net, p, cands, n + 2)
            top = boxes[:n]
            for j, lig in enumerate(p.ligands):
                cs = [b["centre"] for b in top if b["centre"] is not None]
                d = [np.linalg.norm(c - lig.mean(0)) for c in cs]
                best = top[[i for i, b in enumerate(top) if b["centre"] is not None][int(np.argmin(d))]] if d else None
                truth = geo.label_grid(p.label_points(j), best["box"], g.size, g.spacing, self.m.dataset.label_radius) \
                    if best is not None else np.zeros(1, bool)
                centres_n.append(np.array(cs) if cs else None)
                cs2 = [b["centre"] for b in boxes if b["centre"] is not None]
                centres_n2.append(np.array(cs2) if cs2 else None)
                boxes_n.append(np.array([b["box"] for b in top]))
                ligs.append(lig)
                pred_vox.append(best["mask"] if best is not None else np.zeros(1, bool))
                true_vox.append(truth)
                one = pockets.dvo([pred_vox[-1]], [truth], [centres_n[-1]], [lig], e.threshold_distance)
                rows.append({"protein": p.name, "site": j + 1, "atoms": len(p.coords), "ligand_atoms": len(lig),
                             "dcc_distance": float(pockets.dcc_distances([centres_n[-1]], [lig])[0]),
                             "dca_distance": float(pockets.dca_distances([centres_n[-1]], [lig])[0]),
                             "dca_distance_n2": float(pockets.dca_distances([centres_n2[-1]], [lig])[0]),
                             "dvo_pct": one, "grid_centre_distance":
                                 float(pockets.dcc_distances([boxes_n[-1]], [lig])[0]),
                             **({f"pred_{k}": float(v) for k, v in zip("xyz", best["centre"], strict=True)}
                                if best is not None else {})})
            for b in top:
                uniq = np.unique(b["atoms"], return_index=True)[1]
                scores.append(b["pa"][uniq])
                labels.append(geo.atom_labels(p.coords[b["atoms"][uniq]], p.ligands, g.atom_label_distance))
            if len(self._shown) < e.figures:
                self._shown.append((p, boxes))
        thr = e.threshold_distance
        y, s = np.concatenate(labels), np.concatenate(scores)
        metrics = {"dcc": pockets.dcc(centres_n, ligs, thr), "dvo": pockets.dvo(pred_vox, true_vox, centres_n, ligs,
                                                                                 thr),
                   "dca_top_n": pockets.dca(centres_n, ligs, thr), "dca_top_n2": pockets.dca(centres_n2, ligs, thr),
                   "dcc_grid_centre": pockets.dcc(boxes_n, ligs, thr),
                   "atom_auroc": float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan"),
                   "n_proteins": len({r["protein"] for r in rows}), "n_sites": len(rows),
                   "candidates": "csv" if cands is not None else "lattice"}
        return metrics, rows

    def figures(self, net, items, metrics, rows, split):
        from .render import pocket_figure

        for p, boxes in self._shown:
            pocket_figure(self.ctx, f"pockets_{p.name}", p, boxes, self.m.grid.spacing)

    def summary_line(self, split, metrics):
        return (f"{split}: DCC {metrics['dcc']:.2f} %  DVO {metrics['dvo']:.2f} %  DCA top-n {metrics['dca_top_n']:.2f}"
                f" %  atom AUROC {metrics['atom_auroc']:.4f}  (candidate centres: DCC {metrics['dcc_grid_centre']:.2f} "
                f"%; {metrics['n_sites']} sites)")

    # -- paper.md ------------------------------------------------------------------------------------------------
    def paper_kwargs(self, split, metrics):
        return {"keys": ["dcc", "dvo", "dca_top_n", "dca_top_n2", "atom_auroc", "dcc_grid_centre"]}

    def paper_sections(self, metrics):
        mm = self.m.model
        run = (f"## This run\n\n{'DRIA' if mm.attention == 'dria' else 'plain 3D U-Net'} ({mm.spatial_attn} spatial "
               f"branch), SFM {'on' if mm.sfm else 'off'}; grid {self.m.grid.size}³ at {self.m.grid.spacing} Å; "
               f"{metrics['n_proteins']} proteins, {metrics['n_sites']} sites; candidate centres from the "
               f"{metrics['candidates']}. `dcc_grid_centre` scores the candidate centres themselves.")
        notes = paper_data(self.ctx.spec)["notes"]["comparison"].rstrip()
        return [run, paper_table(self.ctx.spec, "table2"), paper_table(self.ctx.spec, "table3"),
                paper_table(self.ctx.spec, "table1"), notes]

    # -- predict ---------------------------------------------------------------------------------------------------
    def predict_items(self):
        src = self.m.predict.input
        if not src:
            return self.proteins(self.split_of(self.splits()))
        from .render import read_protein

        return [read_protein(f) for f in self.ctx.predict_inputs(src, (".pdb", ".mol2"), what="protein files")]

    def predict_rows(self, net, items) -> list[dict]:
        from .render import predict_rows

        return predict_rows(self, net, items)


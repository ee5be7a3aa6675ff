"""hamming-retrieval, the method (card: docs/papers/hamming-retrieval.md).

Data (``datasets/nih.py``, the reader idqce shares): NIH ChestX-ray14's ``Data_Entry_2017.csv`` and
``images_0NN/images/*.png``, or (``dataset.layout: released``, found automatically) the authors' released split,
``train/``, ``gallery/``, ``query/`` of ``.npy`` images with the labels in the file names, used as it is. An image
is kept when it has at least one of ``dataset.labels`` (the card's 13 findings); Hernia and "No Finding" are not
labels here, so a "Hernia"-only image is left out and "Hernia|Effusion" is kept as Effusion. The card says the
obvious rules give slightly more than the paper's 51,480 images; this is the rule used (the split stage reports the
counts). The kept images are split at random, 75 % train, 20 % gallery, 5 % query (``round`` of each fraction;
``split_seed`` 3407 with ``np.random.default_rng``), per image as in the paper; ``dataset.patient_split`` keeps a
patient's images together (shuffled patients filled in turn). Pixels: 8 bits, alpha dropped, colour averaged to one
channel (the reference code), bilinear resize to ``img_size`` (224), scaled to [0, 1], no normalisation and no
augmentation. The selected images are decoded once into a uint8 array under ``$MEDRUN_CACHE/nih`` (named by the data
fingerprint, the image list and the size) and memory-mapped.

Network (``models/alexnet_hash.py``): AlexNet's conv stack on one channel (net_e, with the ReLU after conv5 that
Eq. 4 drops, as the card says), an adaptive 6×6 average pool (the identity at 224²), fc_h = Linear 9216→4096, ReLU,
Linear →K, tanh; net_c = a separate Linear 9216→4096, ReLU, Linear →13. Random initialisation unless
``model.alexnet_checkpoint`` names torchvision AlexNet weights (a state dict, loaded with ``weights_only``): conv1
averaged over RGB, AlexNet's first FC layer copied into the first Linear of both heads (the card's reading of
"inherited from net_e"); no dropout. 78,078,685 parameters at K = 16. ``model.init``: ``torch`` (default, PyTorch's
layer defaults as torchvision's AlexNet) or ``kaiming`` (He-normal, zero biases; the fixture manifest): the paper
does not say, and with the defaults this 8-layer net without normalisation keeps nearly identical codes for all
images for the first 5–10 short epochs, which a fixture run cannot afford.

Training (card, reference code): each item is a pair (x_i, y_i, x_j, y_j), j a uniformly drawn training image
(``torch.randint`` in the loader, so exact resume restores it). J = λ1·J1 + λ2·J2 with λ1 = 1, λ2 = 1.5:
J1 = Σ log cosh((D_H − d_H)/K) with D_H = ⌊K(n∪ − n∩)/n∪⌋ and d_H = K/2·(1 − cos(h_i, h_j)); J2 = the BCE of net_c on
both images; both summed over the batch (``hashing.py``). The per-epoch logs divide by the number of pairs
(``loss_j1``, ``loss_j2``, ``loss``), so curves compare across batch sizes. Adam (lr 1e-4, L2 weight decay 5e-3),
batch 512, 200 epochs, StepLR(40, 0.4) (the code); ``train.sched: plateau`` uses ReduceLROnPlateau(patience 40,
factor 0.4) on the epoch's loss (the text). No validation split and no model selection: the last epoch is kept.

Retrieval: b = 1[h > 0] (sign, with 0 as −1), packed 8 bits per byte; the gallery is searched exactly with faiss's
``IndexBinaryFlat`` (``search.py``), the gallery shuffled with ``eval.tie_seed`` (3407) so that equal distances
keep the reference code's shuffled-then-stable-sorted order; a NumPy popcount search gives the same lists (tested).
Relevance R = number of shared labels (Jaccard only in training). Metrics at p = ``eval.top_k`` (100), all from
``metrics.retrieval``: ``ndcg_retrieved`` (iDCG from the retrieved list re-sorted, the authors' script),
``ndcg_gallery`` (iDCG from the best p of the gallery), ``ndcg`` (the one ``eval.idcg`` names), ``acg``, ``wmap``
(Eq. 18 with each query's own ACG@r, p as the code) and ``map`` (binary AP@p). ``*_random`` is the same metric for
random ±1 codes, averaged over ``eval.random_draws`` draws: the chance level the smoke threshold is read against.
A train run scores the query split against the gallery after its last epoch (the paper's protocol); ``eval``
does the same for a finished run. ``j1_fall`` = 1 − (last epoch's J1)/(first epoch's J1).

Other stages: ``split`` (``split.py``) writes the three lists; ``index`` (``index.py``) encodes a split into
``index/codes.npz``; ``retrieve`` (``retrieve.py``) answers query images from an index run. The card's flags map to
manifest keys: ``--bits`` → ``model.code_bits``, ``--idcg`` → ``eval.idcg``, ``--sched`` → ``train.sched``,
``--patient-split`` → ``dataset.patient_split``, ``--alexnet-checkpoint`` → ``model.alexnet_checkpoint``,
``--nih-root`` → ``--data-dir``; ``make-fixture`` is ``medrun fixture nih``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from medrun.datasets import nih
from medrun.errors import EnvError, UsageError
from medrun.metrics import retrieval as RT
from medrun.models.alexnet_hash import AlexNetHash

from .. import training
from ..report import paper_data, paper_note, paper_table, read_series
from ..tasks.supervised import Supervised
from . import figures, hashing, search

SCORES = ("ndcg_retrieved", "ndcg_gallery", "acg", "wmap", "map")


@dataclass
class Part:
    """One split: image names and files, their multi-hot labels (N, L) and patients."""

    names: list[str]
    paths: list[Path]
    y: np.ndarray
    patients: list[str]

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, idx) -> Part:
        idx = list(idx)
        return Part([self.names[i] for i in idx], [self.paths[i] for i in idx], self.y[idx],
                    [self.patients[i] for i in idx])


class Images(Dataset):
    """uint8 images (N, S, S) → float tensors (1, S, S) in [0, 1]."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return torch.from_numpy(np.asarray(self.images[i], dtype=np.float32) / 255.0)[None]


class Pairs(Images):
    """Training items (x_i, y_i, x_j, y_j): j drawn uniformly from the training set for every item."""

    def __init__(self, images, y):
        super().__init__(images)
        self.y = torch.from_numpy(np.asarray(y, dtype=np.float32))

    def __getitem__(self, i):
        j = int(torch.randint(len(self.images), (1,)))
        return super().__getitem__(i), self.y[i], super().__getitem__(j), self.y[j]


class LitHash(L.LightningModule):
    def __init__(self, net: AlexNetHash, loss, train):
        super().__init__()
        self.net, self.lam1, self.lam2, self.t = net, loss.lambda1, loss.lambda2, train

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        xi, yi, xj, yj = batch
        h, logits = self.net.heads(torch.cat([xi, xj]))
        n = len(xi)
        j1 = hashing.ahdl(h[:n], h[n:], yi, yj)
        j2 = hashing.pmcl(logits[:n], logits[n:], yi, yj)
        loss = self.lam1 * j1 + self.lam2 * j2
        for name, v in (("loss_j1", j1), ("loss_j2", j2), ("loss", loss)):
            self.log(name, v.detach() / n, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        return loss

    def configure_optimizers(self):
        t = self.t
        opt = torch.optim.Adam(self.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        if t.sched == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=t.gamma, patience=t.step_size)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "loss", "interval": "epoch"}}
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=t.step_size, gamma=t.gamma)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


class HammingRetrieval(Supervised):
    report_split = "query"
    val_split = None

    @property
    def labels(self) -> list[str]:
        return list(self.m.dataset.labels)

    def build_model(self) -> AlexNetHash:
        mm = self.m.model
        return AlexNetHash(mm.code_bits, len(self.labels), 1, mm.fc_width, mm.pool, mm.init)

    # -- data -----------------------------------------------------------------------------------------------
    def selection(self) -> tuple[list[nih.Entry], dict]:
        """The images with at least one kept label, and counts of what was left out."""
        entries = nih.read_entries(self.ctx.data_roots["nih"], self.m.dataset.labels_csv)
        y = nih.multi_hot(entries, self.labels)
        keep = y.any(1)
        counts = {"csv_rows": len(entries), "no_finding": sum(not e.labels for e in entries),
                  "without_kept_label": int((~keep).sum()) - sum(not e.labels for e in entries),
                  "selected": int(keep.sum())}
        if not keep.any():
            raise UsageError(f"no image of {nih.labels_csv(self.ctx.data_roots['nih'], self.m.dataset.labels_csv)} "
                             f"has one of dataset.labels ({', '.join(self.labels)})", fix="check dataset.labels")
        return [e for e, k in zip(entries, keep, strict=True) if k], counts

    def released(self) -> dict:
        """The authors' split as released (train/, gallery/, query/ of .npy, labels in the names); images without
        a kept label are left out as in the Kaggle layout."""
        parts, total, left = {}, 0, 0
        for name in nih.NPY_PARTS:
            items = nih.read_npy_part(self.ctx.data_roots["nih"], name)
            y = nih.multi_hot(items, self.labels)
            keep = y.any(1)
            total, left = total + len(items), left + int((~keep).sum())
            kept = [it for it, k in zip(items, keep, strict=True) if k]
            parts[name] = Part([it.name for it in kept], [it.path for it in kept], y[keep],
                               [it.name.split("_")[0] for it in kept])
        self.counts = {"csv_rows": total, "no_finding": 0, "without_kept_label": left,
                       "selected": total - left}
        return parts

    def splits(self) -> dict:
        if getattr(self, "_splits", None) is not None:
            return self._splits
        from .config import layout

        if layout(self.m.dataset) == "released":
            self._splits = self.released()
            self.ctx.record_splits({s: p.paths for s, p in self._splits.items()})
            return self._splits
        entries, self.counts = self.selection()
        d = self.m.dataset
        part = Part([e.name for e in entries], [e.path for e in entries], nih.multi_hot(entries, self.labels),
                    [e.patient for e in entries])
        n = len(part)
        sizes = (round(d.train_fraction * n), round(d.gallery_fraction * n))
        if min(sizes) < 1 or n - sum(sizes) < 1:
            raise UsageError(f"{n} selected images cannot be split {d.train_fraction}/{d.gallery_fraction}/rest with "
                             "an image in each part", fix="use more images or other fractions")
        rng = np.random.default_rng(d.split_seed)
        if d.patient_split:
            groups: dict[str, list[int]] = {}
            for i, p in enumerate(part.patients):
                groups.setdefault(p, []).append(i)
            order = [i for p in rng.permutation(sorted(groups)) for i in groups[p]]
        else:
            order = rng.permutation(n).tolist()
        cut = [0, sizes[0], sum(sizes), n]
        if d.patient_split:  # move each cut to the next patient boundary
            pats = [part.patients[i] for i in order]
            cut = [0, *(_boundary(pats, c) for c in cut[1:3]), n]
        names = ("train", "gallery", "query")
        self._splits = {s: part.subset(sorted(order[cut[k]:cut[k + 1]])) for k, s in enumerate(names)}
        self.ctx.record_splits({s: p.paths for s, p in self._splits.items()})
        return self._splits

    def images(self, part: Part):
        """(N, S, S) uint8 of a split, decoded once into the cache (memory-mapped after that)."""
        d = self.m.dataset
        cache = None
        if d.cache and self.ctx.cache_dir is not None:
            lock = json.loads((self.ctx.path / "data.lock.json").read_text())
            key = hashlib.sha256(json.dumps([lock.get("fingerprint"), d.img_size, part.names]).encode()).hexdigest()
            cache = Path(self.ctx.cache_dir) / "nih" / f"{key[:32]}-{d.img_size}.npy"
        return nih.image_array(part.paths, d.img_size, cache, d.decode_workers, self.ctx.log)

    # -- the template's hooks -------------------------------------------------------------------------------
    def dataset(self, part: Part, train: bool):
        return Pairs(self.images(part), part.y) if train else Images(self.images(part))

    def lit_module(self, net):
        path = self.m.model.alexnet_checkpoint
        if path:
            from medrun.artifacts import sha256_file

            if not Path(path).expanduser().is_file():
                raise EnvError(f"AlexNet weights not found: {path} (model.alexnet_checkpoint)",
                               fix="download torchvision's alexnet weights yourself and pass their path, or drop "
                                   "model.alexnet_checkpoint for random initialisation")
            state = training.load_state(Path(path).expanduser())
            try:
                done = net.load_alexnet(state)
            except (KeyError, ValueError) as e:
                raise UsageError(f"{path} is not a torchvision AlexNet state dict ({type(e).__name__}: {e})",
                                 fix="pass torchvision's alexnet weights (features.0 … classifier.6)") from None
            self.ctx.run.update_info(alexnet_sha256=sha256_file(Path(path).expanduser()), alexnet_tensors=len(done))
            self.ctx.log(f"initialised {len(done)} tensors from {path}")
        return LitHash(net, self.m.loss, self.m.train)

    def weights_metadata(self) -> dict:
        return {"pipeline": "hamming-retrieval", "code_bits": self.m.model.code_bits, "labels": ",".join(self.labels)}

    def encode(self, net, part: Part, batch_size: int | None = None) -> torch.Tensor:
        """Real-valued codes h (N, K) of a split, through the predictor (the manifest's hardware)."""
        loader = DataLoader(Images(self.images(part)), batch_size=batch_size or self.m.eval.batch_size)
        out = self.predictor.map(net, loader)
        return torch.cat(out) if out else torch.zeros(0, self.m.model.code_bits)

    def after_fit(self) -> dict:
        self.j1 = j1_stats(self.ctx.path / "logs" / "metrics.csv")  # paper.md says how far J1 fell
        return self.j1

    def evaluate(self, net, queries: Part) -> tuple[dict, list[dict]]:
        e, k_bits = self.m.eval, self.m.model.code_bits
        gallery = self.splits()["gallery"]
        if e.top_k > len(gallery):
            raise UsageError(f"eval.top_k {e.top_k} is longer than the gallery ({len(gallery)} images)",
                             fix=f"-o eval.top_k={len(gallery)} or fewer")
        hq, hg = self.encode(net, queries), self.encode(net, gallery)
        qb, gb = search.to_bits(hq), search.to_bits(hg)
        index = search.HammingIndex(search.pack(gb), k_bits, e.tie_seed)
        ids, dist = index.search(search.pack(qb), e.top_k)
        rel = RT.relevance(queries.y, gallery.y)
        per_query = ranking_scores(rel, ids, e.top_k)
        metrics = {s: float(np.mean(v)) for s, v in per_query.items()}
        rng = np.random.default_rng(e.tie_seed or 0)
        random = {s: [] for s in SCORES}
        for _ in range(e.random_draws):
            rq, rg = (rng.integers(0, 2, (len(x), k_bits), dtype=np.uint8) for x in (queries, gallery))
            r_ids, _ = search.HammingIndex(search.pack(rg), k_bits, e.tie_seed).search(search.pack(rq), e.top_k)
            for s, v in ranking_scores(rel, r_ids, e.top_k).items():
                random[s].append(float(np.mean(v)))
        metrics.update({f"{s}_random": float(np.mean(v)) for s, v in random.items()})
        metrics["ndcg"] = metrics[f"ndcg_{e.idcg}"]
        metrics["ndcg_random"] = metrics[f"ndcg_{e.idcg}_random"]
        for s in ("ndcg", "ndcg_gallery", "acg", "wmap", "map"):
            metrics[f"{s}_over_random"] = metrics[s] - metrics[f"{s}_random"]
        metrics.update(k=e.top_k, idcg=e.idcg, n_queries=len(queries), n_gallery=len(gallery), code_bits=k_bits,
                       distinct_gallery_codes=int(len(np.unique(search.pack(gb), axis=0))),
                       bit_balance=float(gb.mean()))
        abbr = [figures.abbreviation(x) for x in self.labels]
        rows = [{"image": queries.names[i], "labels": _labels(queries.y[i], self.labels),
                 **{s: float(per_query[s][i]) for s in SCORES},
                 "top5": " ".join(gallery.names[j] for j in ids[i, :5]),
                 "top5_labels": " ; ".join(_labels(gallery.y[j], abbr) for j in ids[i, :5]),
                 "top1_distance": int(dist[i, 0])} for i in range(len(queries))]
        self._ranked = (ids, dist, qb, gb)
        self._table4 = self.table4(net) if self.ctx.stage == "train" else None
        return metrics, rows

    def table4(self, net) -> list[dict] | None:
        """The card's Table 4 on this run: five training images (h1 and four partners sharing a label with it,
        drawn with the split seed) with the target D_H and the predicted d_H of Eq. 9 from real-valued codes."""
        train = self.splits()["train"]
        rng = np.random.default_rng(self.m.dataset.split_seed)
        firsts = [i for i in rng.permutation(len(train)) if train.y[i].sum() >= 2]
        for first in firsts:
            partners = [j for j in rng.permutation(len(train)) if j != first and (train.y[j] & train.y[first]).any()]
            if len(partners) >= 4:
                break
        else:
            return None
        pick = train.subset([first, *partners[:4]])
        h = self.encode(net, pick)
        k = self.m.model.code_bits
        yt = torch.from_numpy(pick.y.astype(np.float32))
        target = hashing.target_distance(yt[:1].expand(4, -1), yt[1:], k)
        pred = hashing.predicted_distance(h[:1].expand(4, -1), h[1:], k)
        inter, union = (pick.y[:1] & pick.y[1:]).sum(1), (pick.y[:1] | pick.y[1:]).sum(1)
        return [{"pair": f"(h1, h{j + 2})", "image": pick.names[j + 1], "jaccard": f"{inter[j]}/{union[j]}",
                 "target": int(target[j]), "predicted": round(float(pred[j]), 2)} for j in range(4)]

    # -- reporting ----------------------------------------------------------------------------------------------
    def figures(self, net, queries: Part, metrics, rows, split):
        ids, dist, qb, gb = self._ranked
        gallery = self.splits()["gallery"]
        figures.retrieval_grid(self.ctx, "retrieval", self.images(queries), queries, self.images(gallery), gallery,
                               ids, dist, self.labels, self.m.eval.figure_queries)
        figures.distance_vs_target(self.ctx, qb, gb, queries.y, gallery.y, self.m.model.code_bits)

    def summary_line(self, split, m):
        return (f"{split}: nDCG@{m['k']} {m['ndcg_retrieved']:.4f} (gallery iDCG {m['ndcg_gallery']:.4f}, random "
                f"{m['ndcg_gallery_random']:.4f})  ACG {m['acg']:.4f}  wMAP {m['wmap']:.4f}  mAP {m['map']:.4f}")

    def paper_kwargs(self, split, metrics):
        return paper_expect(self.ctx.spec, self.m.model.code_bits, self.m.eval.top_k)

    def paper_sections(self, metrics):
        from ..report import markdown_table

        k = metrics["k"]
        lines = [f"## This run\n\n{self.m.model.code_bits}-bit codes, p = {k}; {metrics['n_queries']} queries against "
                 f"{metrics['n_gallery']} gallery images ({metrics['distinct_gallery_codes']} distinct codes). "
                 f"Headline nDCG uses the iDCG of the {metrics['idcg']} list.\n",
                 markdown_table(["metric", "this run", "random ±1 codes", "run − random"],
                                [[s, metrics[s], metrics[f"{s}_random"], metrics[s] - metrics[f"{s}_random"]]
                                 for s in SCORES])]
        j1 = getattr(self, "j1", None)
        if j1:
            lines.append(f"\nJ1 per pair fell from {j1['j1_first']:.4f} (first epoch) to {j1['j1_last']:.4f} "
                         f"(last), j1_fall = {j1['j1_fall']:.3f}.")
        sections = ["\n".join(lines)]
        t4 = getattr(self, "_table4", None)
        if t4:
            tg, pr = np.array([r["target"] for r in t4]), np.array([r["predicted"] for r in t4])
            rows = [[r["pair"], r["image"], r["jaccard"], r["target"], r["predicted"]] for r in t4]
            rows.append(["mean ± SD (population)", "", "", f"{tg.mean():.2f} ± {tg.std():.2f}",
                         f"{pr.mean():.2f} ± {pr.std():.2f}"])
            sections.append(f"## Table 4 on this run (K = {self.m.model.code_bits}, training images)\n\n"
                            + markdown_table(["pair", "partner", "Jaccard", "D_H (target)", "d_H (predicted)"], rows))
        sections += [paper_table(self.ctx.spec, "table2"), paper_table(self.ctx.spec, "table3"),
                     paper_table(self.ctx.spec, "table4"), paper_note(self.ctx.spec, "comparison")]
        return sections

    # -- the extra stages -------------------------------------------------------------------------------------------
    def split(self) -> dict:
        from .split import split

        return split(self)

    def index(self) -> dict:
        from .index import index

        return index(self)

    def retrieve(self) -> dict:
        from .retrieve import retrieve

        return retrieve(self)


def _boundary(patients: list[str], cut: int) -> int:
    while 0 < cut < len(patients) and patients[cut] == patients[cut - 1]:
        cut += 1
    return cut


def _labels(row, names) -> str:
    return "|".join(n for n, v in zip(names, row, strict=True) if v)


def ranking_scores(rel: np.ndarray, ids: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-query nDCG (both iDCGs), ACG, wMAP and AP at k of top-k lists ``ids`` (Q, k) given the relevance of
    every gallery item (Q, G): each row is the ranked top k followed by the rest of the gallery (whose order no
    metric at k reads; only the gallery iDCG reads its values)."""
    q, g = rel.shape
    mask = np.ones_like(rel, dtype=bool)
    np.put_along_axis(mask, ids, False, axis=1)
    ranked = np.concatenate([np.take_along_axis(rel, ids, axis=1), rel[mask].reshape(q, g - ids.shape[1])], axis=1)
    fns = {"ndcg_retrieved": lambda r: RT.ndcg_at_k(r, k, "retrieved"),
           "ndcg_gallery": lambda r: RT.ndcg_at_k(r, k, "gallery"), "acg": lambda r: RT.acg_at_k(r, k),
           "wmap": lambda r: RT.wmap_at_k(r, k), "map": lambda r: RT.average_precision_at_k(r, k)}
    return {s: np.array([fn(ranked[i:i + 1]) for i in range(q)]) for s, fn in fns.items()}


def j1_stats(metrics_csv: Path) -> dict:
    """J1 per pair at the first and last epoch and its relative fall, from Lightning's CSV log."""
    pts = read_series(metrics_csv).get("loss_j1", []) if metrics_csv.exists() else []
    if not pts:
        return {}
    first, last = pts[0][1], pts[-1][1]
    return {"j1_first": first, "j1_last": last, "j1_fall": 1 - last / first if first > 0 else 0.0}


def paper_expect(spec, bits: int, k: int) -> dict:
    """The paper's numbers for this code length (Tables 2–3, 'Ours'), only at p = 100."""
    ours = paper_data(spec).get("ours", {}).get(bits)
    if not ours or k != 100:
        return {"expect": {}, "setting": f"{bits}-bit codes at p = {k}: the paper reports 16/32/48/64 bits at p = 100"}
    return {"expect": dict(ours), "table": "Tables 2–3",
            "setting": f"NIH ChestX-ray14, 13 findings, {bits}-bit codes, top-100 of the 10,296-image gallery"}

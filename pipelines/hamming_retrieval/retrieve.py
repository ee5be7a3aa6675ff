"""hamming-retrieval ``retrieve``: query images → the top-k gallery images of an index, with labels and distances.

The index is the ``--run`` index run's ``index/codes.npz`` (checked against that run's MANIFEST.sha256), or
``retrieve.index`` (any such file; needed with ``--checkpoint``). The network is the one that encoded the index: the
weights of the index run's own train run (or checkpoint), whose sha256 must still be the one the index run
recorded; with ``--checkpoint`` the file given. Queries are ``retrieve.input`` (a file, folder or glob of
PNG/JPEG/``.npy`` images; each must have the network's one channel, an alpha channel aside: a colour image is refused
rather than averaged, see the pipeline notes) or else the ``eval.split`` images (default: the query split), whose
labels give each hit's relevance. Output: ``per_case.csv`` (one row per query and rank: gallery image, its labels,
Hamming distance), ``figures/retrieved.png`` and the search latency.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from medrun.artifacts import sha256_file
from medrun.datasets import nih
from medrun.errors import DataError, UsageError

from .. import training
from ..base import IMAGE_SUFFIXES
from ..report import paper_md
from . import figures, search
from .pipeline import Images, Part

INDEX_KEYS = ("codes", "labels", "names", "label_names", "bits")


def load_index(path: Path, bits: int) -> dict:
    """An index ``.npz`` (no pickled objects) whose codes are ``bits`` long, or a UsageError naming the file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        why = str(e).splitlines()[0][:160] if str(e) else ""
        raise DataError(f"cannot read index {path}: {type(e).__name__}: {why}",
                        fix="pass an index/codes.npz written by `medrun index hamming-retrieval`") from None
    missing = [k for k in INDEX_KEYS if k not in data]
    if missing:
        raise DataError(f"{path} is not a hamming-retrieval index (lacks {', '.join(missing)})",
                        fix="pass an index/codes.npz written by `medrun index hamming-retrieval`")
    have = int(data["bits"])
    if have != bits:
        raise UsageError(f"index {path} holds {have}-bit codes but the model makes {bits}-bit codes "
                         "(model.code_bits)", fix=f"use an index built by a {bits}-bit model (medrun index …), or "
                                                  f"-o model.code_bits={have} with that index's own weights")
    if data["codes"].ndim != 2 or data["codes"].shape[1] * 8 != have or len(data["names"]) != len(data["codes"]):
        raise DataError(f"{path}: codes of shape {data['codes'].shape} do not hold {have} bits per gallery image",
                        fix="rebuild the index with `medrun index hamming-retrieval`")
    return data


def weights(p):
    """The network that encoded the index (see the module docstring)."""
    if p.ctx.checkpoint is not None:
        return p.trained_model()
    info = p.ctx.parent.info()
    src = (Path(info["parent_dir"]) / "checkpoints" / "model.safetensors" if info.get("parent_dir")
           else Path(info.get("checkpoint") or ""))
    want = info.get("parent_weights_sha256")
    if not src.is_file():
        raise DataError(f"the weights index run {p.ctx.parent.path.name} was built with are gone: {src}",
                        fix="rebuild the index from a train run that still exists (medrun index …)")
    if want and sha256_file(src) != want:
        raise DataError(f"{src} changed since index run {p.ctx.parent.path.name} encoded its gallery with it",
                        fix="rebuild the index (medrun index … --force) or restore those weights")
    p.ctx.run.update_info(parent_weights_sha256=want, weights_file=str(src))
    return training.load_weights(p.build_model(), src)


def queries(p, in_channels: int) -> tuple[list[str], np.ndarray, np.ndarray | None, list[Path]]:
    """(names, images (N, S, S) uint8, labels (N, L) or None, files) of the queries."""
    m = p.m
    if m.retrieve.input:
        src = Path(m.retrieve.input).expanduser()
        if not any(ch in m.retrieve.input for ch in "*?[") and not src.exists():
            raise DataError(f"retrieve.input not found: {src}", fix="-o retrieve.input=/path/to/query_images")
        files = p.ctx.predict_inputs(m.retrieve.input, (*IMAGE_SUFFIXES, ".npy"), what="query images")
        for f in files:
            c = nih.channels(f)
            if c != in_channels:
                raise DataError(f"query image {f} has {c} colour channels; the model reads {in_channels}-channel "
                                "(grayscale) X-rays", fix="pass grayscale images (e.g. PIL's .convert('L'))")
        return [f.name for f in files], nih.image_array(files, m.dataset.img_size), None, files
    part: Part = p.split_of(p.splits())
    return part.names, p.images(part), part.y, part.paths


def retrieve(p) -> dict:
    m, ctx = p.m, p.ctx
    k_bits = m.model.code_bits
    if m.retrieve.index:
        path = Path(m.retrieve.index).expanduser()
        if not path.is_file():
            raise UsageError(f"retrieve.index not found: {path}", fix="pass an index/codes.npz of an index run")
    elif ctx.parent is not None:
        path = ctx.parent_file("index/codes.npz")
    else:
        raise UsageError("retrieve with --checkpoint needs an index", fix="-o retrieve.index=RUN/index/codes.npz")
    idx = load_index(path, k_bits)
    net = weights(p)
    names, images, labels, files = queries(p, net.in_channels)
    loader = DataLoader(Images(images), batch_size=m.retrieve.batch_size)
    h = torch.cat(p.predictor.map(net, loader))
    q_packed = search.pack(search.to_bits(h))
    tie = int(idx.get("tie_seed", -1))
    index = search.HammingIndex(idx["codes"], k_bits, None if tie < 0 else tie)
    t0 = time.perf_counter()
    ids, dist = index.search(q_packed, m.retrieve.top_k)
    secs = time.perf_counter() - t0
    g_labels, label_names = idx["labels"], [str(x) for x in idx["label_names"]]
    g_names = [str(x) for x in idx["names"]]
    rows = []
    for i, name in enumerate(names):
        for r in range(ids.shape[1]):
            j = int(ids[i, r])
            row = {"query": name, "rank": r + 1, "image": g_names[j], "distance": int(dist[i, r]),
                   "labels": "|".join(n for n, v in zip(label_names, g_labels[j], strict=True) if v)}
            if labels is not None:
                row["shared_labels"] = int((labels[i] & g_labels[j]).sum()) if labels.shape[1] == g_labels.shape[1] \
                    else None
            rows.append(row)
    ctx.write_csv("per_case.csv", rows)
    figure(p, images, names, labels, ids, dist, idx, label_names)
    metrics = {"n_queries": len(names), "top_k": int(ids.shape[1]), "gallery": len(g_names), "code_bits": k_bits,
               "search_ms_per_query": 1000 * secs / max(1, len(names)), "index_sha256": sha256_file(path)}
    if labels is not None and rows and rows[0].get("shared_labels") is not None:
        metrics["mean_shared_labels"] = float(np.mean([r["shared_labels"] for r in rows]))
        metrics["hit_rate"] = float(np.mean([r["shared_labels"] > 0 for r in rows]))
    ctx.log(f"{len(names)} queries against {len(g_names)} codes: top {ids.shape[1]} in "
            f"{metrics['search_ms_per_query']:.3f} ms per query")
    ctx.write_text("paper.md", paper_md(ctx.spec, m, metrics, ctx, title="hamming-retrieval retrieve", expect={},
                                        keys=[k for k in ("n_queries", "top_k", "gallery", "search_ms_per_query",
                                                          "mean_shared_labels", "hit_rate") if k in metrics],
                                        sections=[f"Index: `{path}`. Each query's hits are in `per_case.csv`; "
                                                  "`figures/retrieved.png` shows the first queries (the paper's "
                                                  "Fig. 5)."]))
    return metrics


def figure(p, images, names, labels, ids, dist, idx, label_names, n: int = 4, top: int = 5) -> None:
    """The first queries and their top hits; gallery thumbnails are read from this dataset root when found."""
    n = min(n, len(names))
    if n == 0:
        return
    where = {}
    try:
        where = nih._index_images(p.ctx.data_roots["nih"])
    except DataError:
        pass
    size, top = p.m.dataset.img_size, min(top, ids.shape[1])
    g_names = [str(x) for x in idx["names"]]
    shown = sorted({int(j) for j in ids[:n, :top].ravel()})
    thumbs = _Thumbs({j: nih.load_gray(where[g_names[j]], size) for j in shown if g_names[j] in where}, size)
    same = labels is not None and labels.shape[1] == idx["labels"].shape[1]
    q = Part(list(names[:n]), [], labels[:n] if same else None, [])
    g = Part(g_names, [], idx["labels"], [])
    figures.retrieval_grid(p.ctx, "retrieved", images, q, thumbs, g, ids, dist, label_names, n, top)


class _Thumbs:
    """Gallery thumbnails by index: the ones read, a blank square for the rest."""

    def __init__(self, read: dict, size: int):
        self.read, self.blank = read, np.zeros((size, size), np.uint8)

    def __getitem__(self, j):
        return self.read.get(int(j), self.blank)

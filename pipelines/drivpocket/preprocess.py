"""drivpocket's content-addressed caches and the ``preprocess`` stage.

Cache: ``$MEDRUN_CACHE/drivpocket/<key>.npz``, one file per protein (an scPDB entry, a PDB file of COACH420 / HOLO4K,
an SC6K or PDBbind entry folder). ``key`` is the sha256 of the item's files (names and bytes), the dataset's reader,
and the settings that change what is stored (grid size and spacing, label radius, whether grids are kept,
``CACHE_VERSION``). A file holds the atom set (coordinates, channels, ligands, cavity points) and, with
``preprocess.grids``, each site's 14-channel density grid (float16) and pocket labels at its true centre. Files are
written to a temp name and renamed, so an interrupted preprocess leaves only whole files; the next run computes the
rest. Every missing item is read and checked before anything is written for it, item by item.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medrun.artifacts.cache import clear_stale, save_npz
from medrun.datasets import binding_sites as bs

from . import geometry as geo

CACHE_VERSION = 1


@dataclass
class Protein:
    name: str
    coords: np.ndarray  # (N, 3) float32
    channels: np.ndarray  # (N,)
    ligands: list  # per site (M, 3)
    cavity: np.ndarray | None
    centres: np.ndarray  # (S, 3) per site: the cavity's centroid (scPDB) or the ligand's
    grids: np.ndarray | None = None  # (S, 14, n, n, n) float16 at the true centres
    labels: np.ndarray | None = None  # (S, n, n, n) bool
    item: str = ""

    def label_points(self, site: int):
        return self.cavity if self.cavity is not None else self.ligands[site]


def files_of(item: Path) -> list[Path]:
    item = Path(item)
    return sorted(p for p in item.iterdir() if p.is_file() and not p.name.startswith(".")) if item.is_dir() else [item]


def cache_key(dataset: str, item: Path, settings: dict) -> str:
    h = hashlib.sha256()
    for f in files_of(item):
        h.update(f.name.encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    blob = json.dumps({"v": CACHE_VERSION, "dataset": dataset, "files": h.hexdigest(), **settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def settings_of(m) -> dict:
    return {"size": m.grid.size, "spacing": m.grid.spacing, "label_radius": m.dataset.label_radius,
            "grids": m.preprocess.grids}


def build(dataset: str, item: Path, s: dict) -> Protein:
    st = bs.load(dataset, item)
    centres = np.stack([(st.cavity if st.cavity is not None else lig).mean(0) for lig in st.ligands])
    p = Protein(st.name, st.coords, st.channels, st.ligands, st.cavity, centres, item=str(item))
    if s["grids"]:
        p.grids = np.stack([geo.density(p.coords, p.channels, c, s["size"], s["spacing"], bs.RADII)
                            for c in centres]).astype(np.float16)
        p.labels = np.stack([geo.label_grid(p.label_points(i), c, s["size"], s["spacing"], s["label_radius"])
                             for i, c in enumerate(centres)])
    return p


def save(path: Path, p: Protein) -> None:
    arrays = {"name": np.array(p.name), "item": np.array(p.item), "coords": p.coords, "channels": p.channels,
              "lig": np.concatenate(p.ligands), "lig_off": np.cumsum([0, *(len(x) for x in p.ligands)]),
              "cavity": p.cavity if p.cavity is not None else np.zeros((0, 3), np.float32),
              "has_cavity": np.array(p.cavity is not None), "centres": p.centres}
    if p.grids is not None:
        arrays.update(grids=p.grids, labels=p.labels)
    save_npz(path, compressed=True, **arrays)


def load(path: Path) -> Protein:
    with np.load(path, allow_pickle=False) as z:
        off = z["lig_off"]
        ligs = [z["lig"][off[i]:off[i + 1]] for i in range(len(off) - 1)]
        return Protein(str(z["name"]), z["coords"], z["channels"], ligs, z["cavity"] if bool(z["has_cavity"]) else None,
                       z["centres"], z["grids"] if "grids" in z else None, z["labels"] if "labels" in z else None,
                       str(z["item"]))


def compute(dataset: str, items: list[Path], s: dict, cache_dir: Path, log=print) -> tuple[dict, dict]:
    """Every item's cache file, computing the missing ones. Returns ({item path: cache path}, stats)."""
    t0 = time.perf_counter()
    cache_dir = Path(cache_dir)
    clear_stale(cache_dir)  # temp files of a killed run (young ones may belong to a live process)
    paths, todo = {}, []
    for it in items:
        paths[str(it)] = cache_dir / f"{cache_key(dataset, it, s)}.npz"
        if not paths[str(it)].exists():
            todo.append(it)
    stats = {"items": len(items), "cached": len(items) - len(todo), "computed": 0, "compute_seconds": 0.0}
    if todo:
        log(f"preprocess: {len(todo)} protein(s) to parse and grid ({stats['cached']} cached)")
    stop_after = os.environ.get("MEDRUN_TEST_DRIVPOCKET_STOP_AFTER")  # test hook: an interrupt after n items
    last = time.perf_counter()
    for it in todo:
        t1 = time.perf_counter()
        save(paths[str(it)], build(dataset, it, s))
        stats["computed"] += 1
        stats["compute_seconds"] += time.perf_counter() - t1
        if time.perf_counter() - last > 10:
            last = time.perf_counter()
            log(f"  {stats['computed']}/{len(todo)} ({last - t0:.0f} s)")
        if stop_after and stats["computed"] >= int(stop_after):
            raise KeyboardInterrupt
    stats["seconds"] = time.perf_counter() - t0
    return paths, stats


def preprocess_stage(p) -> dict:
    """Fill the cache for every protein of the dataset; an index of what is where goes into the run."""
    from ..report import paper_md

    d = p.m.dataset
    items = bs.list_entries(d.name, p.root())
    paths, stats = p.cached(items)
    rows = []
    for it in items:
        pr = load(paths[str(it)])
        rows.append({"protein": pr.name, "item": str(it), "atoms": len(pr.coords), "sites": len(pr.ligands),
                     "ligand_atoms": int(sum(len(x) for x in pr.ligands)), "cache": paths[str(it)].name})
    p.ctx.write_csv("index.csv", rows)
    p.ctx.record_splits({"all": items})
    computed = stats["computed"]
    metrics = {"proteins": len(items), "sites": int(sum(r["sites"] for r in rows)), "computed": computed,
               "cached": stats["cached"], "seconds": round(stats["seconds"], 3),
               "proteins_per_second": round(computed / stats["compute_seconds"], 3) if computed else None,
               "cache_dir": str(p.cache_dir())}
    section = (f"## Preprocess\n\n{metrics['proteins']} proteins, {metrics['sites']} sites of {d.name}: {computed} "
               f"parsed and gridded, {metrics['cached']} from the cache (`{metrics['cache_dir']}`). Grid "
               f"{p.m.grid.size}³ at {p.m.grid.spacing} Å, 14 libmolgrid receptor channels. Index: `index.csv`.")
    p.ctx.write_text("paper.md", paper_md(p.ctx.spec, p.m, metrics, p.ctx, title="DRIVPocket preprocess", expect={},
                                          keys=["proteins", "sites", "computed", "cached", "seconds",
                                                "proteins_per_second"], sections=[section]))
    return metrics

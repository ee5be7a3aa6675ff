"""ph-mci's topology, without torch: delay embedding, Vietoris–Rips persistence (gudhi), 1-Wasserstein distances
between diagrams (gudhi's POT backend), PR matrices, and the content-addressed per-subject cache.

Cache: ``<runs>/.cache/ph-mci/<key>.npz``, one file per subject CSV (one subject, one network), where ``key`` is
the sha256 of the CSV's bytes, the network and every setting that changes the result (window, drop-last, max
dimension, Wasserstein order, ``CACHE_VERSION``). A file holds the subject's diagrams (per ROI and dimension,
finite bars) and its PR matrices (one per dimension), or a "dropped" mark for a CSV with an exact zero. Files are
written to a temp name and renamed, so an interrupted computation leaves only whole files: a second run loads
what is there and computes the rest. The number of workers is not part of the key.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from medrun.artifacts.cache import clear_stale, save_npz

CACHE_VERSION = 1  # bump when what a cache file holds, or how it is computed, changes


@dataclass(frozen=True)
class Settings:
    window: int = 3
    drop_last: bool = True
    max_dim: int = 2
    order: float = 1.0

    @classmethod
    def from_manifest(cls, ph) -> Settings:
        return cls(ph.window, ph.sw_drop_last, ph.max_dim, float(ph.order))


# -- the method ----------------------------------------------------------------------------------------------------
def embed(x: np.ndarray, window: int = 3, drop_last: bool = True) -> np.ndarray:
    """Sliding-window (delay) embedding with τ = 1: v_1..v_T → points (v_t, …, v_{t+window−1}). T−window+1 points;
    the authors' code drops the last one (``drop_last``)."""
    pts = np.lib.stride_tricks.sliding_window_view(np.asarray(x, dtype=np.float64), window)
    return pts[:-1] if drop_last else pts


def rips_diagrams(points: np.ndarray, max_dim: int = 2) -> list[np.ndarray]:
    """Vietoris–Rips persistence of a point cloud (Euclidean, no threshold, Z/2): finite bars of H0..H``max_dim``,
    each an (m, 2) array of (birth, death). The 1-skeleton is edge-collapsed before the expansion, so the
    3-skeleton of ~185 points stays small."""
    import gudhi

    st = gudhi.RipsComplex(points=points).create_simplex_tree(max_dimension=1)
    if max_dim >= 1:
        st.collapse_edges()
        st.expansion(max_dim + 1)
    st.compute_persistence(homology_coeff_field=2, min_persistence=0)
    return [finite(st.persistence_intervals_in_dimension(k)) for k in range(max_dim + 1)]


def finite(dgm) -> np.ndarray:
    d = np.asarray(dgm, dtype=np.float64).reshape(-1, 2)
    return np.ascontiguousarray(d[np.isfinite(d).all(axis=1)])


def wasserstein(a: np.ndarray, b: np.ndarray, order: float = 1.0) -> float:
    """q-Wasserstein distance between two diagrams' finite parts, L∞ ground metric, points matched to the diagonal
    allowed (persim.wasserstein's semantics); gudhi's implementation on POT's exact solver."""
    # gudhi.wasserstein imports POT, which is slow: only when distances are computed
    from gudhi.wasserstein import wasserstein_distance

    # a and b are finite already (made so once per ROI, not per pair), so gudhi's essential-part pass is skipped
    return float(wasserstein_distance(a, b, order=order, internal_p=np.inf, keep_essential_parts=False))


def distance_matrix(diagrams: list[np.ndarray], order: float = 1.0) -> np.ndarray:
    """Symmetric matrix of pairwise distances (zero diagonal); only i < j is computed."""
    n = len(diagrams)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = wasserstein(diagrams[i], diagrams[j], order)
    return out


def cross_distances(rows: list[np.ndarray], cols: list[np.ndarray], order: float = 1.0) -> np.ndarray:
    return np.array([[wasserstein(a, b, order) for b in cols] for a in rows]).reshape(len(rows), len(cols))


@dataclass
class Topology:
    diagrams: list[list[np.ndarray]]  # [dim][roi] → (m, 2) finite bars
    pr: np.ndarray | None  # (dims, n, n) PR matrices; None when dropped
    dropped: bool = False


def subject_topology(x: np.ndarray, s: Settings) -> Topology:
    """One subject's network: every ROI's diagrams once, then one PR matrix per dimension."""
    per_roi = [rips_diagrams(embed(row, s.window, s.drop_last), s.max_dim) for row in x]
    diagrams = [[d[k] for d in per_roi] for k in range(s.max_dim + 1)]
    pr = np.stack([distance_matrix(diagrams[k], s.order) for k in range(s.max_dim + 1)])
    return Topology(diagrams, pr)


# -- the cache -----------------------------------------------------------------------------------------------------
def cache_key(csv_sha256: str, network: str, s: Settings) -> str:
    blob = json.dumps({"v": CACHE_VERSION, "csv": csv_sha256, "network": network, **asdict(s)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def save(path: Path, topo: Topology) -> None:
    """Atomically (``artifacts.cache.save_npz``)."""
    arrays: dict[str, np.ndarray] = {"dropped": np.array(topo.dropped)}
    if not topo.dropped:
        arrays["pr"] = topo.pr
        for k, dgms in enumerate(topo.diagrams):
            arrays[f"dgm{k}"] = np.concatenate(dgms) if dgms else np.zeros((0, 2))
            arrays[f"off{k}"] = np.cumsum([0, *(len(d) for d in dgms)])
    save_npz(path, **arrays)


def load(path: Path) -> Topology:
    with np.load(path) as z:
        if bool(z["dropped"]):
            return Topology([], None, True)
        pr = z["pr"]
        diagrams = []
        for k in range(pr.shape[0]):
            flat, off = z[f"dgm{k}"], z[f"off{k}"]
            diagrams.append([flat[off[i]:off[i + 1]] for i in range(len(off) - 1)])
    return Topology(diagrams, pr)


def _compute_and_store(x: np.ndarray | None, s: Settings, path: Path) -> float:
    t0 = time.perf_counter()
    save(path, Topology([], None, True) if x is None else subject_topology(x, s))
    return time.perf_counter() - t0


@dataclass
class Item:
    id: str  # e.g. "HC/CB/002_S_0001"
    path: Path  # the CSV
    network: str


def compute(items: list[Item], s: Settings, cache_dir: Path, read, workers: int = 1, log=print) -> tuple[dict, dict]:
    """Every item's cache file, computing those that are missing (``workers`` processes). ``read(path, network)``
    returns the checked array or None (dropped) and raises DataError on bad input; all missing items are read and
    checked before anything is computed. Returns ({item id: cache path}, stats)."""
    t0 = time.perf_counter()
    cache_dir = Path(cache_dir)
    clear_stale(cache_dir)  # temp files of killed workers (young ones may belong to a live process)
    paths, todo = {}, []
    for it in items:
        key = cache_key(hashlib.sha256(Path(it.path).read_bytes()).hexdigest(), it.network, s)
        paths[it.id] = cache_dir / f"{key}.npz"
        if not paths[it.id].exists():
            todo.append(it)
    stats = {"items": len(items), "cached": len(items) - len(todo), "computed": 0, "compute_seconds": 0.0}
    arrays = [read(it.path, it.network) for it in todo]  # checks every file first: a bad one fails before hours of work
    if todo:
        log(f"persistence + Wasserstein for {len(todo)} subject CSV(s) ({stats['cached']} cached) "
            f"with {workers} worker(s)")
    stop_after = os.environ.get("MEDRUN_TEST_PH_STOP_AFTER")  # test hook: an interrupt after n computed items
    jobs = [(x, s, paths[it.id]) for it, x in zip(todo, arrays, strict=True)]
    if workers > 1 and len(jobs) > 1:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=min(workers, len(jobs)), return_as="generator_unordered")(
            delayed(_compute_and_store)(*job) for job in jobs)
    else:
        results = (_compute_and_store(*job) for job in jobs)
    last = time.perf_counter()
    for secs in results:
        stats["computed"] += 1
        stats["compute_seconds"] += secs
        if time.perf_counter() - last > 10 or stats["computed"] == len(jobs):
            last = time.perf_counter()
            log(f"  {stats['computed']}/{len(jobs)} computed ({last - t0:.0f} s)")
        if stop_after and stats["computed"] >= int(stop_after):
            raise KeyboardInterrupt
    stats["seconds"] = time.perf_counter() - t0
    return paths, stats

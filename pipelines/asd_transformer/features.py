"""The card's feature steps before the network: ComBat across sites on the upper-triangle FC features, nodal local
efficiency, row weighting and community reordering. NumPy only (neuroCombat and networkx where named)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


# -- ComBat ------------------------------------------------------------------------------------------------------
def upper(corr: np.ndarray) -> np.ndarray:
    """(N, R, R) → (N, R(R−1)/2) strict upper triangle."""
    iu = np.triu_indices(corr.shape[1], 1)
    return corr[:, iu[0], iu[1]]


def symmetric(features: np.ndarray, r: int) -> np.ndarray:
    """(N, R(R−1)/2) → (N, R, R) symmetric with diagonal 1."""
    iu = np.triu_indices(r, 1)
    out = np.zeros((len(features), r, r), dtype=features.dtype)
    out[:, iu[0], iu[1]] = features
    out = out + out.transpose(0, 2, 1)
    out[:, np.arange(r), np.arange(r)] = 1.0
    return out


def combat(features: np.ndarray, sites: list[str], fit: np.ndarray | None = None, eb: bool = True) -> np.ndarray:
    """ComBat (Johnson 2007 / Fortin 2017, parametric empirical Bayes) through neuroCombat 0.2.12, batch = site and
    no biological covariates. ``fit``: a boolean mask of the subjects to learn from (default: all, the paper's
    transductive, label-free use); the others are adjusted with those estimates (:func:`combat_apply`).
    Features that are constant within any fitted site are passed through unchanged."""
    import pandas as pd
    from neuroCombat import neuroCombat

    x = np.asarray(features, dtype=np.float64)
    sites = np.asarray(sites).astype(str)
    fit = np.ones(len(x), bool) if fit is None else np.asarray(fit, bool)
    names, counts = np.unique(sites[fit], return_counts=True)
    if (counts < 2).any():
        from medrun.errors import DataError

        lone = names[counts < 2][0]
        raise DataError(f"ComBat: site {lone} has {counts[counts < 2][0]} subject(s) in the set it is fitted on; it "
                        "needs at least 2 per site to estimate a site variance",
                        fix="drop that site's subjects, use preprocess.combat_fit=all, or preprocess.combat=false")
    # a feature constant within any fitted site (e.g. a ROI without signal at one site) has no site variance to
    # estimate; it is passed through, as are features constant overall
    varying = np.all([x[fit & (sites == s)].std(0) > 1e-12 for s in names], axis=0)
    out = x.copy()
    dat = x[fit][:, varying].T  # features × subjects
    res = neuroCombat(dat=dat, covars=pd.DataFrame({"site": sites[fit]}), batch_col="site", eb=eb)
    out[np.ix_(fit, varying)] = res["data"].T
    if (~fit).any():
        unseen = sorted(set(sites[~fit]) - set(sites[fit]))
        if unseen:
            from medrun.errors import UsageError

            raise UsageError(f"--combat-fit train: site(s) {', '.join(unseen)} have no subject in the train split",
                             fix="use preprocess.combat_fit=all, or a split that covers every site")
        out[np.ix_(~fit, varying)] = combat_apply(x[~fit][:, varying], sites[~fit], res["estimates"])
    return out


def combat_apply(x: np.ndarray, sites: np.ndarray, est: dict) -> np.ndarray:
    """Adjust new subjects (N, M) with neuroCombat's estimates: standardise with the fitted grand mean and pooled
    variance, remove the site's γ* and δ*, map back. The formula of ``neuroCombatFromTraining``, which in 0.2.12 is
    marked "in development" and fails under NumPy 2 (``int()`` of a 1-element array)."""
    levels = [str(b) for b in est["batches"]]
    wh = np.array([levels.index(str(s)) for s in sites])
    mean = est["stand.mean"][:, 0] + est["mod.mean"].mean(axis=1)
    sd = np.sqrt(est["var.pooled"][:, 0])
    z = (x - mean) / sd
    z = (z - est["gamma.star"][wh]) / np.sqrt(est["delta.star"][wh])
    return z * sd + mean


def combat_closed_form(features: np.ndarray, sites: list[str]) -> np.ndarray:
    """ComBat without empirical Bayes (``eb=False``), written out: standardise each feature by the site-size-weighted
    grand mean and the pooled within-site sd, remove each site's mean (γ̂) and scale (δ̂, sample sd), and map back.
    The reference the test holds neuroCombat to."""
    x = np.asarray(features, dtype=np.float64)
    sites = np.asarray(sites).astype(str)
    names = sorted(set(sites))
    n = len(x)
    means = {s: x[sites == s].mean(0) for s in names}
    grand = sum((sites == s).sum() / n * means[s] for s in names)
    resid = np.concatenate([x[sites == s] - means[s] for s in names])
    sd = np.sqrt((resid ** 2).sum(0) / n)
    z = (x - grand) / sd
    out = np.empty_like(x)
    for s in names:
        zs = z[sites == s]
        gamma, delta = zs.mean(0), zs.std(0, ddof=1)
        out[sites == s] = (zs - gamma) / delta * sd + grand
    return out


def site_variance(features: np.ndarray, sites: list[str]) -> float:
    """Between-site variance of the per-site feature means, averaged over features."""
    sites = np.asarray(sites).astype(str)
    means = np.stack([features[sites == s].mean(0) for s in sorted(set(sites))])
    return float(means.var(0).mean())


# -- local efficiency --------------------------------------------------------------------------------------------
def density_graph(corr: np.ndarray, density: float) -> np.ndarray:
    """Binary undirected graph keeping the strongest positive correlations: round(density · R(R−1)/2) edges (fewer
    if there are not that many positive ones). (R, R) → bool (R, R), no self-loops."""
    r = corr.shape[0]
    iu = np.triu_indices(r, 1)
    w = corr[iu]
    k = int(round(density * len(w)))
    keep = np.zeros(len(w), bool)
    if k > 0:
        top = np.argsort(-w, kind="stable")[:k]
        keep[top[w[top] > 0]] = True
    a = np.zeros((r, r), bool)
    a[iu[0][keep], iu[1][keep]] = True
    return a | a.T


def local_efficiency(adj: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Nodal local efficiency of a binary undirected graph (Latora & Marchiori): for each node v, the global
    efficiency of the subgraph induced by its neighbours, 1/(k(k−1)) Σ_{i≠j} 1/d_ij with d_ij the shortest path
    inside that subgraph; 0 when k < 2. Vectorised: nodes sorted by degree are taken ``chunk`` at a time, their
    neighbour subgraphs padded to the chunk's largest degree, and breadth-first search runs as batched boolean
    matrix products. Equals ``networkx.global_efficiency(G.subgraph(G[v]))`` for every v (tested)."""
    adj = np.asarray(adj, bool)
    r = adj.shape[0]
    deg = adj.sum(1)
    out = np.zeros(r)
    todo = np.flatnonzero(deg >= 2)
    todo = todo[np.argsort(deg[todo], kind="stable")]
    for start in range(0, len(todo), chunk):
        nodes = todo[start: start + chunk]
        out[nodes] = _local_efficiency_chunk(adj, nodes, deg)
    return out


def _local_efficiency_chunk(adj: np.ndarray, nodes: np.ndarray, deg: np.ndarray) -> np.ndarray:
    kmax = int(deg[nodes].max())
    idx = np.zeros((len(nodes), kmax), dtype=np.int64)
    valid = np.zeros((len(nodes), kmax), bool)
    for i, v in enumerate(nodes):
        nb = np.flatnonzero(adj[v])
        idx[i, : len(nb)] = nb
        valid[i, : len(nb)] = True
    pair = valid[:, :, None] & valid[:, None, :]
    sub = adj[idx[:, :, None], idx[:, None, :]] & pair  # neighbour subgraphs (chunk, k, k)
    import torch  # batched matmul: numpy's stacked matmul is ~20× slower at these sizes

    s = torch.from_numpy(sub)
    subf = s.float()
    visited = torch.from_numpy(np.eye(kmax, dtype=bool)[None] | sub | ~pair)
    inv = s.sum((1, 2)).double()  # ordered pairs at distance 1
    frontier = s
    step = 1
    while True:
        step += 1
        frontier = (torch.bmm(frontier.float(), subf) > 0) & ~visited
        n_new = frontier.sum((1, 2))
        if not bool(n_new.any()):
            break
        inv += n_new.double() / step
        visited |= frontier
    k = deg[nodes].astype(np.float64)
    return inv.numpy() / (k * (k - 1))


def nodal_efficiency(corr: np.ndarray, density: float = 0.2) -> np.ndarray:
    """(N, R, R) FC → (N, R) local efficiency of each subject's density graph."""
    return np.stack([local_efficiency(density_graph(c, density)) for c in corr])


# -- the whole preprocessing -------------------------------------------------------------------------------------
def community_order(communities: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """ROI permutation grouping communities 0..K−1 (stable within a community) and the block sizes."""
    order = np.argsort(communities, kind="stable")
    return order, tuple(int(c) for c in np.bincount(communities))


def prepare(corr: np.ndarray, sites: list[str], communities: np.ndarray, *, use_combat: bool = True,
            use_nle: bool = True, density: float = 0.2, fit: np.ndarray | None = None) -> dict:
    """FC → ComBat → local-efficiency row weighting → community reordering. Returns the node features (N, R, R)
    float32, the block sizes, the ROI order, each subject's local efficiencies (N, R; atlas order; ones without
    Nle) and the checks (site variance before/after ComBat, mean local efficiency)."""
    r = corr.shape[1]
    feats = upper(corr.astype(np.float64))
    info: dict = {"site_var_before": site_variance(feats, sites)}
    if use_combat:
        feats = combat(feats, sites, fit)
        info["site_var_after"] = site_variance(feats, sites)
        info["combat_site_var_fall"] = 1.0 - info["site_var_after"] / info["site_var_before"] \
            if info["site_var_before"] > 0 else 0.0
    x = symmetric(feats, r)
    eff = np.ones((len(x), r))
    if use_nle:
        eff = nodal_efficiency(x, density)
        x = eff[:, :, None] * x
        info["local_efficiency_mean"] = float(eff.mean())
    order, blocks = community_order(communities)
    x = x[:, order][:, :, order]
    return {"x": x.astype(np.float32), "blocks": blocks, "order": order, "info": info,
            "efficiency": eff.astype(np.float32)}


# -- the content-addressed cache (outside any run) ---------------------------------------------------------------
def cached(path, compute, log=print) -> dict:
    """``compute()`` (a :func:`prepare` result) through the .npz file ``path`` (keyed by the caller): local
    efficiency of 1009 subjects takes a minute. Temp name + rename; a damaged entry is recomputed."""
    import json

    from medrun.artifacts.cache import save_npz

    path = Path(path)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                out = {"x": z["x"], "blocks": tuple(int(b) for b in z["blocks"]), "order": z["order"],
                       "info": json.loads(str(z["info"])), "efficiency": z["efficiency"]}
            log(f"from the cache {path.name}")
            return out
        except Exception:  # noqa: BLE001 (a damaged cache entry is recomputed)
            path.unlink(missing_ok=True)
    out = compute()
    try:
        save_npz(path, x=out["x"], blocks=np.array(out["blocks"]), order=out["order"], info=json.dumps(out["info"]),
                 efficiency=out["efficiency"])
    except OSError:  # a read-only cache only costs time
        pass
    return out

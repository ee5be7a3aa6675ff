"""drivpocket's outputs a reader looks at: the protein surface coloured by the pocket probability (a matplotlib 3D
figure, since open3d's offscreen renderer needs a display, and an open3d ``.ply``), and the ``predict`` rows
(ranked pocket centres, the top pocket's mask)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from medrun.datasets import binding_sites as bs

from . import geometry as geo
from .preprocess import Protein


def read_protein(path: Path) -> Protein:
    """A protein file given to ``predict`` (.pdb: ATOM records; .mol2: every heavy atom but waters)."""
    if path.suffix.lower() == ".mol2":
        xyz, ch = bs.protein_from_mol2(path)
        ligs = []
    else:
        xyz, ch, het = bs.read_pdb(path)
        ligs = [v for v in het.values() if len(v) >= 5]
    return Protein(path.stem, xyz, ch, ligs, None, np.zeros((0, 3), np.float32), item=str(path))


def surface_probability(p: Protein, boxes: list[dict], spacing: float):
    """Solvent-accessible surface points and, at each, the highest fused pocket probability of any box (0 outside
    every box)."""
    pts = geo.surface_points(p.coords.astype(np.float64), p.channels, bs.RADII)
    prob = np.zeros(len(pts))
    for b in boxes:
        n = b["fused"].shape[-1]
        idx = np.round((pts - geo.origin(b["box"], n, spacing)) / spacing).astype(int)
        ok = np.all((idx >= 0) & (idx < n), 1)
        prob[ok] = np.maximum(prob[ok], b["fused"][idx[ok, 0], idx[ok, 1], idx[ok, 2]])
    return pts, np.clip(prob, 0, 1)


def pocket_figure(ctx, name: str, p: Protein, boxes: list[dict], spacing: float) -> None:
    pts, prob = surface_probability(p, boxes, spacing)
    if len(pts) > 4000:
        keep = np.random.default_rng(0).choice(len(pts), 4000, replace=False)
        pts, prob = pts[keep], prob[keep]
    with ctx.figure(name, figsize=(6, 5.5), subplot_kw={"projection": "3d"}) as (fig, ax):
        sc = ax.scatter(*pts.T, c=prob, cmap="viridis", vmin=0, vmax=1, s=3, alpha=0.5, depthshade=False)
        for i, b in enumerate(boxes[:3]):
            if b["centre"] is not None:
                ax.scatter(*b["centre"], marker="*", s=220, c="red", edgecolors="k", depthshade=False)
                ax.text(*b["centre"], f" {i + 1}", color="red")
        for lig in p.ligands:
            ax.scatter(*np.asarray(lig).T, c="k", s=12, depthshade=False)
        ax.set(xlabel="x (Å)", ylabel="y (Å)", zlabel="z (Å)")
        ax.set_title(f"{p.name}: surface by fused P\n★ predicted pockets (rank), • ligand atoms", fontsize=10)
        fig.colorbar(sc, ax=ax, shrink=0.6, label="pocket probability")


def ply_bytes(points: np.ndarray, prob: np.ndarray) -> bytes:
    """An open3d point cloud of the surface, coloured by probability (viridis), as binary PLY."""
    import matplotlib
    import open3d as o3d

    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
    pc.colors = o3d.utility.Vector3dVector(matplotlib.colormaps["viridis"](prob)[:, :3])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "surface.ply"
        if not o3d.io.write_point_cloud(str(path), pc, write_ascii=False):
            raise RuntimeError("open3d could not write the surface point cloud")
        return path.read_bytes()


def predict_rows(pipe, net, items: list[Protein]) -> list[dict]:
    """Per protein: predictions/<name>_pockets.csv (ranked centres), <name>_mask.npy + .json (the top pocket's
    voxels and where they lie), <name>_surface.ply (the surface coloured by P), figures/pockets_<name>.png."""
    m, g = pipe.m, pipe.m.grid
    cands = pipe.candidates(m.predict.candidates)
    rows = []
    for i, p in enumerate(items):
        boxes = pipe.ranked_boxes(net, p, cands, max(5, len(p.ligands) + 2))
        ranked = [{"rank": r + 1, **dict(zip(("x", "y", "z"), map(float, b["centre"] if b["centre"] is not None
                                                                  else b["box"]), strict=True)),
                   "score": b["score"], "mean_pv": b["mean_pv"], "voxels": int(b["mask"].sum()),
                   "box_x": float(b["box"][0]), "box_y": float(b["box"][1]), "box_z": float(b["box"][2])}
                  for r, b in enumerate(boxes)]
        ctx = pipe.ctx
        ctx.write_csv(f"predictions/{p.name}_pockets.csv", ranked)
        if boxes:
            ctx.write_npy(f"predictions/{p.name}_mask.npy", boxes[0]["mask"].astype(np.uint8))
            ctx.write_json(f"predictions/{p.name}_mask.json",
                           {"origin": geo.origin(boxes[0]["box"], g.size, g.spacing).tolist(), "spacing": g.spacing,
                            "size": g.size, "index_order": "x, y, z"})
        pts, prob = surface_probability(p, boxes, g.spacing)
        ctx.write_bytes(f"predictions/{p.name}_surface.ply", ply_bytes(pts, prob))
        if i < m.eval.figures:
            pocket_figure(ctx, f"pockets_{p.name}", p, boxes, g.spacing)
        row = {"protein": p.name, "file": p.item, "atoms": len(p.coords), "pockets": len(boxes),
               **({f"top1_{k}": ranked[0][k] for k in ("x", "y", "z", "score")} if ranked else {}),
               "pockets_csv": f"predictions/{p.name}_pockets.csv", "ply": f"predictions/{p.name}_surface.ply"}
        if p.ligands and ranked:
            top = np.array([[r["x"], r["y"], r["z"]] for r in ranked[:len(p.ligands)]])
            row["dcc_distance"] = float(np.mean([np.min(np.linalg.norm(top - lig.mean(0), axis=1))
                                                 for lig in p.ligands]))
        rows.append(row)
    return rows

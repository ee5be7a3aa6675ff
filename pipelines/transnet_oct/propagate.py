"""Algorithm 1 of the paper (prior-shape propagation), vectorised, and the ``propagate`` stage.

For each pixel p of a neighbour B-scan Q: if |M(p) − Q(p)| ≤ λ, p takes M_L(p). Otherwise windows W = 3, 5, … ≤ Ω
centred on p in M are searched; every neighbour n with |Q(p) − M(n)| ≤ λ votes for M_L(n), and the first window
with any vote decides (argmax of the votes; ties go to the lowest label). No vote up to Ω gives label 0. The
paper's line 7 (v_j = j) is read as v_j = 1, its "range of thresholds" as one tolerance λ, and its unreachable
W_p > Ω branch as the end of the loop (card, "Ambiguities"). Windows are gathered with ``unfold``; pixels outside
the B-scan never match.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def propagate(m, m_labels, q, tolerance: float = 0.04, max_window: int = 11, num_classes: int = 12) -> np.ndarray:
    """Labels of B-scan ``q`` (H, W) propagated from the labelled B-scan ``m`` (H, W) with labels ``m_labels``."""
    mt = torch.as_tensor(np.asarray(m, np.float32))
    qt = torch.as_tensor(np.asarray(q, np.float32))
    lt = torch.as_tensor(np.asarray(m_labels, np.int64))
    h, w = mt.shape
    out = torch.where((mt - qt).abs() <= tolerance, lt, torch.full_like(lt, -1)).flatten()
    for win in range(3, max_window + 1, 2):
        todo = out < 0
        if not todo.any():
            break
        r = win // 2
        vals = F.unfold(F.pad(mt[None, None], (r, r, r, r), value=float("nan")), win)[0]  # (win², H·W)
        labs = F.unfold(F.pad(lt[None, None].float(), (r, r, r, r)), win)[0].long()
        idx = todo.nonzero()[:, 0]
        match = (vals[:, idx] - qt.flatten()[idx]).abs() <= tolerance  # NaN padding never matches
        votes = torch.stack([(match & (labs[:, idx] == c)).sum(0) for c in range(num_classes)])
        found = votes.sum(0) > 0
        out[idx[found]] = votes[:, found].argmax(0)
    return out.clamp(min=0).view(h, w).numpy().astype(np.uint8)


def propagate_reference(m, m_labels, q, tolerance: float = 0.04, max_window: int = 11,
                        num_classes: int = 12) -> np.ndarray:
    """Algorithm 1 pixel by pixel, as written (with the card's corrections): the reference the tests compare with."""
    m, q, ml = np.asarray(m, float), np.asarray(q, float), np.asarray(m_labels, int)
    h, w = m.shape
    out = np.zeros((h, w), np.uint8)
    for y in range(h):
        for x in range(w):
            v = np.zeros(num_classes)
            if abs(m[y, x] - q[y, x]) <= tolerance:
                v[ml[y, x]] = 1
            else:
                for win in range(3, max_window + 1, 2):
                    r = win // 2
                    for yy in range(max(0, y - r), min(h, y + r + 1)):
                        for xx in range(max(0, x - r), min(w, x + r + 1)):
                            if abs(q[y, x] - m[yy, xx]) <= tolerance:
                                v[ml[yy, xx]] += 1
                    if v.sum() > 0:
                        break
            out[y, x] = int(np.argmax(v)) if v.sum() > 0 else 0
    return out


def stack_priors(slices, mid_labels, tolerance: float, max_window: int) -> np.ndarray:
    """The 4 prior maps (uint8 labels) of a 5-B-scan stack (c−2 … c+2, intensities in [0, 1]) from the fovea's
    labels: Q_1, Q_2, Q_3, Q_4 = B-scans c−2, c−1, c+1, c+2."""
    mid = slices[2]
    return np.stack([propagate(mid, mid_labels, slices[i], tolerance, max_window) for i in (0, 1, 3, 4)])


def cached_priors(img, mid, tolerance, max_window, cache_dir) -> np.ndarray:
    """``stack_priors`` through a content-addressed cache under ``<cache>/transnet-oct/`` (key: the sha256 of the
    scaled B-scans, the fovea labels, λ, Ω and a version); about 3.6 s per 256² stack on one CPU thread otherwise,
    which every fold of a leave-one-out would repeat."""
    import hashlib

    from medrun.artifacts import cache

    if cache_dir is None:
        return stack_priors(img, mid, tolerance, max_window)
    h = hashlib.sha256(f"alg1-v1 {tolerance!r} {max_window} {img.shape}".encode())
    h.update(np.ascontiguousarray(img, np.float32).tobytes())
    h.update(np.ascontiguousarray(mid, np.uint8).tobytes())
    path = Path(cache_dir) / "transnet-oct" / f"{h.hexdigest()}.npz"
    try:
        return cache.load_npz(path)["priors"]
    except (OSError, ValueError, KeyError):
        priors = stack_priors(img, mid, tolerance, max_window)
        cache.save_npz(path, priors=priors)
        return priors


def run(pipe) -> dict:
    """The ``propagate`` stage: prior maps of every patient's fovea stack at the B-scans' own size (fovea labels from
    ``prior.mid_label_source``: the ground truth, or a no-prior network's fovea slice), written as
    ``priors/<patient>_prior.nii.gz`` (the volume's grid; the 4 neighbours carry prior labels, every other B-scan
    255), their Dice against the labels where those neighbours are annotated, and a figure per patient."""
    from medrun.datasets import oct_layers
    from medrun.metrics import segmentation as segm

    from .pipeline import minmax

    m, ctx = pipe.m, pipe.ctx
    rows = []
    for p in ctx.track(oct_layers.read(pipe.root()), "propagating"):
        vol, labels, affine, c = oct_layers.load(p)
        model_mid = pipe.mid_labels(vol, c)  # prior.mid_label_source model: the no-prior network's fovea labels
        if model_mid is None and not oct_layers.annotated(labels)[c]:
            from medrun.errors import DataError

            raise DataError(f"{p.labels}: the fovea B-scan {c} is not annotated, so there is nothing to propagate",
                            fix="label the fovea B-scan or set fovea_index in meta.json")
        stack = minmax(vol[c - 2:c + 3])
        mid = labels[c] if model_mid is None else model_mid[0]
        priors = stack_priors(stack, mid, m.prior.tolerance, m.prior.max_window)
        out = np.full(vol.shape, oct_layers.UNANNOTATED, np.uint8)
        for pr, off in zip(priors, (-2, -1, 1, 2), strict=True):
            out[c + off] = pr
        ctx.write_nifti(f"priors/{p.id}_prior.nii.gz", out, affine)
        row = {"patient": p.id, "fovea_index": c}
        for pr, off in zip(priors, (-2, -1, 1, 2), strict=True):
            gt = labels[c + off]
            ok = bool((gt != oct_layers.UNANNOTATED).all())
            row[f"dsc_{off:+d}"] = (segm.multiclass("dice", pr, gt, 12, include_background=True)["mean"]
                                    if ok else float("nan"))
            row[f"exact_{off:+d}"] = float((pr == gt).mean()) if ok else float("nan")
        rows.append(row)
        if len(rows) <= m.eval.overlays:
            pipe.prior_figure(p.id, stack, mid, priors)
    ctx.write_csv("per_case.csv", rows)
    dsc = [v for r in rows for k, v in r.items() if k.startswith("dsc_") and np.isfinite(v)]
    acc = [v for r in rows for k, v in r.items() if k.startswith("exact_") and np.isfinite(v)]
    metrics = {"patients": len(rows), "prior_dsc": float(np.mean(dsc)) if dsc else float("nan"),
               "prior_pixel_accuracy": float(np.mean(acc)) if acc else float("nan"),
               "tolerance": m.prior.tolerance, "max_window": m.prior.max_window,
               "mid_label_source": m.prior.mid_label_source}
    ctx.log(f"priors of {len(rows)} patients: mean Dice against the labels {metrics['prior_dsc']:.4f}, "
            f"pixel accuracy {metrics['prior_pixel_accuracy']:.4f}")
    return metrics

"""Step 3: Algorithm 1 (modified AttFind) with the card's corrections, and success rates (``discover``).

For each class y: X = images of ``discover.split`` with argmax f_φ(x) ≠ y; l = μ_E(x); p0 = softmax(f_φ(D(l)))_y;
for every latent dimension i and value d: l' = copy(l), l'[i] = d (replacement); Δ[x, i, d] = p_y(D(l')) − p0.
Δ̄ = mean over X; the top-K (i, d) by Δ̄ (descending) go to ``topk.csv``. No consistency filter (unlike AttFind).
Success rate of a pair: the fraction of ``success_split`` images not predicted as y whose p_y rises.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import training
from .concept_vae import build_vae
from .pipeline import CLASSES


class DecodeClassify(nn.Module):
    def __init__(self, vae, clf):
        super().__init__()
        self.vae, self.clf = vae, clf

    def forward(self, z):
        return torch.softmax(self.clf(self.vae.decode(z)), 1)


def edited_probs(pred, net, mu: torch.Tensor, values, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(f_φ(D(l'))) for every code of ``mu`` (N, m) with l'[i] = d: (N, m, len(values), C), and p0 (N, C).
    Every class's Δ comes from the same decodes."""
    n, m = mu.shape
    p0 = pred(net, mu)
    out = []
    for a in range(n):
        codes = mu[a].repeat(m * len(values), 1)
        for i in range(m):
            for k, d in enumerate(values):
                codes[i * len(values) + k, i] = d  # replacement, on a fresh copy per (i, d)
        p = torch.cat([pred(net, codes[s:s + batch]) for s in range(0, len(codes), batch)])
        out.append(p.view(m, len(values), -1))
    return (torch.stack(out) if out else torch.zeros(0, m, len(values), p0.shape[-1])), p0


def deltas(pred, net, mu: torch.Tensor, y: int, values, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Δ[x, i, d] for class y and latent codes ``mu`` (N, m): (N, m, len(values)), and p0 (N,)."""
    p, p0 = edited_probs(pred, net, mu, values, batch)
    return (p[..., y] - p0[:, y, None, None]).numpy(), p0[:, y].numpy()


def discover(p) -> dict:
    cfg = p.m.discover
    vae = training.load_weights(build_vae(p.m), p.ctx.parent_file("checkpoints/model.safetensors"))
    clf = p.classifier()
    pred = p.ctx.predictor()
    splits = p.splits()
    size = p.m.vae.size
    net = DecodeClassify(vae.eval(), clf)
    mu, imgs, label = {}, {}, {}
    for split in (cfg.split, cfg.success_split):
        imgs[split] = p.images(p.split_of(splits, split)[: cfg.max_images], size)
        mu[split] = pred(vae, imgs[split])[1] if len(imgs[split]) else torch.zeros(0, p.m.vae.latent)
        label[split] = p.probs(clf, imgs[split]).argmax(1).tolist()  # f_φ's prediction on the real image
    probs = {s: edited_probs(pred, net, mu[s], cfg.values, cfg.batch_size) for s in (cfg.split, cfg.success_split)}
    rows, metrics = [], {}
    for y, cls in enumerate(CLASSES):
        sel = [j for j, k in enumerate(label[cfg.split]) if k != y]
        if not sel:
            continue
        pe, p0 = probs[cfg.split]
        mean = (pe[sel][..., y] - p0[sel][:, y, None, None]).mean(0).numpy()
        p.ctx.write_npy(f"delta_mean_{cls}.npy", mean)
        order = np.argsort(-mean, axis=None)[: cfg.top_k]
        test_sel = [j for j, k in enumerate(label[cfg.success_split]) if k != y]
        pt, q0 = probs[cfg.success_split]
        dt = (pt[test_sel][..., y] - q0[test_sel][:, y, None, None]).numpy() if test_sel else None
        for rank, flat in enumerate(order, 1):
            i, k = np.unravel_index(flat, mean.shape)
            success = float((dt[:, i, k] > 0).mean()) if dt is not None else float("nan")
            rows.append({"class": cls, "rank": rank, "dim": int(i), "value": float(cfg.values[k]),
                         "delta_mean": float(mean[i, k]), "n_images": len(sel), "success_rate": success,
                         "n_success_images": len(test_sel)})
        best = rows[-len(order)]
        metrics[f"best_delta_{cls}"] = best["delta_mean"]
        metrics[f"success_{cls}"] = best["success_rate"]
    p.ctx.write_csv("topk.csv", rows)
    figure(p, net, vae, mu[cfg.split], rows)
    metrics["topk_rows"] = len(rows)
    return metrics


def figure(p, net, vae, mu, rows) -> None:
    """concepts.png: for the best pair of each class, one image decoded before and after setting l[i] = d."""
    best = [r for r in rows if r["rank"] == 1]
    if not best or not len(mu):
        return
    pred = p.ctx.predictor()
    fig = p.ctx.figure("concepts", nrows=2, ncols=len(best), squeeze=False, figsize=(1.6 * len(best), 3.4))
    with torch.no_grad(), fig as (_, ax):
        for c, r in enumerate(best):
            code = mu[:1].clone()
            edited = code.clone()
            edited[0, r["dim"]] = r["value"]
            a, b = (pred(vae.decoder, vae.fc(c).view(1, vae.channels[-1], vae.bottom, vae.bottom))
                    for c in (code, edited))
            ax[0, c].imshow(a[0].permute(1, 2, 0).numpy())
            ax[1, c].imshow(b[0].permute(1, 2, 0).numpy())
            ax[0, c].set_title(f"{r['class']}: l[{r['dim']}]={r['value']:g}", fontsize=7)
            ax[1, c].set_title(f"Δ̄ {r['delta_mean']:+.3f}", fontsize=7)
            ax[0, c].axis("off")
            ax[1, c].axis("off")

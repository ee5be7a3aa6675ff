"""Step 1b: classifier-guided counterfactual trajectories in latent space (card, Eq. 1–2) and the ``generate``
stage.

For a batch of (source image, target) pairs sharing one source's noise:

    z_0 = s·E(x^F);  z_T = sqrt(ᾱ_T)·z_0 + sqrt(1−ᾱ_T)·ε       (T = the first of the last ``guided_steps`` PNDM steps)
    for each guided step t:
        v_t  = the clean latent of the unguided PNDM sampler run from z_t to the end (on a deep copy of the scheduler)
        x̃_t = D(v_t/s) in [0, 1];  L = λ_c·CE(f_φ(x̃_t), y);  g = ∂L/∂v_t / sqrt(ᾱ_t)  (× sqrt(1−ᾱ_t): scale_by_sigma)
        z̃_t = z_t − g;  z_{t−1} = PNDM.step(ε̂(z_t), t, z̃_t)      (ε̂ is the first call of the inner run)
    x^CF = D(z_0/s);  trajectory = [x^F, x̃_T … x̃_1, x^CF]

The gradient flows through D and f_φ only (v_t is detached from the UNet chain). Σ_{t=1..T} t UNet calls per batch.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
import torch.nn.functional as F

from medrun.errors import UsageError

from ..predictor import Forward
from . import ldm as L
from .pipeline import CLASSES, NAMES


class Counterfactuals:
    def __init__(self, p, model: L.Ldm, clf, cfg):
        self.p, self.cfg = p, cfg
        pred = p.ctx.predictor()
        self.dev = pred.device
        self.ldm, self.clf = model.to(self.dev), clf.to(self.dev)
        self.sched_cfg = L.sd_scheduler_cfg(p.m)
        self.unet_calls = 0

    def prompts(self, targets: list[int]) -> list[str]:
        return [f"dermoscopic image of {NAMES[CLASSES[t]]}" if self.cfg.conditional else "" for t in targets]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return ((self.ldm.vae.decode(z / L.SCALE).sample + 1) / 2).clamp(0, 1)

    def run(self, x: torch.Tensor, targets: list[int], lam: float, seed: int):
        """x: one source (1, 3, S, S) in [0, 1]; returns (trajectory (K, T+2, 3, S, S), p_target of x^CF)."""
        cfg, dev = self.cfg, self.dev
        k = len(targets)
        sched = L.scheduler("pndm", self.sched_cfg)
        sched.set_timesteps(cfg.num_inference_steps)
        if cfg.guided_steps >= len(sched.timesteps):
            raise UsageError(f"generate.guided_steps {cfg.guided_steps} is not below the {len(sched.timesteps)} PNDM "
                             "steps", fix="lower guided_steps or raise num_inference_steps")
        tail = [int(t) for t in sched.timesteps[-cfg.guided_steps:]]
        # PNDM (PLMS) takes its first step in two calls, the second at the next timestep again (Heun-like
        # correction), as diffusers' own grid [981, 961, 961, 941, …] does: the tail follows the same pattern
        seq = [tail[0], tail[1], *tail[1:]] if len(tail) > 1 else tail
        y = torch.tensor(targets, device=dev)
        with torch.no_grad():
            z0 = self.ldm.vae.encode(x.to(dev) * 2 - 1).latent_dist.mode() * L.SCALE
            g = torch.Generator().manual_seed(seed)
            eps = torch.randn(z0.shape, generator=g).to(dev)
            z = sched.add_noise(z0, eps, torch.tensor([tail[0]])).repeat(k, 1, 1, 1)
            cond = self.ldm.encode_text(self.prompts(targets))
        alphas = sched.alphas_cumprod.to(dev)
        traj = [x.repeat(k, 1, 1, 1)]
        for i, t in enumerate(tail):
            start = 0 if i == 0 else i + 1
            inner = copy.deepcopy(sched)
            v, eps_hat = z, None
            with torch.no_grad():
                for tj in seq[start:]:
                    e = self.ldm.unet(v, tj, encoder_hidden_states=cond).sample
                    self.unet_calls += 1
                    eps_hat = e if eps_hat is None else eps_hat
                    v = inner.step(e, tj, v).prev_sample
            v = v.detach().requires_grad_(lam > 0)
            with torch.enable_grad():
                xt = self.decode(v)
                if lam > 0:
                    loss = lam * F.cross_entropy(self.clf(xt), y, reduction="sum")
                    grad = torch.autograd.grad(loss, v)[0] / alphas[t].sqrt()
                    if cfg.scale_by_sigma:
                        grad = grad * (1 - alphas[t]).sqrt()
                else:
                    grad = torch.zeros_like(v)
            traj.append(xt.detach().cpu())
            with torch.no_grad():
                z = sched.step(eps_hat, t, z - grad).prev_sample
                if i == 0 and len(seq) > 1:  # the correction half of PNDM's first step
                    z = sched.step(self.ldm.unet(z, seq[1], encoder_hidden_states=cond).sample, seq[1], z).prev_sample
                    self.unet_calls += 1
        with torch.no_grad():
            xcf = self.decode(z)
            p = torch.softmax(self.clf(xcf), 1)[torch.arange(k), y].cpu()
        traj.append(xcf.cpu())
        return torch.stack(traj, 1), p


def targets_of(cfg, label: int) -> list[int]:
    if cfg.targets == "all":
        return [t for t in range(len(CLASSES)) if t != label]
    bad = [t for t in cfg.targets if t not in CLASSES]
    if bad:
        raise UsageError(f"generate.targets: unknown class {bad[0]}", fix=f"use 'all' or some of {', '.join(CLASSES)}")
    return [CLASSES.index(t) for t in cfg.targets if CLASSES.index(t) != label]


def to_png(img: torch.Tensor) -> np.ndarray:
    return (img.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)


def generate_stage(p) -> dict:
    cfg, size = p.m.generate, p.m.finetune_ldm.size
    sources = p.split_of(p.splits(), cfg.split)[: cfg.subset]
    if not sources:
        raise UsageError(f"no images in the {cfg.split} split", fix="pick another generate.split")
    gen = Counterfactuals(p, L.load(p, cfg.finetuned), p.classifier(), cfg)
    rows, index, per_source, grids = [], [], set(), []
    compare = {lam: [] for lam in cfg.compare_lambda}
    t0 = time.perf_counter()
    for n, s in enumerate(p.ctx.track(sources, "counterfactuals")):
        x = p.images([s], size)
        targets = targets_of(cfg, s.label)
        traj, prob = gen.run(x, targets, cfg.lambda_c, p.m.seed + n)
        p.ctx.write_png(f"trajectories/{s.id}/factual.png", to_png(x[0]))
        count = 1
        for j, t in enumerate(targets):
            for step in range(1, traj.shape[1]):
                rel = f"trajectories/{s.id}/{CLASSES[t]}_{step:02d}.png"
                p.ctx.write_png(rel, to_png(traj[j, step]))
                index.append({"image": s.id, "source": CLASSES[s.label], "target": CLASSES[t], "step": step,
                              "file": rel})
                count += 1
            rows.append({"image": s.id, "source": CLASSES[s.label], "target": CLASSES[t], "lambda_c": cfg.lambda_c,
                         "p_target": float(prob[j]), "flipped": int(prob[j] > 0.5)})
        per_source.add(count)
        if n < cfg.grid:
            grids.append((s, targets, traj))
        for lam in compare:
            _, pr = gen.run(x, targets, lam, p.m.seed + n)
            compare[lam] += pr.tolist()
    secs = time.perf_counter() - t0
    p.ctx.write_csv("per_case.csv", rows)
    p.ctx.write_csv("trajectories.csv", index)
    figures(p, grids)
    ptar = [r["p_target"] for r in rows]
    metrics = {"n_sources": len(sources), "n_counterfactuals": len(rows), "lambda_c": cfg.lambda_c,
               "mean_p_target": float(np.mean(ptar)), "flip_ratio": float(np.mean([r["flipped"] for r in rows])),
               "images_per_source": max(per_source), "expected_images_per_source":
               1 + (len(CLASSES) - 1) * (cfg.guided_steps + 1) if cfg.targets == "all" else None,
               "unet_calls": gen.unet_calls, "seconds": round(secs, 2),
               "unet_calls_per_s": round(gen.unet_calls / secs, 2), "images_per_s": round(len(index) / secs, 3)}
    for lam, vals in compare.items():
        metrics[f"mean_p_target_lambda{lam:g}"] = float(np.mean(vals))
        metrics[f"p_target_gain_over_lambda{lam:g}"] = metrics["mean_p_target"] - float(np.mean(vals))
    p.ctx.log(f"{len(rows)} counterfactuals, mean p(target) {metrics['mean_p_target']:.3f}, "
              f"flip ratio {metrics['flip_ratio']:.3f}, {metrics['unet_calls_per_s']} UNet calls/s")
    return metrics


def figures(p, grids) -> None:
    """counterfactual_grid.png (source | one counterfactual per target) and trajectory_<id>.png (every step)."""
    if not grids:
        return
    ncols = 1 + max(len(t) for _, t, _ in grids)
    with p.ctx.figure("counterfactual_grid", nrows=len(grids), ncols=ncols, squeeze=False,
                      figsize=(1.6 * ncols, 1.7 * len(grids))) as (_, ax):
        for r, (s, targets, traj) in enumerate(grids):
            ax[r, 0].imshow(to_png(traj[0, 0]))
            ax[r, 0].set_title(f"{s.id[-4:]} {CLASSES[s.label]}", fontsize=7)
            for j, t in enumerate(targets):
                ax[r, j + 1].imshow(to_png(traj[j, -1]))
                ax[r, j + 1].set_title(f"→ {CLASSES[t]}", fontsize=7)
            for a in ax[r]:
                a.axis("off")
    s, targets, traj = grids[0]
    steps = traj.shape[1]
    with p.ctx.figure(f"trajectory_{s.id}", nrows=len(targets), ncols=steps, squeeze=False,
                      figsize=(1.2 * steps, 1.3 * len(targets))) as (_, ax):
        for j, t in enumerate(targets):
            for k in range(steps):
                ax[j, k].imshow(to_png(traj[j, k]))
                ax[j, k].axis("off")
            ax[j, 0].set_title(f"→ {CLASSES[t]}", fontsize=7, loc="left")


__all__ = ["Counterfactuals", "Forward", "generate_stage", "targets_of"]

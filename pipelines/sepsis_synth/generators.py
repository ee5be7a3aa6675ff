"""The four generators of the sepsis-synth card, all in standardised feature space (median-imputed, z-scored with
the training split's statistics). Each returns ``(x, y, stats)``: ``n_per_class`` rows of class 0 then of class 1.

- ``kdeknn``: the paper's method (Sect. 3.5): a k-NN (scikit-learn, Euclidean) fitted on the real rows; one
  multivariate Gaussian KDE per class (``scipy.stats.gaussian_kde``: full covariance, Scott's bandwidth); candidates
  drawn from each class's KDE are kept only when the k-NN gives them that class, until ``n_per_class`` are kept.
- ``kde``: the same KDEs without the k-NN filter.
- ``smote``: "fully synthetic" SMOTE over both classes (imbalanced-learn's ``SMOTE``, asked for ``n_per_class`` new
  rows per class; only the new rows are returned).
- ``tabddpm``: Gaussian diffusion (diffusers ``DDPMScheduler``, cosine betas, ε-prediction, no clipping) with
  ``models.tabddpm.MLPDiffusion`` conditioned on the class, trained through Lightning on quantile-normal features
  (scikit-learn ``QuantileTransformer``, TabDDPM's settings) and sampled class-balanced through the run's predictor.
"""

from __future__ import annotations

import math
import time

import numpy as np

from medrun.errors import DataError


def kde(x: np.ndarray, bandwidth="scott"):
    from scipy.linalg import LinAlgError
    from scipy.stats import gaussian_kde

    try:
        return gaussian_kde(x.T, bw_method=bandwidth)
    except (LinAlgError, ValueError) as e:
        raise DataError(f"cannot fit a KDE to {len(x)} rows of {x.shape[1]} features ({str(e).splitlines()[0]}): a "
                        "feature is constant or a linear combination of others in one class",
                        fix="leave that feature out with dataset.features") from None


def sample_kde(x, y, n_per_class: int, rng: np.random.Generator, bandwidth="scott"):
    t0 = time.perf_counter()
    parts = [kde(x[y == c], bandwidth).resample(n_per_class, seed=rng).T for c in (0, 1)]
    return (*_stack(parts, n_per_class), {"drawn_0": n_per_class, "drawn_1": n_per_class,
                                          "sample_seconds": time.perf_counter() - t0})


def sample_kdeknn(x, y, n_per_class: int, rng: np.random.Generator, *, k: int = 5, bandwidth="scott",
                  batch: int = 2000, max_draws: int = 2_000_000):
    from sklearn.neighbors import KNeighborsClassifier

    t0 = time.perf_counter()
    knn = KNeighborsClassifier(n_neighbors=min(k, len(x))).fit(x, y)
    parts, stats = [], {}
    for c in (0, 1):
        density = kde(x[y == c], bandwidth)
        kept, n_kept, drawn = [], 0, 0
        while n_kept < n_per_class:
            if drawn >= max_draws:
                raise DataError(f"KDE-KNN kept {n_kept} of {drawn} class-{c} candidates, fewer than "
                                f"generate.n_per_class {n_per_class}: the k-NN rarely agrees with this class's KDE",
                                fix="raise generate.max_draws, lower generate.n_per_class, or change generate.knn_k")
            cand = density.resample(batch, seed=rng).T
            drawn += batch
            ok = cand[knn.predict(cand) == c]
            kept.append(ok)
            n_kept += len(ok)
        parts.append(np.concatenate(kept)[:n_per_class])
        stats[f"drawn_{c}"], stats[f"acceptance_{c}"] = drawn, n_kept / drawn
    stats["sample_seconds"] = time.perf_counter() - t0
    return (*_stack(parts, n_per_class), stats)


def sample_smote(x, y, n_per_class: int, seed: int, *, k: int = 5):
    from imblearn.over_sampling import SMOTE

    t0 = time.perf_counter()
    counts = {c: int((y == c).sum()) for c in (0, 1)}
    small = min(counts.values())
    if small < 2:
        raise DataError(f"SMOTE needs at least 2 training rows per class, class counts are {counts}",
                        fix="use a larger training split")
    smote = SMOTE(sampling_strategy={c: n + n_per_class for c, n in counts.items()}, k_neighbors=min(k, small - 1),
                  random_state=seed)
    xr, yr = smote.fit_resample(x, y)
    new_x, new_y = xr[len(x):], yr[len(x):]  # imbalanced-learn appends the new rows after the originals
    parts = [new_x[new_y == c][:n_per_class] for c in (0, 1)]
    return (*_stack(parts, n_per_class), {"drawn_0": n_per_class, "drawn_1": n_per_class,
                                          "sample_seconds": time.perf_counter() - t0})


def _stack(parts, n_per_class: int):
    return np.concatenate(parts).astype(np.float64), np.repeat([0, 1], n_per_class).astype(np.int64)


# -- TabDDPM ---------------------------------------------------------------------------------------------------
def quantile_transformer(x: np.ndarray, seed: int):
    """TabDDPM's numerical normalisation: quantile transform to a normal, n_quantiles = clip(N // 30, 10, 1000)."""
    from sklearn.preprocessing import QuantileTransformer

    return QuantileTransformer(output_distribution="normal", n_quantiles=max(min(len(x) // 30, 1000), 10),
                               subsample=1_000_000_000, random_state=seed).fit(x)


def scheduler(timesteps: int):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=timesteps, beta_schedule="squaredcos_cap_v2", clip_sample=False,
                         prediction_type="epsilon")


def lit_tabddpm(net, cfg):
    """The LightningModule: ε-prediction MSE at uniform timesteps, AdamW, lr annealed linearly to 0."""
    import lightning as L
    import torch
    import torch.nn.functional as F

    class LitTabDDPM(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = net
            self.sched = scheduler(cfg.timesteps)

        def training_step(self, batch, batch_idx):
            x0, y = batch
            noise = torch.randn_like(x0)
            t = torch.randint(0, cfg.timesteps, (len(x0),), device=x0.device)
            loss = F.mse_loss(self.net(self.sched.add_noise(x0, noise, t), t, y), noise)
            self.log("loss", loss, on_step=False, on_epoch=True, prog_bar=True)
            return loss

        def configure_optimizers(self):
            opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            if not cfg.anneal_lr:
                return opt
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / cfg.steps))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return LitTabDDPM()


class _Cycled:
    """The training rows repeated so that one logged epoch holds about ``epoch_steps`` batches."""

    def __init__(self, x, y, length: int):
        self.x, self.y, self.length = x, y, length

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        j = i % len(self.x)
        return self.x[j], self.y[j]

    def __getitems__(self, idx):  # a whole batch at once (the DataLoader's batched fetch), collated by _batch
        import torch

        j = torch.as_tensor(idx) % len(self.x)
        return self.x[j], self.y[j]


def _batch(b):
    return b


def fit_tabddpm(ctx, net, x: np.ndarray, y: np.ndarray, cfg, seed: int):
    """Train the denoiser on the rows (through ``training.make_trainer``, resumable); returns (net, transformer,
    seconds)."""
    import torch

    from .. import training

    t0 = time.perf_counter()
    qt = quantile_transformer(x, seed) if cfg.quantile else None
    q = qt.transform(x) if qt is not None else x
    xs, ys = torch.as_tensor(q, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
    per_epoch = min(cfg.epoch_steps, cfg.steps)
    epochs = math.ceil(cfg.steps / per_epoch)
    data = _Cycled(xs, ys, per_epoch * cfg.batch_size)
    loader = training.ResumableLoader(data, cfg.batch_size, seed, collate_fn=_batch)
    module = lit_tabddpm(net, cfg).train()
    trainer = training.make_trainer(ctx, epochs, max_steps=cfg.steps)
    training.fit(trainer, module, train_dataloaders=loader, ckpt_path=training.resume_checkpoint(ctx.run))
    return module.net, qt, time.perf_counter() - t0


def sample_tabddpm(pred, net, qt, n_per_class: int, d: int, cfg, seed: int, sets: int = 1) -> list:
    """Reverse diffusion from noise for ``sets`` sets of n_per_class rows per class, all sets in one batch (one
    denoiser call per timestep instead of one per set and timestep), every call through the predictor. Returns
    ``[(x, y, stats)]``, one per set."""
    import torch

    t0 = time.perf_counter()
    sched = scheduler(cfg.timesteps)
    sched.set_timesteps(cfg.timesteps)
    g = torch.Generator().manual_seed(seed)
    y = torch.repeat_interleave(torch.tensor([0, 1]), n_per_class).repeat(sets)
    xt = torch.randn(len(y), d, generator=g)
    net = pred.setup(net)
    for t in sched.timesteps:
        eps = pred(net, xt, t.expand(len(y)), y)
        xt = sched.step(eps, t, xt, generator=g).prev_sample
    out = xt.double().numpy()
    if not np.isfinite(out).all():
        raise DataError("TabDDPM sampled non-finite rows", fix="lower generate.tabddpm.lr or raise its steps")
    if qt is not None:
        out = qt.inverse_transform(out)
    per = time.perf_counter() - t0
    n = 2 * n_per_class
    stats = {"drawn_0": n_per_class, "drawn_1": n_per_class, "sample_seconds": per / sets}
    return [(out[k * n:(k + 1) * n], y.numpy()[k * n:(k + 1) * n].astype(np.int64), dict(stats)) for k in range(sets)]

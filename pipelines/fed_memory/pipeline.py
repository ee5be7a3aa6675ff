"""fed-memory: three simulated hospitals train 4-class brain-tumour MRI classifiers with heterogeneous (or identical)
backbones under a common 128-128-4 head, aggregated on Flower after every t-round, while conversational memory
elements (CMEs) record how each client's weights move (card: shared/papers/fed-memory.md).

Choices where the paper is silent or wrong (the card's resolutions, and ours):
- Data: Training and Testing merged into one pool (l. 2585); scenarios 1–2 shuffle it (``dataset.split_seed``) and
  cut equal parts (or ``fed.client_fractions``), 3–4 give every client the whole pool. Each client's share is split
  80/20 stratified (seed ``dataset.split_seed``): accuracy is on the held-out 20 % (the paper has no test split).
  ``dataset.subset`` takes a stratified subset of the pool first (CPU-sized runs).
- Input: resize to ``dataset.img_size`` (224), grey replicated to RGB, ImageNet mean/std, no augmentation.
- Networks (``nets.py``): ResNet50 / DenseNet121 / AlexNet with one skip around conv4–conv5 (the card's resolution),
  pooled features → FC(→128) → ReLU → FC(128→128) → ReLU → FC(128→4); random init unless ``model.weights_dir`` has
  torchvision ImageNet files (read with the safe loader). ``model.arch_set: tiny`` is the card's learning-check set.
- Aggregation (``flower.py``): unweighted mean after every round, broadcast to all. Homogeneous scenarios average every
  state-dict entry (BatchNorm buffers too; ``num_batches_tracked`` from client 1); heterogeneous ones only the head
  layers l−1 and l, the rest stays local. The "ResNet50 server" is a pure aggregator.
- Training: plain per-client loops inside Flower's ``fit`` (the card: Lightning optional; Flower drives the rounds,
  so Lightning's Trainer and its mid-epoch resume are not used; a killed train restarts). Adam 1e-4 (state kept per
  client across rounds), cross-entropy, batch 32, shuffling seeded by (seed, client, round, epoch). Flower's server
  loop runs in this process (``flower.simulate``; Flower's Ray simulation is not installed); ``fed.threads`` = 1 trains
  clients one after another for reproducibility (the paper used 3 parallel threads).
- CMEs (``cme.py``): Eq. 2 with an ε-guard, lag-1 ACF per weight tensor and round, covariance of the 128×128 CME with
  rows as variables. A round's first epoch is measured against the weights just received; the aggregation jump is
  logged separately (``cme/jumps.csv``).
- Own images (``--dataset imagefolder``, the kit's ``OwnImages``): the pool is the class folders (every readable
  format, ``dataset.intensity``), split among the clients as above; the class names go into each client's weights.
- ``predict`` (ours; the paper has none): every client's network scores each unlabelled file of ``predict.input``;
  a row holds each client's class and ``pred``, the class of the clients' mean softmax scores.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from medrun.errors import UsageError

from ..base import Pipeline
from ..tasks import classification as clf
from . import nets


class FedMemory(clf.OwnImages, Pipeline):
    # -- configuration ------------------------------------------------------------------------------------------
    @property
    def homogeneous(self) -> bool:
        return self.m.fed.scenario in (2, 4)

    @property
    def same_data(self) -> bool:
        return self.m.fed.scenario in (3, 4)

    def archs(self) -> list[str]:
        return self.m.client_archs()  # checked against fed.clients when the manifest is validated

    def build_model(self, arch: str | None = None):
        net = nets.ClientNet(arch or self.archs()[0], self.m.model.num_classes)
        if self.m.model.weights_dir:
            net.pretrained_tensors = len(nets.load_imagenet(net, self.m.model.weights_dir))
        return net

    def shared_keys(self, clients_nets) -> list[str]:
        if self.homogeneous:
            return list(clients_nets[0].state_dict())
        states = [n.state_dict() for n in clients_nets]
        for k in nets.HEAD_SHARED:
            shapes = {tuple(s[k].shape) for s in states}
            if len(shapes) != 1:
                raise UsageError(f"head tensor {k} differs in shape across clients ({shapes})",
                                 fix="all clients need the same model.num_classes")
        return list(nets.HEAD_SHARED)

    # -- data ---------------------------------------------------------------------------------------------------
    def trained_classes(self, weights: str = "client1.safetensors") -> list[str]:
        from medrun.datasets.brain_tumor_mri import CLASSES

        return super().trained_classes(weights) if self.own else list(CLASSES)

    def pool(self):
        """The merged pool (samples, uint8 images (N, 3, S, S), labels); sets ``self.classes``."""
        from medrun.datasets import brain_tumor_mri
        from medrun.datasets.images import read_rgb

        if self.own:
            samples, self.classes = self.read_own()
        else:
            samples = brain_tumor_mri.read(self.ctx.data_roots["brain-tumor-mri"])
            self.classes = list(brain_tumor_mri.CLASSES)
        sub = self.m.dataset.subset
        if sub is not None and sub < len(samples):
            _, samples = clf.stratified_split(samples, sub / len(samples), self.m.dataset.split_seed)
        d = self.m.dataset
        x = np.stack([read_rgb(s.path, d.img_size, d.intensity) for s in self.ctx.track(samples, "reading images")])
        return samples, torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.tensor([s.label for s in samples])

    def shares(self, samples) -> list[tuple[list[int], list[int]]]:
        """Per client: (train indices, held-out indices) into the pool."""
        from sklearn.model_selection import StratifiedShuffleSplit

        m, n = self.m, len(samples)
        k = m.fed.clients
        if self.same_data:
            parts = [np.arange(n)] * k
        else:
            order = np.random.default_rng(m.dataset.split_seed).permutation(n)
            frac = np.asarray(m.fed.client_fractions or [1.0] * k, float)
            cuts = np.round(np.cumsum(frac / frac.sum()) * n).astype(int)[:-1]
            parts = np.split(order, cuts)
        labels = np.array([s.label for s in samples])
        out = []
        for c, part in enumerate(parts):
            part = np.sort(part)
            if len(part) < 2 * m.model.num_classes:
                raise UsageError(f"client {c + 1} gets {len(part)} images, too few to split 80/20 by class",
                                 fix="use more data (dataset.subset) or fewer clients")
            try:
                split = StratifiedShuffleSplit(1, test_size=m.dataset.test_fraction, random_state=m.dataset.split_seed)
                a, b = next(split.split(np.zeros(len(part)), labels[part]))
            except ValueError:  # a class with a single image in this share: plain shuffle split
                rng = np.random.default_rng(m.dataset.split_seed + c)
                perm = rng.permutation(len(part))
                cut = max(1, round(len(part) * m.dataset.test_fraction))
                a, b = perm[cut:], perm[:cut]
            out.append((part[np.sort(a)].tolist(), part[np.sort(b)].tolist()))
        return out

    def clients(self, predictor=None, log=None):
        from torch.utils.data import TensorDataset

        from .flower import FedMemoryClient

        m = self.m
        archs = self.archs()
        samples, x, y = self.pool()
        shares = self.shares(samples)
        built = []
        for c, arch in enumerate(archs):
            torch.manual_seed(m.seed * 1009 + c)
            built.append(self.build_model(arch))
        keys = self.shared_keys(built)
        out = [FedMemoryClient(c, net, TensorDataset(x[tr], y[tr]), TensorDataset(x[te], y[te]), keys,
                               epochs=m.train.epochs, batch_size=m.train.batch_size, lr=m.train.lr, seed=m.seed,
                               predictor=predictor, log=log)
               for c, (net, (tr, te)) in enumerate(zip(built, shares, strict=True))]
        return out, samples, shares

    # -- stages -------------------------------------------------------------------------------------------------
    def train(self) -> dict:
        from .. import training
        from .flower import simulate

        ctx, m = self.ctx, self.m
        clients, samples, shares = self.clients(ctx.predictor(), ctx.log)
        ctx.record_splits({f"client{c + 1}_{part}": [samples[i] for i in idx]
                           for c, (tr, te) in enumerate(shares) for part, idx in (("train", tr), ("test", te))})
        t0 = time.perf_counter()
        strategy, history = simulate(clients, m.train.rounds, m.fed.threads)
        seconds = time.perf_counter() - t0

        metrics: dict = {"scenario": m.fed.scenario, "clients": len(clients), "rounds": m.train.rounds,
                         "epochs_per_round": m.train.epochs, "train_seconds": round(seconds, 3),
                         "round_seconds": round(seconds / m.train.rounds, 3)}
        rows, acf_rows, jumps, curves = [], [], [], []
        for c in clients:
            k = c.cid + 1
            last = c.rounds[-1]
            metrics[f"client{k}_arch"] = c.net.arch
            metrics[f"client{k}_accuracy"] = last["local_accuracy"]
            metrics[f"client{k}_broadcast_accuracy"] = last.get("broadcast_accuracy", float("nan"))
            metrics.update({f"client{k}_{n}": v for n, v in training.count_params(c.net).items()})
            if hasattr(c.net, "pretrained_tensors"):
                metrics[f"client{k}_pretrained_tensors"] = c.net.pretrained_tensors
            rows += c.rounds
            curves += c.history
            acf_rows += [{"client": k, "arch": c.net.arch, **r} for r in c.recorder.rows]
            jumps += [{"client": k, **r} for r in c.recorder.jumps]
            archive = np.stack(c.recorder.archive).astype(np.float32)  # (rounds, epochs, 16384)
            ctx.write_npy(f"cme/client{k}.npy", archive)
            training.save_weights(c.net, ctx.path / "checkpoints" / f"client{k}.safetensors",
                                  {"arch": c.net.arch, "client": k, "scenario": m.fed.scenario,
                                   **self.classes_metadata(self.classes)})
        accs = [metrics[f"client{c.cid + 1}_accuracy"] for c in clients]
        metrics["mean_accuracy"] = float(np.mean(accs))
        metrics["mean_broadcast_accuracy"] = float(np.nanmean(
            [metrics[f"client{c.cid + 1}_broadcast_accuracy"] for c in clients]))
        metrics.update(self.checks(clients))
        metrics["acf_rows"] = len(acf_rows)
        ctx.write_csv("rounds.csv", rows)
        ctx.write_csv("history.csv", curves)
        ctx.write_csv("cme/acf.csv", acf_rows)
        ctx.write_csv("cme/jumps.csv", jumps)
        ctx.write_json("aggregation.json", {"shared": clients[0].keys if not self.homogeneous else "all state-dict "
                                            "entries", "weighting": "equal", "rounds": len(strategy.aggregates),
                                            "flower_history_fit": history.metrics_distributed_fit,
                                            "flower_history_eval": history.metrics_distributed})
        from .visualize import curves_figure

        curves_figure(ctx, rows)
        ctx.write_text("paper.md", self.paper_page(metrics, [c.net.arch for c in clients]))
        return metrics

    def checks(self, clients) -> dict:
        """The card's structural smoke checks, as 0/1 metrics."""
        from . import cme

        states = [c.net.state_dict() for c in clients]
        keys = clients[0].keys

        def same(a, b, names):
            return all(a[n].shape == b[n].shape and torch.equal(a[n], b[n]) for n in names)

        shared = all(same(states[0], s, keys) for s in states[1:])
        full = all(set(s) == set(states[0]) and same(states[0], s, list(states[0])) for s in states[1:])
        back = [n for n in states[0] if n.startswith("backbone.")]
        differ = all(not (set(back) <= set(s) and same(states[0], s, back)) for s in states[1:])
        archive = np.stack(clients[0].recorder.archive)
        cov = cme.round_maps(archive[-1:])[0]
        psd = bool(np.allclose(cov, cov.T) and np.linalg.eigvalsh((cov + cov.T) / 2).min() >= -1e-8 * max(
            1.0, float(np.abs(cov).max())))
        shape_ok = all(np.stack(c.recorder.archive).shape == (self.m.train.rounds, self.m.train.epochs, 16384)
                       for c in clients)
        return {"shared_identical": float(shared), "states_identical": float(full), "backbones_differ": float(differ),
                "cme_shape_ok": float(shape_ok), "cov_symmetric_psd": float(psd)}

    def paper_page(self, metrics: dict, archs: list[str], extra: list[str] = ()) -> str:
        from ..report import paper_data, paper_md, paper_note, paper_table

        spec = self.ctx.spec
        want = [] if self.own else paper_data(spec).get("expect", {}).get(self.m.fed.scenario, [])
        expect = {f"client{k + 1}_accuracy": v for k, v in enumerate(want)}
        keys = [*expect, *[f"client{k + 1}_broadcast_accuracy" for k in range(len(archs))], "mean_accuracy"]
        return paper_md(spec, self.m, metrics, self.ctx, expect=expect, table="Table 2", present_only=True,
                        setting=f"scenario {self.m.fed.scenario} ({'same' if self.same_data else 'different'} data, "
                                f"{', '.join(archs)}), {self.m.train.rounds} rounds × {self.m.train.epochs} epochs",
                        keys=keys, sections=[*extra, paper_table(spec, "table2"), paper_note(spec, "comparison")])

    def eval(self) -> dict:
        from ..tasks.classification import scores
        from ..training import load_weights

        ctx = self.ctx
        if ctx.parent is None:
            raise UsageError("fed-memory eval needs the train run (one weights file per client)", fix="pass --run ID")
        clients, samples, shares = self.clients(ctx.predictor())
        metrics, per_case = {"scenario": self.m.fed.scenario}, []
        for c, (_, te) in zip(clients, shares, strict=True):
            k = c.cid + 1
            load_weights(c.net, ctx.parent_file(f"checkpoints/client{k}.safetensors"))
            probs = c.probabilities()
            y = c.test_ds.tensors[1].numpy()
            met, rows = scores(probs, y, [str(samples[i].path) for i in te], self.classes)
            metrics.update({f"client{k}_{n}": met[n] for n in ("accuracy", "f1_macro", "auroc_macro")})
            metrics[f"client{k}_confusion_matrix"] = met["confusion_matrix"]
            per_case += [{"client": k, "arch": c.net.arch, **r} for r in rows]
        metrics["mean_accuracy"] = float(np.mean([metrics[f"client{c.cid + 1}_accuracy"] for c in clients]))
        ctx.write_csv("per_case.csv", per_case)
        from .visualize import confusion_figure

        confusion_figure(ctx, metrics, len(clients), self.classes)
        ctx.write_text("paper.md", self.paper_page(metrics, [c.net.arch for c in clients]))
        return metrics

    def predict(self) -> dict:
        """Every client's network on ``predict.input``; one row per file (see the module's notes)."""
        from medrun.datasets.imagefolder import Sample

        from ..training import load_weights

        ctx, m = self.ctx, self.m
        if ctx.parent is None or not m.predict.input:
            raise UsageError("fed-memory predict needs the train run and the files to classify",
                             fix="pass --run ID and -o predict.input=FOLDER")
        files = ctx.predict_inputs(m.predict.input, self.predict_suffixes())
        classes, pred = self.trained_classes(), ctx.predictor()
        ds = clf.ImageSamples([Sample(p, -1) for p in files], m.dataset.img_size, m.dataset.intensity)
        probs = [clf.predict_probs(load_weights(nets.ClientNet(arch, m.model.num_classes),
                                                ctx.parent_file(f"checkpoints/client{k}.safetensors")),
                                   ds, m.train.batch_size, pred) for k, arch in enumerate(self.archs(), 1)]
        mean = np.mean(probs, axis=0)
        rows = [{"file": str(f), "pred": classes[int(mean[i].argmax())],
                 **{f"prob_{c}": float(mean[i, j]) for j, c in enumerate(classes)},
                 **{f"client{k}_pred": classes[int(p[i].argmax())] for k, p in enumerate(probs, 1)}}
                for i, f in enumerate(files)]
        ctx.write_csv("per_case.csv", rows)
        ctx.log(f"predicted {len(rows)} inputs")
        return {"n": len(rows), "predicted": {c: sum(r["pred"] == c for r in rows) for c in classes}}

    def visualize(self) -> dict:
        from .visualize import run

        return run(self)

    def analyze(self) -> dict:
        from .analyze import run

        return run(self)

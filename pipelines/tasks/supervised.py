"""The supervised template: ``train``, ``eval`` and ``predict`` of a paper that trains one network on labelled
splits, written once.

A paper subclasses :class:`Supervised` and implements the hooks that carry its method:

=====================  ==================================================================================
``build_model()``      the paper's network at the manifest's settings
``splits()``           ``{name: data}`` for train / val / test (record them with ``ctx.record_splits``)
``lit_module(net)``    the LightningModule: loss, optimiser, schedule
``dataset(data, train)``  a torch Dataset of one split (or override ``train_loader`` / ``val_loader``)
``evaluate(net, data)``   ``(metrics, per-case rows)`` of one split, through ``self.predictor``
=====================  ==================================================================================

and optionally ``figures(...)`` (overlays, confusion matrices), ``paper_sections(metrics)`` (the paper's table
and notes for paper.md), ``paper_kwargs(split, metrics)`` (that page's title and expected numbers),
``weights_metadata()``, ``predict_items()`` / ``predict_rows(net, items)``.

What the template does for every paper: the Trainer from the manifest (``training.make_trainer``), exact resume
from ``last.ckpt``, weights as safetensors, learning curves, ``per_case.csv``, ``paper.md`` beside the paper's
numbers, the split check of ``eval`` and the input checks of ``predict``. Inference runs on the manifest's
hardware through :class:`~medrun.pipelines.predictor.Predictor`.
"""

from __future__ import annotations

import time
from functools import cached_property

from .. import training
from ..base import Pipeline
from ..report import paper_md


class Supervised(Pipeline):
    report_split = "test"  # the split a train run scores at its last epoch (the paper's protocol)
    val_split: str | None = "val"  # the split validated during training (learning curves); None: no validation

    # -- hooks a paper implements ------------------------------------------------------------------------------
    def splits(self) -> dict:
        raise TypeError(f"{type(self).__name__} must define splits()")

    def lit_module(self, net):
        raise TypeError(f"{type(self).__name__} must define lit_module(net)")

    def dataset(self, data, train: bool):
        raise TypeError(f"{type(self).__name__} must define dataset(data, train) or its loaders")

    def evaluate(self, net, data) -> tuple[dict, list[dict]]:
        raise TypeError(f"{type(self).__name__} must define evaluate(net, data)")

    def figures(self, net, data, metrics: dict, rows: list[dict], split: str) -> None:
        """Figures of an evaluated split (overlays, confusion matrix …); none by default."""

    def paper_sections(self, metrics: dict) -> list[str]:
        return []

    def paper_kwargs(self, split: str, metrics: dict) -> dict:
        """Extra arguments of ``report.paper_md`` for a train/eval page (``title``, ``expect``, ``table``,
        ``setting``, ``keys``, ``present_only``): e.g. ``expect={}`` where the manifest's ``paper:`` numbers are not
        this network's (the paper reports only an attack or its explanations)."""
        return {}

    def summary_line(self, split: str, metrics: dict) -> str:
        shown = [k for k in (self.m.paper.expect if self.m.paper else {}) if isinstance(metrics.get(k), float)]
        return f"{split}: " + "  ".join(f"{k} {metrics[k]:.4f}" for k in shown or
                                        [k for k, v in metrics.items() if isinstance(v, float)][:4])

    def weights_metadata(self) -> dict:
        return {"pipeline": self.ctx.spec.slug}

    @property
    def epochs(self) -> int:
        return self.m.train.epochs

    def trainer_kwargs(self) -> dict:
        """Extra ``lightning.Trainer`` arguments (gradient clipping, …)."""
        return {}

    # -- loaders -----------------------------------------------------------------------------------------------
    def train_loader(self, splits: dict):
        t = self.m.train
        return training.ResumableLoader(self.dataset(splits["train"], True), t.batch_size, self.m.seed,
                                        num_workers=t.num_workers, persistent_workers=t.num_workers > 0)

    def val_loader(self, splits: dict):
        if self.val_split is None or self.val_split not in splits:
            return None
        from torch.utils.data import DataLoader

        t = self.m.train
        return DataLoader(self.dataset(splits[self.val_split], False), batch_size=t.batch_size, shuffle=False,
                          num_workers=t.num_workers, persistent_workers=t.num_workers > 0)

    @cached_property
    def predictor(self):
        return self.ctx.predictor()

    # -- the stages ----------------------------------------------------------------------------------------------
    def fit(self, splits: dict, net=None, *, checkpoint: bool = True):
        """Train ``net`` (default ``build_model()``) on the splits; resumes this run's ``last.ckpt`` when
        ``checkpoint``. Returns the trained network and the seconds per epoch."""
        # a network evaluated before (e.g. a zero-shot score) is in eval mode, which Lightning keeps: train it
        module = self.lit_module(self.build_model() if net is None else net).train()
        trainer = training.make_trainer(self.ctx, self.epochs, checkpoint=checkpoint, logger=checkpoint,
                                        **self.trainer_kwargs())
        val = self.val_loader(splits)
        t0 = time.perf_counter()
        training.fit(trainer, module, train_dataloaders=self.train_loader(splits),
                     **({"val_dataloaders": val} if val is not None else {}),
                     ckpt_path=training.resume_checkpoint(self.ctx.run) if checkpoint else None)
        return module.net, (time.perf_counter() - t0) / max(1, self.epochs)

    def train(self) -> dict:
        splits = self.splits()
        self.ctx.log(" · ".join(f"{k} {len(v)}" for k, v in splits.items()))
        net, secs = self.fit(splits)
        training.save_weights(net, self.ctx.path / "checkpoints" / "model.safetensors", self.weights_metadata())
        self.ctx.learning_curves()
        extra = self.after_fit()
        metrics = self.report(net, self.report_split, splits[self.report_split])
        metrics.update(extra)
        metrics["secs_per_epoch"] = round(secs, 3)
        metrics.update(training.count_params(net))
        return metrics

    def after_fit(self) -> dict:
        """Metrics read from the finished fit (its logs), before the report; e.g. how far a loss term fell."""
        return {}

    def eval(self) -> dict:
        splits = self.splits()
        return self.report(self.trained_model(), self.m.eval.split, self.split_of(splits))

    def report(self, net, split: str, data) -> dict:
        """Score one split: metrics, ``per_case.csv``, figures, ``paper.md``."""
        metrics, rows = self.evaluate(net, data)
        metrics = {**metrics, "split": split}
        self.ctx.write_csv("per_case.csv", rows)
        self.figures(net, data, metrics, rows, split)
        self.ctx.log(self.summary_line(split, metrics))
        self.ctx.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx,
                                                 sections=self.paper_sections(metrics),
                                                 **self.paper_kwargs(split, metrics)))
        return metrics

    def predict_items(self):
        """What ``predict`` runs on: ``predict.input`` (file, folder or glob) or else the eval split."""
        src = getattr(getattr(self.m, "predict", None), "input", None)
        return self.ctx.predict_inputs(src) if src else self.split_of(self.splits())

    def predict_rows(self, net, items) -> list[dict]:
        raise TypeError(f"{type(self).__name__} must define predict_rows(net, items)")

    def predict_summary(self, rows: list[dict]) -> dict:
        """Metrics of a predict run beyond the count (e.g. predictions per class)."""
        return {}

    def predict(self) -> dict:
        rows = self.predict_rows(self.trained_model(), self.predict_items())
        self.ctx.write_csv("per_case.csv", rows)
        self.ctx.log(f"predicted {len(rows)} inputs")
        return {"n": len(rows), **self.predict_summary(rows)}

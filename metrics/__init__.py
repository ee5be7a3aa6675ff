"""Shared metrics, one module per family. Each metric is a pure function on numpy arrays or torch tensors.

Modules (import the one you need; this package imports nothing heavy):
``classification``, ``segmentation``, ``instance``, ``reconstruction``, ``depth``, ``retrieval``, ``saliency``,
``pockets``, ``privacy``, ``attack``. Accumulating torchmetrics versions for DDP: ``classification.AUROCMetric``,
``segmentation.OverlapMetric`` and ``segmentation.CaseMeanMetric``. Each module's docstring gives the definitions,
the conventions (empty masks, averaging, units) and the cards in ``shared/papers/`` that use them.
"""

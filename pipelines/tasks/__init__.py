"""Task kits: what every pipeline of one kind of task does the same way.

- ``supervised``: the ``Supervised`` template — ``train``/``eval``/``predict`` from a few hooks (model, data per
  split, LightningModule, evaluation, figures), so a paper package overrides only what differs.
- ``classification``: image datasets, stratified splits, the cross-entropy LightningModule, evaluation with the
  shared metrics.
- ``segmentation``: per-case metrics, summaries over cases, overlays, predicted masks at the input's size.

Families added later (generative, retrieval, …) get a module here when two pipelines need the same thing.
"""

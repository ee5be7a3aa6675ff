"""The single-task CNN baseline of the epilepsy-mtl card: one stream of the cross-stitch model (same backbone:
Conv 3→8 k3 → ReLU → BN → MaxPool 3/3 → Conv 8→16 k3 → ReLU → BN → MaxPool 3/3 → Dense(2) → Dropout → Dense(2)),
one task head, trained and scored on one biomarker only.

It keeps the multitask model's interface, ``forward(x_hfo, x_ied) → (logits_hfo, logits_ied)``, so the pipeline's
paired loaders and scoring serve it unchanged: the other task's logits are a constant zero tensor (its
cross-entropy is the constant log 2, with no gradient), and the other input is not read. The stream is registered
under the task's name (``hfo.*`` or ``ied.*``), the same keys as that stream in
:class:`~.crossstitch.CrossStitchNet`. Parameters: 1,576 (1,624 counted as Keras does, with BN running stats).
"""

from __future__ import annotations

import torch
from torch import nn

from .crossstitch import Stream


class SingleTaskCNN(nn.Module):
    TASKS = ("hfo", "ied")
    n_stitch = 0  # no stitch units (what code written for the multitask model asks)

    def __init__(self, task: str = "hfo", dropout: float = 0.8, bn_momentum: float = 0.01):
        super().__init__()
        if task not in self.TASKS:
            raise ValueError(f"task must be 'hfo' or 'ied', not {task!r}")
        self.task = task
        self.add_module(task, Stream(dropout, bn_momentum))
        for m in self.modules():  # Keras defaults, as the multitask model
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def stream(self) -> Stream:
        return getattr(self, self.task)

    def conv_kernels(self) -> list[torch.Tensor]:
        return [m.weight for m in self.modules() if isinstance(m, nn.Conv2d)]

    def forward(self, x_hfo: torch.Tensor, x_ied: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.stream
        logits = s.head(s.block2(s.block1(x_hfo if self.task == "hfo" else x_ied)))
        other = torch.zeros_like(logits).detach()
        return (logits, other) if self.task == "hfo" else (other, logits)

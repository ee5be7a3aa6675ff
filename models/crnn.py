"""A tiny CRNN for text-line recognition with CTC (the icu-vitals card's ``crnn-tiny`` OCR engine, after
Shi et al.'s CRNN as used in PP-OCR's recogniser): a small conv stack that reduces the height of a 32-px crop to 1,
a bidirectional GRU over the width, and a linear layer to the alphabet plus the CTC blank (index 0).

``time_stride`` is how much the conv stack shrinks the width (4 or 8). 8 gives 16 time steps for a 128-px crop:
still two or more per character of a 7-character monitor word, and CTC's alignment search has fewer all-blank
paths to leave, so training escapes its initial plateau in about a third of the steps (icu-vitals' train-ocr).

``decode`` is greedy CTC decoding (collapse repeats, drop blanks)."""

from __future__ import annotations

import torch
from torch import nn


class CRNN(nn.Module):
    def __init__(self, num_chars: int, height: int = 32, widths=(32, 64, 96), hidden: int = 64, in_channels: int = 3,
                 time_stride: int = 4):
        super().__init__()
        if height % 8:
            raise ValueError("height must be a multiple of 8")
        if time_stride not in (4, 8):
            raise ValueError("time_stride must be 4 or 8")
        c, layers = in_channels, []
        pools = [(2, 2), (2, 2), (2, time_stride // 4)]  # height is reduced 8×, width by time_stride
        for w, p in zip(widths, pools, strict=True):
            layers += [
                nn.Conv2d(c, w, 3, padding=1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(p),
            ]
            c = w
        self.cnn = nn.Sequential(*layers)
        self.squash = nn.Conv2d(c, c, (height // 8, 1))  # collapse the remaining height
        self.rnn = nn.GRU(c, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, num_chars + 1)

    def forward(self, x):
        """(B, C, H, W) → log-probabilities (T = W/time_stride, B, num_chars + 1), the layout ``nn.CTCLoss`` takes."""
        f = torch.relu(self.squash(self.cnn(x))).squeeze(2).transpose(1, 2)  # (B, T, C)
        f, _ = self.rnn(f)
        return self.out(f).log_softmax(-1).transpose(0, 1)


def decode(log_probs: torch.Tensor, alphabet: str) -> list[str]:
    """Greedy CTC decoding of (T, B, K) log-probabilities; index 0 is the blank, index i the alphabet's i−1."""
    best = log_probs.argmax(-1).T.tolist()
    out = []
    for seq in best:
        chars, prev = [], 0
        for k in seq:
            if k != prev and k != 0:
                chars.append(alphabet[k - 1])
            prev = k
        out.append("".join(chars))
    return out

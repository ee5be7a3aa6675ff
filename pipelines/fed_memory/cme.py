"""Conversational memory elements (CMEs, card Eq. 1–4) and the card's numeric proxies.

- CME of a weight tensor after epoch i: C_i[k] = (w_i[k] − w_{i−1}[k]) / g(w_i[k]), k = 1..n, where
  g(w) = w if |w| ≥ 1e-8 else sign(w)·1e-8 (sign(0) taken as +1): the paper's Eq. 2 with the card's ε-guard.
- Reference of a round's first epoch: the weights just received from the server; the jump the aggregation made
  (received vs. the client's last local weights) is logged separately (card ambiguity 6).
- Only the analysis layer (``head.fc2.weight``, 128×128 = 16,384 values) is archived in full: (epochs, 16384)
  float32 per round. Every weight tensor (``named_parameters`` order, biases excluded) keeps running scalars per
  round: mean and variance of its CME values, the lag-1 ACF = mean over consecutive epoch pairs and over k of
  C_i[k]·C_{i+1}[k], and that ACF divided by the mean of C_i[k]² over the same pairs (``acf_norm``).
- Covariance map of an epoch: the CME reshaped to the weight's 128×128 (rows = destination neurons) and
  ``np.cov`` with rows as variables (the card's resolution of Eq. 3); a round's map is the mean over its epochs.
- Proxies (ours, not the paper's): stabilisation s_r = ‖Cov_r − Cov_{r−1}‖_F / ‖Cov_{r−1}‖_F, saturation = first r
  with s_r < threshold; ACF stability = mean over layers of the sd of ACF across rounds.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-8


def guard(w: np.ndarray) -> np.ndarray:
    return np.where(np.abs(w) >= EPS, w, np.where(w < 0, -EPS, EPS)).astype(w.dtype, copy=False)


def cme(w_now: np.ndarray, w_prev: np.ndarray) -> np.ndarray:
    """Eq. 2 with the ε-guard, flattened, in float32 (the weights' own precision)."""
    w_now, w_prev = np.asarray(w_now, np.float32).ravel(), np.asarray(w_prev, np.float32).ravel()
    return np.subtract(w_now, w_prev) / guard(w_now)


def tracked(named_params) -> list[str]:
    """The weight tensors a CME follows: ``named_parameters`` order, biases excluded."""
    return [name for name, _ in named_params if not name.endswith("bias")]


class Recorder:
    """Snapshots a client's weights after every local epoch and keeps what the card archives."""

    def __init__(self, names: list[str], analysis: str):
        self.names, self.analysis = list(names), analysis
        self.prev: dict[str, np.ndarray] = {}
        self.rows: list[dict] = []  # per (round, layer): mean, var, acf, acf_norm
        self.jumps: list[dict] = []  # per (round, layer): mean |relative change| at receipt
        self.archive: list[np.ndarray] = []  # one (epochs, n) array per round
        self._round = None

    def start_round(self, rnd: int, weights: dict[str, np.ndarray], local: dict[str, np.ndarray] | None) -> None:
        """``weights``: as received from the server; ``local``: the client's weights before receiving (None first)."""
        if local is not None:
            for li, name in enumerate(self.names):
                c = cme(weights[name], local[name])
                self.jumps.append({"round": rnd, "layer": li, "name": name, "jump_mean_abs": float(np.abs(c).mean())})
        self.prev = {n: np.array(weights[n], np.float32) for n in self.names}
        zeros = dict.fromkeys(self.names, 0.0)
        self._round = {"rnd": rnd, "last": {}, "prod": dict(zeros), "sq": dict(zeros),
                       "pairs": 0, "sum": dict.fromkeys(self.names, 0.0), "sum2": dict.fromkeys(self.names, 0.0),
                       "count": 0, "analysis": [], "last_sq": {}}

    def epoch(self, weights: dict[str, np.ndarray]) -> None:
        r = self._round
        paired = bool(r["last"])
        for name in self.names:  # means accumulate in float64 (np.dot/np.mean with dtype), values stay float32
            c = cme(weights[name], self.prev[name])
            r["sum"][name] += float(c.mean(dtype=np.float64))
            sq = float(np.mean(np.square(c), dtype=np.float64))
            r["sum2"][name] += sq
            if paired:
                last = r["last"][name]
                r["prod"][name] += float(np.mean(last * c, dtype=np.float64))
                r["sq"][name] += r["last_sq"][name]
            r["last"][name] = c
            r["last_sq"][name] = sq
            if name == self.analysis:
                r["analysis"].append(c.copy())
            self.prev[name] = np.array(weights[name], np.float32)
        r["pairs"] += int(paired)
        r["count"] += 1

    def end_round(self) -> None:
        r = self._round
        n, p = r["count"], r["pairs"]
        for li, name in enumerate(self.names):
            mean = r["sum"][name] / n
            acf = r["prod"][name] / p if p else float("nan")
            sq = r["sq"][name] / p if p else float("nan")
            self.rows.append({"round": r["rnd"], "layer": li, "name": name, "mean": mean,
                              "var": r["sum2"][name] / n - mean * mean, "acf": acf,
                              "acf_norm": acf / sq if p and sq > 0 else float("nan")})
        self.archive.append(np.stack(r["analysis"]))
        self._round = None


def covariance(c: np.ndarray, shape: tuple[int, int] = (128, 128)) -> np.ndarray:
    """One epoch's CME reshaped to the weight's (out, in) and ``np.cov`` over rows: (out, out), symmetric PSD."""
    return np.cov(np.asarray(c, np.float64).reshape(shape))


def round_maps(archive: np.ndarray, shape: tuple[int, int] = (128, 128)) -> np.ndarray:
    """(rounds, epochs, n) → (rounds, out, out): per round, the mean of its epochs' covariance maps."""
    return np.stack([np.mean([covariance(c, shape) for c in rnd], axis=0) for rnd in archive])


def stabilisation(maps: np.ndarray) -> np.ndarray:
    """s_r for r = 2..R (our proxy): ‖Cov_r − Cov_{r−1}‖_F / ‖Cov_{r−1}‖_F."""
    return np.array([np.linalg.norm(maps[r] - maps[r - 1]) / max(np.linalg.norm(maps[r - 1]), 1e-30)
                     for r in range(1, len(maps))])


def saturation_round(scores: np.ndarray, threshold: float = 0.05) -> int | None:
    """The first round (1-based, scores start at round 2) whose s_r is below ``threshold``; None if none is."""
    below = np.flatnonzero(np.asarray(scores) < threshold)
    return int(below[0]) + 2 if below.size else None


def acf_stability(acf: np.ndarray) -> float:
    """(rounds, layers) ACF → mean over layers of the sd across rounds (ddof 0; NaN layers left out)."""
    return float(np.nanmean(np.nanstd(np.asarray(acf, np.float64), axis=0)))

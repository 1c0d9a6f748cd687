"""Verification from scores: accuracy, thresholds, and the k-fold protocol of LFW.

Scores are cosine similarities (higher = more alike); a pair is predicted "same" when its score is
>= the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

__all__ = ["accuracy", "best_threshold", "eer_threshold", "KFoldResult", "kfold_accuracy"]


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if s.shape != y.shape or s.size == 0:
        raise InputError(f"scores and labels must be non-empty and equal in length ({s.size} vs {y.size})")
    if not np.all(np.isfinite(s)):
        raise InputError("scores contain NaN or infinity")
    return s, y


def accuracy(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Fraction of pairs whose prediction (score >= threshold) equals the label."""
    s, y = _check(scores, labels)
    return float(np.mean((s >= threshold) == y))


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold of highest accuracy on these pairs: the midpoint between the two sorted scores
    where the best cut falls (ties broken toward the middle of the best run of cuts)."""
    s, y = _check(scores, labels)
    order = np.argsort(s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # cut i puts s_sorted[:i] below the threshold: correct = negatives below + positives above
    neg_below = np.concatenate([[0], np.cumsum(~y_sorted)])
    pos_above = y_sorted.sum() - np.concatenate([[0], np.cumsum(y_sorted)])
    correct = neg_below + pos_above
    # only cuts between distinct scores are realisable
    valid = np.ones(len(s) + 1, bool)
    valid[1:-1] = s_sorted[1:] > s_sorted[:-1]
    correct = np.where(valid, correct, -1)
    best = np.flatnonzero(correct == correct.max())
    i = int(best[len(best) // 2])
    if i == 0:
        return float(s_sorted[0] - 1e-6)
    if i == len(s):
        return float(s_sorted[-1] + 1e-6)
    return float((s_sorted[i - 1] + s_sorted[i]) / 2)


def eer_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(threshold, equal error rate): where false accepts and false rejects are closest."""
    s, y = _check(scores, labels)
    if y.all() or (~y).all():
        raise InputError("the EER needs both matched and mismatched pairs")
    cands = np.unique(s)
    far = np.array([np.mean(s[~y] >= t) for t in cands])
    frr = np.array([np.mean(s[y] < t) for t in cands])
    i = int(np.argmin(np.abs(far - frr)))
    return float(cands[i]), float((far[i] + frr[i]) / 2)


@dataclass(frozen=True)
class KFoldResult:
    """Per-fold accuracies (threshold chosen on the other folds) and the threshold of all pairs."""

    accuracies: np.ndarray
    thresholds: np.ndarray
    threshold_all: float

    @property
    def mean(self) -> float:
        return float(self.accuracies.mean())

    @property
    def std(self) -> float:
        return float(self.accuracies.std())


def kfold_accuracy(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> KFoldResult:
    """The LFW protocol: for each fold, pick the best threshold on the others and test on it."""
    s, y = _check(scores, labels)
    f = np.asarray(folds).ravel()
    if f.shape != s.shape:
        raise InputError("folds must have one entry per pair")
    ids = np.unique(f)
    if len(ids) < 2:
        raise InputError("k-fold accuracy needs at least 2 folds")
    accs, ths = [], []
    for k in ids:
        test = f == k
        t = best_threshold(s[~test], y[~test])
        ths.append(t)
        accs.append(accuracy(s[test], y[test], t))
    return KFoldResult(np.array(accs), np.array(ths), best_threshold(s, y))

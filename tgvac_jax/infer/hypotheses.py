"""Choosing among `num_samples` completions of one video without ground truth.

Two scores, both in [0, 1], computed on the amodal masks:
  coverage   mean over frames with a visible object of |M ∩ Â| / |M|: the amodal mask must contain the visible
             mask (M ⊆ A by definition), so a hypothesis that leaves visible pixels out is provably wrong there;
  stability  mean IoU of consecutive amodal masks (1 for a single frame): the whole object moves smoothly, so
             flicker between frames is a sign of a poor completion.
`coverage` ranks by coverage, then stability; `stability` the other way round; `first` keeps hypothesis 0.
"""

from __future__ import annotations

import numpy as np

CRITERIA = ('coverage', 'stability', 'first')


def coverage(amodal: np.ndarray, visible: np.ndarray) -> float:
  """amodal, visible: (N, H, W) bool."""
  vis = visible.sum(axis=(1, 2))
  hit = (amodal & visible).sum(axis=(1, 2))
  seen = vis > 0
  return float(np.mean(hit[seen] / vis[seen])) if seen.any() else 1.0


def stability(amodal: np.ndarray) -> float:
  if amodal.shape[0] < 2:
    return 1.0
  a, b = amodal[:-1], amodal[1:]
  inter, union = (a & b).sum(axis=(1, 2)), (a | b).sum(axis=(1, 2))
  return float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))


def scores(amodal: np.ndarray, visible: np.ndarray) -> list[dict[str, float]]:
  """amodal (S, N, H, W) for S hypotheses of one video, visible (N, H, W) -> one score dict per hypothesis."""
  return [{'coverage': coverage(a, visible), 'stability': stability(a)} for a in amodal]


def choose(score_list: list[dict[str, float]], criterion: str) -> int:
  if criterion not in CRITERIA:
    raise ValueError(f'select {criterion!r} is not one of {CRITERIA}')
  if criterion == 'first':
    return 0
  other = 'stability' if criterion == 'coverage' else 'coverage'
  return max(range(len(score_list)), key=lambda i: (score_list[i][criterion], score_list[i][other], -i))

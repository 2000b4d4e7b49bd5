"""Amodal mask IoU (paper §4.5, as C2F-Seg and SaVos): the whole amodal mask and its occluded part.

For a frame with visible mask M, predicted amodal mask Â and ground truth A:
  full IoU      |Â ∩ A| / |Â ∪ A|
  occluded IoU  |(Â−M) ∩ (A−M)| / |(Â−M) ∪ (A−M)|
Published numbers disagree on a frame whose union is empty (an unoccluded frame predicted unoccluded): C2F-Seg
computes inter / (union + 1e-6) and so scores it 0, SaVos (inter + 1e-6) / (union + 1e-6) and scores it 1. Both
are kept per frame, and `summary.py` adds the mean over occluded frames only (A−M non-empty), where they agree.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-6
CONVENTIONS = ('c2f', 'savos')   # empty union scores 0 (C2F-Seg) or 1 (SaVos)


def iou(pred: np.ndarray, gt: np.ndarray, convention: str = 'c2f') -> np.ndarray:
  """Per-frame IoU of boolean masks (..., H, W) -> (...) float64, under `convention` for empty unions."""
  if convention not in CONVENTIONS:
    raise ValueError(f'IoU convention must be one of {CONVENTIONS}, got {convention!r}')
  pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
  if pred.shape != gt.shape:
    raise ValueError(f'predicted masks {pred.shape} and ground truth {gt.shape} differ in shape')
  inter = np.count_nonzero(pred & gt, axis=(-2, -1)).astype(np.float64)
  union = np.count_nonzero(pred | gt, axis=(-2, -1)).astype(np.float64)
  return (inter + (EPS if convention == 'savos' else 0.0)) / (union + EPS)


def occluded_iou(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, convention: str = 'c2f') -> np.ndarray:
  """Per-frame IoU of the occluded parts (Â−M) and (A−M) -> (...) float64."""
  visible = np.asarray(visible, bool)
  return iou(np.asarray(pred, bool) & ~visible, np.asarray(gt, bool) & ~visible, convention)


def occlusion_rate(amodal: np.ndarray, visible: np.ndarray) -> np.ndarray:
  """|A−M| / |A| per frame (0 for an empty amodal mask): the share of the object that is hidden."""
  amodal, visible = np.asarray(amodal, bool), np.asarray(visible, bool)
  hidden = np.count_nonzero(amodal & ~visible, axis=(-2, -1))
  area = np.count_nonzero(amodal, axis=(-2, -1))
  return np.where(area > 0, hidden / np.maximum(area, 1), 0.0)

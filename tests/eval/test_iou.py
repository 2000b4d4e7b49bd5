"""Amodal IoU conventions on hand-made masks (every number below is counted by hand)."""

import numpy as np
import pytest

from tgvac_jax.eval.iou import iou, occluded_iou, occlusion_rate


def _mask(rows):
  return np.array([[c == '#' for c in r] for r in rows])


# Frame 0: object 2x4, the right half hidden. Prediction covers 2x3 of it plus one false pixel.
GT0 = _mask(['####', '####', '....'])
VIS0 = _mask(['##..', '##..', '....'])
PRED0 = _mask(['###.', '###.', '#...'])
# Frame 1: not occluded (A = M), predicted exactly: the occluded union is empty.
GT1 = _mask(['.##.', '.##.', '....'])
VIS1 = GT1
PRED1 = GT1
# Frame 2: not occluded, but the prediction adds two pixels: occluded IoU 0 under both conventions.
PRED2 = _mask(['.###', '.###', '....'])
# Frame 3: object out of view (A = M = empty), nothing predicted: even the full union is empty.
EMPTY = np.zeros((3, 4), bool)


def test_full_and_occluded_iou_by_hand():
  pred, gt, vis = np.stack([PRED0, PRED1, PRED2]), np.stack([GT0, GT1, GT1]), np.stack([VIS0, VIS1, VIS1])
  # full: frame 0 inter 6, union 9; frame 1 4/4; frame 2 inter 4, union 6
  np.testing.assert_allclose(iou(pred, gt), [6 / 9, 1, 4 / 6], rtol=1e-6)
  # occluded: frame 0 (Â−M) = 2 pixels (col 2) + 1 (row 2) = 3, (A−M) = 4, inter 2, union 5
  np.testing.assert_allclose(occluded_iou(pred, gt, vis, 'c2f'), [2 / 5, 0, 0], atol=1e-6)
  np.testing.assert_allclose(occluded_iou(pred, gt, vis, 'savos'), [2 / 5, 1, 0], atol=1e-6)
  np.testing.assert_allclose(occlusion_rate(gt, vis), [0.5, 0, 0])


def test_empty_union_conventions():
  assert iou(EMPTY, EMPTY, 'c2f') == 0.0
  assert iou(EMPTY, EMPTY, 'savos') == 1.0
  assert occlusion_rate(EMPTY, EMPTY) == 0.0


def test_errors():
  with pytest.raises(ValueError, match='convention'):
    iou(GT0, GT0, 'mean')
  with pytest.raises(ValueError, match='differ in shape'):
    iou(GT0, GT0[:2])

"""Per-frame records: masks only, chunked networks equal to one call, mismatched shapes."""

import numpy as np
import pytest

from tgvac_jax.eval.amodal_root import GroundTruth, Prediction
from tgvac_jax.eval.evaluate import Scorers, evaluate_video


def _truth(n=5):
  amodal = np.zeros((n, 8, 8), bool)
  amodal[:, 2:6, 2:6] = True
  visible = np.zeros_like(amodal)
  for t in range(n):
    visible[t, 2:6, 2:2 + t] = True  # occlusion 1 - t/4: frames 0-2 hard, 3-4 easy
  objects = np.random.default_rng(0).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
  return GroundTruth('v', [f'{t}' for t in range(n)], visible, amodal, objects)


def test_masks_only_and_splits():
  truth = _truth()
  recs = evaluate_video(truth, Prediction(truth.amodal, None))
  assert [r['split'] for r in recs] == ['hard', 'hard', 'hard', 'easy', 'easy']
  assert [r['occlusion_rate'] for r in recs] == [1.0, 0.75, 0.5, 0.25, 0.0]
  assert [r['iou_occ_c2f'] for r in recs] == pytest.approx([1, 1, 1, 1, 0])  # frame 4: nothing hidden
  assert recs[4]['iou_occ_savos'] == pytest.approx(1) and recs[4]['occluded'] is False
  assert all(r['lpips'] is None and r['tc'] is None for r in recs)


def test_chunks_pad_the_tail():
  """Networks see fixed chunks of 2; the result equals a per-frame computation."""
  truth = _truth()
  calls = []

  def lpips(x, y):
    calls.append(len(x))
    return np.abs(x.astype(float) - y).mean((1, 2, 3))

  def embed(x):
    calls.append(len(x))
    return x.reshape(len(x), -1).astype(float)

  pred = Prediction(truth.amodal, truth.objects[::-1].copy())
  recs = evaluate_video(truth, pred, Scorers(lpips, embed, 'test', chunk=2))
  assert set(calls) == {2}
  np.testing.assert_allclose([r['lpips'] for r in recs],
                             np.abs(pred.objects.astype(float) - truth.objects).mean((1, 2, 3)))
  e = pred.objects.reshape(5, -1).astype(float)
  e /= np.linalg.norm(e, axis=-1, keepdims=True)
  assert recs[0]['tc'] is None
  np.testing.assert_allclose([r['tc'] for r in recs[1:]], (e[1:] * e[:-1]).sum(-1))
  assert recs[4]['psnr_occ'] is None and recs[0]['psnr_occ'] is not None  # frame 4 has no hidden region


def test_shape_mismatch():
  truth = _truth()
  with pytest.raises(ValueError, match='predicted masks'):
    evaluate_video(truth, Prediction(truth.amodal[:, :4], None))

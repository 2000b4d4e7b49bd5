"""The amodal root layout: write/read round trip, palette vs binary masks, RGBA over white, frame checks."""

import numpy as np
import pytest
from PIL import Image

from tgvac_jax.eval import amodal_root as R


def _video(n=3):
  rng = np.random.default_rng(0)
  amodal = np.zeros((n, 8, 10), bool)
  amodal[:, 2:6, 1:8] = True
  visible = amodal & (np.arange(10) < 5)
  objects = np.where(amodal[..., None], rng.integers(0, 256, (n, 8, 10, 3)), 255).astype(np.uint8)
  return rng.integers(0, 256, (n, 8, 10, 3), dtype=np.uint8), visible, amodal, objects


def test_round_trip(tmp_path):
  frames, visible, amodal, objects = _video()
  R.write_sequence(tmp_path, 'seq', frames, visible, amodal, objects)
  assert R.sequences(tmp_path) == ['seq'] and R.has_objects(tmp_path)
  truth = R.read_ground_truth(tmp_path, 'seq')
  assert truth.stems == ['00000', '00001', '00002']
  np.testing.assert_array_equal(truth.visible, visible)
  np.testing.assert_array_equal(truth.amodal, amodal)
  np.testing.assert_array_equal(truth.objects, objects)
  assert R.read_ground_truth(tmp_path, 'seq', object_id=2).amodal.sum() == 0  # palette masks hold id 1 only


def test_masks_and_objects(tmp_path):
  labels = np.array([[0, 1, 2], [2, 2, 0]], np.uint8)
  palette = Image.fromarray(labels)
  palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
  palette.save(tmp_path / 'p.png')
  Image.fromarray(labels * 100).save(tmp_path / 'l.png')  # grayscale: any non-zero pixel
  np.testing.assert_array_equal(R.read_object_mask(tmp_path / 'p.png', 2), labels == 2)
  np.testing.assert_array_equal(R.read_object_mask(tmp_path / 'l.png', 2), labels > 0)
  rgba = np.array([[[10, 20, 30, 255], [10, 20, 30, 0], [0, 0, 0, 51]]], np.uint8)
  Image.fromarray(rgba).save(tmp_path / 'o.png')
  np.testing.assert_array_equal(R.read_object(tmp_path / 'o.png'), [[[10, 20, 30], [255, 255, 255], [204] * 3]])
  (tmp_path / 'bad.png').write_bytes(b'not a png')
  with pytest.raises(ValueError, match='unreadable mask'):
    R.read_object_mask(tmp_path / 'bad.png', 1)


def test_natural_order_and_checks(tmp_path):
  for sub in (R.VISIBLE, R.AMODAL):
    (tmp_path / sub / 's').mkdir(parents=True)
    for t in (1, 2, 10):
      Image.fromarray(np.ones((4, 4), np.uint8)).save(tmp_path / sub / 's' / f'f{t}.png')
  assert R.stems(tmp_path / R.AMODAL / 's') == ['f1', 'f2', 'f10']
  with pytest.raises(FileNotFoundError, match=r'predictions missing for 1 sequence\(s\): s \(absent\)'):
    R.check_predictions(tmp_path / 'pred', ['s'], tmp_path)
  (tmp_path / 'pred' / 's' / R.PRED_MASKS).mkdir(parents=True)
  Image.fromarray(np.ones((4, 4), np.uint8)).save(tmp_path / 'pred' / 's' / R.PRED_MASKS / 'f1.png')
  with pytest.raises(FileNotFoundError, match=r"s \(missing \['f2', 'f10'\]\)"):
    R.check_predictions(tmp_path / 'pred', ['s'], tmp_path)
  (tmp_path / R.VISIBLE / 's' / 'f10.png').unlink()
  with pytest.raises(ValueError, match=r"frames missing \['f10'\] do not match"):
    R.sequences(tmp_path)
  with pytest.raises(FileNotFoundError, match='not an amodal root'):
    R.sequences(tmp_path / R.VISIBLE)

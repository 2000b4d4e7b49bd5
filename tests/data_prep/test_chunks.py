"""Staged chunks: an exact round trip of encoded records, and a planted pickle in a work folder is refused, not run."""

import os

import numpy as np
import pytest

from data_prep import chunks
from tgvac_jax.data import schema


def _example(seed):
  rng = np.random.default_rng(seed)
  arrays = dict(occluded=rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8),
                amodal=rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8),
                visible_mask=rng.random((3, 8, 8)) < 0.3, amodal_mask=rng.random((3, 8, 8)) < 0.5,
                occluder_mask=rng.random((3, 8, 8)) < 0.2)
  meta = dict(caption='a ünïcode dog', source='davis', video_id='v/1', class_name='dog', occluder_video_id='v2',
              difficulty='hard', object_id=2, occluder_object_id=1, source_num_frames=40, frame_indices=[4, 5, 6],
              occluder_frame_indices=[0, 1, 2], occlusion_rate=[0.5, 0.6, 0.7], coverage=0.8, object_size=0.1)
  return schema.encode_record(arrays, meta, 'jpeg', 90, 'png')


def test_round_trip_is_exact(tmp_path):
  examples = [('v/1/2/0', _example(0)), ('v/1/2/1', _example(1))]
  meta = [{'key': k, 'split': 'train', 'occlusion_rate': [0.1]} for k, _ in examples]
  path = str(tmp_path / 'c.npz')
  chunks.write(path, {'video_id': 'v/1', 'split': 'train', 'examples': examples, 'meta': meta,
                      'skips': [{'where': 'v/1', 'why': 'x'}]})
  assert os.listdir(tmp_path) == ['c.npz']  # the temporary sibling was renamed
  split, got = chunks.read_examples(path)
  assert split == 'train' and [k for k, _ in got] == [k for k, _ in examples]
  for (_, g), (_, w) in zip(got, examples):
    assert list(g) == list(w)  # field order kept: TFDS serializes in dict order
    for k in w:
      assert type(g[k]) is type(w[k]), k
      if isinstance(w[k], np.ndarray):
        assert g[k].dtype == w[k].dtype and g[k].shape == w[k].shape, k
      np.testing.assert_array_equal(g[k], w[k])
  assert chunks.read_header(path) == {'video_id': 'v/1', 'split': 'train', 'meta': meta,
                                      'skips': [{'where': 'v/1', 'why': 'x'}], 'keys': ['v/1/2/0', 'v/1/2/1']}
  empty = str(tmp_path / 'e.npz')
  chunks.write(empty, {'video_id': 'e', 'split': 'validation', 'examples': [], 'meta': [], 'skips': []})
  assert chunks.read_examples(empty) == ('validation', [])


class _Payload:
  def __reduce__(self):
    return (os.mkdir, (_Payload.target,))


def test_planted_pickle_is_refused(tmp_path):
  """Someone with write access to a shared work folder replaces a chunk with one holding a pickled object."""
  path = str(tmp_path / 'c.npz')
  chunks.write(path, {'video_id': 'v', 'split': 'train', 'examples': [('k', _example(0))], 'meta': [], 'skips': []})
  _Payload.target = str(tmp_path / 'pwned')
  with np.load(path) as z:
    arrays = dict(z)
  arrays['0.occluded'] = np.array([_Payload()], dtype=object)
  with open(path, 'wb') as f:
    np.savez(f, **arrays)
  with pytest.raises(ValueError, match='allow_pickle'):
    chunks.read_examples(path)
  assert not os.path.exists(_Payload.target)
  with np.load(path, allow_pickle=True) as z:  # the payload is real: a pickle-reading loader would have run it
    z['0.occluded']
  assert os.path.isdir(_Payload.target)

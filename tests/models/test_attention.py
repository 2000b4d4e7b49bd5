"""The CPU attention paths: the blocked one equals jax.nn.dot_product_attention (values and gradients, masks,
causal, padded blocks); `path()` takes the fused kernel or the blocked path only on CPU; the VAE mid-block and
CLIP vision take them and their outputs still match diffusers/transformers. The kernel's own checks are in
test_cpu_attention.py."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'convert'))

import tiny_sd  # noqa: E402
from convert import clip as convert_clip  # noqa: E402
from convert import vae as convert_vae  # noqa: E402
from tgvac_jax.models import attention, cpu_attention  # noqa: E402

BLK = attention.CPU_QUERY_BLOCK


def _qkv(b, t, s, c, seed=0):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.standard_normal((b, n, c), np.float32)) for n in (t, s, s))


def _plain(q, k, v, heads, **kw):
  """jax.nn.dot_product_attention on (B, T, H, D), outside `attend`."""
  sh = lambda x: x.reshape(*x.shape[:2], heads, -1)  # noqa: E731
  out = jax.nn.dot_product_attention(sh(q), sh(k), sh(v), implementation='xla', **kw)
  return out.reshape(q.shape)


@pytest.mark.parametrize('t,s,mask,causal', [
    (2 * BLK, 300, False, False),      # whole blocks, keys of any length
    (257, 257, True, False),           # CLIP vision length: padded, near-equal blocks; key padding mask
    (300, 300, True, True),            # CLIP text style: causal and padding mask together
    (40, 40, False, True),             # one block
])
def test_blocked_equals_dot_product_attention(t, s, mask, causal):
  q, k, v = _qkv(2, t, s, 24)
  m = None
  if mask:
    keep = np.ones((2, s), bool)
    keep[1, s // 3:] = False  # the second sequence is padded
    m = jnp.asarray(keep[:, None, None, :])
  got = attention.attend(q, k, v, 3, mask=m, is_causal=causal, implementation='blocked')
  want = _plain(q, k, v, 3, mask=m, is_causal=causal)
  assert got.shape == want.shape == (2, t, 24)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('masked', [False, True])
def test_blocked_gradients(masked):
  """The custom (FlashAttention) backward equals autodiff of the one-shot form, also with padding and causal masks
  and a fully masked row."""
  q, k, v = _qkv(2, 260, 260, 16, seed=1)
  w = jnp.asarray(np.random.default_rng(2).standard_normal((2, 260, 16), np.float32))
  kw = {}
  if masked:
    keep = np.ones((2, 1, 260, 260), bool)
    keep[1, :, :, 100:] = False
    keep[0, :, 7, :] = False  # a row that sees nothing: uniform weights, as dot_product_attention gives
    kw = dict(mask=jnp.asarray(keep), is_causal=True)
  loss = lambda f: lambda q, k, v: jnp.sum(w * f(q, k, v))  # noqa: E731
  got = jax.grad(loss(lambda q, k, v: attention.attend(q, k, v, 2, implementation='blocked', **kw)), (0, 1, 2))(
      q, k, v)
  want = jax.grad(loss(lambda q, k, v: _plain(q, k, v, 2, **kw)), (0, 1, 2))(q, k, v)
  for g, r in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('mask_kind', [None, 'per_batch', 'shared'])
def test_batch_groups_equal_one_pass(monkeypatch, mask_kind):
  """With score blocks over `CPU_GROUP_BYTES` the batch is split into groups (5 -> 2, 2, 1); values and gradients
  still equal the one-shot form, with a per-example mask sliced with its group and a shared one passed whole."""
  calls = []
  group = attention._blocked_group  # pylint: disable=protected-access
  monkeypatch.setattr(attention, '_blocked_group', lambda q, *a, **kw: calls.append(q.shape[0]) or group(q, *a, **kw))
  monkeypatch.setattr(attention, 'CPU_GROUP_BYTES', 1)
  q, k, v = _qkv(5, 70, 70, 16, seed=3)
  kw = {}
  if mask_kind == 'per_batch':
    keep = np.ones((5, 1, 70, 70), bool)
    keep[3, :, :, 30:] = False
    kw['mask'] = jnp.asarray(keep)
  elif mask_kind == 'shared':
    kw['mask'] = jnp.asarray(np.tril(np.ones((70, 70), bool)))  # (Tq, Tk): broadcast over batch and heads
  w = jnp.asarray(np.random.default_rng(4).standard_normal((5, 70, 16), np.float32))
  loss = lambda f: lambda q, k, v: jnp.sum(w * f(q, k, v))  # noqa: E731
  ours = lambda q, k, v: attention.attend(q, k, v, 2, implementation='blocked', **kw)  # noqa: E731
  np.testing.assert_allclose(np.asarray(ours(q, k, v)), np.asarray(_plain(q, k, v, 2, **kw)), rtol=1e-5, atol=1e-6)
  assert calls == [2, 2, 1]
  got = jax.grad(loss(ours), (0, 1, 2))(q, k, v)
  want = jax.grad(loss(lambda q, k, v: _plain(q, k, v, 2, **kw)), (0, 1, 2))(q, k, v)
  for g, r in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4, atol=1e-5)


def test_bf16_output_dtype():
  q, k, v = (x.astype(jnp.bfloat16) for x in _qkv(1, 2 * BLK, 2 * BLK, 16))
  got = attention.attend(q, k, v, 2, implementation='blocked')
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(_plain(q, k, v, 2), np.float32), atol=2e-2)


def test_path_by_default(monkeypatch):
  """CPU: the kernel for float32 without mask on one device (short sequences too, with heads up to
  CPU_KERNEL_SHORT_MAX_WIDTH wide), else the blocked path for >= CPU_MIN_QUERIES queries; one shot below that,
  and always on GPU/TPU."""
  assert jax.default_backend() == 'cpu'
  q, k, v = _qkv(1, 1024, 77, 64)
  short = next(_qkv(1, attention.CPU_MIN_QUERIES - 1, 8, 2 * attention.CPU_KERNEL_SHORT_MAX_WIDTH))
  causal = dict(is_causal=True)
  monkeypatch.setattr(jax, 'device_count', lambda *a: 1)
  kernel = 'kernel' if cpu_attention.available() else 'blocked'  # built with the machine's C++ compiler
  assert attention.path(None, q, k, v, 1) == kernel
  assert attention.path(None, q, k, v, 2, **causal) == 'blocked'
  assert attention.path(None, q, k, v, 2, mask=jnp.ones((1, 1, 1024, 77), bool)) == 'blocked'
  assert attention.path(None, *(x.astype(jnp.bfloat16) for x in (q, k, v)), 2) == 'blocked'
  assert attention.path(None, short, short, short, 2) == ('kernel' if kernel == 'kernel' else None)
  assert attention.path(None, short, short, short, 1) is None  # heads too wide: one shot
  vae = next(_qkv(1, 1024, 1024, 512))  # SD-1.5's VAE mid-block: one head of 512 over 1024 keys
  assert attention.path(None, vae, vae, vae, 1) == 'blocked'
  assert attention.path(None, vae, vae, vae, 512 * 1024 * 4 // attention.CPU_KERNEL_MAX_PAIR_FLOATS) == kernel
  monkeypatch.setattr(cpu_attention, 'available', lambda: False)  # no compiler
  assert attention.path(None, q, k, v, 2) == 'blocked'
  assert attention.path(None, short, short, short, 8) is None
  monkeypatch.undo()
  assert jax.device_count() == 8 and attention.path(None, q, k, v, 2) == 'blocked'  # a mesh: XLA partitions it
  assert attention.path('xla', q, k, v, 2) is None and attention.path('cudnn', q, k, v, 2) is None
  assert attention.path('blocked', short, short, short, 1) == 'blocked'
  assert attention.path('kernel', short, short, short, 1) == 'kernel'
  for backend in ('gpu', 'tpu'):
    monkeypatch.setattr(jax, 'default_backend', lambda b=backend: b)
    assert attention.path(None, q, k, v, 2) is None
  with pytest.raises(ValueError, match="'flash'.*choose from"):
    attention.path('flash', q, k, v, 2)
  with pytest.raises(ValueError, match='without mask or causality.*is_causal=True'):
    attention.path('kernel', q, k, v, 2, **causal)


@pytest.fixture(params=['kernel', 'blocked'])
def spy(request, monkeypatch):
  """Records the path of every attention traced that is not one-shot, with the kernel taken by default (one
  device) or not available."""
  monkeypatch.setattr(jax, 'device_count', lambda *a: 1)
  if request.param == 'kernel' and not cpu_attention.available():
    pytest.skip('no C++ compiler to build the kernel')
  if request.param == 'blocked':
    monkeypatch.setattr(cpu_attention, 'available', lambda: False)
  seen = []
  real = attention.path

  def wrapped(implementation, q, *a, **kw):
    chosen = real(implementation, q, *a, **kw)
    if chosen:
      seen.append(chosen)
    return chosen
  monkeypatch.setattr(attention, 'path', wrapped)
  return request.param, seen


def _rel(ours, theirs):
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  return np.linalg.norm(ours - theirs) / np.linalg.norm(theirs)


def test_vae_mid_block_uses_it_and_matches_diffusers(spy):
  ref = tiny_sd.vae_model(seed=1)
  ours, _ = convert_vae.from_torch(ref.state_dict(), dict(ref.config))
  x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)  # 16x16 latent: 256 tokens
  with torch.no_grad():
    post = ref.encode(torch.from_numpy(x)).latent_dist
    recon = ref.decode(post.mean).sample.numpy()
  mean, y = jax.jit(lambda m, x: (m.encode(x).mean, m.decode(m.encode(x).mean)))(ours, jnp.asarray(x.transpose(0, 2, 3, 1)))
  assert spy[1] == [spy[0]] * 3  # encoder (twice) and decoder mid-block
  assert _rel(mean, post.mean.numpy().transpose(0, 2, 3, 1)) <= 1e-5
  assert _rel(y, recon.transpose(0, 2, 3, 1)) <= 1e-5


def test_clip_vision_uses_it_and_matches_transformers(spy):
  ref = tiny_sd.vision_model(seed=3, patch_size=2)  # 16x16 patches + class token: 257 tokens
  tiny_sd._perturb(ref)  # pylint: disable=protected-access
  ours, _ = convert_clip.from_torch(ref.state_dict(), ref.config.to_dict())
  x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
  with torch.no_grad():
    t = ref(torch.from_numpy(x))
  o = jax.jit(lambda m, x: m(x))(ours, jnp.asarray(x.transpose(0, 2, 3, 1)))
  assert spy[1] == [spy[0]] * 2  # both layers
  assert _rel(o.last_hidden_state, t.last_hidden_state.numpy()) <= 1e-5
  assert _rel(o.image_embeds, t.image_embeds.numpy()) <= 1e-5

"""The direct CPU conv kernel against lax.conv_general_dilated and its autodiff: values and both gradients over the
shapes that stress its tiling (output channels not a whole register tile, rows shorter than a tile, positions past
the last whole tile, asymmetric and zero padding, 2x2 and 1x1 kernels); `resnet.conv2d` takes it on one CPU device
for 32x32 maps and not for 16x16 ones, and a ResNet block and a sub-pixel upsample give what they give without it; a frozen conv's weight gradient is
never computed; a machine without a compiler gets XLA's lowering and one warning."""

import os
import shlex
import shutil
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tgvac_jax.models import cpu_conv, resnet


@pytest.fixture(autouse=True, scope='module')
def built():
  if not shutil.which(shlex.split(os.environ.get('CXX', 'g++'))[0]):
    pytest.skip('no C++ compiler on this machine (convs take XLA\'s lowering)')
  assert cpu_conv.available(), 'the kernel did not build on a machine with a C++ compiler'


def _lax(x, kernel, padding):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _rel(a, b):
  return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


@pytest.mark.parametrize('n,h,w,cin,cout,k,padding', [
    (2, 9, 7, 32, 48, 3, ((1, 1), (1, 1))),    # 3 channel vectors: no whole 4-vector tile
    (1, 8, 8, 64, 80, 3, ((0, 2), (1, 0))),    # asymmetric padding; 80 = one 4-vector tile and one vector
    (3, 5, 6, 16, 16, 2, ((0, 0), (0, 0))),    # the sub-pixel upsample's 2x2 taps, unpadded
    (2, 4, 4, 16, 32, 1, ((0, 0), (0, 0))),    # 1x1
    (1, 3, 2, 32, 128, 3, ((1, 1), (1, 1))),   # rows shorter than a 6-position tile
    (2, 17, 13, 48, 64, 3, ((1, 1), (1, 1))),  # positions past the last whole work item
])
def test_matches_lax_and_its_gradients(n, h, w, cin, cout, k, padding):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((n, h, w, cin), np.float32))
  kernel = jnp.asarray(rng.standard_normal((k, k, cin, cout), np.float32))
  assert cpu_conv.supported(x, kernel, (1, 1), padding)
  ours, vjp = jax.vjp(jax.jit(lambda x, kernel: cpu_conv.conv(x, kernel, padding)), x, kernel)
  ref, ref_vjp = jax.vjp(lambda x, kernel: _lax(x, kernel, padding), x, kernel)
  assert ours.shape == ref.shape
  assert _rel(ours, ref) < 1e-5  # float32 sums of up to 720 products in another order
  dy = jnp.asarray(rng.standard_normal(ref.shape, np.float32))
  for got, want in zip(vjp(dy), ref_vjp(dy)):
    assert got.shape == want.shape
    assert _rel(got, want) < 1e-5


def test_supported():
  x, kernel = jnp.zeros((1, 8, 8, 32)), jnp.zeros((3, 3, 32, 64))
  one = ((1, 1), (1, 1))
  assert cpu_conv.supported(x, kernel, (1, 1), one)
  assert not cpu_conv.supported(x, kernel, (2, 2), one)                             # strided
  assert not cpu_conv.supported(x.astype(jnp.bfloat16), kernel, (1, 1), one)       # not float32
  assert not cpu_conv.supported(x, jnp.zeros((3, 3, 32, 24)), (1, 1), one)          # 24 output channels
  assert not cpu_conv.supported(x[..., :8], jnp.zeros((3, 3, 8, 64)), (1, 1), one)  # 8 input channels
  assert not cpu_conv.supported(x, kernel, (1, 1), ((3, 0), (0, 0)))               # padding past the kernel


def test_frozen_weights_get_no_weight_gradient():
  """The motion stage differentiates only the input of a spatial conv: no convolution is left after XLA's
  dead-code elimination, only the kernel's two calls."""
  x, kernel = jnp.ones((2, 8, 8, 32)), jnp.ones((3, 3, 32, 32))
  grad = jax.jit(jax.grad(lambda x: jnp.sum(cpu_conv.conv(x, kernel, ((1, 1), (1, 1))) ** 2)))
  hlo = grad.lower(x).compile().as_text()
  assert 'convolution(' not in hlo
  assert hlo.count('tgvac_conv') >= 2


@pytest.fixture
def one_device(monkeypatch):
  """Conv2d takes the kernel only on a single device (the test session simulates 8)."""
  monkeypatch.setattr(jax, 'device_count', lambda *a: 1)


def _takes_kernel(fn, *args):
  return 'tgvac_conv' in str(jax.make_jaxpr(lambda *a: fn(*a))(*args))  # a new function: no cached trace


def test_resnet_block_and_upsample_equal_xla_lowering(one_device, monkeypatch):
  block = resnet.ResnetBlock2D(32, 64, temb_channels=None, groups=8, rngs=nnx.Rngs(0))
  up = resnet.Upsample2D(64, 32, rngs=nnx.Rngs(1))
  graphdef, params = nnx.split(nnx.List([block, up]))
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 32, 32, 32), np.float32))  # the kernel's smallest map

  def loss(params, x):
    block, up = nnx.merge(graphdef, params)
    y = up(block(x))
    return jnp.sum(y * jnp.cos(y)), y

  assert _takes_kernel(loss, params, x)
  (_, ours), (dp, dx) = jax.jit(jax.value_and_grad(lambda *a: loss(*a), (0, 1), has_aux=True))(params, x)
  monkeypatch.setattr(cpu_conv, 'available', lambda: False)
  assert not _takes_kernel(loss, params, x)
  (_, ref), (rp, rx) = jax.jit(jax.value_and_grad(lambda *a: loss(*a), (0, 1), has_aux=True))(params, x)
  assert ours.shape == (2, 64, 64, 32)
  assert _rel(ours, ref) < 1e-5
  assert _rel(dx, rx) < 1e-5
  for got, want in zip(jax.tree.leaves(dp), jax.tree.leaves(rp)):
    assert _rel(got, want) < 1e-5


def test_small_maps_take_xla_lowering(one_device):
  kernel = jnp.ones((3, 3, 32, 32))
  conv = lambda x: resnet.conv2d(x, kernel, padding=((1, 1), (1, 1)))  # noqa: E731
  assert _takes_kernel(conv, jnp.ones((1, 32, 32, 32)))
  assert not _takes_kernel(conv, jnp.ones((1, 16, 16, 32)))


def test_no_compiler_means_xla_lowering(monkeypatch, tmp_path, one_device):
  monkeypatch.setenv('TGVAC_JAX_KERNEL_CACHE', str(tmp_path))
  monkeypatch.setenv('CXX', 'no-such-compiler')
  cpu_conv.available.cache_clear()
  try:
    with pytest.warns(UserWarning, match="conv kernel is unavailable, convolutions take XLA's lowering.*no-such"):
      assert not cpu_conv.available()
    x, kernel = jnp.ones((1, 32, 32, 32)), jnp.ones((3, 3, 32, 32))
    with warnings.catch_warnings():
      warnings.simplefilter('error')  # said once
      assert not _takes_kernel(lambda x: resnet.conv2d(x, kernel, padding=((1, 1), (1, 1))), x)
    assert list(tmp_path.iterdir()) == []  # nothing half-built left behind
  finally:
    cpu_conv.available.cache_clear()
    monkeypatch.undo()
    assert cpu_conv.available()

"""The jaxpr FLOP counter (tgvac_jax/compile/flops.py) against hand formulas and against XLA's own count of
programs that are nothing but products (so XLA's elementwise FLOPs cannot hide a difference)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from tgvac_jax.compile.flops import count_traced


def count(fn, *args) -> float:
  return count_traced(jax.jit(fn).trace(*args)).total


def xla_cpu(fn, *args) -> float:
  return jax.jit(fn).lower(*args).compile().cost_analysis()['flops']


def conv(x, w, stride=1, groups=1, padding='SAME', dilation=1):
  return lax.conv_general_dilated(x, w, (stride, stride), padding, rhs_dilation=(dilation, dilation),
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=groups)


def test_dense_and_conv_net_match_the_formula():
  """conv 3x3 SAME -> conv 3x3 stride 2 -> dense, trained: forward, every weight gradient, and the input gradient
  of every layer but the first (nothing needs it: dead code, as XLA would drop it). A 3x3 SAME conv over n
  positions has 3n - 2 taps on data per dimension (the edges lose one each); stride 2 over an even n, padded
  (0, 1), has 3 n/2 - 1."""
  b, h, c1, c2, c3, f = 2, 8, 3, 8, 16, 10
  params = {'w1': jnp.ones((3, 3, c1, c2)), 'w2': jnp.ones((3, 3, c2, c3)), 'w3': jnp.ones((c3 * (h // 2) ** 2, f))}
  x = jnp.ones((b, h, h, c1))

  def net(p, x):
    y = jax.nn.relu(conv(x, p['w1']))
    y = jax.nn.relu(conv(y, p['w2'], stride=2))
    return y.reshape(b, -1) @ p['w3']

  conv1 = 2 * b * c2 * c1 * (3 * h - 2) ** 2
  conv2 = 2 * b * c3 * c2 * (3 * (h // 2) - 1) ** 2
  dense = 2 * b * (c3 * (h // 2) ** 2) * f
  forward = conv1 + conv2 + dense
  assert count(net, params, x) == forward
  step = jax.grad(lambda p, x: (net(p, x) ** 2).sum())
  assert count(step, params, x) == forward + forward + (conv2 + dense)
  # XLA counts the same products plus the elementwise work (relu, the square, the sum): a few percent here
  assert count(step, params, x) == pytest.approx(xla_cpu(step, params, x), rel=0.05)
  assert count(step, params, x) < xla_cpu(step, params, x)


@pytest.mark.parametrize('x_shape, w_shape, stride, groups, padding, dilation', [
    ((2, 8, 8, 4), (3, 3, 4, 6), 1, 1, 'SAME', 1),
    ((2, 9, 9, 4), (3, 3, 4, 6), 2, 1, 'SAME', 1),                  # input gradient: a dilated (transposed) conv
    ((2, 8, 8, 4), (3, 3, 1, 8), 1, 4, 'SAME', 1),                  # grouped: weight gradient has batch groups
    ((2, 10, 10, 4), (3, 3, 2, 6), 2, 2, ((1, 0), (2, 1)), 2),      # all of it, uneven padding, kernel dilation
])
def test_convolution_and_its_gradients_match_xla(x_shape, w_shape, stride, groups, padding, dilation):
  """A conv's forward and its vjp (input and weight gradients, no elementwise op) against XLA's CPU count."""
  x, w = jnp.ones(x_shape), jnp.ones(w_shape)

  def f(x, w):
    return conv(x, w, stride, groups, padding, dilation)

  ct = jnp.ones(jax.eval_shape(f, x, w).shape)

  def backward(x, w, ct):
    return jax.vjp(f, x, w)[1](ct)

  assert count(f, x, w) == xla_cpu(f, x, w)
  assert count(backward, x, w, ct) == xla_cpu(backward, x, w, ct)


def test_scan_remat_and_shard_map():
  """A scan counts its body per step; remat under grad counts the recomputed forward (it runs); shard_map counts
  the global work (its body sees one shard)."""
  a = jnp.ones((8, 16))
  w = jnp.ones((16, 16))
  one = 2 * 8 * 16 * 16
  assert count(lambda a, w: lax.scan(lambda c, _: (c @ w, None), a, None, length=5)[0], a, w) == 5 * one

  def loss(w, a, remat):
    f = (jax.checkpoint if remat else (lambda g: g))(lambda a: jnp.tanh(a @ w) @ w)
    return f(a).sum()
  plain = count(jax.value_and_grad(lambda w, a: loss(w, a, False)), w, a)
  assert plain == 2 * one + 3 * one          # forward; dW of both, dX of the second
  # the backward recomputes the first product (the second's output is not needed for the gradients)
  assert count(jax.value_and_grad(lambda w, a: loss(w, a, True)), w, a) == plain + one

  mesh = Mesh(np.asarray(jax.devices()[:2]), ('x',))
  sharded = jax.shard_map(lambda a, w: a @ w, mesh=mesh, in_specs=(P('x'), P()), out_specs=P('x'))
  assert count(sharded, a, w) == one


@pytest.mark.slow
def test_sd15_unet_and_vae_encoder_match_pytorch_flop_counter():
  """Our SD-1.5 UNet (12 input channels, 32x32 latents = 256 px) and VAE encoder, counted on their jaxprs, against
  diffusers' models under PyTorch's FlopCounterMode on the meta device (shapes only, no weights). PyTorch counts
  every kernel tap, padding included: with `padding_taps` the counts agree; without, the UNet's forward is 6% lower
  (3x3 convs lose 4% of their taps at 32x32, 16% at 8x8, 31% at 4x4)."""
  torch = pytest.importorskip('torch')
  import diffusers  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from torch.utils.flop_counter import FlopCounterMode  # pylint: disable=import-outside-toplevel

  from tgvac_jax import target  # pylint: disable=import-outside-toplevel
  from tgvac_jax.compile import chips, programs  # pylint: disable=import-outside-toplevel
  from tgvac_jax.models import checkpoint  # pylint: disable=import-outside-toplevel
  from tgvac_jax.models.unet import UNetConfig  # pylint: disable=import-outside-toplevel
  from tgvac_jax.models.vae import AutoencoderKLConfig  # pylint: disable=import-outside-toplevel

  configs = programs.sd15_configs(ml_collections.ConfigDict({'data': {'size': 256}}))
  with torch.device('meta'):
    unet = diffusers.UNet2DConditionModel.from_config(UNetConfig.sd15(in_channels=12, sample_size=32).to_dict())
    vae = diffusers.AutoencoderKL.from_config(AutoencoderKLConfig.sd15().to_dict())
    x, t, ctx = torch.empty(1, 12, 32, 32), torch.tensor([10]), torch.empty(1, 77, 768)
    img = torch.empty(1, 3, 256, 256)
    with FlopCounterMode(display=False) as forward:
      unet(x, t, ctx)
    with FlopCounterMode(display=False) as encode:
      vae.encode(img)
  reference = {'unet': forward.get_total_flops(), 'vae': encode.get_total_flops()}

  (unet_graph, unet_params), (vae_graph, vae_params) = (
      nnx.split(checkpoint.build(name, configs[key], abstract=True)[0])
      for name, key in (('UNet2DConditionModel', 'unet'), ('AutoencoderKL', 'vae')))
  ours = {'unet': (lambda p, x, c: nnx.merge(unet_graph, p)(x, jnp.array([10]), c),
                   (unet_params, jax.ShapeDtypeStruct((1, 32, 32, 12), jnp.float32),
                    jax.ShapeDtypeStruct((1, 77, 768), jnp.float32))),
          'vae': (lambda p, x: nnx.merge(vae_graph, p).encode(x).mean,
                  (vae_params, jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32)))}
  with target.compiling_for(chips.devices(chips.parse('v5e-1'))):  # XLA's convolutions, not the CPU kernels
    for name, (fn, args) in ours.items():
      traced = jax.jit(fn).trace(*args)
      assert count_traced(traced, padding_taps=True).total == pytest.approx(reference[name], rel=1e-3)
      assert count_traced(traced).total < 0.99 * reference[name]


def test_remat_adds_at_most_one_forward_to_the_tiny_motion_step():
  """Traced only (seconds): remat's recomputation is in the jaxpr, more of it for remat=full than for remat=motion,
  and never more than one forward pass, which is at most half a training step (the backward is at least as costly).
  The compile job's model FLOPs are the remat=none count."""
  pytest.importorskip('libtpu', reason='the TPU paths are traced for abstract TPU devices')
  from configs import motion  # pylint: disable=import-outside-toplevel
  from tgvac_jax.compile import chips, job, programs  # pylint: disable=import-outside-toplevel
  from tgvac_jax.train.sharding import make_mesh  # pylint: disable=import-outside-toplevel
  devices = chips.devices(chips.parse('v5e-8'))
  counts = {}
  for remat in ('none', 'motion', 'full'):
    c = motion.get_config('tiny')
    job.apply_overrides(c, 'mesh.fsdp=8,data.size=16,data.clip_len=4,model.unet_channels=(32,),model.text_width=32,'
                        f'model.text_layers=1,data.cached_latents=latents/,remat={remat}', 'tiny')
    mesh = make_mesh(c.mesh, devices)
    counts[remat] = count_traced(programs.train_step(c, mesh).trace(mesh)).total
  assert counts['none'] < counts['motion'] < counts['full'] <= 1.5 * counts['none']

"""Our AutoencoderKL against diffusers' (random small models, fp32), plus its API and error cases."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'convert'))

import tiny_sd  # noqa: E402
from convert import vae as convert_vae  # noqa: E402
from convert.rules import ConversionError  # noqa: E402
from tgvac_jax.models.vae import AutoencoderKL, AutoencoderKLConfig  # noqa: E402

TOL = 1e-5


def rel(ours, theirs):
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  return np.linalg.norm(ours - theirs) / np.linalg.norm(theirs)


def nchw(x):
  return np.asarray(x).transpose(0, 3, 1, 2)


def nhwc(x):
  return jnp.asarray(np.asarray(x).transpose(0, 2, 3, 1))


@pytest.fixture(scope='module')
def pair():
  ref = tiny_sd.vae_model(seed=1)
  ours, _ = convert_vae.from_torch(ref.state_dict(), dict(ref.config))
  return ref, ours


@pytest.fixture(scope='module')
def image():
  return np.random.default_rng(0).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)


def test_matches_diffusers(pair, image):
  ref, ours = pair
  with torch.no_grad():
    post = ref.encode(torch.from_numpy(image)).latent_dist
    recon = ref.decode(post.mean).sample.numpy()
  p = ours.encode(nhwc(image))
  assert p.mean.shape == (2, 8, 8, 4)
  assert rel(nchw(p.mean), post.mean.numpy()) <= TOL
  assert rel(nchw(p.logvar), post.logvar.numpy()) <= TOL
  assert rel(nchw(p.std), post.std.numpy()) <= TOL
  assert rel(nchw(ours.decode(p.mean)), recon) <= TOL
  assert rel(nchw(ours(nhwc(image))), recon) <= TOL  # forward = decode(posterior mean)


def test_latent_scaling_and_sampling(pair, image):
  _, ours = pair
  x = nhwc(image)
  p = ours.encode(x)
  np.testing.assert_allclose(ours.encode_latents(x), p.mean * 0.18215, rtol=1e-6)
  key = jax.random.key(3)
  z = p.sample(key)
  eps = jax.random.normal(key, p.mean.shape)
  np.testing.assert_allclose(z, p.mean + p.std * eps, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(ours.encode_latents(x, key), z * 0.18215, rtol=1e-5, atol=1e-7)
  assert not np.allclose(p.sample(jax.random.key(4)), z)
  lat = ours.encode_latents(x)
  np.testing.assert_allclose(ours.decode_latents(lat), ours.decode(lat / 0.18215), rtol=1e-5, atol=1e-6)
  assert p.kl().shape == (2,)


def test_shift_factor():
  cfg = AutoencoderKLConfig(block_out_channels=(8,), norm_num_groups=4, scaling_factor=2.0, shift_factor=0.5)
  m = nnx.eval_shape(lambda: AutoencoderKL(cfg, rngs=nnx.Rngs(0)))  # no parameters needed
  z = jnp.ones((1, 2, 2, 4))
  np.testing.assert_allclose(m.scale_latents(z), (z - 0.5) * 2.0)
  np.testing.assert_allclose(m.unscale_latents(m.scale_latents(z)), z)


def test_legacy_attention_keys(pair, image):
  """diffusers < 0.14 names: query/key/value/proj_attn (linear or 1x1-conv shaped)."""
  ref, ours = pair
  new_to_old = {'to_q': 'query', 'to_k': 'key', 'to_v': 'value', 'to_out.0': 'proj_attn'}
  legacy = {}
  for k, v in ref.state_dict().items():
    for new, old in new_to_old.items():
      if f'.attentions.0.{new}.' in k:
        k = k.replace(f'.attentions.0.{new}.', f'.attentions.0.{old}.')
        if k.endswith('weight') and old == 'query':
          v = v[:, :, None, None]  # conv-shaped
    legacy[k] = v
  assert any('.query.' in k for k in legacy)
  old_model, _ = convert_vae.from_torch(legacy, dict(ref.config))
  np.testing.assert_array_equal(old_model(nhwc(image)), ours(nhwc(image)))


def test_round_trip_exact(pair):
  ref, ours = pair
  sd, config = convert_vae.to_torch(ours)
  theirs = {k: v.numpy() for k, v in ref.state_dict().items()}
  assert sorted(sd) == sorted(theirs)
  for k in sd:
    np.testing.assert_array_equal(sd[k], theirs[k], err_msg=k)
  from diffusers import AutoencoderKL as TorchVAE
  rebuilt = TorchVAE.from_config(config)
  rebuilt.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
  again, _ = convert_vae.from_torch(rebuilt.state_dict(), dict(rebuilt.config))
  for (pa, a), (pb, b) in zip(sorted(nnx.to_flat_state(nnx.state(ours, nnx.Param))),
                              sorted(nnx.to_flat_state(nnx.state(again, nnx.Param)))):
    assert pa == pb
    np.testing.assert_array_equal(a.get_value(), b.get_value())


def test_config_dict_round_trip():
  cfg = AutoencoderKLConfig.sd15()
  assert AutoencoderKLConfig.from_dict(cfg.to_dict()) == cfg
  assert AutoencoderKLConfig.from_dict(cfg.to_dict(ours=True) | {'remat': True}).remat
  assert cfg.to_dict()['_class_name'] == 'AutoencoderKL'
  with pytest.raises(ValueError, match='unknown keys'):
    AutoencoderKLConfig.from_dict({'block_out_channels': [8], 'no_such_field': 1})
  with pytest.raises(ValueError, match='unsupported block types'):
    AutoencoderKLConfig(down_block_types=('AttnDownEncoderBlock2D',))


def test_sd15_parameter_count():
  """diffusers' SD-1.5 VAE has 83,653,863 parameters; same tree, shapes only (no init)."""
  m = nnx.eval_shape(lambda: AutoencoderKL(AutoencoderKLConfig.sd15(), rngs=nnx.Rngs(0)))
  assert sum(int(np.prod(v.get_value().shape)) for v in jax.tree.leaves(nnx.state(m, nnx.Param),
                                                                 is_leaf=lambda x: isinstance(x, nnx.Variable))) \
      == 83_653_863


def test_conversion_errors(pair):
  ref, _ = pair
  sd = {k: v.numpy() for k, v in ref.state_dict().items()}
  with pytest.raises(ConversionError, match='encoder.conv_in.bias'):
    convert_vae.from_torch({k: v for k, v in sd.items() if k != 'encoder.conv_in.bias'}, dict(ref.config))
  with pytest.raises(ConversionError, match='decoder.extra.weight'):
    convert_vae.from_torch({**sd, 'decoder.extra.weight': np.zeros(3)}, dict(ref.config))
  with pytest.raises(ConversionError, match='quant_conv.weight'):
    convert_vae.from_torch({**sd, 'quant_conv.weight': np.zeros((8, 8, 3, 3))}, dict(ref.config))


def test_bad_inputs(pair):
  _, ours = pair
  with pytest.raises(ValueError, match='channels-last'):
    ours.encode(jnp.zeros((1, 3, 16, 16)))
  with pytest.raises(ValueError, match='not divisible by 2'):
    ours.encode(jnp.zeros((1, 15, 16, 3)))
  with pytest.raises(ValueError, match=r'latents \(N, H, W, 4\)'):
    ours.decode(jnp.zeros((1, 8, 8, 3)))


def _decoder_grad(model, z):
  graphdef, state = nnx.split(model)

  @jax.jit
  def grad(state):
    return jax.grad(lambda s: jnp.mean(nnx.merge(graphdef, s).decode(z) ** 2))(state)

  return grad(state)


def test_bf16_compute_and_remat(pair):
  """bf16 compute keeps fp32 parameters and stays close; remat leaves gradients unchanged (decoder only, for
  compile time)."""
  ref, ours = pair
  z = jnp.asarray(np.random.default_rng(1).standard_normal((1, 8, 8, 4)), jnp.float32)
  bf16, _ = convert_vae.from_torch(ref.state_dict(), dict(ref.config), dtype=jnp.bfloat16)
  out = nnx.jit(lambda m, y: m.decode(y))(bf16, z)
  assert out.dtype == jnp.bfloat16
  assert bf16.encoder.conv_in.kernel.get_value().dtype == jnp.float32
  assert rel(out.astype(jnp.float32), ours.decode(z)) < 3e-2
  remat, _ = convert_vae.from_torch(ref.state_dict(), dict(ref.config), remat=True)
  g0, g1 = _decoder_grad(ours, z), _decoder_grad(remat, z)
  for name in ('conv_in', 'conv_out'):
    np.testing.assert_allclose(g1['decoder'][name]['kernel'].get_value(), g0['decoder'][name]['kernel'].get_value(),
                               rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_sd15_size_matches_diffusers():
  """Real SD-1.5 VAE shape, random init (biases/norms perturbed), 256x256 image: encode + decode."""
  from diffusers import AutoencoderKL as TorchVAE
  torch.manual_seed(0)
  ref = TorchVAE.from_config(AutoencoderKLConfig.sd15().to_dict()).eval()
  tiny_sd._perturb(ref)  # pylint: disable=protected-access
  ours, _ = convert_vae.from_torch(ref.state_dict(), dict(ref.config))
  x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 256, 256)).astype(np.float32)
  with torch.no_grad():
    mean = ref.encode(torch.from_numpy(x)).latent_dist.mean
    recon = ref.decode(mean).sample.numpy()
  p = ours.encode(nhwc(x))
  ours_recon = nchw(jax.jit(lambda m, z: m.decode(z))(ours, p.mean))
  for name, a, b in (('latent mean', nchw(p.mean), mean.numpy()), ('reconstruction', ours_recon, recon)):
    err = np.abs(a - b).max()
    print(f'vae sd15 256x256 {name}: max_abs={err:.3g} rel={rel(a, b):.3g}')
    assert rel(a, b) <= TOL

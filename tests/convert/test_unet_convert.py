"""UNet conversion diffusers <-> ours: exact round trip, the 12-channel conv_in expansion, key errors."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip('torch')
diffusers = pytest.importorskip('diffusers')

from convert.rules import ConversionError  # noqa: E402
from convert.unet import from_torch, to_torch  # noqa: E402

CFG = dict(block_out_channels=(16, 32), down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
           up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'), layers_per_block=1, cross_attention_dim=16,
           attention_head_dim=(1, 2), norm_num_groups=4, sample_size=8)


@pytest.fixture(scope='module')
def tm():
  torch.manual_seed(0)
  model = diffusers.UNet2DConditionModel(**CFG).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  return model


def numpy_state(model) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def to_diffusers(sd: dict[str, np.ndarray], config_dict: dict):
  """Our export loaded into a fresh diffusers model: from_config, then a strict load_state_dict."""
  model = diffusers.UNet2DConditionModel.from_config(config_dict).eval()
  model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
  return model


def forward(model, x_nchw, t, ctx) -> np.ndarray:
  with torch.inference_mode():
    return model(torch.from_numpy(x_nchw), torch.from_numpy(t), torch.from_numpy(ctx)).sample.numpy()


def leaves(module) -> dict:
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in
          jax.tree_util.tree_leaves_with_path(nnx.state(module, nnx.Param))}


def test_round_trip_exact(tm):
  ours, config = from_torch(tm.state_dict(), dict(tm.config))
  sd, cfg = to_torch(ours, config)
  assert set(sd) == set(tm.state_dict())
  for k, v in tm.state_dict().items():
    np.testing.assert_array_equal(sd[k], v.numpy(), err_msg=k)
  back = to_diffusers(sd, cfg)                                     # ours -> diffusers
  again, config2 = from_torch(back.state_dict(), dict(back.config))  # -> ours
  assert config2 == config
  a, b = leaves(ours), leaves(again)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_twelve_channels_round_trip_and_zero_extra_inputs(tm):
  ours, config = from_torch(tm.state_dict(), dict(tm.config), in_channels=12)
  assert config.in_channels == 12
  kernel = np.asarray(ours.conv_in.kernel[...])  # HWIO
  assert kernel.shape[2] == 12 and not kernel[:, :, 4:].any()
  np.testing.assert_array_equal(kernel[:, :, :4], tm.conv_in.weight.detach().numpy().transpose(2, 3, 1, 0))

  sd, cfg = to_torch(ours, config)
  assert cfg['in_channels'] == 12
  exported = to_diffusers(sd, cfg)  # loads in diffusers, strict
  assert exported.config.in_channels == 12
  again, config2 = from_torch(exported.state_dict(), dict(exported.config))  # survives the round trip
  assert config2 == config
  for k, v in leaves(ours).items():
    np.testing.assert_array_equal(v, leaves(again)[k], err_msg=k)

  # zero extra channels: outputs equal the 4-channel model's (torch export and ours)
  rng = np.random.default_rng(0)
  x4 = rng.standard_normal((2, 4, 8, 8), np.float32)
  x12 = np.concatenate([x4, np.zeros((2, 8, 8, 8), np.float32)], axis=1)
  t = np.array([5.0, 900.0], np.float32)
  ctx = rng.standard_normal((2, 3, 16), np.float32)
  ref = forward(tm, x4, t, ctx)
  np.testing.assert_allclose(forward(exported, x12, t, ctx), ref, rtol=1e-6, atol=1e-6)
  graphdef, state = nnx.split(ours)
  got = jax.jit(lambda s, *a: nnx.merge(graphdef, s)(*a))(state, x12.transpose(0, 2, 3, 1), t, ctx)
  got = np.asarray(got).transpose(0, 3, 1, 2)
  assert np.linalg.norm(got - ref) / np.linalg.norm(ref) <= 1e-5


def test_key_errors_name_the_key(tm):
  sd = numpy_state(tm)
  cfg = dict(tm.config)
  bad = dict(sd)
  del bad['down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight']
  with pytest.raises(ConversionError, match=r'missing in checkpoint.*attn2\.to_k\.(weight|kernel)'):
    from_torch(bad, cfg)
  bad = dict(sd, **{'down_blocks.0.resnets.0.extra.weight': np.zeros(3, np.float32)})
  with pytest.raises(ConversionError, match=r'not in model.*resnets\.0\.extra\.weight'):
    from_torch(bad, cfg)
  bad = dict(sd)
  bad['mid_block.resnets.1.conv1.weight'] = np.zeros((32, 32, 1, 1), np.float32)
  with pytest.raises(ConversionError, match=r'wrong shape.*mid_block\.resnets\.1\.conv1\.weight'):
    from_torch(bad, cfg)
  with pytest.raises(ConversionError, match='conv_in'):
    from_torch(sd, cfg, in_channels=2)
  with pytest.raises(ValueError, match='class_embed_type'):
    from_torch(sd, dict(cfg, class_embed_type='timestep'))

"""Motion modules: the module alone against diffusers' `AnimateDiffTransformer3D`, the video UNet against
diffusers' `UNetMotionModel`, identity at init, frame (in)dependence, and training motion weights alone."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

torch = pytest.importorskip('torch')
diffusers = pytest.importorskip('diffusers')

from convert.animatediff import load_motion_state  # noqa: E402
from convert.rules import flat_params, load_torch_state  # noqa: E402
from convert.unet import from_torch  # noqa: E402
from tgvac_jax.models.motion import MotionConfig, MotionModule, MotionParam, sinusoidal_table  # noqa: E402
from tgvac_jax.models.unet import UNet2DConditionModel  # noqa: E402

# A small UNet with both block kinds, a mid block, 12 input channels; the motion norm groups equal the UNet's
# (diffusers' UNetMotionModel uses the resnet groups for its motion GroupNorms).
UNET_CFG = dict(block_out_channels=(32, 64), down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
                up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'), layers_per_block=1, cross_attention_dim=24,
                attention_head_dim=(2, 4), norm_num_groups=8, in_channels=12)
ADAPTER_CFG = dict(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=4,
                   motion_norm_num_groups=8, motion_max_seq_length=32)
MOTION = MotionConfig(num_attention_heads=4, norm_num_groups=8)
B, F, S, HW = 2, 4, 5, 8


def rel(a, b) -> float:
  return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def perturb(model, scale: float, seed: int):
  torch.manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(scale * torch.randn_like(p))
  return model.eval()


@pytest.fixture(scope='module')
def torch_models():
  """(diffusers UNet2DConditionModel, MotionAdapter), every weight perturbed (motion proj_out non-zero)."""
  torch.manual_seed(0)
  unet = perturb(diffusers.UNet2DConditionModel(**UNET_CFG), 0.05, 1)
  adapter = perturb(diffusers.MotionAdapter(**ADAPTER_CFG), 0.1, 2)
  return unet, adapter


@pytest.fixture(scope='module')
def video_inputs():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((B, F, HW, HW, UNET_CFG['in_channels']), np.float32)
  t = np.array([10.0, 700.0], np.float32)
  ctx = rng.standard_normal((B, S, UNET_CFG['cross_attention_dim']), np.float32)
  return x, t, ctx


def frame_and_video(unet, motion=MOTION):
  sd, cfg = unet.state_dict(), dict(unet.config)
  frame, _ = from_torch(sd, cfg)
  video, _ = from_torch(sd, cfg, motion=motion)
  return frame, video


def jit_apply(model):
  graphdef, state = nnx.split(model)
  fn = jax.jit(lambda st, x, t, c: nnx.merge(graphdef, st)(x, t, c))
  return lambda x, t, c: np.asarray(fn(state, x, t, c))


# ---------------------------------------------------------------------------------------------------------------
# The module alone

def torch_transformer3d(channels, heads, layers, groups, seed=0):
  from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D  # pylint: disable=import-outside-toplevel
  torch.manual_seed(seed)
  m = AnimateDiffTransformer3D(num_attention_heads=heads, attention_head_dim=channels // heads,
                               in_channels=channels, num_layers=layers, norm_num_groups=groups,
                               positional_embeddings='sinusoidal', num_positional_embeddings=32,
                               double_self_attention=True, activation_fn='geglu', attention_bias=False)
  return perturb(m, 0.1, seed + 1)


@pytest.mark.parametrize('layers', [1, 2])
def test_module_matches_diffusers(layers):
  tm = torch_transformer3d(64, 4, layers, 8)
  ours = MotionModule(64, MotionConfig(num_attention_heads=4, num_transformer_layers=layers, norm_num_groups=8,
                                       norm_across_frames=True), rngs=nnx.Rngs(0))
  load_torch_state(ours, {k: v.numpy() for k, v in tm.state_dict().items()}, ignore=[r'pos_embed\.pe$'],
                   filter=MotionParam, what='motion module')
  x = np.random.default_rng(1).standard_normal((2 * 6, 64, 3, 5), np.float32)  # (B*F, C, H, W)
  with torch.inference_mode():
    ref = tm(torch.from_numpy(x), num_frames=6).numpy()
  out = np.asarray(ours(jnp.asarray(x.transpose(0, 2, 3, 1)), 6)).transpose(0, 3, 1, 2)
  assert rel(out, ref) <= 1e-5
  # diffusers keeps its position table as a buffer: ours is the same table
  np.testing.assert_allclose(sinusoidal_table(32, 64), tm.transformer_blocks[0].pos_embed.pe[0].numpy(),
                             rtol=0, atol=1e-6)


def test_module_per_frame_norm_and_types():
  cfg = MotionConfig(num_attention_heads=4, norm_num_groups=8, zero_init=False)
  m = MotionModule(32, cfg, rngs=nnx.Rngs(0))
  kinds = {type(v) for v in flat_params(m, nnx.Variable).values()}
  assert kinds == {MotionParam}
  x = jax.random.normal(jax.random.key(0), (3 * 4, 2, 2, 32))
  # per-frame norm: scaling one frame's features leaves the other frames' normed input unchanged, so it is
  # different from the across-frames statistics
  m_across = MotionModule(32, dataclasses.replace(cfg, norm_across_frames=True), rngs=nnx.Rngs(0))
  assert not np.allclose(m(x, 4), m_across(x, 4))
  y = m.norm(x)
  mean = np.asarray(y).reshape(12, -1, 8, 4).mean(axis=(1, 3))
  np.testing.assert_allclose(mean, 0, atol=1e-5)  # zero mean per frame and group


def test_module_identity_at_init_and_remat():
  m = MotionModule(32, MotionConfig(num_attention_heads=4, norm_num_groups=8), rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (2 * 5, 3, 3, 32))
  assert np.array_equal(m(x, 5), x)
  cfg = MotionConfig(num_attention_heads=4, norm_num_groups=8, zero_init=False)
  plain, remat = (MotionModule(32, dataclasses.replace(cfg, remat=r), rngs=nnx.Rngs(3)) for r in (False, True))

  def grads(model):
    return nnx.grad(lambda mm: jnp.sum(jnp.sin(mm(x, 5))))(model)
  g0, g1 = flat_params(grads(plain), nnx.Variable), flat_params(grads(remat), nnx.Variable)
  for k in g0:
    np.testing.assert_allclose(g0[k].get_value(), g1[k].get_value(), rtol=1e-5, atol=1e-6)


def test_module_rejects_long_clip_and_bad_shapes():
  m = MotionModule(32, MotionConfig(num_attention_heads=4, norm_num_groups=8, max_seq_length=32),
                   rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='33 frames is longer than the position encoding'):
    m(jnp.zeros((33, 2, 2, 32)), 33)
  with pytest.raises(ValueError, match='not a multiple of num_frames'):
    m(jnp.zeros((10, 2, 2, 32)), 4)
  with pytest.raises(ValueError, match='not divisible by 3 heads'):
    MotionModule(32, MotionConfig(num_attention_heads=3), rngs=nnx.Rngs(0))


# ---------------------------------------------------------------------------------------------------------------
# The video UNet

def test_placement_matches_motion_adapter(torch_models):
  """Our motion weights are exactly diffusers' MotionAdapter keys (the layout the converters rely on)."""
  _, adapter = torch_models
  _, video = frame_and_video(torch_models[0])
  ours = {k.rsplit('.', 1)[0] for k in flat_params(video, MotionParam)}
  theirs = {k.rsplit('.', 1)[0] for k in adapter.state_dict() if not k.endswith('pos_embed.pe')}
  assert ours == theirs


def test_identity_at_init_bit_for_bit(torch_models, video_inputs):
  frame, video = frame_and_video(torch_models[0])
  x, t, ctx = video_inputs
  xf = x.reshape((B * F,) + x.shape[2:])
  tf, cf = np.repeat(t, F), np.repeat(ctx, F, axis=0)
  want = np.asarray(frame(xf, tf, cf)).reshape(x.shape[:-1] + (-1,))
  got = np.asarray(video(x, t, ctx))
  assert np.array_equal(got, want)  # eager
  assert np.array_equal(jit_apply(video)(x, t, ctx), jit_apply(frame)(xf, tf, cf).reshape(want.shape))  # jit


def test_frames_independent_without_motion_and_interacting_with(torch_models, video_inputs):
  frame, video = frame_and_video(torch_models[0])
  x, t, ctx = video_inputs
  perm = np.array([2, 0, 3, 1])
  spatial = jit_apply(frame)
  out = spatial(x, t, ctx)
  np.testing.assert_allclose(spatial(x[:, perm], t, ctx), out[:, perm], rtol=0, atol=1e-6)

  load_motion_state(video, torch_models[1].state_dict())  # non-zero motion weights
  motion = jit_apply(video)
  out = motion(x, t, ctx)
  x2 = x.copy()
  x2[:, 0] += 1.0  # change frame 0 only
  out2 = motion(x2, t, ctx)
  assert np.abs(out2[:, 1:] - out[:, 1:]).max() > 1e-3  # other frames feel it
  assert np.abs(motion(x[:, perm], t, ctx) - out[:, perm]).max() > 1e-3  # order matters (position encoding)


def test_video_unet_matches_diffusers_unet_motion_model(torch_models, video_inputs):
  unet, adapter = torch_models
  tm = diffusers.UNetMotionModel.from_unet2d(unet, adapter).eval()
  _, video = frame_and_video(unet, dataclasses.replace(MOTION, norm_across_frames=True))
  load_motion_state(video, adapter.state_dict())
  x, t, ctx = video_inputs
  with torch.inference_mode():
    ref = tm(torch.from_numpy(x.transpose(0, 4, 1, 2, 3).copy()), torch.from_numpy(t),
             torch.from_numpy(np.repeat(ctx, F, axis=0))).sample.numpy().transpose(0, 2, 3, 4, 1)
  got = jit_apply(video)(x, t, ctx)
  assert rel(got, ref) <= 1e-5
  # per-frame norm (AnimateDiff's) is a different function
  _, per_frame = frame_and_video(unet)
  load_motion_state(per_frame, adapter.state_dict())
  assert rel(jit_apply(per_frame)(x, t, ctx), ref) > 1e-4


def test_unet_rejects_clip_longer_than_position_table(torch_models):
  _, video = frame_and_video(torch_models[0], dataclasses.replace(MOTION, max_seq_length=3))
  with pytest.raises(ValueError, match='longer than the position encoding'):
    video(np.zeros((1, 4, HW, HW, 12), np.float32), 1.0, np.zeros((1, S, 24), np.float32))


def test_optimizer_on_motion_params_trains_motion_only(torch_models, video_inputs):
  _, video = frame_and_video(torch_models[0], dataclasses.replace(MOTION, zero_init=False))
  x, t, ctx = video_inputs
  motion_paths = set(flat_params(video, MotionParam))
  spatial_before = {k: np.array(v.get_value()) for k, v in
                    flat_params(video, nnx.All(nnx.Param, nnx.Not(MotionParam))).items()}
  motion_before = {k: np.array(v.get_value()) for k, v in flat_params(video, MotionParam).items()}
  assert motion_paths and spatial_before and not motion_paths & set(spatial_before)

  opt = nnx.Optimizer(video, optax.adamw(1e-3), wrt=MotionParam)
  # optimizer state: adam's mu and nu for motion weights only (plus scalar counts)
  shaped = [('.'.join(map(str, p)), v) for p, v in nnx.to_flat_state(nnx.state(opt.opt_state))
            if np.ndim(v.get_value())]
  assert len(shaped) == 2 * len(motion_paths)
  assert {p.split('.', 2)[2] for p, _ in shaped} == motion_paths  # '<i>.mu.<param path>'

  target = np.random.default_rng(1).standard_normal(x.shape[:-1] + (4,), np.float32)
  graphdef, state = nnx.split((video, opt))

  @jax.jit
  def step(state):
    model, optimizer = nnx.merge(graphdef, state)
    loss_fn = lambda m: jnp.mean((m(x, t, ctx) - target) ** 2)  # noqa: E731
    loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, MotionParam))(model)
    optimizer.update(model, grads)
    return loss, nnx.state((model, optimizer))

  _, state = step(state)
  nnx.update((video, opt), state)
  for k, before in spatial_before.items():
    assert np.array_equal(flat_params(video)[k].get_value(), before), k
  changed = [k for k, before in motion_before.items()
             if not np.array_equal(flat_params(video, MotionParam)[k].get_value(), before)]
  assert sorted(changed) == sorted(motion_before)


def test_unet_config_round_trips_motion(torch_models):
  _, video = frame_and_video(torch_models[0])
  d = video.config.to_dict(ours=True)
  assert d['motion'] == MOTION.to_dict()
  assert isinstance(UNet2DConditionModel, type)

"""Motion modules: the module alone against diffusers' `AnimateDiffTransformer3D`, the video UNet against
diffusers' `UNetMotionModel`, identity at init, frame (in)dependence, and training motion weights alone."""

from __future__ import annotations

import dataclasses
import functools

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


@functools.partial(jax.jit, static_argnums=0)
def _apply(graphdef, state, *args):
  return nnx.merge(graphdef, state)(*args)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _apply_frames(graphdef, state, x, num_frames):
  return nnx.merge(graphdef, state)(x, num_frames)


def run(model, *args):
  """model(*args) under jit (one compile per model structure and input shapes, shared between tests); an int
  last argument (a motion module's num_frames) is static."""
  graphdef, state = nnx.split(model)
  if isinstance(args[-1], int):
    return np.asarray(_apply_frames(graphdef, state, *args))
  return np.asarray(_apply(graphdef, state, *args))


@pytest.fixture(scope='module')
def base_models(torch_models):
  """(frame UNet, video UNet with freshly initialised per-frame motion modules), spatial weights from diffusers."""
  sd, cfg = torch_models[0].state_dict(), dict(torch_models[0].config)
  return from_torch(sd, cfg)[0], from_torch(sd, cfg, motion=MOTION)[0]


def variant(video, unet_remat: bool = False, **motion_changes):
  """A copy of `video` with other MotionConfig settings (same weights), built without a fresh random init."""
  config = dataclasses.replace(video.config, remat=unet_remat,
                               motion=dataclasses.replace(video.config.motion, **motion_changes))
  model = nnx.eval_shape(lambda: UNet2DConditionModel(config, rngs=nnx.Rngs(0)))
  nnx.update(model, nnx.state(video))
  return model


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
  m_across = MotionModule(32, dataclasses.replace(cfg, norm_across_frames=True), rngs=nnx.Rngs(0))
  assert not np.allclose(run(m, x, 4), run(m_across, x, 4))
  y = run(m.norm, x)
  np.testing.assert_allclose(y.reshape(12, -1, 8, 4).mean(axis=(1, 3)), 0, atol=1e-5)  # zero mean per frame


def test_module_identity_at_init_and_remat():
  m = MotionModule(32, MotionConfig(num_attention_heads=4, norm_num_groups=8), rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (2 * 5, 3, 3, 32))
  assert np.array_equal(run(m, x, 5), x)
  cfg = MotionConfig(num_attention_heads=4, norm_num_groups=8, zero_init=False)
  plain, remat = (MotionModule(32, dataclasses.replace(cfg, remat=r), rngs=nnx.Rngs(3)) for r in (False, True))

  def grads(model):
    graphdef, state = nnx.split(model)
    loss = lambda st: jnp.sum(jnp.sin(nnx.merge(graphdef, st)(x, 5)))  # noqa: E731
    return jax.jit(jax.grad(loss))(state)
  g0, g1 = grads(plain), grads(remat)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(a).max())


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

def test_placement_matches_motion_adapter(torch_models, base_models):
  """Our motion weights are exactly diffusers' MotionAdapter keys (the layout the converters rely on)."""
  ours = {k.rsplit('.', 1)[0] for k in flat_params(base_models[1], MotionParam)}
  theirs = {k.rsplit('.', 1)[0] for k in torch_models[1].state_dict() if not k.endswith('pos_embed.pe')}
  assert ours == theirs


def test_identity_at_init_bit_for_bit(base_models, video_inputs):
  """Fresh motion modules: the video UNet's output is the frame UNet's, frame by frame, bit for bit (fp32)."""
  frame, video = base_models
  x, t, ctx = video_inputs
  xf = x.reshape((B * F,) + x.shape[2:])
  want = run(frame, xf, np.repeat(t, F), np.repeat(ctx, F, axis=0)).reshape(x.shape[:-1] + (-1,))
  assert np.array_equal(run(video, x, t, ctx), want)


def test_frames_independent_without_motion_and_interacting_with(torch_models, base_models, video_inputs):
  frame, video = base_models
  x, t, ctx = video_inputs
  perm = np.array([2, 0, 3, 1])
  out = run(frame, x, t, ctx)  # the frame UNet takes videos too (motion off)
  np.testing.assert_allclose(run(frame, x[:, perm], t, ctx), out[:, perm], rtol=0, atol=1e-6)

  video = nnx.clone(video)
  load_motion_state(video, torch_models[1].state_dict())  # non-zero motion weights
  out = run(video, x, t, ctx)
  x2 = x.copy()
  x2[:, 0] += 1.0  # change frame 0 only
  assert np.abs(run(video, x2, t, ctx)[:, 1:] - out[:, 1:]).max() > 1e-3  # other frames feel it
  assert np.abs(run(video, x[:, perm], t, ctx) - out[:, perm]).max() > 1e-3  # order matters (position encoding)


def test_video_unet_matches_diffusers_unet_motion_model(torch_models, base_models, video_inputs):
  unet, adapter = torch_models
  tm = diffusers.UNetMotionModel.from_unet2d(unet, adapter).eval()
  video = variant(base_models[1], norm_across_frames=True)
  load_motion_state(video, adapter.state_dict())
  x, t, ctx = video_inputs
  with torch.inference_mode():
    ref = tm(torch.from_numpy(x.transpose(0, 4, 1, 2, 3).copy()), torch.from_numpy(t),
             torch.from_numpy(np.repeat(ctx, F, axis=0))).sample.numpy().transpose(0, 2, 3, 4, 1)
  assert rel(run(video, x, t, ctx), ref) <= 1e-5
  per_frame = nnx.clone(base_models[1])  # AnimateDiff's per-frame norm is a different function
  load_motion_state(per_frame, adapter.state_dict())
  assert rel(run(per_frame, x, t, ctx), ref) > 1e-4


def test_unet_rejects_clip_longer_than_position_table(base_models):
  video = variant(base_models[1], max_seq_length=3)
  with pytest.raises(ValueError, match='longer than the position encoding'):
    video(np.zeros((1, 4, HW, HW, 12), np.float32), 1.0, np.zeros((1, S, 24), np.float32))


@pytest.mark.slow  # 30-60 s: moved out of the default tier (its ~20-minute budget)
def test_optimizer_on_motion_params_trains_motion_only(torch_models, base_models, video_inputs):
  """The stage-2 step, with remat of UNet blocks and motion modules (mixed differentiated / frozen weights)."""
  video = variant(base_models[1], unet_remat=True, remat=True)
  load_motion_state(video, torch_models[1].state_dict())  # non-zero proj_out: every motion weight gets a gradient
  x, t, ctx = video_inputs
  motion_paths = set(flat_params(video, MotionParam))
  spatial_before = {k: np.array(v.get_value()) for k, v in
                    flat_params(video, nnx.All(nnx.Param, nnx.Not(MotionParam))).items()}
  motion_before = {k: np.array(v.get_value()) for k, v in flat_params(video, MotionParam).items()}
  assert motion_paths and spatial_before and not motion_paths & set(spatial_before)

  opt = nnx.Optimizer(video, optax.adamw(1e-3), wrt=MotionParam)
  # optimizer state: adam's mu and nu for motion weights only (plus scalar counts)
  shaped = ['.'.join(map(str, p)) for p, v in nnx.to_flat_state(nnx.state(opt.opt_state)) if np.ndim(v.get_value())]
  assert len(shaped) == 2 * len(motion_paths)
  assert {p.split('.', 2)[2] for p in shaped} == motion_paths  # '<i>.mu.<param path>'

  target = np.random.default_rng(1).standard_normal(x.shape[:-1] + (4,), np.float32)
  graphdef, state = nnx.split((video, opt))

  @jax.jit
  def step(state):
    model, optimizer = nnx.merge(graphdef, state)
    gd, motion, frozen = nnx.split(model, MotionParam, ...)  # jax.grad on the motion state alone
    loss_fn = lambda m: jnp.mean((nnx.merge(gd, m, frozen)(x, t, ctx) - target) ** 2)  # noqa: E731
    loss, grads = jax.value_and_grad(loss_fn)(motion)
    optimizer.update(model, grads)
    return loss, nnx.state((model, optimizer))

  _, state = step(state)
  nnx.update((video, opt), state)
  for k, before in spatial_before.items():
    assert np.array_equal(flat_params(video)[k].get_value(), before), k
  changed = [k for k, before in motion_before.items()
             if not np.array_equal(flat_params(video, MotionParam)[k].get_value(), before)]
  assert sorted(changed) == sorted(motion_before)


def test_unet_config_round_trips_motion(base_models):
  config = base_models[1].config
  assert config.to_dict(ours=True)['motion'] == MOTION.to_dict()
  assert type(config).from_dict(config.to_dict(ours=True)).motion == MOTION

"""Our NNX UNet against diffusers' PyTorch `UNet2DConditionModel` (random-initialised, small), plus the video
path, run options and input checks. The slow test runs the real SD-1.5 size."""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip('torch')
diffusers = pytest.importorskip('diffusers')

from convert.unet import from_torch  # noqa: E402
from tgvac_jax.models.unet import UNet2DConditionModel, UNetConfig  # noqa: E402

# Small diffusers configs covering: per-block head list vs int, conv vs linear projection, block orders,
# two transformer layers, flipped/unflipped sin-cos with a frequency shift, no mid block.
CONFIGS = {
    'heads_list_conv_proj': dict(
        block_out_channels=(32, 64), down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
        up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'), layers_per_block=1, cross_attention_dim=24,
        attention_head_dim=(2, 4), norm_num_groups=8),
    'heads_int_linear_proj': dict(
        block_out_channels=(16, 32, 32), layers_per_block=1, cross_attention_dim=20, attention_head_dim=2,
        down_block_types=('CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'),
        up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'), norm_num_groups=8,
        use_linear_projection=True, transformer_layers_per_block=(1, 2, 1), flip_sin_to_cos=False, freq_shift=1,
        out_channels=3, in_channels=5),
    'down_first_no_mid': dict(
        block_out_channels=(16, 32), down_block_types=('DownBlock2D', 'CrossAttnDownBlock2D'),
        up_block_types=('CrossAttnUpBlock2D', 'UpBlock2D'), layers_per_block=1, cross_attention_dim=16,
        attention_head_dim=(1, 2), norm_num_groups=4, mid_block_type=None, norm_eps=1e-6),
}


def torch_unet(cfg: dict, seed: int = 0):
  """A diffusers UNet with every weight perturbed (so norms' scale/bias and zero inits are exercised)."""
  torch.manual_seed(seed)
  model = diffusers.UNet2DConditionModel(**cfg).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  return model


def torch_forward(model, x_nhwc: np.ndarray, t: np.ndarray, ctx: np.ndarray) -> np.ndarray:
  with torch.inference_mode():
    out = model(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy()), torch.from_numpy(t),
                torch.from_numpy(ctx)).sample
  return out.numpy().transpose(0, 2, 3, 1)


def rel(a, b) -> float:
  return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def jitted(module):
  """The split/merge + jax.jit forward (one compile instead of op-by-op eager dispatch)."""
  graphdef, state = nnx.split(module)
  fn = jax.jit(lambda state, *a: nnx.merge(graphdef, state)(*a))
  return lambda *a: fn(state, *a)


def inputs(config: UNetConfig, batch: int = 2, size: int = 16, seq: int = 7, seed: int = 0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((batch, size, size, config.in_channels), np.float32)
  t = np.linspace(1, 999, batch).astype(np.float32)
  ctx = rng.standard_normal((batch, seq, config.cross_attention_dim), np.float32)
  return x, t, ctx


@pytest.fixture(scope='module')
def small():
  """(torch model, our model, config) for the smallest config, shared by the cheaper tests."""
  tm = torch_unet(CONFIGS['down_first_no_mid'])
  ours, config = from_torch(tm.state_dict(), dict(tm.config))
  return tm, ours, config


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_matches_diffusers(name):
  tm = torch_unet(CONFIGS[name])
  ours, config = from_torch(tm.state_dict(), dict(tm.config))
  x, t, ctx = inputs(config)
  ref = torch_forward(tm, x, t, ctx)
  got = np.asarray(jitted(ours)(x, t, ctx))
  assert got.shape == ref.shape
  assert rel(got, ref) <= 1e-5, (name, rel(got, ref), np.abs(got - ref).max())


def test_video_without_motion_is_per_frame(small):
  """A (B, F, ...) video with motion=None is exactly its frames folded into the batch (which the parity tests
  compare with diffusers)."""
  _, ours, config = small
  b, f, s = 2, 3, 16
  rng = np.random.default_rng(1)
  video = jnp.asarray(rng.standard_normal((b, f, s, s, config.in_channels), np.float32))
  t = jnp.asarray([3.0, 700.0])
  text = jnp.asarray(rng.standard_normal((b, 5, config.cross_attention_dim), np.float32))
  text_f = jnp.asarray(rng.standard_normal((b, f, 5, config.cross_attention_dim), np.float32))
  t_f = jnp.asarray([[1.0, 2.0, 3.0], [400.0, 500.0, 600.0]])
  graphdef, state = nnx.split(ours)
  run = jax.jit(lambda state, *a: nnx.merge(graphdef, state)(*a))  # pylint: disable=unnecessary-lambda

  folded = video.reshape(b * f, s, s, -1)
  for tt, ctx, t_rep, ctx_rep in (
      (t, text, jnp.repeat(t, f), jnp.repeat(text, f, axis=0)),             # shared text, per-video t
      (t_f, text_f, t_f.reshape(-1), text_f.reshape(b * f, 5, -1))):       # per-frame text and t
    out = np.asarray(run(state, video, tt, ctx))
    assert out.shape == (b, f, s, s, config.out_channels)
    np.testing.assert_array_equal(out, np.asarray(run(state, folded, t_rep, ctx_rep)).reshape(out.shape))


def test_remat_and_bf16(small):
  tm, ours, config = small
  x, t, ctx = inputs(config, batch=1, size=8)
  ref = torch_forward(tm, x, t, ctx)
  remat, _ = from_torch(tm.state_dict(), dict(tm.config), remat=True)
  graphdef, rstate = nnx.split(remat)

  def loss(s):
    return jnp.mean(nnx.merge(graphdef, s)(x, t, ctx) ** 2)

  # one checkpointed region per down/mid/up block (traced only: no slow compile)
  jaxpr = jax.make_jaxpr(loss)(rstate)
  n_remat = sum(e.primitive.name in ('checkpoint', 'remat', 'remat2') for e in jaxpr.jaxpr.eqns)
  n_blocks = len(config.down_block_types) + len(config.up_block_types) + (config.mid_block_type is not None)
  assert n_remat == n_blocks, (n_remat, n_blocks)
  assert rel(np.asarray(jitted(remat)(x, t, ctx)), ref) <= 1e-5

  bf16, _ = from_torch(tm.state_dict(), dict(tm.config), dtype=jnp.bfloat16)
  out = jitted(bf16)(x, t, ctx)
  assert out.dtype == jnp.bfloat16
  assert rel(np.asarray(out, np.float32), ref) < 5e-2


@pytest.mark.parametrize('kernel,stride,padding,cin', [(3, 1, 1, 6), (3, 2, 1, 6), (3, 2, 0, 6), (1, 1, 0, 6), (3, 1, 1, 64)])
def test_conv2d_matmul_paths_match_lax(monkeypatch, kernel, stride, padding, cin):
  """Conv2d's matmul paths (1x1 as dot, small 3x3 as im2col, few output channels as row-shifted dots) equal
  nnx.Conv's lax.conv."""
  from tgvac_jax.models import resnet  # pylint: disable=import-outside-toplevel
  layer = resnet.conv(cin, 5, kernel, stride=stride, padding=padding, rngs=nnx.Rngs(0))
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 9, 9, cin), np.float32))
  monkeypatch.setattr(resnet, 'MATMUL_CONV_MAX_PIXELS', 10_000)
  fast = layer(x)
  monkeypatch.setattr(resnet, 'MATMUL_CONV_MAX_PIXELS', 0)
  ref = nnx.Conv.__call__(layer, x)
  assert fast.shape == ref.shape
  np.testing.assert_allclose(np.asarray(fast), np.asarray(ref), rtol=1e-5, atol=1e-5)


def test_subpixel_upsample_matches_upsample_then_conv(monkeypatch):
  from tgvac_jax.models import resnet  # pylint: disable=import-outside-toplevel
  up = resnet.Upsample2D(8, 6, rngs=nnx.Rngs(0))
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 5, 7, 8), np.float32))
  monkeypatch.setattr(resnet, 'SUBPIXEL_UPSAMPLE', True)
  fast = up(x)
  ref = nnx.Conv.__call__(up.conv, resnet.upsample_nearest2x(x))
  assert fast.shape == ref.shape == (2, 10, 14, 6)
  np.testing.assert_allclose(np.asarray(fast), np.asarray(ref), rtol=1e-5, atol=1e-5)


def test_bad_inputs(small):
  _, ours, config = small
  x, t, ctx = inputs(config)
  with pytest.raises(ValueError, match='latent channels'):
    ours(x[..., :3], t, ctx)
  with pytest.raises(ValueError, match='cross_attention_dim'):
    ours(x, t, ctx[..., :-1])
  with pytest.raises(ValueError, match='not divisible by 2'):
    ours(x[:, :15, :15], t, ctx)
  with pytest.raises(ValueError, match='timesteps'):
    ours(x, t[:1].repeat(3), ctx)


def test_config_dict_round_trip_and_checks():
  config = UNetConfig.sd15(in_channels=12)
  d = config.to_dict()
  assert d['in_channels'] == 12 and d['cross_attention_dim'] == 768 and d['block_out_channels'] == [320, 640, 1280,
                                                                                                        1280]
  assert UNetConfig.from_dict(d) == config
  with pytest.raises(ValueError, match='class_embed_type'):
    UNetConfig.from_dict(dict(d, class_embed_type='timestep'))
  with pytest.raises(ValueError, match='unknown keys'):
    UNetConfig.from_dict(dict(d, not_a_field=1))
  with pytest.raises(ValueError, match='attention_head_dim'):
    UNetConfig(attention_head_dim=(8, 8))


def test_motion_modules_placed_like_diffusers():
  """With a MotionConfig our motion modules sit at diffusers' UNetMotionModel positions (same key set), and
  modules whose proj_out is zero leave a video equal to its frames run one by one."""
  motion_lib = pytest.importorskip('tgvac_jax.models.motion')
  from convert.rules import flat_params, load_torch_state  # pylint: disable=import-outside-toplevel
  cfg = dict(CONFIGS['heads_list_conv_proj'])
  tm = torch_unet(cfg)
  adapter = diffusers.MotionAdapter(block_out_channels=cfg['block_out_channels'], motion_layers_per_block=1,
                                    motion_norm_num_groups=8, motion_num_attention_heads=2,
                                    use_motion_mid_block=True)
  theirs = {k for k in diffusers.UNetMotionModel.from_unet2d(tm, adapter).state_dict()
            if '.motion_modules.' in k and not k.endswith('.pe')}
  config = dataclasses.replace(UNetConfig.from_dict(dict(tm.config)),
                               motion=motion_lib.MotionConfig(num_attention_heads=2, norm_num_groups=8))
  model = nnx.eval_shape(lambda: UNet2DConditionModel(config, rngs=nnx.Rngs(0)))  # no slow random init
  leaf = {'kernel': 'weight', 'scale': 'weight'}
  motion_vars = {k: v for k, v in flat_params(model).items() if '.motion_modules.' in k}
  mine = {k.rsplit('.', 1)[0] + '.' + leaf.get(k.rsplit('.', 1)[1], k.rsplit('.', 1)[1]) for k in motion_vars}
  assert mine == theirs, sorted(mine ^ theirs)[:10]
  assert all(isinstance(v, motion_lib.MotionParam) for v in motion_vars.values())

  load_torch_state(model, {k: v.numpy() for k, v in tm.state_dict().items()},
                   filter=nnx.All(nnx.Param, nnx.Not(motion_lib.MotionParam)))
  rng = np.random.default_rng(3)
  for k, v in motion_vars.items():
    v.set_value(np.zeros(v.shape, np.float32) if '.proj_out.' in k
                else 0.1 * rng.standard_normal(v.shape).astype(np.float32))
  nnx.update(model, jax.tree.map(jnp.asarray, nnx.state(model)))
  video = rng.standard_normal((1, 3, 8, 8, 4), np.float32)
  ctx = rng.standard_normal((1, 5, 24), np.float32)
  out = np.asarray(jitted(model)(video, np.float32(10.0), ctx))
  ref = torch_forward(tm, video[0], np.full(3, 10.0, np.float32), np.repeat(ctx, 3, axis=0))
  np.testing.assert_allclose(out[0], ref, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_sd15_size_matches_diffusers():
  """Real SD-1.5 UNet size, random init: parameter count and outputs at a 32x32 latent."""
  torch.manual_seed(0)
  t0 = time.perf_counter()
  tm = diffusers.UNet2DConditionModel(**UNetConfig.sd15().to_dict()).eval()
  n_torch = sum(p.numel() for p in tm.parameters())
  ours, config = from_torch(tm.state_dict(), dict(tm.config))
  n_ours = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(ours, nnx.Param)))
  print(f'\nSD-1.5 UNet parameters: ours {n_ours:,} diffusers {n_torch:,} (build+convert '
        f'{time.perf_counter() - t0:.1f}s)')
  assert n_ours == n_torch == 859_520_964
  x, t, ctx = inputs(config, batch=1, size=32, seq=77)
  ref = torch_forward(tm, x, t, ctx)
  del tm
  graphdef, state = nnx.split(ours)
  got = np.asarray(jax.jit(lambda s, *a: nnx.merge(graphdef, s)(*a))(state, x, t, ctx))
  err, r = float(np.abs(got - ref).max()), rel(got, ref)
  print(f'SD-1.5 UNet 32x32 latent: max_abs={err:.3g} rel={r:.3g}')
  assert r <= 1e-5

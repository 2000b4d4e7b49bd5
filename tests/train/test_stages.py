"""Stage hand-off (frame -> motion) and the checks on starting weights."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.train import tiny
from tgvac_jax.diffusion import scheduler_config
from tgvac_jax.diffusion.schedule import ScheduleConfig
from tgvac_jax.models.motion import MotionParam
from tgvac_jax.models.params import flat_params
from tgvac_jax.train import sharding, stages

STEPS = 3


@pytest.fixture(scope='module')
def frame_model():
  """The frame stage's exported model folder (what configs/motion.py starts from)."""
  return tiny.frame_model()


@pytest.fixture(scope='module')
def motion(frame_model):
  c = tiny.tiny_config('motion', **{'init.from_scratch': False, 'init.checkpoint': str(frame_model),
                                    'init.motion_heads': 4})
  from tgvac_jax.train.state import setup
  return setup(c, sharding.make_mesh(c.mesh))


def _forward(unet, x, t, context):
  graphdef, state = nnx.split(unet)
  return np.asarray(jax.jit(lambda s: nnx.merge(graphdef, s)(x, t, context))(state))


def test_motion_stage_starts_at_the_frame_model(frame_model, motion):
  frame_unet = tiny.trainee('frame').export_modules(tiny.trainee('frame').state)['unet']
  motion_unet = motion.export_modules(motion.state, ema=False)['unet']
  assert flat_params(motion_unet, MotionParam) and not flat_params(frame_unet, MotionParam)
  rs = np.random.RandomState(0)
  b, f = 2, tiny.FRAMES
  x = jnp.asarray(rs.randn(b, f, 8, 8, 12), jnp.float32)
  t = jnp.asarray([10, 900])
  ctx = jnp.asarray(rs.randn(b, 77, 32), jnp.float32)
  video = _forward(motion_unet, x, t, ctx)
  frames = _forward(frame_unet, x.reshape((b * f,) + x.shape[2:]), jnp.repeat(t, f), jnp.repeat(ctx, f, axis=0))
  np.testing.assert_allclose(video.reshape(frames.shape), frames, atol=1e-6, rtol=0)


def test_motion_stage_trains_motion_params_only(frame_model, motion):
  state = motion.state
  assert all(isinstance(v, MotionParam) for v in jax.tree.leaves(state.params, is_leaf=lambda v: isinstance(
      v, nnx.Variable)))
  motion_paths = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(state.params)}
  adam = [s for s in jax.tree.leaves(state.opt_state, is_leaf=lambda x: hasattr(x, 'mu')) if hasattr(s, 'mu')][0]
  for moment in (adam.mu, adam.nu):
    assert {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(moment)} == motion_paths
  n_motion = sum(x.size for x in jax.tree.leaves(state.params))
  n_opt = sum(x.size for x in jax.tree.leaves(state.opt_state))
  assert n_opt <= 2 * n_motion + 8  # moments of MotionParams + counters: nothing for the spatial weights

  batch = sharding.global_batch(tiny.pixel_batch(4, frames=tiny.FRAMES), motion.mesh)
  for _ in range(STEPS):
    state, metrics = motion.train_step(state, batch)
    assert np.isfinite(float(metrics['loss']))
  trained = motion.export_modules(state, ema=False)['unet']
  before = flat_params(tiny.trainee('frame').export_modules(tiny.trainee('frame').state)['unet'])
  spatial = {k: v for k, v in flat_params(trained).items() if not isinstance(v, MotionParam)}
  assert set(spatial) == set(before)
  for k, v in spatial.items():
    np.testing.assert_array_equal(v.get_value(), before[k].get_value(), err_msg=k)  # bitwise
  moved = [k for k, v in flat_params(trained, MotionParam).items()
           if k.endswith('proj_out.kernel') and np.abs(v.get_value()).max() > 0]
  assert moved  # the zero-initialised outputs of the motion modules have left zero


def _fake_pipeline(folder, in_channels):
  for name, d in (('unet', {'_class': 'UNet2DConditionModel', 'in_channels': in_channels}),
                  ('vae', {'_class': 'AutoencoderKL', 'latent_channels': 4}),
                  ('text_encoder', {'_class': 'CLIPTextModel'})):
    (folder / name).mkdir(parents=True)
    (folder / name / 'config.json').write_text(json.dumps(d))
  (folder / 'tokenizer').mkdir()
  return folder


def test_init_checks(tmp_path):
  sd = str(_fake_pipeline(tmp_path / 'sd', 4))
  with pytest.raises(stages.StageError, match='--in-channels 12'):
    stages.check_init(tiny.tiny_config('frame', **{'init.from_scratch': False, 'init.checkpoint': sd}))
  with pytest.raises(stages.StageError, match='not a frame-stage checkpoint'):
    stages.check_init(tiny.tiny_config('motion', **{'init.from_scratch': False, 'init.checkpoint': sd}))
  with pytest.raises(FileNotFoundError, match='no such folder'):
    stages.check_init(tiny.tiny_config('frame', **{'init.from_scratch': False,
                                                   'init.checkpoint': str(tmp_path / 'missing')}))
  with pytest.raises(stages.StageError, match='init.checkpoint'):
    stages.check_init(tiny.tiny_config('frame', **{'init.from_scratch': False}))
  ok = str(_fake_pipeline(tmp_path / 'frame', 12))
  assert set(stages.check_init(tiny.tiny_config('motion', **{'init.from_scratch': False, 'init.checkpoint': ok}))) \
      == set(stages.PIPELINE)


def test_motion_stage_keeps_the_frame_schedule(tmp_path):
  """A frame checkpoint trained with v_prediction: the motion stage must be configured the same (fails before
  anything is built); without scheduler/ a checkpoint is SD-1.5's epsilon schedule."""
  v = str(_fake_pipeline(tmp_path / 'v', 12))
  scheduler_config.write(tmp_path / 'v' / 'scheduler', ScheduleConfig(prediction_type='v_prediction'))

  def motion(init, **o):
    return tiny.tiny_config('motion', **{'init.from_scratch': False, 'init.checkpoint': init, **o})

  with pytest.raises(stages.StageError, match="prediction_type 'epsilon' vs 'v_prediction'.*keep the frame stage"):
    stages.check_init(motion(v))
  stages.check_init(motion(v, **{'diffusion.prediction_type': 'v_prediction'}))
  old = str(_fake_pipeline(tmp_path / 'old', 12))
  with pytest.raises(stages.StageError, match="beta_schedule 'linear' vs 'scaled_linear'"):
    stages.check_init(motion(old, **{'diffusion.beta_schedule': 'linear'}))
  stages.check_init(tiny.tiny_config('frame', **{'init.from_scratch': False, 'init.checkpoint': v}))  # may change it

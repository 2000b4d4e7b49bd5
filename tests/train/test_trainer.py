"""What a finished training run leaves behind (the reference run of `runs.py`, 16 steps on 8 devices):
metrics.jsonl with a row per step, TensorBoard scalars and GIFs, validation GIFs built from the validation clips,
and a pipeline folder that loads with `load_pipeline`, holds exactly the EMA weights of the last checkpoint and
the config's noise schedule as scheduler/.
The motion stage's AnimateDiff start (`init.motion_adapter`) is checked through `setup`, the vae stage's measured
latent scale through a one-step `trainer.run` in this process."""

import io
import json
import time

import imageio.v3 as iio
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from configs import motion
from configs import vae as vae_config
from tests.train import runs
from tests.train.test_metrics import read_events, scalars
from tgvac_jax.diffusion import scheduler_config
from tgvac_jax.models.checkpoint import load_component, load_pipeline
from tgvac_jax.models.clip import CLIPTextModel
from tgvac_jax.models.params import flat_params
from tgvac_jax.models.unet import UNet2DConditionModel
from tgvac_jax.models.vae import AutoencoderKL
from tgvac_jax.train.checkpoints import CHECKPOINT_DIR, MODEL_DIR
from tgvac_jax.train.metrics import METRICS_FILE, TENSORBOARD_DIR, read_jsonl
from tgvac_jax.train.step import schedule_config
from tgvac_jax.train.validate import VALIDATION_DIR, validation_clips


@pytest.fixture(scope='module')
def workdir():
  return runs.reference().done()


@pytest.fixture(scope='module')
def last(workdir):
  """The last checkpoint's state (as plain nested dicts of arrays) and config."""
  with ocp.CheckpointManager(workdir / CHECKPOINT_DIR) as m:
    assert m.latest_step() == runs.STEPS
    got = m.restore(runs.STEPS, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                        config=ocp.args.JsonRestore()))
  return got['state'], ml_collections.ConfigDict(got['config'])


def flat(tree) -> dict[str, np.ndarray]:
  """{'conv_in.kernel': array}: Orbax's nested dict of an nnx.State, the Variable's 'value' level dropped."""
  out = {}
  for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
    keys = [str(getattr(p, 'key', getattr(p, 'idx', getattr(p, 'name', p)))) for p in path]
    out['.'.join(k for k in keys if k != 'value')] = np.asarray(x)
  return out


def test_metrics_jsonl(workdir, last):
  rows = read_jsonl(workdir / METRICS_FILE)
  assert [r['step'] for r in rows] == list(range(1, runs.STEPS + 1))
  assert all({'loss', 'grad_norm', 'lr', 'skipped'} <= set(r) for r in rows)
  assert all({'steps_per_s', 'examples_per_s'} <= set(r) for r in rows[1:])
  optim = last[1].optim
  for s, r in enumerate(rows, 1):  # linear warmup from 0, then constant: the rate the step used
    want = optim.lr * min(s - 1, optim.warmup_steps) / optim.warmup_steps
    assert r['lr'] == pytest.approx(want, rel=1e-6, abs=1e-12)
  assert rows[-1]['skipped'] == int(last[0]['skipped']) == 0


def test_tensorboard(workdir):
  rows = read_jsonl(workdir / METRICS_FILE)
  events = read_events(workdir / TENSORBOARD_DIR)
  tb = scalars(events)
  losses = dict(tb['train/loss'])
  assert sorted(losses) == [4, 8, 12, 16]
  for s, v in losses.items():
    assert v == pytest.approx(np.mean([r['loss'] for r in rows[s - 4:s]]), rel=1e-6)
  assert {'train/lr', 'train/grad_norm', 'train/skipped', 'train/examples_per_s'} <= set(tb)
  gifs = [(e.step, v.tag) for e in events for v in e.summary.value if v.HasField('image')]
  assert sorted(gifs) == [(runs.STEPS, 'val/clip_0'), (runs.STEPS, 'val/clip_1')]


def test_validation_gifs_show_the_validation_clips(workdir, last):
  clips = validation_clips(last[1])
  folder = workdir / VALIDATION_DIR / f'{runs.STEPS:08d}'
  assert sorted(p.name for p in folder.iterdir()) == ['clip_0.gif', 'clip_1.gif']
  for i in range(2):
    gif = iio.imread(io.BytesIO((folder / f'clip_{i}.gif').read_bytes()), index=None, extension='.gif')[..., :3]
    n, h = clips['amodal'].shape[1:3]
    assert gif.shape == (n, h, 4 * h, 3)  # input | visible mask | completion | ground truth
    mask, truth = gif[..., h:2 * h, :], gif[..., 3 * h:, :].astype(int)
    np.testing.assert_array_equal(mask, np.repeat(clips['visible_mask'][i][..., None] * 255, 3, -1))
    assert np.abs(truth - clips['amodal'][i]).mean() < 8  # GIF's 256-colour palette: close, not exact


def test_exported_model_holds_the_ema_weights(workdir, last):
  state = last[0]
  ema, params = flat(state['ema']), flat(state['params'])
  model = load_pipeline(workdir / MODEL_DIR)
  assert sorted(model) == ['text_encoder', 'unet', 'vae']
  unet = {k: np.asarray(v.get_value()) for k, v in flat_params(model['unet'][0]).items()}
  assert sorted(unet) == sorted(ema)
  for k in ema:
    np.testing.assert_array_equal(unet[k], ema[k], err_msg=k)
  assert any(not np.array_equal(ema[k], params[k]) for k in ema)  # the EMA, not the raw weights
  copied, source = workdir / MODEL_DIR / 'tokenizer', workdir / 'tokenizer'
  assert sorted(p.name for p in copied.iterdir()) == sorted(p.name for p in source.iterdir())
  assert all((copied / p.name).read_bytes() == p.read_bytes() for p in source.iterdir())
  assert scheduler_config.read(workdir / MODEL_DIR) == scheduler_config.Scheduler(schedule_config(last[1]))


def test_motion_stage_starts_from_an_animatediff_adapter(tmp_path):
  """init.motion_adapter: the train job's motion_loader reads the file with convert/animatediff.py and setup puts the
  weights into the trainable state, sharded. The adapter is written from a UNet with random motion weights
  (proj_out too, so not the identity a fresh module starts as); the trainee must start from exactly those."""
  from convert.animatediff import save_motion_adapter
  from tests.infer.fakes import random_model
  from tgvac_jax import text
  from tgvac_jax.models.checkpoint import save_pipeline
  from tgvac_jax.models.motion import MotionParam
  from tgvac_jax.train import job, stages
  from tgvac_jax.train.sharding import make_mesh
  from tgvac_jax.train.state import setup

  c = motion.get_config('tiny')
  c.model.unet_channels, c.model.vae_channels, c.model.text_width, c.model.text_layers = (32,), (16, 32), 32, 1
  c.data.size = 16
  vocab = text.write_char_tokenizer(tmp_path / 'tokenizer')
  frame_cfgs = stages.scratch_configs(c.model, 16, vocab, motion=False)
  classes = (UNet2DConditionModel, AutoencoderKL, CLIPTextModel)
  frame_model = {name: random_model(lambda k=k, cfg=cfg: k(cfg, rngs=nnx.Rngs(0)), seed=i)
                 for i, (name, k, cfg) in enumerate(zip(('unet', 'vae', 'text_encoder'), classes, frame_cfgs))}
  save_pipeline(tmp_path / 'frame_model', frame_model, {'tokenizer': tmp_path / 'tokenizer'})
  unet_cfg = stages.scratch_configs(c.model, 16, vocab, motion=True)[0]
  unet = random_model(lambda: UNet2DConditionModel(unet_cfg, rngs=nnx.Rngs(0)), seed=7)
  save_motion_adapter(unet, str(tmp_path / 'adapter'))

  c.init.from_scratch = False
  c.init.checkpoint = str(tmp_path / 'frame_model')
  c.init.motion_adapter = str(tmp_path / 'adapter')
  c.init.motion_heads = c.model.motion_heads
  c.workdir = str(tmp_path / 'work')
  trainee = setup(c, make_mesh(c.mesh), motion_init=job.motion_loader(c))
  want = {k: np.asarray(v.get_value()) for k, v in flat_params(unet, MotionParam).items()}
  got = flat(trainee.state.params)
  assert sorted(got) == sorted(want)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  assert any(np.abs(v).max() > 0 for k, v in got.items() if 'proj_out.kernel' in k)
  c.init.motion_adapter = str(tmp_path / 'missing.safetensors')
  with pytest.raises(FileNotFoundError, match='init.motion_adapter .*missing.safetensors: no such file'):
    job.motion_loader(c)


def test_vae_stage_exports_its_latent_scale(tmp_path):
  """The vae stage's exported VAE carries its own scaling_factor (what SD's 0.18215 is for SD's VAE): 1 / std of
  the exported weights' posterior means of the fixed training-frame sample, recomputed here without the trainer's
  sharded jit."""
  from tgvac_jax.train import inputs, job, trainer
  c = vae_config.get_config('tiny')
  c.model.vae_channels = (16, 32)
  c.data.size, c.data.procedural_videos = 16, 6
  c.workdir = str(tmp_path / 'vae')
  c.num_steps = c.checkpoint.every = 1
  c.checkpoint.async_save = False
  c.log.val_every = 0
  t = time.time()
  job.run(c)
  print(f'vae stage: 1 step and the export in {time.time() - t:.1f}s')
  assert not (tmp_path / 'vae' / MODEL_DIR / 'scheduler').exists()  # an autoencoder has no noise schedule
  folder = tmp_path / 'vae' / MODEL_DIR / 'vae'
  got = json.loads((folder / 'config.json').read_text())['scaling_factor']
  vae, _ = load_component(folder)
  frames = inputs.scale_frames(c, trainer.SCALE_FRAMES)  # 8 devices: 32 frames, 4 per shard
  assert frames.shape == (32, 16, 16, 3) and len({f.tobytes() for f in frames}) > 8
  np.testing.assert_array_equal(frames, inputs.scale_frames(c, trainer.SCALE_FRAMES))  # the same sample every time
  z = np.asarray(vae.encode(frames.astype(np.float32) / 127.5 - 1).mean, np.float64)
  print(f'vae stage: exported scaling_factor {got:.7g}, recomputed {1 / z.std():.7g} (relative difference '
        f'{abs(got * z.std() - 1):.1e})')
  assert got == pytest.approx(1 / z.std(), rel=1e-4)

"""Training checkpoints: an FSDP-sharded state written on 8 devices restores bit-exactly onto 2 (and 1) with the
shardings asked for; the Grain position comes back; the config is saved; a process-count mismatch is a clear
error; SIGTERM sets the stop flag. Model checkpoints: the exported pipeline loads back equal, atomically, with
the training schedule as scheduler/."""

import json
import os
import shutil
import signal

import flax.struct
import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from tgvac_jax import text
from tgvac_jax.diffusion import scheduler_config
from tgvac_jax.diffusion.schedule import ScheduleConfig, alphas_cumprod
from tgvac_jax.models.checkpoint import load_pipeline
from tgvac_jax.models.clip import CLIPTextConfig, CLIPTextModel
from tgvac_jax.train import checkpoints as C
from tgvac_jax.train.config import base_config
from tgvac_jax.train.step import schedule_config


class State(flax.struct.PyTreeNode):  # the shape of the trainer's TrainState: step, nnx.State trees, key data
  step: jax.Array
  params: nnx.State
  ema: nnx.State
  rng: jax.Array


class Net(nnx.Module):
  def __init__(self, rngs):
    self.big = nnx.Linear(64, 256, rngs=rngs)
    self.small = nnx.Linear(256, 3, rngs=rngs)


def mesh(n):
  return jax.make_mesh((n,), ('fsdp',), devices=jax.devices()[:n], axis_types=(jax.sharding.AxisType.Auto,))


def shard(tree, m):
  """Largest dim over 'fsdp' for tensors with a divisible one (the trainer's rule, restated), else replicated."""
  def spec(x):
    dims = [i for i, d in enumerate(x.shape) if d % m.shape['fsdp'] == 0 and x.ndim and x.size >= 256]
    return P(*([None] * max(dims, key=lambda i: x.shape[i]) + ['fsdp'])) if dims else P()
  return jax.tree.map(lambda x: NamedSharding(m, spec(x)), tree)


def make_state(seed=0):
  net = Net(nnx.Rngs(seed))
  params = nnx.state(net, nnx.Param)
  return State(step=jnp.int32(7), params=params, ema=jax.tree.map(lambda x: x * 0.5, params),
               rng=jax.random.key_data(jax.random.key(seed)))


def data_iter():
  return iter(grain.MapDataset.range(1000).shuffle(seed=3).batch(4).to_iter_dataset())


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
  """A state sharded over 8 devices and a data iterator 5 batches in, saved at step 7; the next 3 batches."""
  workdir = tmp_path_factory.mktemp('ckpt')
  m8 = mesh(8)
  state = make_state()
  state = jax.device_put(state, shard(state, m8))
  assert state.params['big']['kernel'].sharding.spec == P(None, 'fsdp')
  it = data_iter()
  for _ in range(5):
    next(it)
  ck = C.Checkpoints(workdir, base_config(), keep=2)
  ck.save(7, state, it)
  following = [next(it) for _ in range(3)]
  ck.close()
  return workdir, jax.device_get(state), following


@pytest.mark.parametrize('n', [2, 1])
def test_restore_onto_fewer_devices(saved, n):
  workdir, host, following = saved
  m = mesh(n)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), host, shard(host, m))
  it = data_iter()
  ck = C.Checkpoints(workdir, base_config())
  assert ck.latest_step() == 7
  got = ck.restore(abstract, it)
  ck.close()
  assert isinstance(got, State) and isinstance(got.params, nnx.State)
  for a, b, want in zip(jax.tree.leaves(got), jax.tree.leaves(host), jax.tree.leaves(abstract)):
    np.testing.assert_array_equal(np.asarray(a), b)
    assert a.sharding.is_equivalent_to(want.sharding, a.ndim)
  if n == 2:
    assert got.params['big']['kernel'].addressable_shards[0].data.shape == (64, 128)  # really split in two
  for want in following:
    np.testing.assert_array_equal(next(it), want)


def test_saved_config_and_steps_kept(saved, tmp_path):
  workdir, host, _ = saved
  cfg = base_config()
  ck = C.Checkpoints(workdir, cfg)
  assert ck.saved_config(7) == json.loads(json.dumps(cfg.to_dict()))  # tuples come back as lists
  ck.close()
  ck = C.Checkpoints(tmp_path, cfg, keep=2, async_save=False)
  it = data_iter()
  for step in (1, 2, 3):
    ck.save(step, host, it)
  ck.close()
  assert sorted(os.listdir(tmp_path / C.CHECKPOINT_DIR)) == ['2', '3']


def test_other_process_count_is_a_clear_error(saved, tmp_path):
  workdir, host, _ = saved
  shutil.copytree(workdir / C.CHECKPOINT_DIR, tmp_path / C.CHECKPOINT_DIR)
  data = tmp_path / C.CHECKPOINT_DIR / '7' / 'data'
  (src,) = data.glob('process_*.json')
  os.replace(src, data / 'process_0-of-2.json')
  ck = C.Checkpoints(tmp_path, base_config())
  with pytest.raises(C.ResumeError, match='written by 2 processes; this run has 1'):
    ck.restore(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), host), data_iter())
  ck.close()


def test_no_checkpoint_is_a_clear_error(tmp_path):
  ck = C.Checkpoints(tmp_path, base_config())
  with pytest.raises(C.ResumeError, match='no training checkpoint'):
    ck.restore({}, data_iter())
  ck.close()


def test_sigterm_sets_the_stop_flag():
  stop = C.StopSignal()
  try:
    assert not stop(1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop(2)
  finally:
    stop.restore()
  assert signal.getsignal(signal.SIGTERM) is not stop._handle  # pylint: disable=protected-access


def test_export_pipeline_loads_back_equal(tmp_path):
  cfg = CLIPTextConfig(vocab_size=76, hidden_size=16, intermediate_size=32, projection_dim=16, num_hidden_layers=1,
                       num_attention_heads=2, bos_token_id=0, eos_token_id=1, pad_token_id=1)
  model = CLIPTextModel(cfg, rngs=nnx.Rngs(0))
  tok = tmp_path / 'tok'
  text.write_char_tokenizer(tok)
  out = tmp_path / 'model'
  for _ in range(2):  # the second export replaces the first in one rename
    C.export_pipeline(out, {'text_encoder': model}, str(tok))
  assert sorted(p.name for p in tmp_path.iterdir()) == ['model', 'tok']
  assert sorted(p.name for p in out.iterdir()) == ['text_encoder', 'tokenizer']
  loaded, _ = load_pipeline(out)['text_encoder']
  for a, b in zip(jax.tree.leaves(nnx.state(loaded, nnx.Param)), jax.tree.leaves(nnx.state(model, nnx.Param))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert text.Tokenize(out / 'tokenizer')('a cat').shape == (77,)


def _export_with_schedule(out, cfg):
  """A pipeline folder of one zero-weight tiny component and `cfg`'s training schedule."""
  model = nnx.eval_shape(lambda: CLIPTextModel(CLIPTextConfig(
      vocab_size=8, hidden_size=8, intermediate_size=8, projection_dim=8, num_hidden_layers=1, num_attention_heads=1),
      rngs=nnx.Rngs(0)))
  nnx.update(model, jax.tree.map(jnp.zeros_like, nnx.state(model)))
  return C.export_pipeline(out, {'text_encoder': model}, None, schedule_config(cfg))


def test_export_pipeline_writes_the_training_schedule(tmp_path):
  """The diffusion stages export config.diffusion as scheduler/, which inference reads back unchanged."""
  cfg = base_config()
  cfg.diffusion.prediction_type, cfg.diffusion.beta_schedule = 'v_prediction', 'linear'
  out = _export_with_schedule(tmp_path / 'model', cfg)
  assert sorted(p.name for p in out.iterdir()) == ['scheduler', 'text_encoder']
  back = scheduler_config.read(out)
  assert back == scheduler_config.Scheduler(ScheduleConfig(prediction_type='v_prediction', beta_schedule='linear'))
  np.testing.assert_allclose(alphas_cumprod(back.schedule), alphas_cumprod(schedule_config(cfg)), rtol=0, atol=1e-7)


def test_export_pipeline_samples_zero_terminal_snr_from_pure_noise(tmp_path):
  """A zero-terminal-SNR model is exported with `trailing` DDIM spacing: diffusers' scheduler loaded from the
  folder then starts at t = 999 (SNR 0, the step training saw as pure noise), and our sampler visits the same
  timesteps."""
  import diffusers  # pylint: disable=import-outside-toplevel

  from tgvac_jax.diffusion import ddim  # pylint: disable=import-outside-toplevel
  cfg = base_config()
  cfg.diffusion.prediction_type, cfg.diffusion.rescale_betas_zero_snr = 'v_prediction', True
  out = _export_with_schedule(tmp_path / 'model', cfg)
  theirs = diffusers.DDIMScheduler.from_pretrained(out / 'scheduler')
  theirs.set_timesteps(6)
  assert theirs.config.timestep_spacing == 'trailing' and int(theirs.timesteps[0]) == 999
  back = scheduler_config.read(out)
  ours = ddim.timesteps(back.schedule, back.sampler_ddim(ddim.DDIMConfig(num_inference_steps=6)))
  np.testing.assert_array_equal(ours, theirs.timesteps.numpy())
  # without the rescale the spacing stays SD-1.5's `leading` (its first step is t = 834 of 1000 at 6 steps)
  assert ddim.for_schedule(schedule_config(base_config())).timestep_spacing == 'leading'

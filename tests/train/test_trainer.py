"""What a finished training run leaves behind (the reference run of `runs.py`, 16 steps on 8 devices):
metrics.jsonl with a row per step, TensorBoard scalars and GIFs, validation GIFs built from the validation clips,
and a pipeline folder that loads with `load_pipeline` and holds exactly the EMA weights of the last checkpoint."""

import io

import imageio.v3 as iio
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.train import runs
from tests.train.test_metrics import read_events, scalars
from tgvac_jax.models.checkpoint import load_pipeline
from tgvac_jax.models.params import flat_params
from tgvac_jax.train.checkpoints import CHECKPOINT_DIR, MODEL_DIR
from tgvac_jax.train.metrics import METRICS_FILE, TENSORBOARD_DIR, read_jsonl
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
    keys = [str(getattr(p, 'key', getattr(p, 'idx', p))) for p in path]
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

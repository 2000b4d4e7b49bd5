"""Cached latents: records equal `encode_batch` of the same pixels (decoded independently), two processes write
what one writes, a rerun finishes only the missing shards, a failing run leaves no shard half-written, the reader
yields frame/window batches, and one train step from cached latents equals one from pixels."""

import shutil

import grain
import jax
import numpy as np
import pytest

from configs.cache_latents import with_cache
from data_prep import builder as B
from data_prep.occlusion import SynthConfig
from data_prep.sources.procedural import ProceduralSource
from tests.train import tiny
from tgvac_jax import text
from tgvac_jax.data import schema
from tgvac_jax.data.pipeline import data_source
from tgvac_jax.train import cache_latents as CL, sharding, stages
from tgvac_jax.train.latents import LATENT_KEYS, encode_batch

SHARD = 3


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  src = ProceduralSource(num_videos=8, size=32, min_frames=6, max_frames=8, second_sprite_prob=0.0)
  cfg = B.BuildConfig(SynthConfig(clip_len=tiny.FRAMES, resolution=tiny.SIZE, clips_per_track=2, candidates=8))
  return B.build(src, cfg, str(tmp_path_factory.mktemp('clips')), progress=False).dataset_dir


def config(dataset, out):
  c = with_cache(tiny.tiny_config('frame'))
  c.data.dataset = dataset
  c.cache.out = str(out)
  c.cache.batch_size = 2
  c.cache.shard_size = SHARD
  return c


REAL_ENCODER = CL.Encoder


@pytest.fixture(scope='module')
def shared():
  """One Encoder for the whole module (its jit init and compile dominate the cost)."""
  return {}


def _patch_encoder(mp, shared, seen):
  def make(*args):
    if 'encoder' not in shared:
      shared['encoder'] = REAL_ENCODER(*args)

    def call(batch):
      seen.append(len(batch['input_ids']))
      return shared['encoder'](batch)
    return call
  mp.setattr(CL, 'Encoder', make)


@pytest.fixture
def calls(monkeypatch, shared):
  """Records encoded per encoder call in this test."""
  seen = []
  _patch_encoder(monkeypatch, shared, seen)
  return seen


@pytest.fixture(scope='module')
def cached(dataset, shared, tmp_path_factory):
  out = tmp_path_factory.mktemp('cache') / 'latents'
  with pytest.MonkeyPatch.context() as mp:
    _patch_encoder(mp, shared, [])
    CL.cache(config(dataset, out))
  return out


def records(path):
  files = CL.shard_paths(path, CL.read_metadata(path))
  return [CL.decode_record(r) for r in grain.sources.ArrayRecordDataSource([str(p) for p in files])]


def pixel_clips(dataset):
  """Every record's pixels in the loader's uint8 format, decoded here without the loader (stored at data.size)."""
  src = data_source(dataset)
  tok = text.Tokenize(stages.tokenizer_dir(tiny.tiny_config('frame')))
  out = []
  for i in range(len(src)):
    x = schema.decode_record(src[i])
    out.append({'occluded': x['occluded'], 'amodal': x['amodal'],
                'visible_mask': (x['amodal_mask'] & ~x['occluder_mask']).astype(np.uint8),
                'input_ids': np.asarray(tok(x['caption']), np.int32), 'caption': x['caption']})
  return out


@pytest.fixture(scope='module')
def reference(dataset):
  """encode_batch of all clips in one call, with models built here from the config (not the cache's Encoder)."""
  c = tiny.tiny_config('frame')
  mesh = sharding.make_mesh(c.mesh, jax.devices()[:1])
  models = stages.build_models(c, mesh, {}, stages.ensure_tokenizer(c)[1])
  clips = pixel_clips(dataset)
  batch = {k: np.stack([x[k] for x in clips]) for k in ('occluded', 'amodal', 'visible_mask', 'input_ids')}
  z = jax.jit(encode_batch)(models['vae'], models['text_encoder'], batch)
  return clips, jax.device_get(z)


def test_records_equal_encode_batch(cached, reference):
  clips, z = reference
  recs = records(cached)
  meta = CL.read_metadata(cached)
  assert len(recs) == meta['num_records'] == len(clips) >= 8
  assert len(meta['shards']) == -(-len(clips) // SHARD) >= 3
  for i, r in enumerate(recs):
    assert int(r['index']) == i and str(r['caption']) == clips[i]['caption']
    np.testing.assert_array_equal(r['input_ids'], clips[i]['input_ids'])
    for k in LATENT_KEYS:
      assert r[k].dtype == z[k][i].dtype and r[k].shape == z[k][i].shape, k
      np.testing.assert_allclose(r[k], z[k][i], rtol=1e-5, atol=1e-5, err_msg=k)
  assert recs[0]['target_mean'].shape == (tiny.FRAMES, tiny.SIZE // 2, tiny.SIZE // 2, 4)
  assert not [p for p in cached.iterdir() if p.name.startswith('.')]  # no temporary files left


def test_two_processes_write_what_one_writes(dataset, cached, calls, tmp_path):
  out = tmp_path / 'two'
  CL.cache(config(dataset, out), 1, 2)  # process 1 alone first: shards 1 and 3
  with pytest.raises(CL.CacheError, match='incomplete latent cache, 2 of 4 shards missing'):
    CL.latent_dataset(str(out), batch_size=2)
  CL.cache(config(dataset, out), 0, 2)
  for a, b in zip(records(out), records(cached)):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_resume_encodes_only_missing_shards_and_a_failure_leaves_none_half_written(dataset, cached, calls,
                                                                                    tmp_path, monkeypatch):
  out = tmp_path / 'resume'
  shutil.copytree(cached, out)
  meta = CL.read_metadata(out)
  victim = out / meta['shards'][1]['file']
  victim.unlink()
  before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
  real_write = CL._write_shard  # pylint: disable=protected-access

  def killed(path, recs):
    def first_then_die():
      yield next(iter(recs))
      raise RuntimeError('killed')
    real_write(path, first_then_die())
  monkeypatch.setattr(CL, '_write_shard', killed)
  with pytest.raises(RuntimeError, match='killed'):
    CL.cache(config(dataset, out))
  assert not victim.exists() and sorted(p.name for p in out.iterdir()) == sorted(before)  # nothing half-written

  monkeypatch.setattr(CL, '_write_shard', real_write)
  calls.clear()
  CL.cache(config(dataset, out))
  assert sum(calls) == meta['shards'][1]['count']  # only the missing shard was encoded
  for name, mtime in before.items():
    assert (out / name).stat().st_mtime_ns == mtime, name  # finished shards untouched
  for a, b in zip(records(out), records(cached)):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_reader_batches(cached):
  recs = records(cached)
  frames = CL.latent_dataset(str(cached), batch_size=4, seed=3)
  it = iter(frames)
  b = next(it)
  assert sorted(b) == sorted(LATENT_KEYS)
  assert b['target_mean'].shape == (4, tiny.SIZE // 2, tiny.SIZE // 2, 4) and b['context'].shape[:2] == (4, 77)
  for i in range(4):  # each example is frame t of some record, with that record's text
    assert any(all(np.array_equal(b[k][i], r[k][t]) for k in CL.FRAME_KEYS)
               and np.array_equal(b['context'][i], r['context']) and np.array_equal(b['input_ids'][i], r['input_ids'])
               for r in recs for t in range(tiny.FRAMES))
  state = it.get_state()
  nxt = next(it)
  again = iter(CL.latent_dataset(str(cached), batch_size=4, seed=3))
  again.set_state(state)
  np.testing.assert_array_equal(next(again)['target_mean'], nxt['target_mean'])
  clips = next(iter(CL.latent_dataset(str(cached), batch_size=2, seed=0, stage='motion', clip_len=3)))
  assert clips['target_mean'].shape == (2, 3, tiny.SIZE // 2, tiny.SIZE // 2, 4)
  halves = [next(iter(CL.latent_dataset(str(cached), batch_size=2, process_index=p, process_count=2)))
            for p in range(2)]
  assert not np.array_equal(halves[0]['context'], halves[1]['context'])


def test_bad_inputs(dataset, cached, tmp_path, monkeypatch):
  built = []
  monkeypatch.setattr(CL, 'Encoder', lambda *a: built.append(a))  # nothing may be built
  with pytest.raises(CL.CacheError, match='no cached latents'):
    CL.latent_dataset(str(tmp_path / 'none'), batch_size=2)
  other = config(dataset, cached)
  other.data.size = 2 * tiny.SIZE
  with pytest.raises(ValueError, match=r'exists with other settings \(settings differ\)'):
    CL.cache(other)
  with pytest.raises(ValueError, match=r'size: cache 16, config 32'):
    CL.latent_dataset(str(cached), batch_size=2, config=other)
  c = config(dataset, tmp_path / 'p2g')
  c.data.pix2gestalt = str(tmp_path)
  with pytest.raises(ValueError, match='one data source at a time'):
    CL.cache(c)
  c = config(str(tmp_path / 'missing'), tmp_path / 'x')
  with pytest.raises(FileNotFoundError, match='no such folder'):
    CL.cache(c)
  assert not built and not (tmp_path / 'x').exists() and not (tmp_path / 'p2g').exists()


def _first_moment(state):
  """Adam's mu after one step: (1 - b1) * the gradient."""
  return next(x.mu for x in jax.tree.leaves(state.opt_state, is_leaf=lambda z: hasattr(z, 'mu')) if hasattr(x, 'mu'))


def test_step_from_cached_latents_equals_step_from_pixels(cached, dataset):
  """The same state, rng and examples (frame 0 of records 0..7): equal loss and gradients within 1e-5. (Adam's
  first update is about lr * sign(g), so the few weights whose gradient is ~1e-9 may move differently.)"""
  trainee = tiny.trainee('frame')
  recs = records(cached)[:tiny.BATCH]
  clips = pixel_clips(dataset)[:tiny.BATCH]
  latents = {k: np.stack([r[k][0] if k in CL.FRAME_KEYS else r[k] for r in recs]) for k in LATENT_KEYS}
  pixels = {k: np.stack([x[k][0] if k != 'input_ids' else x[k] for x in clips])
            for k in ('occluded', 'visible_mask', 'amodal', 'input_ids')}
  a, ma = trainee.train_step(tiny.copy_state(trainee.state), sharding.global_batch(latents, trainee.mesh))
  b, mb = trainee.train_step(tiny.copy_state(trainee.state), sharding.global_batch(pixels, trainee.mesh))
  print(f"loss from latents {float(ma['loss']):.8f}, from pixels {float(mb['loss']):.8f}")
  np.testing.assert_allclose(float(ma['loss']), float(mb['loss']), rtol=1e-5)
  np.testing.assert_allclose(float(ma['grad_norm']), float(mb['grad_norm']), rtol=1e-5)
  worst = 0.0
  for x, y in zip(jax.tree.leaves(_first_moment(a)), jax.tree.leaves(_first_moment(b))):
    x, y = np.asarray(x), np.asarray(y)
    worst = max(worst, float(np.abs(x - y).max() / np.abs(y).max()))
  print(f'largest gradient difference, relative to its tensor: {worst:.2g}')
  assert worst <= 1e-5
  moved = [np.abs(np.asarray(x) - np.asarray(y)) > 1e-5 for x, y in zip(jax.tree.leaves(a.params),
                                                                          jax.tree.leaves(b.params))]
  assert sum(m.sum() for m in moved) <= 1e-4 * sum(m.size for m in moved)

"""Grain pipelines: batch format, identical augmentation over frames and masks, determinism, per-process slices,
exact resumption through Orbax with 2 worker processes, frame-stage pairs from clips and pix2gestalt folders."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'data_prep'))
import fake_datasets as fake  # noqa: E402

from tgvac_jax.data import iterator_state  # noqa: E402
from tgvac_jax.data.pipeline import LoaderConfig, clip_dataset, data_source, device_batch, frame_dataset  # noqa


def take(ds, n):
  it = iter(ds)
  out = [next(it) for _ in range(n)]
  if hasattr(it, 'close'):
    it.close()
  return out


def same(a, b):
  return len(a) == len(b) and all(x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
                                  for x, y in zip(a, b))


def cfg(**kw):
  base = dict(batch_size=3, size=24, num_frames=3, worker_count=0, seed=0)
  base.update(kw)
  return LoaderConfig(**base)


def test_clip_batch_format(procedural_clips):
  (b,) = take(clip_dataset(procedural_clips, cfg(), process_index=0, process_count=1), 1)
  assert set(b) == {'occluded', 'visible_mask', 'amodal', 'amodal_mask', 'occluder_mask', 'occlusion_rate',
                    'caption'}
  for k in ('occluded', 'visible_mask', 'amodal'):
    assert b[k].shape == (3, 3, 24, 24, 3) and b[k].dtype == np.float32
    assert b[k].min() >= -1 and b[k].max() <= 1
  assert b['amodal_mask'].shape == (3, 3, 24, 24) and b['amodal_mask'].dtype == np.uint8
  assert b['occlusion_rate'].shape == (3, 3) and b['caption'].shape == (3,)
  assert all(str(c).startswith('a ') for c in b['caption'])
  vis = b['visible_mask'][..., 0] > 0
  np.testing.assert_array_equal(b['visible_mask'], np.repeat(vis[..., None], 3, -1) * 2.0 - 1)
  am, om = b['amodal_mask'].astype(bool), b['occluder_mask'].astype(bool)
  np.testing.assert_array_equal(vis, am & ~om)          # the invariant survives crop/resize/flip
  assert (b['amodal'][~am] == 1.0).all()                  # white outside the object
  (u,) = take(clip_dataset(procedural_clips, cfg(output='uint8'), process_index=0, process_count=1), 1)
  assert u['occluded'].dtype == np.uint8 and u['visible_mask'].shape == (3, 3, 24, 24)
  np.testing.assert_allclose(u['occluded'] * (2 / 255) - 1, b['occluded'], atol=1e-6)


def test_augmentation_is_identical_across_frames_and_masks(procedural_clips):
  """Without augmentation the batch equals the decoded records; with it, each clip's frames and masks share
  one crop and flip (checked against the records, cropped by brute force over the same transform)."""
  src = data_source(procedural_clips, 'train')
  (b,) = take(clip_dataset(src, LoaderConfig.eval(batch_size=2, size=32, worker_count=0), process_index=0,
                           process_count=1), 1)
  from tgvac_jax.data import schema
  x = schema.decode_record(src[0])
  np.testing.assert_array_equal(b['amodal_mask'][0], x['amodal_mask'])
  np.testing.assert_allclose(b['occluded'][0], x['occluded'] / 127.5 - 1, atol=1e-6)
  # flip only: every frame and mask flipped together or none
  fl = LoaderConfig(batch_size=4, size=32, crop_scale=(1.0, 1.0), flip=True, shuffle=False, worker_count=0)
  (bf,) = take(clip_dataset(src, fl, process_index=0, process_count=1), 1)
  for i in range(4):
    xi = schema.decode_record(src[i])
    flipped = np.array_equal(bf['amodal_mask'][i], xi['amodal_mask'][:, :, ::-1])
    plain = np.array_equal(bf['amodal_mask'][i], xi['amodal_mask'])
    assert flipped or plain
    ref = xi['occluded'][:, :, ::-1] if flipped and not plain else xi['occluded']
    np.testing.assert_allclose(bf['occluded'][i], ref / 127.5 - 1, atol=1e-6)


def test_deterministic_and_seeded(procedural_clips):
  a = take(clip_dataset(procedural_clips, cfg(), process_index=0, process_count=1), 4)
  b = take(clip_dataset(procedural_clips, cfg(), process_index=0, process_count=1), 4)
  c = take(clip_dataset(procedural_clips, cfg(seed=1), process_index=0, process_count=1), 4)
  assert same(a, b) and not same(a, c)


def test_process_slices_are_disjoint(procedural_clips):
  ev = LoaderConfig.eval(batch_size=1, size=32, worker_count=0)
  n = len(data_source(procedural_clips, 'train'))
  key = lambda bt: bt['occluded'].tobytes()
  parts = [{key(x) for x in take(clip_dataset(procedural_clips, LoaderConfig(**{**ev.__dict__, 'shuffle': True}),
                                              process_index=p, process_count=2), n // 2)} for p in (0, 1)]
  assert len(parts[0]) == len(parts[1]) == n // 2 and not parts[0] & parts[1]


def test_resume_exactly_with_two_workers(procedural_clips, tmp_path):
  c = cfg(worker_count=2, batch_size=2)
  ref = take(clip_dataset(procedural_clips, cfg(batch_size=2), process_index=0, process_count=1), 7)
  it = iter(clip_dataset(procedural_clips, c, process_index=0, process_count=1))
  first = [next(it) for _ in range(4)]
  assert same(first, ref[:4])                      # worker processes change nothing
  iterator_state.save(str(tmp_path / 'ckpt'), 4, it)
  rest = [next(it) for _ in range(3)]
  it.close()
  it2 = iter(clip_dataset(procedural_clips, c, process_index=0, process_count=1))
  iterator_state.restore(str(tmp_path / 'ckpt'), it2)
  resumed = [next(it2) for _ in range(3)]
  it2.close()
  assert same(rest, resumed) and same(resumed, ref[4:])


def test_frame_stage_from_clips_and_pix2gestalt(procedural_clips, tmp_path):
  (b,) = take(frame_dataset(procedural_clips, cfg(batch_size=4), process_index=0, process_count=1), 1)
  assert b['occluded'].shape == (4, 24, 24, 3) and b['amodal_mask'].shape == (4, 24, 24)
  root = fake.make_pix2gestalt(str(tmp_path / 'p2g'), n=5)
  (p,) = take(frame_dataset(root, cfg(batch_size=5, num_epochs=1, shuffle=False), process_index=0,
                            process_count=1), 1)
  assert p['occluded'].shape == (5, 24, 24, 3)
  np.testing.assert_array_equal(p['visible_mask'][..., 0] > 0, p['amodal_mask'].astype(bool) &
                                ~p['occluder_mask'].astype(bool))


class _Tok:
  def __call__(self, text):
    ids = [ord(ch) % 100 for ch in text][:8]
    return ids + [0] * (8 - len(ids))


def test_tokenizer_and_device_batch(procedural_clips):
  import jax
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  (b,) = take(clip_dataset(procedural_clips, cfg(batch_size=8, size=16, num_frames=2), tokenizer=_Tok(),
                           process_index=0, process_count=1), 1)
  assert b['input_ids'].shape == (8, 8) and b['input_ids'].dtype == np.int32
  mesh = Mesh(np.array(jax.devices()).reshape(-1), ('data',))
  g = device_batch(b, NamedSharding(mesh, P('data')))
  assert 'caption' not in g and g['occluded'].shape == (8, 2, 16, 16, 3)
  np.testing.assert_array_equal(np.asarray(g['amodal_mask']), b['amodal_mask'])

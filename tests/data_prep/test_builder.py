"""The TFDS array_record writer: splits without leakage, byte-identical rebuilds, resume after interruption,
bad inputs reported and skipped, and the CLI."""

import glob
import json
import os

import numpy as np
import pytest

import fake_datasets as fake
from built import records
from data_prep import build as build_cli
from data_prep import builder as B
from data_prep import staging
from data_prep.occlusion import SynthConfig
from data_prep.sources import get_source
from data_prep.sources.procedural import ProceduralSource
from tgvac_jax.data import schema

CFG = B.BuildConfig(SynthConfig(clip_len=3, resolution=24, clips_per_track=2, candidates=16))


def proc(n=10, seed=0):
  return ProceduralSource(num_videos=n, size=24, min_frames=6, max_frames=8, second_sprite_prob=0.2, seed=seed)


def shard_bytes(ds_dir):
  return {os.path.basename(p): open(p, 'rb').read() for p in sorted(glob.glob(os.path.join(ds_dir, '*array_record*')))}


def test_split_has_no_leakage_and_records_decode(tmp_path):
  res = B.build(proc(), CFG, str(tmp_path), progress=False)
  tr, va = records(res.dataset_dir, 'train'), records(res.dataset_dir, 'validation')
  assert len(tr) == res.num_examples['train'] > 0 and len(va) == res.num_examples['validation'] > 0
  vid = lambda r: schema.decode_record(r)['video_id']
  occ = lambda r: schema.decode_record(r)['occluder_video_id']
  train_v, val_v = {vid(r) for r in tr}, {vid(r) for r in va}
  assert not train_v & val_v
  # occluders come from the same split: no source object appears on both sides
  assert {occ(r) for r in tr} <= set(staging.split_videos(proc().videos(), 0, 0.2)) - val_v
  assert not {occ(r) for r in va} & train_v
  assert all(vid(r) != occ(r) for r in tr + va)
  # 80/20 by video
  splits = staging.split_videos(proc().videos(), 0, 0.2)
  assert sum(s == 'validation' for s in splits.values()) == 2
  x = schema.decode_record(tr[0])
  assert x['occluded'].shape == (3, 24, 24, 3) and x['amodal_mask'].shape == (3, 24, 24)
  np.testing.assert_array_equal(x['visible_mask'], x['amodal_mask'] & ~x['occluder_mask'])
  assert (x['amodal'][~x['amodal_mask']] == 255).all()
  st = json.load(open(os.path.join(res.dataset_dir, 'stats.json')))
  assert st['procedural']['videos'] == len(tr) + len(va)


def test_same_seed_same_bytes(tmp_path):
  a = B.build(proc(), CFG, str(tmp_path / 'a'), progress=False)
  b = B.build(proc(), CFG, str(tmp_path / 'b'), progress=False)
  c = B.build(proc(), B.BuildConfig(CFG.synth, seed=1), str(tmp_path / 'c'), progress=False)
  ba, bb = shard_bytes(a.dataset_dir), shard_bytes(b.dataset_dir)
  assert len(ba) == 2 and ba == bb
  assert shard_bytes(c.dataset_dir) != ba


def test_resume_after_interruption(tmp_path, monkeypatch):
  out = str(tmp_path / 'out')
  real = staging.stage_video
  calls = []

  def flaky(*a, **k):
    if len(calls) == 4:
      raise KeyboardInterrupt
    calls.append(1)
    return real(*a, **k)

  monkeypatch.setattr(staging, 'stage_video', flaky)
  with pytest.raises(KeyboardInterrupt):
    B.build(proc(), CFG, out, progress=False)
  chunks = glob.glob(os.path.join(out, '.work', '*', 'chunks', '*'))
  assert len(chunks) == 4 and not any('.tmp' in c for c in chunks)
  assert not glob.glob(os.path.join(out, 'tgvac_clips', '*', '*'))  # nothing half-written
  monkeypatch.setattr(staging, 'stage_video', real)

  # an interruption while writing shards leaves no dataset folder either
  def broken(self, split):
    yield from []
    raise KeyboardInterrupt

  monkeypatch.setattr(B.TgvacClips, '_generate_examples', broken)
  with pytest.raises(KeyboardInterrupt):
    B.build(proc(), CFG, out, progress=False)
  assert not glob.glob(os.path.join(out, 'tgvac_clips', '*', '*'))
  monkeypatch.undo()

  res = B.build(proc(), CFG, out, progress=False)
  fresh = B.build(proc(), CFG, str(tmp_path / 'fresh'), progress=False)
  assert shard_bytes(res.dataset_dir) == shard_bytes(fresh.dataset_dir)
  assert not os.path.exists(os.path.join(out, '.work', B.config_name('procedural', CFG)))
  # a finished build is reused; another configuration must be asked for explicitly
  assert B.build(proc(), CFG, out, progress=False).dataset_dir == res.dataset_dir
  with pytest.raises(RuntimeError, match='different configuration'):
    B.build(proc(), B.BuildConfig(CFG.synth, seed=5), out, progress=False)


def test_bad_davis_inputs_are_reported_and_skipped(davis_reference):
  res = davis_reference
  why = ' | '.join(f"{e['where']}: {e['why']}" for e in res.report.entries)
  assert 'mismatch: VideoError: mismatch: 8 frames but 6 annotation PNGs' in why
  assert 'empty: VideoError: empty: no annotated objects' in why
  assert 'unreadable frame' in why and 'corrupt' in why and 'dog/00003.jpg' in why
  recs = [r for s in ('train', 'validation') for r in records(res.dataset_dir, s)]
  videos = {schema.decode_record(r)['video_id'] for r in recs}
  assert videos and not videos & {'mismatch', 'empty', 'corrupt'}
  dog = [r for r in recs if r['video_id'] == b'dog']  # clips avoid the one bad frame of an otherwise good video
  assert dog and all(3 not in r['frame_indices'] for r in dog)
  rep = json.load(open(os.path.join(res.dataset_dir, 'report.json')))
  assert len(rep) == len(res.report.entries)


@pytest.mark.parametrize('name', ['youtube_vos', 'lasot', 'pix2gestalt'])
def test_build_other_sources(tmp_path, name):
  if name == 'youtube_vos':
    src = get_source(name, fake.make_ytvos(str(tmp_path / 'y')))
  elif name == 'lasot':
    m = str(tmp_path / 'm')
    src = get_source(name, fake.make_lasot(str(tmp_path / 'l'), m), masks=m)
  else:
    src = get_source(name, fake.make_pix2gestalt(str(tmp_path / 'p'), n=6))
  clip_len = 1 if name == 'pix2gestalt' else 3
  cfg = B.BuildConfig(SynthConfig(clip_len=clip_len, resolution=24, clips_per_track=1, candidates=16))
  res = B.build(src, cfg, str(tmp_path / 'out'), progress=False)
  assert res.num_examples['train'] > 0 and res.num_examples['validation'] > 0, res.report.summary()
  x = schema.decode_record(records(res.dataset_dir, 'train')[0])
  assert x['occluded'].shape == (clip_len, 24, 24, 3)
  np.testing.assert_array_equal(x['visible_mask'], x['amodal_mask'] & ~x['occluder_mask'])
  if name == 'lasot':
    assert x['caption'].endswith('flying in the sky')
    # the last frame of every sequence is flagged fully occluded: no clip uses it
    assert all(7 not in r['frame_indices'] for r in records(res.dataset_dir, 'train'))


def test_cli(tmp_path, capsys):
  out = str(tmp_path / 'cli')
  rc = build_cli.main(['--source', 'procedural', '--out', out, '--num_videos', '8', '--resolution', '24', '--workers', '1',
                       '--clip_len', '3', '--clips_per_track', '1', '--quiet', '--source_arg', 'min_frames=6',
                       '--source_arg', 'max_frames=8'])
  text = capsys.readouterr().out
  assert rc == 0 and '# average occlusion-coverage rate' in text and 'Mean #frames' in text
  assert os.path.exists(os.path.join(out, 'tgvac_clips', 'procedural_3x24x24', '1.0.0', 'stats.md'))
  from data_prep import stats
  stats.main([out])  # re-prints the saved table
  assert '# synthesized video' in capsys.readouterr().out
  # a clear error, and no output, for a missing annotation folder
  root = fake.make_davis(str(tmp_path / 'davis'), seqs=('a', 'b'))
  import shutil
  shutil.rmtree(os.path.join(root, 'Annotations'))
  rc = build_cli.main(['--source', 'davis', '--root', root, '--out', str(tmp_path / 'o2'), '--quiet'])
  assert rc == 2 and 'missing annotation folder' in capsys.readouterr().err
  assert not os.path.exists(str(tmp_path / 'o2'))


def test_cli_occluder_kinds(tmp_path, capsys):
  args = ['--source', 'procedural', '--num_videos', '6', '--resolution', '24', '--workers', '1', '--clip_len', '3',
          '--clips_per_track', '1', '--quiet', '--source_arg', 'min_frames=6', '--source_arg', 'max_frames=8']
  out = str(tmp_path / 'bars')
  assert build_cli.main(args + ['--out', out, '--occluders', 'bar=1']) == 0
  ds = os.path.join(out, 'tgvac_clips', 'procedural_3x24x24', '1.0.0')
  with open(os.path.join(ds, 'build_config.json')) as f:
    assert json.load(f)['config']['synth']['occluders'] == [['bar', 1.0]]
  bars = records(ds, 'train') + records(ds, 'validation')
  assert bars and all(r['occluder_video_id'] in ('', b'') for r in bars)   # drawn, not cut from another video
  for bad, why in (('wall=1', 'kinds must be among'), ('object:1', 'KIND=WEIGHT pairs')):
    capsys.readouterr()
    assert build_cli.main(args + ['--out', str(tmp_path / 'bad'), '--occluders', bad]) == 2
    err = capsys.readouterr().err
    assert why in err and err.count('\n') == 1, err
    assert not os.path.exists(str(tmp_path / 'bad'))

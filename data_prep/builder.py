"""The dataset writer: synthesized clips -> a TFDS dataset in array_record files (no TensorFlow needed).

Two phases, both safe to interrupt:
1. Staging: for each source video (sorted), synthesize its clips and encode them into one chunk file under
   `<out>/.work/<config>/chunks/`, written to a temporary name and renamed when complete. A rerun skips the
   chunks that exist (resume); a run with a different configuration refuses to mix with them.
   Every video draws from its own RNG seeded by (seed, video id), so chunks do not depend on run order.
2. Writing: the TFDS `GeneratorBasedBuilder` below reads the chunks into `train` and `validation` splits.
   TFDS writes into an `incomplete.*` folder and renames it when all shards are done; stale ones are removed.

Splits are by source video (80/20 by default, seeded): occluders are drawn from videos of the same split, so no
source object appears in both. Unreadable videos or frames are reported (report.json) and skipped.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import json
import os
import pickle
import shutil
import zlib
from typing import Callable

import numpy as np
import tensorflow_datasets as tfds

from data_prep import stats as stats_lib
from data_prep.captions import source_caption
from data_prep.occlusion import SynthConfig, synthesize_track
from data_prep.sources.base import FrameError, Source, VideoError
from tgvac_jax.data import schema

DATASET_NAME = 'tgvac_clips'
VERSION = '1.0.0'


@dataclasses.dataclass(frozen=True)
class BuildConfig:
  synth: SynthConfig = SynthConfig()
  seed: int = 0
  val_fraction: float = 0.2
  image_format: str = 'png'      # occluded frames: 'png' (lossless) or 'jpeg'
  target_format: str = 'png'     # amodal target frames
  jpeg_quality: int = 95
  max_videos: int = 0            # 0: all

  def to_json(self) -> dict:
    d = dataclasses.asdict(self)
    d['synth'] = {k: list(v) if isinstance(v, tuple) else v for k, v in d['synth'].items()}
    return d


def config_name(source_name: str, cfg: BuildConfig) -> str:
  h, w = cfg.synth.size
  return f'{source_name}_{cfg.synth.clip_len}x{h}x{w}'


class Report:
  """Skipped videos/frames/tracks, with the reason."""

  def __init__(self):
    self.entries: list[dict] = []

  def __call__(self, where: str, why: str):
    self.entries.append({'where': str(where), 'why': str(why)})

  def summary(self, limit: int = 10) -> str:
    if not self.entries:
      return 'no skips'
    lines = [f'{len(self.entries)} skipped item(s):'] + [f"  {e['where']}: {e['why']}" for e in self.entries[:limit]]
    if len(self.entries) > limit:
      lines.append(f'  ... ({len(self.entries) - limit} more in report.json)')
    return '\n'.join(lines)


def split_videos(videos: list[str], seed: int, val_fraction: float) -> dict[str, str]:
  """Video id -> 'train' | 'validation', a seeded permutation of the sorted ids.

  Each side gets at least 2 videos when there are 4 or more (occluders come from another video of the same side)."""
  vids = sorted(videos)
  n_val = int(round(val_fraction * len(vids)))
  if val_fraction > 0 and len(vids) >= 2:
    least = 2 if len(vids) >= 4 else 1
    n_val = min(max(n_val, least), len(vids) - least)
  perm = np.random.default_rng([seed, 0x5917]).permutation(len(vids))
  val = {vids[i] for i in perm[:n_val]}
  return {v: ('validation' if v in val else 'train') for v in vids}


def _video_seed(seed: int, video_id: str) -> list[int]:
  return [seed, zlib.crc32(video_id.encode())]


def _atomic_pickle(obj, path: str):
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'wb') as f:
    pickle.dump(obj, f, protocol=5)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _atomic_json(obj, path: str):
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


def fingerprint(source: Source, cfg: BuildConfig) -> dict:
  return {'source': source.describe(), 'config': cfg.to_json(), 'version': VERSION}


# ----------------------------------------------------------------------------------------------- staging

def _clip_meta(track, occ, clip, caption: str) -> dict:
  return dict(source=track.source, video_id=track.video_id, object_id=track.object_id,
              class_name=track.class_name, occluder_video_id=occ.video_id if occ else '',
              occluder_object_id=occ.object_id if occ else 0, difficulty=clip.difficulty,
              frame_indices=clip.frame_indices.tolist(), occluder_frame_indices=clip.occluder_frame_indices.tolist(),
              source_num_frames=track.source_num_frames or track.num_frames,
              occlusion_rate=[float(x) for x in clip.occlusion_rate], coverage=float(clip.coverage),
              object_size=float(clip.object_size), caption=caption)


def stage_video(source: Source, video_id: str, split: str, pool: list[str], cfg: BuildConfig,
                captioner: Callable, tracks_of: Callable[[str], list]) -> dict:
  """Synthesizes and encodes all clips of one video. -> chunk dict (examples, meta, skips)."""
  skips: list[dict] = []
  seen = set()

  def report(where, why):  # each distinct problem once per video (occluder videos come up repeatedly)
    if (str(where), str(why)) not in seen:
      seen.add((str(where), str(why)))
      skips.append({'where': str(where), 'why': str(why)})
  examples, metas = [], []
  rng = np.random.default_rng(_video_seed(cfg.seed, video_id))
  if getattr(source, 'paired', False):  # ready-made pairs (pix2gestalt): no synthesis
    items = source.pair_clips(video_id, cfg.synth.size)
  else:
    others = [v for v in pool if v != video_id]

    def pick_occluder(r):
      for _ in range(8):
        if not others:
          return None
        v = others[int(r.integers(len(others)))]
        try:
          ts = tracks_of(v)
        except (VideoError, FrameError, OSError) as e:
          report(v, f'occluder video unusable: {e}')
          continue
        if ts:
          return ts[int(r.integers(len(ts)))]
      return None

    items = []
    for track in tracks_of(video_id):
      try:
        clips = synthesize_track(track, pick_occluder, cfg.synth, rng, report)
      except (VideoError, FrameError, OSError, ValueError) as e:
        report(track.key, f'{type(e).__name__}: {e}')
        continue
      for i, clip in enumerate(clips):
        occ = clip.placement.pop('occluder', None)
        meta = _clip_meta(track, occ, clip, captioner(track, clip))
        arrays = dict(occluded=clip.occluded, amodal=clip.amodal, visible_mask=clip.visible_mask,
                      amodal_mask=clip.amodal_mask, occluder_mask=clip.occluder_mask)
        items.append((f'{track.key}/{i}', arrays, meta))
  for key, arrays, meta in items:
    examples.append((key, schema.encode_record(arrays, meta, cfg.image_format, cfg.jpeg_quality,
                                               cfg.target_format)))
    metas.append({k: v for k, v in meta.items() if k not in ('frame_indices', 'occluder_frame_indices')} |
                 {'split': split, 'key': key})
  return {'video_id': video_id, 'split': split, 'examples': examples, 'meta': metas, 'skips': skips}


def stage(source: Source, cfg: BuildConfig, work_dir: str, captioner: Callable = source_caption,
          progress: bool = True, overwrite: bool = False) -> list[str]:
  """Phase 1 (resumable). -> [videos.json] + chunk paths in video order."""
  chunk_dir = os.path.join(work_dir, 'chunks')
  fp = fingerprint(source, cfg)
  man = os.path.join(work_dir, 'manifest.json')
  if os.path.exists(man):
    with open(man) as f:
      old = json.load(f)
    if old != json.loads(json.dumps(fp)):
      if not overwrite:
        raise RuntimeError(f'{work_dir} holds chunks of a different configuration; pass --overwrite to discard '
                           'them, or another --out')
      shutil.rmtree(work_dir)
  os.makedirs(chunk_dir, exist_ok=True)
  _atomic_json(fp, man)
  for stale in glob.glob(os.path.join(chunk_dir, '*.tmp*')):
    os.remove(stale)

  videos = sorted(source.videos())
  if cfg.max_videos:
    videos = videos[:cfg.max_videos]
  if len(videos) < 2:
    raise RuntimeError(f'{source.name}: need at least 2 videos (an occluder comes from another video), '
                       f'found {len(videos)}')
  tracks_of = functools.lru_cache(maxsize=64)(source.tracks)
  videos, pre_skips = _usable_videos(source, videos, tracks_of, work_dir, progress)
  if len(videos) < 2:
    raise RuntimeError(f'{source.name}: fewer than 2 usable videos:\n' +
                       '\n'.join(f"  {e['where']}: {e['why']}" for e in pre_skips[:10]))
  splits = split_videos(videos, cfg.seed, cfg.val_fraction)
  pools = {s: [v for v in videos if splits[v] == s] for s in ('train', 'validation')}
  cached_tracks = tracks_of

  paths = [os.path.join(work_dir, 'videos.json')]
  bar = _tqdm(videos, progress, desc=f'synthesizing {source.name}', unit='video')
  n_clips = 0
  for v in bar:
    path = os.path.join(chunk_dir, f'{_safe(v)}.pkl')
    paths.append(path)
    if os.path.exists(path):
      continue
    try:
      chunk = stage_video(source, v, splits[v], pools[splits[v]], cfg, captioner, cached_tracks)
    except (VideoError, FrameError, OSError) as e:
      chunk = {'video_id': v, 'split': splits[v], 'examples': [], 'meta': [],
               'skips': [{'where': v, 'why': f'{type(e).__name__}: {e}'}]}
    _atomic_pickle(chunk, path)
    n_clips += len(chunk['examples'])
    if hasattr(bar, 'set_postfix'):
      bar.set_postfix(clips=n_clips)
  return paths


def _safe(video_id: str) -> str:
  """A file name for a video id (ids may hold '/'), unique by a short hash."""
  keep = ''.join(c if c.isalnum() or c in '-_.' else '_' for c in video_id)[:80]
  return f'{keep}-{zlib.crc32(video_id.encode()):08x}'


def _usable_videos(source: Source, videos: list[str], tracks_of, work_dir: str, progress: bool):
  """Videos whose tracks can be listed (cheap: annotations only), so the 80/20 split counts usable videos.
  Cached in work_dir/videos.json for resumption. -> (usable ids, skip entries)."""
  path = os.path.join(work_dir, 'videos.json')
  if os.path.exists(path):
    with open(path) as f:
      d = json.load(f)
    return d['usable'], d['skips']
  usable, skips = [], []
  if getattr(source, 'paired', False):
    usable = list(videos)
  else:
    for v in _tqdm(videos, progress, desc=f'checking {source.name}', unit='video'):
      try:
        if tracks_of(v):
          usable.append(v)
        else:
          skips.append({'where': v, 'why': 'no object tracks'})
      except (VideoError, FrameError, OSError, ValueError) as e:
        skips.append({'where': v, 'why': f'{type(e).__name__}: {e}'})
  _atomic_json({'usable': usable, 'skips': skips}, path)
  return usable, skips


def _tqdm(it, enabled, **kw):
  if not enabled:
    return it
  from tqdm import tqdm
  return tqdm(it, **kw)


def _load_chunk(path: str) -> dict:
  with open(path, 'rb') as f:
    return pickle.load(f)


# ------------------------------------------------------------------------------------------------ writing

class TgvacClips(tfds.core.GeneratorBasedBuilder):
  """Synthetic text-guided video amodal completion clips (paper §3.2), one record per clip."""

  VERSION = tfds.core.Version(VERSION)

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):  # no checksums/metadata files next to the code (and avoids an optional tfds import)
    return None

  def __init__(self, *, staging_dir: str | None = None, **kwargs):
    self._staging_dir = staging_dir
    super().__init__(**kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, description=self.__doc__, features=schema.features())

  def _split_generators(self, dl_manager):
    del dl_manager
    if not self._staging_dir:
      raise RuntimeError('TgvacClips is written by data_prep.build (it needs staged chunks)')
    return {s: self._generate_examples(s) for s in ('train', 'validation')}

  def _generate_examples(self, split: str):
    for path in sorted(glob.glob(os.path.join(self._staging_dir, 'chunks', '*.pkl'))):
      chunk = _load_chunk(path)
      if chunk['split'] != split:
        continue
      yield from chunk['examples']


@dataclasses.dataclass
class BuildResult:
  dataset_dir: str
  stats: dict
  report: Report
  num_examples: dict


def build(source: Source, cfg: BuildConfig, out_dir: str, captioner: Callable = source_caption,
          progress: bool = True, overwrite: bool = False, keep_work: bool = False) -> BuildResult:
  """Stages and writes the dataset; returns its folder, Table-1 stats and the skip report."""
  name = config_name(source.name, cfg)
  work_dir = os.path.join(out_dir, '.work', name)
  cfg_dir = os.path.join(out_dir, DATASET_NAME, name)
  ds_dir = os.path.join(cfg_dir, VERSION)
  fp = json.loads(json.dumps(fingerprint(source, cfg)))
  fp_path = os.path.join(ds_dir, 'build_config.json')
  if os.path.exists(os.path.join(ds_dir, 'dataset_info.json')):
    same = os.path.exists(fp_path) and json.load(open(fp_path)) == fp
    if same and not overwrite:
      return _result_from_dir(ds_dir)
    if not overwrite:
      raise RuntimeError(f'{ds_dir} exists with a different configuration; pass --overwrite or another --out')
    shutil.rmtree(ds_dir)

  paths = stage(source, cfg, work_dir, captioner, progress, overwrite)
  report = Report()
  metas = []
  seen = set()
  with open(paths[0]) as f:
    pre = json.load(f)['skips']
  for p in paths[1:]:
    chunk = _load_chunk(p)
    for e in chunk['skips']:
      if (e['where'], e['why']) not in seen:
        seen.add((e['where'], e['why']))
        report.entries.append(e)
    metas.extend(chunk['meta'])
  report.entries = pre + report.entries
  if not any(m['split'] == 'train' for m in metas) or not any(m['split'] == 'validation' for m in metas):
    raise RuntimeError(f'{source.name}: too few clips to fill both splits ({len(metas)} clips; the split is by '
                       'video, and videos that yield no clip leave their side empty).\n' + report.summary())

  for stale in glob.glob(os.path.join(cfg_dir, 'incomplete.*')) + glob.glob(os.path.join(cfg_dir, '*.incomplete*')):
    shutil.rmtree(stale, ignore_errors=True)
  if not progress:
    tfds.disable_progress_bar()
  builder = TgvacClips(data_dir=out_dir, config=tfds.core.BuilderConfig(name=name, description=f'{source.name} clips'),
                       staging_dir=work_dir, file_format='array_record')
  try:
    builder.download_and_prepare(download_dir=os.path.join(work_dir, 'downloads'))
  except BaseException:
    for stale in glob.glob(os.path.join(cfg_dir, 'incomplete.*')):
      shutil.rmtree(stale, ignore_errors=True)
    raise
  table = {source.name: stats_lib.table1(metas)}
  for s in ('train', 'validation'):
    table[f'{source.name}/{s}'] = stats_lib.table1([m for m in metas if m['split'] == s])
  stats_lib.save(table, ds_dir)
  _atomic_json([{k: v for k, v in m.items()} for m in metas], os.path.join(ds_dir, 'clips.json'))
  _atomic_json(report.entries, os.path.join(ds_dir, 'report.json'))
  _atomic_json(fp, fp_path)
  if not keep_work:
    shutil.rmtree(work_dir, ignore_errors=True)
  counts = {s: sum(m['split'] == s for m in metas) for s in ('train', 'validation')}
  return BuildResult(ds_dir, table, report, counts)


def _result_from_dir(ds_dir: str) -> BuildResult:
  with open(os.path.join(ds_dir, 'stats.json')) as f:
    table = json.load(f)
  rep = Report()
  with open(os.path.join(ds_dir, 'report.json')) as f:
    rep.entries = json.load(f)
  with open(os.path.join(ds_dir, 'clips.json')) as f:
    metas = json.load(f)
  counts = {s: sum(m['split'] == s for m in metas) for s in ('train', 'validation')}
  return BuildResult(ds_dir, table, rep, counts)

"""Phase 1 of a build: every source video's clips synthesized, encoded and staged as one chunk file.

`<out>/.work/<config>/`: manifest.json (the configuration; a rerun with another one refuses to mix), videos.json
(the usable videos and the skips found while listing them) and chunks/<video>.npz (data_prep.chunks), each
written to a temporary name and renamed when complete. A rerun stages only the videos without a chunk (resume).

Videos are staged in N worker processes (data_prep.pool) or, in a Beam pipeline, on Beam workers, by one
`Stager`. Every video draws from its own RNG seeded by (seed, video id), its occluders from the other videos of
its split, so a chunk does not depend on where, when or in which order it was staged.

Splits are by source video (80/20 by default, seeded): occluders are drawn from videos of the same split, so no
source object appears in both. Unreadable videos or frames are reported and skipped.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
import os
import shutil
import zlib
from typing import Callable

import numpy as np

from data_prep import chunks
from data_prep.captions import source_caption
from data_prep.occlusion import OBJECT_ONLY, SynthConfig, synthesize_track
from data_prep.pool import WorkerPool
from data_prep.sources.base import FrameError, Source, VideoError
from tgvac_jax.data import schema

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
    if self.synth.occluders == OBJECT_ONLY:   # the default: builds from before the occluder kinds keep theirs
      del d['synth']['occluders']
    return d


def fingerprint(source: Source, cfg: BuildConfig) -> dict:
  return json.loads(json.dumps({'source': source.describe(), 'config': cfg.to_json(), 'version': VERSION}))


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


def atomic_json(obj, path: str):
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


def _safe(video_id: str) -> str:
  """A file name for a video id (ids may hold '/'), unique by a short hash."""
  keep = ''.join(c if c.isalnum() or c in '-_.' else '_' for c in video_id)[:80]
  return f'{keep}-{zlib.crc32(video_id.encode()):08x}'


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
  rng = np.random.default_rng([cfg.seed, zlib.crc32(video_id.encode())])
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


class Stager:
  """The per-video work of a build, wherever it runs (this process, a worker process, a Beam worker): listing a
  video's tracks (`check`) and staging its chunk unless it exists (`stage`). Pickles as its inputs (source,
  captioner, config, work folder); the split is read from videos.json, which the build writes once every video
  is checked, so every process derives the same one."""

  def __init__(self, source: Source, cfg: BuildConfig, captioner: Callable, work_dir: str):
    self.source, self.cfg, self.captioner, self.work_dir = source, cfg, captioner, work_dir
    self._splits = self._pools = self._tracks_of = None

  def __getstate__(self):
    return self.__dict__ | {'_splits': None, '_pools': None, '_tracks_of': None}

  def __call__(self, task: tuple[str, str]):
    """('check', video) -> None or a skip entry; ('stage', video) -> the number of clips staged now."""
    op, video_id = task
    return self.check(video_id) if op == 'check' else self.stage(video_id)

  @property
  def splits(self) -> dict[str, str]:
    if self._splits is None:
      with open(os.path.join(self.work_dir, 'videos.json')) as f:
        usable = json.load(f)['usable']
      self._splits = split_videos(usable, self.cfg.seed, self.cfg.val_fraction)
      self._pools = {s: [v for v in self._splits if self._splits[v] == s] for s in ('train', 'validation')}
    return self._splits

  def tracks_of(self, video_id: str) -> list:
    if self._tracks_of is None:
      self._tracks_of = functools.lru_cache(maxsize=64)(self.source.tracks)
    return self._tracks_of(video_id)

  def path(self, video_id: str) -> str:
    return os.path.join(self.work_dir, 'chunks', f'{_safe(video_id)}.npz')

  def check(self, video_id: str) -> dict | None:
    """Can the video's tracks be listed? (cheap: annotations only)"""
    try:
      return None if self.source.tracks(video_id) else {'where': video_id, 'why': 'no object tracks'}
    except (VideoError, FrameError, OSError, ValueError) as e:
      return {'where': video_id, 'why': f'{type(e).__name__}: {e}'}

  def stage(self, video_id: str) -> int:
    path = self.path(video_id)
    if os.path.exists(path):
      return 0
    split = self.splits[video_id]
    try:
      chunk = stage_video(self.source, video_id, split, self._pools[split], self.cfg, self.captioner,
                          self.tracks_of)
    except (VideoError, FrameError, OSError) as e:
      chunk = {'video_id': video_id, 'split': split, 'examples': [], 'meta': [],
               'skips': [{'where': video_id, 'why': f'{type(e).__name__}: {e}'}]}
    chunks.write(path, chunk)
    return len(chunk['examples'])


@dataclasses.dataclass
class Staging:
  stager: Stager
  videos: list[str]      # usable videos, sorted
  skips: list[dict]      # found while listing them

  def chunk_paths(self) -> list[str]:
    return [self.stager.path(v) for v in self.videos]


def stage(source: Source, cfg: BuildConfig, work_dir: str, captioner: Callable = source_caption,
          progress: bool = True, overwrite: bool = False, workers: int = 1, synthesize: bool = True) -> Staging:
  """Phase 1 (resumable) in `workers` processes. `synthesize=False` stops after listing and splitting the videos
  (a Beam pipeline stages them)."""
  chunk_dir = os.path.join(work_dir, 'chunks')
  fp = fingerprint(source, cfg)
  man = os.path.join(work_dir, 'manifest.json')
  if os.path.exists(man):
    with open(man) as f:
      old = json.load(f)
    if old != fp:
      if not overwrite:
        raise RuntimeError(f'{work_dir} holds chunks of a different configuration; pass --overwrite to discard '
                           'them, or another --out')
      shutil.rmtree(work_dir)
  os.makedirs(chunk_dir, exist_ok=True)
  atomic_json(fp, man)
  for stale in glob.glob(os.path.join(glob.escape(work_dir), '*.tmp*')) + glob.glob(
      os.path.join(glob.escape(chunk_dir), '*.tmp*')):
    os.remove(stale)

  videos = sorted(source.videos())
  if cfg.max_videos:
    videos = videos[:cfg.max_videos]
  if len(videos) < 2:
    raise RuntimeError(f'{source.name}: need at least 2 videos (an occluder comes from another video), '
                       f'found {len(videos)}')
  stager = Stager(source, cfg, captioner, work_dir)
  with WorkerPool(stager, workers) as pool:
    videos, pre_skips = _usable_videos(stager, videos, pool, progress)
    if len(videos) < 2:
      raise RuntimeError(f'{source.name}: fewer than 2 usable videos:\n' +
                         '\n'.join(f"  {e['where']}: {e['why']}" for e in pre_skips[:10]))
    if synthesize:
      todo = [v for v in videos if not os.path.exists(stager.path(v))]
      bar = _tqdm(progress, total=len(videos), initial=len(videos) - len(todo),
                  desc=f'synthesizing {source.name}', unit='video')
      n_clips = 0
      for _, n in pool.map(('stage', v) for v in todo):
        n_clips += n
        bar.update(1)
        bar.set_postfix(clips=n_clips)
      bar.close()
  return Staging(stager, videos, pre_skips)


def _usable_videos(stager: Stager, videos: list[str], pool: WorkerPool, progress: bool):
  """Videos whose tracks can be listed, so the 80/20 split counts usable videos. Cached in videos.json for
  resumption. -> (usable ids, skip entries)."""
  path = os.path.join(stager.work_dir, 'videos.json')
  if os.path.exists(path):
    with open(path) as f:
      d = json.load(f)
    return d['usable'], d['skips']
  found = {}
  if not getattr(stager.source, 'paired', False):
    bar = _tqdm(progress, total=len(videos), desc=f'checking {stager.source.name}', unit='video')
    for (_, v), skip in pool.map(('check', v) for v in videos):
      found[v] = skip
      bar.update(1)
    bar.close()
  usable = [v for v in videos if found.get(v) is None]
  skips = [found[v] for v in videos if found.get(v) is not None]
  atomic_json({'usable': usable, 'skips': skips}, path)
  return usable, skips


def _tqdm(enabled: bool, **kw):
  from tqdm import tqdm
  return tqdm(disable=not enabled, **kw)

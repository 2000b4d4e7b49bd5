"""Phase 2 of a build: the staged chunks -> a TFDS dataset in array_record files (no TensorFlow needed).

`build()` stages every video (data_prep.staging: N worker processes, resumable) and writes both splits with the
TFDS `GeneratorBasedBuilder` below; TFDS writes into an `incomplete.*` folder and renames it when all shards are
done, and stale ones are removed. Next to the records: stats.json/stats.md (Table 1), clips.json, report.json
(unreadable videos and frames, skipped) and build_config.json.

With `beam_options`, the same builder runs as an Apache Beam pipeline through TFDS's Beam support (the `beam`
extra): the videos are staged on the Beam workers by the same `Stager` into the same chunks, and TFDS's Beam writer
shuffles and writes the same records, on the DirectRunner or any cluster runner. Every worker must see the source
and the output folder at the same path.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
from typing import Callable, Sequence

import tensorflow_datasets as tfds

from data_prep import chunks
from data_prep import stats as stats_lib
from data_prep.captions import source_caption
from data_prep.sources.base import Source
from data_prep.staging import VERSION, BuildConfig, Staging, atomic_json, fingerprint, stage
from tgvac_jax.data import schema

DATASET_NAME = 'tgvac_clips'


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


class TgvacClips(tfds.core.GeneratorBasedBuilder):
  """Synthetic text-guided video amodal completion clips (paper §3.2), one record per clip."""

  VERSION = tfds.core.Version(VERSION)

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):  # no checksums/metadata files next to the code (and avoids an optional tfds import)
    return None

  def __init__(self, *, staging: Staging | None = None, beam: bool = False, **kwargs):
    self._staging, self._beam = staging, beam
    super().__init__(**kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, description=self.__doc__, features=schema.features())

  def _split_generators(self, dl_manager):
    del dl_manager
    if self._staging is None:
      raise RuntimeError('TgvacClips is written by data_prep.build (it needs staged chunks)')
    if self._beam:
      from data_prep.beam_stage import stage_split
      return {s: stage_split(self._staging, s) for s in ('train', 'validation')}
    return {s: self._generate_examples(s) for s in ('train', 'validation')}

  def _generate_examples(self, split: str):
    for v in self._staging.videos:
      if self._staging.stager.splits[v] == split:
        yield from chunks.read_examples(self._staging.stager.path(v))[1]


@dataclasses.dataclass
class BuildResult:
  dataset_dir: str
  stats: dict
  report: Report
  num_examples: dict


def _collect(staging: Staging) -> tuple[list[dict], Report]:
  """Per-clip metadata and the deduplicated skip report from the staged chunks' headers, in video order."""
  report = Report()
  report.entries = list(staging.skips)
  metas, seen = [], set()
  for p in staging.chunk_paths():
    if not os.path.exists(p):
      continue
    head = chunks.read_header(p)
    for e in head['skips']:
      if (e['where'], e['why']) not in seen:
        seen.add((e['where'], e['why']))
        report.entries.append(e)
    metas.extend(head['meta'])
  return metas, report


def _check_splits(source: Source, metas: list[dict], report: Report):
  if not any(m['split'] == 'train' for m in metas) or not any(m['split'] == 'validation' for m in metas):
    raise RuntimeError(f'{source.name}: too few clips to fill both splits ({len(metas)} clips; the split is by '
                       'video, and videos that yield no clip leave their side empty).\n' + report.summary())


def _download_config(beam_options: Sequence[str] | None):
  if beam_options is None:
    return tfds.download.DownloadConfig()
  try:
    from apache_beam.options.pipeline_options import PipelineOptions
  except ImportError as e:
    raise ImportError("a Beam build needs Apache Beam: pip install 'tgvac-jax[beam]'") from e
  return tfds.download.DownloadConfig(beam_options=PipelineOptions(list(beam_options)))


def build(source: Source, cfg: BuildConfig, out_dir: str, captioner: Callable = source_caption,
          progress: bool = True, overwrite: bool = False, keep_work: bool = False, workers: int = 1,
          beam_options: Sequence[str] | None = None) -> BuildResult:
  """Stages and writes the dataset; returns its folder, Table-1 stats and the skip report.

  `workers`: staging processes on this machine (1: in this process). `beam_options`: Beam pipeline flags
  (e.g. ['--runner=DirectRunner']) to stage and write as a Beam pipeline instead; the listing and splitting of
  the videos still runs here, in `workers` processes. The records are the same in every mode. Workers are
  spawned processes: a script calling this with workers > 1 needs the `if __name__ == '__main__':` guard."""
  name = config_name(source.name, cfg)
  work_dir = os.path.join(out_dir, '.work', name)
  cfg_dir = os.path.join(out_dir, DATASET_NAME, name)
  ds_dir = os.path.join(cfg_dir, VERSION)
  fp = fingerprint(source, cfg)
  fp_path = os.path.join(ds_dir, 'build_config.json')
  if os.path.exists(os.path.join(ds_dir, 'dataset_info.json')):
    same = os.path.exists(fp_path) and json.load(open(fp_path)) == fp
    if same and not overwrite:
      return _result_from_dir(ds_dir)
    if not overwrite:
      raise RuntimeError(f'{ds_dir} exists with a different configuration; pass --overwrite or another --out')
    shutil.rmtree(ds_dir)
  download_config = _download_config(beam_options)

  staging = stage(source, cfg, work_dir, captioner, progress, overwrite, workers,
                  synthesize=beam_options is None)
  if beam_options is None:
    metas, report = _collect(staging)
    _check_splits(source, metas, report)

  for stale in glob.glob(os.path.join(cfg_dir, 'incomplete.*')) + glob.glob(os.path.join(cfg_dir, '*.incomplete*')):
    shutil.rmtree(stale, ignore_errors=True)
  if not progress:
    tfds.disable_progress_bar()
  builder = TgvacClips(data_dir=out_dir, config=tfds.core.BuilderConfig(name=name, description=f'{source.name} clips'),
                       staging=staging, beam=beam_options is not None, file_format='array_record')
  try:
    builder.download_and_prepare(download_dir=os.path.join(work_dir, 'downloads'), download_config=download_config)
  except BaseException:
    for stale in glob.glob(os.path.join(cfg_dir, 'incomplete.*')):
      shutil.rmtree(stale, ignore_errors=True)
    if beam_options is not None:  # a split left empty is the likely cause: say so
      metas, report = _collect(staging)
      if all(os.path.exists(p) for p in staging.chunk_paths()):
        _check_splits(source, metas, report)
    raise
  if beam_options is not None:
    metas, report = _collect(staging)
  table = {source.name: stats_lib.table1(metas)}
  for s in ('train', 'validation'):
    table[f'{source.name}/{s}'] = stats_lib.table1([m for m in metas if m['split'] == s])
  stats_lib.save(table, ds_dir)
  atomic_json(metas, os.path.join(ds_dir, 'clips.json'))
  atomic_json(report.entries, os.path.join(ds_dir, 'report.json'))
  atomic_json(fp, fp_path)
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

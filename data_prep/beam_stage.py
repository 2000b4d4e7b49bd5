"""The staging of a build as Apache Beam transforms, for TFDS's Beam support (the `beam` extra).

Per split: the split's video ids -> Reshuffle (spread over the workers) -> each video staged by the local build's
`Stager` (its chunk written to the shared work folder, or reused when a rerun finds it there) -> its examples read
back from the chunk. TFDS's Beam writer then encodes, shuffles by key and writes the shards.
"""

from __future__ import annotations

import apache_beam as beam

from data_prep import chunks
from data_prep.staging import Stager, Staging


class _StageVideo(beam.DoFn):
  def __init__(self, stager: Stager):
    self.stager = stager
    self.clips = beam.metrics.Metrics.counter('tgvac', 'clips')
    self.videos = beam.metrics.Metrics.counter('tgvac', 'videos')

  def process(self, video_id: str):
    self.stager.stage(video_id)
    _, examples = chunks.read_examples(self.stager.path(video_id))
    self.videos.inc()
    self.clips.inc(len(examples))
    yield from examples


@beam.ptransform_fn
def _stage_split(root, videos: list[str], stager: Stager):
  return root | 'Videos' >> beam.Create(videos) | 'Spread' >> beam.Reshuffle() | 'Stage' >> beam.ParDo(
      _StageVideo(stager))


def stage_split(staging: Staging, split: str) -> beam.PTransform:
  """The (key, example) pairs of one split, staged on the Beam workers."""
  return _stage_split([v for v in staging.videos if staging.stager.splits[v] == split], staging.stager)

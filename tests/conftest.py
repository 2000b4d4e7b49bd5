"""Test-wide settings: a simulated 8-device CPU mesh, so sharding tests run anywhere."""

import os

import pytest

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')


@pytest.fixture(scope='session')
def procedural_clips(tmp_path_factory) -> str:
  """A small built dataset (10 procedural videos, 4-frame clips at 32², train and validation splits), built once
  for every test that reads records."""
  from data_prep import builder  # pylint: disable=import-outside-toplevel  (TFDS: only for tests that need it)
  from data_prep.occlusion import SynthConfig  # pylint: disable=import-outside-toplevel
  from data_prep.sources.procedural import ProceduralSource  # pylint: disable=import-outside-toplevel
  src = ProceduralSource(num_videos=10, size=32, min_frames=8, max_frames=10, second_sprite_prob=0.0)
  cfg = builder.BuildConfig(SynthConfig(clip_len=4, resolution=32, clips_per_track=2, candidates=16))
  return builder.build(src, cfg, str(tmp_path_factory.mktemp('clips')), progress=False).dataset_dir

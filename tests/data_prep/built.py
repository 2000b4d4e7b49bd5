"""Builds in tests: the configuration of the fake-DAVIS builds, their records, and the check that two builds are
the same."""

import json
import os

import numpy as np

from data_prep.builder import BuildConfig
from data_prep.occlusion import SynthConfig
from tgvac_jax.data import schema
from tgvac_jax.data.pipeline import data_source


DAVIS_CFG = BuildConfig(SynthConfig(clip_len=3, resolution=24, clips_per_track=2))  # the CLI's for these flags
DAVIS_FLAGS = ['--clip_len', '3', '--resolution', '24', '--clips_per_track', '2']


def records(ds_dir: str, split: str) -> list:
  src = data_source(ds_dir, split)
  return [src[i] for i in range(len(src))]


def assert_same_build(ds_dir: str, ref_dir: str):
  """Every record equal field by field (encoded frames byte for byte), in the same order; the same Table-1
  statistics, clip list and skip report. (Shard files are not compared: TFDS serializes a record's fields in an
  order that varies from process to process.)"""
  for split in ('train', 'validation'):
    got, want = records(ds_dir, split), records(ref_dir, split)
    assert len(got) == len(want) > 0, split
    for g, w in zip(got, want):
      assert g.keys() == w.keys()
      for k in w:
        np.testing.assert_array_equal(g[k], w[k], err_msg=f'{split} {schema.decode_record(w)["video_id"]} {k}')
  for name in ('stats.json', 'clips.json', 'report.json'):
    with open(os.path.join(ds_dir, name)) as a, open(os.path.join(ref_dir, name)) as b:
      assert json.load(a) == json.load(b), name

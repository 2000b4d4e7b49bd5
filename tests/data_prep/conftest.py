"""One fake DAVIS folder with bad inputs, built once in one process: the reference that parallel, Beam and resumed
builds must equal (built.assert_same_build)."""

import glob
import os

import numpy as np
import pytest

import fake_datasets as fake
from data_prep import builder as B
from data_prep.occlusion import SynthConfig
from data_prep.sources import get_source

DAVIS_SEQS = ('bear', 'camel', 'cows', 'dog', 'goat', 'horse', 'lion', 'mouse', 'pig', 'mismatch', 'empty', 'corrupt')
DAVIS_CFG = B.BuildConfig(SynthConfig(clip_len=3, resolution=24, clips_per_track=2))  # what the CLI builds


@pytest.fixture(scope='session')
def davis_root(tmp_path_factory):
  """8-frame videos; 'mismatch' lacks two annotations, 'empty' has no object, every frame of 'corrupt' and frame 3
  of 'dog' are truncated JPEGs."""
  root = fake.make_davis(str(tmp_path_factory.mktemp('davis')), seqs=DAVIS_SEQS, n=8)
  ann = os.path.join(root, 'Annotations', '480p')
  os.remove(os.path.join(ann, 'mismatch', '00003.png'))
  os.rename(os.path.join(ann, 'mismatch', '00007.png'), os.path.join(ann, 'mismatch', '00003.png'))
  os.remove(os.path.join(ann, 'mismatch', '00006.png'))
  for f in glob.glob(os.path.join(ann, 'empty', '*.png')):
    fake.palette_png(np.zeros((fake.H, fake.W), np.uint8), f)
  bad = [os.path.join(root, 'JPEGImages', '480p', 'corrupt', f'{t:05d}.jpg') for t in range(8)]
  for p in bad + [os.path.join(root, 'JPEGImages', '480p', 'dog', '00003.jpg')]:
    data = open(p, 'rb').read()
    open(p, 'wb').write(data[:len(data) // 3])
  return root


@pytest.fixture(scope='session')
def davis_reference(davis_root, tmp_path_factory) -> B.BuildResult:
  """The one-process build."""
  return B.build(get_source('davis', davis_root), DAVIS_CFG, str(tmp_path_factory.mktemp('ref')), progress=False)


"""A fake DAVIS folder with bad inputs, built once in one process: the reference that parallel, Beam and resumed
builds must equal (built.assert_same_build)."""

import pytest

import fake_datasets as fake
from built import DAVIS_CFG
from data_prep import builder as B
from data_prep.sources import get_source


@pytest.fixture(scope='session')
def davis_root(tmp_path_factory):
  return fake.make_bad_davis(str(tmp_path_factory.mktemp('davis')))


@pytest.fixture(scope='session')
def davis_reference(davis_root, tmp_path_factory) -> B.BuildResult:
  """The one-process build."""
  return B.build(get_source('davis', davis_root), DAVIS_CFG, str(tmp_path_factory.mktemp('ref')), progress=False)

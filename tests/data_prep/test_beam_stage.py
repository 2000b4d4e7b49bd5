"""The Beam build (TFDS's Beam support; the DirectRunner with 2 worker processes) equals the one-process build
record for record, bad inputs reported the same way."""

import os

import pytest

from built import DAVIS_FLAGS, assert_same_build
from data_prep import build as build_cli
from tgvac_jax.data import schema


def test_beam_direct_runner_equals_one_process(davis_root, davis_reference, tmp_path):
  try:
    import apache_beam  # noqa: F401
  except ImportError:
    if os.environ.get('CI'):  # CI installs the beam extra: there this test must run, not skip
      raise
    pytest.skip("needs the beam extra: pip install 'tgvac-jax[beam]'")
  out = str(tmp_path / 'out')
  rc = build_cli.main(['--source', 'davis', '--root', davis_root, '--out', out, '--workers', '1', '--quiet',
                       '--beam_pipeline_options',
                       'runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing'] + DAVIS_FLAGS)
  assert rc == 0
  assert_same_build(schema.find_dataset_dir(out), davis_reference.dataset_dir)

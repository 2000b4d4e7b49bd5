"""make_dataset: process-local pixel batches for each stage, deterministic and resumable; clear errors."""

import numpy as np
import pytest

from tests.train import tiny
from tgvac_jax.train import inputs
from tgvac_jax.train.latents import PIXEL_KEYS


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  from tgvac_jax.train.job import procedural_dataset  # the job entry builds it (data_prep)
  c = tiny.tiny_config('frame', **{'data.procedural_videos': 6})
  return procedural_dataset(c, tmp_path_factory.mktemp('inputs'))


def _config(stage, dataset, **kw):
  return tiny.tiny_config(stage, **{'data.dataset': dataset, **kw})


@pytest.mark.parametrize('stage, lead', [('frame', (8,)), ('motion', (8, tiny.FRAMES)), ('vae', (8,))])
def test_batches_per_stage(dataset, stage, lead):
  batch = next(iter(inputs.make_dataset(_config(stage, dataset), 0, 1)))
  want = set(PIXEL_KEYS) - ({'input_ids'} if stage == 'vae' else set())
  assert set(batch) == want
  s = tiny.SIZE
  assert batch['occluded'].shape == batch['amodal'].shape == lead + (s, s, 3)
  assert batch['visible_mask'].shape == lead + (s, s)
  assert batch['occluded'].dtype == np.uint8 and set(np.unique(batch['visible_mask'])) <= {0, 1}
  if stage != 'vae':
    assert batch['input_ids'].shape == (8, 77) and batch['input_ids'].dtype == np.int32


def test_process_slices_deterministic_and_resumable(dataset):
  c = _config('frame', dataset)
  halves = [next(iter(inputs.make_dataset(c, i, 2))) for i in range(2)]
  assert all(h['occluded'].shape[0] == tiny.BATCH // 2 for h in halves)
  assert not np.array_equal(halves[0]['occluded'], halves[1]['occluded'])

  it = iter(inputs.make_dataset(c, 0, 1))
  first = [next(it) for _ in range(2)]
  saved = it.get_state()
  after = [next(it) for _ in range(2)]
  again = iter(inputs.make_dataset(c, 0, 1))
  np.testing.assert_array_equal(next(again)['amodal'], first[0]['amodal'])  # same seed, same order
  again.set_state(saved)
  for want in after:
    got = next(again)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])


def test_several_frame_sources(dataset):
  batch = next(iter(inputs.make_dataset(_config('frame', dataset, **{'data.pix2gestalt': dataset}), 0, 1)))
  assert batch['occluded'].shape == (8, tiny.SIZE, tiny.SIZE, 3)


def test_no_records_is_a_clear_error(tmp_path):
  (tmp_path / 'empty').mkdir()
  for path in (tmp_path / 'empty', tmp_path / 'missing'):
    with pytest.raises(inputs.NoRecordsError, match=str(path)):
      inputs.make_dataset(_config('frame', str(path)), 0, 1)
  with pytest.raises(inputs.NoRecordsError, match='set data.dataset'):
    inputs.make_dataset(tiny.tiny_config('motion'), 0, 1)

"""Batch inference over a DAVIS-style root on 8 simulated devices.

Three sequences of 5, 6 and 7 frames (different input sizes), two hypotheses each (num_samples=2, every one kept),
the batch split over the devices. Checked against running the sequences one by one with one seed each: every
hypothesis equals the one-seed run (a row does not depend on its batch-mates or its device), the written choice
follows the coverage criterion, and the 5-frame sequence equals the unsharded single-device run. A run that dies
while writing the second sequence leaves no folder for it; the rerun removes temporaries of killed runs, skips
what is done and completes the rest; a third run skips everything; a process takes only its share.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from fakes import object_labels, write_frames, write_masks  # noqa: E402
from tgvac_jax.infer import hypotheses, job, outputs  # noqa: E402
from tgvac_jax.infer.batch import InferSettings, complete_sequences  # noqa: E402
from tgvac_jax.infer.sources import davis_sequences, manifest_sequences  # noqa: E402

SEQS = {'bear': (5, (20, 24)), 'car': (6, (18, 30)), 'dog': (7, (24, 16))}


@pytest.fixture(scope='module')
def davis_root(tmp_path_factory):
  root = tmp_path_factory.mktemp('davis')
  for k, (name, (n, size)) in enumerate(SEQS.items()):
    write_frames(root / 'JPEGImages' / name, n, size, seed=10 + k)
    write_masks(root / 'Annotations' / name, object_labels(n, size), palette=True)
  (root / 'captions.json').write_text(json.dumps({'bear': 'a brown bear', 'car': 'a red car', 'dog': 'a dog'}))
  return root


def _read(folder: Path) -> np.ndarray:
  """(N, H, W, 4) RGBA objects of one output folder."""
  return np.stack([np.asarray(Image.open(p)) for p in sorted((folder / 'object').glob('*.png'))])


def _info(folder: Path) -> dict:
  return json.loads((folder / outputs.INFO_NAME).read_text())


@pytest.mark.slow  # 30-60 s: moved out of the default tier (its ~20-minute budget)
def test_batch_on_8_devices_equals_one_by_one(tmp_path, davis_root, infer_config, monkeypatch):
  sharded = job.load_completer(infer_config(shard='videos'))
  assert sharded.batch_multiple == 8
  seqs = davis_sequences(davis_root)
  assert [s.name for s in seqs] == list(SEQS)
  settings = InferSettings(num_samples=2, keep_samples=True)
  out = tmp_path / 'out'

  # a run killed while writing the second sequence: the first is whole, the second absent
  real = outputs.write_completion
  def dies_on_car(folder, *args, **kwargs):
    if folder.name.startswith('.car.'):
      (folder / 'object').mkdir()
      raise KeyboardInterrupt('killed')
    real(folder, *args, **kwargs)
  monkeypatch.setattr(outputs, 'write_completion', dies_on_car)
  with pytest.raises(KeyboardInterrupt):
    complete_sequences(sharded, seqs, out, settings)
  assert sorted(p.name for p in out.iterdir()) == ['bear']
  monkeypatch.setattr(outputs, 'write_completion', real)
  (out / '.dog.tmp-killed9' / 'object').mkdir(parents=True)  # what kill -9 during a write leaves

  assert complete_sequences(sharded, seqs, out, settings) == {'bear': 'skipped', 'car': 'done', 'dog': 'done'}
  assert sorted(p.name for p in out.iterdir()) == list(SEQS)
  stamps = {p: p.stat().st_mtime_ns for p in out.rglob('*')}
  assert complete_sequences(sharded, seqs, out, settings) == dict.fromkeys(SEQS, 'skipped')
  assert {p: p.stat().st_mtime_ns for p in out.rglob('*')} == stamps

  # one by one, one seed at a time, on the same devices
  for name, (n, size) in SEQS.items():
    info = _info(out / name)
    assert info['timings']['call_videos'] == 1 and info['timings']['call_rows'] == 2
    assert len(info['devices']) == 8 and info['input_size'] == list(size)
    for k in range(2):
      alone = tmp_path / f'seed{k}'
      complete_sequences(sharded, [s for s in seqs if s.name == name], alone, InferSettings(seed=k))
      np.testing.assert_array_equal(_read(out / name / 'samples' / str(k)), _read(alone / name))
    chosen = hypotheses.choose(info['hypotheses']['scores'], 'coverage')
    assert info['hypotheses']['chosen'] == chosen
    np.testing.assert_array_equal(_read(out / name), _read(out / name / 'samples' / str(chosen)))
    assert _read(out / name).shape == (n,) + size + (4,)

  # the unsharded single-device program agrees up to float rounding
  single = job.load_completer(infer_config())
  complete_sequences(single, seqs[:1], tmp_path / 'single', InferSettings())
  a, b = _read(tmp_path / 'single' / 'bear').astype(int), _read(tmp_path / 'seed0' / 'bear').astype(int)
  assert np.abs(a[..., :3] - b[..., :3]).max() <= 2 and (a[..., 3] == b[..., 3]).mean() > 0.99

  # each process completes its share only: process 1 of 2 gets the second sequence
  assert complete_sequences(sharded, seqs, tmp_path / 'p1', InferSettings(seed=1), process_index=1,
                            process_count=2) == {'car': 'done'}


def test_sources_and_settings(tmp_path, davis_root):
  # one caption per object: <seq>_<id>
  (tmp_path / 'caps.json').write_text(json.dumps({'bear': {'1': 'a bear'}, 'car': 'a car', 'dog': 'a dog'}))
  seqs = davis_sequences(davis_root, tmp_path / 'caps.json', names=('bear', 'dog'))
  assert [(s.name, s.object_id, s.text) for s in seqs] == [('bear_1', 1, 'a bear'), ('dog', None, 'a dog')]
  assert seqs[0].check() == (5, 20, 24)
  (tmp_path / 'few.json').write_text(json.dumps({'bear': 'a bear'}))
  with pytest.raises(ValueError, match=r"no caption for \['car', 'dog'\]"):
    davis_sequences(davis_root, tmp_path / 'few.json')
  with pytest.raises(ValueError, match='select'):
    InferSettings(select='best')
  with pytest.raises(ValueError, match='used twice'):
    complete_sequences(None, seqs + seqs[:1], tmp_path / 'x')


def test_manifest(tmp_path, davis_root):
  lines = [{'video': str(davis_root / 'JPEGImages' / 'car'), 'masks': str(davis_root / 'Annotations' / 'car'),
            'text': 'a red car'},
           {'video': 'clips/dog', 'box': [1, 2, 10, 12], 'text': 'a dog', 'name': 'dog_box'}]
  write_frames(tmp_path / 'clips' / 'dog', 3, (24, 16))
  (tmp_path / 'm.jsonl').write_text('\n'.join(json.dumps(x) for x in lines) + '\n')
  seqs = manifest_sequences(tmp_path / 'm.jsonl', sam2_folder=tmp_path / 'sam2')
  assert [s.name for s in seqs] == ['car', 'dog_box'] and seqs[1].video == tmp_path / 'clips' / 'dog'
  assert seqs[0].check() == (6, 18, 30) and seqs[1].prompt.box == (1, 2, 10, 12)
  with pytest.raises(FileNotFoundError, match='SAM-2 folder'):
    seqs[1].check()
  (tmp_path / 'twice.jsonl').write_text(json.dumps(lines[0]) + '\n' + json.dumps(lines[0]) + '\n')
  with pytest.raises(ValueError, match=r'twice.jsonl:2: sequence name .car. is used twice'):
    manifest_sequences(tmp_path / 'twice.jsonl')

"""The README's first command, shrunk (`configs/demo.py:quick`): run.py -> data_prep -> the three training stages
-> inference -> evaluation -> ablation table, GIFs, an unseen DAVIS-style folder and the second generator's clips
(data_prep/holdout_clips.py), all on disk; a rerun reuses every stage and, with the motion stage and the evaluation
redone, prints the same table (determinism)."""

import json
import os
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_stage_configs_share_the_demo_noise_process(tmp_path):
  """The frame and motion stages train with the demo's `diffusion` block (prediction type, zero terminal SNR,
  loss weighting; the motion stage refuses a frame checkpoint with another schedule); the autoencoder has none."""
  from configs import demo as demo_config
  from configs import frame, motion, vae
  from tgvac_jax import demo
  c = demo_config.get_config('quick')
  c.diffusion.prediction_type = 'epsilon' if c.diffusion.prediction_type != 'epsilon' else 'v_prediction'
  c.diffusion.rescale_betas_zero_snr = not c.diffusion.rescale_betas_zero_snr
  c.diffusion.snr_gamma = c.diffusion.snr_gamma + 3.0
  for stage, base in (('frame', frame), ('motion', motion)):
    t = demo._trainer_config(c, base.get_config('tiny'), stage, tmp_path / stage, 'ds', 'init')
    assert {k: t.diffusion[k] for k in c.diffusion} == c.diffusion.to_dict()
  t = demo._trainer_config(c, vae.get_config('tiny'), 'vae', tmp_path / 'vae', 'ds')
  assert t.diffusion.prediction_type == vae.get_config('tiny').diffusion.prediction_type


def test_build_procedural_passes_the_knobs(tmp_path, monkeypatch):
  from configs import demo as demo_config
  from tgvac_jax import demo
  built = []
  monkeypatch.setattr(demo, 'build', lambda source, *a, **k: built.append(source) or types.SimpleNamespace(
      dataset_dir='ds', num_examples={}))
  c = demo_config.get_config('quick')
  c.data.procedural.update(shapes=('ring', 'heart'), spin=False, pulse=True, background='plain', second_sprite_prob=0.0,
                           renderer='mixed', jpeg_quality=(60, 90), shading=0.0)
  assert demo.build_procedural(c, tmp_path, seed=1, num_videos=4, size=16, clip_len=4, clips_per_track=1) == 'ds'
  d = built[0].describe()
  assert (d['shapes'], d['spin'], d['background'], d['second_sprite_prob']) == (['heart', 'ring'], False, 'plain', 0)
  assert (d['renderer'], d['jpeg_quality']) == ('mixed', [60, 90])
  assert 'pulse' not in d and 'colours' not in d and 'shading' not in d


def _run(*args):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  return subprocess.run([sys.executable, 'run.py', *args], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=1800)


@pytest.fixture(scope='module')
def quick(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('demo')
  res = _run('--config', 'configs/demo.py:quick', f'--config.workdir={workdir}')
  assert res.returncode == 0, res.stderr[-4000:]
  return workdir, res


def test_quick_demo_writes_every_artifact(quick):
  workdir, res = quick
  model = workdir / 'motion' / 'model'
  for part in ('unet', 'vae', 'text_encoder', 'tokenizer'):
    assert (model / part).is_dir(), part
  assert json.loads((model / 'unet' / 'config.json').read_text())['motion'], 'the checkpoint has motion modules'
  ablation = workdir / 'ablation'
  table = json.loads((ablation / 'table.json').read_text())
  assert list(table)[:2] == ['visible only', 'temporal propagation (non-learned)']
  assert any(k.startswith('motion stage, temporal diffusion stride') for k in table)
  assert len(table) == 6
  for summary in table.values():
    assert summary['splits']['all']['frames'] > 0 and summary['splits']['all']['iou_c2f'] is not None
  md = (ablation / 'table.md').read_text()
  assert md in res.stdout and all(name in md for name in table)
  assert len(list((ablation / 'gifs').glob('*.gif'))) == 1
  unseen_md = (ablation / 'unseen.md').read_text()
  assert 'Unseen DAVIS-style clips' in unseen_md
  assert 'windows of 4, no overlap' in unseen_md and 'temporal diffusion stride 2' in unseen_md
  for unseen in (workdir / 'unseen').glob('*/*/completions'):   # the two rows, 10 frames: more than two windows
    seqs = [p for p in unseen.iterdir() if p.is_dir()]
    assert seqs and all(len(list((s / 'amodal_mask').glob('*.png'))) == 10 for s in seqs)
  assert len(list((workdir / 'unseen').glob('*/*/completions'))) == 2
  generator = json.loads((ablation / 'unseen_generator.json').read_text())
  assert list(generator) == ['task', 'full']
  learned = 'TGVAC demo model (motion stage, stride 2)'
  for rows in generator.values():
    assert list(rows) == ['visible only', learned, 'temporal propagation within 8 frames (the prior alone)',
                          f'{learned} + temporal prior']
    assert rows['visible only']['splits']['all']['iou_occ_c2f'] == 0, 'the visible mask completes nothing'
    assert all(r['splits']['all']['videos'] == 1 for r in rows.values())
  md = (ablation / 'unseen_generator.md').read_text()
  assert md in res.stdout and 'data_prep/holdout_clips.py' in md
  # the prior's row is the same sampling with the prior alone's masks (the non-learned row beside the clips) added
  for family in ('task', 'full'):
    alone, = (workdir / 'unseen_generator').glob(f'*/{family}/completions')
    prior = alone.parent / 'temporal_prior' / 'completions'
    propagated, = (workdir / 'unseen_generator').glob(f'{family}_seed0_32x8_temporal_propagation_within_8*')
    for mask in alone.glob('*/amodal_mask/*.png'):
      a, b, t = (np.asarray(Image.open(d / mask.relative_to(alone))) > 0
                 for d in (alone, prior, propagated / 'predictions'))
      np.testing.assert_array_equal(b, a | t)
  roots = sorted(p.name for p in (workdir / 'unseen_generator').glob('*_seed0_32x8'))
  assert roots == ['full_seed0_32x8', 'task_seed0_32x8']
  validation = (ablation / 'validation.md').read_text()
  assert validation in res.stdout and 'seed 2000' in validation and 'temporal diffusion stride 2' in validation
  assert (workdir / 'validation' / 'davis' / 'JPEGImages').is_dir()
  build, selection = validation.split('## Selection generator (data_prep/selection_clips.py')
  assert '| visible only |' in build and '| temporal propagation (non-learned) |' not in build
  assert '| visible only |' in selection and '| temporal propagation (non-learned) |' in selection
  assert 'temporal diffusion stride 2' in selection and 'temporal diffusion stride 2 + temporal prior' in selection
  assert 'temporal diffusion stride 2 + temporal prior' in build
  sel = list((workdir / 'validation').glob('*/selection/completions'))
  assert len(sel) == 1 and [p.name for p in sel[0].iterdir() if p.is_dir()] == ['task000']
  assert not list(workdir.rglob('.*.tmp-*')), 'no half-written folder is left'


def test_unknown_part_is_one_error_before_anything_is_written(tmp_path):
  from configs import demo as demo_config
  from tgvac_jax import demo
  c = demo_config.get_config('quick')
  c.workdir = str(tmp_path / 'demo')
  c.parts = ('ablation', 'table5')
  with pytest.raises(ValueError, match="parts=.*unknown 'table5'"):
    demo.run(c)
  c.parts = ('unseen_generator',)
  c.unseen_generator.families = ('task', 'fishbowl')
  with pytest.raises(ValueError, match="unseen_generator.families=.*unknown 'fishbowl'"):
    demo.run(c)
  assert not (tmp_path / 'demo').exists()


@pytest.mark.slow  # 30-60 s: moved out of the default tier (its ~20-minute budget)
def test_rerun_reuses_and_repeats_the_table(quick):
  workdir, first = quick
  table = (workdir / 'ablation' / 'table.md').read_text()
  shutil.rmtree(workdir / 'motion')   # retrain the motion stage and redo every row: the same numbers
  shutil.rmtree(workdir / 'eval')
  res = _run('--config', 'configs/demo.py:quick', f'--config.workdir={workdir}')
  assert res.returncode == 0, res.stderr[-4000:]
  assert 'vae stage: reusing' in res.stderr and 'frame stage: reusing' in res.stderr
  assert 'motion stage: reusing' not in res.stderr
  assert (workdir / 'ablation' / 'table.md').read_text() == table

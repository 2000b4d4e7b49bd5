"""Bad input to the training job: each case is one clear error raised before anything is compiled, and leaves no
checkpoint (training or model) behind. Through the train job's `run` in this process (XLA compiles are counted), and
through run.py for the one-line form."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import pytest

from configs import frame, motion
from data_prep import builder as B
from data_prep.occlusion import SynthConfig
from data_prep.sources.procedural import ProceduralSource
from tgvac_jax import text
from tgvac_jax.jobs import JOBS
from tgvac_jax.train import inputs, job, stages
from tgvac_jax.train.checkpoints import CHECKPOINT_DIR, MODEL_DIR

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPILES = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, *_, **__: COMPILES.append(event) if event == '/jax/core/compile/backend_compile_duration' else None)


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  src = ProceduralSource(num_videos=6, size=16, min_frames=6, max_frames=8, second_sprite_prob=0.0)
  cfg = B.BuildConfig(SynthConfig(clip_len=4, resolution=16, clips_per_track=1, candidates=8))
  return B.build(src, cfg, str(tmp_path_factory.mktemp('data')), progress=False).dataset_dir


@pytest.fixture(scope='module')
def four_channel_sd(tmp_path_factory):
  """A pipeline folder whose UNet takes 4 input channels (plain SD): config.json files and a tokenizer, no
  weights - the checks must fail before any weight is read."""
  folder = tmp_path_factory.mktemp('sd4')
  unet, vae, te = stages.scratch_configs(frame.get_config('tiny').model, 16, 76, motion=False)
  for name, cfg in {'unet': dataclasses.replace(unet, in_channels=4), 'vae': vae, 'text_encoder': te}.items():
    (folder / name).mkdir()
    cls = {'unet': 'UNet2DConditionModel', 'vae': 'AutoencoderKL', 'text_encoder': 'CLIPTextModel'}[name]
    (folder / name / 'config.json').write_text(json.dumps({'_class': cls, **cfg.to_dict(ours=True)}))
  text.write_char_tokenizer(folder / 'tokenizer')
  return folder


def tiny(module, tmp_path, dataset, **overrides):
  c = module.get_config('tiny')
  c.workdir = str(tmp_path / 'work')
  c.data.dataset = dataset
  c.data.size = 16
  c.data.procedural_videos = 0
  c.update_from_flattened_dict(overrides)
  return c


def fails_cleanly(config, error, match):
  """`job.run(config)` raises `error` matching `match`, compiles nothing, leaves no checkpoint."""
  before = len(COMPILES)
  with pytest.raises(error, match=match):
    job.run(config)
  assert len(COMPILES) == before, COMPILES[before:]
  work = config.workdir
  assert not os.path.exists(os.path.join(work, CHECKPOINT_DIR)) and not os.path.exists(os.path.join(work, MODEL_DIR))


def test_missing_init_checkpoint(tmp_path, dataset):
  c = tiny(frame, tmp_path, dataset, **{'init.from_scratch': False, 'init.checkpoint': str(tmp_path / 'nope')})
  fails_cleanly(c, FileNotFoundError, r'init.checkpoint .*nope: no such folder')


def test_four_channel_unet_for_the_frame_stage(tmp_path, dataset, four_channel_sd):
  c = tiny(frame, tmp_path, dataset, **{'init.from_scratch': False, 'init.checkpoint': str(four_channel_sd)})
  fails_cleanly(c, stages.StageError, r'takes 4 input channels; the frame stage needs 12 .*--in-channels 12')


@pytest.mark.parametrize('what', ['plain SD', 'not a pipeline'])
def test_motion_stage_needs_a_frame_stage_checkpoint(tmp_path, dataset, four_channel_sd, what):
  init = str(four_channel_sd) if what == 'plain SD' else dataset
  c = tiny(motion, tmp_path, dataset, **{'init.from_scratch': False, 'init.checkpoint': init})
  fails_cleanly(c, stages.StageError, 'not a frame-stage checkpoint' if what == 'plain SD' else 'no unet/ folder')


def test_dataset_without_records(tmp_path, dataset):
  (tmp_path / 'empty').mkdir()
  c = tiny(frame, tmp_path, dataset, **{'data.dataset': str(tmp_path / 'empty')})
  fails_cleanly(c, inputs.NoRecordsError, 'empty')


def test_batch_not_divisible_by_data_parallel_size(tmp_path, dataset):
  assert jax.device_count() == 8
  c = tiny(frame, tmp_path, dataset, batch_size=6)
  fails_cleanly(c, ValueError, r'batch size 6 .* not divisible by the data-parallel size 8')


def test_batch_below_the_devices_whose_tensor_axis_does_not_divide_the_latent_rows(tmp_path, dataset):
  """Batch 1 on 8 devices: 'tensor' takes all 8 (sharding.batch_rows_split), more than the 4 latent rows of 16 px
  frames under this VAE's 4x downsampling."""
  c = tiny(frame, tmp_path, dataset, batch_size=1)
  fails_cleanly(c, ValueError, r"images of 4 rows cannot be split over the mesh's tensor axis of 8: a batch of 2 per "
                               'step call would leave a tensor axis of 4')


def run_py(*args):
  return subprocess.run([sys.executable, 'run.py', *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))


def test_run_py_bad_input_is_one_line(tmp_path, dataset, four_channel_sd):
  res = run_py('--config', 'configs/frame.py:tiny', f'--config.workdir={tmp_path / "w"}', '--config.data.size=16',
               f'--config.data.dataset={dataset}', '--config.init.from_scratch=False',
               f'--config.init.checkpoint={four_channel_sd}')
  assert res.returncode != 0
  lines = [l for l in res.stderr.splitlines() if l.startswith('run.py')]
  assert len(lines) == 1 and 'takes 4 input channels' in lines[0] and 'Traceback' not in res.stderr
  assert not (tmp_path / 'w' / CHECKPOINT_DIR).exists()


def test_train_job_module_is_the_train_job():
  assert JOBS['train'] == job.__name__


def test_the_compile_counter_sees_a_compile():
  before = len(COMPILES)
  jax.jit(lambda x: x * 3 + 1)(jax.numpy.float32(2))
  assert len(COMPILES) > before

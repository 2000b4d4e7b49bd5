"""`python -m convert.from_diffusers` end to end on a tiny random SD folder built with save_pretrained (its
scheduler read into ours)."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tiny_sd  # noqa: E402
from convert import from_diffusers  # noqa: E402
from tgvac_jax.diffusion import scheduler_config  # noqa: E402
from tgvac_jax.diffusion.schedule import ScheduleConfig  # noqa: E402
from tgvac_jax.models import checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
VERIFY = re.compile(r'^verify (\S+) max_abs=(\S+) rel=(\S+)$', re.M)


@pytest.fixture(scope='module')
def sd(tmp_path_factory):
  # The VAE is saved as .bin to cover the torch.load path.
  return tiny_sd.write_sd_folder(tmp_path_factory.mktemp('src') / 'sd', bin_weights=('vae',))


def _copy(sd, dst, *, without=()):
  shutil.copytree(sd, dst, ignore=lambda d, names: [n for n in names if Path(d) == sd and n in without])
  return dst


def test_pipeline_in_channels_and_verify(sd, tmp_path, capsys):
  out = tmp_path / 'ours'
  assert from_diffusers.main([str(sd), str(out), '--in-channels', '12', '--verify']) == 0
  printed = capsys.readouterr().out
  errors = {name: (float(a), float(r)) for name, a, r in VERIFY.findall(printed)}
  print(printed)
  assert sorted(errors) == ['text_encoder', 'unet', 'vae']
  assert all(r <= 1e-5 for _, r in errors.values()), errors
  assert sorted(p.name for p in out.iterdir()) == ['scheduler', 'text_encoder', 'tokenizer', 'unet', 'vae']
  for f in (sd / 'tokenizer').iterdir():  # copied as is
    assert (out / 'tokenizer' / f.name).read_bytes() == f.read_bytes()
  theirs = json.loads((sd / 'scheduler' / 'scheduler_config.json').read_text())
  assert scheduler_config.to_dict(**vars(scheduler_config.read(out))) == {
      k: v for k, v in theirs.items() if k != '_diffusers_version'}
  loaded = checkpoint.load_pipeline(out)
  assert sorted(loaded) == ['text_encoder', 'unet', 'vae']
  assert loaded['unet'][1].in_channels == 12
  from transformers import CLIPTokenizer
  assert CLIPTokenizer.from_pretrained(str(out / 'tokenizer'))('a cat').input_ids == [0, 3, 55, 1]


def test_component_folders(sd, tmp_path, capsys):
  assert from_diffusers.main([str(sd / 'vae'), str(tmp_path / 'vae')]) == 0
  assert json.loads((tmp_path / 'vae' / 'config.json').read_text())['_class'] == 'AutoencoderKL'
  vision = tmp_path / 'image_encoder'
  tiny_sd.vision_model().save_pretrained(str(vision))
  assert from_diffusers.main([str(vision), str(tmp_path / 'vis'), '--verify']) == 0
  (name, _, r), = VERIFY.findall(capsys.readouterr().out)
  assert name == 'image_encoder' and float(r) <= 1e-5
  m, _ = checkpoint.load_component(tmp_path / 'vis')
  assert type(m).__name__ == 'CLIPVisionModelWithProjection'


def test_without_tokenizer_and_scheduler(sd, tmp_path, capsys):
  """tokenizer/ and scheduler/ are copied when present; a missing one is reported, not an error."""
  src = _copy(sd, tmp_path / 'sd', without=('tokenizer', 'scheduler'))
  assert from_diffusers.main([str(src), str(tmp_path / 'out')]) == 0
  printed = capsys.readouterr().out
  assert 'no tokenizer/' in printed and 'no scheduler/' in printed
  assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['text_encoder', 'unet', 'vae']


def test_scheduler_becomes_ours(sd, tmp_path, capsys):
  """A PNDM v_prediction scheduler: betas and prediction_type kept as our DDIMScheduler config, PNDM's own
  field reported as dropped; a beta schedule we cannot reproduce is an error and nothing is written."""
  from diffusers import DDPMScheduler, PNDMScheduler
  src = _copy(sd, tmp_path / 'sd', without=('scheduler',))
  PNDMScheduler(beta_schedule='scaled_linear', beta_start=0.00085, beta_end=0.012, skip_prk_steps=True,
                steps_offset=1, prediction_type='v_prediction').save_pretrained(str(src / 'scheduler'))
  assert from_diffusers.main([str(src), str(tmp_path / 'out')]) == 0
  assert 'scheduler: PNDMScheduler -> DDIMScheduler (prediction_type v_prediction, beta_schedule scaled_linear); ' \
      'dropped skip_prk_steps' in capsys.readouterr().out
  got = scheduler_config.read(tmp_path / 'out')
  assert got.schedule == ScheduleConfig(prediction_type='v_prediction')
  assert json.loads((tmp_path / 'out' / 'scheduler' / 'scheduler_config.json').read_text())['_class_name'] == \
      'DDIMScheduler'
  shutil.rmtree(src / 'scheduler')
  DDPMScheduler(beta_schedule='sigmoid').save_pretrained(str(src / 'scheduler'))
  _fails([src, tmp_path / 'bad'], capsys, "beta_schedule 'sigmoid'")
  assert not (tmp_path / 'bad').exists()


def _fails(args, capsys, *needles):
  assert from_diffusers.main([str(a) for a in args]) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') >= 1
  for needle in needles:
    assert needle in err, err
  return err


def test_errors_write_nothing(sd, tmp_path, capsys):
  out = tmp_path / 'out'
  src = _copy(sd, tmp_path / 'no_text', without=('text_encoder',))
  _fails([src, out], capsys, 'missing component text_encoder/')
  src = _copy(sd, tmp_path / 'no_weights')
  (src / 'vae' / 'diffusion_pytorch_model.bin').unlink()
  _fails([src, out], capsys, str(src / 'vae'), 'no weights')
  src = _copy(sd, tmp_path / 'extra_key')
  import safetensors.numpy
  import numpy as np
  f = src / 'unet' / 'diffusion_pytorch_model.safetensors'
  safetensors.numpy.save_file({**safetensors.numpy.load_file(str(f)), 'mid_block.bogus.weight': np.zeros(2)}, str(f))
  _fails([src, out], capsys, 'mid_block.bogus.weight')
  _fails([sd / 'vae', out, '--in-channels', '12'], capsys, '--in-channels applies to a UNet')
  (tmp_path / 'empty').mkdir()
  _fails([tmp_path / 'empty', out], capsys, 'neither a diffusers Stable Diffusion folder')
  _fails([tmp_path / 'missing', out], capsys, 'not a folder')
  assert not out.exists()
  assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]  # no temporary folders left


def test_module_entry_point(sd, tmp_path):
  """The real `python -m` command line (one small component, no verification)."""
  r = subprocess.run([sys.executable, '-m', 'convert.from_diffusers', str(sd / 'text_encoder'), str(tmp_path / 'te')],
                     cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
  assert r.returncode == 0, r.stderr
  assert 'converted text_encoder (CLIPTextModel)' in r.stdout
  assert (tmp_path / 'te' / 'model.safetensors').is_file()
  r = subprocess.run([sys.executable, '-m', 'convert.from_diffusers', str(tmp_path / 'nowhere'), str(tmp_path / 'x')],
                     cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
  assert r.returncode == 2 and 'not a folder' in r.stderr

"""`python -m convert.to_diffusers`: our checkpoint -> folders that diffusers/transformers `from_pretrained` load
(the scheduler as the DDIMScheduler we sample with), and the round trip diffusers -> ours -> diffusers -> ours is
exact."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tiny_sd  # noqa: E402
from convert import from_diffusers, to_diffusers  # noqa: E402
from tgvac_jax.diffusion import scheduler_config  # noqa: E402
from tgvac_jax.diffusion.schedule import ScheduleConfig, alphas_cumprod  # noqa: E402
from tgvac_jax.models import checkpoint  # noqa: E402


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
  root = tmp_path_factory.mktemp('to_diffusers')
  sd = tiny_sd.write_sd_folder(root / 'sd')
  assert from_diffusers.main([str(sd), str(root / 'ours'), '--in-channels', '12']) == 0
  assert to_diffusers.main([str(root / 'ours'), str(root / 'back')]) == 0
  return sd, root / 'ours', root / 'back'


def _state(model):
  return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def test_components_load_with_from_pretrained(folders):
  from diffusers import AutoencoderKL, UNet2DConditionModel
  from transformers import CLIPTextModel
  sd, _, back = folders
  for cls, name in ((AutoencoderKL, 'vae'), (CLIPTextModel, 'text_encoder')):
    a, b = _state(cls.from_pretrained(str(sd / name))), _state(cls.from_pretrained(str(back / name)))
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=f'{name} {k}')
  unet0 = UNet2DConditionModel.from_pretrained(str(sd / 'unet')).eval()
  unet = UNet2DConditionModel.from_pretrained(str(back / 'unet')).eval()
  assert unet.config.in_channels == 12 and json.loads((back / 'unet' / 'config.json').read_text())['in_channels'] == 12
  a, b = _state(unet0), _state(unet)
  for k in a:
    if k == 'conv_in.weight':
      np.testing.assert_array_equal(b[k][:, :4], a[k])
      assert not b[k][:, 4:].any()
    else:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  x = torch.randn(1, 4, 8, 8)
  ctx = torch.randn(1, 77, 32)
  with torch.no_grad():
    y0 = unet0(x, 10, ctx).sample
    y = unet(torch.cat([x, torch.randn(1, 8, 8, 8)], 1), 10, ctx).sample  # new channels start ignored
  torch.testing.assert_close(y, y0, rtol=1e-5, atol=1e-6)


def test_pipeline_loads(folders):
  from diffusers import DiffusionPipeline
  sd, _, back = folders
  for f in (sd / 'tokenizer').iterdir():
    assert (back / 'tokenizer' / f.name).read_bytes() == f.read_bytes()
  sched = 'scheduler/scheduler_config.json'
  assert json.loads((back / sched).read_text()) == json.loads((sd / sched).read_text())
  pipe = DiffusionPipeline.from_pretrained(str(back))
  assert type(pipe).__name__ == 'StableDiffusionPipeline' and type(pipe.scheduler).__name__ == 'DDIMScheduler'
  assert pipe.unet.config.in_channels == 12
  assert pipe.tokenizer('a cat').input_ids == [0, 3, 55, 1]


def test_round_trip_exact(folders, tmp_path):
  _, ours, back = folders
  assert from_diffusers.main([str(back), str(tmp_path / 'again')]) == 0  # no --in-channels: already 12
  a, b = checkpoint.load_pipeline(ours), checkpoint.load_pipeline(tmp_path / 'again')
  assert sorted(a) == sorted(b) == ['text_encoder', 'unet', 'vae']
  for name in a:
    assert a[name][1] == b[name][1], name
    fa = nnx.to_flat_state(nnx.state(a[name][0], nnx.Param))
    fb = dict(nnx.to_flat_state(nnx.state(b[name][0], nnx.Param)))
    assert len(fa) == len(fb)
    for path, var in fa:
      np.testing.assert_array_equal(var.get_value(), fb[path].get_value(), err_msg=f'{name} {path}')


def test_single_component(folders, tmp_path):
  from diffusers import AutoencoderKL
  _, ours, _ = folders
  assert to_diffusers.main([str(ours / 'vae'), str(tmp_path / 'vae')]) == 0
  assert sorted(p.name for p in (tmp_path / 'vae').iterdir()) == ['config.json', 'diffusion_pytorch_model.safetensors']
  assert AutoencoderKL.from_pretrained(str(tmp_path / 'vae')).config.scaling_factor == 0.18215


def test_scheduler_folder(folders, tmp_path):
  """Ours (v_prediction here) becomes diffusers' scheduler/ with the same alphas_cumprod; a checkpoint without
  one gets SD-1.5's DDIM."""
  from diffusers import DDIMScheduler
  _, ours, _ = folders
  v = ScheduleConfig(prediction_type='v_prediction', beta_schedule='linear', beta_start=1e-4, beta_end=0.02)
  for name, schedule in (('v', v), ('old', None)):
    src = tmp_path / name
    shutil.copytree(ours / 'text_encoder', src / 'text_encoder')
    if schedule is not None:
      scheduler_config.write(src / 'scheduler', schedule)
    assert to_diffusers.main([str(src), str(tmp_path / f'{name}_out')]) == 0
    theirs = DDIMScheduler.from_pretrained(str(tmp_path / f'{name}_out' / 'scheduler'))
    want = schedule or ScheduleConfig()
    assert theirs.config.prediction_type == want.prediction_type
    assert (theirs.config.steps_offset, theirs.config.set_alpha_to_one, theirs.config.clip_sample) == (1, False, False)
    np.testing.assert_allclose(theirs.alphas_cumprod.numpy(), alphas_cumprod(want), rtol=0, atol=2.5e-7)


def test_errors_write_nothing(folders, tmp_path, capsys):
  sd, ours, _ = folders
  out = tmp_path / 'out'
  assert to_diffusers.main([str(sd), str(out)]) == 2  # a diffusers folder is not our checkpoint
  assert 'no component folders' in capsys.readouterr().err
  broken = tmp_path / 'broken'
  shutil.copytree(ours, broken)
  (broken / 'vae' / 'model.safetensors').unlink()
  assert to_diffusers.main([str(broken), str(out)]) == 2
  assert f'{broken / "vae"}: component has no model.safetensors' in capsys.readouterr().err
  (broken / 'unet' / 'config.json').write_text(json.dumps({'_class': 'Mystery'}))
  assert to_diffusers.main([str(broken / 'unet'), str(out)]) == 2
  assert "class 'Mystery'" in capsys.readouterr().err
  assert not out.exists()
  assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]


@pytest.mark.slow  # 30-60 s: moved out of the default tier (its ~20-minute budget)
def test_motion_unet_exports_as_unet2d_plus_motion_adapter(tmp_path):
  """A video UNet leaves as a diffusers UNet2DConditionModel (spatial weights) + MotionAdapter that diffusers loads,
  and both come back into a fresh video UNet exactly."""
  from diffusers import MotionAdapter, UNet2DConditionModel  # pylint: disable=import-outside-toplevel
  from convert import animatediff, unet as convert_unet  # pylint: disable=import-outside-toplevel
  from convert.rules import flat_params  # pylint: disable=import-outside-toplevel
  from tgvac_jax.models.motion import MotionConfig  # pylint: disable=import-outside-toplevel
  sd = {k: v.numpy() for k, v in tiny_sd.unet_model().state_dict().items()}
  ours, config = convert_unet.from_torch(sd, tiny_sd.unet_model().config, in_channels=12,
                                         motion=MotionConfig(num_attention_heads=2, norm_num_groups=8))
  rng = np.random.default_rng(0)
  for path, var in flat_params(ours).items():  # non-zero motion weights, so the test can fail
    if '.motion_modules.' in path:
      var.set_value(var.get_value() + 0.05 * rng.standard_normal(var.get_value().shape).astype(np.float32))
  checkpoint.save_component(ours, tmp_path / 'ours')
  assert to_diffusers.main([str(tmp_path / 'ours'), str(tmp_path / 'out')]) == 0
  unet2d = UNet2DConditionModel.from_pretrained(str(tmp_path / 'out'))
  adapter = MotionAdapter.from_pretrained(str(tmp_path / 'out' / 'motion_adapter'))
  assert unet2d.config.in_channels == 12 and adapter.config.block_out_channels == list(config.block_out_channels)
  back, _ = convert_unet.from_torch({k: v.numpy() for k, v in unet2d.state_dict().items()}, dict(unet2d.config),
                                    motion=config.motion)
  animatediff.load_motion(back, str(tmp_path / 'out' / 'motion_adapter'))
  want, got = flat_params(ours), flat_params(back)
  assert want.keys() == got.keys()
  for k in want:
    np.testing.assert_array_equal(np.asarray(got[k].get_value()), np.asarray(want[k].get_value()), err_msg=k)

"""scheduler/scheduler_config.json: our write -> read round trip, diffusers' DDIMScheduler loading what we write
(same alphas_cumprod and timesteps), diffusers' other schedulers read as DDIMScheduler.from_config would, and
one clear error per unsupported value."""

import json

import numpy as np
import pytest

from tgvac_jax.diffusion import ddim, schedule as sch, scheduler_config as sc

CONFIGS = [
    sch.ScheduleConfig(),
    sch.ScheduleConfig(prediction_type='v_prediction', beta_schedule='linear', beta_start=1e-4, beta_end=0.02,
                       rescale_betas_zero_snr=True),
    sch.ScheduleConfig(beta_schedule='squaredcos_cap_v2', num_train_timesteps=500, prediction_type='sample'),
    sch.ScheduleConfig(num_train_timesteps=4, trained_betas=(0.1, 0.2, 0.3, 0.4)),
]


@pytest.mark.parametrize('cfg', CONFIGS, ids=['sd15', 'v_zero_snr', 'cosine', 'trained'])
def test_round_trip(cfg, tmp_path):
  trailing = ddim.DDIMConfig(timestep_spacing='trailing', steps_offset=0, set_alpha_to_one=True)
  sc.write(tmp_path / 'scheduler', cfg, trailing)
  back = sc.read(tmp_path)
  assert back.schedule == cfg
  assert back.ddim == trailing
  np.testing.assert_allclose(sch.alphas_cumprod(back.schedule), sch.alphas_cumprod(cfg), rtol=0, atol=1e-7)


def test_no_scheduler_folder_is_sd15(tmp_path):
  assert sc.read(tmp_path) == sc.Scheduler(sch.ScheduleConfig(), ddim.DDIMConfig())


def test_sampler_ddim_keeps_per_call_settings():
  s = sc.Scheduler(ddim=ddim.DDIMConfig(timestep_spacing='trailing', clip_sample=True))
  got = s.sampler_ddim(ddim.DDIMConfig(num_inference_steps=7, eta=0.5, timestep_spacing='linspace'))
  assert got == ddim.DDIMConfig(num_inference_steps=7, eta=0.5, timestep_spacing='trailing', clip_sample=True)


@pytest.mark.parametrize('cfg', CONFIGS[:3], ids=['sd15', 'v_zero_snr', 'cosine'])
def test_diffusers_loads_ours(cfg, tmp_path):
  diffusers = pytest.importorskip('diffusers')
  sc.write(tmp_path / 'scheduler', cfg)
  theirs = diffusers.DDIMScheduler.from_pretrained(str(tmp_path / 'scheduler'))
  for k, v in sc.to_dict(cfg).items():
    assert k == '_class_name' or theirs.config[k] == v, k
  # diffusers builds betas with torch.linspace, whose last-ulp rounding we match to 2.5e-7 (test_schedule.py)
  np.testing.assert_allclose(sch.alphas_cumprod(cfg), theirs.alphas_cumprod.numpy(), rtol=0, atol=2.5e-7)
  theirs.set_timesteps(25)
  np.testing.assert_array_equal(ddim.timesteps(cfg, ddim.DDIMConfig(num_inference_steps=25)),
                                theirs.timesteps.numpy())


def test_other_diffusers_schedulers_read_like_from_config(tmp_path):
  diffusers = pytest.importorskip('diffusers')
  pndm = diffusers.PNDMScheduler(beta_schedule='scaled_linear', beta_start=0.00085, beta_end=0.012,
                                 skip_prk_steps=True, steps_offset=1, prediction_type='v_prediction')
  pndm.save_pretrained(str(tmp_path / 'scheduler'))
  got, dropped = sc.read_file(tmp_path / 'scheduler' / sc.CONFIG_NAME)
  assert dropped == ['skip_prk_steps']
  want = diffusers.DDIMScheduler.from_pretrained(str(tmp_path / 'scheduler'))
  for k, v in sc.to_dict(got.schedule, got.ddim).items():
    assert k == '_class_name' or want.config[k] == v, k
  assert got.schedule == sch.ScheduleConfig(prediction_type='v_prediction')


@pytest.mark.parametrize('field,value,message', [
    ('_class_name', 'FlowMatchEulerDiscreteScheduler', "_class_name 'FlowMatchEulerDiscreteScheduler'"),
    ('beta_schedule', 'sigmoid', "beta_schedule 'sigmoid'"),
    ('prediction_type', 'flow', "prediction_type 'flow'"),
    ('timestep_spacing', 'karras', "timestep_spacing 'karras'"),
    ('steps_offset', '1', "steps_offset must be int, got '1'"),
    ('clip_sample', 0, 'clip_sample must be bool, got 0'),
    ('trained_betas', [0.1, 0.2], 'trained_betas has 2 values for num_train_timesteps 1000'),
])
def test_bad_values(field, value, message, tmp_path):
  sc.write(tmp_path / 'scheduler', sch.ScheduleConfig())
  path = tmp_path / 'scheduler' / sc.CONFIG_NAME
  path.write_text(json.dumps({**json.loads(path.read_text()), field: value}))
  with pytest.raises(ValueError, match='scheduler_config.json: ' + message.replace('(', r'\(')):
    sc.read(tmp_path)


def test_broken_folder(tmp_path):
  (tmp_path / 'scheduler').mkdir()
  with pytest.raises(ValueError, match='no scheduler_config.json'):
    sc.read(tmp_path)
  (tmp_path / 'scheduler' / sc.CONFIG_NAME).write_text('{')
  with pytest.raises(ValueError, match='not JSON'):
    sc.read(tmp_path)

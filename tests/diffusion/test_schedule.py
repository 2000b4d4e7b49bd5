"""Noise schedules, timesteps and the forward process against diffusers (installed, the test extra)."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

import jax
import jax.numpy as jnp

from tgvac_jax.diffusion import schedule as sch

SCHEDULES = [('linear', 1e-4, 0.02), ('linear', 0.00085, 0.012), ('scaled_linear', 0.00085, 0.012),
             ('squaredcos_cap_v2', 1e-4, 0.02)]


@pytest.mark.parametrize('name,b0,b1', SCHEDULES)
@pytest.mark.parametrize('n', [1000, 999, 17])
def test_tables_match_diffusers(name, b0, b1, n):
  d = DDIMScheduler(num_train_timesteps=n, beta_start=b0, beta_end=b1, beta_schedule=name)
  cfg = sch.ScheduleConfig(num_train_timesteps=n, beta_start=b0, beta_end=b1, beta_schedule=name)
  # torch.linspace rounds its last ulp by SIMD width; everything else (float64-accumulated cumprod) is exact.
  np.testing.assert_allclose(sch.betas(cfg), d.betas.numpy(), rtol=0, atol=2e-9)
  np.testing.assert_allclose(sch.alphas_cumprod(cfg), d.alphas_cumprod.numpy(), rtol=0, atol=2.5e-7)


@pytest.mark.parametrize('name,b0,b1', SCHEDULES)
def test_zero_terminal_snr(name, b0, b1):
  d = DDIMScheduler(beta_start=b0, beta_end=b1, beta_schedule=name, rescale_betas_zero_snr=True)
  cfg = sch.ScheduleConfig(beta_start=b0, beta_end=b1, beta_schedule=name, rescale_betas_zero_snr=True)
  abar = sch.alphas_cumprod(cfg)
  assert abar[-1] == 0.0  # the point of the rescale: SNR(T) = 0
  np.testing.assert_allclose(abar[0], sch.alphas_cumprod(sch.ScheduleConfig(
      beta_start=b0, beta_end=b1, beta_schedule=name))[0], rtol=1e-6)
  # torch's float32 sqrt is not correctly rounded on this CPU, so a few ulps apart.
  np.testing.assert_allclose(abar, d.alphas_cumprod.numpy(), rtol=0, atol=3e-6)


@pytest.mark.parametrize('spacing', ['leading', 'trailing', 'linspace'])
@pytest.mark.parametrize('steps', [1, 7, 30, 50, 333, 999, 1000])
@pytest.mark.parametrize('offset', [0, 1])
def test_inference_timesteps(spacing, steps, offset):
  for cls in (DDIMScheduler, DDPMScheduler):
    d = cls(timestep_spacing=spacing, steps_offset=offset)
    d.set_timesteps(steps)
    np.testing.assert_array_equal(sch.inference_timesteps(1000, steps, spacing, offset), d.timesteps.numpy())


def test_inference_timesteps_errors():
  with pytest.raises(ValueError, match='cannot exceed'):
    sch.inference_timesteps(1000, 1001)
  with pytest.raises(ValueError, match='>= 1'):
    sch.inference_timesteps(1000, 0)
  with pytest.raises(ValueError, match='timestep_spacing'):
    sch.inference_timesteps(1000, 10, 'uniform')
  with pytest.raises(ValueError, match='beta_schedule'):
    sch.ScheduleConfig(beta_schedule='cosine')
  with pytest.raises(ValueError, match='prediction_type'):
    sch.ScheduleConfig(prediction_type='eps')


def test_add_noise_and_velocity_match_diffusers():
  d = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear')
  cfg = sch.ScheduleConfig()
  abar = d.alphas_cumprod.numpy()  # same table; this tests the formula
  rng = np.random.default_rng(0)
  x0 = rng.standard_normal((5, 3, 4, 4)).astype(np.float32)
  noise = rng.standard_normal((5, 3, 4, 4)).astype(np.float32)
  t = np.array([0, 1, 500, 998, 999])
  ref = d.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(t)).numpy()
  np.testing.assert_allclose(sch.add_noise(abar, x0, noise, t), ref, rtol=0, atol=1e-6)
  ref_v = d.get_velocity(torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(t)).numpy()
  np.testing.assert_allclose(sch.velocity(abar, x0, noise, t), ref_v, rtol=0, atol=1e-6)
  np.testing.assert_allclose(sch.training_target('v_prediction', sch.alphas_cumprod(cfg), x0, noise, t), ref_v,
                             atol=2e-6)


@pytest.mark.parametrize('pt', sch.PREDICTION_TYPES)
def test_prediction_conversions_invert_the_target(pt):
  abar = sch.alphas_cumprod(sch.ScheduleConfig())
  k1, k2 = jax.random.split(jax.random.key(0))
  x0 = jax.random.normal(k1, (4, 2, 3, 3, 4))
  noise = jax.random.normal(k2, x0.shape)
  t = jnp.array([0, 250, 600, 999])
  xt = sch.add_noise(abar, x0, noise, t)
  target = sch.training_target(pt, abar, x0, noise, t)
  a = jnp.asarray(abar)[t].reshape(-1, 1, 1, 1, 1)
  x0_hat, eps_hat = sch.predict_x0_eps(pt, target, xt, a)
  tol = 2e-3 if pt == 'epsilon' else 1e-4  # eps -> x0 divides by sqrt(abar_999) ~ 0.068
  np.testing.assert_allclose(x0_hat, x0, atol=tol)
  np.testing.assert_allclose(eps_hat, noise, atol=1e-3 if pt == 'sample' else 1e-4)

"""The eq. 2/3 objective: MSE on the prediction target, min-SNR weighting, and the noising it trains on."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from tgvac_jax.diffusion import losses
from tgvac_jax.diffusion import schedule as sch

ABAR = sch.alphas_cumprod(sch.ScheduleConfig())


def _batch():
  k = jax.random.split(jax.random.key(1), 3)
  x0 = jax.random.normal(k[0], (4, 2, 3, 3, 4))
  noise = jax.random.normal(k[1], x0.shape)
  t = jnp.array([0, 10, 500, 999])
  return x0, noise, t, jax.random.normal(k[2], x0.shape)


@pytest.mark.parametrize('pt', sch.PREDICTION_TYPES)
def test_perfect_prediction_has_zero_loss(pt):
  x0, noise, t, _ = _batch()
  target = sch.training_target(pt, ABAR, x0, noise, t)
  assert float(losses.diffusion_loss(target, x0, noise, t, ABAR, prediction_type=pt)) < 1e-10
  assert float(losses.diffusion_loss(target, x0, noise, t, ABAR, prediction_type=pt, snr_gamma=5.0)) < 1e-10


def test_plain_mse_is_eq2():
  x0, noise, t, out = _batch()
  ref = np.mean((np.asarray(out) - np.asarray(noise)) ** 2)
  np.testing.assert_allclose(losses.diffusion_loss(out, x0, noise, t, ABAR), ref, rtol=1e-6)


@pytest.mark.parametrize('pt', sch.PREDICTION_TYPES)
def test_min_snr_weighting(pt):
  x0, noise, t, out = _batch()
  gamma = 5.0
  snr = np.asarray(ABAR)[np.asarray(t)] / (1 - np.asarray(ABAR)[np.asarray(t)])
  w = {'epsilon': np.minimum(snr, gamma) / snr, 'v_prediction': np.minimum(snr, gamma) / (snr + 1),
       'sample': np.minimum(snr, gamma)}[pt]
  target = np.asarray(sch.training_target(pt, ABAR, x0, noise, t))
  per = ((np.asarray(out) - target) ** 2).reshape(4, -1).mean(1)
  got = losses.diffusion_loss(out, x0, noise, t, ABAR, prediction_type=pt, snr_gamma=gamma)
  np.testing.assert_allclose(got, (per * w).mean(), rtol=1e-5)


def test_min_snr_zero_terminal_snr_is_finite():
  abar = sch.alphas_cumprod(sch.ScheduleConfig(rescale_betas_zero_snr=True, prediction_type='v_prediction'))
  t = jnp.array([999, 998])
  for pt in sch.PREDICTION_TYPES:
    w = losses.min_snr_weights(abar, t, 5.0, pt)
    assert np.isfinite(np.asarray(w)).all()


def test_noisy_input():
  x0 = jnp.ones((64, 4, 4, 4))
  zt, noise, t = losses.noisy_input(ABAR, x0, jax.random.key(0))
  assert t.shape == (64,) and int(t.min()) >= 0 and int(t.max()) < 1000
  np.testing.assert_allclose(zt, sch.add_noise(ABAR, x0, noise, t), rtol=1e-6)

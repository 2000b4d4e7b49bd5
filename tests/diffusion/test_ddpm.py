"""DDPM step parity with diffusers' DDPMScheduler (same alpha_bar table, float64 formulas; float32 spot check),
and ancestral sampling landing on the right Gaussian."""

import itertools

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

import jax
import jax.numpy as jnp

from tgvac_jax.diffusion import ddpm as ddpm_lib
from tgvac_jax.diffusion import schedule as sch

CASES = [dict(prediction_type=p, timestep_spacing=s, num_inference_steps=n)
         for p, s, n in itertools.product(('epsilon', 'v_prediction', 'sample'), ('leading', 'trailing', 'linspace'),
                                          (None, 50))
         if not (n is None and s != 'leading')]
CASES += [dict(variance_type='fixed_small_log'), dict(variance_type='fixed_large'),
          dict(clip_sample=True, clip_sample_range=1.5), dict(thresholding=True, sample_max_value=2.0),
          dict(steps_offset=1, num_inference_steps=20), dict(rescale_betas_zero_snr=True, prediction_type='v_prediction')]


def _noise(seed, shape, dtype):
  """What diffusers' randn_tensor draws on CPU for a torch.Generator seeded with `seed`."""
  return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _check(opts, dtype):
  opts = dict(opts)
  n = opts.pop('num_inference_steps', None)
  opts.setdefault('clip_sample', False)
  d = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear', **opts)
  if n is not None:
    d.set_timesteps(n)
  sched = sch.ScheduleConfig(prediction_type=opts.get('prediction_type', 'epsilon'),
                             trained_betas=tuple(d.betas.tolist()))
  keys = ('timestep_spacing', 'steps_offset', 'variance_type', 'clip_sample', 'clip_sample_range', 'thresholding',
          'sample_max_value')
  cfg = ddpm_lib.DDPMConfig(num_inference_steps=n, **{k: opts[k] for k in keys if k in opts})
  ts, prev = ddpm_lib.timesteps(sched, cfg)
  np.testing.assert_array_equal(ts, d.timesteps.numpy())
  if n is None:  # all 1000 steps: check the ends and a spread
    sel = np.r_[0, 1, 2, 100:1000:97, 997, 998, 999]
  else:
    sel = np.arange(len(ts))
  if dtype == np.float64:
    d.alphas_cumprod = d.alphas_cumprod.double()
    d.one = d.one.double()
  tdt = torch.float64 if dtype == np.float64 else torch.float32
  rng = np.random.default_rng(3)
  shape = (2, 4, 3, 3)
  xs = rng.standard_normal((len(sel),) + shape).astype(dtype)
  mos = rng.standard_normal((len(sel),) + shape).astype(dtype)
  nzs = np.stack([_noise(int(i), shape, tdt).numpy() for i in sel])
  refs = [d.step(torch.from_numpy(mos[j]), int(ts[i]), torch.from_numpy(xs[j]),
                 generator=torch.Generator().manual_seed(int(i))) for j, i in enumerate(sel)]
  step = jax.jit(jax.vmap(lambda m, t, pt, s, nz: ddpm_lib.ddpm_step(sched, cfg, m, t, pt, s, nz)))
  out, x0 = step(mos, jnp.asarray(ts[sel]), jnp.asarray(prev[sel]), xs, nzs)
  for j, r in enumerate(refs):
    for ours, ref in ((out[j], r.prev_sample.numpy()), (x0[j], r.pred_original_sample.numpy())):
      err = np.abs(np.asarray(ours) - ref).max()
      tol = 1e-6 if dtype == np.float64 else 4e-6 * max(1.0, np.abs(ref).max())
      assert err <= tol, (opts, int(ts[sel[j]]), err)


@pytest.mark.parametrize('opts', CASES, ids=lambda o: ','.join(f'{k}={v}' for k, v in o.items()))
def test_step_parity_float64(opts):
  with jax.enable_x64(True):
    _check(opts, np.float64)


@pytest.mark.parametrize('opts', CASES[:3], ids=lambda o: ','.join(f'{k}={v}' for k, v in o.items()))
def test_step_parity_float32(opts):
  _check(opts, np.float32)


def test_ancestral_sampling_lands_on_gaussian():
  """Data x0 ~ N(mu, s^2) per element: the optimal eps is closed-form, so DDPM must return N(mu, s^2)."""
  mu, s = 0.5, 0.4
  sched = sch.ScheduleConfig(beta_schedule='linear', beta_start=1e-4, beta_end=0.02)
  abar = jnp.asarray(sch.alphas_cumprod(sched))

  def eps(z, t):
    a = abar[t]
    return jnp.sqrt(1 - a) * (z - jnp.sqrt(a) * mu) / (a * s * s + 1 - a)

  cfg = ddpm_lib.DDPMConfig(num_inference_steps=200)
  t0 = int(ddpm_lib.timesteps(sched, cfg)[0][0])
  a0 = abar[t0]
  k1, k2 = jax.random.split(jax.random.key(0))
  z_T = jnp.sqrt(a0) * mu + jnp.sqrt(a0 * s * s + 1 - a0) * jax.random.normal(k1, (8, 16, 16, 4))
  x = jax.jit(lambda z: ddpm_lib.ddpm_sample(eps, z, k2, sched, cfg))(z_T)
  assert abs(float(x.mean()) - mu) < 0.02
  assert abs(float(x.std()) / s - 1) < 0.05


def test_bad_config():
  with pytest.raises(ValueError, match='variance_type'):
    ddpm_lib.DDPMConfig(variance_type='learned')
  with pytest.raises(ValueError, match='cannot exceed'):
    ddpm_lib.timesteps(sch.ScheduleConfig(), ddpm_lib.DDPMConfig(num_inference_steps=2000))

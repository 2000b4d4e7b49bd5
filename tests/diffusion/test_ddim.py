"""DDIM step parity with diffusers' DDIMScheduler, for every spacing, prediction type and option.

Both sides get the same float32 alpha_bar table (the table itself is tested in test_schedule.py). In float64 the
step formulas agree to ~1e-8 (asserted: 1e-6 absolute). In float32 the two disagree by float32 rounding only:
torch's SIMD sqrt is not correctly rounded and XLA fuses multiply-adds, and at high noise x0 = (x - ...)/sqrt(abar)
amplifies one ulp ~15x -- asserted as 4e-6 of max(1, |output|) (observed <= 2.3e-6).
"""

import itertools

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

import jax
import jax.numpy as jnp

from tgvac_jax.diffusion import ddim as ddim_lib
from tgvac_jax.diffusion import schedule as sch

SCHEDULES = {'scaled_linear': (0.00085, 0.012), 'linear': (0.0001, 0.02), 'squaredcos_cap_v2': (0.0001, 0.02)}
PREDICTIONS = ('epsilon', 'v_prediction', 'sample')
SPACINGS = ('leading', 'trailing', 'linspace')

CORE = [dict(beta_schedule=b, prediction_type=p, timestep_spacing=s, eta=0.5)
        for b, p, s in itertools.product(SCHEDULES, PREDICTIONS, SPACINGS)]
OPTIONS = [
    dict(set_alpha_to_one=True), dict(steps_offset=0), dict(eta=0.0), dict(eta=1.0),
    dict(clip_sample=True, clip_sample_range=1.5), dict(clip_sample=True, use_clipped_model_output=True),
    dict(thresholding=True, sample_max_value=2.0, dynamic_thresholding_ratio=0.9),
    dict(num_inference_steps=1), dict(num_inference_steps=7), dict(num_inference_steps=50),
    dict(num_inference_steps=1000, timestep_spacing='trailing'),
] + [dict(rescale_betas_zero_snr=True, prediction_type=p, timestep_spacing=s)
     for p, s in itertools.product(('v_prediction', 'sample'), SPACINGS)]
OPTIONS = [dict(dict(beta_schedule='scaled_linear', prediction_type='epsilon', timestep_spacing='leading',
                     eta=0.3), **o) for o in OPTIONS]


def _split(opts):
  opts = dict(opts)
  n = opts.pop('num_inference_steps', 30)
  eta = opts.pop('eta')
  use_clipped = opts.pop('use_clipped_model_output', False)
  opts.setdefault('steps_offset', 1)
  opts.setdefault('set_alpha_to_one', False)
  opts.setdefault('clip_sample', False)
  b0, b1 = SCHEDULES[opts['beta_schedule']]
  d = DDIMScheduler(beta_start=b0, beta_end=b1, **opts)
  d.set_timesteps(n)
  sched = sch.ScheduleConfig(prediction_type=opts['prediction_type'], trained_betas=tuple(d.betas.tolist()))
  keys = ('timestep_spacing', 'steps_offset', 'set_alpha_to_one', 'clip_sample', 'clip_sample_range',
          'thresholding', 'dynamic_thresholding_ratio', 'sample_max_value')
  cfg = ddim_lib.DDIMConfig(num_inference_steps=n, eta=eta, use_clipped_model_output=use_clipped,
                            **{k: opts[k] for k in keys if k in opts})
  return d, sched, cfg, eta, use_clipped


def _check(opts, dtype):
  d, sched, cfg, eta, use_clipped = _split(opts)
  np.testing.assert_array_equal(np.asarray(sch.alphas_cumprod(sched)), d.alphas_cumprod.numpy())
  ts = ddim_lib.timesteps(sched, cfg)
  np.testing.assert_array_equal(ts, d.timesteps.numpy())
  if dtype == np.float64:
    d.alphas_cumprod = d.alphas_cumprod.double()
    d.final_alpha_cumprod = d.final_alpha_cumprod.double()
  rng = np.random.default_rng(len(ts))
  shape = (len(ts), 2, 4, 3, 3)  # (steps, batch, C, H, W): all steps in one vmapped call
  x, mo, nz = (rng.standard_normal(shape).astype(dtype) for _ in range(3))
  refs = [d.step(torch.from_numpy(mo[i]), int(t), torch.from_numpy(x[i]), eta=eta,
                 use_clipped_model_output=use_clipped,
                 variance_noise=torch.from_numpy(nz[i]) if eta > 0 else None) for i, t in enumerate(ts)]
  step = jax.jit(jax.vmap(lambda m, t, s, n: ddim_lib.ddim_step(sched, cfg, m, t, s, n)))
  prev, x0 = step(mo, jnp.asarray(ts), x, nz)
  assert prev.dtype == dtype
  for i, r in enumerate(refs):
    for ours, ref in ((prev[i], r.prev_sample.numpy()), (x0[i], r.pred_original_sample.numpy())):
      err = np.abs(np.asarray(ours) - ref).max()
      tol = 1e-6 if dtype == np.float64 else 1e-6 * max(1.0, np.abs(ref).max()) * 4
      assert err <= tol, (opts, int(ts[i]), err)


@pytest.mark.parametrize('opts', CORE + OPTIONS, ids=lambda o: ','.join(f'{k}={v}' for k, v in o.items() if k != 'beta_schedule' or len(o) == 4))
def test_step_parity_float64(opts):
  with jax.enable_x64(True):
    _check(opts, np.float64)


@pytest.mark.parametrize('opts', CORE[:9] + OPTIONS[:7], ids=lambda o: ','.join(f'{k}={v}' for k, v in o.items() if k != 'beta_schedule' or len(o) == 4))
def test_step_parity_float32(opts):
  _check(opts, np.float32)


@pytest.mark.parametrize('pt', PREDICTIONS)
def test_sample_loop_matches_diffusers_loop(pt):
  """30 chained steps with a deterministic model output (a linear 'denoiser'), eta = 0, float64."""
  d = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear', steps_offset=1,
                    set_alpha_to_one=False, clip_sample=False, prediction_type=pt)
  d.set_timesteps(30)
  d.alphas_cumprod = d.alphas_cumprod.double()
  d.final_alpha_cumprod = d.final_alpha_cumprod.double()
  sched = sch.ScheduleConfig(prediction_type=pt)
  z = np.random.default_rng(1).standard_normal((2, 4, 3, 3))
  model = lambda x, t: 0.9 * x + 1e-4 * t
  ref = torch.from_numpy(z)
  for t in d.timesteps:
    ref = d.step(model(ref, int(t)), int(t), ref).prev_sample
  with jax.enable_x64(True):
    ours = jax.jit(lambda z: ddim_lib.ddim_sample(model, z, None, sched, ddim_lib.DDIMConfig()))(z)
    np.testing.assert_allclose(np.asarray(ours), ref.numpy(), rtol=0, atol=1e-6)  # observed ~1e-8


def test_bad_config():
  with pytest.raises(ValueError, match='cannot exceed'):
    ddim_lib.timesteps(sch.ScheduleConfig(), ddim_lib.DDIMConfig(num_inference_steps=1001))
  with pytest.raises(ValueError, match='eta'):
    ddim_lib.DDIMConfig(eta=-0.1)
  with pytest.raises(ValueError, match='timestep_spacing'):
    ddim_lib.DDIMConfig(timestep_spacing='karras')
  with pytest.raises(ValueError, match='num_inference_steps'):
    ddim_lib.DDIMConfig(num_inference_steps=0)
  with pytest.raises(ValueError, match='noise'):
    jax.eval_shape(lambda z: ddim_lib.ddim_step(sch.ScheduleConfig(), ddim_lib.DDIMConfig(eta=1.0), z, 10, z),
                   jnp.zeros(3))

"""The §3.4 sampler: averaging weights, analytic Gaussian data, exact reduction to DDIM, batching, determinism,
sharding over 8 simulated CPU devices, one trace per compile, and bad input."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from tgvac_jax.diffusion import ddim as ddim_lib
from tgvac_jax.diffusion import schedule as sch
from tgvac_jax.diffusion import windows as win
from tgvac_jax.diffusion.guidance import Cond, guided_output
from tgvac_jax.diffusion.temporal_sampler import (TemporalSamplerConfig, make_temporal_sampler, temporal_sample,
                                                  windowed_model_output)

HW, C = 2, 4  # tiny latents


def _frame_index(b, n):
  """Per-frame conditioning carrying the absolute frame index, so a denoiser can see its window's offset."""
  return jnp.broadcast_to(jnp.arange(n, dtype=jnp.float32)[None, :, None, None, None], (b, n, HW, HW, 1))


def offset_denoiser(params, z, t, cond):
  """Output depends only on where the window sits: f = 1 + start + 0.01 * position (+ text context)."""
  idx = cond.frames[..., :1]
  start = idx[:, :1]
  out = 1.0 + start + 0.01 * (idx - start) + cond.context[:, :1, None, None, :1]
  return jnp.broadcast_to(out, z.shape)


def _expected_average(n, length, stride, kind, ctx=0.0):
  ws = win.window_schedule(n, length, stride)
  num = np.zeros(n)
  den = np.zeros(n)
  w = win.window_weights(ws.length, kind)
  for s in ws.starts:
    j = np.arange(ws.length)
    num[s + j] += w * (1 + s + 0.01 * j + ctx)
    den[s + j] += w
  return num / den


@pytest.mark.parametrize('kind', ['flat', 'pyramid'])
@pytest.mark.parametrize('n,length,stride,chunk', [(28, 14, 4, 1), (28, 14, 4, 2), (17, 5, 3, 4), (9, 4, 4, 3),
                                                   (6, 6, 1, 1), (30, 7, 2, 64)])
def test_averaging_weights_are_applied(kind, n, length, stride, chunk):
  b = 2
  cfg = TemporalSamplerConfig(window_length=length, stride=stride, weighting=kind, chunk_size=chunk,
                              guidance_scale=1.0)
  z = jnp.zeros((b, n, HW, HW, C))
  cond = Cond(_frame_index(b, n), jnp.zeros((b, 3, 1)))
  out = jax.jit(lambda z: windowed_model_output(offset_denoiser, None, z, 500, cond, cfg))(z)
  expect = _expected_average(n, length, stride, kind)
  np.testing.assert_allclose(out, np.broadcast_to(expect[None, :, None, None, None], out.shape), rtol=1e-6)


def test_averaging_with_guidance():
  """'text' mode: both branches see the frames; uncond context 0, cond context 1 -> u + s (c - u) per frame."""
  b, n, scale = 2, 20, 3.0
  cfg = TemporalSamplerConfig(window_length=6, stride=4, weighting='pyramid', chunk_size=2, guidance_scale=scale,
                              guidance_mode='text')
  cond = Cond(_frame_index(b, n), jnp.ones((b, 3, 1)))
  out = windowed_model_output(offset_denoiser, None, jnp.zeros((b, n, HW, HW, C)), 10, cond, cfg,
                              uncond_context=jnp.zeros((1, 3, 1)))
  u, c = _expected_average(n, 6, 4, 'pyramid'), _expected_average(n, 6, 4, 'pyramid', ctx=1.0)
  np.testing.assert_allclose(out[0, :, 0, 0, 0], u + scale * (c - u), rtol=1e-6)


def test_one_step_sampler_applies_ddim_to_the_average():
  b, n = 1, 17
  cfg = TemporalSamplerConfig(window_length=5, stride=3, weighting='pyramid', chunk_size=2, guidance_scale=1.0,
                              ddim=ddim_lib.DDIMConfig(num_inference_steps=1))
  z = jax.random.normal(jax.random.key(0), (b, n, HW, HW, C))
  cond = Cond(_frame_index(b, n), jnp.zeros((b, 3, 1)))
  out = temporal_sample(offset_denoiser, None, z, cond, None, cfg)
  avg = jnp.broadcast_to(jnp.asarray(_expected_average(n, 5, 3, 'pyramid'), jnp.float32)[None, :, None, None, None],
                         z.shape)
  t = int(ddim_lib.timesteps(cfg.schedule, cfg.ddim)[0])
  np.testing.assert_allclose(out, ddim_lib.ddim_step(cfg.schedule, cfg.ddim, avg, t, z)[0], rtol=1e-5, atol=1e-5)


# ---- analytic Gaussian data: x0 ~ N(mu, s^2) per element, so E[eps | x_t] is closed-form ----------------------

MU, SD = 0.5, 0.4


def gaussian_denoiser(prediction_type, schedule):
  abar = jnp.asarray(sch.alphas_cumprod(schedule))

  def f(params, z, t, cond):
    a = abar[t].reshape((-1,) + (1,) * (z.ndim - 1))
    var = a * SD * SD + 1 - a
    eps = jnp.sqrt(1 - a) * (z - jnp.sqrt(a) * MU) / var
    x0 = MU + jnp.sqrt(a) * SD * SD * (z - jnp.sqrt(a) * MU) / var
    return {'epsilon': eps, 'v_prediction': jnp.sqrt(a) * eps - jnp.sqrt(1 - a) * x0, 'sample': x0}[prediction_type]
  return f


def _marginal(schedule, t, shape, key):
  a = jnp.asarray(sch.alphas_cumprod(schedule))[t]
  return jnp.sqrt(a) * MU + jnp.sqrt(a * SD * SD + 1 - a) * jax.random.normal(key, shape)


def ddim_gaussian_moments(schedule, ddim, m, v):
  """Exact mean/variance after the discrete DDIM chain for this data: every step is linear in x (plus noise),
  so the moments propagate in closed form -- including DDIM's own finite-step variance shrinkage and
  diffusers' prev = t - T//n convention."""
  abar = sch.alphas_cumprod(schedule).astype(np.float64)
  final = 1.0 if ddim.set_alpha_to_one else abar[0]
  for t in ddim_lib.timesteps(schedule, ddim):
    pt = t - schedule.num_train_timesteps // ddim.num_inference_steps
    a, ap = abar[t], (abar[pt] if pt >= 0 else final)
    var = a * SD * SD + 1 - a
    sig2 = ddim.eta ** 2 * (1 - ap) / (1 - a) * (1 - a / ap)
    c_eps = np.sqrt(1 - ap - sig2)
    k = (np.sqrt(ap * a) * SD * SD + c_eps * np.sqrt(1 - a)) / var  # d x_prev / d x
    m, v = np.sqrt(ap) * MU + k * (m - np.sqrt(a) * MU), k * k * v + sig2
  return m, v


@pytest.mark.parametrize('pt,eta,spacing,steps', [('epsilon', 0.0, 'leading', 30), ('v_prediction', 0.0, 'trailing', 30),
                                                  ('epsilon', 1.0, 'leading', 30), ('sample', 0.5, 'linspace', 30),
                                                  ('epsilon', 0.0, 'leading', 250)])
def test_lands_on_gaussian(pt, eta, spacing, steps):
  schedule = sch.ScheduleConfig(prediction_type=pt)
  ddim = ddim_lib.DDIMConfig(num_inference_steps=steps, eta=eta, timestep_spacing=spacing, steps_offset=1)
  cfg = TemporalSamplerConfig(window_length=6, stride=2, chunk_size=3, guidance_scale=1.0, schedule=schedule,
                              ddim=ddim)
  b, n = 4, 20
  t0 = int(ddim_lib.timesteps(schedule, ddim)[0])
  k1, k2 = jax.random.split(jax.random.key(0))
  z_T = _marginal(schedule, t0, (b, n, 4, 4, C), k1)
  x = np.asarray(make_temporal_sampler(gaussian_denoiser(pt, schedule), cfg)(None, z_T, Cond(), k2), np.float64)
  a0 = float(sch.alphas_cumprod(schedule)[t0])
  m, v = ddim_gaussian_moments(schedule, ddim, np.sqrt(a0) * MU, a0 * SD * SD + 1 - a0)
  assert abs(x.mean() - m) < 3 * np.sqrt(v / x.size), (x.mean(), m)
  assert abs(x.var() / v - 1) < 0.07, (x.var(), v)
  if steps >= 250:  # with enough steps the chain is the data distribution N(MU, SD^2)
    assert abs(m - MU) < 1e-3 and abs(np.sqrt(v) / SD - 1) < 0.02
    assert abs(x.mean() - MU) < 0.02 and abs(x.std() / SD - 1) < 0.05


# ---- exactness, batching, determinism ------------------------------------------------------------------------

def mixing_denoiser(params, z, t, cond):
  """Nonlinear and frame-coupled (like motion attention), so windowing changes the answer unless L >= N."""
  tt = t.astype(z.dtype)[:, None, None, None, None] / 1000
  m = jnp.tanh(z.mean(axis=1, keepdims=True))
  return params * z + 0.3 * m + 0.1 * cond.frames[..., :C] + tt + cond.context[:, :1, None, None, :C]


def _video(b, n, seed=0):
  k = jax.random.split(jax.random.key(seed), 3)
  z = jax.random.normal(k[0], (b, n, HW, HW, C))
  cond = Cond(jax.random.normal(k[1], (b, n, HW, HW, 2 * C)), jax.random.normal(k[2], (b, 3, C)))
  return z, cond


@pytest.mark.parametrize('eta,length', [(0.0, 9), (0.8, 14)])
def test_window_covering_clip_is_exactly_plain_ddim(eta, length):
  b, n = 2, 9
  z, cond = _video(b, n)
  empty = jnp.zeros((1, 3, C))
  ddim = ddim_lib.DDIMConfig(num_inference_steps=12, eta=eta)
  key = jax.random.key(7)
  plain = jax.jit(lambda z: ddim_lib.ddim_sample(
      lambda zz, t: guided_output(mixing_denoiser, 0.9, zz, t, cond, scale=7.5, uncond_context=empty), z, key,
      sch.ScheduleConfig(), ddim))(z)
  cfg = TemporalSamplerConfig(window_length=length, stride=4, ddim=ddim, chunk_size=2)
  ours = make_temporal_sampler(mixing_denoiser, cfg)(0.9, z, cond, key, empty)
  np.testing.assert_array_equal(ours, plain)


def test_batch_of_videos_equals_one_by_one():
  b, n = 3, 11
  z, cond = _video(b, n)
  cfg = TemporalSamplerConfig(window_length=4, stride=3, chunk_size=2, weighting='pyramid',
                              ddim=ddim_lib.DDIMConfig(num_inference_steps=4))
  empty = jnp.zeros((1, 3, C))
  sample = make_temporal_sampler(mixing_denoiser, cfg)
  full = sample(0.9, z, cond, None, empty)
  for i in range(b):
    one = sample(0.9, z[i:i + 1], jax.tree.map(lambda x: x[i:i + 1], cond), None, empty)
    np.testing.assert_allclose(one[0], full[i], rtol=1e-5, atol=1e-6)
  # per-video empty contexts (leading dim B) are accepted too
  np.testing.assert_allclose(sample(0.9, z, cond, None, jnp.zeros((b, 3, C))), full, rtol=1e-6, atol=1e-6)


def test_deterministic_per_seed():
  z, cond = _video(2, 10)
  cfg = TemporalSamplerConfig(window_length=4, stride=2, chunk_size=2,
                              ddim=ddim_lib.DDIMConfig(num_inference_steps=5, eta=1.0))
  sample = make_temporal_sampler(mixing_denoiser, cfg)
  a = sample(0.9, z, cond, jax.random.key(1), None)
  np.testing.assert_array_equal(a, sample(0.9, z, cond, jax.random.key(1), None))
  assert float(jnp.abs(a - sample(0.9, z, cond, jax.random.key(2), None)).max()) > 1e-3


def test_step_listener_sees_every_step_and_changes_nothing():
  """on_step (progress bars) is told each finished step in order; the samples are bit-identical without it."""
  z, cond = _video(2, 10)
  cfg = TemporalSamplerConfig(window_length=4, stride=2, chunk_size=2, ddim=ddim_lib.DDIMConfig(num_inference_steps=5))
  seen = []
  run = lambda on_step: jax.jit(lambda z: temporal_sample(mixing_denoiser, 0.9, z, cond, None, cfg,  # noqa: E731
                                                          on_step=on_step))(z)
  with_listener = run(lambda i: seen.append(int(i)))
  jax.effects_barrier()
  assert seen == list(range(5))
  np.testing.assert_array_equal(with_listener, run(None))


def test_denoiser_traced_once_whatever_the_steps_and_windows():
  """The scan/map structure: the denoiser appears once in the program (compile time flat in steps/frames)."""
  traces = []

  def counting(params, z, t, cond):
    traces.append(z.shape)
    return mixing_denoiser(params, z, t, cond)

  for steps, n in ((10, 28), (100, 112)):
    z, cond = _video(1, n)
    cfg = TemporalSamplerConfig(chunk_size=2, ddim=ddim_lib.DDIMConfig(num_inference_steps=steps))
    jax.jit(lambda z, c: temporal_sample(counting, 0.9, z, c, None, cfg, uncond_context=jnp.zeros((1, 3, C)))
            ).lower(z, cond)
  assert traces == [(4, 14, HW, HW, C)] * 2  # chunk 2 x 1 video x 2 guidance branches


# ---- sharding over 8 simulated CPU devices ----------------------------------------------------------------------

@pytest.mark.skipif(jax.device_count() < 8, reason='needs 8 (simulated) devices; tests/conftest.py sets the flag')
@pytest.mark.parametrize('shard,b,chunk', [('windows', 1, 8), ('windows', 2, 16), ('videos', 8, 2)])
def test_sharded_equals_unsharded(shard, b, chunk):
  n = 30
  z, cond = _video(b, n)
  empty = jnp.zeros((1, 3, C))
  ddim = ddim_lib.DDIMConfig(num_inference_steps=4, eta=0.5)
  key = jax.random.key(5)
  base = dict(window_length=6, stride=2, weighting='pyramid', ddim=ddim, chunk_size=chunk)
  ref = make_temporal_sampler(mixing_denoiser, TemporalSamplerConfig(**base))(0.9, z, cond, key, empty)
  mesh = Mesh(np.array(jax.devices()[:8]), ('data',))
  cfg = TemporalSamplerConfig(**base, shard=shard, mesh_axis='data')
  compiled = make_temporal_sampler(mixing_denoiser, cfg, mesh=mesh).lower(0.9, z, cond, key, empty).compile()
  hlo = compiled.as_text()
  assert 'num_partitions=8' in hlo  # an 8-way SPMD program that really splits the work:
  if shard == 'windows':  # devices exchange their windows' outputs before the overlap averaging
    assert any(c in hlo for c in ('all-gather', 'all-reduce', 'all-to-all'))
  else:  # each device holds and denoises its own video, no communication needed
    assert f'f32[{b // 8},{n},{HW},{HW},{C}]' in hlo
  np.testing.assert_allclose(compiled(0.9, z, cond, key, empty), ref, rtol=1e-5, atol=1e-5)


# ---- bad input: one clear ValueError each -----------------------------------------------------------------------

def test_bad_input():
  with pytest.raises(ValueError, match=r'stride \(5\) > window_length \(4\)'):
    TemporalSamplerConfig(window_length=4, stride=5)
  with pytest.raises(ValueError, match=r'window_length \(L\) must be >= 1'):
    TemporalSamplerConfig(window_length=0, stride=1)
  with pytest.raises(ValueError, match='cannot exceed the number of training timesteps'):
    TemporalSamplerConfig(ddim=ddim_lib.DDIMConfig(num_inference_steps=1001))
  with pytest.raises(ValueError, match='guidance_scale must be >= 0'):
    TemporalSamplerConfig(guidance_scale=-1.0)
  with pytest.raises(ValueError, match='at least 1 frame'):
    temporal_sample(mixing_denoiser, 0.9, jnp.zeros((1, 0, HW, HW, C)), Cond(), None, TemporalSamplerConfig())
  with pytest.raises(ValueError, match='chunk_size'):
    TemporalSamplerConfig(chunk_size=0)
  with pytest.raises(ValueError, match='multiple of the mesh axis'):
    mesh = Mesh(np.array(jax.devices()[:2]), ('data',))
    z, cond = _video(1, 20)
    temporal_sample(mixing_denoiser, 0.9, z, cond, None,
                    TemporalSamplerConfig(shard='windows', chunk_size=3), mesh=mesh)

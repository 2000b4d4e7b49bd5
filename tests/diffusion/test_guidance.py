"""Classifier-free guidance: one batched call, the right null condition per mode, the formula, bad scales."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from tgvac_jax.diffusion.guidance import Cond, guided_output, unconditional

B, F = 3, 2


def _inputs():
  k = jax.random.split(jax.random.key(0), 3)
  z = jax.random.normal(k[0], (B, F, 2, 2, 4))
  cond = Cond(frames=jax.random.normal(k[1], (B, F, 2, 2, 8)), context=jax.random.normal(k[2], (B, 5, 6)))
  empty = jnp.full((1, 5, 6), 0.25)
  return z, cond, empty


def _denoiser(calls):
  def eps(params, z, t, cond):
    calls.append(z.shape[0])
    tt = t.astype(z.dtype)[:, None, None, None, None]
    return (params * z + cond.frames.sum(-1, keepdims=True) * 0.1 + 0.01 * tt
            + cond.context.mean((1, 2))[:, None, None, None, None])
  return eps


@pytest.mark.parametrize('mode', ['full', 'text'])
@pytest.mark.parametrize('scale', [0.0, 0.5, 7.5])
def test_formula_and_single_call(mode, scale):
  z, cond, empty = _inputs()
  calls = []
  eps = _denoiser(calls)
  out = guided_output(eps, 0.5, z, 17, cond, scale=scale, uncond_context=empty, mode=mode)
  assert calls == [2 * B]  # cond and uncond in ONE call on a doubled batch
  t = jnp.full((B,), 17)
  un = Cond(jnp.zeros_like(cond.frames) if mode == 'full' else cond.frames, jnp.broadcast_to(empty, (B, 5, 6)))
  u, c = eps(0.5, z, t, un), eps(0.5, z, t, cond)
  np.testing.assert_allclose(out, u + scale * (c - u), rtol=1e-6, atol=1e-6)


def test_null_condition():
  z, cond, empty = _inputs()
  full = unconditional(cond, empty, 'full')
  assert float(jnp.abs(full.frames).max()) == 0.0
  np.testing.assert_array_equal(full.context, jnp.broadcast_to(empty, cond.context.shape))
  text = unconditional(cond, empty, 'text')
  np.testing.assert_array_equal(text.frames, cond.frames)


def test_scale_one_or_no_uncond_runs_cond_only():
  z, cond, empty = _inputs()
  calls = []
  eps = _denoiser(calls)
  out = guided_output(eps, 0.5, z, 3, cond, scale=1.0, uncond_context=empty)
  out2 = guided_output(eps, 0.5, z, 3, cond, scale=7.5, uncond_context=None)
  assert calls == [B, B]
  ref = eps(0.5, z, jnp.full((B,), 3), cond)
  np.testing.assert_array_equal(out, ref)
  np.testing.assert_array_equal(out2, ref)


def test_bad_input():
  z, cond, empty = _inputs()
  with pytest.raises(ValueError, match='guidance_scale must be >= 0'):
    guided_output(_denoiser([]), 0.5, z, 3, cond, scale=-1.0, uncond_context=empty)
  with pytest.raises(ValueError, match='mode'):
    guided_output(_denoiser([]), 0.5, z, 3, cond, scale=2.0, uncond_context=empty, mode='image')

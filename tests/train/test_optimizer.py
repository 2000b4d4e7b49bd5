"""AdamW + warmup schedule + clipping + gradient accumulation, and the EMA, against hand-computed values."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from tgvac_jax.train.optimizer import (applied, clip_by_global_norm, ema_update, learning_rate, make_optimizer,
                                      update_weights)


def _optim(**kw):
  c = dict(lr=1e-2, warmup_steps=4, schedule='constant', b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, clip_norm=0.0,
           grad_accum=1)
  c.update(kw)
  return ml_collections.ConfigDict(c)


def test_schedules():
  lr = learning_rate(_optim(), 100)
  np.testing.assert_allclose([float(lr(i)) for i in (0, 2, 4, 50)], [0, 5e-3, 1e-2, 1e-2], rtol=1e-6)
  cos = learning_rate(_optim(schedule='cosine'), 104)
  np.testing.assert_allclose([float(cos(i)) for i in (4, 54, 104)], [1e-2, 5e-3, 0], atol=1e-8)
  with pytest.raises(ValueError, match='schedule'):
    learning_rate(_optim(schedule='step'), 10)


def test_first_adamw_step_is_a_clipped_sign_step():
  """Adam's first update is lr * g / (|g| + eps); decoupled weight decay adds lr * wd * w; clipping scales g."""
  tx, _ = make_optimizer(_optim(warmup_steps=0, weight_decay=0.1, clip_norm=1.0), 10)
  w = {'a': jnp.asarray([1.0, -2.0, 3.0])}
  g = {'a': jnp.asarray([3.0, -4.0, 0.0])}  # norm 5: clipped to 1
  updates, _ = tx.update(g, tx.init(w), w)
  clipped = np.array([0.6, -0.8, 0.0])
  want = -1e-2 * (clipped / (np.abs(clipped) + 1e-8) + 0.1 * np.array([1.0, -2.0, 3.0]))
  np.testing.assert_allclose(np.asarray(updates['a']), want, rtol=1e-5)


def test_gradient_accumulation_averages_micro_steps():
  tx, _ = make_optimizer(_optim(warmup_steps=0, grad_accum=2), 10)
  w = {'a': jnp.zeros(2)}
  state = tx.init(w)
  u1, state = tx.update({'a': jnp.asarray([1.0, -3.0])}, state, w)
  assert not bool(applied(tx, state)) and np.all(np.asarray(u1['a']) == 0)
  u2, state = tx.update({'a': jnp.asarray([3.0, 1.0])}, state, w)
  assert bool(applied(tx, state))
  np.testing.assert_allclose(np.asarray(u2['a']), [-1e-2, 1e-2], rtol=1e-5)  # sign of the mean (2, -1)
  plain, _ = make_optimizer(_optim(), 10)
  assert bool(applied(plain, plain.init(w)))
  assert not isinstance(plain, optax.MultiSteps)


def test_ema():
  ema = ema_update({'a': jnp.asarray([1.0, 2.0])}, {'a': jnp.asarray([3.0, 6.0])}, 0.75)
  np.testing.assert_allclose(np.asarray(ema['a']), [1.5, 3.0])


def test_clipping_with_the_known_norm_equals_optax():
  g = {'a': jnp.asarray([3.0, -4.0]), 'b': jnp.asarray([[12.0]])}  # norm 13
  for max_norm in (1.0, 20.0):
    want, _ = optax.clip_by_global_norm(max_norm).update(g, optax.EmptyState())
    clip = clip_by_global_norm(max_norm)
    for known in ({}, {'grad_norm': jnp.float32(13.0)}):
      got, _ = clip.update(g, clip.init(g), **known)
      for k in g:
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want[k]), rtol=1e-6)


def test_update_weights_clips_with_the_step_norm_unless_accumulating():
  """A wrong norm given to update_weights changes a plain step (so it is used) and not an accumulated one (whose
  clipping needs the accumulated gradient's norm)."""
  w = {'a': jnp.asarray([1.0, -2.0])}
  g = {'a': jnp.asarray([3.0, -4.0])}  # norm 5; 5e6 would scale it to ~1e-6, near Adam's eps
  for accum in (1, 2):
    tx, _ = make_optimizer(_optim(warmup_steps=0, clip_norm=1.0, grad_accum=accum), 10)
    update = update_weights(tx, 0.5)
    results = []
    for norm in (5.0, 5e6):
      params, state, ema = w, tx.init(w), w
      for _ in range(accum):
        params, state, ema = update(params, state, ema, g, jnp.float32(norm))
      results.append(np.asarray(params['a']))
    if accum == 1:
      np.testing.assert_allclose(results[0], [1.0 - 1e-2, -2.0 + 1e-2], rtol=1e-6)  # Adam's first step: the sign
      assert np.abs(results[0] - results[1]).max() > 1e-5
    else:
      np.testing.assert_array_equal(results[0], results[1])

"""AdamW with linear warmup, global-norm clipping and optional gradient accumulation; the EMA of the weights.

The paper trains both stages with AdamW at 5e-4; warmup keeps the first steps of a freshly grown conv_in (zero
channels) and of new motion modules from jumping. EMA weights are what gets exported and sampled.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax


def learning_rate(optim, num_steps: int) -> optax.Schedule:
  """Linear warmup 0 -> lr over `optim.warmup_steps`, then constant or cosine to 0 at `num_steps` (optimizer
  steps, i.e. after gradient accumulation)."""
  warmup = int(optim.warmup_steps)
  if optim.schedule == 'constant':
    after = optax.constant_schedule(optim.lr)
  elif optim.schedule == 'cosine':
    after = optax.cosine_decay_schedule(optim.lr, max(1, int(num_steps) - warmup))
  else:
    raise ValueError(f"optim.schedule must be 'constant' or 'cosine', got {optim.schedule!r}")
  if warmup <= 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, optim.lr, warmup), after], [warmup])


def make_optimizer(optim, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(transformation, schedule). With `optim.grad_accum > 1` the transformation is an `optax.MultiSteps` that
  averages that many micro-step gradients before one AdamW update."""
  schedule = learning_rate(optim, num_steps)
  parts = [clip_by_global_norm(optim.clip_norm)] if optim.clip_norm > 0 else []
  parts.append(optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=optim.weight_decay))
  tx = optax.chain(*parts)
  if int(optim.grad_accum) > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=int(optim.grad_accum))
  return tx, schedule


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformationExtraArgs:
  """optax.clip_by_global_norm that takes the norm the step has already computed (`update(..., grad_norm=)`;
  without it, computes it) and scales by min(1, max_norm / norm). optax's selects between the gradient and a
  scaled copy, which XLA:CPU writes out and reads in both moment updates (the medium frame stage: 143 MiB of temp
  buffer, now none), and computes the norm a second time (bench/optimizer_step.py)."""

  def update(updates, state, params=None, *, grad_norm=None, **extra_args):
    del params, extra_args
    if grad_norm is None:
      grad_norm = optax.tree.norm(updates)
    scale = jnp.minimum(1.0, max_norm / grad_norm)
    return jax.tree.map(lambda g: g * scale.astype(g.dtype), updates), state

  return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update)


def applied(tx: optax.GradientTransformation, opt_state) -> jax.Array:
  """True where the last `tx.update` changed the weights (always, unless accumulating gradients)."""
  if isinstance(tx, optax.MultiSteps):
    return tx.has_updated(opt_state)
  return jnp.asarray(True)


def ema_update(ema, params, decay: float):
  """ema <- decay * ema + (1 - decay) * params, in float32."""
  return optax.incremental_update(params, ema, step_size=1.0 - decay)


def update_weights(tx: optax.GradientTransformation, ema_decay: float) -> Callable:
  """(params, opt_state, ema, grads, grad_norm) -> (params, opt_state, ema): one `tx` update and the EMA after it
  (which moves only when the weights did: not between accumulated micro-steps). `grad_norm` (of `grads`) spares
  the clipping a pass; when accumulating, the clipping needs the accumulated gradient's norm instead."""

  def update(params, opt_state, ema, grads, grad_norm):
    known = {} if isinstance(tx, optax.MultiSteps) else {'grad_norm': grad_norm}
    updates, opt_state = tx.update(grads, opt_state, params, **known)
    params = optax.apply_updates(params, updates)
    ema = jax.tree.map(lambda new, old: jnp.where(applied(tx, opt_state), new, old),
                       ema_update(ema, params, ema_decay), ema)
    return params, opt_state, ema

  return update

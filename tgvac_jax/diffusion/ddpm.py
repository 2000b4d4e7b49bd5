"""DDPM ancestral sampling (Ho et al. 2020), diffusers' `DDPMScheduler.step` as a pure function.

Used as a reference sampler (it is exact in the many-step limit) and for training-time previews; inference uses
DDIM. Learned-variance heads are not supported (SD-1.5 has none).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from tgvac_jax.diffusion import schedule as sch
from tgvac_jax.diffusion.ddim import clip_or_threshold, step_noise

VARIANCE_TYPES = ('fixed_small', 'fixed_small_log', 'fixed_large')


@dataclasses.dataclass(frozen=True)
class DDPMConfig:
  """`num_inference_steps=None` walks every training timestep. Clipping is off by default (latent diffusion)."""
  num_inference_steps: int | None = None
  timestep_spacing: str = 'leading'
  steps_offset: int = 0
  variance_type: str = 'fixed_small'
  clip_sample: bool = False
  clip_sample_range: float = 1.0
  thresholding: bool = False
  dynamic_thresholding_ratio: float = 0.995
  sample_max_value: float = 1.0

  def __post_init__(self):
    if self.variance_type not in VARIANCE_TYPES:
      raise ValueError(f'variance_type {self.variance_type!r} is not one of {VARIANCE_TYPES}')
    if self.timestep_spacing not in sch.TIMESTEP_SPACINGS:
      raise ValueError(f'timestep_spacing {self.timestep_spacing!r} is not one of {sch.TIMESTEP_SPACINGS}')


def timesteps(schedule: sch.ScheduleConfig, cfg: DDPMConfig) -> tuple[np.ndarray, np.ndarray]:
  """(timesteps, previous timesteps): each step goes to the next listed timestep, the last to -1 (x_0)."""
  n = schedule.num_train_timesteps
  if cfg.num_inference_steps is None:
    ts = np.arange(n)[::-1].astype(np.int64)
  else:
    ts = sch.inference_timesteps(n, cfg.num_inference_steps, cfg.timestep_spacing, cfg.steps_offset)
  return ts, np.append(ts[1:], -1)


def ddpm_step(schedule: sch.ScheduleConfig, cfg: DDPMConfig, model_output: jax.Array, t: jax.Array,
              prev_t: jax.Array, sample: jax.Array, noise: jax.Array) -> tuple[jax.Array, jax.Array]:
  """x_t -> x_{prev_t} ~ q(x_{prev_t} | x_t, x0_hat) (posterior mean + variance * noise, none at t = 0).

  Returns (prev_sample, pred_x0). `t`, `prev_t` scalar ints (may be traced); prev_t = -1 means x_0.
  """
  dt = jnp.promote_types(sample.dtype, jnp.float32)
  abar = jnp.asarray(sch.alphas_cumprod(schedule)).astype(dt)
  alpha_prod_t = abar[t]
  alpha_prod_t_prev = jnp.where(prev_t >= 0, abar[jnp.maximum(prev_t, 0)], jnp.ones((), dt))
  beta_prod_t = 1 - alpha_prod_t
  beta_prod_t_prev = 1 - alpha_prod_t_prev
  current_alpha_t = alpha_prod_t / alpha_prod_t_prev
  current_beta_t = 1 - current_alpha_t
  x = sample.astype(dt)
  x0, _ = sch.predict_x0_eps(schedule.prediction_type, model_output.astype(dt), x, alpha_prod_t)
  x0 = clip_or_threshold(x0, cfg)
  mean = (jnp.sqrt(alpha_prod_t_prev) * current_beta_t / beta_prod_t) * x0 + (
      jnp.sqrt(current_alpha_t) * beta_prod_t_prev / beta_prod_t) * x
  variance = jnp.maximum(beta_prod_t_prev / beta_prod_t * current_beta_t, 1e-20)
  if cfg.variance_type == 'fixed_small':
    std = jnp.sqrt(variance)
  elif cfg.variance_type == 'fixed_small_log':
    std = jnp.exp(0.5 * jnp.log(variance))
  else:  # fixed_large
    std = jnp.sqrt(current_beta_t)
  prev = mean + jnp.where(t > 0, std, 0) * noise.astype(dt)
  return prev.astype(sample.dtype), x0.astype(sample.dtype)


def ddpm_sample(model_fn: Callable[[jax.Array, jax.Array], jax.Array], z_T: jax.Array, key: jax.Array,
                schedule: sch.ScheduleConfig, cfg: DDPMConfig) -> jax.Array:
  """Ancestral sampling with `model_fn(z, t) -> model output`: one `lax.scan`, noise folded from `key`."""
  ts, prev = timesteps(schedule, cfg)

  def body(z, xs):
    i, t, pt = xs
    out = model_fn(z, t)
    return ddpm_step(schedule, cfg, out, t, pt, z, step_noise(key, i, z.shape, z.dtype))[0], None

  z, _ = jax.lax.scan(body, z_T, (jnp.arange(len(ts)), jnp.asarray(ts, jnp.int32), jnp.asarray(prev, jnp.int32)))
  return z

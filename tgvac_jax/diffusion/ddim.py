"""DDIM (Song et al. 2021): the update, its timesteps, and a plain (single-window) sampling loop.

`ddim_step` is diffusers' `DDIMScheduler.step` written as a pure function of a traced timestep, so it can sit
inside `lax.scan`. Like diffusers, the previous timestep is `t - T // n` for every spacing (for `trailing` and
`linspace` that is not exactly the next timestep in the list; we keep it for parity).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from tgvac_jax.diffusion import schedule as sch


@dataclasses.dataclass(frozen=True)
class DDIMConfig:
  """Sampler settings. Defaults are SD-1.5's shipped scheduler (`leading`, offset 1, no alpha-to-one, no
  clipping) with the paper's 30 steps and eta = 0."""
  num_inference_steps: int = 30
  timestep_spacing: str = 'leading'
  steps_offset: int = 1
  set_alpha_to_one: bool = False
  eta: float = 0.0
  clip_sample: bool = False
  clip_sample_range: float = 1.0
  thresholding: bool = False
  dynamic_thresholding_ratio: float = 0.995
  sample_max_value: float = 1.0
  use_clipped_model_output: bool = False

  def __post_init__(self):
    if self.num_inference_steps < 1:
      raise ValueError(f'num_inference_steps must be >= 1, got {self.num_inference_steps}')
    if self.timestep_spacing not in sch.TIMESTEP_SPACINGS:
      raise ValueError(f'timestep_spacing {self.timestep_spacing!r} is not one of {sch.TIMESTEP_SPACINGS}')
    if self.eta < 0:
      raise ValueError(f'eta must be >= 0, got {self.eta}')


def for_schedule(schedule: sch.ScheduleConfig, **settings) -> DDIMConfig:
  """DDIM settings a model trained with `schedule` should be sampled with: `trailing` spacing when the terminal
  SNR is zero (Lin et al. 2024 §3.3: `leading` never visits t = T - 1, the one step that starts from pure noise
  as training did)."""
  if schedule.rescale_betas_zero_snr:
    settings.setdefault('timestep_spacing', 'trailing')
  return DDIMConfig(**settings)


def timesteps(schedule: sch.ScheduleConfig, cfg: DDIMConfig) -> np.ndarray:
  """The descending timesteps DDIM visits (diffusers' `set_timesteps`); raises if steps > training steps."""
  return sch.inference_timesteps(schedule.num_train_timesteps, cfg.num_inference_steps, cfg.timestep_spacing,
                                 cfg.steps_offset)


def threshold_sample(x: jax.Array, ratio: float, max_value: float) -> jax.Array:
  """Imagen's dynamic thresholding, per sample over all non-batch axes (so layout-independent)."""
  flat = x.reshape(x.shape[0], -1).astype(jnp.float32)
  s = jnp.clip(jnp.quantile(jnp.abs(flat), ratio, axis=1), 1.0, max_value)[:, None]
  return (jnp.clip(flat, -s, s) / s).reshape(x.shape).astype(x.dtype)


def clip_or_threshold(x0: jax.Array, cfg: Any) -> jax.Array:
  """diffusers' order: thresholding wins over clip_sample."""
  if cfg.thresholding:
    return threshold_sample(x0, cfg.dynamic_thresholding_ratio, cfg.sample_max_value)
  if cfg.clip_sample:
    return jnp.clip(x0, -cfg.clip_sample_range, cfg.clip_sample_range)
  return x0


def ddim_step(schedule: sch.ScheduleConfig, cfg: DDIMConfig, model_output: jax.Array, t: jax.Array,
              sample: jax.Array, noise: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """One DDIM update x_t -> x_{t - T//n}; returns (prev_sample, pred_x0).

  `t` is a scalar int (may be traced). `noise` (same shape as sample) is required when eta > 0.
  """
  dt = jnp.promote_types(sample.dtype, jnp.float32)  # schedule math in >= float32 even for bf16 latents
  abar = jnp.asarray(sch.alphas_cumprod(schedule)).astype(dt)
  final = jnp.ones((), dt) if cfg.set_alpha_to_one else abar[0]
  prev_t = t - schedule.num_train_timesteps // cfg.num_inference_steps
  alpha_prod_t = abar[t]
  alpha_prod_t_prev = jnp.where(prev_t >= 0, abar[jnp.maximum(prev_t, 0)], final)
  beta_prod_t = 1 - alpha_prod_t
  x = sample.astype(dt)
  x0, eps = sch.predict_x0_eps(schedule.prediction_type, model_output.astype(dt), x, alpha_prod_t)
  x0 = clip_or_threshold(x0, cfg)
  variance = ((1 - alpha_prod_t_prev) / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)
  std_dev_t = cfg.eta * jnp.sqrt(variance)
  if cfg.use_clipped_model_output:
    eps = (x - jnp.sqrt(alpha_prod_t) * x0) / jnp.sqrt(beta_prod_t)
  prev = jnp.sqrt(alpha_prod_t_prev) * x0 + jnp.sqrt(1 - alpha_prod_t_prev - std_dev_t ** 2) * eps
  if cfg.eta > 0:
    if noise is None:
      raise ValueError('ddim_step with eta > 0 needs `noise`')
    prev = prev + std_dev_t * noise.astype(dt)
  return prev.astype(sample.dtype), x0.astype(sample.dtype)


def step_noise(key: jax.Array, step_index: jax.Array, shape, dtype) -> jax.Array:
  """Noise for step i, derived from one seed key; identical however the sampler is sharded or chunked."""
  return jax.random.normal(jax.random.fold_in(key, step_index), shape, dtype)


def ddim_sample(model_fn: Callable[[jax.Array, jax.Array], jax.Array], z_T: jax.Array, key: jax.Array | None,
                schedule: sch.ScheduleConfig, cfg: DDIMConfig) -> jax.Array:
  """Plain DDIM over the whole sample: `lax.scan` over timesteps with `model_fn(z, t) -> model output`
  (guidance, conditioning and parameters are the caller's closure). Traceable; jit it at the call site."""
  ts = jnp.asarray(timesteps(schedule, cfg), jnp.int32)
  if cfg.eta > 0 and key is None:
    raise ValueError('eta > 0 needs a PRNG key')

  def body(z, xs):
    i, t = xs
    out = model_fn(z, t)
    noise = step_noise(key, i, z.shape, z.dtype) if cfg.eta > 0 else None
    return ddim_step(schedule, cfg, out, t, z, noise)[0], None

  z, _ = jax.lax.scan(body, z_T, (jnp.arange(ts.shape[0]), ts))
  return z

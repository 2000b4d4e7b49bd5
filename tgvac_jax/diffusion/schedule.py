"""Noise schedules, the forward process and prediction-target conversions.

Everything here is numerically the same as diffusers' schedulers for the same settings: betas are built in
float32 the way torch builds them, so a checkpoint trained with diffusers samples identically here.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

BETA_SCHEDULES = ('linear', 'scaled_linear', 'squaredcos_cap_v2')
PREDICTION_TYPES = ('epsilon', 'v_prediction', 'sample')
TIMESTEP_SPACINGS = ('leading', 'trailing', 'linspace')


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
  """The training noise process. Defaults are SD-1.5's (AnimateDiff motion training used `linear`).

  `prediction_type` belongs here (not to a sampler) because it is a property of the trained network.
  `trained_betas`, when given, overrides the named schedule (a tuple, so the config stays hashable).
  """
  num_train_timesteps: int = 1000
  beta_start: float = 0.00085
  beta_end: float = 0.012
  beta_schedule: str = 'scaled_linear'
  prediction_type: str = 'epsilon'
  rescale_betas_zero_snr: bool = False
  trained_betas: tuple[float, ...] | None = None

  def __post_init__(self):
    if self.num_train_timesteps < 1:
      raise ValueError(f'num_train_timesteps must be >= 1, got {self.num_train_timesteps}')
    if self.trained_betas is None and self.beta_schedule not in BETA_SCHEDULES:
      raise ValueError(f'beta_schedule {self.beta_schedule!r} is not one of {BETA_SCHEDULES}')
    if self.prediction_type not in PREDICTION_TYPES:
      raise ValueError(f'prediction_type {self.prediction_type!r} is not one of {PREDICTION_TYPES}')


def _cosine_betas(n: int, max_beta: float = 0.999) -> np.ndarray:
  """Glide's squaredcos_cap_v2, computed in Python floats like diffusers' betas_for_alpha_bar."""
  f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
  return np.array([min(1 - f((i + 1) / n) / f(i / n), max_beta) for i in range(n)], dtype=np.float32)


def _linspace_f32(start: float, end: float, n: int) -> np.ndarray:
  """torch.linspace(dtype=float32) up to its last-ulp, SIMD-width-dependent rounding: float32 endpoints,
  arithmetic in float64 filled from both ends, rounded once."""
  s, e = np.float64(np.float32(start)), np.float64(np.float32(end))
  if n == 1:
    return np.array([s], np.float32)
  step = (e - s) / (n - 1)
  i = np.arange(n)
  return np.where(i < n // 2, s + step * i, e - step * (n - 1 - i)).astype(np.float32)


def _cumprod_f32(x: np.ndarray) -> np.ndarray:
  """torch's CPU cumprod of float32 accumulates in float64; do the same so alpha_bar matches bit for bit."""
  return np.cumprod(np.asarray(x, np.float32).astype(np.float64)).astype(np.float32)


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
  """Lin et al. 2023, Algorithm 1: shift/scale sqrt(alpha_bar) so the last step has SNR 0 (float32 as torch)."""
  betas = np.asarray(betas, np.float32)
  abar_sqrt = np.sqrt(_cumprod_f32(1.0 - betas))
  a0, at = abar_sqrt[0], abar_sqrt[-1]
  abar_sqrt = (abar_sqrt - at) * np.float32(a0 / (a0 - at))
  abar = abar_sqrt ** 2
  alphas = np.concatenate([abar[:1], abar[1:] / abar[:-1]])
  return (1.0 - alphas).astype(np.float32)


@functools.lru_cache(maxsize=64)
def _tables(cfg: ScheduleConfig) -> tuple[np.ndarray, np.ndarray]:
  n = cfg.num_train_timesteps
  if cfg.trained_betas is not None:
    betas = np.asarray(cfg.trained_betas, np.float32)
  elif cfg.beta_schedule == 'linear':
    betas = _linspace_f32(cfg.beta_start, cfg.beta_end, n)
  elif cfg.beta_schedule == 'scaled_linear':
    betas = _linspace_f32(cfg.beta_start ** 0.5, cfg.beta_end ** 0.5, n) ** 2
  else:
    betas = _cosine_betas(n)
  if cfg.rescale_betas_zero_snr:
    betas = rescale_zero_terminal_snr(betas)
  betas = betas.astype(np.float32)
  abar = _cumprod_f32(1.0 - betas)
  betas.setflags(write=False)
  abar.setflags(write=False)
  return betas, abar


def betas(cfg: ScheduleConfig) -> np.ndarray:
  """(T,) float32 betas."""
  return _tables(cfg)[0]


def alphas_cumprod(cfg: ScheduleConfig) -> np.ndarray:
  """(T,) float32 alpha_bar_t = prod_{s<=t} (1 - beta_s); static, so jit embeds it as a constant."""
  return _tables(cfg)[1]


def inference_timesteps(num_train_timesteps: int, num_inference_steps: int, spacing: str = 'leading',
                        steps_offset: int = 0) -> np.ndarray:
  """Descending int timesteps for a sampler, exactly as diffusers' `set_timesteps` (Lin et al. 2023, Table 2).

  leading: 0, r, 2r, ... (+ steps_offset), r = T // n;  trailing: round(T, T - T/n, ...) - 1;
  linspace: round(linspace(0, T - 1, n)).
  """
  if num_inference_steps < 1:
    raise ValueError(f'num_inference_steps must be >= 1, got {num_inference_steps}')
  if num_inference_steps > num_train_timesteps:
    raise ValueError(f'num_inference_steps ({num_inference_steps}) cannot exceed the number of training '
                     f'timesteps ({num_train_timesteps})')
  if spacing == 'linspace':
    ts = np.linspace(0, num_train_timesteps - 1, num_inference_steps).round()[::-1].copy().astype(np.int64)
  elif spacing == 'leading':
    ratio = num_train_timesteps // num_inference_steps
    ts = (np.arange(0, num_inference_steps) * ratio).round()[::-1].copy().astype(np.int64) + steps_offset
  elif spacing == 'trailing':
    ratio = num_train_timesteps / num_inference_steps
    ts = np.round(np.arange(num_train_timesteps, 0, -ratio)).astype(np.int64) - 1
  else:
    raise ValueError(f'timestep_spacing {spacing!r} is not one of {TIMESTEP_SPACINGS}')
  return ts


def _bcast(v: jax.Array, like: jax.Array) -> jax.Array:
  """Per-sample scalars (B,) -> (B, 1, 1, ...) against `like`; scalars pass through."""
  v = jnp.asarray(v)
  return v.reshape(v.shape + (1,) * (like.ndim - v.ndim)) if v.ndim else v


def add_noise(abar: jax.Array, x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
  """Forward process q(x_t | x_0) = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps; `t` scalar or (B,)."""
  a = _bcast(jnp.asarray(abar, x0.dtype)[t], x0)
  return jnp.sqrt(a) * x0 + jnp.sqrt(1 - a) * noise


def velocity(abar: jax.Array, x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
  """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (Salimans & Ho 2022), the v_prediction target."""
  a = _bcast(jnp.asarray(abar, x0.dtype)[t], x0)
  return jnp.sqrt(a) * noise - jnp.sqrt(1 - a) * x0


def training_target(prediction_type: str, abar: jax.Array, x0: jax.Array, noise: jax.Array,
                    t: jax.Array) -> jax.Array:
  """What the network is trained to output for this prediction type."""
  if prediction_type == 'epsilon':
    return noise
  if prediction_type == 'v_prediction':
    return velocity(abar, x0, noise, t)
  if prediction_type == 'sample':
    return x0
  raise ValueError(f'prediction_type {prediction_type!r} is not one of {PREDICTION_TYPES}')


def predict_x0_eps(prediction_type: str, model_output: jax.Array, sample: jax.Array,
                   alpha_prod_t: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Model output at x_t -> (x0_hat, eps_hat); the same formulas (and float order) as diffusers' step."""
  sa, sb = jnp.sqrt(alpha_prod_t), jnp.sqrt(1 - alpha_prod_t)
  if prediction_type == 'epsilon':
    return (sample - sb * model_output) / sa, model_output
  if prediction_type == 'sample':
    return model_output, (sample - sa * model_output) / sb
  if prediction_type == 'v_prediction':
    return sa * sample - sb * model_output, sa * model_output + sb * sample
  raise ValueError(f'prediction_type {prediction_type!r} is not one of {PREDICTION_TYPES}')


def snr(abar: jax.Array, t: jax.Array) -> jax.Array:
  """Signal-to-noise ratio abar_t / (1 - abar_t) (min-SNR weighting, Hang et al. 2023)."""
  a = jnp.asarray(abar)[t]
  return a / (1 - a)

"""The denoising objective of eqs. 2 (frame stage) and 3 (motion stage): || target - model(z_t, c, t) ||^2.

Both stages share it; they differ only in what is trained and in the shape of z (frames vs 14-frame clips).
The target follows the prediction type (eps, v or x0). Optional min-SNR-gamma weighting (Hang et al. 2023) uses
diffusers' train_text_to_image convention, with the SNR = 0 step (zero-terminal-SNR) given weight 1 for eps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tgvac_jax.diffusion import schedule as sch


def noisy_input(abar: jax.Array, x0: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Draw t ~ U{0..T-1} per sample and eps ~ N(0, I); return (z_t, noise, t)."""
  kt, kn = jax.random.split(key)
  t = jax.random.randint(kt, (x0.shape[0],), 0, abar.shape[0])
  noise = jax.random.normal(kn, x0.shape, x0.dtype)
  return sch.add_noise(abar, x0, noise, t), noise, t


def min_snr_weights(abar: jax.Array, t: jax.Array, gamma: float, prediction_type: str) -> jax.Array:
  """Per-sample weights min(SNR, gamma) / SNR (eps), / (SNR + 1) (v), or min(SNR, gamma) (x0)."""
  s = sch.snr(abar, t)
  m = jnp.minimum(s, gamma)
  if prediction_type == 'epsilon':
    return jnp.where(s > 0, m / jnp.where(s > 0, s, 1.0), 1.0)
  if prediction_type == 'v_prediction':
    return m / (s + 1)
  if prediction_type == 'sample':
    return m
  raise ValueError(f'prediction_type {prediction_type!r} is not one of {sch.PREDICTION_TYPES}')


def diffusion_loss(model_output: jax.Array, x0: jax.Array, noise: jax.Array, t: jax.Array, abar: jax.Array, *,
                   prediction_type: str = 'epsilon', snr_gamma: float | None = None,
                   sample_weight: jax.Array | None = None) -> jax.Array:
  """Scalar loss: per-sample MSE (float32, over all non-batch axes) on the prediction target, optionally
  min-SNR weighted and/or multiplied by `sample_weight` (B,), then averaged over the batch."""
  target = sch.training_target(prediction_type, abar, x0.astype(jnp.float32), noise.astype(jnp.float32), t)
  err = jnp.square(model_output.astype(jnp.float32) - target)
  per_sample = err.reshape(err.shape[0], -1).mean(axis=1)
  if snr_gamma is not None:
    per_sample = per_sample * min_snr_weights(abar, t, snr_gamma, prediction_type)
  if sample_weight is not None:
    per_sample = per_sample * sample_weight
  return per_sample.mean()

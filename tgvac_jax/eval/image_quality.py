"""PSNR and SSIM inside a region (the occluded part A−M of the ground-truth object): how close the generated
pixels that were hidden in the input are to the true ones.

PSNR = 10 log10(255² / MSE) over the region's pixels and channels (inf when equal, NaN for an empty region).
SSIM is Wang et al.'s: Gaussian window σ = 1.5 (11 taps), K1 = 0.01, K2 = 0.03, population statistics, mirrored
borders; the per-pixel SSIM map (averaged over channels) is averaged over the region. This is scikit-image's
`structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
full=True)` map, restricted to the region.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

SIGMA = 1.5
TRUNCATE = 3.5                    # scipy's gaussian_filter default with skimage's choice: radius int(3.5σ + 0.5) = 5
K1, K2 = 0.01, 0.03
DATA_RANGE = 255.0


def psnr(pred: np.ndarray, gt: np.ndarray, region: np.ndarray) -> np.ndarray:
  """uint8 (..., H, W, 3) images and bool (..., H, W) regions -> per-image PSNR in dB."""
  pred, gt, region = np.asarray(pred, np.float64), np.asarray(gt, np.float64), np.asarray(region, bool)
  sq = ((pred - gt) ** 2).sum(axis=-1)
  n = np.count_nonzero(region, axis=(-2, -1)) * pred.shape[-1]
  mse = np.where(region, sq, 0).sum(axis=(-2, -1)) / np.maximum(n, 1)
  with np.errstate(divide='ignore'):
    out = 10 * np.log10(DATA_RANGE ** 2 / mse)
  return np.where(n > 0, out, np.nan)


def _gaussian_kernel() -> np.ndarray:
  r = int(TRUNCATE * SIGMA + 0.5)
  x = np.arange(-r, r + 1, dtype=np.float64)
  k = np.exp(-0.5 * (x / SIGMA) ** 2)
  return (k / k.sum()).astype(np.float32)


def _blur(x: jax.Array) -> jax.Array:
  """Separable Gaussian over H and W of (B, H, W, C), mirrored borders (scipy's 'reflect')."""
  k = jnp.asarray(_gaussian_kernel())
  r = (k.shape[0] - 1) // 2
  x = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode='symmetric')
  h, w = x.shape[1] - 2 * r, x.shape[2] - 2 * r
  x = sum(k[i] * x[:, i:i + h] for i in range(k.shape[0]))
  return sum(k[i] * x[:, :, i:i + w] for i in range(k.shape[0]))


@jax.jit
def ssim_map(pred: jax.Array, gt: jax.Array) -> jax.Array:
  """uint8 (B, H, W, C) pairs -> (B, H, W) SSIM per pixel, averaged over channels."""
  x, y = pred.astype(jnp.float32), gt.astype(jnp.float32)
  mx, my = _blur(x), _blur(y)
  vx = _blur(x * x) - mx * mx
  vy = _blur(y * y) - my * my
  cxy = _blur(x * y) - mx * my
  c1, c2 = (K1 * DATA_RANGE) ** 2, (K2 * DATA_RANGE) ** 2
  s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
  return s.mean(axis=-1)


def ssim(pred: np.ndarray, gt: np.ndarray, region: np.ndarray) -> np.ndarray:
  """uint8 (B, H, W, 3) images and bool (B, H, W) regions -> per-image mean SSIM over the region (NaN if empty)."""
  region = np.asarray(region, bool)
  s = np.asarray(ssim_map(jnp.asarray(pred), jnp.asarray(gt)), np.float64)
  n = np.count_nonzero(region, axis=(-2, -1))
  return np.where(n > 0, np.where(region, s, 0).sum(axis=(-2, -1)) / np.maximum(n, 1), np.nan)

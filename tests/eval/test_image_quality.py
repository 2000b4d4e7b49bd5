"""Region PSNR/SSIM against scikit-image and closed forms."""

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from tgvac_jax.eval.image_quality import psnr, ssim, ssim_map


def _pair(shape=(2, 40, 48, 3)):
  rng = np.random.default_rng(0)
  a = rng.integers(0, 256, shape, dtype=np.uint8)
  b = np.clip(a.astype(int) + rng.integers(-40, 41, shape), 0, 255).astype(np.uint8)
  return a, b, rng.random(shape[:-1]) < 0.3


def test_psnr_matches_skimage_on_region_pixels_and_closed_form():
  a, b, region = _pair()
  ref = [peak_signal_noise_ratio(a[i][region[i]], b[i][region[i]], data_range=255) for i in range(2)]
  np.testing.assert_allclose(psnr(a, b, region), ref, rtol=1e-12)
  # every region pixel off by 5 in one channel of three: MSE = 25/3
  c = a[0].copy()
  c[..., 1] = np.where(a[0][..., 1] < 128, a[0][..., 1] + 5, a[0][..., 1] - 5)
  np.testing.assert_allclose(psnr(a[0], c, np.ones(a.shape[1:3], bool)), 10 * np.log10(255 ** 2 * 3 / 25))
  assert psnr(a[0], a[0], region[0]) == np.inf
  assert np.isnan(psnr(a[0], b[0], np.zeros_like(region[0])))


def test_ssim_is_skimages_gaussian_map_restricted_to_the_region():
  a, b, region = _pair()
  ours_map = np.asarray(ssim_map(a, b))
  ours = ssim(a, b, region)
  for i in range(2):
    _, full = structural_similarity(a[i], b[i], channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, full=True)
    np.testing.assert_allclose(ours_map[i], full.mean(-1), atol=5e-6)
    np.testing.assert_allclose(ours[i], full.mean(-1)[region[i]].mean(), atol=5e-6)
  np.testing.assert_allclose(ssim(a, a, region), 1.0, atol=1e-6)
  assert np.isnan(ssim(a, b, np.zeros_like(region))).all()

"""Placement arithmetic for each fit, and the round trip input -> model canvas -> input."""

import numpy as np
import pytest

from tgvac_jax.infer import resize


def test_placements():
  # pad: 480x854 into 256x256 -> scale 256/854, content 144x256 centred vertically
  assert resize.placement((480, 854), 256, 32, 'pad') == resize.Placement((480, 854), (256, 256), (56, 0, 144, 256))
  assert resize.placement((20, 24), 16, 4, 'stretch').box == (0, 0, 16, 16)
  # short side 480 -> 256, long side round(854 * 256 / 480) = 455 -> padded up to 480 (a multiple of 32)
  assert resize.placement((480, 854), 256, 32, 'short_side') == resize.Placement(
      (480, 854), (256, 480), (0, 12, 256, 455))
  with pytest.raises(ValueError, match='multiple of 32'):
    resize.placement((480, 854), 250, 32)
  with pytest.raises(ValueError, match='fit'):
    resize.placement((480, 854), 256, 32, 'crop')


def test_round_trip_keeps_masks_and_pads_with_edges_and_background():
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (2, 30, 60, 3), dtype=np.uint8)
  masks = np.zeros((2, 30, 60), bool)
  masks[:, 6:24, 12:48] = True
  pl = resize.placement((30, 60), 32, 4, 'pad')             # content 16x32 at rows 8..24
  f, m = resize.to_model(frames, masks, pl)
  assert f.shape == (2, 32, 32, 3) and m.shape == (2, 32, 32)
  top, _, ch, _ = pl.box
  np.testing.assert_array_equal(f[:, 0], f[:, top])          # edge rows repeated into the padding
  assert not m[:, :top].any() and not m[:, top + ch:].any()  # masks padded with background
  objects = np.where(masks[..., None], 0, 255).astype(np.uint8).repeat(3, axis=-1)   # a black object on white
  rgb, back = resize.from_model(resize.to_model(objects, masks, pl)[0], pl, mask_threshold=0.5)
  assert rgb.shape == frames.shape and back.shape == masks.shape
  np.testing.assert_array_equal(back, rgb.max(-1) < 0.5 * 255)   # the mask is the resized object's dark pixels
  assert (back == masks).mean() > 0.97                        # a box survives halving and doubling


def test_mask_closing_fills_seams_narrower_than_its_disk_and_keeps_solid_shapes():
  """A square cut by a white seam: closing with a disk of radius r (2r + 1 pixels across) fills a seam up to 2r
  wide, all but the notches a round disk leaves where the seam meets the square's edge, and nothing outside the
  square; a seam of 2r + 1 stays open. A disk and a square, convex, stay as they are; the frame's edge erodes
  nothing."""
  from tgvac_jax.infer.complete import close_masks
  yy, xx = np.mgrid[:64, :64]
  square = (yy >= 10) & (yy < 40) & (xx >= 10) & (xx < 40)
  for seam, radius in ((4, 2), (5, 2), (6, 3), (7, 3)):
    cut = square & ~((xx >= 22) & (xx < 22 + seam))
    closed = close_masks(cut[None], radius)[0]
    assert not (closed & ~square).any() and (closed >= cut).all()
    if seam <= 2 * radius:
      np.testing.assert_array_equal(closed[10 + radius:40 - radius], square[10 + radius:40 - radius])
    else:
      np.testing.assert_array_equal(closed, cut)
  disk = (yy - 30) ** 2 + (xx - 33) ** 2 <= 15 ** 2
  edge = xx < 8 + yy // 8                                      # touches three sides of the frame
  for convex in (disk, square, edge):
    np.testing.assert_array_equal(close_masks(convex[None, None], 4)[0, 0], convex)
  np.testing.assert_array_equal(close_masks(disk, 0), disk)


def test_input_pixels_scales_canvas_lengths():
  assert resize.input_pixels(resize.placement((64, 64), 16, 4, 'pad'), 4) == 16
  assert resize.input_pixels(resize.placement((30, 60), 32, 4, 'pad'), 4) == 8     # content 16x32 of a 30x60 input
  assert resize.input_pixels(resize.placement((32, 32), 32, 4, 'pad'), 0) == 0

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


def _square_path(frames, size, side, corners):
  """(frames, size, size) masks of a side x side square at each (top, left) of `corners`."""
  m = np.zeros((frames, size, size), bool)
  for i, (t, l) in enumerate(corners):
    m[i, t:t + side, l:l + side] = True
  return m


def test_object_fit_frames_the_visible_path_with_context():
  """fit='object': the region is the visible path's box widened by `context` object sizes on each side (a 10-pixel
  square moving 10 pixels right: path 10 x 20, plus 2 x 10 -> a 40-pixel square centred on the path), shifted into
  the frame where it would cross an edge; no smaller than the model's resolution; as `pad` where it would not be
  smaller than the frame, and for an object never seen."""
  pl = resize.placement((128, 128), 16, 4, 'object')
  assert pl == resize.placement((128, 128), 16, 4, 'pad')
  moving = _square_path(2, 128, 10, [(50, 60), (50, 70)])
  assert resize.around_object(pl, moving, 1.0).region == (35, 50, 40, 40)
  assert resize.around_object(pl, moving, 0.0).region == (45, 60, 20, 20)   # the path's long side
  corner = _square_path(1, 128, 10, [(2, 115)])
  assert resize.around_object(pl, corner, 1.0).region == (0, 98, 30, 30)    # inside the frame
  assert resize.around_object(pl, _square_path(1, 128, 2, [(60, 60)]), 1.0).region == (53, 53, 16, 16)  # >= 16
  assert resize.around_object(pl, corner, 6.0) == pl                        # 130 > 128: the whole frame
  assert resize.around_object(pl, np.zeros((2, 128, 128), bool), 1.0) == pl
  wide = resize.placement((64, 160), 16, 4, 'object')                        # a square taller than the frame
  assert resize.around_object(wide, _square_path(1, 160, 20, [(20, 90)])[:, :64], 1.5).region == (-8, 60, 80, 80)
  with pytest.raises(ValueError, match='context'):
    resize.around_object(pl, moving, -1.0)


def test_object_fit_round_trip_pastes_the_region_back_on_white():
  """Through the canvas and back: the object keeps its shape at the region's scale (a 13-pixel disk in a 96-pixel
  frame would be 2 pixels across on a 16-pixel canvas with `pad`, and is 8 here), and nothing lies outside
  the region: white, not in the mask. A region past the frame's edge repeats the edge pixels on the canvas."""
  yy, xx = np.mgrid[:96, :96]
  disk = ((yy - 40) ** 2 + (xx - 70) ** 2 <= 6 ** 2)[None]
  objects = np.where(disk[..., None], 20, 255).astype(np.uint8).repeat(3, axis=-1)
  pl = resize.around_object(resize.placement((96, 96), 16, 4, 'object'), disk, 0.5)
  top, left, h, w = pl.region
  assert (h, w) == (26, 26) and pl.box == (0, 0, 16, 16)   # 13 + 2 x 0.5 x 13
  f, m = resize.to_model(objects, disk, pl)
  assert 0.7 * np.pi * 6.5 ** 2 * (16 / 26) ** 2 < m.sum() < 1.3 * np.pi * 6.5 ** 2 * (16 / 26) ** 2
  rgb, back = resize.from_model(f, pl, mask_threshold=0.5)
  outside = np.ones((96, 96), bool)
  outside[top:top + h, left:left + w] = False
  assert (rgb[:, outside] == 255).all() and not back[:, outside].any()
  iou = (back & disk).sum() / (back | disk).sum()
  assert iou > 0.8, iou
  assert resize.input_pixels(pl, 4) == round(4 * 26 / 16)

  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (1, 40, 40, 3), dtype=np.uint8)
  edge = resize.Placement((40, 40), (16, 16), (0, 0, 16, 16), region=(-8, 30, 16, 16))   # rows -8..8, cols 30..46
  f, m = resize.to_model(frames, np.ones((1, 40, 40), bool), edge)
  np.testing.assert_array_equal(f[0, :8, :10], np.broadcast_to(frames[0, :1, 30:40], (8, 10, 3)))
  np.testing.assert_array_equal(f[0, 8:, :10], frames[0, :8, 30:40])
  assert m[0, 8:, :10].all() and not m[0, :8].any() and not m[0, :, 10:].any()


def test_follow_fit_moves_the_square_with_the_object():
  """fit='follow': a 10-pixel square crossing a 128-pixel frame (15 pixels a frame) is seen in a 30-pixel square
  (10 + 2 x 10) centred on it (the 5-frame smoothing is exact on a straight path away from the ends), every
  frame's object inside its square; a frame where it is hidden gets the square between its neighbours'; the
  round trip puts the object back where it was in each frame."""
  corners = [(40, 5 + 15 * i) for i in range(8)]
  moving = _square_path(8, 128, 10, corners)
  pl = resize.around_object(resize.placement((128, 128), 16, 4, 'follow'), moving, 1.0, follow=True)
  assert pl.input_region[2:] == (30, 30) and len(pl.track) == 8
  for i, (t, l) in enumerate(corners):
    top, left, h, w = pl.frame_region(i)
    assert top <= t and t + 10 <= top + h and left <= l and l + 10 <= left + w, (i, pl.frame_region(i))
    if 2 <= i <= 5:
      assert (top, left) == (t - 10, l - 10)
  hidden = moving.copy()
  hidden[3] = False
  assert resize.around_object(pl, hidden, 1.0, follow=True).track[3] == pl.track[3]   # straight path: the same
  objects = np.where(moving[..., None], 20, 255).astype(np.uint8).repeat(3, axis=-1)
  f, m = resize.to_model(objects, moving, pl)
  np.testing.assert_array_equal(m[2], m[5])                   # the object stands still on the canvas
  rgb, back = resize.from_model(f, pl, mask_threshold=0.5)
  assert ((back & moving).sum((1, 2)) / (back | moving).sum((1, 2))).min() > 0.8

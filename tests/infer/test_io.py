"""Reading videos and masks the ways users store them, and the one-line errors for what cannot be used."""

import numpy as np
import pytest
from PIL import Image

from tgvac_jax.infer import io


def palette_png(path, labels):
  im = Image.fromarray(labels.astype(np.uint8), mode='P')
  im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [255] * (3 * 252))
  im.save(path)


def test_frame_folder_natural_order(tmp_path):
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (11, 6, 8, 3), dtype=np.uint8)
  for i, f in enumerate(frames):
    Image.fromarray(f).save(tmp_path / f'frame{i}.png')
  (tmp_path / 'notes.txt').write_text('not a frame')
  video = io.read_video(tmp_path)
  assert video.stems == tuple(f'frame{i}' for i in range(11))  # frame10 last, not after frame1
  np.testing.assert_array_equal(video.frames, frames)
  assert io.probe_video(tmp_path) == (11, 6, 8) and video.fps is None


def test_mp4_round_trip(tmp_path):
  frames = np.zeros((7, 32, 48, 3), np.uint8)
  frames[:, :, :24] = 200                                      # flat halves survive lossy coding closely
  io.write_mp4(tmp_path / 'v.mp4', frames, fps=12)
  video = io.read_video(tmp_path / 'v.mp4')
  assert video.frames.shape == frames.shape and video.fps == 12
  assert video.stems[0] == '00000' and len(video.stems) == 7
  assert np.abs(video.frames.astype(int) - frames).mean() < 3
  assert io.probe_video(tmp_path / 'v.mp4') == (7, 32, 48)


def test_unreadable_video(tmp_path):
  (tmp_path / 'broken.mp4').write_bytes(b'\x00not a video' * 100)
  with pytest.raises(ValueError, match='broken.mp4: cannot read the video'):
    io.read_video(tmp_path / 'broken.mp4')
  with pytest.raises(FileNotFoundError, match='no such video'):
    io.read_video(tmp_path / 'missing.mp4')


def test_masks_binary_and_palette(tmp_path):
  labels = np.zeros((3, 5, 6), np.uint8)
  labels[:, 1:3, 1:3] = 1
  labels[:, 3:, 4:] = 2
  labels[:, 0, 5] = 255                                        # DAVIS void pixels are no object
  (tmp_path / 'pal').mkdir()
  (tmp_path / 'bin').mkdir()
  for i in range(3):
    palette_png(tmp_path / 'pal' / f'{i:05d}.png', labels[i])
    Image.fromarray((labels[i] == 2).astype(np.uint8) * 255).save(tmp_path / 'bin' / f'{i:05d}.png')
  np.testing.assert_array_equal(io.read_masks(tmp_path / 'pal', 3, (5, 6), object_id=2), labels == 2)
  np.testing.assert_array_equal(io.read_masks(tmp_path / 'bin', 3, (5, 6)), labels == 2)
  with pytest.raises(ValueError, match=r'object id 3 is not in the first-frame mask \(ids present: \[1, 2\]\)'):
    io.read_masks(tmp_path / 'pal', 3, (5, 6), object_id=3)
  with pytest.raises(ValueError, match=r'object ids \[1, 2\]; choose one with object_id'):
    io.read_masks(tmp_path / 'pal', 3, (5, 6))
  with pytest.raises(ValueError, match='3 mask PNGs for 4 frames'):
    io.read_masks(tmp_path / 'bin', 4, (5, 6))
  with pytest.raises(ValueError, match='mask is 6x5, frames are 8x5'):
    io.read_masks(tmp_path / 'bin', 3, (5, 8))
  Image.fromarray(np.zeros((5, 6), np.uint8)).save(tmp_path / 'bin' / '00000.png')
  with pytest.raises(ValueError, match='first-frame mask is empty'):
    io.read_masks(tmp_path / 'bin', 3, (5, 6))

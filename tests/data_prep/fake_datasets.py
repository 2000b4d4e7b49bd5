"""Tiny fake dataset folders in the real layouts (DAVIS-2017, YouTube-VOS, LaSOT, pix2gestalt) for reader tests."""

from __future__ import annotations

import json
import os
import time

import numpy as np
from PIL import Image

from data_prep.sources.davis import DavisSource

H, W = 48, 64


def palette_png(labels: np.ndarray, path: str):
  im = Image.fromarray(labels.astype(np.uint8), mode='P')
  pal = [0, 0, 0, 200, 0, 0, 0, 200, 0, 0, 0, 200] + [128] * (256 * 3 - 12)
  pal[255 * 3:255 * 3 + 3] = [255, 255, 255]
  im.putpalette(pal)
  im.save(path)


def video(n: int, seed: int, n_obj: int = 2, h: int = H, w: int = W):
  """-> frames (n,h,w,3) uint8, labels (n,h,w) uint8: discs/squares moving apart from each other."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w]
  bg = (np.stack([xx * 3 % 256, yy * 5 % 256, (xx + yy) * 2 % 256], -1) * 0.6 + rng.integers(0, 60, (h, w, 3)))
  frames, labels = [], []
  for t in range(n):
    img = bg.copy()
    lab = np.zeros((h, w), np.uint8)
    for k in range(1, n_obj + 1):
      cy = h * (0.3 if k == 1 else 0.7)
      cx = w * (0.25 + 0.5 * (k - 1)) + (t - n / 2) * 0.6 * (1 if k == 1 else -1)
      r = 7 + k
      m = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) if k == 1 else ((abs(yy - cy) <= r - 2) & (abs(xx - cx) <= r))
      img[m] = (230, 60, 40) if k == 1 else (40, 90, 230)
      img[m & ((xx + yy) % 6 < 3)] = (250, 240, 60)
      lab[m] = k
    frames.append(np.clip(img, 0, 255).astype(np.uint8))
    labels.append(lab)
  return np.stack(frames), np.stack(labels)


def make_davis(root: str, seqs=('bear', 'dog-agility', 'camel', 'car-turn', 'horse-jump'), n: int = 8) -> str:
  for s_i, seq in enumerate(seqs):
    fr, lab = video(n, s_i, n_obj=1 + s_i % 2)
    idir = os.path.join(root, 'JPEGImages', '480p', seq)
    adir = os.path.join(root, 'Annotations', '480p', seq)
    os.makedirs(idir, exist_ok=True)
    os.makedirs(adir, exist_ok=True)
    for t in range(n):
      Image.fromarray(fr[t]).save(os.path.join(idir, f'{t:05d}.jpg'), quality=95)
      palette_png(lab[t], os.path.join(adir, f'{t:05d}.png'))
  os.makedirs(os.path.join(root, 'ImageSets', '2017'), exist_ok=True)
  with open(os.path.join(root, 'ImageSets', '2017', 'train.txt'), 'w') as f:
    f.write('\n'.join(seqs) + '\n')
  return root


BAD_DAVIS_SEQS = ('bear', 'camel', 'cows', 'dog', 'goat', 'horse', 'lion', 'mouse', 'pig', 'mismatch', 'empty',
                  'corrupt')


def make_bad_davis(root: str) -> str:
  """8-frame videos with bad inputs: 'mismatch' lacks two annotations, 'empty' has no object, every frame of
  'corrupt' and frame 3 of 'dog' are truncated JPEGs."""
  make_davis(root, seqs=BAD_DAVIS_SEQS, n=8)
  ann = os.path.join(root, 'Annotations', '480p')
  os.remove(os.path.join(ann, 'mismatch', '00003.png'))
  os.rename(os.path.join(ann, 'mismatch', '00007.png'), os.path.join(ann, 'mismatch', '00003.png'))
  os.remove(os.path.join(ann, 'mismatch', '00006.png'))
  for name in os.listdir(os.path.join(ann, 'empty')):
    palette_png(np.zeros((H, W), np.uint8), os.path.join(ann, 'empty', name))
  bad = [os.path.join(root, 'JPEGImages', '480p', 'corrupt', f'{t:05d}.jpg') for t in range(8)]
  for p in bad + [os.path.join(root, 'JPEGImages', '480p', 'dog', '00003.jpg')]:
    with open(p, 'rb') as f:
      data = f.read()
    with open(p, 'wb') as f:
      f.write(data[:len(data) // 3])
  return root


def make_ytvos(root: str, vids=('0a1b2c', '1d2e3f', '2g3h4i', '3j4k5l', '4m5n6o'), n_ann: int = 6,
               first: int = 5) -> str:
  meta = {'videos': {}}
  for v_i, vid in enumerate(vids):
    n_all = n_ann * 5
    fr, lab = video(n_all, 10 + v_i, n_obj=2)
    idir, adir = os.path.join(root, 'JPEGImages', vid), os.path.join(root, 'Annotations', vid)
    os.makedirs(idir, exist_ok=True)
    os.makedirs(adir, exist_ok=True)
    names = []
    for t in range(n_all):
      name = f'{first + t:05d}'
      Image.fromarray(fr[t]).save(os.path.join(idir, name + '.jpg'), quality=95)
      if t % 5 == 0:
        palette_png(lab[t], os.path.join(adir, name + '.png'))
        names.append(name)
    meta['videos'][vid] = {'objects': {'1': {'category': 'zebra', 'frames': names},
                                       '2': {'category': 'boat', 'frames': names}}}
  with open(os.path.join(root, 'meta.json'), 'w') as f:
    json.dump(meta, f)
  return root


def make_lasot(root: str, masks_root: str, classes=('airplane', 'bird'), per_class: int = 3, n: int = 8) -> str:
  i = 0
  for cls in classes:
    for k in range(1, per_class + 1):
      seq = f'{cls}-{k}'
      sdir = os.path.join(root, cls, seq)
      os.makedirs(os.path.join(sdir, 'img'), exist_ok=True)
      fr, lab = video(n, 30 + i, n_obj=1)
      i += 1
      boxes, mdir = [], os.path.join(masks_root, seq)
      os.makedirs(mdir, exist_ok=True)
      for t in range(n):
        name = f'{t + 1:08d}'
        Image.fromarray(fr[t]).save(os.path.join(sdir, 'img', name + '.jpg'), quality=95)
        m = lab[t] == 1
        Image.fromarray(m.astype(np.uint8) * 255).save(os.path.join(mdir, name + '.png'))
        ys, xs = np.nonzero(m)
        boxes.append(f'{xs.min()},{ys.min()},{xs.max() - xs.min() + 1},{ys.max() - ys.min() + 1}')
      open(os.path.join(sdir, 'groundtruth.txt'), 'w').write('\n'.join(boxes) + '\n')
      occ = ['0'] * n
      occ[-1] = '1'  # last frame flagged fully occluded
      open(os.path.join(sdir, 'full_occlusion.txt'), 'w').write(','.join(occ) + '\n')
      open(os.path.join(sdir, 'out_of_view.txt'), 'w').write(','.join(['0'] * n) + '\n')
      open(os.path.join(sdir, 'nlp.txt'), 'w').write(f'a white {cls} flying in the sky\n')
  return root


def make_pix2gestalt(root: str, n: int = 6, size: int = 32) -> str:
  for f in ('occlusion', 'whole', 'whole_mask', 'visible_object_mask'):
    os.makedirs(os.path.join(root, f), exist_ok=True)
  rng = np.random.default_rng(5)
  yy, xx = np.mgrid[0:size, 0:size]
  for i in range(n):
    whole_mask = (yy - 16) ** 2 + (xx - 10 - i) ** 2 <= 64
    occ_mask = (xx >= 14 + i)
    img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    obj = np.zeros_like(img) + np.array([200, 30, 30], np.uint8)
    whole = np.where(whole_mask[..., None], obj, 255).astype(np.uint8)
    occluded = np.where(whole_mask[..., None] & ~occ_mask[..., None], obj, img)
    occluded[occ_mask] = (20, 200, 20)
    stem = f'sa_{i:04d}'
    Image.fromarray(occluded).save(os.path.join(root, 'occlusion', stem + '.png'))
    Image.fromarray(whole).save(os.path.join(root, 'whole', stem + '.png'))
    Image.fromarray(whole_mask.astype(np.uint8) * 255).save(os.path.join(root, 'whole_mask', stem + '.png'))
    Image.fromarray((whole_mask & ~occ_mask).astype(np.uint8) * 255).save(
        os.path.join(root, 'visible_object_mask', stem + '.png'))
  return root


class SlowDavis(DavisSource):
  """The DAVIS reader, `delay` seconds slower to list a video's tracks (same records), so a test can stop a build
  midway. Module-level, so spawned workers and subprocesses can unpickle it."""

  def __init__(self, root: str, delay: float = 0.3):
    super().__init__(root)
    self.delay = delay

  def tracks(self, seq: str):
    time.sleep(self.delay)
    return super().tracks(seq)

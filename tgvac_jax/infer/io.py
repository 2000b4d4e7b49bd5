"""Videos, frames and masks on disk: what users hand to inference and what it writes back.

Videos are mp4/mov/webm/mkv/avi/gif files (decoded by PyAV, FFmpeg inside) or folders of jpg/png frames in natural
order (frame2 before frame10). Visible masks are folders of PNGs, one per frame in the same order: binary images
(any non-zero pixel is object) or label images -- DAVIS palette PNGs, whose pixel values are object ids (0
background, 255 void) -- from which `object_id` picks one object. Every problem is one ValueError /
FileNotFoundError naming the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from tgvac_jax.data import images

VIDEO_EXTS = ('.mp4', '.mov', '.webm', '.mkv', '.avi', '.m4v', '.gif')
FRAME_EXTS = ('.jpg', '.jpeg', '.png')
VOID_ID = 255  # DAVIS marks unlabelled pixels with 255


class Video(NamedTuple):
  frames: np.ndarray        # (N, H, W, 3) uint8
  stems: tuple[str, ...]    # one name per frame: the frame file's stem, or 00000, 00001, ... for a video file
  fps: float | None         # None for a frame folder


def natural_key(name: str):
  """Sort key that orders embedded numbers by value: frame2 < frame10."""
  return [int(t) if t.isdigit() else t.lower() for t in re.split(r'(\d+)', name)]


def list_images(folder: str | os.PathLike, exts: tuple[str, ...] = FRAME_EXTS) -> list[Path]:
  folder = Path(folder)
  if not folder.is_dir():
    raise FileNotFoundError(f'{folder}: no such folder')
  files = sorted((p for p in folder.iterdir() if p.suffix.lower() in exts and p.is_file()),
                 key=lambda p: natural_key(p.name))
  if not files:
    raise ValueError(f'{folder}: no {"/".join(e[1:] for e in exts)} files')
  return files


def _open_video(path: Path):
  import av  # pylint: disable=import-outside-toplevel
  try:
    container = av.open(str(path))
  except (av.error.FFmpegError, UnicodeDecodeError) as e:
    raise ValueError(f'{path}: cannot read the video ({e})') from e
  if not container.streams.video:
    container.close()
    raise ValueError(f'{path}: no video stream')
  return container


def _decode(path: Path) -> tuple[list[np.ndarray], float | None]:
  import av  # pylint: disable=import-outside-toplevel
  container = _open_video(path)
  try:
    stream = container.streams.video[0]
    fps = float(stream.average_rate) if stream.average_rate else None
    frames = [f.to_ndarray(format='rgb24') for f in container.decode(stream)]
  except av.error.FFmpegError as e:
    raise ValueError(f'{path}: cannot decode the video ({e})') from e
  finally:
    container.close()
  if not frames:
    raise ValueError(f'{path}: the video has no frames')
  return frames, fps


def read_image(path: Path) -> np.ndarray:
  try:
    return images.read_rgb(str(path))
  except images.FrameError as e:
    raise ValueError(str(e)) from e


def read_video(path: str | os.PathLike) -> Video:
  """A video file or a folder of frames -> `Video`. All frames must share one size."""
  path = Path(path)
  if path.is_dir():
    files = list_images(path)
    frames, stems, fps = [read_image(p) for p in files], tuple(p.stem for p in files), None
  elif path.is_file():
    if path.suffix.lower() not in VIDEO_EXTS:
      raise ValueError(f'{path}: not a video ({", ".join(VIDEO_EXTS)}) or a folder of frames')
    frames, fps = _decode(path)
    stems = tuple(f'{i:05d}' for i in range(len(frames)))
  else:
    raise FileNotFoundError(f'{path}: no such video file or frame folder')
  sizes = {f.shape[:2] for f in frames}
  if len(sizes) > 1:
    raise ValueError(f'{path}: frames of different sizes {sorted(sizes)}')
  return Video(np.stack(frames), stems, fps)


def probe_video(path: str | os.PathLike) -> tuple[int, int, int]:
  """(num_frames, height, width) from a folder listing and its first frame, or a video file's header (decoding
  it only when the container does not store its frame count)."""
  path = Path(path)
  if path.is_dir():
    files = list_images(path)
    try:
      with Image.open(files[0]) as im:
        w, h = im.size
    except (OSError, SyntaxError) as e:
      raise ValueError(f'{files[0]}: cannot read the image ({e})') from e
    return len(files), h, w
  if not path.is_file():
    raise FileNotFoundError(f'{path}: no such video file or frame folder')
  container = _open_video(path)
  with container:
    stream = container.streams.video[0]
    n, h, w = stream.frames, stream.codec_context.height, stream.codec_context.width
  if n <= 0:
    frames = read_video(path).frames
    n, h, w = frames.shape[:3]
  return n, h, w


def mask_files(folder: str | os.PathLike, num_frames: int) -> list[Path]:
  """The PNG masks of a folder, checked to be one per frame."""
  files = list_images(folder, ('.png',))
  if len(files) != num_frames:
    raise ValueError(f'{folder}: {len(files)} mask PNGs for {num_frames} frames (one mask per frame needed)')
  return files


def _label_image(path: Path) -> tuple[np.ndarray, bool]:
  """(pixel values, is a palette image): palette PNGs carry object ids, other images are binary."""
  try:
    with Image.open(path) as im:
      palette = im.mode == 'P'
    return images.read_label(str(path)), palette
  except (OSError, SyntaxError, ValueError) as e:
    raise ValueError(f'unreadable mask {path}: {e}') from e
  except images.FrameError as e:
    raise ValueError(str(e)) from e


def object_ids(labels: np.ndarray) -> list[int]:
  return [int(v) for v in np.unique(labels) if v not in (0, VOID_ID)]


def resolve_object_id(first_mask: str | os.PathLike, object_id: int | None) -> int | None:
  """The object a mask folder describes, checked on its first mask (the object must be visible in the first
  frame, as DAVIS's semi-supervised protocol and a first-frame prompt assume). None: binary masks."""
  labels, is_label = _label_image(Path(first_mask))
  if not is_label:
    if not labels.any():
      raise ValueError(f'{first_mask}: the first-frame mask is empty (the object must be visible in frame 1)')
    return None
  ids = object_ids(labels)
  if object_id is None:
    if len(ids) != 1:
      raise ValueError(f'{first_mask}: a palette mask with object ids {ids}; choose one with object_id')
    return ids[0]
  if object_id not in ids:
    raise ValueError(f'{first_mask}: object id {object_id} is not in the first-frame mask (ids present: {ids})')
  return object_id


def read_mask(path: str | os.PathLike, object_id: int | None = None) -> np.ndarray:
  """One mask PNG -> (H, W) bool: pixels equal to `object_id` in a palette PNG, non-zero pixels otherwise."""
  labels, is_label = _label_image(Path(path))
  if is_label and object_id is None:
    object_id = resolve_object_id(path, None)
  return labels == object_id if is_label else labels > 0


def read_masks(folder: str | os.PathLike, num_frames: int, size: tuple[int, int],
               object_id: int | None = None) -> np.ndarray:
  """Visible masks (N, H, W) bool from a PNG folder: one per frame, each `size` (H, W), the object visible in
  the first. Palette masks need `object_id` when they hold several objects."""
  files = mask_files(folder, num_frames)
  object_id = resolve_object_id(files[0], object_id)
  masks = []
  for p in files:
    m = read_mask(p, object_id)
    if m.shape != tuple(size):
      raise ValueError(f'{p}: mask is {m.shape[1]}x{m.shape[0]}, frames are {size[1]}x{size[0]}')
    masks.append(m)
  return np.stack(masks)


def write_png(path: Path, image: np.ndarray) -> None:
  Image.fromarray(image).save(path, compress_level=1)


def write_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
  """(N, H, W, 3) uint8 -> H.264 mp4 (yuv420p; odd sides are padded by one pixel). The same frames give the same
  bytes: x264's macroblock-tree rate control is off, as with it the PyAV wheel's x264 wrote differing streams for
  one input now and then (even single-threaded), and a rerun or another process count must write what one did."""
  import av  # pylint: disable=import-outside-toplevel
  n, h, w = frames.shape[:3]
  frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode='edge')
  codec = 'libx264' if 'libx264' in av.codecs_available else 'mpeg4'
  with av.open(str(path), 'w') as container:
    stream = container.add_stream(codec, rate=max(1, round(fps)),
                                  options={'x264-params': 'mbtree=0'} if codec == 'libx264' else None)
    stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], 'yuv420p'
    for i in range(n):
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frames[i], format='rgb24')))
    container.mux(stream.encode())


def write_gif(path: Path, frames: np.ndarray, fps: float) -> None:
  images = [Image.fromarray(f) for f in frames]
  images[0].save(path, save_all=True, append_images=images[1:], duration=max(1, round(1000 / fps)), loop=0)

"""One folder per request (its uploads and outputs), swept away some time after it finished, and the checks an
upload passes before anything reads it in full. Every refusal is a `UserError` whose message the page shows.
"""

from __future__ import annotations

import dataclasses
import io as bytes_io
import logging
import shutil
import threading
import time
import uuid
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from tgvac_jax.infer import io

log = logging.getLogger(__name__)

UPLOAD_VIDEO_EXTS = ('.mp4', '.webm', '.gif', '.mov', '.mkv', '.avi', '.m4v')


class UserError(ValueError):
  """A bad input: its message is shown on the page; nothing stays on disk."""


@dataclasses.dataclass(frozen=True)
class Limits:
  max_frames: int = 120
  max_pixels: int = 60_000_000     # frames x height x width
  max_upload_mb: float = 200.0
  max_samples: int = 8
  max_steps: int = 100

  def check_video(self, n: int, h: int, w: int) -> None:
    if n > self.max_frames:
      raise UserError(f'the video has {n} frames; this page takes at most {self.max_frames} '
                      '(configs/app.py max_frames)')
    if n * h * w > self.max_pixels:
      raise UserError(f'the video is {n} frames x {w}x{h} = {n * h * w:,} pixels; this page takes at most '
                      f'{self.max_pixels:,} (configs/app.py max_pixels): trim or downscale it')

  def check_upload(self, path: Path) -> None:
    mb = path.stat().st_size / 2**20
    if mb > self.max_upload_mb:
      raise UserError(f'{path.name} is {mb:.0f} MB; uploads are limited to {self.max_upload_mb:g} MB')


class RequestFolders:
  """`root/<time>-<id>/` per request; a daemon thread removes those older than `keep_s` seconds."""

  def __init__(self, root: Path, keep_s: float):
    self.root, self.keep_s = Path(root), keep_s
    self.root.mkdir(parents=True, exist_ok=True)
    self._stop = threading.Event()
    self._sweeper = threading.Thread(target=self._sweep_loop, name='request-folder-sweeper', daemon=True)
    self._sweeper.start()

  def new(self) -> Path:
    folder = self.root / f'{time.strftime("%Y%m%d-%H%M%S")}-{uuid.uuid4().hex[:8]}'
    folder.mkdir()
    return folder

  def sweep(self) -> list[Path]:
    """Removes request folders last modified more than `keep_s` ago; returns them."""
    old = [p for p in self.root.iterdir() if p.is_dir() and time.time() - p.stat().st_mtime > self.keep_s]
    for p in old:
      shutil.rmtree(p, ignore_errors=True)
    if old:
      log.info('removed %d request folder(s) older than %.0fs', len(old), self.keep_s)
    return old

  def _sweep_loop(self) -> None:
    while not self._stop.wait(min(60.0, max(1.0, self.keep_s / 4))):
      self.sweep()

  def close(self) -> None:
    self._stop.set()


def unpack_zip(archive: Path, dest: Path, exts: tuple[str, ...], what: str, limits: Limits) -> Path:
  """The image files of a zip (any folder depth; names must not repeat) flat into `dest`; nothing else is
  extracted, so names like ../x cannot escape."""
  try:
    zf = zipfile.ZipFile(archive)
  except (zipfile.BadZipFile, OSError) as e:
    raise UserError(f'{archive.name}: not a readable zip of {what} ({e})') from e
  with zf:
    members = [m for m in zf.infolist() if not m.is_dir() and Path(m.filename).suffix.lower() in exts
               and not Path(m.filename).name.startswith('.')]
    if not members:
      raise UserError(f'{archive.name}: no {"/".join(e[1:] for e in exts)} files in the zip ({what} expected)')
    total = sum(m.file_size for m in members) / 2**20
    if total > limits.max_upload_mb:
      raise UserError(f'{archive.name}: {total:.0f} MB unpacked; uploads are limited to {limits.max_upload_mb:g} MB')
    names = [Path(m.filename).name for m in members]
    if len(set(names)) != len(names):
      raise UserError(f'{archive.name}: file names repeat across folders; put the {what} in one folder')
    dest.mkdir(parents=True)
    try:
      for m, name in zip(members, names):
        with zf.open(m) as src, open(dest / name, 'wb') as out:
          shutil.copyfileobj(src, out)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
      raise UserError(f'{archive.name}: cannot unpack ({e})') from e
  return dest


def video_input(upload: Path, folder: Path, limits: Limits) -> Path:
  """An uploaded video file or zip of frames -> a path configs/infer.py reads (a copy in the request folder)."""
  upload = Path(upload)
  limits.check_upload(upload)
  ext = upload.suffix.lower()
  if ext == '.zip':
    return unpack_zip(upload, folder / 'frames', io.FRAME_EXTS, 'video frames (jpg/png)', limits)
  if ext not in UPLOAD_VIDEO_EXTS:
    raise UserError(f'{upload.name}: not a video ({", ".join(e[1:] for e in UPLOAD_VIDEO_EXTS)}) or a zip of '
                    'frames')
  folder.mkdir(parents=True, exist_ok=True)
  return Path(shutil.copyfile(upload, folder / upload.name))


def first_frame(upload: Path, limits: Limits) -> np.ndarray:
  """The first frame of an uploaded video or zip of frames (for placing first-frame clicks), read in memory."""
  upload = Path(upload)
  limits.check_upload(upload)
  if upload.suffix.lower() != '.zip':
    if upload.suffix.lower() not in UPLOAD_VIDEO_EXTS:
      raise UserError(f'{upload.name}: not a video ({", ".join(e[1:] for e in UPLOAD_VIDEO_EXTS)}) or a zip of '
                      'frames')
    return io.read_video(upload).frames[0]
  try:
    with zipfile.ZipFile(upload) as zf:
      names = sorted((n for n in zf.namelist() if Path(n).suffix.lower() in io.FRAME_EXTS
                      and not Path(n).name.startswith('.')), key=lambda n: io.natural_key(Path(n).name))
      if not names:
        raise UserError(f'{upload.name}: no jpg/png frames in the zip')
      with Image.open(bytes_io.BytesIO(zf.read(names[0]))) as im:
        return np.asarray(im.convert('RGB'))
  except (zipfile.BadZipFile, OSError) as e:
    raise UserError(f'{upload.name}: cannot read the first frame ({e})') from e


def masks_input(upload: Path, folder: Path, limits: Limits) -> Path:
  """An uploaded zip of per-frame mask PNGs -> a mask folder in the request folder."""
  upload = Path(upload)
  limits.check_upload(upload)
  if upload.suffix.lower() != '.zip':
    raise UserError(f'{upload.name}: masks come as a zip of PNGs, one per frame')
  return unpack_zip(upload, folder / 'masks', ('.png',), 'mask PNGs', limits)

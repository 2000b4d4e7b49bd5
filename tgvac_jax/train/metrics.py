"""What users watch while training: a tqdm bar, TensorBoard scalars and GIFs (tensorboardX, no TensorFlow) and
`metrics.jsonl` (one JSON object per step) in the workdir.

Device scalars are fetched one step late (`push` keeps step n's metrics until step n+1 has been dispatched), so
logging never stalls the accelerator. Only process 0 writes; every process may call everything.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

METRICS_FILE = 'metrics.jsonl'
TENSORBOARD_DIR = 'tensorboard'

# Peak dense bf16 FLOP/s per device (vendor data sheets), matched as substrings of `device.device_kind`, first
# hit wins (so 'TPU v5 lite' comes before 'TPU v5').
PEAK_FLOPS = (
    ('H200', 989e12), ('H100', 989e12), ('B200', 2250e12), ('A100', 312e12), ('L4', 121e12), ('A10G', 70e12),
    ('TPU v6 lite', 918e12), ('TPU v5 lite', 197e12), ('TPU v5', 459e12), ('TPU v4', 275e12),
    ('TPU v3', 123e12), ('TPU v2', 46e12),
)


def peak_flops(device: jax.Device | None = None, configured: float = 0.0) -> float | None:
  """Peak FLOP/s of one device: `configured` if > 0, else from PEAK_FLOPS; None when unknown (CPUs)."""
  if configured > 0:
    return float(configured)
  kind = (device or jax.devices()[0]).device_kind
  return next((f for name, f in PEAK_FLOPS if name in kind), None)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  """The complete lines of a metrics.jsonl (a torn last line, from a killed process, is skipped)."""
  out = []
  if os.path.exists(path):
    for line in Path(path).read_text().splitlines():
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError:
        pass
  return out


def _keep_until(path: Path, step: int) -> None:
  """Drops the lines of steps after `step` (written after the checkpoint a resumed run restarts from)."""
  rows = [r for r in read_jsonl(path) if r.get('step', 0) <= step]
  tmp = path.with_name(path.name + '.tmp')
  tmp.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  os.replace(tmp, path)


def gif_bytes(frames: np.ndarray, fps: float = 4.0) -> bytes:
  """(T, H, W, 3) uint8 -> an endlessly looping GIF."""
  import imageio.v3 as iio  # pylint: disable=import-outside-toplevel
  return iio.imwrite('<bytes>', np.asarray(frames, np.uint8), extension='.gif', duration=1000 / fps, loop=0)


class MetricsLogger:
  """Per-step scalars to metrics.jsonl and the bar; TensorBoard every `every` steps (window means).

  `batch_size` is global (examples per step); `flops_per_step` the FLOPs of one step over all devices (None:
  no MFU); `peak` the peak FLOP/s of one device (None: no MFU).
  """

  def __init__(self, workdir: str | os.PathLike, *, start_step: int, num_steps: int, batch_size: int,
               every: int = 50, flops_per_step: float | None = None, peak: float | None = None,
               num_devices: int | None = None, main: bool | None = None, progress: bool = True):
    self.main = jax.process_index() == 0 if main is None else main
    self.batch_size, self.every = batch_size, max(1, every)
    self.flops, self.peak = flops_per_step, peak
    self.num_devices = num_devices or jax.device_count()
    self._pending: tuple[int, Mapping] | None = None
    self._window: list[dict] = []
    self._last_time: float | None = None    # wall time of the last logged step (None until the first)
    self._paused = 0.0                      # seconds of non-training work since then (saves, validation)
    self._file = self._tb = self._bar = None
    if not self.main:
      return
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / METRICS_FILE
    if path.exists():
      _keep_until(path, start_step)
    self._file = open(path, 'a', buffering=1)
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
    self._tb = SummaryWriter(str(workdir / TENSORBOARD_DIR), purge_step=start_step + 1)
    self._bar = tqdm(total=num_steps, initial=start_step, unit='step', dynamic_ncols=True, disable=not progress)

  def push(self, step: int, metrics: Mapping[str, jax.Array]) -> None:
    """Records step `step`'s device metrics; writes the previous step's (now computed) ones."""
    self.flush()
    self._pending = (step, metrics)

  def flush(self) -> None:
    """Writes the pending step (blocks until it is computed)."""
    if self._pending is None:
      return
    step, metrics = self._pending
    self._pending = None
    row = {'step': int(step), **{k: _scalar(v) for k, v in jax.device_get(dict(metrics)).items()}}
    now = time.perf_counter()
    if self._last_time is not None:  # the first step includes compilation: no rate for it
      dt = max(now - self._last_time - self._paused, 1e-9)
      row['steps_per_s'] = 1.0 / dt
      row['examples_per_s'] = self.batch_size / dt
      if self.flops and self.peak:
        row['mfu'] = self.flops / dt / (self.peak * self.num_devices)
    self._last_time, self._paused = now, 0.0
    if not self.main:
      return
    self._file.write(json.dumps(row) + '\n')
    self._window.append(row)
    self._bar.update(step - self._bar.n)
    self._bar.set_postfix({k: f'{row[k]:.4g}' for k in ('loss', 'examples_per_s') if k in row}, refresh=False)
    if step % self.every == 0:
      self._write_window(step)

  @contextlib.contextmanager
  def paused(self):
    """Time spent inside does not count towards the rates (checkpoints, exports, validation). Writes the
    pending step first, so its time is measured up to its end."""
    self.flush()
    t = time.perf_counter()
    try:
      yield
    finally:
      self._paused += time.perf_counter() - t

  def _write_window(self, step: int) -> None:
    keys = {k for r in self._window for k in r} - {'step'}
    for k in sorted(keys):
      vals = [r[k] for r in self._window if k in r]
      last = k in ('lr', 'skipped')  # states, not per-step samples
      self._tb.add_scalar(f'train/{k}', vals[-1] if last else float(np.mean(vals)), step)
    self._window = []
    self._tb.flush()

  def scalars(self, step: int, values: Mapping[str, float], prefix: str = 'val') -> None:
    if self.main:
      for k, v in values.items():
        self._tb.add_scalar(f'{prefix}/{k}', float(v), step)

  def gif(self, step: int, tag: str, frames: np.ndarray, fps: float = 4.0) -> None:
    """An animated GIF in TensorBoard's image tab ((T, H, W, 3) uint8), as tensorboardX's add_video writes it."""
    if not self.main:
      return
    from tensorboardX.proto.summary_pb2 import Summary  # pylint: disable=import-outside-toplevel
    _, h, w, c = frames.shape
    image = Summary.Image(height=h, width=w, colorspace=c, encoded_image_string=gif_bytes(frames, fps))
    writer = self._tb._get_file_writer()  # pylint: disable=protected-access
    writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
    self._tb.flush()

  def message(self, text: str) -> None:
    if self.main:
      self._bar.write(text)

  def close(self) -> None:
    self.flush()
    if self.main:
      self._bar.close()
      self._tb.close()
      self._file.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def _scalar(v) -> float | int:
  a = np.asarray(v)
  if a.dtype.kind in 'iub':
    return int(a)
  x = float(a)
  return x if math.isfinite(x) else str(x)  # JSON has no NaN/inf: 'nan', 'inf'

"""metrics.jsonl rows, TensorBoard events (read back from the TFRecord file by hand), MFU, peak FLOP/s lookup,
resumed runs dropping rows after their checkpoint, GIF round trip."""

import io
import json
import struct
import types

import imageio.v3 as iio
import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto.event_pb2 import Event

from tgvac_jax.train import metrics as M


def read_events(folder):
  """Every Event in the folder's event files (TFRecord framing: u64 length, u32 crc, data, u32 crc)."""
  events = []
  for path in sorted(folder.glob('events.out.tfevents.*')):
    data = path.read_bytes()
    i = 0
    while i < len(data):
      (n,) = struct.unpack('<Q', data[i:i + 8])
      events.append(Event.FromString(data[i + 12:i + 12 + n]))
      i += 12 + n + 4
  return events


def scalars(events):
  out = {}
  for e in events:
    for v in e.summary.value:
      if v.HasField('simple_value'):
        out.setdefault(v.tag, []).append((e.step, v.simple_value))
  return out


def test_peak_flops_table():
  kind = lambda k: types.SimpleNamespace(device_kind=k)  # noqa: E731
  assert M.peak_flops(kind('NVIDIA H100 80GB HBM3')) == 989e12
  assert M.peak_flops(kind('TPU v5 lite')) == 197e12      # v5e, not v5p
  assert M.peak_flops(kind('TPU v5p')) == 459e12
  assert M.peak_flops(kind('cpu')) is None
  assert M.peak_flops(kind('cpu'), configured=1e12) == 1e12


def test_jsonl_tensorboard_and_mfu(tmp_path):
  losses = np.float32([0.9, 0.7, 0.5, 0.45, 0.41, 0.3])
  with M.MetricsLogger(tmp_path, start_step=0, num_steps=6, batch_size=8, every=3, flops_per_step=1e9, peak=1e10,
                       num_devices=2, main=True, progress=False) as log:
    for s, x in enumerate(losses, 1):
      log.push(s, {'loss': jnp.float32(x), 'lr': jnp.float32(1e-3 * s), 'skipped': jnp.int32(s // 4)})
  rows = M.read_jsonl(tmp_path / M.METRICS_FILE)
  assert [r['step'] for r in rows] == [1, 2, 3, 4, 5, 6]
  assert [r['loss'] for r in rows] == [float(x) for x in losses]  # exact: float32 -> JSON -> float
  assert rows[3]['skipped'] == 1 and isinstance(rows[3]['skipped'], int)
  assert 'steps_per_s' not in rows[0]                             # the first step includes compilation
  for r in rows[1:]:
    assert r['examples_per_s'] == pytest.approx(8 * r['steps_per_s'])
    assert r['mfu'] == pytest.approx(1e9 * r['steps_per_s'] / (2 * 1e10))
  tb = scalars(read_events(tmp_path / M.TENSORBOARD_DIR))
  got = dict(tb['train/loss'])
  assert sorted(got) == [3, 6]
  assert got[3] == pytest.approx(losses[:3].mean()) and got[6] == pytest.approx(losses[3:].mean())
  assert dict(tb['train/lr'])[6] == pytest.approx(6e-3)          # a state: the last value, not the mean
  assert dict(tb['train/skipped'])[6] == 1
  assert 'train/mfu' in tb and 'train/examples_per_s' in tb


def test_resume_drops_rows_after_the_checkpoint(tmp_path):
  path = tmp_path / M.METRICS_FILE
  path.write_text(''.join(json.dumps({'step': s, 'loss': s / 10}) + '\n' for s in range(1, 9)) + '{"step": 9, "lo')
  with M.MetricsLogger(tmp_path, start_step=5, num_steps=10, batch_size=1, main=True, progress=False) as log:
    log.push(6, {'loss': jnp.float32(0.25)})
  rows = M.read_jsonl(path)
  assert [r['step'] for r in rows] == [1, 2, 3, 4, 5, 6] and rows[-1]['loss'] == 0.25


def test_non_main_process_writes_nothing(tmp_path):
  with M.MetricsLogger(tmp_path, start_step=0, num_steps=2, batch_size=1, main=False) as log:
    log.push(1, {'loss': jnp.float32(1.0)})
    log.gif(1, 'x', np.zeros((2, 4, 4, 3), np.uint8))
  assert list(tmp_path.iterdir()) == []


def test_gif_round_trip_and_tensorboard_image(tmp_path):
  rng = np.random.default_rng(0)
  palette = rng.integers(0, 256, (8, 3), dtype=np.uint8)
  frames = palette[rng.integers(0, 8, (3, 16, 24))]              # few colours: GIF is lossless for them
  back = iio.imread(io.BytesIO(M.gif_bytes(frames)), index=None, extension='.gif')[..., :3]
  np.testing.assert_array_equal(back, frames)
  with M.MetricsLogger(tmp_path, start_step=0, num_steps=1, batch_size=1, main=True, progress=False) as log:
    log.gif(7, 'val/clip_0', frames)
  (img,) = [(e.step, v.image) for e in read_events(tmp_path / M.TENSORBOARD_DIR) for v in e.summary.value
            if v.HasField('image')]
  assert img[0] == 7 and (img[1].height, img[1].width) == (16, 24)
  assert img[1].encoded_image_string[:6] == b'GIF89a'

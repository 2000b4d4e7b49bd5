"""Staged chunks: one source video's encoded clips in one `.npz` file, never a pickle, so a work folder shared with
others can only ever be read as data (`np.load(allow_pickle=False)`), never run code.

A chunk holds a JSON header (video id, split, per-clip metadata, skip reports, example keys, text fields) and the
examples' arrays: numeric arrays and numpy scalars as they are, lists of encoded frames (TFDS object tensors of
bytes) as one uint8 buffer plus the lengths. The round trip is exact, dtypes included, so records written from a
chunk do not depend on which process or machine staged it. Written to a temporary sibling and renamed.
"""

from __future__ import annotations

import json
import os

import numpy as np

HEADER = '__header__'


def _pack(examples: list[tuple[str, dict]]) -> tuple[list[dict], dict[str, np.ndarray]]:
  """-> per-example [field, kind(, text)] layouts in field order (TFDS serializes in dict order), and the arrays."""
  layouts, arrays = [], {}
  for i, (_, ex) in enumerate(examples):
    layout = []
    for k, v in ex.items():
      name = f'{i}.{k}'
      if isinstance(v, str):
        layout.append([k, 'text', v])
      elif isinstance(v, np.ndarray) and v.dtype == object:
        data = [bytes(b) for b in v]
        arrays[name] = np.frombuffer(b''.join(data), np.uint8)
        arrays[name + '.len'] = np.array([len(b) for b in data], np.int64)
        layout.append([k, 'bytes'])
      elif isinstance(v, np.generic):
        arrays[name] = np.asarray(v)
        layout.append([k, 'scalar'])
      elif isinstance(v, np.ndarray):
        arrays[name] = v
        layout.append([k, 'array'])
      else:
        raise TypeError(f'chunk field {k!r}: cannot store a {type(v).__name__}')
    layouts.append(layout)
  return layouts, arrays


def write(path: str, chunk: dict):
  """`chunk`: video_id, split, meta (list of dicts), skips, examples [(key, example dict)]."""
  layouts, arrays = _pack(chunk['examples'])
  header = {k: v for k, v in chunk.items() if k != 'examples'}
  header['keys'] = [k for k, _ in chunk['examples']]
  header['layouts'] = layouts
  arrays[HEADER] = np.array(json.dumps(header, sort_keys=True))
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'wb') as f:
    np.savez(f, **arrays)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def read_header(path: str) -> dict:
  """The chunk without its arrays: video_id, split, meta, skips, keys."""
  with np.load(path, allow_pickle=False) as z:
    h = json.loads(str(z[HEADER]))
  del h['layouts']
  return h


def read_examples(path: str) -> tuple[str, list[tuple[str, dict]]]:
  """-> (split, [(key, example dict)]) exactly as staged."""
  with np.load(path, allow_pickle=False) as z:
    h = json.loads(str(z[HEADER]))
    out = []
    for i, (key, layout) in enumerate(zip(h['keys'], h['layouts'])):
      ex = {}
      for k, kind, *text in layout:
        name = f'{i}.{k}'
        if kind == 'text':
          ex[k] = text[0]
        elif kind == 'bytes':
          data, ends = z[name].tobytes(), np.cumsum(z[name + '.len'])
          ex[k] = np.array([data[a:b] for a, b in zip(np.r_[0, ends[:-1]], ends)], dtype=object)
        elif kind == 'scalar':
          ex[k] = z[name][()]
        else:
          ex[k] = z[name]
      out.append((key, ex))
  return h['split'], out

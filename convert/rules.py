"""Weight conversion between PyTorch state dicts and our NNX modules, by rule.

Our module trees mirror diffusers/transformers attribute names, so a PyTorch key maps to our path by a few
uniform rules: the last name `weight` becomes `kernel` (conv OIHW -> HWIO, linear (out, in) -> (in, out)),
`scale` (norms) or `embedding` (embedding tables); `bias` stays. Per-model literal renames cover the rare
places where the trees differ. Anything unmatched is an error naming the keys, so a wrong checkpoint never
loads half-way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
from flax import nnx

from tgvac_jax.models.params import ConversionError, flat_params, report_mismatch  # noqa: F401 (re-exported)


Renames = Sequence[tuple[str, str]]  # (torch substring, flax substring), applied in order


def _apply(key: str, renames: Renames, inverse: bool) -> str:
  for a, b in (reversed(renames) if inverse else renames):
    key = key.replace(b, a) if inverse else key.replace(a, b)
  return key


def _to_flax_value(leaf: str, value: np.ndarray) -> np.ndarray:
  if leaf == 'kernel' and value.ndim == 4:
    return value.transpose(2, 3, 1, 0)
  if leaf == 'kernel' and value.ndim == 2:
    return value.T
  return value


def _to_torch_value(leaf: str, value: np.ndarray) -> np.ndarray:
  if leaf == 'kernel' and value.ndim == 4:
    return value.transpose(3, 2, 0, 1)
  if leaf == 'kernel' and value.ndim == 2:
    return value.T
  return value


def load_torch_state(module: nnx.Module, state_dict: Mapping[str, np.ndarray], *, renames: Renames = (),
                     ignore: Sequence[str] = (), filter=nnx.Param, what: str = 'model',
                     partial: bool = False) -> None:
  """Copies a PyTorch state dict (numpy values) into `module`'s `filter` variables, all or nothing.

  `ignore`: regexes of torch keys to drop (non-persistent buffers such as `position_ids`). `partial`: the
  checkpoint may cover only part of the model (e.g. motion weights alone); it still may not carry extra keys.
  """
  ours = flat_params(module, filter)
  by_stem: dict[str, dict[str, str]] = {}
  for path in ours:
    stem, leaf = path.rsplit('.', 1)
    by_stem.setdefault(stem, {})[leaf] = path
  updates, unexpected, mis_shaped = {}, [], []
  for key, value in state_dict.items():
    if any(re.search(p, key) for p in ignore):
      continue
    stem, leaf = _apply(key, renames, inverse=False).rsplit('.', 1)
    leaves = by_stem.get(stem, {})
    if leaf == 'weight':
      leaf = next((name for name in ('kernel', 'scale', 'embedding') if name in leaves), 'kernel')
    path = leaves.get(leaf)
    if path is None:
      unexpected.append(key)
      continue
    value = _to_flax_value(leaf, np.asarray(value))
    if value.shape != tuple(ours[path].get_value().shape):
      mis_shaped.append(f'{key} {tuple(np.shape(state_dict[key]))} vs ours {path} {tuple(ours[path].get_value().shape)}')
      continue
    updates[path] = value
  missing = [] if partial else [p for p in ours if p not in updates]
  report_mismatch(what, missing, unexpected, mis_shaped)
  for path, value in updates.items():
    var = ours[path]
    var.set_value(np.asarray(value, dtype=var.get_value().dtype))


def torch_state(module_or_state, *, renames: Renames = (), filter=nnx.Param) -> dict[str, np.ndarray]:
  """Our `filter` variables as a PyTorch-layout state dict (numpy float32 values)."""
  out = {}
  for path, var in flat_params(module_or_state, filter).items():
    stem, leaf = path.rsplit('.', 1)
    torch_leaf = 'weight' if leaf in ('kernel', 'scale', 'embedding') else leaf
    key = _apply(f'{stem}.{torch_leaf}', renames, inverse=True)
    out[key] = np.ascontiguousarray(_to_torch_value(leaf, np.asarray(var.get_value(), dtype=np.float32)))
  return out

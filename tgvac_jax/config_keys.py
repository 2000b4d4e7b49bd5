"""The keys a config file defines, for `--config.key=value` overrides.

run.py turns an unknown key into one line naming the closest known ones; tests/test_docs.py checks every command
in the docs with the same function, so a command the docs show fails there exactly when run.py would refuse it.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from collections.abc import Iterable


def load(spec: str):
  """`path/to/config.py[:arg]` -> its `get_config(arg)` (or `get_config()` without an arg)."""
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such config file')
  module_spec = importlib.util.spec_from_file_location('_run_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def flat_keys(d, prefix='') -> list[str]:
  """Dotted paths of the leaves ('optim.lr', ...)."""
  out = []
  for k, v in d.items():
    out += flat_keys(v, prefix + k + '.') if hasattr(v, 'items') else [prefix + k]
  return out


def unknown_key(spec: str, keys: Iterable[str]) -> str | None:
  """One line naming the first of `keys` ('optim.lr', or a block such as 'optim') that the config file `spec`
  does not define, with the closest keys it does; None when it defines them all."""
  known = flat_keys(load(spec))
  for key in keys:
    if key not in known and not any(k.startswith(key + '.') for k in known):
      close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
      return f'unknown config key {key!r}' + (f'; closest: {", ".join(close)}' if close else '')
  return None

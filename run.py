"""The one entry point: `python run.py --config configs/<name>.py[:arg] [--config.key=value ...]`."""

import difflib
import importlib.util
import sys

from absl import app, flags
from ml_collections import config_flags

from tgvac_jax import host

_CONFIG = config_flags.DEFINE_config_file('config', None, 'A configs/<name>.py file with get_config().')


def _config_file(argv) -> str | None:
  for i, a in enumerate(argv):
    if a.startswith('--config='):
      return a.split('=', 1)[1]
    if a == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _flat_keys(d, prefix='') -> list[str]:
  """Dotted paths of the leaves ('optim.lr', ...)."""
  out = []
  for k, v in d.items():
    out += _flat_keys(v, prefix + k + '.') if hasattr(v, 'items') else [prefix + k]
  return out


def _unknown_key(argv) -> str | None:
  """One line naming the first `--config.key` the config file does not define and the closest keys it does."""
  spec = _config_file(argv)
  if spec is None:
    return None
  path, _, arg = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('_run_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  keys = _flat_keys(module.get_config(arg) if arg else module.get_config())
  for a in argv:
    if a.startswith('--config.'):
      key = a[len('--config.'):].split('=', 1)[0]
      if key not in keys and not any(k.startswith(key + '.') for k in keys):
        close = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
        return f'unknown config key {key!r}' + (f'; closest: {", ".join(close)}' if close else '')
  return None


def _parse_flags(argv):
  """absl flag parsing, with an unknown `--config.key` turned into one line instead of a traceback."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError):
    line = _unknown_key(argv)
    if line is None:
      raise
    sys.exit(f'run.py: error: {line}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  from tgvac_jax import jobs  # after flag parsing, so --help stays fast
  try:
    jobs.run(_CONFIG.value)
  except (ValueError, FileNotFoundError) as e:  # bad configs and inputs: one message, no traceback
    sys.exit(f'run.py: error: {e}')


if __name__ == '__main__':
  host.tune_allocator()  # on CPU hosts: restarts with tcmalloc or huge pages (tgvac_jax/host.py)
  flags.mark_flags_as_required(['config'])
  app.run(main, flags_parser=_parse_flags)

"""The one entry point: `python run.py --config configs/<name>.py[:arg] [--config.key=value ...]`."""

import sys

from absl import app, flags
from ml_collections import config_flags

from tgvac_jax import config_keys, host

_CONFIG = config_flags.DEFINE_config_file('config', None, 'A configs/<name>.py file with get_config().')


def _config_file(argv) -> str | None:
  for i, a in enumerate(argv):
    if a.startswith('--config='):
      return a.split('=', 1)[1]
    if a == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _unknown_key(argv) -> str | None:
  """One line naming the first `--config.key` the config file does not define and the closest keys it does."""
  spec = _config_file(argv)
  if spec is None:
    return None
  return config_keys.unknown_key(spec, [a[len('--config.'):].split('=', 1)[0] for a in argv
                                        if a.startswith('--config.')])


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

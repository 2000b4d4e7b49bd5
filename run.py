"""The one entry point: `python run.py --config configs/<name>.py [--config.key=value ...]`."""

import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'A configs/<name>.py file with get_config().')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  from tgvac_jax import jobs  # after flag parsing, so --help stays fast
  try:
    jobs.run(_CONFIG.value)
  except (ValueError, FileNotFoundError) as e:  # bad configs and inputs: one message, no traceback
    sys.exit(f'run.py: error: {e}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)

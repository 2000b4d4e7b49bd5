"""The one entry point: `python run.py --config configs/<name>.py [--config.key=value ...]`."""

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'A configs/<name>.py file with get_config().')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  from tgvac_jax import jobs  # after flag parsing, so --help stays fast
  jobs.run(_CONFIG.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)

"""Cached latents: encode a built dataset once with the frozen VAE and text encoder of a stage's run.

  python run.py --config configs/cache_latents.py:motion --config.cache.out=latents/ --config.data.dataset=data/
  python run.py --config configs/motion.py --config.data.cached_latents=latents/      # then train from them
  python run.py --config configs/cache_latents.py:frame_tiny                           # CPU: tiny models

`<stage>` is frame or motion; the rest of the config is that stage's (configs/frame.py, configs/motion.py), so
the weights, image size and compute dtype are the ones the trainer uses: set the same --config.init.*,
--config.data.size and --config.compute_dtype here as there (the trainer checks them against the cache).
Several processes (`distributed.initialize`) split the shards between them; a rerun finishes an interrupted cache.
"""

import ml_collections

from configs import frame, motion


def with_cache(c):
  """A stage's training config -> the cache job's (the same weights, size and dtype, plus `cache.*`)."""
  c.job = 'cache_latents'
  c.cache = ml_collections.ConfigDict()
  c.cache.out = ''                # the folder to write (data.cached_latents of the training run); '': <workdir>/latents
  c.cache.split = 'train'
  c.cache.batch_size = 4          # records per encoder call (per process; clips count once, not per frame)
  c.cache.shard_size = 256        # records per array_record shard: the unit of resumption and of process work
  return c


def get_config(arg=None):
  stage, _, variant = (arg or 'frame').partition('_')
  if stage not in ('frame', 'motion') or variant not in ('', 'tiny'):
    raise ValueError(f"configs/cache_latents.py: unknown variant {arg!r} (known: frame, motion, frame_tiny, "
                     "motion_tiny)")
  return with_cache({'frame': frame, 'motion': motion}[stage].get_config(variant or None))

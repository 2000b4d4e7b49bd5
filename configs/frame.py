"""Stage 1 (eq. 2): the frame-level UNet, from SD-1.5 with conv_in grown to 12 channels.

  python -m convert.from_diffusers path/to/stable-diffusion-v1-5 ckpt/ --in-channels 12   # once
  python run.py --config configs/frame.py --config.data.dataset=data/ [--config.data.pix2gestalt=p2g/]
  python run.py --config configs/frame.py:tiny          # CPU: from-scratch tiny models on procedural clips

Paper §4.1: 500k steps, global batch 16, 256², lr 5e-4; pix2gestalt's condition dropout (5% text, 5% concat, 5%
both). The EMA weights land in `<workdir>/model/`, which the motion stage starts from.
"""

from tgvac_jax.train.config import base_config


def tiny(c):
  """A from-scratch model small enough to train on one CPU core in minutes (tests, smoke runs)."""
  c.init.from_scratch = True
  c.init.checkpoint = ''
  c.data.dataset = ''
  c.data.procedural_videos = 12   # build this many procedural videos into <workdir>/data first
  c.data.size = 32
  c.data.clip_len = 4
  c.batch_size = 8                # divisible by 1, 2, 4 and 8 devices
  c.num_steps = 200
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 10
  c.ema_decay = 0.99
  c.compute_dtype = 'float32'
  c.checkpoint.every = 50
  c.log.every = 10
  c.log.val_every = 100
  c.log.val_steps = 5
  return c


def get_config(arg=None):
  c = base_config()
  c.stage = 'frame'
  c.workdir = 'out/frame'
  c.init.checkpoint = 'ckpt'      # our pipeline folder from convert.from_diffusers --in-channels 12
  c.data.dataset = 'data'
  c.data.size = 256
  c.num_steps = 500_000
  c.batch_size = 16
  c.optim.lr = 5e-4
  c.optim.warmup_steps = 1000
  c.dropout.text = c.dropout.concat = c.dropout.both = 0.05
  if arg == 'tiny':
    return tiny(c)
  if arg:
    raise ValueError(f"configs/frame.py: unknown variant {arg!r} (known: 'tiny')")
  return c

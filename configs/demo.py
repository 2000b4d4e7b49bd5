"""The embedded demo: everything on a CPU, nothing downloaded.

  python run.py --config configs/demo.py [--config.workdir=out/demo --config.sample.steps=20 ...]

Builds the procedural occlusion dataset, tiny from-scratch models and runs long-video completion on validation
clips, writing images, masks and a summary under `workdir`.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.job = 'demo'
  c.workdir = 'out/demo'
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.num_videos = 20          # procedural source videos (80/20 split by video)
  c.data.size = 64                # frames are size x size
  c.data.clip_len = 24            # frames per clip: longer than the window, so windows overlap
  c.data.num_examples = 2         # validation clips to complete

  c.model = ml_collections.ConfigDict()
  c.model.unet_channels = (32, 64)
  c.model.vae_channels = (32, 64, 64)
  c.model.text_width = 64
  c.model.text_layers = 2
  c.model.motion = True

  c.sample = ml_collections.ConfigDict()
  c.sample.steps = 10
  c.sample.window_length = 8
  c.sample.stride = 4
  c.sample.guidance_scale = 7.5
  c.sample.chunk_size = 2
  return c

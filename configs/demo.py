"""The embedded demo: tiny TGVAC models trained from scratch on a CPU, nothing downloaded.

  python run.py --config configs/demo.py                 # about 25 minutes on 2 CPU cores
  python run.py --config configs/demo.py:quick           # the same path in a few minutes (CI)
  python run.py --config configs/demo.py --config.rebuild=True   # redo everything instead of reusing workdir

Procedural dataset -> autoencoder stage -> frame stage -> motion stage (configs/vae.py, frame.py, motion.py) ->
completion of held-out clips longer than the training window (configs/infer.py) -> evaluation (configs/eval.py)
-> the ablation table and GIFs in `workdir/ablation/`; then clips of another size and length, never seen, as a
DAVIS-style folder through the same two jobs. A second run reuses every finished part of `workdir`.
"""

import ml_collections

from data_prep.sources import procedural


def _full() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.job = 'demo'
  c.workdir = 'out/demo'
  c.seed = 0
  c.rebuild = False                # start over: delete workdir first

  c.data = ml_collections.ConfigDict()
  c.data.num_videos = 80           # procedural source videos (80/20 split by video)
  c.data.size = 32                 # frames are size x size
  c.data.clip_len = 24             # stored clip length = the held-out clips' length (> the motion window)
  c.data.clips_per_track = 4
  # the procedural source's difficulty knobs (data_prep/sources/procedural.py); these are its defaults, the full task
  c.data.procedural = ml_collections.ConfigDict()
  c.data.procedural.shapes = procedural.SHAPES
  c.data.procedural.colours = tuple(procedural.COLOURS)
  c.data.procedural.patterns = procedural.PATTERNS
  c.data.procedural.sizes = tuple(procedural.SIZES)
  c.data.procedural.spin = True              # False: no turning over time (the start angle stays random)
  c.data.procedural.pulse = True             # False: constant radius
  c.data.procedural.background = 'texture'   # 'plain': one flat colour per video, never near white
  c.data.procedural.second_sprite_prob = 0.4

  c.model = ml_collections.ConfigDict()   # the trainer's `model` block (tgvac_jax/train/config.py)
  c.model.unet_channels = (32, 64)
  c.model.layers_per_block = 1
  c.model.attention_head_dim = 8
  c.model.vae_channels = (16, 32)
  c.model.latent_channels = 8
  c.model.text_width = 64
  c.model.text_layers = 2
  c.model.motion_heads = 4
  c.model.norm_groups = 8

  # One block per stage: steps, global batch, peak learning rate (warmup and EMA follow from the steps); min-SNR
  # loss weighting (gamma 5) for the diffusion stages.
  c.vae = ml_collections.ConfigDict({'steps': 500, 'batch_size': 8, 'lr': 2e-3})
  c.frame = ml_collections.ConfigDict({'steps': 150, 'batch_size': 16, 'lr': 1e-3, 'snr_gamma': 5.0})
  c.motion = ml_collections.ConfigDict({'steps': 30, 'batch_size': 2, 'lr': 1e-3, 'clip_len': 8,
                                        'snr_gamma': 5.0})

  c.sample = ml_collections.ConfigDict()   # configs/infer.py's sampler for every learned row
  c.sample.steps = 20
  c.sample.guidance_scale = 2.0
  c.sample.window_length = 8               # = motion.clip_len, the window the motion modules saw
  c.sample.strides = (2, 4, 8)             # temporal diffusion rows; window_length itself is the no-overlap row
  c.sample.chunk_size = 4
  c.sample.mask_threshold = 0.25           # object = pixels this far from white (the VAE blurs edges toward it)

  c.eval = ml_collections.ConfigDict()
  c.eval.max_videos = 8                    # held-out validation clips scored per row
  c.eval.gif_videos = 3

  c.unseen = ml_collections.ConfigDict()   # a DAVIS-style folder of clips the demo never trained on
  c.unseen.num_videos = 10       # >= 2 per split: occluders come from other videos of the same split
  c.unseen.size = 128
  c.unseen.clip_len = 30
  return c


def get_config(arg=None):
  c = _full()
  if arg == 'quick':
    c.workdir = 'out/demo_quick'
    c.data.num_videos = 16
    c.data.clip_len = 12
    c.data.clips_per_track = 2
    c.vae.steps, c.frame.steps, c.motion.steps = 20, 20, 10
    c.vae.batch_size = c.frame.batch_size = 4
    c.motion.clip_len = 4
    c.sample.steps = 3
    c.sample.window_length = 4
    c.sample.strides = (2, 4)
    c.eval.max_videos = 2
    c.eval.gif_videos = 1
    c.unseen.size = 64
    c.unseen.clip_len = 10
    return c
  if arg:
    raise ValueError(f"configs/demo.py: unknown variant {arg!r} (known: 'quick')")
  return c

"""The trainer's config schema: every field `configs/frame.py`, `motion.py` and `vae.py` may set.

One schema for all stages, so `--config.key=value` works the same everywhere and an unknown key is caught by
ml_collections (locked ConfigDict) before anything is built.
"""

from __future__ import annotations

import ml_collections

from tgvac_jax import distributed


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.job = 'train'
  c.stage = 'frame'               # 'frame' (eq. 2), 'motion' (eq. 3) or 'vae' (autoencoder for from-scratch models)
  c.workdir = 'out/train'
  c.seed = 0
  c.num_steps = 500_000
  c.batch_size = 16               # global: examples per optimizer step, over all devices and processes

  # Where the weights start. frame: a pipeline checkpoint folder (convert.from_diffusers --in-channels 12);
  # motion: the frame stage's exported folder; vae: none (from scratch, sizes in `model`).
  c.init = ml_collections.ConfigDict()
  c.init.checkpoint = ''          # our pipeline checkpoint folder (unet/ vae/ text_encoder/ tokenizer/)
  c.init.motion_adapter = ''      # motion stage: AnimateDiff mm_sd_v15_v2 file or diffusers MotionAdapter folder
  c.init.motion_heads = 8         # motion stage from a frame checkpoint: heads of the new motion modules (AnimateDiff)
  # GroupNorm of new motion modules: per frame (False, original AnimateDiff) or across the clip's frames (True, what
  # diffusers runs: choose it to serve the model in diffusers). Loaded motion weights keep their own norm.
  c.init.motion_norm_across_frames = False
  c.init.from_scratch = False     # build tiny models from `model` instead of loading `init.checkpoint`

  # Model sizes for from-scratch models (the embedded demo, tests); ignored when loading a checkpoint.
  c.model = ml_collections.ConfigDict()
  c.model.unet_channels = (32, 64)
  c.model.layers_per_block = 1
  c.model.attention_head_dim = 4
  c.model.vae_channels = (32, 64, 64)
  c.model.latent_channels = 4
  c.model.text_width = 64
  c.model.text_layers = 2
  c.model.motion_heads = 4
  c.model.motion_norm_across_frames = False  # from-scratch motion modules: as init.motion_norm_across_frames
  c.model.norm_groups = 16

  c.data = ml_collections.ConfigDict()
  c.data.dataset = ''             # a built dataset (python -m data_prep.build ...): folder with array_record files
  c.data.pix2gestalt = ''         # frame stage: pix2gestalt folders (occlusion/ whole/ whole_mask/ ...), comma-separated
  c.data.cached_latents = ''      # a folder written by `configs/cache_latents.py`: train from latents, not pixels
  c.data.size = 256               # frames are size x size
  c.data.clip_len = 14            # motion stage: frames per clip
  c.data.worker_count = 0         # Grain worker processes (0: in the main process)
  c.data.shuffle_seed = 0
  c.data.procedural_videos = 0    # > 0 and no data.dataset: build this many procedural videos in workdir/data

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 5e-4
  c.optim.warmup_steps = 1000
  c.optim.schedule = 'constant'   # after warmup: 'constant' or 'cosine' (to 0 at num_steps)
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8
  c.optim.weight_decay = 1e-2
  c.optim.clip_norm = 1.0         # global-norm clipping; 0 disables
  c.optim.grad_accum = 1          # optax.MultiSteps micro-steps per optimizer step
  c.ema_decay = 0.9999

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.beta_schedule = 'scaled_linear'
  c.diffusion.beta_start = 0.00085
  c.diffusion.beta_end = 0.012
  c.diffusion.num_train_timesteps = 1000
  c.diffusion.prediction_type = 'epsilon'
  c.diffusion.rescale_betas_zero_snr = False  # zero terminal SNR (Lin et al. 2024); needs v_prediction
  c.diffusion.snr_gamma = 0.0     # min-SNR weighting; 0 disables

  # Classifier-free guidance training: drop the text, the image concat, or both (pix2gestalt: 5% each).
  c.dropout = ml_collections.ConfigDict()
  c.dropout.text = 0.05
  c.dropout.concat = 0.05
  c.dropout.both = 0.05

  c.vae_loss = ml_collections.ConfigDict()  # stage 'vae' only
  c.vae_loss.kl_weight = 1e-6
  c.vae_loss.reconstruction = 'l1'  # 'l1' or 'mse'

  c.compute_dtype = 'bfloat16'    # activations; master weights, optimizer and EMA stay float32
  c.remat = 'none'                # 'none', 'full' (every block), 'motion' (motion modules only)

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = 1                 # -1: whatever is left of the devices
  c.mesh.fsdp = -1
  c.mesh.tensor = 1
  c.mesh.min_shard_size = 2 ** 14  # elements: smaller weights (biases, norms) are replicated, larger split on fsdp

  c.distributed = distributed.config()  # jax.distributed.initialize() (unset fields: from the cluster's environment)

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every = 5000       # steps between Orbax saves (and EMA pipeline exports)
  c.checkpoint.keep = 3
  c.checkpoint.async_save = True

  c.log = ml_collections.ConfigDict()
  c.log.every = 50                # steps between metric writes (metrics.jsonl, TensorBoard)
  c.log.val_every = 5000          # steps between validation GIFs; 0 disables
  c.log.val_clips = 2
  c.log.val_steps = 25            # DDIM steps for validation completions
  c.log.peak_flops = 0.0          # peak FLOP/s per device for MFU; 0: from metrics.PEAK_FLOPS by device kind
  return c

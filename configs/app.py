"""A web page to try a trained model: pick an example clip or upload one, name the object, watch it completed.

  python run.py --config configs/demo.py     # trains the demo model (out/demo/motion/model), once
  python run.py --config configs/app.py      # then open http://127.0.0.1:7860
  python run.py --config configs/app.py --config.checkpoint=CKPT --config.examples=DAVIS_ROOT/ --config.port=8000

The page runs configs/infer.py's code (reading, resizing, completing, writing) on one video at a time; its
download holds the files that job writes. Examples: amodal roots (tgvac_jax/eval/amodal_root.py); by default the
demo's held-out and unseen clips next to the demo checkpoint. Sampler settings left at 0 take the checkpoint's
defaults (the demo's own settings for a demo checkpoint, else configs/infer.py's).
"""

import ml_collections

from configs import infer

# configs/infer.py keys that name one run's inputs and outputs: each request of the page sets those itself.
_INPUTS = ('job', 'out', 'checkpoint', 'video', 'text', 'masks', 'object_id', 'prompt_mask', 'box', 'points',
           'point_labels', 'sam2', 'sam2_device', 'root', 'captions', 'manifest', 'sequences')


def get_config():
  c = ml_collections.ConfigDict()
  c.job = 'app'
  c.checkpoint = 'out/demo/motion/model'   # pipeline checkpoint (configs/demo.py writes this one)
  c.examples = ''            # comma-separated amodal roots for the example picker ('' = the demo's, if there)
  c.max_examples = 12        # per root
  c.host = '127.0.0.1'       # anything else makes the page reachable from other machines: your explicit choice
  c.port = 7860
  c.share = False            # a public gradio.live link (sends the page through Gradio's servers); keep it off
  c.sam2 = ''                # local transformers SAM-2 video model folder: enables first-frame box/click prompts
  c.sam2_device = 'cpu'

  # limits, checked before anything is read in full
  c.max_frames = 120         # frames per video
  c.max_pixels = 60_000_000  # frames x height x width of the input video
  c.max_upload_mb = 200      # per uploaded file (videos, zips) and unpacked zip
  c.max_samples = 8          # hypotheses per request
  c.max_steps = 100          # DDIM steps per request

  # request folders (uploads and outputs): one per request, removed this long after it finished
  c.workdir = ''             # '' -> a new temporary folder, removed at exit
  c.keep_minutes = 30.0

  c.warmup = True            # compile for the first example's shape at start, so the first result comes fast

  # configs/infer.py's settings: the page shows sampler steps, guidance, window, stride, num_samples and seed as
  # each request's defaults. 0 below: the checkpoint's default (see above).
  c.infer = infer.get_config()
  for k in _INPUTS:
    del c.infer[k]
  c.infer.shard = 'none'     # one video per call: no batch to spread
  for k in ('steps', 'window_length', 'stride', 'chunk_size'):
    c.infer.sampler[k] = 0
  c.infer.sampler.guidance_scale = 0.0
  c.infer.mask_threshold = 0.0
  c.infer.mask_closing = -1  # -1: the checkpoint's default
  c.infer.fit = ''           # '': the checkpoint's default
  c.infer.object_context = -1.0
  c.infer.temporal_prior = -1  # -1: the checkpoint's default
  return c

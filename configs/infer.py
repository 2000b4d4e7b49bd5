"""Inference from files: the whole object and its amodal mask for one video, or for a folder/manifest of them.

  # one video, per-frame visible masks (binary PNGs, or DAVIS palette PNGs + object_id)
  python run.py --config configs/infer.py --config.checkpoint=CKPT --config.video=clip.mp4 \
      --config.masks=clip_masks/ --config.text="a brown dog" --config.out=out/dog
  # one video, the object given on the first frame and tracked by SAM-2 (a local transformers folder)
  python run.py --config configs/infer.py --config.checkpoint=CKPT --config.video=frames/ \
      --config.box=40,60,200,220 --config.sam2=sam2.1-hiera-tiny/ --config.text="a brown dog" --config.out=out/dog
  # a DAVIS-style root (JPEGImages/<seq>/, Annotations/<seq>/, captions.json) or a JSONL manifest
  python run.py --config configs/infer.py --config.checkpoint=CKPT --config.root=DAVIS/ --config.out=out/davis

Sampler defaults are the paper's (§3.4/§4.1): windows of 14 frames, stride 4, 30 DDIM steps, guidance 7.5.
"""

import ml_collections

from tgvac_jax import distributed


def get_config():
  c = ml_collections.ConfigDict()
  c.job = 'infer'
  c.checkpoint = ''          # model checkpoint folder: unet/ vae/ text_encoder/ tokenizer/ (scheduler/: its schedule)
  c.out = 'out/infer'        # one video: its output folder; batch: the parent of one folder per sequence

  # one video
  c.video = ''               # mp4/mov/webm/mkv/avi/gif file or folder of jpg/png frames
  c.text = ''                # the whole object, in words (CLIP reads 77 tokens; longer is truncated, with a warning)
  c.masks = ''               # folder of per-frame visible-mask PNGs ...
  c.object_id = 0            # ... palette id of the object (0: the only object in the masks)
  c.prompt_mask = ''         # ... or a first-frame prompt for SAM-2: a mask PNG,
  c.box = ''                 #     a box 'x0,y0,x1,y1' (pixels),
  c.points = ''              #     and/or points 'x,y;x,y'
  c.point_labels = ''        #     with labels '1,0' (1 object, 0 background; default all 1)
  c.sam2 = ''                # local transformers SAM-2 video model folder (e.g. a saved facebook/sam2.1-hiera-tiny)
  c.sam2_device = 'cpu'      # torch device for SAM-2

  # batch
  c.root = ''                # DAVIS-style root (JPEGImages/<seq>/, Annotations/<seq>/, captions.json)
  c.captions = ''            # '' -> ROOT/captions.json: {seq: text} or {seq: {object id: text}}
  c.manifest = ''            # or a JSONL file of {"video", "text", "masks" | "prompt_mask" | "box" | "points", ...}
  c.sequences = ''           # comma-separated names to keep ('' = all)

  # model input and outputs
  c.resolution = 0           # square model resolution (0: the checkpoint's unet sample_size x VAE factor)
  c.fit = 'pad'              # pad (letterbox) | stretch | short_side | object (a square around the object's path)
                             # | follow (a square around the object, moving with it): see tgvac_jax/infer/resize.py
  c.object_context = 1.0     # object / follow: object sizes of scene kept on each side of the object
  c.dtype = 'float32'        # float32 | bfloat16 | float16 compute
  c.num_samples = 1          # hypotheses per video (seeds seed, seed+1, ...)
  c.seed = 0
  c.select = 'coverage'      # coverage | stability | first: which hypothesis is written (no ground truth needed)
  c.keep_samples = False     # also write every hypothesis under samples/<k>/
  c.keep_visible = True      # visible part as observed: the input's pixels there, amodal mask ⊇ visible mask
  c.temporal_prior = 0       # > 0: where the model drew nothing, the object of the least-occluded frame within this
                             # many frames, moved with the visible part (temporal propagation, tgvac_jax/infer/
                             # propagate.py); 0: off. The demo's model: 8 (configs/demo.py)
  c.preview_height = 256     # side-by-side mp4/GIF panel height
  c.fps = 10.0               # for frame folders (video files keep theirs)
  c.overwrite = False        # redo outputs that exist (else a rerun skips them)

  # devices
  c.shard = 'auto'           # auto | none | videos | windows (auto: split a batch's videos over local devices)
  c.batch_size = 0           # rows (videos x samples) per model call; 0: one per device
  # several processes (one per TPU host / SLURM task) each complete every process_count-th sequence: see
  # docs/scale.md, "Batch inference on a cluster"
  c.distributed = distributed.config()

  c.sampler = ml_collections.ConfigDict()
  c.sampler.window_length = 14
  c.sampler.stride = 4
  c.sampler.steps = 30
  c.sampler.guidance_scale = 7.5
  c.sampler.guidance_mode = 'full'   # full: empty text + zero concat; text: guide on the text only
  c.sampler.weighting = 'flat'       # flat | pyramid averaging of overlapping windows
  c.sampler.chunk_size = 1           # windows per UNet call (memory knob; a multiple of the devices for 'windows')
  c.sampler.eta = 0.0
  c.vae_chunk = 8                    # frames per VAE call
  c.mask_threshold = 0.15            # amodal mask: pixels this far from white (0..1)
  c.mask_closing = 0                 # ... with gaps up to this radius closed (model pixels; 0: off)
  return c

"""Stage 2 (eq. 3): motion modules on the frozen stage-1 UNet, trained on 14-frame clips.

  python run.py --config configs/motion.py --config.init.checkpoint=out/frame/model --config.data.dataset=data/
  python run.py --config configs/motion.py --config.init.motion_adapter=mm_sd_v15_v2.ckpt   # AnimateDiff init
  python run.py --config configs/motion.py:tiny         # CPU: from-scratch tiny models on procedural clips

New motion modules start as identities (zero proj_out), so the first step's output equals stage 1's; every
spatial weight stays frozen and only `MotionParam`s are trained. `diffusion` must be the frame stage's (its
exported scheduler/; checked before anything is built): a frozen UNet denoises only the noise process it learnt.
"""

from configs import frame
from tgvac_jax.train.config import base_config


def get_config(arg=None):
  c = base_config()
  c.stage = 'motion'
  c.workdir = 'out/motion'
  c.init.checkpoint = 'out/frame/model'   # the frame stage's exported EMA weights
  c.data.dataset = 'data'
  c.data.size = 256
  c.data.clip_len = 14
  c.num_steps = 500_000
  c.batch_size = 16
  # The paper trains both stages at 5e-4. AnimateDiff trained its motion modules at 1e-4 (FACTS.md), and its
  # users report the loss collapsing/not falling at higher rates on small datasets: choose 1e-4 when the clip
  # dataset is small or the loss spikes (`--config.optim.lr=1e-4`).
  c.optim.lr = 5e-4
  c.optim.warmup_steps = 1000
  c.remat = 'motion'              # 14 frames x batch 16: recompute motion-module activations in the backward pass
  if arg == 'tiny':
    c = frame.tiny(c)
    c.stage = 'motion'
    c.remat = 'none'
    return c
  if arg:
    raise ValueError(f"configs/motion.py: unknown variant {arg!r} (known: 'tiny')")
  return c

"""Stage 2 on one host with 8 GPUs (the paper used 8 RTX A6000): global batch 16 = 2 clips per GPU, weights
sharded over the 8 GPUs.

  python run.py --config configs/motion_8gpu.py --config.init.checkpoint=out/frame/model
"""

from configs import motion


def get_config(arg=None):
  c = motion.get_config(arg)
  c.mesh.data = 1
  c.mesh.fsdp = 8
  c.data.worker_count = 8
  return c

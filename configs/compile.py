"""Compile a config's programs for a TPU slice on this host (no TPU needed: libtpu, `pip install -e '.[tpu]'`):
HBM per device and whether it fits, FLOPs, collectives, a roofline step time; one line per program and
<out>/compile.json. See docs/scale.md ("Will it fit?").

  python run.py --config configs/compile.py --config.train=configs/frame_v5e_32.py --config.topology=v5e-32
  python run.py --config configs/compile.py --config.train=configs/motion.py --config.topology=v5p-8 \\
      --config.overrides='mesh.fsdp=-1,remat=full'
  python run.py --config configs/compile.py --config.train=configs/frame.py:tiny --config.topology=v5e-8 \\
      --config.overrides='mesh.fsdp=8'
  python run.py --config configs/compile.py --config.infer=configs/infer.py --config.topology=v5e-8 \\
      --config.overrides='dtype=bfloat16'

Without a checkpoint folder the models are SD-1.5's shapes (12-channel UNet, motion modules for the motion stage
and the sampler): no weights are read or made, only shapes.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.job = 'compile'
  c.train = ''             # a training config, 'configs/frame.py' or 'configs/motion.py:tiny', ...
  c.infer = ''             # ... or the inference config, 'configs/infer.py'
  c.overrides = ''         # that config's fields, 'mesh.fsdp=8,optim.grad_accum=2,model.unet_channels=(128,256)'
  c.topology = 'v5e-8'     # Cloud TPU accelerator type: v4-8, v5e-8 ... v5e-256, v5p-8 ... v5p-1024, v6e-8, ...
  c.num_slices = 1         # multislice: slices joined over the data-center network
  c.programs = ''          # '' = all: train_step,encode (training config) or sampler (inference config)
  c.frames = 14            # sampler: frames per video, one per device (one window at the paper's settings)
  c.resolution = 256       # sampler: square frame size when the inference config's resolution is 0
  c.effort = 0.0           # XLA's exec_time_optimization_effort, -1..1: -1 compiles SD-1.5's step with ~1/3 the CPU
                           # time, but its memory is not what a pod compiles (default 0): a first look only
  c.out = 'out/compile'    # compile.json goes here
  return c

"""One of the two processes of test_multiprocess:
`python -m tests.train.mp_worker <process_id> <port> <frame model> <batches.npz> <out.npz>`.

Runs with XLA_FLAGS=--xla_force_host_platform_device_count=4: 2 processes x 4 CPU devices form one 8-device FSDP
mesh; both load the weights from the parent's pipeline folder (each device reads its own slices) and feed their
halves of every global batch (cached latents, `batches.npz` keys '<step>/<name>').
Process 0 writes the losses and the gathered params.
"""

import sys

import jax
import numpy as np
from jax.experimental import multihost_utils

from tests.train import tiny
from tgvac_jax.train import sharding
from tgvac_jax.train.state import setup

STEPS = 3


def main(process_id: int, port: int, frame_model: str, batches: str, out: str) -> None:
  jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}', num_processes=2, process_id=process_id)
  assert jax.process_count() == 2 and jax.device_count() == 8 and jax.local_device_count() == 4
  c = tiny.tiny_config('frame', **{'init.from_scratch': False, 'init.checkpoint': frame_model})
  c.mesh.fsdp = 8
  mesh = sharding.make_mesh(c.mesh)
  trainee = setup(c, mesh)
  state, losses = trainee.state, []
  half = tiny.BATCH // 2
  data = np.load(batches)
  for step in range(STEPS):
    local = {k.split('/')[1]: data[k][process_id * half:(process_id + 1) * half] for k in data.files
             if k.startswith(f'{step}/')}
    state, metrics = trainee.train_step(state, sharding.global_batch(local, mesh))
    losses.append(float(metrics['loss']))
  params = {jax.tree_util.keystr(p): np.asarray(multihost_utils.process_allgather(x, tiled=True))
            for p, x in jax.tree_util.tree_leaves_with_path(state.params)}
  if process_id == 0:
    np.savez(out, losses=np.asarray(losses), **params)
  sharding.barrier('done')


if __name__ == '__main__':
  main(int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:6])

"""The trainer's and the sampler's programs compiled for a TPU v5e-8 on this CPU (libtpu, no TPU): FSDP shards the
state as train/sharding.py intends, the optimized HLO has FSDP's collectives and no CPU kernel, and the FLOPs are
the CPU compile's. Tiny models (16 px, one-level UNet, as tests/train/tiny.py) trained from cached latents (no VAE
or text encoder in the step), and the CPU side compiled without LLVM's expensive passes, so each compile takes
seconds."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh

from configs import frame, motion
from tgvac_jax import target
from tgvac_jax.compile import chips, job, programs
from tgvac_jax.compile.flops import count_traced
from tgvac_jax.compile.report import collectives, cpu_custom_calls, flops
from tgvac_jax.diffusion.temporal_sampler import TemporalSamplerConfig
from tgvac_jax.infer.complete import CompletionConfig
from tgvac_jax.train import stages
from tgvac_jax.train.sharding import make_mesh

pytest.importorskip('libtpu', reason='compiling for TPU needs libtpu (the tpu extra)')

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ('mesh.fsdp=8,mesh.min_shard_size=1024,data.size=16,data.clip_len=4,model.unet_channels=(32,),'
        'model.vae_channels=(16,32),model.text_width=32,model.text_layers=1,data.cached_latents=latents/')


def tiny(module):
  c = module.get_config('tiny')
  job.apply_overrides(c, TINY, 'tiny')
  return c


@pytest.fixture(scope='module')
def tpu_devices():
  return chips.devices(chips.parse('v5e-8'))


def padded_bytes(shape, dtype, layout) -> int:
  """Bytes of an array stored in the layout's tiles (TPU pads the minor dimensions to (8, 128)-like tiles)."""
  dims = [shape[i] for i in layout.major_to_minor] if layout is not None else list(shape)
  tile = layout.tiling[0] if layout is not None and layout.tiling else ()
  for k, t in enumerate(reversed(tile[-len(dims):] if dims else ())):
    dims[-1 - k] = -(-dims[-1 - k] // t) * t
  return math.prod(dims) * jnp.dtype(dtype).itemsize


def expected_argument_bytes(lowered, args, formats=None) -> int:
  """Per-device argument bytes from the abstract shapes and their shardings alone (padded to the executable's
  tiles where `formats` is given), over the arguments the program uses (jit drops the others: the VAE decoder's
  weights in a train step)."""
  leaves = jax.tree.leaves(args)
  layouts = [f.layout for f in jax.tree.leaves(formats)] if formats is not None else [None] * len(leaves)
  kept = lowered._lowering.compile_args['kept_var_idx']  # pylint: disable=protected-access

  def stored(x):  # PRNG keys are stored as their uint32 key data
    shard = jax.ShapeDtypeStruct(x.sharding.shard_shape(x.shape), x.dtype)
    return jax.eval_shape(jax.random.key_data, shard) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else shard
  return sum(padded_bytes(s.shape, s.dtype, lay)
             for i, (s, lay) in enumerate(zip(map(stored, leaves), layouts)) if i in kept)


def fsdp_bytes(args) -> tuple[int, int, int]:
  """(replicated size of the leaves split over 'fsdp', their per-device size, replicated size of all leaves)."""
  full = shard = total = 0
  for x in jax.tree.leaves(args):
    size = math.prod(x.shape) * jnp.dtype(x.dtype).itemsize
    total += size
    if 'fsdp' in jax.tree.leaves(tuple(x.sharding.spec)):
      full += size
      shard += math.prod(x.sharding.shard_shape(x.shape)) * jnp.dtype(x.dtype).itemsize
  return full, shard, total


def compile_both(make, tpu_devices, mesh_of):
  """(program, lowered, compiled) for the v5e-8 and for the 8 CPU devices of the test process, both traced with the
  TPU's choices of paths (`target.compiling_for`): the same program, compiled by each backend. (Traced with the
  CPU's own paths, the tiny frame step counts 17% more FLOPs on CPU: its convolutions are dots over im2col'd or
  row-shifted input that multiply the zero padding, 16% of a 3x3 conv's taps on an 8x8 map, which XLA's
  convolution count skips.)"""
  out = {}
  for name, devices in (('tpu', tpu_devices), ('cpu', jax.devices())):
    mesh = mesh_of(devices)
    program = make(mesh)
    with target.compiling_for(tpu_devices):
      traced = program.jitted.trace(*program.args, **program.kwargs)
    lowered = traced.lower()
    out[name] = program, lowered, lowered.compile(None if name == 'tpu' else stages.INIT_COMPILER_OPTIONS)
  out['analytic'] = count_traced(traced)
  return out


def check_compiled(out) -> dict:
  """What every program must show: argument bytes per device as the shapes and shardings say (TPU: in its tiles),
  no CPU kernel in the TPU program, the CPU compile's FLOPs. Returns the TPU program's collectives."""
  (program, lowered, tpu), (cpu_program, cpu_lowered, cpu) = out['tpu'], out['cpu']
  expected = expected_argument_bytes(lowered, program.args, tpu.input_formats[0])
  assert tpu.memory_analysis().argument_size_in_bytes == pytest.approx(expected, rel=0.05)
  expected = expected_argument_bytes(cpu_lowered, cpu_program.args)
  assert cpu.memory_analysis().argument_size_in_bytes == pytest.approx(expected, rel=0.05)
  hlo = tpu.as_text()
  assert cpu_custom_calls(hlo) == []
  assert flops(tpu) == pytest.approx(flops(cpu), rel=0.05)
  # the jaxpr's products (all devices) against XLA's count on the 8 CPU devices, which adds the elementwise work
  # (8% of these tiny nets: measured 0.92) and counts a while loop's body once (the sampler's 30-step scan)
  analytic = out['analytic']
  assert not analytic.opaque and analytic.unknown_trips == 0
  if program.name == 'train_step':
    assert 0.85 * 8 * flops(cpu) < analytic.total < 8 * flops(cpu)
  else:
    assert analytic.total > 5 * 8 * flops(cpu)
  return collectives(hlo, 8)


def check_train_step(out):
  state = out['tpu'][0].args[0]
  # FSDP: the split leaves are 1/8 per device, and they are nearly all of the trained state
  full, shard, total = fsdp_bytes(state)
  assert shard == pytest.approx(full / 8, rel=0.05)
  assert full > 0.8 * total
  c = check_compiled(out)
  # FSDP's collectives: weights gathered for the forward/backward, gradients reduce-scattered
  assert c['all-gather']['count'] > 0 and c['reduce-scatter']['count'] > 0
  grads, _, _ = fsdp_bytes(state.params)  # float32, as the gradients
  reduced = c['reduce-scatter']['bytes'] + c['all-reduce']['bytes'] / 2  # what each device sends of its gradients
  assert reduced > 0.5 * grads * 7 / 8


def test_frame_step_compiles_for_v5e_8_with_fsdp(tpu_devices):
  config = tiny(frame)
  check_train_step(compile_both(lambda mesh: programs.train_step(config, mesh), tpu_devices,
                                lambda devices: make_mesh(config.mesh, devices)))


def test_motion_step_compiles_for_v5e_8_with_fsdp(tpu_devices):
  config = tiny(motion)
  check_train_step(compile_both(lambda mesh: programs.train_step(config, mesh), tpu_devices,
                                lambda devices: make_mesh(config.mesh, devices)))


def test_sampler_compiles_for_v5e_8_one_video_per_device(tpu_devices):
  config = tiny(motion)
  unet, vae, te = stages.scratch_configs(config.model, 16, 78, motion=True)
  models = [nnx.split(nnx.eval_shape(lambda c=c, cls=cls: cls(c, rngs=nnx.Rngs(0))))
            for c, cls in ((unet, stages.UNet2DConditionModel), (vae, stages.AutoencoderKL),
                           (te, stages.CLIPTextModel))]
  graphs, params = tuple(m[0] for m in models), tuple(m[1] for m in models)
  completion = CompletionConfig(sampler=TemporalSamplerConfig(window_length=4, stride=2, chunk_size=1))
  out = compile_both(lambda mesh: programs.sampler(completion, (graphs, params), mesh, frames=4, resolution=16),
                     tpu_devices, lambda devices: Mesh(np.asarray(devices), ('data',)))
  weights, frames = out['tpu'][0].args[:2]
  assert frames.sharding.shard_shape(frames.shape)[0] == 1  # one video per device
  c = check_compiled(out)
  # weights replicated, videos independent: no weight is gathered, nothing reduced
  weight_bytes = sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(weights))
  assert c['reduce-scatter']['count'] == 0
  assert sum(v['bytes'] for v in c.values()) < 0.01 * weight_bytes


def compile_config(tmp_path, **fields):
  import ml_collections  # pylint: disable=import-outside-toplevel
  from configs import compile as config_file  # pylint: disable=import-outside-toplevel
  c = config_file.get_config()
  c.out = str(tmp_path / 'out')
  for k, v in fields.items():
    c[k] = v
  return ml_collections.ConfigDict(c)


def test_bad_input_is_one_error_line_and_writes_nothing(tmp_path):
  """Through run.py: one `run.py: error:` line naming the closest valid names, no traceback, no output."""
  r = subprocess.run([sys.executable, 'run.py', '--config', 'configs/compile.py', f'--config.out={tmp_path / "out"}',
                      '--config.train=configs/frame.py', '--config.topology=v5e-12'],
                     cwd=ROOT, capture_output=True, text=True, env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
                     timeout=600, check=False)
  errors = [line for line in r.stderr.splitlines() if line.startswith('run.py: error:')]
  assert r.returncode != 0 and len(errors) == 1 and 'Traceback' not in r.stderr, r.stderr[-2000:]
  assert "unknown TPU topology 'v5e-12'; closest: v5e-1, v5e-4, v5e-8" in errors[0]
  assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('topology, overrides, message', [
    ('v5e-32', 'mesh.fsdp=6,mesh.data=1', 'mesh data=1 x fsdp=6 x tensor=1 does not divide the 32 devices of '
     'v5e-32; valid mesh.fsdp with data=1, tensor=1: 1, 2, 4, 8, 16, 32 or -1'),
    ('v5e-16', 'batch_size=24,mesh.fsdp=-1', 'not divisible by the data-parallel size 16 (mesh data x fsdp = 1 x 16); '
     'closest valid batch_size: 16, 32'),
    # below the chips, a batch that divides them is valid too (fsdp = batch, 'tensor' takes the rest)
    ('v5e-32', 'batch_size=12', 'not divisible by the data-parallel size 32 (mesh data x fsdp = 1 x 32); closest '
     'valid batch_size: 8, 32'),
    ('v5e-8', 'mesh.fdsp=8', "'mesh.fdsp=8' is not KEY=VALUE of a field of " + os.path.join(ROOT, 'configs/frame.py')
     + '; closest: mesh.fsdp'),
])
def test_bad_mesh_batch_or_override_names_the_valid_values(tmp_path, topology, overrides, message):
  c = compile_config(tmp_path, train=os.path.join(ROOT, 'configs/frame.py'), topology=topology, overrides=overrides)
  with pytest.raises(ValueError) as e:
    job.run(c)
  assert message in str(e.value)
  assert not (tmp_path / 'out').exists()


def test_effort_outside_xla_range_is_refused(tmp_path):
  c = compile_config(tmp_path, train=os.path.join(ROOT, 'configs/frame.py'), overrides='mesh.fsdp=8', effort=-2.0)
  with pytest.raises(ValueError, match=r"effort -2.0 is outside XLA's range -1.0 .. 1.0"):
    job.run(c)
  assert not (tmp_path / 'out').exists()


def test_topology_names_match_cloud_tpu_and_name_the_closest():
  assert chips.parse('v4-8').chips == 4 and chips.parse('v5p-128').chips == 64
  assert chips.parse('v5e-32').shape == (4, 8) and chips.parse('v5litepod-256').chips == 256
  assert chips.parse('v6e-8', num_slices=2).chips == 16
  with pytest.raises(ValueError, match='closest: v5e-1, v5e-4, v5e-8'):
    chips.parse('v5e-12')


def test_report_json_written_atomically(tmp_path, tpu_devices):
  """The job end to end in-process on the tiny frame config: one line per program and compile.json."""
  job.run(compile_config(tmp_path, train=os.path.join(ROOT, 'configs/frame.py:tiny'), overrides=TINY,
                         programs='encode', effort=-1.0))
  result = json.loads((tmp_path / 'out' / 'compile.json').read_text())
  assert result['effort'] == -1.0
  (r,) = result['programs']
  assert r['program'] == 'encode' and r['fits'] and r['devices'] == 8 and r['flops'] > 0
  # weights replicated, the batch split: each device encodes its own images, nothing is gathered (before
  # latents.encode_batch stacked batch-major, XLA gathered the batch and every device encoded all of it)
  assert sum(v['count'] for v in r['collectives'].values()) == 0
  assert result['device_kind'] == 'TPU v5 lite'


def test_libtpu_alone_keeps_a_cpu_host_on_the_cpu_allocator_set_up(monkeypatch):
  """The tpu extra installs libtpu everywhere; run.py's allocator set-up (tgvac_jax/host.py) must still see a host
  without TPU chips (JAX's own PCI check) and without a GPU plugin as CPU-only."""
  from jax._src import hardware_utils  # pylint: disable=import-outside-toplevel  (JAX's chip check, the reference)
  from tgvac_jax import host  # pylint: disable=import-outside-toplevel
  monkeypatch.delenv('JAX_PLATFORMS', raising=False)
  if any(importlib.util.find_spec(m) for m in ('jax_plugins', 'jax_cuda12_plugin', 'jax_cuda13_plugin')):
    pytest.skip('a GPU plugin is installed')
  no_chips = hardware_utils.num_available_tpu_chips_and_device_id()[0] == 0
  assert host._cpu_only() == no_chips  # pylint: disable=protected-access


@pytest.mark.slow
@pytest.mark.parametrize('train, topology, overrides', [
    ('configs/frame_v5e_32.py', 'v5e-32', ''),                            # as it ships
    ('configs/motion.py', 'v5e-8', 'mesh.fsdp=8,remat=full'),             # the motion stage at the paper's batch
])
def test_paper_scale_step_fits(tmp_path, train, topology, overrides):
  """SD-1.5's train steps at the paper's sizes compiled for a named slice (docs/scale.md's table): they fit, and
  their model FLOPs are near the analytic count (SD-1.5's UNet: ~180 GFLOP forward per 256 px image, FACTS.md;
  forward + backward ~3x)."""
  job.run(compile_config(tmp_path, train=os.path.join(ROOT, train), topology=topology, overrides=overrides,
                         programs='train_step'))
  (r,) = json.loads((tmp_path / 'out' / 'compile.json').read_text())['programs']
  assert r['fits'], r
  images = r['examples'] * (14 if 'motion' in train else 1)
  assert r['model_flops'] > 2 * 180e9 * images  # at least the forward and the input gradients of the frozen UNet


def test_a_step_over_hbm_gets_one_line_with_what_would_fit():
  """The advice line's arithmetic: over by hbm - capacity; grad_accum halves the activations until they fit in what
  the state leaves free (here 20 GiB of activations, 16 - 4 GiB free: 2 micro-steps)."""
  from tgvac_jax.compile.report import GIB, KINDS, Report  # pylint: disable=import-outside-toplevel
  none = {k: {'count': 0, 'bytes': 0} for k in KINDS}
  r = Report(program='train_step', topology='v5e-8', devices=8, examples=16, argument_bytes=4 * GIB,
             output_bytes=0, alias_bytes=0, temp_bytes=20 * GIB, code_bytes=0, hbm_bytes=24 * GIB,
             hbm_capacity=16 * GIB, flops=1e12, model_flops=1e12, compiled_flops=1e12, bytes_accessed=1e9,
             collectives=none, compute_s=1.0, memory_s=0.5, ici_s=0.1,
             compile_s={'trace': 1.0, 'lower': 1.0, 'compile': 1.0}, peak_flops=197e12)
  config = motion.get_config()
  line = job.advice(r, config)
  assert 'over by 8.00 GiB per device' in line and 'remat=full' in line and 'optim.grad_accum=2 ' in line
  assert 'DOES NOT FIT (over by 8.00 GiB)' in r.line()
  assert job.advice(dataclasses.replace(r, hbm_bytes=15 * GIB), config) == ''


def test_windowed_einsum_loops_count_every_trip(tpu_devices):
  """An FSDP-split weight times a batch-split input: TPU's partitioner fuses the weight's all-gather into the product
  as a loop of collective-permutes (windowed einsum) with no known_trip_count. Each device must receive the 7
  shards it lacks, so it sends at least 7/8 of the weight; counted once per loop (as XLA's cost_analysis counts a
  loop's FLOPs) it would seem to send 5/8. XLA's FLOPs of the same program show that undercount."""
  mesh = Mesh(np.asarray(tpu_devices), ('fsdp',))
  split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('fsdp'))
  x = jax.ShapeDtypeStruct((8 * 1024, 2048), jnp.bfloat16, sharding=split)
  w = jax.ShapeDtypeStruct((2048, 2048), jnp.bfloat16, sharding=split)
  compiled = jax.jit(lambda x, w: jnp.tanh(x @ w)).lower(x, w).compile()
  hlo = compiled.as_text()
  assert ' while(' in hlo and 'windowed_dot_general' in hlo
  c = collectives(hlo, 8)
  weight = 2048 * 2048 * 2
  sent = sum(v['bytes'] for v in c.values())
  assert 7 / 8 * weight <= sent <= 2 * weight
  assert 8 * flops(compiled) < 0.6 * 2 * x.shape[0] * 2048 * 2048

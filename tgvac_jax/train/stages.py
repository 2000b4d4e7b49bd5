"""The three training stages: which models they need, which weights they train, and where those weights start.

  frame  (eq. 2)  the whole 12-channel UNet (every `nnx.Param`); VAE and text encoder frozen
  motion (eq. 3)  the frame-stage UNet with motion modules inserted; only `MotionParam` trains, every spatial
                  weight, the VAE and the text encoder are frozen
  vae             a small `AutoencoderKL` from scratch (the embedded demo's VAE); real runs use SD's

Weights come from one of our pipeline checkpoints (`models/checkpoint.py` format) or, with
`init.from_scratch`, from tiny random models sized by `config.model`. Either way they arrive already sharded:
random init runs in one jit with `out_shardings`, and checkpoint tensors are read slice by slice from the
safetensors file straight into each device's shard, so an SD-size model is never whole on one host or device.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open

from tgvac_jax import text
from tgvac_jax.diffusion import scheduler_config
from tgvac_jax.files import atomic_folder
from tgvac_jax.models import checkpoint as ckpt
from tgvac_jax.models.clip import CLIPTextConfig, CLIPTextModel
from tgvac_jax.models.motion import MotionConfig, MotionParam
from tgvac_jax.models.params import flat_params, report_mismatch
from tgvac_jax.models.unet import UNet2DConditionModel, UNetConfig
from tgvac_jax.models.vae import AutoencoderKL, AutoencoderKLConfig
from tgvac_jax.train.sharding import param_shardings
from tgvac_jax.train.step import schedule_config

PIPELINE = ('unet', 'vae', 'text_encoder')
CONVERT_HINT = ('convert SD-1.5 with the conditioning channels grown to 12: '
                '`python -m convert.from_diffusers <diffusers SD folder> <out folder> --in-channels 12`')


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  trained: str                 # the component whose weights train
  trainable: type              # the variable type that trains in it
  components: tuple[str, ...]  # every model the stage needs
  video: bool                  # clips (B, F, H, W, C) instead of frames


STAGES = {
    'frame': Stage('frame', 'unet', nnx.Param, PIPELINE, video=False),
    'motion': Stage('motion', 'unet', MotionParam, PIPELINE, video=True),
    'vae': Stage('vae', 'vae', nnx.Param, ('vae',), video=False),
}


def get_stage(config) -> Stage:
  if config.stage not in STAGES:
    raise ValueError(f'stage {config.stage!r} is not one of {sorted(STAGES)}')
  return STAGES[config.stage]


class StageError(ValueError):
  """Weights that do not fit the stage (a 4-channel UNet for the frame stage, ...)."""


# ------------------------------------------------------------------------------------------- model configs

def scratch_configs(model, size: int, vocab_size: int, motion: bool
                    ) -> tuple[UNetConfig, AutoencoderKLConfig, CLIPTextConfig]:
  """Tiny TGVAC model configs from a `config.model` block (the demo's and the trainer's; absent fields take the
  trainer's defaults): a 12-channel UNet (with motion modules when `motion`), a VAE and a CLIP text encoder."""
  get = lambda k, d: model.get(k, d)  # noqa: E731
  groups = get('norm_groups', 16)
  vae_channels = tuple(get('vae_channels', (32, 64, 64)))
  vae_cfg = AutoencoderKLConfig(block_out_channels=vae_channels, norm_num_groups=groups,
                                latent_channels=get('latent_channels', 4),
                                down_block_types=('DownEncoderBlock2D',) * len(vae_channels),
                                up_block_types=('UpDecoderBlock2D',) * len(vae_channels), sample_size=size)
  width = get('text_width', 64)
  text_cfg = CLIPTextConfig(vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width,
                            projection_dim=width, num_hidden_layers=get('text_layers', 2), num_attention_heads=4,
                            bos_token_id=0, eos_token_id=1, pad_token_id=1)
  unet_channels = tuple(get('unet_channels', (32, 64)))
  n = len(unet_channels)
  unet_cfg = UNetConfig(in_channels=3 * vae_cfg.latent_channels, out_channels=vae_cfg.latent_channels,
                        block_out_channels=unet_channels,
                        down_block_types=('CrossAttnDownBlock2D',) * (n - 1) + ('DownBlock2D',),
                        up_block_types=('UpBlock2D',) + ('CrossAttnUpBlock2D',) * (n - 1),
                        layers_per_block=get('layers_per_block', 1), norm_num_groups=groups,
                        cross_attention_dim=width, attention_head_dim=get('attention_head_dim', 4),
                        sample_size=size // vae_cfg.downsample_factor,
                        motion=MotionConfig(num_attention_heads=get('motion_heads', 4), norm_num_groups=groups,
                                            norm_across_frames=bool(get('motion_norm_across_frames', False)))
                        if motion else None)
  return unet_cfg, vae_cfg, text_cfg


def _makers(configs: dict, seed: int, dtype) -> dict[str, Callable[[], nnx.Module]]:
  classes = {'unet': UNet2DConditionModel, 'vae': AutoencoderKL, 'text_encoder': CLIPTextModel}
  return {name: (lambda c=cfg, cls=classes[name], i=i: cls(c, dtype=dtype, rngs=nnx.Rngs(seed + i)))
          for i, (name, cfg) in enumerate(configs.items())}


# ------------------------------------------------------------------------------------------- tokenizer

def tokenizer_dir(config) -> str:
  """The tokenizer folder: the init checkpoint's, or a character-level one in the workdir for scratch models."""
  if config.init.from_scratch or not config.init.checkpoint:
    return os.path.join(os.path.abspath(config.workdir), 'tokenizer')
  return os.path.join(config.init.checkpoint, 'tokenizer')


def ensure_tokenizer(config) -> tuple[str, int]:
  """(folder, vocabulary size); writes the character tokenizer for scratch models (once, atomically: processes
  sharing a file system may race, the loser finds it written)."""
  folder = tokenizer_dir(config)
  if config.init.from_scratch and not os.path.isdir(folder):
    try:
      atomic_folder(folder, text.write_char_tokenizer, overwrite=False)
    except OSError:  # FileExistsError: another process wrote it first
      if not os.path.isdir(folder):
        raise
  if not os.path.isdir(folder):
    raise FileNotFoundError(f'{folder}: no tokenizer folder (the init checkpoint must have tokenizer/)')
  return folder, len(text.load_tokenizer(folder))


# ------------------------------------------------------------------------------------------- checks

def _component_config(folder: Path, name: str) -> dict:
  if not (folder / name).is_dir():
    raise StageError(f'{folder}: no {name}/ folder (a pipeline checkpoint has unet/ vae/ text_encoder/ '
                     f'tokenizer/)')
  return ckpt.read_config(folder / name)


def latent_size(config, configs: dict[str, dict]) -> int:
  """Rows of the smallest images the train step splits over the mesh's 'tensor' axis: the latents (`data.size`
  over the VAE's downsampling; `configs` from `check_init`, {} from scratch), the frames in the vae stage."""
  if get_stage(config).name == 'vae':
    return int(config.data.size)
  channels = configs['vae']['block_out_channels'] if configs else config.model.vae_channels
  return int(config.data.size) // 2 ** (len(channels) - 1)


def check_init(config) -> dict[str, dict]:
  """All checks on the starting weights, before anything is built: {component: its config.json dict}."""
  stage = get_stage(config)
  if config.init.from_scratch:
    if config.init.motion_adapter:
      raise StageError('init.motion_adapter needs a frame-stage checkpoint, not init.from_scratch')
    return {}
  if not config.init.checkpoint:
    raise StageError(f'stage {stage.name!r}: set init.checkpoint (a pipeline checkpoint folder) or '
                     'init.from_scratch=True')
  folder = Path(config.init.checkpoint)
  if not folder.is_dir():
    raise FileNotFoundError(f'init.checkpoint {folder}: no such folder')
  configs = {name: _component_config(folder, name) for name in stage.components}
  if stage.name == 'vae':
    return configs
  if not (folder / 'tokenizer').is_dir():
    raise StageError(f'{folder}: no tokenizer/ folder')
  unet, lat = configs['unet'], configs['vae'].get('latent_channels', 4)
  if unet.get('in_channels', 4) != 3 * lat:
    if stage.name == 'frame':
      raise StageError(f'{folder}/unet takes {unet.get("in_channels", 4)} input channels; the frame stage needs '
                       f'{3 * lat} (noisy latent + occluded frame + visible mask latents): {CONVERT_HINT}')
    raise StageError(f'{folder} is not a frame-stage checkpoint: its UNet takes {unet.get("in_channels", 4)} '
                     f'input channels, not {3 * lat}; train the frame stage first (configs/frame.py) and give '
                     'its exported model folder as init.checkpoint')
  if stage.name == 'frame' and unet.get('motion'):
    raise StageError(f'{folder}/unet has motion modules: the frame stage trains a spatial UNet (give the frame '
                     'stage its own export, or train this one with configs/motion.py)')
  if stage.name == 'motion':
    check_schedule(config, folder)
  return configs


def check_schedule(config, folder: Path) -> None:
  """The motion stage trains motion modules on a frozen frame-stage UNet, which only denoises under the noise
  process it learnt: `config.diffusion` must be the checkpoint's scheduler (SD-1.5's when it has none). Not
  inherited silently: the config would then no longer say what was trained."""
  theirs = scheduler_config.read(folder).schedule
  ours = schedule_config(config)
  diff = [f'{f.name} {getattr(ours, f.name)!r} vs {getattr(theirs, f.name)!r}'
          for f in dataclasses.fields(ours) if getattr(ours, f.name) != getattr(theirs, f.name)]
  if diff:
    raise StageError(f'config.diffusion differs from the scheduler of init.checkpoint {folder} '
                     f'({"; ".join(diff)}; config vs checkpoint): the motion stage must keep the frame stage\'s '
                     'noise schedule; set config.diffusion to match it')


# ------------------------------------------------------------------------------------------- building

def _remat(config, component: str) -> dict:
  """remat='full' recomputes every block of the trained model in the backward pass; frozen models have no
  backward pass."""
  return {'remat': config.remat == 'full' and component == get_stage(config).trained}


def _motion_config(config, unet_config: dict, motion_init=None) -> MotionConfig:
  """The motion stage's motion modules: the checkpoint's own, or new ones (AnimateDiff v2 shape) for a frame
  checkpoint; remat='motion' recomputes them in the backward pass.

  The GroupNorm of new modules is `init.motion_norm_across_frames`'s. Loaded motion weights (the checkpoint's, or
  those of `init.motion_adapter`, whose loader says `motion_init.norm_across_frames`) keep the norm they were
  trained with: another norm would be another function. Asking for across frames on weights trained per frame is
  an error, not a silent choice."""
  m = unet_config.get('motion')
  across = bool(config.init.motion_norm_across_frames)
  mc = (MotionConfig.from_dict(m) if m else
        MotionConfig(num_attention_heads=config.init.motion_heads,
                     norm_num_groups=unet_config.get('norm_num_groups', 32), norm_across_frames=across))
  trained = getattr(motion_init, 'norm_across_frames', None)  # a loader that does not say leaves the config's
  source = 'init.motion_adapter' if trained is not None else 'init.checkpoint' if m else None
  if trained is not None:
    mc = dataclasses.replace(mc, norm_across_frames=bool(trained))
  if source and across and not mc.norm_across_frames:
    raise StageError(f'init.motion_norm_across_frames=True is for new motion modules, and {source} brings motion '
                     'weights trained per frame, which keep their norm. Leave it False to keep training them per '
                     'frame, or start from a checkpoint whose motion modules were re-imported across frames (python -m '
                     'convert.animatediff in BASE ADAPTER OUT --norm across-frames)')
  return dataclasses.replace(mc, remat=config.remat == 'motion')


def _sharded_from_file(module: nnx.Module, path: Path, shardings, skip: type | None, what: str) -> None:
  """Fills `module`'s abstract parameters (all but those of type `skip`) from a safetensors file, each device
  reading only its own slice."""
  ours = {k: v for k, v in flat_params(module).items() if skip is None or not isinstance(v, skip)}
  with safe_open(str(path), framework='numpy') as f:
    shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    want = {k: tuple(v.get_value().shape) for k, v in ours.items()}
    report_mismatch(what, set(want) - set(shapes), set(shapes) - set(want),
                    [f'{k} {shapes[k]} vs model {want[k]}' for k in set(want) & set(shapes) if shapes[k] != want[k]])
    for k, var in ours.items():
      spec = shardings(jax.ShapeDtypeStruct(want[k], jnp.float32))
      dtype = var.get_value().dtype
      sl = f.get_slice(k)
      read = (lambda idx, sl=sl, dtype=dtype: np.asarray(sl[idx] if idx else sl[:], dtype))
      var.set_value(jax.make_array_from_callback(want[k], spec, read))


def build_models(config, mesh, configs: dict[str, dict], vocab_size: int,
                 motion_init: Callable[[nnx.Module], None] | None = None, *, abstract: bool = False
                 ) -> dict[str, nnx.Module]:
  """The stage's models, every weight a sharded jax.Array (see the module docstring). `abstract`: the same
  modules with shapes only (nothing initialised or read; ahead-of-time compiles, `tgvac_jax/compile/`)."""
  stage = get_stage(config)
  dtype = jnp.dtype(config.compute_dtype)
  shardings = functools.partial(param_shardings, mesh=mesh, min_size=config.mesh.min_shard_size)
  if config.init.from_scratch:
    unet, vae, te = scratch_configs(config.model, config.data.size, vocab_size, stage.name == 'motion')
    motion = unet.motion and dataclasses.replace(unet.motion, remat=config.remat == 'motion')
    unet = dataclasses.replace(unet, motion=motion, **_remat(config, 'unet'))
    vae = dataclasses.replace(vae, **_remat(config, 'vae'))
    te = dataclasses.replace(te, **_remat(config, 'text_encoder'))
    all_cfgs = {'unet': unet, 'vae': vae, 'text_encoder': te}
    makers = _makers({k: all_cfgs[k] for k in stage.components}, config.seed, dtype)
    return {name: nnx.eval_shape(make) if abstract else _jit_init(make, shardings) for name, make in makers.items()}
  folder = Path(config.init.checkpoint)
  out = {}
  for name in stage.components:
    d = configs[name]
    overrides = dict(_remat(config, name))
    fresh = None
    if name == 'unet' and stage.name == 'motion':
      overrides['motion'] = _motion_config(config, d, motion_init)
      fresh = MotionParam if not d.get('motion') else None
    module, _ = ckpt.build(d['_class'], d, dtype=dtype, abstract=True, **overrides)
    if abstract:
      out[name] = module
      continue
    if fresh is not None:  # new motion modules: random (proj_out zero: identity), initialised sharded
      make = lambda d=d, o=overrides: ckpt.build(  # noqa: E731
          d['_class'], d, dtype=dtype, rngs=nnx.Rngs(config.seed), **o)[0]
      nnx.update(module, _jit_init_state(make, shardings, MotionParam))
    _sharded_from_file(module, folder / name / ckpt.WEIGHTS_NAME, shardings, fresh, f'{folder / name}')
    out[name] = module
  if motion_init is not None:  # e.g. AnimateDiff weights (convert/animatediff.py, passed in by the job entry)
    motion_init(out['unet'])
    motion = nnx.state(out['unet'], MotionParam)
    nnx.update(out['unet'], jax.device_put(motion, shardings(motion)))
  return out


# Random init runs once: compiling it without LLVM's expensive passes halves its compile time on CPU.
INIT_COMPILER_OPTIONS = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


def _jit_init_state(make: Callable[[], nnx.Module], shardings, filter=nnx.Param) -> nnx.State:
  """The `filter` state of `make()`, computed in one jit straight into its shards (`shardings(abstract)`)."""
  abstract = nnx.state(nnx.eval_shape(make), filter)
  return jax.jit(lambda: nnx.state(make(), filter), out_shardings=shardings(abstract),
                 compiler_options=INIT_COMPILER_OPTIONS)()


def _jit_init(make: Callable[[], nnx.Module], shardings) -> nnx.Module:
  graphdef, _ = nnx.split(nnx.eval_shape(make))
  return nnx.merge(graphdef, _jit_init_state(make, shardings, ...))

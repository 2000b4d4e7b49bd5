"""diffusers / transformers folders -> our checkpoint.

    python -m convert.from_diffusers SRC OUT [--in-channels 12] [--verify]

SRC is a diffusers Stable Diffusion folder (`unet/ vae/ text_encoder/ tokenizer/ scheduler/`) or one component
folder (detected by its config.json: diffusers `_class_name` or transformers `architectures`). Weights are read
from `*.safetensors` (standard name, else a sharded index, else the only one), else `*.bin` through
`torch.load(weights_only=True)`. OUT gets one folder per converted component in our format
(`tgvac_jax.models.checkpoint`); `tokenizer/` is copied as is and `scheduler/scheduler_config.json` becomes ours
(a DDIMScheduler config, `tgvac_jax.diffusion.scheduler_config`: the betas, prediction_type and the settings DDIM
shares are kept, what DDIM does not use is reported as dropped; a scheduler whose betas we cannot reproduce is an
error). A missing tokenizer/ or scheduler/ is reported and skipped (our pipeline needs the tokenizer only for text
prompts; no scheduler means SD-1.5's). Other sub-folders of unsupported classes (safety_checker,
feature_extractor) are skipped with a note.

`--in-channels N` grows the UNet's conv_in to N input channels (new ones zero). `--verify` runs the PyTorch model
(`from_pretrained` on SRC) and ours on the same random inputs and prints `verify <component> max_abs=<x> rel=<y>`;
a relative error above `--verify-tol` is an error. Any error (missing component, missing weights, unmatched keys)
is reported in one message and nothing is written.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from convert.rules import ConversionError
from convert.verify import Jitted, errors, quiet_libraries, run_cli

REQUIRED = ('unet', 'vae', 'text_encoder')
COPIED = ('tokenizer', 'scheduler')

# class -> (converter module, weights file stem)
DIFFUSERS_CLASSES = {'UNet2DConditionModel': 'convert.unet', 'AutoencoderKL': 'convert.vae'}
TRANSFORMERS_CLASSES = {'CLIPTextModel': 'convert.clip', 'CLIPVisionModelWithProjection': 'convert.clip'}
WEIGHT_STEMS = ('diffusion_pytorch_model', 'model', 'pytorch_model')


class SourceError(ValueError):
  """The source folder is not a (complete) diffusers / transformers folder."""


def component_class(folder: Path) -> str | None:
  """The model class named by `folder/config.json` (diffusers `_class_name`, transformers `architectures[0]`)."""
  path = folder / 'config.json'
  if not path.is_file():
    return None
  d = json.loads(path.read_text())
  if '_class_name' in d:
    return d['_class_name']
  arch = d.get('architectures') or []
  return arch[0] if arch else None


def is_supported(cls: str | None) -> bool:
  return cls in DIFFUSERS_CLASSES or cls in TRANSFORMERS_CLASSES


def _weight_files(folder: Path) -> list[Path]:
  for ext in ('safetensors', 'bin'):
    files = sorted(folder.glob(f'*.{ext}'))
    if not files:
      continue
    for stem in WEIGHT_STEMS:
      if (folder / f'{stem}.{ext}').is_file():
        return [folder / f'{stem}.{ext}']
      index = folder / f'{stem}.{ext}.index.json'
      if index.is_file():
        shards = sorted(set(json.loads(index.read_text())['weight_map'].values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
          raise SourceError(f'{folder}: shards {missing} named in {index.name} are missing')
        return [folder / s for s in shards]
    if len(files) == 1:
      return files
    raise SourceError(f'{folder}: several weight files {[f.name for f in files]} and no standard one '
                      f'({", ".join(s + "." + ext for s in WEIGHT_STEMS)}); keep one')
  raise SourceError(f'{folder}: component has no weights (*.safetensors or *.bin)')


def read_state_dict(folder: Path) -> dict[str, np.ndarray]:
  """All tensors of a component folder as numpy (float16/bfloat16 kept; converters cast)."""
  out: dict[str, np.ndarray] = {}
  for f in _weight_files(folder):
    if f.suffix == '.safetensors':
      import safetensors.numpy  # pylint: disable=import-outside-toplevel
      out.update(safetensors.numpy.load_file(str(f)))
    else:
      import torch  # pylint: disable=import-outside-toplevel
      sd = torch.load(str(f), map_location='cpu', weights_only=True)
      sd = sd.get('state_dict', sd) if isinstance(sd, Mapping) else sd
      out.update({k: v.detach().float().numpy() for k, v in sd.items() if hasattr(v, 'detach')})
  return out


def convert_component(folder: Path, *, in_channels: int | None = None, **kw):
  """(class name, our module, config) of one diffusers/transformers component folder."""
  cls = component_class(folder)
  if not is_supported(cls):
    raise SourceError(f'{folder}: unsupported or missing model class {cls!r} in config.json; supported: '
                      f'{sorted(DIFFUSERS_CLASSES) + sorted(TRANSFORMERS_CLASSES)}')
  config_dict = json.loads((folder / 'config.json').read_text())
  sd = read_state_dict(folder)
  conv = importlib.import_module(DIFFUSERS_CLASSES.get(cls) or TRANSFORMERS_CLASSES[cls])
  if cls == 'UNet2DConditionModel':
    module, config = conv.from_torch(sd, config_dict, in_channels, **kw)
  else:
    module, config = conv.from_torch(sd, config_dict, **kw)
  return cls, module, config


# --- verification ------------------------------------------------------------------------------------------------
def verify_component(cls: str, folder: Path, module, *, seed: int = 0) -> tuple[float, float]:
  """(max_abs, rel) between PyTorch (`from_pretrained(folder)`, fp32) and our module on the same random input."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  module = Jitted(module)
  with torch.no_grad():
    if cls == 'AutoencoderKL':
      from diffusers import AutoencoderKL  # pylint: disable=import-outside-toplevel
      ref = AutoencoderKL.from_pretrained(folder).float().eval()
      size = 8 * module.config.downsample_factor
      x = rng.uniform(-1, 1, (1, module.config.in_channels, size, size)).astype(np.float32)
      theirs = ref(torch.from_numpy(x), sample_posterior=False).sample.numpy()
      ours = np.asarray(module(jnp.asarray(x.transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2)
    elif cls == 'UNet2DConditionModel':
      from diffusers import UNet2DConditionModel  # pylint: disable=import-outside-toplevel
      ref = UNet2DConditionModel.from_pretrained(folder).float().eval()
      c = module.config
      size = 2 * c.downsample_factor
      x = rng.standard_normal((1, ref.config.in_channels, size, size)).astype(np.float32)
      extra = rng.standard_normal((1, c.in_channels - x.shape[1], size, size)).astype(np.float32)
      ctx = rng.standard_normal((1, 77, c.cross_attention_dim)).astype(np.float32)
      t = 500
      theirs = ref(torch.from_numpy(x), t, torch.from_numpy(ctx)).sample.numpy()
      x_ours = np.concatenate([x, extra], axis=1).transpose(0, 2, 3, 1)  # grown channels must be ignored
      ours = np.asarray(module(jnp.asarray(x_ours), jnp.asarray([t]), jnp.asarray(ctx))).transpose(0, 3, 1, 2)
    elif cls == 'CLIPTextModel':
      from transformers import CLIPTextModel  # pylint: disable=import-outside-toplevel
      ref = CLIPTextModel.from_pretrained(folder).float().eval()
      c = module.config
      n = c.max_position_embeddings
      ids = rng.integers(0, c.vocab_size, (1, n))
      if c.eos_token_id is not None and c.eos_token_id < c.vocab_size:
        ids[ids == c.eos_token_id] = 0
        ids[0, n // 2] = c.eos_token_id
      theirs = ref(torch.from_numpy(ids)).last_hidden_state.numpy()
      ours = np.asarray(module(jnp.asarray(ids)).last_hidden_state)
    elif cls == 'CLIPVisionModelWithProjection':
      from transformers import CLIPVisionModelWithProjection  # pylint: disable=import-outside-toplevel
      ref = CLIPVisionModelWithProjection.from_pretrained(folder).float().eval()
      c = module.config
      x = rng.standard_normal((1, c.num_channels, c.image_size, c.image_size)).astype(np.float32)
      theirs = ref(torch.from_numpy(x)).image_embeds.numpy()
      ours = np.asarray(module(jnp.asarray(x.transpose(0, 2, 3, 1))).image_embeds)
    else:
      raise ConversionError(f'verify: no check for {cls}')
  return errors(ours, theirs)


# --- folders ------------------------------------------------------------------------------------------------------
def read_scheduler(folder: Path, log=print):
  """Our `Scheduler` of a diffusers scheduler/ folder (what `DDIMScheduler.from_pretrained` makes of it); the
  fields DDIM does not use are logged as dropped."""
  from tgvac_jax.diffusion import scheduler_config  # pylint: disable=import-outside-toplevel
  path = folder / scheduler_config.CONFIG_NAME
  if not path.is_file():
    raise SourceError(f'{folder}: no {scheduler_config.CONFIG_NAME}')
  scheduler, dropped = scheduler_config.read_file(path)
  cls = json.loads(path.read_text()).get('_class_name')
  log(f'scheduler: {cls} -> DDIMScheduler (prediction_type {scheduler.schedule.prediction_type}, '
      f'beta_schedule {scheduler.schedule.beta_schedule})' + (f'; dropped {", ".join(dropped)}' if dropped else ''))
  return scheduler


def plan(src: Path) -> tuple[dict[str, Path], dict[str, Path], list[str]]:
  """({name: component folder to convert}, {name: folder to copy}, notes) of a pipeline folder, or
  ({'': src}, {}, []) for a single component folder."""
  if not src.is_dir():
    raise SourceError(f'{src}: not a folder')
  if is_supported(component_class(src)):
    return {'': src}, {}, []
  subdirs = {p.name: p for p in sorted(src.iterdir()) if p.is_dir() and not p.name.startswith('.')}
  if (src / 'config.json').is_file() or not ((src / 'model_index.json').is_file() or set(REQUIRED) & set(subdirs)):
    raise SourceError(f'{src}: neither a diffusers Stable Diffusion folder ({"/ ".join(REQUIRED + COPIED)}/) nor a '
                      f'supported component folder (config.json of class {sorted(DIFFUSERS_CLASSES)} or '
                      f'{sorted(TRANSFORMERS_CLASSES)}); found class {component_class(src)!r}')
  missing = [name for name in REQUIRED if name not in subdirs]
  if missing:
    raise SourceError(f'{src}: missing component{"s" if len(missing) > 1 else ""} '
                      f'{", ".join(m + "/" for m in missing)} (a Stable Diffusion folder has '
                      f'{" ".join(n + "/" for n in REQUIRED + COPIED)})')
  convert, copy, notes = {}, {}, []
  for name, path in subdirs.items():
    cls = component_class(path)
    if name in COPIED:
      copy[name] = path
    elif is_supported(cls):
      convert[name] = path
    else:
      notes.append(f'skipped {name}/ (class {cls!r} not converted)')
  for name in REQUIRED:
    if name not in convert:
      raise SourceError(f'{src / name}: unsupported or missing model class {component_class(src / name)!r} '
                        f'in config.json')
  for name in COPIED:
    if name not in copy:
      notes.append(f'no {name}/ in {src}: not copied')
  return convert, copy, notes


def convert_folder(src: str | Path, out: str | Path, *, in_channels: int | None = None, verify: bool = False,
                   verify_tol: float = 1e-4, log=print) -> dict[str, Any]:
  """Converts SRC (pipeline or component folder) into our checkpoint at OUT, all or nothing.

  Returns {name: (max_abs, rel)} of the verification (empty without `verify`).
  """
  from tgvac_jax.models import checkpoint  # pylint: disable=import-outside-toplevel
  src, out = Path(src), Path(out)
  convert, copy, notes = plan(src)
  if in_channels is not None and not any(component_class(f) == 'UNet2DConditionModel' for f in convert.values()):
    raise SourceError(f'--in-channels applies to a UNet; {src} has none')
  for note in notes:
    log(note)
  scheduler = None
  if 'scheduler' in copy:
    scheduler = read_scheduler(copy.pop('scheduler'), log)
  modules, results = {}, {}
  for name, folder in convert.items():
    label = name or folder.name
    unet = component_class(folder) == 'UNet2DConditionModel'
    cls, module, _ = convert_component(folder, in_channels=in_channels if unet else None)
    log(f'converted {label} ({cls})')
    if verify:
      max_abs, rel = verify_component(cls, folder, module)
      log(f'verify {label} max_abs={max_abs:.3g} rel={rel:.3g}')
      results[label] = (max_abs, rel)
      if not rel <= verify_tol:
        raise ConversionError(f'verify {label}: relative error {rel:.3g} > tolerance {verify_tol:g}')
    modules[name] = module
  if '' in modules:
    checkpoint.save_component(modules[''], out)
  else:
    checkpoint.save_pipeline(out, modules, copy, scheduler=scheduler)
  log(f'wrote {out}')
  return results


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog='python -m convert.from_diffusers', description=__doc__.split('\n\n')[0])
  p.add_argument('src', help='diffusers Stable Diffusion folder or one component folder')
  p.add_argument('out', help='our checkpoint folder (written atomically)')
  p.add_argument('--in-channels', type=int, default=None, help='grow the UNet conv_in to N input channels')
  p.add_argument('--verify', action='store_true', help='compare PyTorch and ours on random inputs')
  p.add_argument('--verify-tol', type=float, default=1e-4, help='largest accepted relative error (fp32)')
  args = p.parse_args(argv)
  if args.verify:
    quiet_libraries()
  return run_cli(lambda: convert_folder(args.src, args.out, in_channels=args.in_channels, verify=args.verify,
                                        verify_tol=args.verify_tol))


if __name__ == '__main__':
  sys.exit(main())

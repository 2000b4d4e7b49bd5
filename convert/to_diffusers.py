"""Our checkpoint -> diffusers / transformers folders that `from_pretrained` loads as is.

    python -m convert.to_diffusers CKPT OUT [--strict]

CKPT is one of our pipeline checkpoints (component folders next to `tokenizer/ scheduler/`) or a single
component folder. Each component becomes `config.json` + `diffusion_pytorch_model.safetensors` (diffusers: UNet,
VAE) or `model.safetensors` (transformers: CLIP); a pipeline's `scheduler/` is written as the DDIMScheduler config
our sampler follows (SD-1.5's when CKPT has none), other folders are copied as is, and a pipeline gets a
`model_index.json` listing what is there. Nothing is written on error; OUT is replaced atomically.

A video UNet (with motion modules) checks its export: diffusers' `UNetMotionModel` made from the written `unet/`
and `motion_adapter/` and our UNet run on one random clip, and the rel between them is printed. Above 1e-4 (a
model trained with per-frame motion norms: diffusers normalises across frames) it warns in one paragraph, what
differs, by how much and how to train for a faithful export (`convert.animatediff.check_export`); `--strict`
makes that an error, with nothing written.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from convert.rules import ConversionError
from convert.verify import run_cli

# our _class -> (converter module, library, weights file name)
CLASSES = {
    'UNet2DConditionModel': ('convert.unet', 'diffusers', 'diffusion_pytorch_model.safetensors'),
    'AutoencoderKL': ('convert.vae', 'diffusers', 'diffusion_pytorch_model.safetensors'),
    'CLIPTextModel': ('convert.clip', 'transformers', 'model.safetensors'),
    'CLIPVisionModelWithProjection': ('convert.clip', 'transformers', 'model.safetensors'),
}
TORCH_DTYPE = 'float32'


def _version(lib: str) -> str:
  try:
    return importlib.import_module(lib).__version__
  except ImportError:
    return '0.0.0'


def _is_component(folder: Path) -> bool:
  path = folder / 'config.json'
  return path.is_file() and '_class' in json.loads(path.read_text())


def export_component(src: Path, dst: Path, motion_dst: Path | None = None, *, strict: bool = False,
                     log=print) -> tuple[str, str]:
  """Writes one of our component folders as a diffusers/transformers folder; returns (library, class).

  A UNet with motion modules becomes a `UNet2DConditionModel` (its spatial weights) plus a diffusers
  `MotionAdapter` folder at `motion_dst` (default `dst/motion_adapter`), the pair `UNetMotionModel.from_unet2d`
  and `AnimateDiffPipeline` take; both are loaded back as diffusers users do and checked against ours
  (`check_export`: a warning, or with `strict` an error)."""
  import safetensors.numpy  # pylint: disable=import-outside-toplevel
  from tgvac_jax.models import checkpoint  # pylint: disable=import-outside-toplevel
  cls = checkpoint.read_config(src)['_class']
  if cls not in CLASSES:
    raise ConversionError(f'{src}: no diffusers/transformers export for class {cls!r} (known: {sorted(CLASSES)})')
  conv_name, lib, weights = CLASSES[cls]
  module, _ = checkpoint.load_component(src)
  state, config = importlib.import_module(conv_name).to_torch(module)
  dst.mkdir(parents=True, exist_ok=True)
  state = {k: np.ascontiguousarray(v) for k, v in state.items()}
  safetensors.numpy.save_file(state, str(dst / weights), metadata={'format': 'pt'})
  if lib == 'diffusers':
    config = {'_class_name': cls, '_diffusers_version': _version('diffusers'), **config}
  else:
    config = {**config, 'dtype': TORCH_DTYPE, 'transformers_version': _version('transformers')}
  (dst / 'config.json').write_text(json.dumps(config, indent=2, sort_keys=True) + '\n')
  if getattr(module.config, 'motion', None) is not None:
    from diffusers import MotionAdapter, UNet2DConditionModel  # pylint: disable=import-outside-toplevel

    from convert.animatediff import check_export, save_motion_adapter  # pylint: disable=import-outside-toplevel
    from convert.verify import quiet_libraries  # pylint: disable=import-outside-toplevel
    motion_dst = motion_dst or dst / 'motion_adapter'
    save_motion_adapter(module, str(motion_dst))
    quiet_libraries()
    check_export(module, UNet2DConditionModel.from_pretrained(str(dst)).eval(),
                 MotionAdapter.from_pretrained(str(motion_dst)).eval(), strict=strict, log=log)
  return lib, cls


def _model_index(out: Path, entries: dict[str, list]) -> None:
  index = {'_class_name': 'StableDiffusionPipeline', '_diffusers_version': _version('diffusers'), **entries}
  if (out / 'tokenizer').is_dir():
    index['tokenizer'] = ['transformers', 'CLIPTokenizer']
  sched = out / 'scheduler' / 'scheduler_config.json'
  if sched.is_file():
    index['scheduler'] = ['diffusers', json.loads(sched.read_text()).get('_class_name', 'DDIMScheduler')]
  index.update(safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)
  (out / 'model_index.json').write_text(json.dumps(index, indent=2, sort_keys=True) + '\n')


def write_scheduler(folder: Path, scheduler) -> None:
  """diffusers' scheduler/ folder: our `Scheduler` as the DDIMScheduler config `from_pretrained` loads."""
  from tgvac_jax.diffusion import scheduler_config  # pylint: disable=import-outside-toplevel
  config = {**scheduler_config.to_dict(scheduler.schedule, scheduler.ddim), '_diffusers_version': _version('diffusers')}
  folder.mkdir(parents=True, exist_ok=True)
  (folder / scheduler_config.CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + '\n')


def export_folder(ckpt: str | Path, out: str | Path, *, strict: bool = False, log=print) -> None:
  from tgvac_jax import files  # pylint: disable=import-outside-toplevel
  from tgvac_jax.diffusion import scheduler_config  # pylint: disable=import-outside-toplevel
  from tgvac_jax.models import checkpoint  # pylint: disable=import-outside-toplevel
  ckpt, out = Path(ckpt), Path(out)
  if not ckpt.is_dir():
    raise checkpoint.CheckpointError(f'{ckpt}: not a folder')
  if _is_component(ckpt):
    files.atomic_folder(out, lambda tmp: export_component(ckpt, tmp, strict=strict, log=log))
    log(f'wrote {out}')
    return
  subdirs = [p for p in sorted(ckpt.iterdir()) if p.is_dir() and not p.name.startswith('.')]
  components = [p for p in subdirs if _is_component(p)]
  if not components:
    raise checkpoint.CheckpointError(f'{ckpt}: no component folders (config.json with "_class"): not one of our '
                                     f'checkpoints')
  for p in subdirs:  # fail before writing anything
    if p in components and not (p / checkpoint.WEIGHTS_NAME).is_file():
      raise checkpoint.CheckpointError(f'{p}: component has no {checkpoint.WEIGHTS_NAME}')
  scheduler = scheduler_config.read(ckpt)

  def write(tmp: Path) -> None:
    entries = {}
    for p in subdirs:
      if p in components:
        lib, cls = export_component(p, tmp / p.name, motion_dst=tmp / 'motion_adapter', strict=strict, log=log)
        entries[p.name] = [lib, cls]
        log(f'exported {p.name} ({cls})')
      elif p.name != scheduler_config.SCHEDULER_DIR:
        shutil.copytree(p, tmp / p.name)
    write_scheduler(tmp / scheduler_config.SCHEDULER_DIR, scheduler)
    _model_index(tmp, entries)

  files.atomic_folder(out, write)
  log(f'wrote {out}')


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog='python -m convert.to_diffusers', description=__doc__.split('\n\n')[0])
  p.add_argument('ckpt', help='our checkpoint (pipeline or component folder)')
  p.add_argument('out', help='diffusers/transformers folder to write (atomically)')
  p.add_argument('--strict', action='store_true',
                 help='a video UNet whose export differs from ours by rel > 1e-4 is an error (nothing written)')
  args = p.parse_args(argv)
  return run_cli(lambda: export_folder(args.ckpt, args.out, strict=args.strict))


if __name__ == '__main__':
  sys.exit(main())

"""Our model checkpoint format: one folder per component.

```
<component>/config.json        {"_class": "AutoencoderKL", ...the config's to_dict(ours=True) fields}
<component>/model.safetensors  flat parameter paths of our module tree ('decoder.conv_in.kernel', ...) -> arrays
```
A pipeline checkpoint is a folder of such components (`unet/ vae/ text_encoder/`) next to a copied `tokenizer/`
and `scheduler/scheduler_config.json` (the training noise process in diffusers' format,
`diffusion/scheduler_config.py`). Writes go to a temporary sibling folder that is renamed into place at the end,
so a failed save never leaves a partial checkpoint. Loading builds the module from config.json (abstractly, without
a random init) and fills every parameter; a missing, extra or mis-shaped tensor is an error naming it.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import nnx

from tgvac_jax.diffusion import scheduler_config
from tgvac_jax.files import atomic_folder
from tgvac_jax.models.params import flat_params, report_mismatch

CONFIG_NAME = 'config.json'
WEIGHTS_NAME = 'model.safetensors'

# _class -> (module, model class, config class); `register` adds more.
_REGISTRY: dict[str, tuple[str, str, str]] = {
    'UNet2DConditionModel': ('tgvac_jax.models.unet', 'UNet2DConditionModel', 'UNetConfig'),
    'AutoencoderKL': ('tgvac_jax.models.vae', 'AutoencoderKL', 'AutoencoderKLConfig'),
    'CLIPTextModel': ('tgvac_jax.models.clip', 'CLIPTextModel', 'CLIPTextConfig'),
    'CLIPVisionModelWithProjection': ('tgvac_jax.models.clip', 'CLIPVisionModelWithProjection', 'CLIPVisionConfig'),
}


class CheckpointError(ValueError):
  """A checkpoint folder that is missing, incomplete or of an unknown class."""


def register(class_name: str, module: str, model_class: str, config_class: str) -> None:
  """Makes `load_component` know a model class (`module.model_class(config, dtype=, param_dtype=, rngs=)`, with
  `module.config_class.from_dict` and `config.to_dict(ours=True)`)."""
  _REGISTRY[class_name] = (module, model_class, config_class)


def _classes(class_name: str) -> tuple[type, type]:
  if class_name not in _REGISTRY:
    raise CheckpointError(f'unknown model class {class_name!r}; known: {sorted(_REGISTRY)}')
  mod, model_cls, config_cls = _REGISTRY[class_name]
  m = importlib.import_module(mod)
  return getattr(m, model_cls), getattr(m, config_cls)


def _class_name(module: nnx.Module) -> str:
  name = type(module).__name__
  if name not in _REGISTRY:
    raise CheckpointError(f'cannot save a {name}: not a registered model class ({sorted(_REGISTRY)})')
  return name


def _config_dict(module: nnx.Module, config=None) -> dict[str, Any]:
  name = _class_name(module)
  config = config if config is not None else module.config
  return {'_class': name, **config.to_dict(ours=True)}


def _write_component(module: nnx.Module, folder: Path, config=None) -> None:
  config_json = json.dumps(_config_dict(module, config), indent=2, sort_keys=True) + '\n'
  folder.mkdir(parents=True, exist_ok=True)
  # contiguous: safetensors.numpy writes the raw buffer, so a transposed view would be saved scrambled
  tensors = {path: np.ascontiguousarray(jax.device_get(var.get_value())) for path, var in flat_params(module).items()}
  safetensors.numpy.save_file(tensors, str(folder / WEIGHTS_NAME), metadata={'format': 'tgvac-jax'})
  (folder / CONFIG_NAME).write_text(config_json)


def save_component(module: nnx.Module, out: str | os.PathLike, *, config=None) -> Path:
  """Writes one component folder (config.json + model.safetensors) atomically; returns its path."""
  return atomic_folder(out, lambda tmp: _write_component(module, tmp, config))


def save_pipeline(out: str | os.PathLike, components: Mapping[str, nnx.Module],
                  copies: Mapping[str, str | os.PathLike] | None = None, *,
                  scheduler: scheduler_config.Scheduler | None = None) -> Path:
  """Writes `out/<name>/` for every component, copies `copies` (name -> source folder) as is and writes
  `scheduler` (the training noise process) as `out/scheduler/`, atomically."""
  def write(tmp: Path) -> None:
    for name, module in components.items():
      _write_component(module, tmp / name)
    for name, src in (copies or {}).items():
      shutil.copytree(src, tmp / name)
    if scheduler is not None:
      scheduler_config.write(tmp / scheduler_config.SCHEDULER_DIR, scheduler.schedule, scheduler.ddim)
  return atomic_folder(out, write)


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
  folder = Path(folder)
  path = folder / CONFIG_NAME
  if not path.is_file():
    raise CheckpointError(f'{folder}: no {CONFIG_NAME} (not a component checkpoint)')
  d = json.loads(path.read_text())
  if '_class' not in d:
    raise CheckpointError(f'{path}: no "_class" field (not one of our checkpoints)')
  return d


def build(class_name: str, config_dict: Mapping[str, Any], *, dtype=None, param_dtype=jnp.float32,
          abstract: bool = False, rngs: nnx.Rngs | None = None, **overrides):
  """(module, config) of a registered class from a config dict; `abstract`: shapes only (nnx.eval_shape)."""
  model_cls, config_cls = _classes(class_name)
  config = config_cls.from_dict({k: v for k, v in config_dict.items() if k != '_class'})
  if overrides:
    config = dataclasses.replace(config, **overrides)
  make = lambda: model_cls(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs or nnx.Rngs(0))  # noqa: E731
  return (nnx.eval_shape(make) if abstract else make()), config


def fill_params(module: nnx.Module, tensors: Mapping[str, np.ndarray], *, what: str = 'model') -> None:
  """Sets every nnx.Param of `module` from `tensors` (flat our-path keys), all or nothing; values are cast to the
  module's parameter dtype. Raises ConversionError naming missing, extra and mis-shaped keys."""
  ours = flat_params(module)
  missing = sorted(set(ours) - set(tensors))
  extra = sorted(set(tensors) - set(ours))
  shapes = {k: tuple(v.get_value().shape) for k, v in ours.items()}
  bad = sorted(f'{k} {tuple(np.shape(tensors[k]))} vs model {shapes[k]}'
               for k in set(ours) & set(tensors) if tuple(np.shape(tensors[k])) != shapes[k])
  report_mismatch(what, missing, extra, bad)
  for path, var in ours.items():
    var.set_value(jnp.asarray(tensors[path], dtype=var.get_value().dtype))


def load_component(folder: str | os.PathLike, *, dtype=None, param_dtype=jnp.float32, **overrides):
  """(module, config) from a component folder. `overrides`: config fields to change (remat, attention_impl, ...;
  not ones that change parameter shapes)."""
  folder = Path(folder)
  d = read_config(folder)
  weights = folder / WEIGHTS_NAME
  if not weights.is_file():
    raise CheckpointError(f'{folder}: no {WEIGHTS_NAME}')
  module, config = build(d['_class'], d, dtype=dtype, param_dtype=param_dtype, abstract=True, **overrides)
  other = nnx.state(module, nnx.Not(nnx.Param))
  if jax.tree.leaves(other):  # non-parameter state (buffers): needs a real init; parameters are overwritten
    module, config = build(d['_class'], d, dtype=dtype, param_dtype=param_dtype, **overrides)
  fill_params(module, safetensors.numpy.load_file(str(weights)), what=f'{d["_class"]} at {folder}')
  return module, config


def load_pipeline(folder: str | os.PathLike, names: tuple[str, ...] | None = None, **kwargs
                  ) -> dict[str, tuple[nnx.Module, Any]]:
  """{name: (module, config)} for every component folder (those with our config.json) in `folder`, or `names`."""
  folder = Path(folder)
  if not folder.is_dir():
    raise CheckpointError(f'{folder}: not a folder')
  if names is None:
    names = tuple(sorted(p.name for p in folder.iterdir() if (p / CONFIG_NAME).is_file()
                         and '_class' in json.loads((p / CONFIG_NAME).read_text())))
  return {name: load_component(folder / name, **kwargs) for name in names}

"""A pipeline checkpoint's `scheduler/scheduler_config.json`: the noise process the model was trained with.

The file is a diffusers `DDIMScheduler` config, so `DDIMScheduler.from_pretrained(<checkpoint>/scheduler)` loads
it and builds the same alphas_cumprod. Inference must use it: a v_prediction model sampled as epsilon (or with
other betas) gives garbage. Besides the training fields (betas, prediction_type) it holds our DDIM sampler's
scheduler settings (spacing, offset, final alpha, clipping); the number of steps and eta are chosen per call.

Reading is `DDIMScheduler.from_config`'s: a scheduler of the DDPM beta family (PNDM, Euler, ..., as a converted
diffusers folder may hold) is accepted and the fields DDIM shares are taken, fields the file leaves out get
DDIMScheduler's defaults, other fields (PNDM's skip_prk_steps, Euler's sigma options) are dropped. A pipeline
folder without scheduler/ means SD-1.5's schedule and our DDIM defaults (checkpoints written before this file).
A value we do not implement is a ValueError naming the field and the value.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from absl import logging

from tgvac_jax.diffusion.ddim import DDIMConfig
from tgvac_jax.diffusion.schedule import ScheduleConfig

SCHEDULER_DIR = 'scheduler'
CONFIG_NAME = 'scheduler_config.json'
CLASS_NAME = 'DDIMScheduler'

# diffusers schedulers whose training noise process is the DDPM beta schedule (ScheduleConfig's)
BETA_SCHEDULERS = ('DDIMScheduler', 'DDIMParallelScheduler', 'DDPMScheduler', 'DDPMParallelScheduler', 'PNDMScheduler',
                   'EulerDiscreteScheduler', 'EulerAncestralDiscreteScheduler', 'HeunDiscreteScheduler',
                   'LMSDiscreteScheduler', 'KDPM2DiscreteScheduler', 'KDPM2AncestralDiscreteScheduler',
                   'DPMSolverMultistepScheduler', 'DPMSolverSinglestepScheduler', 'DEISMultistepScheduler',
                   'UniPCMultistepScheduler', 'LCMScheduler', 'TCDScheduler')

# field -> (type, DDIMScheduler's default: what diffusers gives a field the file leaves out)
SCHEDULE_FIELDS = {
    'num_train_timesteps': (int, 1000), 'beta_start': (float, 0.0001), 'beta_end': (float, 0.02),
    'beta_schedule': (str, 'linear'), 'trained_betas': (tuple, None), 'prediction_type': (str, 'epsilon'),
    'rescale_betas_zero_snr': (bool, False)}
DDIM_FIELDS = {
    'timestep_spacing': (str, 'leading'), 'steps_offset': (int, 0), 'set_alpha_to_one': (bool, True),
    'clip_sample': (bool, True), 'clip_sample_range': (float, 1.0), 'thresholding': (bool, False),
    'dynamic_thresholding_ratio': (float, 0.995), 'sample_max_value': (float, 1.0)}


@dataclasses.dataclass(frozen=True)
class Scheduler:
  """What a scheduler file fixes. `ddim`'s num_inference_steps, eta and use_clipped_model_output are defaults,
  not the file's: they belong to each sampling call (`sampler_ddim`)."""
  schedule: ScheduleConfig = ScheduleConfig()
  ddim: DDIMConfig = DDIMConfig()

  def sampler_ddim(self, ddim: DDIMConfig) -> DDIMConfig:
    """This file's DDIM scheduler settings with `ddim`'s per-call ones."""
    return dataclasses.replace(self.ddim, num_inference_steps=ddim.num_inference_steps, eta=ddim.eta,
                               use_clipped_model_output=ddim.use_clipped_model_output)


def to_dict(schedule: ScheduleConfig, ddim: DDIMConfig = DDIMConfig()) -> dict[str, Any]:
  """The diffusers DDIMScheduler config that samples like our DDIM with `schedule` and `ddim`."""
  d = {'_class_name': CLASS_NAME, **{k: getattr(schedule, k) for k in SCHEDULE_FIELDS},
       **{k: getattr(ddim, k) for k in DDIM_FIELDS}}
  if d['trained_betas'] is not None:
    d['trained_betas'] = list(d['trained_betas'])
  return d


def _typed(name: str, value: Any, kind: type, where: str) -> Any:
  if kind is tuple:
    if value is None:
      return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                       for v in value):
      raise ValueError(f'{where}: {name} must be null or a list of numbers, got {value!r}')
    return tuple(float(v) for v in value)
  ok = (isinstance(value, bool) if kind is bool else isinstance(value, str) if kind is str else
        isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool))
  if not ok:
    raise ValueError(f'{where}: {name} must be {kind.__name__}, got {value!r}')
  return kind(value)


def from_dict(d: Mapping[str, Any], where: str = 'scheduler config') -> tuple[Scheduler, list[str]]:
  """(scheduler, names of the dropped fields) of a diffusers scheduler config; `where` prefixes errors."""
  cls = d.get('_class_name', CLASS_NAME)
  if cls not in BETA_SCHEDULERS:
    raise ValueError(f'{where}: _class_name {cls!r} is not a scheduler of the DDPM beta noise process we implement '
                     f'({", ".join(BETA_SCHEDULERS)})')
  fields = {**SCHEDULE_FIELDS, **DDIM_FIELDS}
  values = {k: _typed(k, d.get(k, default), kind, where) for k, (kind, default) in fields.items()}
  betas = values['trained_betas']
  if betas is not None and len(betas) != values['num_train_timesteps']:
    raise ValueError(f'{where}: trained_betas has {len(betas)} values for num_train_timesteps '
                     f'{values["num_train_timesteps"]}')
  try:
    schedule = ScheduleConfig(**{k: values[k] for k in SCHEDULE_FIELDS})
    ddim = DDIMConfig(**{k: values[k] for k in DDIM_FIELDS})
  except ValueError as e:
    raise ValueError(f'{where}: {e}') from None
  return Scheduler(schedule, ddim), sorted(k for k in d if k not in fields and not k.startswith('_'))


def write(folder: str | os.PathLike, schedule: ScheduleConfig, ddim: DDIMConfig = DDIMConfig()) -> Path:
  """Writes `folder/scheduler_config.json` (folder: a pipeline's scheduler/); returns the file."""
  folder = Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  path = folder / CONFIG_NAME
  path.write_text(json.dumps(to_dict(schedule, ddim), indent=2, sort_keys=True) + '\n')
  return path


def read_file(path: str | os.PathLike) -> tuple[Scheduler, list[str]]:
  """from_dict of one scheduler_config.json."""
  path = Path(path)
  try:
    d = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}: not JSON ({e})') from None
  if not isinstance(d, dict):
    raise ValueError(f'{path}: not a scheduler config (a JSON object)')
  return from_dict(d, str(path))


def read(pipeline: str | os.PathLike) -> Scheduler:
  """The scheduler of a pipeline checkpoint folder; SD-1.5's (`Scheduler()`) when it has no scheduler/."""
  folder = Path(pipeline) / SCHEDULER_DIR
  if not folder.exists():
    return Scheduler()
  if not (folder / CONFIG_NAME).is_file():
    raise ValueError(f'{folder}: no {CONFIG_NAME}')
  scheduler, dropped = read_file(folder / CONFIG_NAME)
  if dropped:
    logging.warning('%s: ignored %s (not used by DDIM sampling)', folder / CONFIG_NAME, ', '.join(dropped))
  return scheduler

"""The trainer's choice of motion GroupNorm: `model.motion_norm_across_frames` for from-scratch models,
`init.motion_norm_across_frames` for new modules on a frame checkpoint; loaded motion weights keep their own."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from configs import motion
from tgvac_jax.train import stages


class _Loader:
  """A motion_init as the train job makes it for init.motion_adapter: it says the norm its weights were trained with."""

  def __init__(self, across: bool):
    self.norm_across_frames = across

  def __call__(self, unet) -> None:
    raise AssertionError('not called here')


FRAME_UNET = {'_class': 'UNet2DConditionModel', 'norm_num_groups': 16}


def test_from_scratch_models_take_model_motion_norm_across_frames():
  c = motion.get_config('tiny')
  assert c.model.motion_norm_across_frames is False and c.init.motion_norm_across_frames is False
  assert stages.scratch_configs(c.model, 16, 40, motion=True)[0].motion.norm_across_frames is False
  c.model.motion_norm_across_frames = True
  assert stages.scratch_configs(c.model, 16, 40, motion=True)[0].motion.norm_across_frames is True


@pytest.mark.parametrize('flag', [False, True])
def test_new_modules_take_init_motion_norm_across_frames(flag):
  c = motion.get_config('tiny')
  c.init.motion_norm_across_frames = flag
  mc = stages._motion_config(c, FRAME_UNET)  # pylint: disable=protected-access
  assert mc.norm_across_frames is flag and mc.norm_num_groups == 16


def test_loaded_motion_weights_keep_their_norm():
  c = motion.get_config('tiny')
  video_unet = {**FRAME_UNET, 'motion': {'num_attention_heads': 4, 'norm_num_groups': 16, 'norm_across_frames': True}}
  assert stages._motion_config(c, video_unet).norm_across_frames is True  # pylint: disable=protected-access
  assert stages._motion_config(c, FRAME_UNET, _Loader(True)).norm_across_frames is True  # pylint: disable=W0212
  c.init.motion_norm_across_frames = True
  assert stages._motion_config(c, FRAME_UNET, _Loader(True)).norm_across_frames is True  # pylint: disable=W0212
  per_frame = {**video_unet, 'motion': {**video_unet['motion'], 'norm_across_frames': False}}
  for unet, loader, source in ((per_frame, None, 'init.checkpoint'),
                               (FRAME_UNET, _Loader(False), 'init.motion_adapter')):
    with pytest.raises(stages.StageError, match=f'{source} brings motion weights trained per frame'):
      stages._motion_config(c, unet, loader)  # pylint: disable=protected-access


def test_train_job_loader_reads_the_adapters_norm(tmp_path):
  """job.motion_loader's loader carries the norm the adapter was trained with: what our export recorded, per frame
  for an original AnimateDiff layout."""
  from convert.animatediff import save_motion_adapter  # pylint: disable=import-outside-toplevel
  from tgvac_jax.models.unet import UNet2DConditionModel  # pylint: disable=import-outside-toplevel
  from tgvac_jax.train import job  # pylint: disable=import-outside-toplevel
  c = motion.get_config('tiny')
  c.model.unet_channels = (32,)
  cfg = stages.scratch_configs(c.model, 16, 40, motion=True)[0]
  for across in (False, True):
    cfg = dataclasses.replace(cfg, motion=dataclasses.replace(cfg.motion, norm_across_frames=across))
    unet = nnx.eval_shape(lambda cfg=cfg: UNet2DConditionModel(cfg, rngs=nnx.Rngs(0)))
    nnx.update(unet, jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), nnx.state(unet)))
    save_motion_adapter(unet, str(tmp_path / f'adapter_{across}'))
    c.init.motion_adapter = str(tmp_path / f'adapter_{across}')
    assert job.motion_loader(c).norm_across_frames is across

"""configs/infer.py end to end with a tiny random model: a frame folder + masks, an mp4 + palette masks, a SAM-2
prompt; and every bad input ends in one clear error with nothing left on disk.

The written object must equal the library call on the same resized inputs mapped back to the input size
(`AmodalCompleter` + `resize`), and its alpha must equal the amodal mask PNG.
"""

import json
import logging
import os
import shutil
import subprocess
import sys

from pathlib import Path

import numpy as np
import pytest
from flax import nnx
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from fakes import object_labels, random_model, tiny_unet_config, write_frames, write_masks  # noqa: E402
from tgvac_jax import jobs  # noqa: E402
from tgvac_jax.diffusion import scheduler_config  # noqa: E402
from tgvac_jax.diffusion.schedule import ScheduleConfig  # noqa: E402
from tgvac_jax.infer import io, job, resize  # noqa: E402
from tgvac_jax.infer.complete import AmodalCompleter, close_masks  # noqa: E402
from tgvac_jax.models.checkpoint import CheckpointError, load_pipeline, save_pipeline  # noqa: E402
from tgvac_jax.models.unet import UNet2DConditionModel  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _png(path):
  return np.asarray(Image.open(path))


def _check_outputs(out, n, size, stems=None):
  stems = stems or [f'{i:05d}' for i in range(n)]
  assert sorted(p.stem for p in (out / 'object').iterdir()) == stems
  for stem in stems:
    rgba, mask = _png(out / 'object' / f'{stem}.png'), _png(out / 'amodal_mask' / f'{stem}.png')
    assert rgba.shape == size + (4,) and mask.shape == size
    np.testing.assert_array_equal(rgba[..., 3], mask)
    assert set(np.unique(mask)) <= {0, 255}
  masks = np.stack([_png(out / 'amodal_mask' / f'{s}.png') for s in stems])
  assert 0 < masks.mean() < 255                                  # a real mask, not all or nothing
  preview = io.read_video(out / 'side_by_side.mp4').frames
  assert preview.shape[0] == n and preview.shape[2] >= 4 * preview.shape[1] * size[1] // size[0] - 4
  assert Image.open(out / 'side_by_side.gif').n_frames == n
  return json.loads((out / 'completion.json').read_text())


def test_frame_folder_and_masks(tmp_path, infer_config):
  frames = write_frames(tmp_path / 'frames', 5, (20, 24))
  labels = object_labels(5, (20, 24))
  write_masks(tmp_path / 'masks', labels)
  c = infer_config(video=str(tmp_path / 'frames'), masks=str(tmp_path / 'masks'), text='a red ball',
                   out=str(tmp_path / 'out'))
  jobs.run(c)
  info = _check_outputs(tmp_path / 'out', 5, (20, 24))
  assert info['frames'] == 5 and info['input_size'] == [20, 24] and info['model_canvas'] == [16, 16]
  assert info['completion']['sampler']['window_length'] == 4 and info['settings']['num_samples'] == 1
  assert info['checkpoint'] == str(c.checkpoint) and 'call_s' in info['timings']
  assert not (tmp_path / 'out' / 'visible_mask').exists()
  assert [p.name for p in tmp_path.iterdir() if p.name.startswith('.')] == []

  # the same completion through the library: resize in, complete (seed 0), map back, and the visible part as
  # observed (keep_visible): the input's pixels where the object is visible, the mask a superset of the visible one
  completer = job.load_completer(c)
  pl = resize.placement((20, 24), 16, completer.size_multiple, 'pad')
  visible = labels > 0
  f, m = resize.to_model(frames, visible, pl)
  ref = completer(f, m, 'a red ball', seed=0)
  rgb, mask = resize.from_model(ref.rgb, pl, completer.config.mask_threshold)
  assert (rgb[visible] != frames[visible]).any() and (visible & ~mask).any()   # so keep_visible changes something
  objects = np.stack([_png(tmp_path / 'out' / 'object' / f'{i:05d}.png') for i in range(5)])
  np.testing.assert_array_equal(objects[..., :3], np.where(visible[..., None], frames, rgb))
  np.testing.assert_array_equal(objects[..., 3] > 0, mask | visible)

  # mask_closing (model pixels) closes the composed mask's seams at the input's scale (2 -> 3 pixels here)
  jobs.run(infer_config(video=str(tmp_path / 'frames'), masks=str(tmp_path / 'masks'), text='a red ball',
                        out=str(tmp_path / 'closed'), mask_closing=2))
  closed = np.stack([_png(tmp_path / 'closed' / 'object' / f'{i:05d}.png')[..., 3] > 0 for i in range(5)])
  np.testing.assert_array_equal(closed, close_masks(mask | visible, resize.input_pixels(pl, 2)))


def test_object_fit_completes_a_square_around_the_object(tmp_path, infer_config):
  """fit='object': a 6-pixel square moving right in a 48-pixel frame is completed in the 16-pixel square around its
  path (its 6 x 10 box plus 0.5 x 6 pixels on each side), not in the whole frame shrunk 3x; the written result is
  that region's completion pasted back, and nothing outside it."""
  frames = write_frames(tmp_path / 'frames', 5, (48, 48))
  labels = np.zeros((5, 48, 48), np.uint8)
  for i in range(5):
    labels[i, 20:26, 10 + i:16 + i] = 1
  write_masks(tmp_path / 'masks', labels)
  c = infer_config(video=str(tmp_path / 'frames'), masks=str(tmp_path / 'masks'), text='a red ball',
                   out=str(tmp_path / 'out'), fit='object', object_context=0.5)
  jobs.run(c)
  info = json.loads((tmp_path / 'out' / 'completion.json').read_text())
  assert info['input_region'] == [15, 7, 16, 16] and info['model_canvas'] == [16, 16]

  completer = job.load_completer(c)
  visible = labels > 0
  pl = resize.Placement((48, 48), (16, 16), (0, 0, 16, 16), region=(15, 7, 16, 16))
  f, m = resize.to_model(frames, visible, pl)
  rgb, mask = resize.from_model(completer(f, m, 'a red ball', seed=0).rgb, pl, completer.config.mask_threshold)
  objects = np.stack([_png(tmp_path / 'out' / 'object' / f'{i:05d}.png') for i in range(5)])
  np.testing.assert_array_equal(objects[..., :3], np.where(visible[..., None], frames, rgb))
  np.testing.assert_array_equal(objects[..., 3] > 0, mask | visible)
  outside = np.ones((48, 48), bool)
  outside[15:31, 7:23] = False
  assert not objects[:, outside, 3].any()


def test_mp4_with_palette_masks(tmp_path, infer_config):
  frames = np.random.default_rng(1).integers(0, 256, (5, 18, 30, 3), dtype=np.uint8)
  io.write_mp4(tmp_path / 'clip.mp4', frames, fps=12)
  write_masks(tmp_path / 'masks', object_labels(5, (18, 30), ids=(1, 2)), palette=True)
  jobs.run(infer_config(video=str(tmp_path / 'clip.mp4'), masks=str(tmp_path / 'masks'), object_id=2,
                        text='a dog', out=str(tmp_path / 'out')))
  info = _check_outputs(tmp_path / 'out', 5, (18, 30))
  assert info['fps'] == 12 and info['source']['object_id'] == 2


def test_sam2_box_prompt(tmp_path, infer_config, tiny_sam2):
  write_frames(tmp_path / 'frames', 5, (24, 16), seed=2, ext='jpg')
  c = infer_config(video=str(tmp_path / 'frames'), box='2,3,12,15', sam2=str(tiny_sam2), text='a cat',
                   out=str(tmp_path / 'out'))
  jobs.run(c)
  info = _check_outputs(tmp_path / 'out', 5, (24, 16))
  assert len(list((tmp_path / 'out' / 'visible_mask').glob('*.png'))) == 5
  assert info['source']['prompt']['box'] == [2, 3, 12, 15]

  # without the SAM-2 folder: one error, before anything is read or compiled, and no output
  c.sam2, c.out = str(tmp_path / 'no_sam2'), str(tmp_path / 'out2')
  with pytest.raises(FileNotFoundError, match='SAM-2 folder .*no_sam2 not found'):
    jobs.run(c)
  assert not (tmp_path / 'out2').exists()


def test_long_caption_is_truncated_with_a_warning(tmp_path, infer_config, caplog):
  write_frames(tmp_path / 'frames', 5, (20, 24))
  write_masks(tmp_path / 'masks', object_labels(5, (20, 24)))
  caption = 'a very long description of a small red ball ' * 3    # one token per character: > 77
  with caplog.at_level(logging.WARNING):
    jobs.run(infer_config(video=str(tmp_path / 'frames'), masks=str(tmp_path / 'masks'), text=caption,
                          out=str(tmp_path / 'out')))
  assert 'CLIP reads 77: it is truncated' in caplog.text
  info = json.loads((tmp_path / 'out' / 'completion.json').read_text())
  assert info['caption_truncated'] and info['caption_tokens'] == len(caption.replace(' ', '')) + 2


def _bad_inputs(tmp_path, name):
  """(config overrides, error type, message) for one kind of bad input."""
  write_frames(tmp_path / 'frames', 5, (20, 24))
  labels = object_labels(5, (20, 24))
  overrides = {'video': str(tmp_path / 'frames'), 'masks': str(tmp_path / 'masks'), 'text': 'a ball'}
  if name == 'mask_count':
    write_masks(tmp_path / 'masks', labels[:4])
    return overrides, ValueError, '4 mask PNGs for 5 frames'
  if name == 'empty_first_mask':
    labels[0] = 0
    write_masks(tmp_path / 'masks', labels)
    return overrides, ValueError, 'first-frame mask is empty'
  if name == 'object_id_absent':
    write_masks(tmp_path / 'masks', labels, palette=True)
    return {**overrides, 'object_id': 3}, ValueError, r'object id 3 is not in .*\(ids present: \[1\]\)'
  write_masks(tmp_path / 'masks', labels)
  if name == 'unreadable_video':
    (tmp_path / 'clip.mp4').write_bytes(b'garbage' * 50)
    return {**overrides, 'video': str(tmp_path / 'clip.mp4')}, ValueError, 'clip.mp4: cannot read the video'
  if name == 'missing_checkpoint':
    return {**overrides, 'checkpoint': str(tmp_path / 'nope')}, CheckpointError, 'nope does not exist'
  if name == 'not_a_pipeline':
    (tmp_path / 'ckpt' / 'vae').mkdir(parents=True)
    return ({**overrides, 'checkpoint': str(tmp_path / 'ckpt')}, CheckpointError,
            'not a TGVAC pipeline checkpoint: no unet, vae, text_encoder component')
  raise AssertionError(name)


@pytest.mark.parametrize('name', ['mask_count', 'empty_first_mask', 'object_id_absent', 'unreadable_video',
                                  'missing_checkpoint', 'not_a_pipeline'])
def test_bad_input_one_error_no_output(tmp_path, infer_config, name):
  overrides, error, message = _bad_inputs(tmp_path, name)
  with pytest.raises(error, match=message):
    jobs.run(infer_config(out=str(tmp_path / 'out' / 'result'), **overrides))
  assert not (tmp_path / 'out').exists() or list((tmp_path / 'out').iterdir()) == []


def test_wrong_model_in_the_checkpoint(tmp_path, tiny_checkpoint, infer_config):
  """A pipeline whose UNet lacks TGVAC's 12 input channels (e.g. plain SD) is refused when loaded."""
  parts = load_pipeline(tiny_checkpoint, ('vae', 'text_encoder'))
  four = random_model(lambda: UNet2DConditionModel(tiny_unet_config(in_channels=4), rngs=nnx.Rngs(0)), 0)
  save_pipeline(tmp_path / 'sd', {'unet': four, **{k: m for k, (m, _) in parts.items()}},
                {'tokenizer': tiny_checkpoint / 'tokenizer'})
  with pytest.raises(ValueError, match='4 input channels; TGVAC needs 3 x 4'):
    job.load_completer(infer_config(checkpoint=str(tmp_path / 'sd')))
  assert isinstance(job.load_completer(infer_config()), AmodalCompleter)


def test_checkpoint_scheduler(tmp_path, tiny_checkpoint, infer_config):
  """The job samples with the checkpoint's scheduler/ (a v_prediction model as v_prediction; SD-1.5's without
  one), the steps and eta with the config's; a scheduler we cannot follow is refused when loaded."""
  assert job.load_completer(infer_config()).config.sampler.schedule == ScheduleConfig()
  v = tmp_path / 'v'
  shutil.copytree(tiny_checkpoint, v)
  scheduler_config.write(v / 'scheduler', ScheduleConfig(prediction_type='v_prediction'))
  sampler = job.load_completer(infer_config(checkpoint=str(v), **{'sampler.eta': 0.5})).config.sampler
  assert sampler.schedule == ScheduleConfig(prediction_type='v_prediction')
  assert (sampler.ddim.num_inference_steps, sampler.ddim.eta) == (2, 0.5)
  path = v / 'scheduler' / 'scheduler_config.json'
  path.write_text(path.read_text().replace('v_prediction', 'flow'))
  with pytest.raises(ValueError, match=f"{path}: prediction_type 'flow' is not one of"):
    job.load_completer(infer_config(checkpoint=str(v)))


def test_run_py_prints_one_line(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  res = subprocess.run([sys.executable, 'run.py', '--config', 'configs/infer.py', f'--config.checkpoint={tmp_path}/x',
                        f'--config.video={tmp_path}/v.mp4', '--config.masks=m', '--config.text=t',
                        f'--config.out={tmp_path}/out'], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
  assert res.returncode != 0
  assert res.stderr.strip().splitlines()[-1] == f'run.py: error: {tmp_path}/v.mp4: no such video file or frame folder'
  assert not (tmp_path / 'out').exists()


def test_device_settings(infer_config):
  with pytest.raises(ValueError, match='shard'):
    job.load_completer(infer_config(shard='rows'))
  with pytest.raises(ValueError, match=r'mask_closing -1 must be >= 0'):
    job.load_completer(infer_config(mask_closing=-1))
  with pytest.raises(ValueError, match=r'chunk_size \(1\) to be a multiple of the devices \(8\)'):
    job.load_completer(infer_config(shard='windows'))
  windows = job.load_completer(infer_config(**{'shard': 'windows', 'sampler.chunk_size': 8}))
  assert windows.batch_multiple == 1 and windows.mesh.size == 8
  assert job.load_completer(infer_config(shard='auto')).batch_multiple == 8  # 8 simulated devices


def test_temporal_prior_adds_what_propagation_restores(tmp_path, infer_config):
  """temporal_prior: the written completion is the model's (the same sampling without it) plus, where the model
  drew nothing, the non-learned temporal propagation's object and mask (infer/propagate.py, computed here on the
  same frames and visible masks); nothing the model drew changes."""
  from tgvac_jax.infer import propagate  # pylint: disable=import-outside-toplevel
  n, size = 5, (20, 24)
  frames = write_frames(tmp_path / 'frames', n, size)
  labels = np.zeros((n,) + size, np.uint8)
  for i in range(n):
    labels[i, 6:14, 4 + i:12 + i] = 1
  labels[2, :, 9:] = 0             # the right half of the square hidden in the middle frame
  write_masks(tmp_path / 'masks', labels)
  run = lambda out, prior: jobs.run(infer_config(video=str(tmp_path / 'frames'), masks=str(tmp_path / 'masks'),
                                                 text='a red ball', out=str(tmp_path / out), temporal_prior=prior))
  run('alone', 0)
  run('prior', 2)
  read = lambda out: np.stack([_png(tmp_path / out / 'object' / f'{i:05d}.png') for i in range(n)])
  alone, prior = read('alone'), read('prior')
  prop_rgb, prop = propagate.temporal_propagation(frames, labels > 0, window=2)
  add = prop & (alone[..., 3] == 0)
  assert add[2].sum() >= 8          # the hidden half comes back from a neighbour (the tiny model drew little of it)
  np.testing.assert_array_equal(prior[..., 3] > 0, (alone[..., 3] > 0) | add)
  np.testing.assert_array_equal(prior[..., :3], np.where(add[..., None], prop_rgb, alone[..., :3]))
  assert json.loads((tmp_path / 'prior' / 'completion.json').read_text())['settings']['temporal_prior'] == 2
  from tgvac_jax.infer.batch import InferSettings  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match='temporal_prior -1'):
    InferSettings(temporal_prior=-1)

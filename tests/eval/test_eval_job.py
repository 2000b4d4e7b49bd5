"""The evaluation job end to end: a built dataset's validation split with hand-made predictions (expected
numbers computed from the dataset records directly), a DAVIS-style amodal root with a transformers CLIPModel
folder (CLIP numbers from PyTorch), and bad inputs (one message, nothing written)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'data_prep'))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'convert'))

import tiny_sd  # noqa: E402
from configs.eval import get_config  # noqa: E402
from tgvac_jax.data import pipeline, schema  # noqa: E402
from tgvac_jax.eval import amodal_root as R  # noqa: E402
from tgvac_jax.eval import job  # noqa: E402
from tgvac_jax.eval.clip_score import preprocess  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _config(**kw):
  c = get_config()
  for k, v in kw.items():
    setattr(c, k, v)
  return c


def _write_prediction(folder: Path, masks, objects_rgba) -> None:
  (folder / R.PRED_MASKS).mkdir(parents=True)
  (folder / R.PRED_OBJECTS).mkdir()
  for t, (m, o) in enumerate(zip(masks, objects_rgba)):
    Image.fromarray(np.where(m, 255, 0).astype(np.uint8)).save(folder / R.PRED_MASKS / f'{t:05d}.png')
    Image.fromarray(o).save(folder / R.PRED_OBJECTS / f'{t:05d}.png')


def test_dataset_split_with_hand_made_predictions(procedural_clips, tmp_path):
  """Prediction = the visible mask (nothing completed) and the true object with its hidden part painted black."""
  source = pipeline.data_source(procedural_clips, 'validation')
  recs = [schema.decode_record(source[i]) for i in range(len(source))]
  out = tmp_path / 'eval'
  names = []
  for i, rec in enumerate(recs):
    hidden = rec['amodal_mask'] & ~rec['visible_mask']
    rgba = np.concatenate([np.where(hidden[..., None], 0, rec['amodal']), np.full(hidden.shape + (1,), 255)], -1)
    name = job._sequence_name(i, rec)  # pylint: disable=protected-access
    names.append(name)
    _write_prediction(out / job.PREDICTIONS / name, rec['visible_mask'], rgba.astype(np.uint8))
  job.run(_config(data=procedural_clips, out=str(out)))

  vis = np.concatenate([r['visible_mask'] for r in recs])
  am = np.concatenate([r['amodal_mask'] for r in recs])
  gt = np.concatenate([r['amodal'] for r in recs]).astype(np.float64)
  hidden = am & ~vis
  rate = hidden.sum((1, 2)) / np.maximum(am.sum((1, 2)), 1)
  occluded = hidden.any((1, 2))
  s = json.loads((out / job.METRICS / 'summary.json').read_text())['summary']
  assert s['tc_space'] == 'LPIPS-alex features'
  a = s['splits']['all']
  assert a['frames'] == len(vis) and a['videos'] == len(recs) and a['occluded_frames'] == occluded.sum()
  assert s['splits']['hard']['frames'] == (rate >= 0.5).sum()
  np.testing.assert_allclose(a['iou_c2f'], np.mean(vis.sum((1, 2)) / am.sum((1, 2))), rtol=1e-6)
  assert a['iou_occ_c2f'] == 0 and a['iou_occ_occluded'] == 0
  np.testing.assert_allclose(a['iou_occ_savos'], np.mean(~occluded), atol=1e-6)
  mse = [(gt[i][hidden[i]] ** 2).mean() for i in range(len(gt)) if occluded[i]]
  np.testing.assert_allclose(a['psnr_occ'], np.mean(10 * np.log10(255 ** 2 / np.array(mse))), rtol=1e-6)
  assert 0 < a['lpips'] < 1 and 0 < a['tc'] <= 1 and a['clip'] is None
  frames = json.loads((out / job.METRICS / 'frames.json').read_text())
  assert len(frames) == len(vis) and [f['video'] for f in frames[::4]] == names
  assert [f['tc'] is None for f in frames[:4]] == [True, False, False, False]
  table = (out / job.METRICS / 'table.md').read_text()
  assert 'TC ↑ (LPIPS-alex features)' in table and '| TGVAC | n/a |' in table
  plots = sorted(p.name for p in (out / job.METRICS / 'plots').iterdir())
  assert 'occluded_iou_vs_occlusion.png' in plots and len(plots) == 1 + min(4, len(recs))
  assert json.loads((out / job.GROUND_TRUTH / job.EXPORT_INFO).read_text())['split'] == 'validation'


def _palette(labels, path):
  im = Image.fromarray(labels.astype(np.uint8))
  im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0, 0, 0] * 253)
  im.save(path)


@pytest.fixture(scope='module')
def clip_folder(tmp_path_factory):
  """A tiny random transformers CLIPModel saved as users have CLIP (vision and text halves)."""
  from transformers import CLIPConfig, CLIPModel
  torch.manual_seed(0)
  model = CLIPModel(CLIPConfig(text_config=tiny_sd.TEXT, vision_config=tiny_sd.VISION, projection_dim=16)).eval()
  tiny_sd._perturb(model)  # pylint: disable=protected-access
  folder = tmp_path_factory.mktemp('clip')
  model.save_pretrained(folder)
  return folder, model


def test_amodal_root_with_clip(tmp_path, clip_folder):
  """Two sequences (3 and 5 frames) whose masks hold objects 1 and 2; object 2 is evaluated."""
  folder, torch_clip = clip_folder
  rng = np.random.default_rng(0)
  root, preds = tmp_path / 'root', tmp_path / 'preds'
  truth = {}
  for name, n in (('bear', 3), ('car', 5)):
    for sub in (R.FRAMES, R.VISIBLE, R.AMODAL, R.OBJECTS):
      (root / sub / name).mkdir(parents=True)
    amodal = np.zeros((n, 32, 32), bool)
    for t in range(n):
      amodal[t, 8:24, 4 + t:20 + t] = True
    visible = amodal.copy()
    visible[:, :, 14:] = False  # right part hidden: 6/16 + t/16 of the object
    objects = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    for t in range(n):
      labels = np.where(visible[t], 2, 0)
      labels[:4, :4] = 1  # another object, not ours
      _palette(labels, root / R.VISIBLE / name / f'{t:05d}.png')
      _palette(np.where(amodal[t], 2, 0) + np.where(labels == 1, 1, 0), root / R.AMODAL / name / f'{t:05d}.png')
      Image.fromarray(np.concatenate([objects[t], np.full((32, 32, 1), 255, np.uint8)], -1)).save(
          root / R.OBJECTS / name / f'{t:05d}.png')
      Image.fromarray(objects[t]).save(root / R.FRAMES / name / f'{t:05d}.jpg')
    pred_objects = objects if name == 'bear' else np.repeat(objects[:1], n, axis=0)  # car: a constant video
    _write_prediction(preds / name, amodal, np.concatenate([pred_objects, np.full((n, 32, 32, 1), 255, np.uint8)], -1))
    truth[name] = (objects, pred_objects)
  (root / R.CAPTIONS).write_text(json.dumps({'bear': 'a bear', 'car': 'a car'}))
  out = tmp_path / 'eval'
  job.run(_config(data=str(root), predictions=str(preds), out=str(out), clip=str(folder), object_id=2))

  frames = json.loads((out / job.METRICS / 'frames.json').read_text())
  assert len(frames) == 8 and all(f['iou_c2f'] == pytest.approx(1.0) for f in frames)
  np.testing.assert_allclose([f['occlusion_rate'] for f in frames[:3]], [6 / 16, 7 / 16, 8 / 16])
  with torch.no_grad():
    emb = lambda x: torch_clip.get_image_features(  # noqa: E731
        pixel_values=torch.from_numpy(preprocess(x, 32).transpose(0, 3, 1, 2))).pooler_output.numpy()
    for name, start in (('bear', 0), ('car', 3)):
      gt, pred = truth[name]
      a, b = emb(pred), emb(gt)
      cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
      np.testing.assert_allclose([f['clip'] for f in frames[start:start + len(gt)]], cos, atol=1e-5)
  assert all(f['tc'] == pytest.approx(1.0, abs=1e-6) for f in frames[4:])  # car frames 1..4: constant video
  assert frames[1]['lpips'] == pytest.approx(0, abs=1e-6) and frames[4]['lpips'] > 0.01
  s = json.loads((out / job.METRICS / 'summary.json').read_text())['summary']
  assert s['tc_space'] == 'CLIP' and s['splits']['hard']['frames'] == 4


def test_bad_inputs(tmp_path, procedural_clips):
  with pytest.raises(FileNotFoundError, match='does not exist'):
    job.run(_config(data=str(tmp_path / 'nothing'), out=str(tmp_path / 'o')))
  with pytest.raises(FileNotFoundError, match='checkpoint .* is not a folder'):
    job.run(_config(data=procedural_clips, checkpoint=str(tmp_path / 'no_model'), out=str(tmp_path / 'o')))
  (tmp_path / 'clip').mkdir()
  with pytest.raises(FileNotFoundError, match='no config.json'):
    job.run(_config(data=procedural_clips, clip=str(tmp_path / 'clip'), out=str(tmp_path / 'o')))
  assert not (tmp_path / 'o').exists()
  with pytest.raises(FileNotFoundError, match='not a folder'):
    job.run(_config(data=procedural_clips, clip=str(tmp_path / 'no_clip'), out=str(tmp_path / 'o')))
  root = tmp_path / 'root'
  for sub in (R.VISIBLE, R.AMODAL):
    (root / sub / 'seq').mkdir(parents=True)
  for t in range(3):
    _palette(np.ones((8, 8)), root / R.AMODAL / 'seq' / f'{t:05d}.png')
  for t in range(2):
    _palette(np.ones((8, 8)), root / R.VISIBLE / 'seq' / f'{t:05d}.png')
  with pytest.raises(ValueError, match=r"Annotations/seq: frames missing \['00002'\]"):
    job.run(_config(data=str(root), out=str(tmp_path / 'o')))
  assert not (tmp_path / 'o' / job.METRICS).exists()


def test_run_py_missing_predictions_one_line(tmp_path, procedural_clips):
  out = tmp_path / 'eval'
  p = subprocess.run([sys.executable, 'run.py', '--config', 'configs/eval.py', f'--config.data={procedural_clips}',
                      f'--config.out={out}'], cwd=ROOT, capture_output=True, text=True, timeout=300,
                     env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert p.returncode != 0
  last = p.stderr.strip().splitlines()[-1]
  assert last.startswith('run.py: error:') and 'predictions missing for 4 sequence(s)' in last, p.stderr[-2000:]
  assert 'Traceback' not in p.stderr and not (out / job.METRICS).exists()


@pytest.fixture(scope='module')
def tiny_checkpoint(tmp_path_factory):
  """A random TGVAC pipeline at 16 x 16 (UNet (16, 32), VAE (8, 16), one-layer text encoder)."""
  from flax import nnx
  from tgvac_jax import text
  from tgvac_jax.models.checkpoint import save_pipeline
  from tgvac_jax.models.clip import CLIPTextConfig, CLIPTextModel
  from tgvac_jax.models.init import jit_init
  from tgvac_jax.models.unet import UNetConfig, create_unet
  from tgvac_jax.models.vae import AutoencoderKL, AutoencoderKLConfig
  root = tmp_path_factory.mktemp('ckpt')
  vocab = text.write_char_tokenizer(root / 'tok')
  vae = jit_init(lambda: AutoencoderKL(AutoencoderKLConfig(
      block_out_channels=(8, 16), norm_num_groups=4, layers_per_block=1, sample_size=16,
      down_block_types=('DownEncoderBlock2D',) * 2, up_block_types=('UpDecoderBlock2D',) * 2), rngs=nnx.Rngs(1)))
  encoder = jit_init(lambda: CLIPTextModel(CLIPTextConfig(
      vocab_size=vocab, hidden_size=16, intermediate_size=32, projection_dim=16, num_hidden_layers=1,
      num_attention_heads=2, bos_token_id=0, eos_token_id=1), rngs=nnx.Rngs(2)))
  unet = create_unet(UNetConfig(in_channels=12, block_out_channels=(16, 32), layers_per_block=1,
                                down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
                                up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'), norm_num_groups=8,
                                cross_attention_dim=16, attention_head_dim=2, sample_size=4), seed=0)
  return save_pipeline(root / 'model', {'unet': unet, 'vae': vae, 'text_encoder': encoder}, {'tokenizer': root / 'tok'})


@pytest.mark.slow  # compiles the tiny sampler: ~1 min of CPU; tests/infer covers batch inference itself
def test_inference_then_evaluation(procedural_clips, tiny_checkpoint, tmp_path):
  """With a checkpoint the job completes the sequences first (batch inference), then scores what it wrote:
  the same records as evaluating those files afterwards; a rerun completes nothing again."""
  out = tmp_path / 'eval'
  c = _config(data=procedural_clips, out=str(out), checkpoint=str(tiny_checkpoint), max_videos=2)
  c.infer.sampler.steps, c.infer.sampler.window_length, c.infer.sampler.stride = 2, 4, 2
  job.run(c)
  preds = out / job.PREDICTIONS
  names = sorted(p.name for p in preds.iterdir())
  assert len(names) == 2 and all((preds / n / 'completion.json').is_file() for n in names)
  first = json.loads((out / job.METRICS / 'frames.json').read_text())
  stamp = [(preds / n / 'completion.json').stat().st_mtime_ns for n in names]
  job.run(c)  # predictions exist: skipped, and the records are the same
  assert [(preds / n / 'completion.json').stat().st_mtime_ns for n in names] == stamp
  again = json.loads((out / job.METRICS / 'frames.json').read_text())
  assert again == first and len(first) == 8
  root = out / job.GROUND_TRUTH
  truth = R.read_ground_truth(root, names[0])
  mask = R.read_prediction(preds, names[0], truth.stems).amodal
  inter, union = (mask & truth.amodal).sum((1, 2)), (mask | truth.amodal).sum((1, 2))
  np.testing.assert_allclose([f['iou_c2f'] for f in first[:4]], inter / (union + 1e-6), rtol=1e-9)

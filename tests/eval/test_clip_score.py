"""CLIP similarity and CLIP temporal consistency with a tiny random transformers vision tower, converted."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import CLIPImageProcessor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'convert'))

import tiny_sd  # noqa: E402
from convert import clip as convert_clip  # noqa: E402
from tgvac_jax.eval.clip_score import clip_embedding_fn, clip_similarity, preprocess  # noqa: E402
from tgvac_jax.eval.temporal_consistency import consecutive_cosines  # noqa: E402


@pytest.fixture(scope='module')
def towers():
  ref = tiny_sd.vision_model(seed=5)
  ours, _ = convert_clip.from_torch(ref.state_dict(), ref.config.to_dict())
  return ref, clip_embedding_fn(ours)


def _frames(n=3, h=40, w=56):
  return np.random.default_rng(1).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize('shape', [(40, 56), (57, 40)])
def test_preprocess_is_clip_image_processors(shape):
  x = _frames(2, *shape)
  proc = CLIPImageProcessor(size={'shortest_edge': 32}, crop_size={'height': 32, 'width': 32})
  ref = proc(images=list(x), return_tensors='np')['pixel_values'].transpose(0, 2, 3, 1)
  np.testing.assert_allclose(preprocess(x, 32), ref, atol=1e-6)


def test_similarity_matches_transformers(towers):
  ref, embed = towers
  a, b = _frames(), _frames()[::-1]
  with torch.no_grad():
    ea, eb = (ref(torch.from_numpy(preprocess(x, 32).transpose(0, 3, 1, 2))).image_embeds.numpy() for x in (a, b))
  cos = (ea * eb).sum(-1) / np.linalg.norm(ea, axis=-1) / np.linalg.norm(eb, axis=-1)
  np.testing.assert_allclose(clip_similarity(embed(a), embed(b)), cos, atol=1e-5)
  np.testing.assert_allclose(clip_similarity(embed(a), embed(a)), 1.0, atol=1e-6)


def test_tc_of_a_constant_video_is_one(towers):
  _, embed = towers
  video = np.repeat(_frames(1), 5, axis=0)
  assert consecutive_cosines(embed(video)).mean() == pytest.approx(1.0, abs=1e-6)
  assert consecutive_cosines(embed(_frames(4))).mean() < 0.9999

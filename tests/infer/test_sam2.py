"""SAM-2 propagation with a small random transformers SAM-2 video model.

Independent check: a mask prompt on a conditioning frame is SAM-2's own output for that frame
(`_use_mask_as_output`: the mask becomes +-10 logits), so frame 0 must give back the prompt whatever the weights.
"""

import numpy as np
import pytest

from tgvac_jax.infer import sam2

H, W = 40, 48


def _video(n=4):
  return np.random.default_rng(0).integers(0, 256, (n, H, W, 3), dtype=np.uint8)


def test_mask_prompt_gives_a_mask_per_frame_and_itself_on_frame_0(tiny_sam2):
  mask = np.zeros((H, W), bool)
  mask[8:32, 12:36] = True
  model = sam2.load_model(tiny_sam2)
  out = sam2.propagate(tiny_sam2, _video(), sam2.Prompt(mask=mask), model=model)
  assert out.shape == (4, H, W) and out.dtype == bool
  iou = (out[0] & mask).sum() / (out[0] | mask).sum()
  assert iou > 0.9  # only the 16x16 low-resolution logits' boundary blurs
  box = sam2.propagate(tiny_sam2, _video(), sam2.parse_prompt(box='4,6,30,28'), model=model)
  points = sam2.propagate(tiny_sam2, _video(), sam2.parse_prompt(points='10,10;40,30', labels='1,0'), model=model)
  assert box.shape == points.shape == (4, H, W)


def test_prompt_parsing_and_checks():
  p = sam2.parse_prompt(box='1,2,30,20', points='5,6;7,8', labels='1,0')
  assert p.box == (1, 2, 30, 20) and p.points == ((5, 6), (7, 8)) and p.labels == (1, 0)
  assert sam2.parse_prompt(points='5,6').labels == (1,)
  with pytest.raises(ValueError, match='x0,y0,x1,y1'):
    sam2.parse_prompt(box='1,2,3')
  with pytest.raises(ValueError, match='inside the frame'):
    sam2.parse_prompt(box='1,2,60,20').check((H, W))
  with pytest.raises(ValueError, match='prompt mask is empty'):
    sam2.Prompt(mask=np.zeros((H, W), bool)).check((H, W))
  with pytest.raises(ValueError, match='at least one positive'):
    sam2.parse_prompt(points='5,6', labels='0').check((H, W))
  with pytest.raises(ValueError, match='no first-frame prompt'):
    sam2.Prompt().check((H, W))


def test_missing_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match='SAM-2 folder .*nowhere not found'):
    sam2.propagate(tmp_path / 'nowhere', _video(), sam2.parse_prompt(box='4,6,30,28'))

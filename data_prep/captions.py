"""Captions: the source's own text, a user JSON file, or BLIP-2 on the first ground-truth frame (paper §3.2).

`make_captioner(spec)`:
  'source'            the reader's caption (LaSOT nlp.txt, procedural attributes, "a <class>" for DAVIS/YTVOS)
  'file:<path.json>'  {"<video_id>/<object_id>": "text", ...}; missing keys fall back to the source caption
  'blip2:<folder>'    BLIP-2 (transformers Blip2ForConditionalGeneration + processor) from a local folder,
                      captioning the first amodal frame (the whole object on white). Imported lazily; a missing
                      folder is a clear error before any work starts.
A captioner is called as captioner(track, clip) -> str.
"""

from __future__ import annotations

import json
import os

import numpy as np


def source_caption(track, clip=None) -> str:
  del clip
  return track.caption


class FileCaptions:
  def __init__(self, path: str):
    if not os.path.isfile(path):
      raise FileNotFoundError(f'caption file {path} does not exist')
    with open(path) as f:
      self.table = {str(k): str(v) for k, v in json.load(f).items()}

  def __call__(self, track, clip=None) -> str:
    return self.table.get(track.key, self.table.get(track.video_id, track.caption))


class Blip2Captioner:
  """BLIP-2 from a local folder (no downloads). Captions the first ground-truth frame of each clip."""

  def __init__(self, model_dir: str, prompt: str | None = None, max_new_tokens: int = 30, device: str = 'cpu'):
    if not model_dir or not os.path.isdir(model_dir):
      raise FileNotFoundError(
          f'BLIP-2 captions need a local model folder (config.json + weights), got {model_dir!r}. '
          'Download e.g. Salesforce/blip2-opt-2.7b once and pass its folder: --captions blip2:<folder>')
    try:
      import torch
      from transformers import Blip2ForConditionalGeneration, Blip2Processor
    except ImportError as e:
      raise ImportError('BLIP-2 captions need `pip install torch transformers`') from e
    self.torch = torch
    self.processor = Blip2Processor.from_pretrained(model_dir, local_files_only=True)
    self.model = Blip2ForConditionalGeneration.from_pretrained(model_dir, local_files_only=True).to(device).eval()
    self.prompt, self.max_new_tokens, self.device = prompt, max_new_tokens, device
    self._args = (model_dir, prompt, max_new_tokens, device)

  def __reduce__(self):  # a worker process loads its own copy from the folder
    return type(self), self._args

  def caption_image(self, image: np.ndarray) -> str:
    from PIL import Image
    inputs = self.processor(images=Image.fromarray(image), text=self.prompt, return_tensors='pt').to(self.device)
    with self.torch.no_grad():
      ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens)
    return self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip()

  def __call__(self, track, clip=None) -> str:
    if clip is None:
      return track.caption
    return self.caption_image(clip.amodal[0]) or track.caption


def make_captioner(spec: str | None):
  if spec in (None, '', 'source'):
    return source_caption
  kind, _, arg = spec.partition(':')
  if kind == 'file':
    return FileCaptions(arg)
  if kind == 'blip2':
    return Blip2Captioner(arg)
  raise ValueError(f"--captions must be 'source', 'file:<json>' or 'blip2:<folder>', got {spec!r}")

"""Source readers. `get_source(name, root, **kwargs)` builds one by name (see each module for its layout)."""

from __future__ import annotations

import importlib

from data_prep.sources.base import FrameError, Source, SourceError, Track, VideoError  # noqa: F401

SOURCES = {
    'procedural': ('data_prep.sources.procedural', 'ProceduralSource'),
    'davis': ('data_prep.sources.davis', 'DavisSource'),
    'youtube_vos': ('data_prep.sources.youtube_vos', 'YoutubeVOSSource'),
    'lasot': ('data_prep.sources.lasot', 'LasotSource'),
    'pix2gestalt': ('data_prep.sources.pix2gestalt', 'Pix2GestaltSource'),
    'tfds_davis': ('data_prep.sources.tfds_davis', 'TfdsDavisSource'),
}


def get_source(name: str, root: str | None = None, **kwargs) -> Source:
  if name not in SOURCES:
    raise SourceError(f'unknown source {name!r}; choose from {sorted(SOURCES)}')
  mod, cls = SOURCES[name]
  return getattr(importlib.import_module(mod), cls)(root, **kwargs)

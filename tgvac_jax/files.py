"""The one atomic-write helper: a folder appears complete or not at all.

It sits at the top of the package, below every subpackage, so models/ (checkpoints), train/ (tokenizer,
validation), infer/ (completions) and eval/ (metrics) all take it without reaching into each other.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_folder(out: str | os.PathLike, write: Callable[[Path], None], *, overwrite: bool = True) -> Path:
  """Calls `write(tmp)` on a fresh temporary sibling of `out`, then renames it to `out` (replacing an existing
  folder when `overwrite`; FileExistsError otherwise). On any error the temporary folder is removed and `out` is
  left as it was."""
  out = Path(out).absolute()
  if out.exists() and not overwrite:
    raise FileExistsError(f'{out} exists')
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f'.{out.name}.tmp-', dir=out.parent))
  umask = os.umask(0)
  os.umask(umask)
  tmp.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; the finished folder gets a normal folder's mode
  try:
    write(tmp)
    if out.exists():
      old = Path(tempfile.mkdtemp(prefix=f'.{out.name}.old-', dir=out.parent))
      os.replace(out, old / out.name)
      os.replace(tmp, out)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out

"""Flat views of a module's parameters by dotted path, and one error that names every key that does not fit.

Our checkpoints (`checkpoint.py`) and the weight converters (`convert/`) both address parameters as
`'decoder.conv_in.kernel'`; they share this one formatter so a wrong file fails the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable

from flax import nnx


class ConversionError(ValueError):
  """Raised when a checkpoint and a model do not match key for key and shape for shape."""


def flat_params(module_or_state, filter=nnx.Param) -> dict[str, nnx.Variable]:
  """`{'a.0.b.kernel': variable}` for every variable of `filter` type in a module (or state)."""
  state = module_or_state if isinstance(module_or_state, nnx.State) else nnx.state(module_or_state, filter)
  return {'.'.join(str(p) for p in path): v for path, v in nnx.to_flat_state(state)}


def report_mismatch(what: str, missing: Iterable[str], unexpected: Iterable[str], mis_shaped: Iterable[str]) -> None:
  """Raises one ConversionError listing every missing, unexpected and mis-shaped key (nothing if all match)."""
  missing, unexpected, mis_shaped = sorted(missing), sorted(unexpected), sorted(mis_shaped)
  if not (missing or unexpected or mis_shaped):
    return
  lines = [f'{what}: checkpoint does not match the model.']
  for name, keys in (('missing in checkpoint', missing), ('not in model', unexpected), ('wrong shape', mis_shaped)):
    if keys:
      shown = keys[:20] + ([f'... and {len(keys) - 20} more'] if len(keys) > 20 else [])
      lines.append(f'  {name} ({len(keys)}): ' + ', '.join(shown))
  raise ConversionError('\n'.join(lines))

"""The library points one way: no module of tgvac_jax/ imports the tools (convert/, data_prep/), except the job
entry points that run.py dispatches to (tgvac_jax/jobs.py)."""

import ast
from pathlib import Path

from tgvac_jax.jobs import JOBS

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ('convert', 'data_prep')


def _imported(tree: ast.AST) -> set[str]:
  names = set()
  for node in ast.walk(tree):  # also imports inside functions
    if isinstance(node, ast.Import):
      names.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names.add(node.module)
  return names


def test_library_never_imports_tools():
  bad = []
  for path in sorted((ROOT / 'tgvac_jax').rglob('*.py')):
    module = '.'.join(path.relative_to(ROOT).with_suffix('').parts)
    if module in JOBS.values():
      continue
    bad += [f'{module} imports {name}' for name in _imported(ast.parse(path.read_text()))
            if name.split('.')[0] in TOOLS]
  assert not bad, bad


def test_the_check_sees_an_entry_point_import():
  """tgvac_jax/demo.py (an entry point) does import data_prep, so `_imported` would catch it elsewhere."""
  assert any(n.startswith('data_prep') for n in _imported(ast.parse((ROOT / 'tgvac_jax/demo.py').read_text())))

"""The library points one way: no module of tgvac_jax/ imports the tools (convert/, data_prep/), except the job
entry points that run.py dispatches to (tgvac_jax/jobs.py); and no two modules of tgvac_jax/ import each other,
directly or through others.

Imports inside functions count for both. A deferred import hides a circle from Python (nothing fails at import
time) but not from a reader: the two modules still depend on each other and neither can be understood, tested or
moved first. The one circle this package had (train/cache_latents -> trainer -> inputs -> cache_latents) ran
through two function-local imports, so a module-level-only check would never have seen it."""

import ast
from pathlib import Path

from tgvac_jax.jobs import JOBS

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ('convert', 'data_prep')


def _imports(tree: ast.AST) -> list[tuple[str, list[str]]]:
  """(module, names taken from it) for every import statement, also those inside functions."""
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out += [(a.name, []) for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      out.append((node.module, [a.name for a in node.names]))
  return out


def _imported(tree: ast.AST) -> set[str]:
  return {module for module, _ in _imports(tree)}


def _modules(package: Path) -> dict[str, Path]:
  """Dotted module name -> file; a package is named by its folder (its __init__.py)."""
  out = {}
  for path in sorted(package.rglob('*.py')):
    parts = path.relative_to(ROOT).with_suffix('').parts
    out['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
  return out


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
  """module -> the modules of `modules` it imports. `from a.b import c` is an edge to a.b.c when that is a module,
  else to a.b (a name defined in it); importing a.b.c also runs a/__init__.py, but that is Python's doing, not a
  dependency of the importer, so parents are not edges."""
  graph = {}
  for m, path in modules.items():
    edges = set()
    for module, names in _imports(ast.parse(path.read_text())):
      submodules = {f'{module}.{n}' for n in names}
      edges |= submodules & modules.keys()
      if not names or submodules - modules.keys():  # `import a.b`, or a name defined in a.b
        edges.add(module)
    graph[m] = {n for n in edges if n in modules and n != m}
  return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components with more than one module (Tarjan), each sorted."""
  index, low, stack, on_stack, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        out.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def test_library_never_imports_tools():
  bad = []
  for module, path in _modules(ROOT / 'tgvac_jax').items():
    if module in JOBS.values():
      continue
    bad += [f'{module} imports {name}' for name in sorted(_imported(ast.parse(path.read_text())))
            if name.split('.')[0] in TOOLS]
  assert not bad, bad


def test_the_check_sees_an_entry_point_import():
  """tgvac_jax/demo.py (an entry point) does import data_prep, so `_imported` would catch it elsewhere."""
  assert any(n.startswith('data_prep') for n in _imported(ast.parse((ROOT / 'tgvac_jax/demo.py').read_text())))


def test_no_import_circles():
  found = circles(import_graph(_modules(ROOT / 'tgvac_jax')))
  assert not found, 'import circles in tgvac_jax/: ' + '; '.join(' <-> '.join(c) for c in found)


def test_the_circle_check_sees_a_circle_through_a_function_local_import(tmp_path):
  """A three-module circle like the one train/ had, the last edge inside a function, is found, and only it."""
  sources = {'pkg': '', 'pkg.a': 'import pkg.b\n', 'pkg.b': 'from pkg import c\n',
             'pkg.c': 'def f():\n  from pkg.a import x\n', 'pkg.d': 'import pkg.a\n'}
  files = {}
  for name, src in sources.items():
    files[name] = tmp_path / f'{name}.py'
    files[name].write_text(src)
  assert circles(import_graph(files)) == [['pkg.a', 'pkg.b', 'pkg.c']]

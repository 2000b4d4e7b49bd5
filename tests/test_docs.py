"""The docs cannot rot: every command that README.md and docs/*.md show is checked against the code, without running
anything heavy.

- `python run.py --config configs/<x>.py[:arg] --config.key=value ...`: the config file exists and defines every key
  (with `tgvac_jax.config_keys`, the check run.py itself makes, so a command fails here exactly when run.py would
  refuse it);
- `python -m module` imports, `python path/to/script.py` exists;
- every relative link and image resolves, a `#heading` anchor included.

Commands are read from fenced code blocks (a trailing backslash continues a line; `# comments`, `[optional]`
brackets and `...` are allowed) and from inline code spans that start with `python`; a template with a
`<placeholder>` is not a command.
"""

import importlib
import re
import shlex
from pathlib import Path

import pytest

from tgvac_jax import config_keys

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / 'README.md'] + sorted((ROOT / 'docs').glob('*.md'))
FENCE = re.compile(r'^```.*?\n(.*?)^```', re.S | re.M)
INLINE = re.compile(r'`(python3? [^`]+)`')
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')
SHELL_OPS = ('&&', '||', ';', '|')


def commands(text: str) -> list[tuple[int, list[str]]]:
  """(line number, argv from `python` on) of every python command in fenced blocks and inline code spans."""
  out = []
  for block in FENCE.finditer(text):
    first = text.count('\n', 0, block.start(1)) + 1
    lines = block.group(1).split('\n')
    i = 0
    while i < len(lines):
      start, line = first + i, lines[i]
      while line.rstrip().endswith('\\') and i + 1 < len(lines):
        i += 1
        line = line.rstrip()[:-1] + ' ' + lines[i]
      i += 1
      out += [(start, argv) for argv in _python_calls(line)]
  for m in INLINE.finditer(text):
    out += [(text.count('\n', 0, m.start()) + 1, argv) for argv in _python_calls(m.group(1))]
  return out


def _python_calls(line: str) -> list[list[str]]:
  try:
    tokens = shlex.split(line, comments=True)
  except ValueError:  # not shell (an unbalanced quote in prose)
    return []
  if re.search(r'<\w+>', line):  # a template (`configs/<name>.py`), not a command
    return []
  calls, current = [], None
  for tok in tokens:
    if tok in SHELL_OPS:
      current = None
    elif tok in ('python', 'python3'):
      current = [tok]
      calls.append(current)
    elif current is not None:
      tok = tok.removeprefix('[').removesuffix(']')  # [--config.optional=value]
      if tok and tok != '...':
        current.append(tok)
  return calls


def check_run_py(argv: list[str]) -> str | None:
  """One line naming what is wrong with a `python run.py ...` command, or None."""
  args = argv[2:]
  spec = next((a.split('=', 1)[1] for a in args if a.startswith('--config=')), None)
  if spec is None and '--config' in args and args.index('--config') + 1 < len(args):
    spec = args[args.index('--config') + 1]
  if spec is None:
    return 'no --config'
  path = spec.partition(':')[0]
  if not (ROOT / path).is_file():
    return f'{path}: no such config file'
  keys = [a[len('--config.'):].split('=', 1)[0] for a in args if a.startswith('--config.')]
  return config_keys.unknown_key(str(ROOT / spec), keys)


def check_python(argv: list[str]) -> str | None:
  """`python -m module`: it imports; `python script.py`: the file exists."""
  if argv[1] == '-m':
    try:
      importlib.import_module(argv[2])
    except ImportError as e:
      return f'python -m {argv[2]}: {e}'
    return None
  if argv[1].endswith('.py') and not (ROOT / argv[1]).is_file():
    return f'{argv[1]}: no such script'
  return None


def _without_code_blocks(text: str) -> str:
  """Fenced blocks blanked to their newlines, so line numbers stay right."""
  return FENCE.sub(lambda m: '\n' * m.group(0).count('\n'), text)


def slug(heading: str) -> str:
  """GitHub's anchor for a heading: lower case, punctuation dropped, spaces -> hyphens."""
  return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def anchors(path: Path) -> set[str]:
  text = _without_code_blocks(path.read_text())
  return {slug(m.group(1)) for m in re.finditer(r'^#+ (.+)$', text, re.M)}


def _shown(path: Path) -> str:
  return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def check_links(path: Path) -> list[str]:
  text = INLINE.sub('', _without_code_blocks(path.read_text()))
  bad = []
  for m in LINK.finditer(text):
    target = m.group(1)
    if re.match(r'[a-z]+:', target):  # https:, mailto:
      continue
    file, _, anchor = target.partition('#')
    dest = (path.parent / file).resolve() if file else path
    where = f'{_shown(path)}:{text.count(chr(10), 0, m.start()) + 1}: {target}'
    if not dest.exists():
      bad.append(f'{where}: no such file')
    elif anchor and dest.suffix == '.md' and anchor not in anchors(dest):
      bad.append(f'{where}: no heading #{anchor} in {_shown(dest)}')
  return bad


def _all_commands():
  return [(f'{p.relative_to(ROOT)}:{line}', argv) for p in DOCS for line, argv in commands(p.read_text())]


def test_the_docs_show_commands():
  """Guards the checks below against passing on nothing: the README's and the pages' commands are found."""
  found = _all_commands()
  run_py = {where.split(':')[0] for where, argv in found if argv[1:2] == ['run.py']}
  assert {'README.md', 'docs/training.md', 'docs/inference.md', 'docs/evaluation.md'} <= run_py, run_py
  assert any(argv[1:3] == ['-m', 'data_prep.build'] for _, argv in found)


def test_every_run_py_command_names_a_config_and_its_keys():
  bad = [f'{where}: {err}' for where, argv in _all_commands() if argv[1:2] == ['run.py']
         for err in [check_run_py(argv)] if err]
  assert not bad, '\n'.join(bad)


def test_every_python_module_and_script_exists():
  bad = [f'{where}: {err}' for where, argv in _all_commands() if len(argv) > 1 and argv[1] != 'run.py'
         for err in [check_python(argv)] if err]
  assert not bad, '\n'.join(bad)


@pytest.mark.parametrize('path', DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_image_resolves(path):
  bad = check_links(path)
  assert not bad, '\n'.join(bad)


def test_the_checks_catch_what_they_are_for(tmp_path):
  """A continued command with an `:arg` variant, brackets and a comment parses whole; a misspelled key, a missing
  config, a missing module, a broken link and a broken anchor are each reported."""
  doc = ('# Top\n\n```bash\npython run.py --config configs/frame.py:tiny \\\n    [--config.optim.lr=1e-3] ... '
         '--config.data.size=16   # a comment\npython run.py --config configs/infer.py --config.sampler.strid=4\n'
         'python run.py --config=configs/nope.py\npython -m data_prep.nope\n```\n'
         'See `python bench/nope.py`, [top](#top), [gone](#gone), [file](nope.md), ![gif](demo/x.gif).\n')
  found = commands(doc)
  assert found[0] == (4, ['python', 'run.py', '--config', 'configs/frame.py:tiny', '--config.optim.lr=1e-3',
                          '--config.data.size=16'])
  assert [line for line, _ in found] == [4, 6, 7, 8, 10]
  errors = [check_run_py(argv) if argv[1] == 'run.py' else check_python(argv) for _, argv in found]
  assert errors[0] is None
  assert errors[1].startswith("unknown config key 'sampler.strid'; closest: sampler.stride")
  assert errors[2] == 'configs/nope.py: no such config file'
  assert errors[3].startswith('python -m data_prep.nope: No module named')
  assert errors[4] == 'bench/nope.py: no such script'
  page = tmp_path / 'page.md'
  page.write_text(doc)
  assert [b.split(': ', 1)[1] for b in check_links(page)] == ['#gone: no heading #gone in page.md',
                                                              'nope.md: no such file', 'demo/x.gif: no such file']

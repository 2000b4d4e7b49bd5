"""bench/tpu_fit_table.py: a row compiled by the real compile job (the tiny frame step for a v5e-8) becomes a table
row whose cells are compile.json's numbers, a finished row is reused and a changed command is not, and a row whose
job fails shows the job's one error line."""

from __future__ import annotations

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, 'bench'))

import tpu_fit_table as fit  # noqa: E402

pytest.importorskip('libtpu', reason='compiling for TPU needs libtpu (the tpu extra)')

GIB = 2 ** 30
# tests/compile/test_compile.py's tiny frame step: from cached latents, one-level UNet, compiles in seconds
TINY = ('mesh.fsdp=8,mesh.min_shard_size=1024,data.size=16,data.clip_len=4,model.unet_channels=(32,),'
        'model.vae_channels=(16,32),model.text_width=32,model.text_layers=1,data.cached_latents=latents/')
ROW = fit.Row('tiny-v5e-8', 'tiny frame step', 'v5e-8', fit._train('configs/frame.py:tiny', TINY))


@pytest.fixture(scope='module')
def swept(tmp_path_factory):
  out = tmp_path_factory.mktemp('fit')
  fit.sweep([ROW], 0.0, out)
  return out


def _cells(text: str, label: str) -> list[str]:
  line = next(ln for ln in text.splitlines() if ln.startswith(f'| {label}'))
  return [c.strip() for c in line.strip('|').split(' | ')]


def test_row_is_the_compile_json_of_its_command(swept):
  record = json.loads((swept / 'tiny-v5e-8.run.json').read_text())
  assert record['rc'] == 0, (swept / 'tiny-v5e-8.log').read_text()[-2000:]
  assert record['wall_s'] > 0 and record['cpu_s'] > 0 and 0.1 < record['peak_rss_gb'] < 24
  p = json.loads((swept / 'tiny-v5e-8' / 'compile.json').read_text())['programs'][0]
  text, missing = fit.table([ROW], swept, 0.0)
  assert missing == []
  cells = _cells(text, 'tiny frame step')
  # HBM from its parts, as XLA's memory_analysis gives them; the v5e's 16 GiB from chips.py's table
  hbm = p['argument_bytes'] + p['output_bytes'] - p['alias_bytes'] + p['temp_bytes'] + p['code_bytes']
  assert cells[1:4] == ['v5e-8', 'yes', f"{hbm / GIB:.2f} of 16 (args {p['argument_bytes'] / GIB:.2f}, "
                                        f"temp {p['temp_bytes'] / GIB:.2f})"]
  assert cells[4] == f"{p['model_flops'] / 1e12:.1f} (XLA: {p['compiled_flops'] / 1e12:.1f})"
  step = max(p['flops'] / 8 / 197e12, p['bytes_accessed'] / 819e9, p['ici_s'])  # v5e: 197 TFLOP/s, 819 GB/s
  assert cells[6].startswith(f'{step * 1e3:.0f} ms')
  assert f"{record['peak_rss_gb']:.1f} GB RSS" in cells[8]
  assert "`python run.py --config configs/compile.py --config.topology=v5e-8 --config.train=configs/frame.py:tiny" \
      in text
  with pytest.raises(StopIteration):  # the rows still to do are named, not put in the table
    _cells(fit.table([ROW, fit.Row('other', 'other row', 'v5e-8', ROW.config)], swept, 0.0)[0], 'other row')


def test_done_row_is_reused_and_a_changed_one_is_not(swept, capsys):
  log = swept / 'tiny-v5e-8.log'
  before = log.stat().st_mtime_ns
  fit.sweep([ROW], 0.0, swept)
  assert 'done before, reused' in capsys.readouterr().out and log.stat().st_mtime_ns == before
  record = json.loads((swept / 'tiny-v5e-8.run.json').read_text())
  assert fit.reusable(record, fit.command(ROW, 0.0, swept), swept / ROW.name)
  assert not fit.reusable(record, fit.command(ROW, -1.0, swept), swept / ROW.name)       # another effort
  assert not fit.reusable({**record, 'rc': 1}, fit.command(ROW, 0.0, swept), swept / ROW.name)
  assert not fit.reusable(record, fit.command(ROW, 0.0, swept), swept / 'elsewhere')    # no compile.json there


def test_row_over_the_hbm_says_by_how_much(swept):
  p = json.loads((swept / 'tiny-v5e-8' / 'compile.json').read_text())['programs'][0]
  over = {**p, 'hbm_bytes': p['hbm_capacity'] + 3 * GIB // 2, 'fits': False}
  assert fit.cells(over, None)[0] == '**no**, over by 1.50 GiB'


def test_failed_row_shows_the_jobs_error_line(tmp_path):
  bad = fit.Row('bad-v5e-7', 'bad row', 'v5e-7', ROW.config)
  fit.sweep([bad], 0.0, tmp_path)
  text, _ = fit.table([bad], tmp_path, 0.0)
  cells = _cells(text, 'bad row')
  assert cells[2].startswith("failed: `run.py: error: unknown TPU topology 'v5e-7'"), cells
  assert 'Traceback' not in text and not (tmp_path / 'bad-v5e-7').exists()


def test_frame_and_motion_rows_skip_exactly_the_batches_the_job_refuses():
  """A frame or motion row is skipped where the compile job's own mesh and batch checks refuse its batch, and names
  the mesh the job builds (batch 16 on a v5e-32, frames or the paper's 16 clips: fsdp 16 x tensor 2)."""
  from configs import frame, motion  # pylint: disable=import-outside-toplevel
  from tgvac_jax.compile import chips, programs  # pylint: disable=import-outside-toplevel
  from tgvac_jax.train.sharding import make_mesh  # pylint: disable=import-outside-toplevel
  rows = [r for r in fit.matrix() if r.name.startswith(('frame-b', 'motion-')) and 'accum' not in r.name]
  assert {'frame-b16-v5e-32', 'motion-none-v5e-32', 'motion-full-v5e-32'} <= {r.name for r in rows}
  for row in rows:
    c = (motion if row.name.startswith('motion-') else frame).get_config()
    for item in dict(row.config)['overrides'].split(','):
      key, value = item.split('=')
      c[key] = int(value) if key == 'batch_size' else value
    if row.name.startswith('motion-'):
      assert c.batch_size == 16, row.name   # the paper's clips per step on every topology
    mesh = make_mesh(c.mesh, chips.devices(chips.parse(row.topology)), batch=c.batch_size)
    try:
      programs.check_batch(c, mesh)
      refused = False
    except ValueError:
      refused = True
    assert bool(row.skip) == refused, row.name
    if not refused:
      t = mesh.shape['tensor']
      assert row.label.endswith(f'fsdp {mesh.shape["fsdp"]}' + (f' x tensor {t}' if t > 1 else '')), row.label

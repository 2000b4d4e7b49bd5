"""The web app's startup time and time to first result, as a user meets them: `python run.py --config
configs/app.py` in a fresh process (imports, model load, compile, serving), then the first example through the
page's API (gradio_client), then the same request again (compiled: the steady state).

  python bench/app_startup.py --checkpoint out/demo/motion/model
  python bench/app_startup.py --checkpoint out/demo_quick/motion/model --example 1
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import app as app_configs  # noqa: E402
from tgvac_jax.app import examples, job  # noqa: E402

from interleave import cpu_name  # noqa: E402  (bench/, the script's own folder)


def wait_up(url: str, proc: subprocess.Popen, timeout: float) -> None:
  t_end = time.time() + timeout
  while time.time() < t_end:
    if proc.poll() is not None:
      raise SystemExit(f'the app exited with {proc.returncode}')
    try:
      urllib.request.urlopen(url, timeout=5)
      return
    except OSError:
      time.sleep(0.2)
  raise SystemExit(f'the app did not answer within {timeout}s')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--checkpoint', default='out/demo/motion/model')
  parser.add_argument('--example', type=int, default=0, help='which example the requests complete')
  parser.add_argument('--timeout', type=float, default=3600)
  args = parser.parse_args()
  from gradio_client import Client  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory() as tmp:  # the example the page lists at this index, with its caption
    ex = examples.list_examples(examples.demo_roots(args.checkpoint), Path(tmp),
                                app_configs.get_config().max_examples)[args.example]
  port = job.free_port()
  url = f'http://127.0.0.1:{port}/'
  t0 = time.time()
  proc = subprocess.Popen([sys.executable, 'run.py', '--config', 'configs/app.py',
                           f'--config.checkpoint={args.checkpoint}', f'--config.port={port}'], cwd=ROOT)
  try:
    wait_up(url, proc, args.timeout)
    startup = time.time() - t0
    client = Client(url, verbose=False)
    params = client.view_api(return_format='dict', print_info=False)['named_endpoints']['/complete']['parameters']
    sampler = [p['parameter_default'] for p in params[8:]]  # the page's defaults: the checkpoint's
    times = []
    for _ in range(2):
      t = time.time()
      client.predict('Example', ex.key, None, None, 0, '', '', ex.caption, *sampler, api_name='/complete')
      times.append(time.time() - t)
  finally:
    proc.terminate()
    proc.wait(60)
  print(f'{cpu_name()}, {os.cpu_count()} cores; {args.checkpoint}; example '
        f'{ex.key} ({ex.frames} frames, {ex.size[1]}x{ex.size[0]}); sampler {sampler}')
  print(f'startup (process start -> page answers): {startup:.1f}s')
  print(f'first result (request -> files): {times[0]:.1f}s; the same request again: {times[1]:.1f}s')
  print(f'process start -> first result: {startup + times[0]:.1f}s')


if __name__ == '__main__':
  main()

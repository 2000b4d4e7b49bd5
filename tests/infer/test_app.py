"""configs/app.py: the page started once on a free localhost port with the tiny random checkpoint and a
two-clip amodal root, driven through headless Chromium (Selenium, the system chromedriver) and gradio_client.

The reference is configs/infer.py run in-process on the same clip, caption, seed and settings: the page's zip must
hold the same object and mask PNGs, byte for byte (the page compiles its program with a step listener, the job
without). Bad inputs end in the page's message with no request folder left, and the app keeps answering.
"""

import io as bytes_io
import json
import os
import shutil
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from fakes import object_labels, write_frames, write_masks  # noqa: E402
from configs import app as app_configs  # noqa: E402
from tgvac_jax import jobs  # noqa: E402
from tgvac_jax.app import job as app_job  # noqa: E402
from tgvac_jax.app.requests import RequestFolders, UserError, first_frame, video_input  # noqa: E402
from tgvac_jax.app.service import GALLERY_FRAMES, Completions, Request  # noqa: E402
from tgvac_jax.eval import amodal_root  # noqa: E402
from tgvac_jax.infer import io, outputs  # noqa: E402

FRAMES, SIZE = 6, (20, 24)
SAMPLER = {'steps': 2, 'window_length': 4, 'stride': 2, 'guidance_scale': 2.0}
TIMEOUT = 600  # seconds for one completion on a loaded 2-core CPU (the first one may compile)


def _clip(seed: int):
  """A red square moving right, its middle hidden by a blue bar: frames, visible mask, amodal mask, object."""
  h, w = SIZE
  frames = np.full((FRAMES, h, w, 3), 90, np.uint8)
  amodal = np.zeros((FRAMES, h, w), bool)
  for t in range(FRAMES):
    amodal[t, 5 + seed:13 + seed, 2 + 2 * t:10 + 2 * t] = True
  bar = np.zeros((h, w), bool)
  bar[:, 9:13] = True
  frames[amodal] = (220, 30, 30)
  frames[:, bar] = (30, 30, 220)
  objects = np.where(amodal[..., None], np.array([220, 30, 30], np.uint8), np.uint8(255)).astype(np.uint8)
  return frames, amodal & ~bar, amodal, objects


@pytest.fixture(scope='module')
def examples_root(tmp_path_factory):
  root = tmp_path_factory.mktemp('roots') / 'examples'
  captions = {}
  for k, name in enumerate(('square_a', 'square_b')):
    amodal_root.write_sequence(root, name, *_clip(k))
    captions[name] = f'a red square {name[-1]}'
  (root / amodal_root.CAPTIONS).write_text(json.dumps(captions))
  return root


@pytest.fixture(scope='module')
def app(tiny_checkpoint, examples_root, tmp_path_factory):
  c = app_configs.get_config()
  c.checkpoint, c.examples = str(tiny_checkpoint), str(examples_root)
  c.port = app_job.free_port()
  c.workdir = str(tmp_path_factory.mktemp('app'))
  c.infer.sampler.update(SAMPLER)
  c.infer.mask_threshold, c.infer.preview_height = 0.8, 64
  started = app_job.start(c)
  yield started
  started.close()


@pytest.fixture(scope='module')
def reference(infer_config, examples_root, tmp_path_factory):
  """configs/infer.py's files for (sequence, caption), computed once each."""
  done = {}

  def make(name: str, caption: str) -> Path:
    if (name, caption) not in done:
      out = tmp_path_factory.mktemp('reference') / name
      c = infer_config(video=str(examples_root / amodal_root.FRAMES / name),
                       masks=str(examples_root / amodal_root.VISIBLE / name), object_id=1, text=caption,
                       out=str(out), **{f'sampler.{k}': v for k, v in SAMPLER.items()})
      jobs.run(c)
      done[name, caption] = out
    return done[name, caption]
  return make


def _requests(app) -> list[str]:
  return sorted(p.name for p in app.service.folders.root.iterdir())


def _same_files(archive: bytes, reference: Path) -> dict:
  """Every PNG and the previews of the zip equal configs/infer.py's; returns the zip's completion.json."""
  with zipfile.ZipFile(bytes_io.BytesIO(archive)) as zf:
    files = {n.split('/', 1)[1]: zf.read(n) for n in zf.namelist() if not n.endswith('/')}
  want = sorted(str(p.relative_to(reference)) for p in reference.rglob('*') if p.is_file())
  assert sorted(files) == want
  masks = [n for n in want if n.startswith('amodal_mask/')]
  assert len(masks) == FRAMES
  for name in want:
    if name != 'completion.json':
      assert files[name] == (reference / name).read_bytes(), name
  return json.loads(files['completion.json'])


# ------------------------------------------------------------------------------------------------ browser

@pytest.fixture(scope='module')
def browser():
  from selenium import webdriver  # pylint: disable=import-outside-toplevel
  from selenium.webdriver.chrome.service import Service  # pylint: disable=import-outside-toplevel
  if not Path('/usr/bin/chromedriver').is_file():
    pytest.skip('Debian chromium-driver is not installed (.ci/run installs it)')
  opts = webdriver.ChromeOptions()
  for arg in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--window-size=1400,1800'):
    opts.add_argument(arg)
  driver = webdriver.Chrome(service=Service('/usr/bin/chromedriver'), options=opts)
  yield driver
  driver.quit()


def test_browser_example_run_download_and_bad_upload(app, browser, reference, examples_root, tmp_path):
  from tgvac_jax.app import screenshot  # pylint: disable=import-outside-toplevel
  caption = 'a large red square'
  screenshot.open_page(browser, app.url)
  picked = screenshot.pick_example(browser, 0)
  assert picked == 'a red square a'                                    # the example's caption prefilled
  screenshot.set_caption(browser, caption)
  screenshot.run_and_wait(browser, TIMEOUT)
  assert 'mIoU' in screenshot.text_of(browser, 'scores')
  shot = tmp_path / 'app.png'
  browser.save_screenshot(str(shot))
  assert shot.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  archive = urllib.request.urlopen(screenshot.download_url(browser), timeout=30).read()
  info = _same_files(archive, reference('square_a', caption))
  assert info['caption'] == caption and info['config']['sampler']['steps'] == SAMPLER['steps']

  before = _requests(app)
  corrupt = tmp_path / 'clip.mp4'
  corrupt.write_bytes(b'\x00\x00\x00\x18ftypmp42' + bytes(range(256)) * 4)
  masks = tmp_path / 'masks'
  write_masks(masks, object_labels(FRAMES, SIZE))
  shutil.make_archive(str(tmp_path / 'masks'), 'zip', masks)
  screenshot.upload(browser, 'video-upload', corrupt)
  screenshot.upload(browser, 'masks-upload', tmp_path / 'masks.zip')
  screenshot.set_caption(browser, caption)
  screenshot.click_run(browser)
  message = screenshot.wait_for_error(browser, 60)
  assert 'cannot read the video' in message
  assert _requests(app) == before                                      # nothing written
  assert urllib.request.urlopen(app.url, timeout=30).status == 200     # still up


# ------------------------------------------------------------------------------------------------ gradio_client

def _client_args(key: str, caption: str, seed: int = 0):
  return ('Example', key, None, None, 0, '', '', caption, SAMPLER['steps'], SAMPLER['guidance_scale'],
          SAMPLER['window_length'], SAMPLER['stride'], 1, seed)


def test_gradio_client_flow(app, reference):
  from gradio_client import Client  # pylint: disable=import-outside-toplevel
  from gradio_client.exceptions import AppError  # pylint: disable=import-outside-toplevel
  client = Client(app.url, verbose=False)
  caption = 'a red square b'
  _, scores, _, archive, info = client.predict(*_client_args('examples/square_b', caption),
                                               api_name=f'/{app_job.page_lib.API_NAME}')
  assert 'occluded mIoU' in scores and info['request'] in _requests(app)
  done = _same_files(Path(archive).read_bytes(), reference('square_b', caption))
  assert done['app_request'] == info['request']
  before = _requests(app)
  with pytest.raises(AppError, match='the caption is empty'):
    client.predict(*_client_args('examples/square_b', '  '), api_name=f'/{app_job.page_lib.API_NAME}')
  assert _requests(app) == before


def test_two_requests_run_one_after_the_other(app):
  from gradio_client import Client  # pylint: disable=import-outside-toplevel
  client = Client(app.url, verbose=False)
  jobs_ = [client.submit(*_client_args(f'examples/square_{s}', f'a red square {s}', seed=k),
                         api_name=f'/{app_job.page_lib.API_NAME}') for k, s in enumerate('ab')]
  queued = [False, False]   # the server may take either submission first, so watch both
  while not all(j.done() for j in jobs_):
    for k, j in enumerate(jobs_):
      st = j.status()
      queued[k] |= st.code.name == 'IN_QUEUE' and st.rank is not None   # rank 0: next (the page: queue 1/1)
    time.sleep(0.05)
  results = [j.result(timeout=TIMEOUT) for j in jobs_]
  infos = [r[4] for r in results]
  first, second = sorted(range(2), key=lambda k: infos[k]['started'])
  assert infos[first]['started'] + infos[first]['total_s'] <= infos[second]['started'] + 0.05   # one at a time
  assert queued[second], queued                                         # the later one saw its queue position
  for k, (r, s) in enumerate(zip(results, 'ab')):
    with zipfile.ZipFile(r[3]) as zf:
      done = json.loads(zf.read(f'square_{s}/completion.json'))
      assert all(n.startswith(f'square_{s}/') for n in zf.namelist())
    assert done['caption'] == f'a red square {s}' and done['app_request'] == infos[k]['request']
    assert done['hypotheses']['seeds'] == [k]
  assert infos[0]['request'] != infos[1]['request']


# ------------------------------------------------------------------------------------------------ service

def test_progress_reports_every_step(app):
  seen = []
  app.service.complete(Request('a red square', example='examples/square_a', **SAMPLER, seed=3),
                       progress=lambda fraction, desc: seen.append((fraction, desc)))
  steps = [d for _, d in seen if d.startswith('denoising')]
  assert steps == [f'denoising: step {i} of 2' for i in (1, 2)]
  assert [f for f, _ in seen] == sorted(f for f, _ in seen)


def test_bad_inputs_are_refused_with_nothing_written(app, tmp_path):
  write_frames(tmp_path / 'frames', FRAMES, SIZE)
  shutil.make_archive(str(tmp_path / 'frames'), 'zip', tmp_path / 'frames')
  labels = object_labels(FRAMES, SIZE)
  write_masks(tmp_path / 'short', labels[:-1])
  shutil.make_archive(str(tmp_path / 'short'), 'zip', tmp_path / 'short')
  empty = labels.copy()
  empty[0] = 0
  write_masks(tmp_path / 'empty', empty)
  shutil.make_archive(str(tmp_path / 'empty'), 'zip', tmp_path / 'empty')
  (tmp_path / 'notes.txt').write_text('not a video')
  long_frames = tmp_path / 'long'
  write_frames(long_frames, app.service.limits.max_frames + 1, (8, 8))
  shutil.make_archive(str(long_frames), 'zip', long_frames)
  write_masks(tmp_path / 'long_masks', object_labels(app.service.limits.max_frames + 1, (8, 8)))
  shutil.make_archive(str(tmp_path / 'long_masks'), 'zip', tmp_path / 'long_masks')
  frames, masks = str(tmp_path / 'frames.zip'), str(tmp_path / 'short.zip')
  cases = [
      (Request('a dog', video=str(tmp_path / 'notes.txt'), masks=masks), 'not a video'),
      (Request('a dog', video=frames, masks=masks), f'{FRAMES - 1} mask PNGs for {FRAMES} frames'),
      (Request('a dog', video=frames, masks=str(tmp_path / 'empty.zip')), 'first-frame mask is empty'),
      (Request('a dog', video=frames), 'no object'),
      (Request('a dog', video=frames, box='1,1,5,5'), '--config.sam2'),
      (Request('', example='examples/square_a'), 'the caption is empty'),
      (Request('red ' * 40, example='examples/square_a'), 'tokens long'),
      (Request('a dog', video=str(long_frames) + '.zip', masks=str(tmp_path / 'long_masks.zip')),
       f'at most {app.service.limits.max_frames}'),
      (Request('a dog', example='examples/square_a', window_length=4, stride=5), r'stride \(5\) > window_length'),
  ]
  before = _requests(app)
  for req, message in cases:
    with pytest.raises(UserError, match=message):
      app.service.complete(req)
    assert _requests(app) == before


def test_request_folders_are_swept(tmp_path):
  folders = RequestFolders(tmp_path, keep_s=3600)
  old, new = folders.new(), folders.new()
  (old / 'x').write_text('x')
  t = time.time() - 7200
  os.utime(old, (t, t))
  assert folders.sweep() == [old]
  assert [p.name for p in tmp_path.iterdir()] == [new.name]
  folders.close()


def test_missing_checkpoint_is_one_line(tmp_path):
  c = app_configs.get_config()
  c.checkpoint = str(tmp_path / 'nope')
  with pytest.raises(FileNotFoundError, match=r'python run.py --config configs/demo.py.*--config.checkpoint'):
    jobs.run(c)


def test_demo_checkpoint_sampling_defaults(tmp_path):
  from configs import demo as demo_configs  # pylint: disable=import-outside-toplevel
  from tgvac_jax import demo  # pylint: disable=import-outside-toplevel
  assert app_job.DEMO_STAMP == demo.STAMP
  quick = demo_configs.get_config('quick')
  (tmp_path / 'motion').mkdir()
  stage = {'num_steps': quick.motion.steps, 'data': {'clip_len': quick.motion.clip_len}}
  (tmp_path / 'motion' / demo.STAMP).write_text(json.dumps({'finished': True, 'config': stage}))
  got = app_job.demo_sampling(tmp_path / 'motion' / 'model')
  assert got == {'steps': quick.sample.steps, 'guidance_scale': quick.sample.guidance_scale,
                 'window_length': quick.sample.window_length, 'stride': quick.unseen.stride,
                 'chunk_size': quick.sample.chunk_size, 'mask_threshold': quick.sample.mask_threshold,
                 'mask_closing': quick.sample.mask_closing, 'fit': quick.sample.fit,
                 'object_context': quick.sample.object_context, 'temporal_prior': quick.sample.temporal_prior}
  assert app_job.demo_sampling(tmp_path / 'elsewhere' / 'model') == {}
  # the page's -1 takes the demo's temporal prior for a demo checkpoint, configs/infer.py's (off) for another
  from configs import app as app_configs  # pylint: disable=import-outside-toplevel
  c = app_configs.get_config()
  for checkpoint, want in ((tmp_path / 'motion' / 'model', quick.sample.temporal_prior),
                           (tmp_path / 'elsewhere' / 'model', 0)):
    c.checkpoint = str(checkpoint)
    assert c.infer.temporal_prior == -1 and app_job.resolved_infer_block(c)[0].temporal_prior == want


def test_first_frame_prompts_become_the_infer_jobs_sam2_prompt(app, tmp_path):
  """With --config.sam2, a box and clicks go to configs/infer.py's box/points (the job's own SAM-2 path); the
  click target is the upload's first frame."""
  frames = write_frames(tmp_path / 'frames', FRAMES, SIZE)
  shutil.make_archive(str(tmp_path / 'frames'), 'zip', tmp_path / 'frames')
  np.testing.assert_array_equal(first_frame(tmp_path / 'frames.zip', app.service.limits), frames[0])
  service = Completions(app.service.completer, app.service.config, [], RequestFolders(tmp_path / 'requests', 60),
                        sam2=str(tmp_path / 'sam2'))
  folder = service.folders.new()
  ic = service.request_config(Request('a dog', video=str(tmp_path / 'frames.zip'), box='1,2,15,16',
                                      points='3,4;5,6'), folder)
  seqs, _ = app_job.infer_job.single_sequence(ic)
  assert seqs[0].prompt.box == (1, 2, 15, 16) and seqs[0].prompt.points == ((3, 4), (5, 6))
  assert seqs[0].prompt.labels == (1, 1) and str(seqs[0].sam2_folder) == str(tmp_path / 'sam2')
  assert seqs[0].probe() == (FRAMES,) + SIZE
  service.folders.close()


def test_gif_upload_reads_like_its_frames(app, tmp_path):
  """A GIF (PyAV decodes it like any video) gives back the frames it was made of (flat colours: no dithering)."""
  frames = _clip(0)[0]
  Image.fromarray(frames[0]).save(tmp_path / 'clip.gif', save_all=True, duration=100, loop=0,
                                  append_images=[Image.fromarray(f) for f in frames[1:]])
  folder = tmp_path / 'request'
  path = video_input(tmp_path / 'clip.gif', folder, app.service.limits)
  np.testing.assert_array_equal(io.read_video(path).frames, frames)
  np.testing.assert_array_equal(first_frame(tmp_path / 'clip.gif', app.service.limits), frames[0])


def test_hypotheses_gallery_shows_every_sample_over_white(tmp_path):
  """One strip per hypothesis of a written completion (samples/<k>/object/), frames composited over white,
  labelled with its seed and scores, the written one marked."""
  frames, visible, amodal, objects = _clip(0)
  rgb = np.stack([objects, np.full_like(objects, 255)])            # hypothesis 1: nothing
  masks = np.stack([amodal, np.zeros_like(amodal)])
  info = {'hypotheses': {'seeds': [5, 6], 'select': 'coverage', 'chosen': 0,
                         'scores': [{'coverage': 1.0}, {'coverage': 0.0}]}}
  done = tmp_path / 'done'
  done.mkdir()
  outputs.write_completion(done, [f'{i:05d}' for i in range(FRAMES)], frames, visible, rgb[0], masks[0], info,
                           fps=5.0, preview_height=20, samples=(rgb, masks))
  items = Completions._gallery(done, tmp_path / 'gallery')  # pylint: disable=protected-access
  assert [label for _, label in items] == ['seed 5: coverage 1.00, written to object/', 'seed 6: coverage 0.00']
  strips = [np.asarray(Image.open(p)) for p, _ in items]
  picked = np.linspace(0, FRAMES - 1, min(GALLERY_FRAMES, FRAMES)).round().astype(int)
  np.testing.assert_array_equal(strips[0], np.concatenate(list(objects[picked]), axis=1))
  assert (strips[1] == 255).all()


def test_nothing_leaves_the_machine(app):
  """Served on the loopback only, not shared, and without gradio's analytics (which would post usage data and fetch
  the latest version number from the internet at start)."""
  assert app.page.analytics_enabled is False
  assert app.page.share is False
  assert app.url.startswith('http://127.0.0.1:')

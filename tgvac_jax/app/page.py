"""The Gradio page over `service.Completions`: inputs on the left, results on the right, one Run button.

The Run event is the page's API too (`api_name='complete'`, gradio_client), with every input as a visible
component so the API and the page take the same arguments. Runs are queued one at a time (the queue shows each
waiting user their position); a run reports the sampler's DDIM steps to the progress bar. Every refusal is a
`gr.Error` with the `UserError`'s message; the server stays up whatever a request does.
"""

from __future__ import annotations

import logging
import queue
from concurrent.futures import ThreadPoolExecutor

import gradio as gr

from tgvac_jax.app.requests import UPLOAD_VIDEO_EXTS, UserError, first_frame
from tgvac_jax.app.service import Completions, Request, Result

log = logging.getLogger(__name__)

EXAMPLE, UPLOAD = 'Example', 'Upload'
API_NAME = 'complete'


def scores_markdown(result: Result) -> str:
  s = result.scores
  if s is None:
    return ''
  fmt = lambda v: 'n/a' if v is None else f'{v:.1f}'  # noqa: E731
  return (f'**Against the ground truth** (bottom row of the video): mIoU {fmt(s["miou"])}, occluded mIoU '
          f'{fmt(s["occ_miou"])} over {s["frames"]} frames; {fmt(s["occ_miou_occluded_frames"])} over the '
          f'{s["occluded_frames"]} frames with a hidden part (×100, C2F-Seg convention, as configs/eval.py)')


def run_request(service: Completions, req: Request, progress) -> Result:
  """`service.complete` in a worker thread while this thread feeds its progress reports to the page (Gradio's
  progress object belongs to the request's thread; the sampler reports from XLA's)."""
  events: queue.Queue = queue.Queue()
  with ThreadPoolExecutor(1) as pool:
    future = pool.submit(service.complete, req, lambda fraction, desc: events.put((fraction, desc)))
    while not (future.done() and events.empty()):
      try:
        fraction, desc = events.get(timeout=0.1)
      except queue.Empty:
        continue
      progress(fraction, desc=desc)
  try:
    return future.result()
  except UserError as e:
    raise gr.Error(str(e), print_exception=False) from e
  except Exception as e:  # a bug, not an input: the log has the traceback, the page a message, the app stays up
    log.exception('request failed')
    raise gr.Error(f'internal error ({type(e).__name__}: {e}); the app is still up') from e


def build(service: Completions, defaults: dict, *, title: str, about: str, delete_cache: tuple[int, int]) -> gr.Blocks:
  """The page. defaults: the sampler settings shown (steps, guidance_scale, window_length, stride, num_samples,
  seed)."""
  examples = list(service.examples.values())
  lim = service.limits
  # analytics off: gradio would otherwise send usage data and fetch its latest version number from the internet;
  # nothing about a user's page leaves the machine.
  with gr.Blocks(title=title, delete_cache=delete_cache, analytics_enabled=False) as page:
    gr.Markdown(f'# {title}\n{about}')
    with gr.Row():
      with gr.Column(scale=1):
        source = gr.Radio([EXAMPLE, UPLOAD], value=EXAMPLE if examples else UPLOAD, label='1. Input',
                          elem_id='source')
        gallery = gr.Gallery([(str(e.thumbnail), f'{e.key}: {e.caption}') for e in examples],
                             label='Examples: click one (visible part tinted green)', columns=4, height='auto',
                             allow_preview=False, visible=bool(examples), elem_id='examples')
        example = gr.Dropdown([e.key for e in examples], value=None, label='Example', visible=bool(examples),
                              elem_id='example')
        video = gr.File(label=f'Or upload a video ({"/".join(e[1:] for e in UPLOAD_VIDEO_EXTS)}) or a zip of '
                        'frames', elem_id='video-upload')
        gr.Markdown(f'Limits: {lim.max_frames} frames, {lim.max_pixels:,} pixels (frames × height × width), '
                    f'{lim.max_upload_mb:g} MB per file.')
        gr.Markdown('**2. The object** (uploads): its visible part in every frame')
        masks = gr.File(label='Per-frame masks: a zip of PNGs, binary or DAVIS palette', elem_id='masks-upload')
        object_id = gr.Number(0, precision=0, label='Object id in palette masks (0: the only object)',
                              elem_id='object-id')
        sam2 = bool(service.sam2)
        gr.Markdown('Or a first-frame box or clicks, tracked by SAM-2 (x, y in pixels of the first frame).'
                    if sam2 else 'A first-frame box or clicks tracked by SAM-2: start the app with '
                    '`--config.sam2=<a local transformers SAM-2 folder>` to enable them.', elem_id='sam2-note')
        first = gr.Image(label='First frame: click the object to add a point', interactive=False, visible=sam2,
                         elem_id='first-frame')
        box = gr.Textbox(label='First-frame box x0,y0,x1,y1', visible=sam2, elem_id='box')
        points = gr.Textbox(label='First-frame clicks x,y;x,y', visible=sam2, elem_id='points')
        text = gr.Textbox(label='3. The whole object, in words', placeholder='a large red heart', elem_id='caption')
        with gr.Accordion('4. Sampler (the checkpoint\'s defaults)', open=True):
          with gr.Row():
            steps = gr.Number(defaults['steps'], precision=0, minimum=1, maximum=lim.max_steps,
                              label='DDIM steps', elem_id='steps')
            guidance = gr.Number(defaults['guidance_scale'], label='Guidance', elem_id='guidance')
            window = gr.Number(defaults['window_length'], precision=0, minimum=1, label='Window (frames)',
                               elem_id='window')
          with gr.Row():
            stride = gr.Number(defaults['stride'], precision=0, minimum=1, label='Stride', elem_id='stride')
            samples = gr.Number(defaults['num_samples'], precision=0, minimum=1, maximum=lim.max_samples,
                                label='Hypotheses', elem_id='samples')
            seed = gr.Number(defaults['seed'], precision=0, label='Seed', elem_id='seed')
        run = gr.Button('5. Run', variant='primary', elem_id='run')
      with gr.Column(scale=1):
        result = gr.Video(label='input | visible mask | completion | amodal mask (green visible, red completed)',
                          autoplay=True, loop=True, elem_id='result-video')
        scores = gr.Markdown(elem_id='scores')
        hypotheses = gr.Gallery(label='Hypotheses (object frames over white)', columns=1, height='auto',
                                visible=False, elem_id='hypotheses')
        archive = gr.File(label='Download: object/ (RGBA), amodal_mask/, side_by_side.mp4/.gif, completion.json',
                          elem_id='download')
        info = gr.JSON(label='Run', elem_id='run-info')

    def pick(evt: gr.SelectData):
      e = examples[evt.index]
      return EXAMPLE, e.key, e.caption

    def picked(key):
      e = service.examples.get(key)
      return (gr.update(), gr.update()) if e is None else (EXAMPLE, e.caption)

    gallery.select(pick, None, [source, example, text], api_name=False)
    example.input(picked, example, [source, text], api_name=False)
    video.upload(lambda: UPLOAD, None, source, api_name=False)
    if sam2:
      def show_first(path):
        try:
          return first_frame(path, lim), ''
        except (UserError, ValueError) as e:
          raise gr.Error(str(e), print_exception=False) from e

      def click(current, evt: gr.SelectData):
        x, y = evt.index
        return ';'.join(p for p in ((current or '').strip(), f'{x},{y}') if p)

      video.upload(show_first, video, [first, points], api_name=False)
      first.select(click, points, points, api_name=False)

    def complete(src, key, video_file, masks_file, oid, box_text, points_text, caption, n_steps, scale, length,
                 step, n_samples, seed_value, progress=gr.Progress()):
      if src == EXAMPLE and not key:
        raise gr.Error('pick an example (click a thumbnail), or choose Upload', print_exception=False)
      req = Request(text=caption or '', example=key if src == EXAMPLE else '',
                    video=None if src == EXAMPLE else video_file, masks=None if src == EXAMPLE else masks_file,
                    object_id=int(oid or 0), box=box_text or '', points=points_text or '',
                    steps=int(n_steps or 0), guidance_scale=float(scale or 0), window_length=int(length or 0),
                    stride=int(step or 0), num_samples=int(n_samples or 1), seed=int(seed_value or 0))
      res = run_request(service, req, progress)
      gallery_items = [(str(p), label) for p, label in res.hypotheses]
      return (str(res.preview), scores_markdown(res), gr.update(value=gallery_items, visible=bool(gallery_items)),
              str(res.archive), {'request': res.request, **res.timings})

    run.click(complete, [source, example, video, masks, object_id, box, points, text, steps, guidance, window,
                         stride, samples, seed], [result, scores, hypotheses, archive, info], api_name=API_NAME,
              concurrency_limit=1, show_progress='full')
  page.queue(default_concurrency_limit=1)
  return page

"""Drives the page in headless Chromium (Selenium 4, the system chromedriver): the tests' browser steps, and the
docs' screenshot of a finished completion.

  # start the app on the demo model, complete the first example, save the page
  python -m tgvac_jax.app.screenshot --checkpoint out/demo/motion/model --out docs/app.png
  # or photograph a page that is already running
  python -m tgvac_jax.app.screenshot --url http://127.0.0.1:7860 --out docs/app.png --example 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

CHROMEDRIVER = '/usr/bin/chromedriver'   # Debian's chromium-driver


def chrome(width: int = 1400, height: int = 1500):
  from selenium import webdriver  # pylint: disable=import-outside-toplevel
  from selenium.webdriver.chrome.service import Service  # pylint: disable=import-outside-toplevel
  opts = webdriver.ChromeOptions()
  for arg in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', f'--window-size={width},{height}'):
    opts.add_argument(arg)
  return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def _wait(driver, timeout: float, what: str, condition):
  from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=import-outside-toplevel
  return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition, message=f'waited {timeout}s for {what}')


def _css(driver, selector: str):
  return driver.find_elements('css selector', selector)


def open_page(driver, url: str, timeout: float = 60) -> None:
  driver.get(url)
  _wait(driver, timeout, 'the Run button', lambda d: _css(d, '#run'))


def caption(driver) -> str:
  return _css(driver, '#caption textarea')[0].get_attribute('value')


def pick_example(driver, index: int, timeout: float = 30) -> str:
  """Clicks the index-th thumbnail; returns the caption it filled in."""
  before = caption(driver)
  _css(driver, '#examples button.thumbnail-item')[index].click()
  _wait(driver, timeout, 'the example caption', lambda d: caption(d) and caption(d) != before)
  return caption(driver)


def set_caption(driver, text: str) -> None:
  from selenium.webdriver.common.keys import Keys  # pylint: disable=import-outside-toplevel
  box = _css(driver, '#caption textarea')[0]
  box.send_keys(Keys.CONTROL, 'a')
  box.send_keys(Keys.DELETE)
  box.send_keys(text)
  _wait(driver, 10, 'the caption', lambda d: caption(d) == text)


def upload(driver, elem_id: str, path: Path, timeout: float = 60) -> None:
  _css(driver, f'#{elem_id} input[type=file]')[0].send_keys(str(Path(path).absolute()))
  _wait(driver, timeout, f'{path.name} in #{elem_id}',
        lambda d: _css(d, f'#{elem_id} td.filename[aria-label="{Path(path).name}"]'))


def text_of(driver, elem_id: str) -> str:
  found = _css(driver, f'#{elem_id}')
  return found[0].text if found else ''


def result_src(driver) -> str:
  found = _css(driver, '#result-video video')
  return (found[0].get_attribute('src') or '') if found else ''


def click_run(driver) -> None:
  _css(driver, '#run')[0].click()


def run_and_wait(driver, timeout: float) -> str:
  """Clicks Run and waits for a new result video; returns its URL."""
  before = result_src(driver)
  click_run(driver)
  _wait(driver, timeout, 'the result video', lambda d: result_src(d) not in ('', before)
        and _css(d, '#download a'))
  return result_src(driver)


def download_url(driver) -> str:
  return _css(driver, '#download a')[0].get_attribute('href')


def wait_for_error(driver, timeout: float) -> str:
  """The text of the error toast the page shows for a refused input."""
  def message(d) -> str:
    return ' '.join(e.text for e in _css(d, '.toast-body .toast-text, .toast-body .toast-message')).strip() or \
        ' '.join(e.text for e in _css(d, '.toast-body')).replace('Error', '').replace('×', '').strip()
  return _wait(driver, timeout, 'an error message', message)


def finished_page(driver, url: str, out: Path, *, example: int = 0, caption_text: str = '',
                  timeout: float = 1800) -> Path:
  """Opens the page, completes one example (with `caption_text` if given) and saves the whole page as PNG."""
  open_page(driver, url)
  pick_example(driver, example)
  if caption_text:
    set_caption(driver, caption_text)
  run_and_wait(driver, timeout)
  time.sleep(2)  # the video's first frame and the gallery images load
  height = driver.execute_script('return document.body.scrollHeight')
  driver.set_window_size(driver.get_window_size()['width'], max(900, height + 100))
  driver.execute_script('window.scrollTo(0, 0)')
  time.sleep(1)
  out.parent.mkdir(parents=True, exist_ok=True)
  driver.save_screenshot(str(out))
  return out


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--url', default='', help='a running page; else one is started on --checkpoint')
  parser.add_argument('--checkpoint', default='out/demo/motion/model')
  parser.add_argument('--examples', default='', help="configs/app.py examples ('' = the demo's)")
  parser.add_argument('--example', type=int, default=0, help='which thumbnail to complete')
  parser.add_argument('--caption', default='', help="'' keeps the example's caption")
  parser.add_argument('--out', type=Path, default=Path('docs/app.png'))
  args = parser.parse_args(argv)
  app = None
  if not args.url:
    from configs import app as app_configs  # pylint: disable=import-outside-toplevel
    from tgvac_jax.app import job  # pylint: disable=import-outside-toplevel
    c = app_configs.get_config()
    c.checkpoint, c.examples, c.port = args.checkpoint, args.examples, job.free_port()
    app = job.start(c)
  driver = chrome()
  try:
    print(finished_page(driver, args.url or app.url, args.out, example=args.example, caption_text=args.caption))
  finally:
    driver.quit()
    if app is not None:
      app.close()


if __name__ == '__main__':
  main()

"""The demo page end to end (issue 8): `python -m pix2pix_jax.serving.serve` and headless Chromium.

Skips where Chromium, chromedriver or selenium is missing, unless PIX2PIX_REQUIRE_BROWSER=1
(as .ci/run sets): CI must run it.

Also makes docs/demo.png: python tests/test_demo_browser.py --workdir DIR [--out PATH] [--labels PNG]
"""

import argparse
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1200,760",
                  "--hide-scrollbars")
# Pixels of an <img> or <canvas>, as a flat RGBA list, read in the page.
PIXELS_JS = """
const el = document.getElementById(arguments[0]);
const c = document.createElement('canvas');
c.width = el.naturalWidth || el.width; c.height = el.naturalHeight || el.height;
const ctx = c.getContext('2d');
ctx.drawImage(el, 0, 0);
return [c.width, c.height, Array.from(ctx.getImageData(0, 0, c.width, c.height).data)];
"""


def browser_or_skip() -> tuple[str, str]:
  """Paths of chromium and chromedriver; skip (or fail, when required) without them."""
  chromium = shutil.which("chromium") or shutil.which("chromium-browser")
  driver = shutil.which("chromedriver")
  missing = [name for name, path in (("chromium", chromium), ("chromedriver", driver))
             if not path]
  try:
    import selenium  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    missing.append("selenium (pip)")
  if missing:
    reason = (f"{', '.join(missing)} not installed (apt-get install chromium chromium-driver; "
              "pip install -r requirements.txt)")
    if os.environ.get("PIX2PIX_REQUIRE_BROWSER") == "1":
      pytest.fail(reason)
    pytest.skip(reason)
  return chromium, driver


def start_server(workdir: str, timeout: float = 300.0) -> tuple[subprocess.Popen, str]:
  """Runs the demo command on a free port; returns it and its URL once it serves."""
  proc = subprocess.Popen(
      [sys.executable, "-m", "pix2pix_jax.serving.serve", "--workdir", workdir, "--port", "0"],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      env={**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"})
  lines: list[str] = []
  found = threading.Event()

  def read() -> None:
    for line in proc.stdout:  # Keeps draining, so the server never blocks on a full pipe.
      lines.append(line)
      if line.startswith("Serving "):
        found.set()

  threading.Thread(target=read, daemon=True).start()
  deadline = time.monotonic() + timeout
  while not found.wait(0.2):
    if proc.poll() is not None or time.monotonic() > deadline:
      proc.kill()
      raise RuntimeError("the demo server did not start:\n" + "".join(lines[-40:]))
  url = re.search(r"at (http://\S+)", next(l for l in lines if l.startswith("Serving ")))[1]
  return proc, url


def make_driver(chromium: str, chromedriver: str, user_data_dir: str):
  from selenium import webdriver  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.chrome.service import Service  # pylint: disable=g-import-not-at-top
  options = webdriver.ChromeOptions()
  options.binary_location = chromium
  for flag in CHROMIUM_FLAGS:
    options.add_argument(flag)
  options.add_argument(f"--user-data-dir={user_data_dir}")
  return webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))


def wait_for(driver, script: str, timeout: float = 60.0):
  """Polls a JS expression until it is truthy; returns its value."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    value = driver.execute_script("return " + script)
    if value:
      return value
    time.sleep(0.1)
  status = driver.execute_script("return document.getElementById('status').textContent")
  raise AssertionError(f"timed out waiting for {script!r}; page status: {status!r}")


def translations(driver) -> int:
  return int(driver.execute_script("return document.body.dataset.translations || 0"))


def stroke(driver, points: list[tuple[int, int]]) -> None:
  """Drags the mouse over the canvas through `points` (offsets from its centre, CSS px)."""
  from selenium.webdriver.common.action_chains import ActionChains  # pylint: disable=g-import-not-at-top
  canvas = driver.find_element("id", "canvas")
  actions = ActionChains(driver).move_to_element_with_offset(canvas, *points[0]).click_and_hold()
  for (x0, y0), (x1, y1) in zip(points, points[1:]):
    actions.move_by_offset(x1 - x0, y1 - y0)
  actions.release().perform()


@pytest.fixture(scope="session")
def browser():
  """Checked before the (slow) trained_workdir, so that a skip costs nothing."""
  return browser_or_skip()


@pytest.fixture
def page(browser, trained_workdir, tmp_path):
  """(driver, url): the demo command serving the tiny model, and Chromium on its page."""
  chromium, chromedriver = browser
  proc, url = start_server(trained_workdir)
  driver = None
  try:
    driver = make_driver(chromium, chromedriver, str(tmp_path / "chromium-profile"))
    driver.get(url)
    yield driver, url
  finally:
    if driver is not None:
      driver.quit()
    proc.terminate()
    proc.wait(30)


def test_drawing_updates_translation(page, tmp_path, trained_workdir):
  driver, _ = page
  wait_for(driver, "document.body.dataset.translations >= 1")  # The blank canvas, translated.
  header = driver.find_element("id", "checkpoint").text
  # The workdir by name, not its absolute path (no page may read where it lives).
  assert "step 1" in header and os.path.basename(trained_workdir) in header
  assert trained_workdir not in header
  palette = [el.get_attribute("data-color")
             for el in driver.find_elements("css selector", "#palette .swatch")]
  assert len(palette) == 12
  assert not driver.find_element("id", "color-picker").is_displayed()  # Labels only.
  rgb = [tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in palette]

  width, height, blank_in = driver.execute_script(PIXELS_JS, "canvas")
  assert (width, height) == (64, 64)
  assert set(zip(blank_in[0::4], blank_in[1::4], blank_in[2::4])) == {rgb[0]}
  _, _, blank_out = driver.execute_script(PIXELS_JS, "output")

  stroke(driver, [(-120, -120), (-40, -60), (60, -20), (120, 100)])
  wait_for(driver, "document.body.dataset.translations >= 2")
  _, _, drawn_in = driver.execute_script(PIXELS_JS, "canvas")
  colours = set(zip(drawn_in[0::4], drawn_in[1::4], drawn_in[2::4]))
  assert colours == {rgb[0], rgb[1]}  # Background and the selected class, nothing blended.
  painted = sum(p == rgb[1] for p in zip(drawn_in[0::4], drawn_in[1::4], drawn_in[2::4]))
  assert 50 < painted < 64 * 64 // 2
  w, h, drawn_out = driver.execute_script(PIXELS_JS, "output")
  assert (w, h) == (64, 64)
  changed = sum(a != b for a, b in zip(blank_out, drawn_out))
  assert changed > 100, "the output did not change after the stroke"
  driver.save_screenshot(str(tmp_path / "demo.png"))
  assert (tmp_path / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

  # Undo restores the blank canvas, and the same input gives the same output again.
  driver.find_element("id", "undo").click()
  wait_for(driver, "document.body.dataset.translations >= 3")
  assert driver.execute_script(PIXELS_JS, "canvas")[2] == blank_in
  assert driver.execute_script(PIXELS_JS, "output")[2] == blank_out


def make_screenshot(workdir: str, out: str, labels_path: str | None = None) -> None:
  """docs/demo.png: a label map (`labels_path`, else one of the synthetic val split) loaded
  into the demo and painted over: a window drawn as a rectangle, a balcony brushed."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from pix2pix_jax.data.datasets import synthetic  # pylint: disable=g-import-not-at-top
  chromium, chromedriver = browser_or_skip()
  proc, url = start_server(workdir)
  with tempfile.TemporaryDirectory() as tmp:
    if labels_path:
      Image.open(labels_path).convert("RGB").save(os.path.join(tmp, "labels.png"))
    else:
      Image.fromarray(synthetic.make_pair(0, "val", 3, 64)[0]).save(
          os.path.join(tmp, "labels.png"))
    driver = make_driver(chromium, chromedriver, os.path.join(tmp, "profile"))
    try:
      driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
          "width": 1100, "height": 800, "deviceScaleFactor": 1, "mobile": False})
      driver.get(url)
      wait_for(driver, "document.body.dataset.translations >= 1")
      driver.find_element("id", "upload").send_keys(os.path.join(tmp, "labels.png"))
      wait_for(driver, "document.body.dataset.translations >= 2")
      driver.find_elements("css selector", "#palette .swatch")[2].click()  # window
      driver.find_element("css selector", "[data-tool=rect]").click()
      stroke(driver, [(-150, 150), (-60, 200)])
      wait_for(driver, "document.body.dataset.translations >= 3")
      driver.find_element("css selector", "[data-tool=brush]").click()
      driver.find_elements("css selector", "#palette .swatch")[6].click()  # balcony
      stroke(driver, [(40, 130), (90, 132), (160, 130)])
      wait_for(driver, "document.body.dataset.translations >= 4")
      driver.execute_script("window.scrollTo(0, 0)")
      time.sleep(0.5)
      driver.save_screenshot(out)
    finally:
      driver.quit()
      proc.terminate()
      proc.wait(30)


if __name__ == "__main__":
  sys.path.insert(0, str(REPO))
  parser = argparse.ArgumentParser(description=make_screenshot.__doc__)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--out", default=str(REPO / "docs" / "demo.png"))
  parser.add_argument("--labels", help="Label map to load (default: a synthetic one).")
  args = parser.parse_args()
  make_screenshot(args.workdir, args.out, args.labels)

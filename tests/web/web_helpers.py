"""Fixtures of the browser mixer's tests: a real separator (the identity stand-in model, two buses, two
scenes) whose mixer the pages control, and a running ``WebMixer`` on a free port."""
import contextlib
import shutil
import time

import pytest

from bridge.mix.scenes import Scene
from bridge.web.server import WebMixer

from conftest import FOUR_STEMS, four_stem_separator

STEMS = FOUR_STEMS
TOKEN = "test-token-0123456789"


@pytest.fixture
def sep(tmp_path):
    s = four_stem_separator(tmp_path)
    s.scenes = {"karaoke": Scene("karaoke", {"main": {"stems": {"vocals": {"mute": True}}}}), "full": Scene("full")}
    yield s
    s.engine.stop()


@pytest.fixture
def web(sep):
    with WebMixer(sep, port=0, token=TOKEN) as w:
        yield w


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@contextlib.contextmanager
def chrome(width=390, height=844):
    """Headless chromium at a phone's size (390 x 844 CSS pixels, touch), quit afterwards; skips the test
    with the reason when chromium, chromedriver or selenium is missing."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium and chromium-driver are not installed (make install installs them)")
    webdriver = pytest.importorskip("selenium.webdriver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-extensions", "--no-first-run", "--disable-background-networking"):
        opts.add_argument(arg)
    opts.add_experimental_option("mobileEmulation", {"deviceMetrics": {"width": width, "height": height,
                                                                       "pixelRatio": 2.0, "touch": True}})
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_script_timeout(10)
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(cond, what, timeout=5.0):
    """Poll ``cond`` until it is true; fail saying ``what`` did not happen."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except Exception as exc:  # noqa: BLE001 - an element not there yet
            last = exc
        time.sleep(0.03)
    raise AssertionError(f"{what}: not within {timeout} s" + (f" ({last})" if last else ""))

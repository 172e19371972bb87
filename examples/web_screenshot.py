"""A screenshot of the browser mixer (``stemstream live --web``) on a phone-sized headless browser, for the
README: regenerate it when the page changes.

    python examples/web_screenshot.py [--out docs/web-mixer.png] [--width 390 --height 844] [--scale 2]

The karaoke rig (configs/rigs/karaoke.yaml: the demo model, buses main and monitor, three scenes; at the
window 1 s, hop and look-ahead 0.5 s, the model on its worker process as in a
live session) plays the bundled demo song at real-time pace (no audio device) while the page is open, so
the meters and the status line show a running show. Take it on a quiet machine: the status line shows
the real-time factor and deadline misses as they are. Needs chromium and chromedriver (Debian's chromium and chromium-driver, which
`make install` installs) and selenium (the dev extra). The image is written under a temporary name and
renamed when complete.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

RATE = 44100
TOKEN = "screenshot-token"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "web-mixer.png"))
    ap.add_argument("--rig", default=os.path.join(REPO, "configs", "rigs", "karaoke.yaml"))
    ap.add_argument("--width", type=int, default=390, help="CSS pixels (default 390: a phone in portrait)")
    ap.add_argument("--height", type=int, default=844)
    ap.add_argument("--scale", type=float, default=2.0, help="device pixel ratio (default 2)")
    args = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        print("error: chromium and chromedriver are needed (make install installs Debian's chromium and "
              "chromium-driver)", file=sys.stderr)
        return 1
    from selenium import webdriver

    from bridge import StemSeparator
    from bridge.web.server import WebMixer
    from streamer.assets import DEMO_SONG, DEMO_STEMS
    from streamer.audio import load_stems

    # as in a live session, window 1 s, hop and look-ahead 0.5 s: the page's browser starts in this
    # machine's CPU too, and a 0.25 s hop leaves the demo model no room for it on 2 cores
    sep = StemSeparator.from_rig(args.rig, realtime=True, worker="process", window=RATE, hop=RATE // 2,
                                 lookahead=RATE // 2, crossfade=None)
    sep.engine.start()                                         # warmed up as a live session does it
    silence = np.zeros((2, 1024), np.float32)
    for _ in range(3 * RATE // 1024):
        sep.process(silence, RATE, buffer_size=1024, reset=False)
        time.sleep(1024 / RATE)
    sep.engine.reset_stats()
    song = load_stems(DEMO_SONG, list(DEMO_STEMS), RATE, 2).sum(axis=0)
    stop = threading.Event()

    def play() -> None:   # the song through the separator at real-time pace, so the meters move
        pos, block, fed = 0, 1024, 0
        start = time.monotonic()
        while not stop.is_set():
            if pos + block > song.shape[1]:
                pos = 0
            sep.process(song[:, pos:pos + block], RATE, buffer_size=block, reset=False)
            pos += block
            fed += block
            time.sleep(max(0.0, start + fed / RATE - time.monotonic()))

    player = threading.Thread(target=play, daemon=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"):
        opts.add_argument(arg)
    opts.add_experimental_option("mobileEmulation", {"deviceMetrics": {"width": args.width, "height": args.height,
                                                                       "pixelRatio": args.scale, "touch": True}})
    driver = None
    with WebMixer(sep, port=0, token=TOKEN) as web:
        try:
            player.start()
            time.sleep(8.0)       # the song plays a while before the browser starts (its start-up is CPU-heavy)
            driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver_path))
            driver.get(web.url)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not driver.execute_script(
                    "return window.stemstream.connected && [...document.querySelectorAll('[data-meter]')]"
                    ".filter(m => Number(m.dataset.db) > -40).length >= 4"):
                time.sleep(0.1)
            # the browser's start-up takes CPU from the model on a small machine: a window or two may miss (the
            # stems then play the dry input, spread: four equal meters); a few hops later separation is back
            time.sleep(3.0)
            tmp = args.out + ".partial.png"
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            if not driver.save_screenshot(tmp):
                print("error: the browser took no screenshot", file=sys.stderr)
                return 1
            os.replace(tmp, args.out)
        finally:
            stop.set()
            if driver is not None:
                driver.quit()
            player.join(10)
            sep.engine.stop()
    print(f"wrote {args.out} ({args.width}x{args.height} CSS pixels at {args.scale:g}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

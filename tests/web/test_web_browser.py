"""The browser mixer in a real browser: headless chromium (Debian's chromium + chromium-driver, which
`make install` installs) driven by selenium, at a phone's size. Skips with the reason when either is
missing."""
import math
import threading
import time

import numpy as np
import pytest
from web_helpers import TOKEN, chrome, sep, wait_until, web  # noqa: F401 - fixtures

from bridge.control.model import ControlModel
from bridge.mix.mixer import db_to_fader, fader_to_db
from bridge.web.server import WebMixer

pytest.importorskip("selenium")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402


def control(driver, address):
    return driver.find_element(By.CSS_SELECTOR, f'[data-control="{address}"]')


def pressed(driver, address):
    return control(driver, address).get_attribute("aria-pressed")


def fader_value(driver, address):
    return float(control(driver, address).get_property("value"))


def connected(driver):
    return driver.execute_script("return window.stemstream !== undefined && window.stemstream.connected")


@pytest.fixture
def page(web):
    with chrome() as d:
        d.get(web.url)
        wait_until(lambda: connected(d), "the page connects")
        yield d


def test_the_page_shows_db_with_the_fader_law_osc_uses(page):
    faders = [0.0, 0.001, 0.03, 0.0625, 0.1, 0.2, 0.25, 0.3, 0.45, 0.5, 0.6, 0.75, 0.9, 1.0, 1.5, -0.2]
    got = page.execute_script("return arguments[0].map(f => String(window.stemstream.faderToDb(f)))", faders)
    for f, text in zip(faders, got):
        assert float(text) == pytest.approx(fader_to_db(f), abs=1e-9), f
    dbs = [-200.0, -90.0, -75.0, -60.0, -45.0, -30.0, -20.0, -10.0, -3.5, 0.0, 6.0, 10.0, 24.0]
    got = page.execute_script("return arguments[0].map(d => window.stemstream.dbToFader(d))", dbs)
    for db, f in zip(dbs, got):
        assert f == pytest.approx(db_to_fader(db), abs=1e-12), db
    assert page.execute_script("return window.stemstream.dbToFader(-Infinity)") == 0
    # the contract other tools rely on: controls and meters by OSC address
    assert page.find_element(By.CSS_SELECTOR, 'input[type=range][data-control="/bus/monitor/stem/vocals/fader"]')
    assert pressed(page, "/stem/vocals/mute") == "false" and pressed(page, "/engine/bypass") == "false"
    meters = {e.get_attribute("data-meter") for e in page.find_elements(By.CSS_SELECTOR, "[data-meter]")}
    assert meters == {"/meter/vocals", "/meter/drums", "/meter/bass", "/meter/other", "/meter/bus/main",
                      "/meter/bus/monitor"}
    # a phone's width holds every strip without sideways scrolling
    assert page.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    # a finger on a fader never scrolls the page; buttons are large touch targets
    for fader in page.find_elements(By.CSS_SELECTOR, "input[type=range]"):
        assert page.execute_script("return getComputedStyle(arguments[0]).touchAction", fader) == "none"
    for button in page.find_elements(By.CSS_SELECTOR, "button[data-control]"):
        if button.is_displayed():
            assert button.size["height"] >= 44 and button.size["width"] >= 30, button.get_attribute("data-control")


def test_a_page_controls_the_mixer_and_a_second_page_follows(web, sep, page):
    model = ControlModel.of(sep)
    with chrome() as other:
        other.get(web.url)
        wait_until(lambda: connected(other), "the second page connects")

        # a fader: a tap on its track, then a drag of the handle
        fader = control(page, "/stem/vocals/fader")
        ActionChains(page).move_to_element_with_offset(fader, 0, fader.size["height"] // 3).click().perform()
        wait_until(lambda: model.get("/stem/vocals/fader") < 0.6, "the fader reaches the mixer")
        ActionChains(page).click_and_hold(fader).move_by_offset(0, -30).release().perform()
        value = fader_value(page, "/stem/vocals/fader")
        wait_until(lambda: abs(model.get("/stem/vocals/fader") - value) < 1e-9, "the drag's last value arrives")
        assert sep.mixer.buses["main"].stems["vocals"].gain_db == pytest.approx(fader_to_db(value), abs=1e-6)
        wait_until(lambda: fader_value(other, "/stem/vocals/fader") == pytest.approx(value, abs=1e-9),
                   "the second page's fader follows")
        label = page.execute_script("return window.stemstream.dbText(arguments[0])", fader_to_db(value))
        shown = other.find_element(By.CSS_SELECTOR, '[data-gain="/stem/vocals/gain"]').text
        assert shown == label

        # mute and solo
        control(page, "/stem/drums/mute").click()
        control(page, "/stem/bass/solo").click()
        wait_until(lambda: pressed(other, "/stem/drums/mute") == "true" and pressed(other, "/stem/bass/solo") == "true",
                   "the second page shows mute and solo")
        assert sep.mixer.buses["main"].stems["drums"].mute and sep.mixer.buses["main"].stems["bass"].solo
        assert pressed(page, "/stem/drums/mute") == "true"
        control(page, "/stem/bass/solo").click()
        wait_until(lambda: pressed(other, "/stem/bass/solo") == "false", "solo off follows")

        # another bus: its strips' controls carry its addresses
        page.find_element(By.CSS_SELECTOR, 'nav [data-bus="monitor"]').click()
        control(page, "/bus/monitor/stem/vocals/mute").click()
        wait_until(lambda: pressed(other, "/bus/monitor/stem/vocals/mute") == "true", "the monitor mute follows")
        assert sep.mixer.buses["monitor"].stems["vocals"].mute and not sep.mixer.buses["main"].stems["vocals"].mute
        control(page, "/bus/monitor/mute").click()
        wait_until(lambda: model.get("/bus/monitor/mute") == 1, "a bus master's mute")

        # a scene, recalled at once: the whole state changes on both pages
        control(page, "/scene/karaoke").click()
        wait_until(lambda: pressed(other, "/stem/vocals/mute") == "true"
                   and pressed(other, "/stem/drums/mute") == "false"
                   and fader_value(other, "/stem/vocals/fader") == 0.75, "the scene reaches the second page")
        assert model.get("/bus/monitor/mute") == 0 and model.get("/bus/monitor/stem/vocals/mute") == 0

        # a scene with a fade: the value moves through the fade to the scene's
        model.set("/stem/other/fader", 0.25)
        fade = page.find_element(By.ID, "fade")
        fade.clear()
        fade.send_keys("0.5")
        control(page, "/scene/full").click()
        wait_until(lambda: model.recaller.fading, "the fade starts", timeout=2)
        wait_until(lambda: fader_value(other, "/stem/other/fader") == 0.75
                   and pressed(other, "/stem/vocals/mute") == "false", "the faded scene lands on the second page")

        # bypass from the second page
        control(other, "/engine/bypass").click()
        wait_until(lambda: pressed(page, "/engine/bypass") == "true", "bypass follows")
        assert sep.mixer.bypass
    assert web.counters["errors"] == 0 and web.counters["malformed"] == 0


def test_a_page_without_the_token_changes_nothing(web, sep):
    model = ControlModel.of(sep)
    before = model.space.state()
    with chrome() as d:
        for url in (web.base_url, web.base_url + "?t=guess"):
            d.get(url)
            assert "Scan the QR code" in d.find_element(By.TAG_NAME, "body").text
            assert not d.find_elements(By.CSS_SELECTOR, "[data-control]")
        # a script without the token cannot open the WebSocket either
        d.get("about:blank")
        result = d.execute_async_script("""
                const done = arguments[arguments.length - 1];
                const ws = new WebSocket(arguments[0]);
                ws.onopen = () => { ws.send(JSON.stringify({a: "/stem/vocals/mute", v: 1})); done("open"); };
                ws.onerror = () => done("refused");
                setTimeout(() => done("timeout"), 4000);""", f"ws://127.0.0.1:{web.port}/ws?t=guess")
        assert result == "refused"
    assert model.space.state() == before
    assert web.counters["connections"] == 0 and web.counters["unauthorized"] >= 2


def test_meters_move(sep, page):
    stop = threading.Event()

    def feed():                     # audio through the separator, loud then silent, as a live input would
        rng = np.random.default_rng(0)
        i = 0
        while not stop.is_set():
            level = 0.5 if (i // 10) % 2 == 0 else 0.0
            sep.process((rng.standard_normal((2, 2205)) * level).astype(np.float32), 44100, reset=False)
            i += 1
            time.sleep(0.05)
    t = threading.Thread(target=feed, daemon=True)
    t.start()
    try:
        seen = {"/meter/vocals": set(), "/meter/bus/main": set()}
        deadline = time.monotonic() + 10

        def moved(values):          # loud and then quiet (or the reverse) seen on the page
            return len(values) >= 5 and max(values) > -30.0 and min(values) < max(values) - 20

        while time.monotonic() < deadline and not all(moved(v) for v in seen.values()):
            for address in seen:
                seen[address].add(float(page.find_element(By.CSS_SELECTOR, f'[data-meter="{address}"]')
                                        .get_attribute("data-db")))
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(5)
    for address, values in seen.items():
        assert moved(values), (address, sorted(values))


def test_a_restarted_server_brings_the_page_back_in_sync(sep, page, web):
    model = ControlModel.of(sep)
    port = web.port
    web.close()
    wait_until(lambda: page.execute_script("return document.body.classList.contains('offline')"),
               "the page shows it is offline")
    assert "reconnecting" in page.find_element(By.ID, "conn").text
    model.set("/stem/drums/mute", 1)                 # changed while the page has no server
    model.set("/bus/monitor/stem/bass/fader", 0.4)
    with WebMixer(sep, port=port, token=TOKEN):
        wait_until(lambda: connected(page), "the page reconnects", timeout=10)
        wait_until(lambda: pressed(page, "/stem/drums/mute") == "true"
                   and fader_value(page, "/bus/monitor/stem/bass/fader") == 0.4, "the page resyncs")
        assert not page.execute_script("return document.body.classList.contains('offline')")
        control(page, "/stem/drums/mute").click()
        wait_until(lambda: model.get("/stem/drums/mute") == 0, "the page controls the new server")

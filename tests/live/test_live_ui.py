"""The live terminal mixer, driven headless through Textual's pilot over a real StemMixer.

Keys change the mixer's controls; the meters follow audio really mixed by the mixer (post-fader per
bus); the status area shows the session's numbers and its error in red; the app ends by itself when
the session is finished, and on q / ctrl+c.
"""
from __future__ import annotations

import asyncio
import dataclasses
import math
import pathlib
import re

import numpy as np
import pytest
from textual.geometry import Region

from bridge.live.status import LiveStatus
from bridge.live.ui import MixerApp
from bridge.mix.mixer import StemMixer

REPO_RIGS = pathlib.Path(__file__).resolve().parents[2] / "configs" / "rigs"

STEMS = ["vocals", "drums", "bass", "other"]
BUSES = ("main", "monitor")
RATE = 44100
BLOCK = 1000  # ten whole periods of 441 Hz: RMS of a sine is exactly amplitude / sqrt(2)
REFRESH_HZ = 50.0


class View:
    """What the live session hands the app: a mixer, a status (LiveStatus) and a finished flag."""

    def __init__(self):
        self.mixer = StemMixer(STEMS, RATE, buses=BUSES)
        self.finished = False
        self.error = None
        self.osc = "udp://0.0.0.0:9000"
        self.realtime_factor = 0.42
        self.seconds = 0.0

    def status(self) -> LiveStatus:
        return LiveStatus(
            seconds=self.seconds, latency_ms=630.8,
            latency_parts_ms={"algorithmic": 500.0, "processing": 125.0, "effects": 5.8, "resampling": 0.0},
            realtime_factor=self.realtime_factor, deadline_misses=3, input_overflows=1,
            output_underflows=2, record_dropped=4, callback_ms_p99=1.23,
            surfaces=(f"osc: {self.osc}",) if self.osc else (),
            input="song.flac (file)", output="JACK system:playback", recording="/tmp/takes/take-1",
            error=self.error,
        )


def drive(script, view: View | None = None, size=(100, 30), refresh_hz: float = REFRESH_HZ) -> MixerApp:
    """Run ``await script(app, pilot, view)`` inside the headless app; returns the app once it has ended."""
    view = view or View()
    app = MixerApp(view, refresh_hz=refresh_hz)

    async def main():
        async with app.run_test(size=size) as pilot:
            await script(app, pilot, view)

    asyncio.run(main())
    return app


async def settle(pilot, app) -> None:
    """A few refresh periods, so the app has copied the mixer and status into its widgets and painted."""
    await pilot.pause(3.0 / app.refresh_hz)


def widget_of(app, name: str):
    """A widget by a short name: "meter vocals main", "controls vocals main", "label vocals",
    "bus-meter main", "bus-gain main", "selection", "status"."""
    kind, *args = name.split()
    return {
        "meter": app.stem_meter, "controls": app.stem_controls, "label": app.stem_label,
        "bus-meter": app.bus_meter, "bus-gain": app.bus_gain,
        "selection": lambda: app.selection_line, "status": lambda: app.status_area,
    }[kind](*args)


def strips(app, name: str):
    widget = widget_of(app, name)
    return widget.render_lines(Region(0, 0, widget.size.width, widget.size.height))


def shown(app, name: str) -> str:
    """The text a widget paints on the screen."""
    return "\n".join(strip.text for strip in strips(app, name))


def levels(app, name: str) -> tuple[float, float]:
    """(peak, RMS) dB numbers a meter shows (``-inf`` for silence)."""
    text = shown(app, name)
    numbers = re.findall(r"-inf|[+-]?\d+\.\d", text)
    assert len(numbers) == 2, text
    return tuple(-math.inf if n == "-inf" else float(n) for n in numbers)


def play(mixer: StemMixer, stem: str = "vocals", amplitude: float = 0.5, blocks: int = 2) -> np.ndarray:
    """Mix ``blocks`` blocks of a 441 Hz sine on ``stem`` (silence on the others) through the mixer."""
    t = np.arange(BLOCK) / RATE
    stems = np.zeros((len(STEMS), 2, BLOCK), np.float32)
    stems[STEMS.index(stem)] = (amplitude * np.sin(2 * np.pi * 441.0 * t)).astype(np.float32)
    out = np.zeros((len(BUSES), 2, BLOCK), np.float32)
    for _ in range(blocks):
        mixer.process(stems, out, None)
    return out


def is_red(color) -> bool:
    """A red (Textual paints the ANSI "red" in its theme's shade of red, e.g. #f4005f)."""
    r, g, b = color.get_truecolor()
    return r > 150 and r > 2 * g and r > 2 * b


def control(view: View, bus: str, stem: str):
    return view.mixer.buses[bus].stems[stem]


def test_digit_toggles_mute_of_that_stem_on_the_selected_bus():
    async def script(app, pilot, view):
        await pilot.press("1")
        assert control(view, "main", "vocals").mute
        assert not control(view, "monitor", "vocals").mute
        assert list(view.mixer.buses["main"].targets()) == [0.0, 1.0, 1.0, 1.0]
        await settle(pilot, app)
        mute_flag = [seg for strip in strips(app, "controls vocals main") for seg in strip if seg.text == "M"]
        assert mute_flag and is_red(mute_flag[0].style.bgcolor)
        await pilot.press("1")
        assert not control(view, "main", "vocals").mute
        await pilot.press("3")
        assert control(view, "main", "bass").mute and not control(view, "main", "drums").mute

    drive(script)


@pytest.mark.parametrize("key", ["@", "shift+2"])
def test_shifted_digit_toggles_solo(key):
    async def script(app, pilot, view):
        await pilot.press(key)
        assert control(view, "main", "drums").solo
        assert not control(view, "monitor", "drums").solo
        assert list(view.mixer.buses["main"].targets()) == [0.0, 1.0, 0.0, 0.0]
        await pilot.press(key)
        assert not control(view, "main", "drums").solo

    drive(script)


def test_every_shifted_digit_of_a_us_keyboard_solos_its_stem():
    async def script(app, pilot, view):
        await pilot.press(*"!@#$%^&*(")  # the characters a US keyboard sends for shift+1..9
        assert [control(view, "main", s).solo for s in STEMS] == [True] * 4
        assert app.is_running and app.key_error is None

    drive(script)


def test_b_cycles_the_selected_bus():
    async def script(app, pilot, view):
        await pilot.press("b", "1")
        assert control(view, "monitor", "vocals").mute
        assert not control(view, "main", "vocals").mute
        await settle(pilot, app)
        assert "bus monitor" in shown(app, "selection")
        await pilot.press("b", "2")  # two buses: back to main
        assert control(view, "main", "drums").mute and not control(view, "monitor", "drums").mute
        await settle(pilot, app)
        assert "bus main" in shown(app, "selection")

    drive(script)


def test_arrows_select_a_stem_and_change_its_gain_on_the_selected_bus():
    async def script(app, pilot, view):
        await pilot.press("right")
        assert control(view, "main", "vocals").gain_db == 1.0
        assert control(view, "monitor", "vocals").gain_db == 0.0
        await pilot.press("down", "right", "right", "left")
        assert control(view, "main", "drums").gain_db == 1.0
        assert control(view, "main", "vocals").gain_db == 1.0
        await settle(pilot, app)
        assert "+1.0" in shown(app, "controls drums main")
        assert shown(app, "label drums").startswith("▸ 2 drums")
        await pilot.press("up", "up")  # stops at the first stem
        assert app.selected_stem == 0
        await pilot.press("down", "down", "down", "down")  # and at the last
        assert app.selected_stem == len(STEMS) - 1
        await pilot.press("m", "s")
        assert control(view, "main", "other").mute and control(view, "main", "other").solo
        control(view, "main", "other").gain_db = -59.5
        await pilot.press("left")  # down past -60 dB: off
        assert control(view, "main", "other").gain_db == -math.inf
        await settle(pilot, app)
        assert "-inf" in shown(app, "controls other main")
        await pilot.press("right")  # and back from off
        assert control(view, "main", "other").gain_db == -60.0

    drive(script)


def test_zero_puts_the_selected_bus_back_to_unity_and_leaves_the_others():
    async def script(app, pilot, view):
        main, monitor = view.mixer.buses["main"], view.mixer.buses["monitor"]
        for bus in (main, monitor):
            bus.gain_db = -6.0
            bus.stems["vocals"].mute = True
            bus.stems["drums"].solo = True
            bus.stems["bass"].gain_db = -3.0
        await pilot.press("0")
        assert all(c.gain_db == 0.0 and not c.mute and not c.solo for c in main.stems.values())
        assert main.gain_db == 0.0
        assert list(main.targets()) == [1.0] * 4
        assert monitor.gain_db == -6.0 and monitor.stems["vocals"].mute and monitor.stems["drums"].solo
        await pilot.press("b", "0")
        assert list(monitor.targets()) == [1.0] * 4 and monitor.gain_db == 0.0
        await settle(pilot, app)
        assert " 0.0 dB" in shown(app, "bus-gain monitor")

    drive(script)


def test_meters_follow_the_audio_post_fader_on_each_bus():
    async def script(app, pilot, view):
        await settle(pilot, app)
        assert levels(app, "meter vocals main") == (-math.inf, -math.inf)
        assert "█" not in shown(app, "meter vocals main")  # silence: an empty bar

        play(view.mixer)  # a 0.5-amplitude sine: peak -6.02 dBFS, RMS -9.03 dBFS
        await settle(pilot, app)
        for name in ("meter vocals main", "meter vocals monitor", "bus-meter main", "bus-meter monitor"):
            peak, rms = levels(app, name)
            assert peak == pytest.approx(-6.0, abs=0.15), name
            assert rms == pytest.approx(-9.0, abs=0.15), name
            assert "█" in shown(app, name)
        assert levels(app, "meter drums main") == (-math.inf, -math.inf)

        await pilot.press("right")  # +1 dB on main: the post-fader level on main follows, monitor does not
        play(view.mixer)
        await settle(pilot, app)
        assert levels(app, "meter vocals main")[0] == pytest.approx(-5.0, abs=0.15)
        assert levels(app, "meter vocals monitor")[0] == pytest.approx(-6.0, abs=0.15)

        await pilot.press("1")  # muted on main: silence there, still heard on monitor
        out = play(view.mixer, blocks=2)  # the first block ramps down (10 ms), the second is silent
        assert not out[0].any() and out[1].any()
        await settle(pilot, app)
        assert levels(app, "meter vocals main") == (-math.inf, -math.inf)
        assert "█" not in shown(app, "meter vocals main")
        assert levels(app, "bus-meter main") == (-math.inf, -math.inf)
        assert levels(app, "meter vocals monitor")[0] == pytest.approx(-6.0, abs=0.15)
        assert levels(app, "bus-meter monitor")[0] == pytest.approx(-6.0, abs=0.15)

    drive(script)


def test_the_default_refresh_rate_also_moves_the_meters():
    async def script(app, pilot, view):
        assert app.refresh_hz == 20.0
        play(view.mixer, stem="bass", amplitude=0.25)  # peak -12.04 dBFS
        await settle(pilot, app)
        assert levels(app, "meter bass main")[0] == pytest.approx(-12.0, abs=0.15)

    view = View()
    app = MixerApp(view)

    async def main():
        async with app.run_test(size=(100, 30)) as pilot:
            await script(app, pilot, view)

    asyncio.run(main())


def test_status_area_shows_the_session():
    async def script(app, pilot, view):
        await settle(pilot, app)
        text = " ".join(shown(app, "status").split())
        for expected in ("latency 630.8 ms", "algorithmic 500.0", "processing 125.0", "effects 5.8",
                         "resampling 0.0", "real-time factor 0.42", "callback p99 1.2 ms", "deadline misses 3",
                         "input overflows 1", "output underflows 2", "dropped record blocks 4",
                         "song.flac (file)", "JACK system:playback", "recording /tmp/takes/take-1",
                         "osc udp://0.0.0.0:9000"):
            assert expected in text, (expected, text)
        assert "error" not in text
        view.osc, view.realtime_factor, view.seconds = None, float("nan"), 75.5
        await settle(pilot, app)
        text = " ".join(shown(app, "status").split())
        assert "osc" not in text and "real-time factor n/a" in text
        assert "time 01:15.5" in shown(app, "selection")

    drive(script, size=(120, 30))


def test_status_area_shows_every_control_surface_by_its_label():
    class Surfaces(View):
        def status(self):
            return dataclasses.replace(super().status(), surfaces=("midi: nanoKONTROL2 SLIDER/KNOB",
                                                                   "osc: udp://0.0.0.0:9000, tcp://0.0.0.0:9000"))

    async def script(app, pilot, view):
        await settle(pilot, app)
        text = " ".join(shown(app, "status").split())
        assert "midi nanoKONTROL2 SLIDER/KNOB" in text and "osc udp://0.0.0.0:9000, tcp://0.0.0.0:9000" in text, text

    drive(script, Surfaces(), size=(160, 30))


def test_a_status_that_is_not_a_live_status_is_said_and_the_mixer_keeps_running():
    async def script(app, pilot, view):
        view.status = lambda: {"seconds": 1.0}
        await settle(pilot, app)
        assert app.is_running
        assert "error: status() gave dict, not a LiveStatus" in shown(app, "status")
        assert "time --:--" in shown(app, "selection")

    drive(script)


def test_error_from_the_session_is_shown_in_red():
    async def script(app, pilot, view):
        view.error = "output device lost: JACK server stopped"
        await settle(pilot, app)
        lines = strips(app, "status")
        assert "error: output device lost: JACK server stopped" in "\n".join(s.text for s in lines)
        red = [seg for strip in lines for seg in strip if "device lost" in seg.text]
        assert red and is_red(red[0].style.color)
        view.error = None
        await settle(pilot, app)
        assert "error" not in shown(app, "status")

        def broken_status():
            raise RuntimeError("session state unavailable")

        view.status = broken_status  # a failing status source is shown, the mixer keeps running
        await settle(pilot, app)
        assert app.is_running
        assert "error: status: session state unavailable" in shown(app, "status")

    drive(script)


def test_a_refused_setting_is_shown_not_raised():
    async def script(app, pilot, view):
        control(view, "main", "vocals")._gain_db = float("nan")  # a gain the mixer refuses to take
        await pilot.press("right")  # NaN + 1 dB: the mixer raises SettingsError
        assert app.is_running
        assert "gain_db" in app.key_error
        await settle(pilot, app)
        lines = strips(app, "status")
        text = "\n".join(s.text for s in lines)
        assert "error: vocals: gain_db must be a number" in text
        assert is_red([seg for strip in lines for seg in strip if "gain_db" in seg.text][0].style.color)
        await pilot.press("2")  # the next change that works clears it
        assert control(view, "main", "drums").mute and app.key_error is None
        await settle(pilot, app)
        assert "error" not in shown(app, "status")

    drive(script)


def test_stem_numbers_beyond_the_stems_do_nothing():
    async def script(app, pilot, view):
        await pilot.press("5", "9", "%", "(", "shift+9")
        assert app.is_running and app.key_error is None
        for bus in BUSES:
            assert list(view.mixer.buses[bus].targets()) == [1.0] * 4

    drive(script)


def test_finished_session_ends_the_app():
    async def script(app, pilot, view):
        await settle(pilot, app)
        assert app.is_running
        view.finished = True
        for _ in range(100):
            if not app.is_running:
                break
            await asyncio.sleep(0.01)
        assert not app.is_running

    app = drive(script)
    assert app.return_value == "finished"


@pytest.mark.parametrize("key", ["q", "ctrl+c"])
def test_q_and_ctrl_c_quit(key):
    async def script(app, pilot, view):
        await pilot.press(key)
        for _ in range(100):
            if not app.is_running:
                break
            await asyncio.sleep(0.01)
        assert not app.is_running

    app = drive(script)
    assert app.return_value == "quit"


def test_footer_lists_the_keys():
    async def script(app, pilot, view):
        await settle(pilot, app)
        keys = {(k.key_display, k.description) for k in app.query("FooterKey")}
        for expected in [("1-9", "mute"), ("⇧1-9", "solo"), ("b", "bus"), ("↑↓", "stem"), ("←→", "gain"),
                         ("m", "mute"), ("s", "solo"), ("0", "unity"), ("q", "quit")]:
            assert expected in keys, (expected, keys)

    drive(script, size=(120, 30))


def test_any_stem_and_bus_names_and_more_stems_than_digits():
    names = ["lead vocals", "2nd.gtr"] + [f"s{i}" for i in range(3, 11)]  # not widget ids; ten stems

    class OddView(View):
        def __init__(self):
            super().__init__()
            self.mixer = StemMixer(names, RATE, buses=("main out",))

    async def script(app, pilot, view):
        await pilot.press("1", "!")
        assert view.mixer.buses["main out"].stems["lead vocals"].mute
        assert view.mixer.buses["main out"].stems["lead vocals"].solo
        await pilot.press("b")  # one bus: stays
        assert app.bus_name == "main out"
        await settle(pilot, app)
        assert shown(app, "label 2nd.gtr").startswith("  2 2nd.gtr")
        assert shown(app, "label s10").startswith("    s10")  # no digit reaches the tenth stem

    drive(script, view=OddView(), size=(80, 24))


def screen_row(app, y: int) -> str:
    """The text of screen row ``y``, put together from the widgets that paint it."""
    width = app.screen.size.width
    row = [" "] * width
    seen = []
    for x in range(width):
        try:
            widget, _ = app.screen.get_widget_at(x, y)
        except Exception:  # noqa: BLE001 - nothing painted there
            continue
        if any(widget is w for w in seen):
            continue
        seen.append(widget)
        region = widget.region
        line = widget.render_lines(Region(0, y - region.y, region.width, 1))[0].text
        for i, ch in enumerate(line[:region.width]):
            if 0 <= region.x + i < width:
                row[region.x + i] = ch
    return "".join(row)


@pytest.mark.parametrize("width", [80, 110, 160])
def test_every_meter_column_has_its_bus_named_above_it(width):
    """Issue 28 item 12: with the karaoke rig (two buses) at 110 columns the heading named each bus over its
    peak meter only, so the rms meters read as a third, nameless bus column of -inf meters."""
    from bridge.plugin.rig import load_rig

    rig = load_rig(REPO_RIGS / "karaoke.yaml")

    class RigView(View):
        def __init__(self):
            super().__init__()
            self.mixer = StemMixer(rig.config.stems, RATE, buses=rig.buses)

    async def script(app, pilot, view):
        view.mixer.buses["main"].stems["vocals"].mute = True
        play(view.mixer, "drums")
        await settle(pilot, app)
        first = rig.config.stems[0]
        header_y = app.stem_meter(first, rig.buses[0]).region.y - 1
        header = screen_row(app, header_y)
        halves = 0
        for bus in rig.buses:
            meter = app.stem_meter(first, bus)
            text = shown(app, f"meter {first} {bus}")
            start = 0
            for half, number in zip(("peak", "rms"), re.finditer(r"-inf|[+-]?\d+\.\d", text)):
                above = header[meter.region.x + start:meter.region.x + number.end()].strip()
                assert above.endswith(half) and (above.startswith(f"{bus} ") or above.startswith(bus[:3])), \
                    (width, bus, half, above, header)
                start = number.end() + 1
                halves += 1
        assert halves == 2 * len(rig.buses)
        # one heading per meter half and no other: no bus column without a meter, no meter without its bus
        assert header.count("peak") == header.count("rms") == len(rig.buses), header

    drive(script, view=RigView(), size=(width, 30))


def test_w_shows_the_browser_mixers_address_and_qr_code():
    from bridge.live.ui_web import WebScreen
    from bridge.web.surface import qr_text

    url = "http://192.168.1.20:8080/?t=Zr4kQ0c9abcdef"
    view = View()
    view.web = (url, qr_text(url))

    async def script(app, pilot, view):
        await pilot.press("w")
        await settle(pilot, app)
        assert isinstance(app.screen, WebScreen)
        shown_text = str(app.screen.query_one("#web").render())
        assert url in shown_text and any(block in shown_text for block in "▀▄█")   # the QR code's half blocks
        await pilot.press("1")                     # the mixer's keys do nothing while it is open
        assert not control(view, "main", "vocals").mute
        await pilot.press("escape")
        await settle(pilot, app)
        assert not isinstance(app.screen, WebScreen)
        await pilot.press("1")
        assert control(view, "main", "vocals").mute

    drive(script, view)


def test_w_without_a_browser_mixer_says_how_to_get_one():
    async def script(app, pilot, view):
        await pilot.press("w")
        await settle(pilot, app)
        assert "--web PORT" in app.key_error

    drive(script)

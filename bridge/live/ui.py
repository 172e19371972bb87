"""The live terminal mixer: a Textual app over a ``StemMixer`` and the live session's status.

One row per stem shows, for every bus, the stem's post-fader peak and RMS level on that bus (its
meter plus the gain the bus gives it, so a muted stem reads ``-inf``) and its controls (gain in dB,
M for mute, S for solo); one row per bus shows the bus meter and gain; a status area below shows
latency, real-time factor, dropouts, devices, recording, OSC and any error.

The app is handed a *view* (the live session implements it)::

    view.mixer        a StemMixer
    view.status()     a bridge.live.status.LiveStatus: seconds, latency_ms, latency_parts_ms, realtime_factor,
                      deadline_misses, input_overflows, output_underflows, record_dropped, callback_ms_p99,
                      surfaces (each control surface's label, "osc: udp://..."), input, output, recording, error
    view.finished     true once the session is over (the app then exits by itself)

Keys: 1..9 toggle mute of stem N on the selected bus, shift+1..9 (``!@#$%^&*(``) its solo, ``b``
cycles the selected bus, up/down select a stem, left/right change its gain by 1 dB, ``m``/``s``
mute/solo it, ``0`` puts the selected bus back to unity, ``l`` MIDI learn (:mod:`bridge.live.ui_learn`: move
a control, choose its target), ``q`` or ctrl+c quit.

The app shares the process with the audio callback, so a refresh only repaints the cells whose
shown value changed (fixed-size widgets, no layout pass), and setting a control only sets a target
that the audio side picks up at its next block (the mixer's design).
"""
from __future__ import annotations

import math
from typing import Any, Callable

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Footer, Static

from bridge.mix.mixer import SILENCE_DB, StemMixer

from .status import LiveStatus
from streamer.errors import SettingsError

METER_FLOOR_DB = -60.0  # an empty bar at or below this level; a full one at 0 dBFS
GAIN_STEP_DB = 1.0
GAIN_OFF_BELOW_DB = -60.0  # left arrow at or below this turns the stem off (-inf); right from off comes back here
MAX_STEMS_BY_KEY = 9

# shift+1..9 as a US keyboard sends them (Textual key names), in digit order
SHIFTED_DIGITS = ("exclamation_mark", "at", "number_sign", "dollar_sign", "percent_sign",
                  "circumflex_accent", "ampersand", "asterisk", "left_parenthesis")

LABEL_WIDTH = 12
CONTROL_WIDTH = 11


def _bindings() -> list[Binding]:
    keys = []
    for n in range(1, MAX_STEMS_BY_KEY + 1):
        first = n == 1
        keys.append(Binding(str(n), f"mute({n})", "mute", key_display="1-9", show=first))
    for n, name in enumerate(SHIFTED_DIGITS, start=1):
        keys.append(Binding(name, f"solo({n})", "solo", key_display="⇧1-9", show=n == 1))
        keys.append(Binding(f"shift+{n}", f"solo({n})", "solo", show=False))
    keys += [
        Binding("b", "next_bus", "bus"),
        Binding("up", "select(-1)", "stem", key_display="↑↓"),
        Binding("down", "select(1)", "stem", show=False),
        Binding("left", "gain(-1)", "gain", key_display="←→"),
        Binding("right", "gain(1)", "gain", show=False),
        Binding("m", "mute_selected", "mute"),
        Binding("s", "solo_selected", "solo"),
        Binding("0", "reset_bus", "unity"),
        Binding("l", "learn", "MIDI learn"),
        Binding("w", "web", "phone"),
        Binding("q", "stop", "quit"),
        Binding("ctrl+c", "stop", "quit", show=False, priority=True),
    ]
    return keys


def post_fader_db(meter_db: float, gain: float) -> float:
    """A level after a linear gain: ``meter_db + 20*log10(gain)``; ``-inf`` for silence or a zero gain."""
    if gain <= 0.0 or not math.isfinite(meter_db) or meter_db <= SILENCE_DB:
        return -math.inf
    level = meter_db + 20.0 * math.log10(gain)
    return level if level > SILENCE_DB else -math.inf


def format_db(db: float) -> str:
    """``-inf`` for silence, else one decimal (a ``+`` above 0 dB)."""
    if not math.isfinite(db) or db <= SILENCE_DB:
        return "-inf"
    db = round(db, 1)
    if db <= -100.0:
        return f"{db:.0f}"  # keeps to five characters
    return f"+{db:.1f}" if db > 0.0 else f"{db:.1f}".replace("-0.0", "0.0")


def _bar_colour(db: float) -> str:
    return "red" if db >= -6.0 else "yellow" if db >= -18.0 else "green"


def level_bar(db: float, width: int) -> Text:
    """A horizontal bar ``width`` cells long, filled from ``METER_FLOOR_DB`` up to 0 dBFS."""
    text = Text(no_wrap=True, overflow="crop")
    if width <= 0:
        return text
    filled = 0
    if math.isfinite(db) and db > METER_FLOOR_DB:
        filled = min(width, int(round((db - METER_FLOOR_DB) / -METER_FLOOR_DB * width)))
    for i in range(width):
        if i < filled:
            cell_db = METER_FLOOR_DB + (i + 0.5) / width * -METER_FLOOR_DB
            text.append("█", _bar_colour(cell_db))
        else:
            text.append("·", "grey37")
    return text


def _fmt_ms(value: Any) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if math.isnan(value) else f"{value:.1f} ms"


def _fmt_number(value: Any, digits: int = 2) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _fmt_clock(seconds: Any) -> str:
    try:
        seconds = max(0.0, float(seconds))
    except (TypeError, ValueError):
        return "--:--"
    if math.isnan(seconds) or math.isinf(seconds):
        return "--:--"
    minutes, rest = divmod(seconds, 60.0)
    return f"{int(minutes):02d}:{rest:04.1f}"


class LevelMeter(Widget):
    """Peak and RMS bars with their dB numbers on one line; repaints only when the shown value changes."""

    DEFAULT_CSS = """
    LevelMeter { height: 1; width: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.peak_db = -math.inf
        self.rms_db = -math.inf
        self._shown: tuple[str, str] = (format_db(-math.inf), format_db(-math.inf))

    def show(self, peak_db: float, rms_db: float) -> None:
        self.peak_db, self.rms_db = peak_db, rms_db
        shown = (format_db(peak_db), format_db(rms_db))
        if shown != self._shown:
            self._shown = shown
            self.refresh()

    def render(self) -> Text:
        bar, number = meter_parts(self.size.width)  # bar, space, number, space, bar, space, number
        text = Text(no_wrap=True, overflow="crop")
        for i, (db, label) in enumerate(((self.peak_db, self._shown[0]), (self.rms_db, self._shown[1]))):
            if i:
                text.append(" ")
            text.append_text(level_bar(db, bar))
            text.append(" ")
            over = math.isfinite(db) and db > 0.0
            text.append(label.rjust(number), "bold red" if over else "")
        return text


def meter_parts(width: int) -> tuple[int, int]:
    """(bar, number) cells of each half of a :class:`LevelMeter` ``width`` cells wide: peak is
    ``bar`` + space + ``number``, a space, then rms the same (the rest of the width stays blank)."""
    number = 5  # "-12.3"
    return max(1, (width - 2 * number - 3) // 2), number


class MeterHead(Widget):
    """The heading of one bus's meter column: ``BUS peak`` over the peak half and ``BUS rms`` over the
    rms half, laid out exactly as :class:`LevelMeter` lays out its bars, so every meter on the screen has
    its bus named right above it (a heading over the first half only left the rms half looking like
    another, nameless bus)."""

    DEFAULT_CSS = """
    MeterHead { height: 1; width: 1fr; color: $text-muted; }
    """

    def __init__(self, bus: str) -> None:
        super().__init__()
        self.bus = bus
        self.selected = False

    def show(self, selected: bool) -> None:
        if selected != self.selected:
            self.selected = selected
            self.refresh()

    def render(self) -> Text:
        bar, number = meter_parts(self.size.width)
        part = bar + 1 + number
        style = "bold reverse" if self.selected else "bold"
        text = Text(no_wrap=True, overflow="crop")
        for i, what in enumerate(("peak", "rms")):
            if i:
                text.append(" ")
            label = Text.assemble((self.bus, style), f" {what}", no_wrap=True, overflow="crop")
            if len(label) > part:  # a long bus name: keep what the half is, and as much of the name as fits
                label = Text.assemble((self.bus[:max(1, part - len(what) - 2)] + "…", style), f" {what}")
            label.truncate(part, pad=True)
            text.append_text(label)
        return text


class Cell(Widget):
    """A fixed-size cell of Rich text; repaints only when its text changes."""

    DEFAULT_CSS = """
    Cell { height: 1; }
    """

    def __init__(self, text: Text | str = "", *, width: int | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._text = text if isinstance(text, Text) else Text(text, no_wrap=True, overflow="crop")
        if width is not None:
            self.styles.width = width

    @property
    def text(self) -> Text:
        return self._text

    def set_text(self, text: Text) -> None:
        if text.plain != self._text.plain or text.spans != self._text.spans:
            self._text = text
            self.refresh()

    def render(self) -> Text:
        return self._text


class MixerApp(App):
    """The live mixer. ``MixerApp(view, refresh_hz=20.0).run()``; the result is ``"quit"`` when the
    user quit, ``"finished"`` when the session ended by itself (``view.finished``)."""

    TITLE = "stemstream live"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    Screen { layout: vertical; overflow: hidden hidden; }
    .row { height: 1; width: 1fr; }
    #selection { height: 1; text-style: bold; }
    .head { color: $text-muted; }
    .gap { height: 1; }
    #status { height: 1fr; margin-top: 1; }
    """
    BINDINGS = _bindings()

    def __init__(self, view, refresh_hz: float = 20.0) -> None:
        super().__init__()
        if not isinstance(refresh_hz, (int, float)) or isinstance(refresh_hz, bool) \
                or not math.isfinite(refresh_hz) or refresh_hz <= 0:
            raise SettingsError(f"refresh_hz must be a positive number of refreshes a second, got {refresh_hz!r}")
        self.view = view
        self.mixer: StemMixer = view.mixer
        self.refresh_hz = float(refresh_hz)
        self.selected_bus = 0
        self.selected_stem = 0
        self.key_error: str | None = None  # the last error a key caused (a refused setting), shown in red
        self._stem_meters: list[list[LevelMeter]] = []
        self._stem_controls: list[list[Cell]] = []
        self._stem_labels: list[Cell] = []
        self._bus_meters: list[LevelMeter] = []
        self._bus_gains: list[Cell] = []
        self._bus_heads: list[MeterHead] = []
        self._status_text: Text | None = None
        self._clock = _fmt_clock(None)
        self._exiting = False

    # -- layout ---------------------------------------------------------------------------------

    @property
    def bus_name(self) -> str:
        return self.mixer.bus_names[self.selected_bus]

    @property
    def stem_name(self) -> str:
        return self.mixer.stem_names[self.selected_stem]

    # the widgets by stem and bus name (names need not be valid widget ids, so none carry them)

    def stem_meter(self, stem: str, bus: str) -> LevelMeter:
        """The post-fader peak/RMS meter of ``stem`` on ``bus``."""
        return self._stem_meters[self.mixer.stem_names.index(stem)][self.mixer.bus_names.index(bus)]

    def stem_controls(self, stem: str, bus: str) -> Cell:
        """The gain and M/S flags of ``stem`` on ``bus``."""
        return self._stem_controls[self.mixer.stem_names.index(stem)][self.mixer.bus_names.index(bus)]

    def stem_label(self, stem: str) -> Cell:
        return self._stem_labels[self.mixer.stem_names.index(stem)]

    def bus_meter(self, bus: str) -> LevelMeter:
        return self._bus_meters[self.mixer.bus_names.index(bus)]

    def bus_gain(self, bus: str) -> Cell:
        return self._bus_gains[self.mixer.bus_names.index(bus)]

    @property
    def selection_line(self) -> Cell:
        """The top line: selected bus and stem, time running."""
        return self._selection

    @property
    def status_area(self) -> Static:
        return self._status

    def compose(self) -> ComposeResult:
        mixer = self.mixer
        self._selection = Cell(id="selection")
        yield self._selection
        with Horizontal(classes="row"):
            yield Cell(Text("  # stem"), width=LABEL_WIDTH, classes="head")
            for b in mixer.bus_names:
                head = MeterHead(b)
                self._bus_heads.append(head)
                yield head
                yield Cell(Text("  gain M S"), width=CONTROL_WIDTH, classes="head")
        for s, stem in enumerate(mixer.stem_names):
            meters, controls = [], []
            with Horizontal(classes="row"):
                label = Cell(width=LABEL_WIDTH)
                self._stem_labels.append(label)
                yield label
                for _ in mixer.bus_names:
                    meter = LevelMeter()
                    control = Cell(width=CONTROL_WIDTH)
                    meters.append(meter)
                    controls.append(control)
                    yield meter
                    yield control
            self._stem_meters.append(meters)
            self._stem_controls.append(controls)
        yield Static(classes="gap")
        for i, bus in enumerate(mixer.bus_names):
            with Horizontal(classes="row"):
                yield Cell(Text(f"Σ {bus}"[:LABEL_WIDTH], style="bold"), width=LABEL_WIDTH)
                for j in range(len(mixer.bus_names)):
                    if j == i:
                        meter = LevelMeter()
                        gain = Cell(width=CONTROL_WIDTH)
                        self._bus_meters.append(meter)
                        self._bus_gains.append(gain)
                        yield meter
                        yield gain
                    else:
                        spacer = Cell()
                        spacer.styles.width = "1fr"
                        yield spacer
                        yield Cell(width=CONTROL_WIDTH)
        self._status = Static(id="status")
        yield self._status
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_view()
        self.set_interval(1.0 / self.refresh_hz, self.refresh_view, name="mixer refresh")

    # -- refresh --------------------------------------------------------------------------------

    def refresh_view(self) -> None:
        """Copy the meters, controls and status into the widgets (only changed cells repaint)."""
        if self._exiting or not self._status.is_attached:
            return  # ending: the widgets may already be gone (the timer can fire once more)
        try:
            status = self.view.status()
            status_error = None
        except Exception as exc:  # a broken status source must not take the mixer down
            status, status_error = LiveStatus(), f"status: {exc}"
        if not isinstance(status, LiveStatus):
            status, status_error = LiveStatus(), f"status() gave {type(status).__name__}, not a LiveStatus"
        self._clock = _fmt_clock(status.seconds if status_error is None else None)
        self._refresh_levels()
        self._refresh_controls()
        self._refresh_status(status, status_error)
        try:
            finished = bool(self.view.finished)
        except Exception:
            finished = False
        if finished:
            self._exiting = True
            self.exit("finished")

    def _refresh_levels(self) -> None:
        mixer = self.mixer
        # written by the audio side: one consistent-enough snapshot, by name
        levels = mixer.meter_view(mixer.meters.copy())
        targets = [mixer.buses[b].targets() for b in mixer.bus_names]
        for s, stem in enumerate(mixer.stem_names):
            peak, rms = levels[stem]
            for b, meter in enumerate(self._stem_meters[s]):
                gain = float(targets[b][s])
                meter.show(post_fader_db(peak, gain), post_fader_db(rms, gain))
        for bus, meter in zip(mixer.bus_names, self._bus_meters):
            peak, rms = levels[f"bus:{bus}"]
            meter.show(post_fader_db(peak, 1.0), post_fader_db(rms, 1.0))

    def _refresh_controls(self) -> None:
        mixer = self.mixer
        selected_bus = self.bus_name
        self._selection.set_text(Text.assemble(
            ("stemstream live", "bold"), "   bus ", (selected_bus, "bold reverse"),
            "   stem ", (f"{self.selected_stem + 1} {self.stem_name}", "bold"),
            "   time ", self._clock,
        ))
        for b, head in enumerate(self._bus_heads):
            head.show(b == self.selected_bus)
        for s, stem in enumerate(mixer.stem_names):
            selected = s == self.selected_stem
            marker = "▸" if selected else " "
            number = str(s + 1) if s < MAX_STEMS_BY_KEY else " "
            label = f"{marker} {number} {stem}"[:LABEL_WIDTH]
            self._stem_labels[s].set_text(Text(label, style="bold reverse" if selected else ""))
            for b, bus in enumerate(mixer.bus_names):
                control = mixer.buses[bus].stems[stem]
                here = selected and b == self.selected_bus
                text = Text(no_wrap=True, overflow="crop")
                text.append(format_db(control.gain_db).rjust(6), "bold underline" if here else "")
                text.append(" ")
                text.append("M", "bold white on red" if control.mute else "grey37")
                text.append(" ")
                text.append("S", "bold black on yellow" if control.solo else "grey37")
                self._stem_controls[s][b].set_text(text)
        for bus, cell in zip(mixer.bus_names, self._bus_gains):
            cell.set_text(Text(format_db(mixer.buses[bus].gain_db).rjust(6) + " dB"))

    def _refresh_status(self, status: LiveStatus, status_error: str | None) -> None:
        text = Text()
        for error in (status.error, status_error, self.key_error):  # first, so a short terminal still shows it
            if error:
                text.append(f"error: {error}", "bold red")
                text.append("\n")
        parts = status.latency_parts_ms or {}
        try:
            parts_text = " + ".join(f"{name} {_fmt_number(ms, 1)}" for name, ms in parts.items())
        except Exception:
            parts_text = ""
        text.append("latency ", "bold")
        text.append(_fmt_ms(status.latency_ms))
        if parts_text:
            text.append(f" = {parts_text}")
        text.append("\n")
        text.append("real-time factor ", "bold")
        text.append(_fmt_number(status.realtime_factor))
        text.append("  callback p99 ", "bold")
        text.append(_fmt_ms(status.callback_ms_p99))
        self._counts(text, status, (("deadline misses", "deadline_misses"),), first=False)
        text.append("\n")
        self._counts(text, status, (("input overflows", "input_overflows"), ("output underflows", "output_underflows"),
                                    ("dropped record blocks", "record_dropped")))
        text.append("\n")
        text.append("in ", "bold")
        text.append(str(status.input or "n/a"))
        text.append("  out ", "bold")
        text.append(str(status.output or "n/a"))
        text.append("\n")
        text.append("recording ", "bold")
        text.append(str(status.recording) if status.recording else "off")
        for label in status.surfaces:   # each control surface: "osc: udp://..." shows as "osc udp://..."
            kind, sep, where = str(label).partition(":")
            text.append(f"  {kind.strip() if sep else label} ", "bold")
            text.append(where.strip() if sep else "")
        old = self._status_text
        if old is None or old.plain != text.plain or old.spans != text.spans:
            self._status_text = text
            # the status area has a fixed height (the rest of the screen): no layout pass needed
            self._status.update(text, layout=False)

    @staticmethod
    def _counts(text: Text, status: LiveStatus, items, first: bool = True) -> None:
        """``label count`` pairs, two spaces apart; a count above zero in yellow."""
        for i, (label, key) in enumerate(items):
            text.append(f"{label} " if first and i == 0 else f"  {label} ", "bold")
            count = getattr(status, key, 0)
            text.append(str(count), "bold yellow" if count else "")

    # -- keys -----------------------------------------------------------------------------------

    def _guarded(self, change: Callable[[], None]) -> None:
        """Apply a control change; a refused setting (or anything else) is shown, never raised."""
        try:
            change()
        except SettingsError as exc:
            self.key_error = str(exc)
        except Exception as exc:  # a key must never take the live session down
            self.key_error = f"{type(exc).__name__}: {exc}"
        else:
            self.key_error = None
        self.refresh_view()

    def _control(self, stem_index: int):
        return self.mixer.buses[self.bus_name].stems[self.mixer.stem_names[stem_index]]

    def _toggle(self, stem_index: int, flag: str) -> None:
        if not 0 <= stem_index < len(self.mixer.stem_names):
            return  # a stem number beyond the stems: nothing to do

        def change() -> None:
            control = self._control(stem_index)
            setattr(control, flag, not getattr(control, flag))

        self._guarded(change)

    def action_mute(self, number: int) -> None:
        """Toggle mute of stem ``number`` (1-based) on the selected bus."""
        self._toggle(int(number) - 1, "mute")

    def action_solo(self, number: int) -> None:
        """Toggle solo of stem ``number`` (1-based) on the selected bus."""
        self._toggle(int(number) - 1, "solo")

    def action_mute_selected(self) -> None:
        self._toggle(self.selected_stem, "mute")

    def action_solo_selected(self) -> None:
        self._toggle(self.selected_stem, "solo")

    def action_next_bus(self) -> None:
        self.selected_bus = (self.selected_bus + 1) % len(self.mixer.bus_names)
        self.refresh_view()

    def action_select(self, step: int) -> None:
        count = len(self.mixer.stem_names)
        self.selected_stem = min(count - 1, max(0, self.selected_stem + int(step)))
        self.refresh_view()

    def action_gain(self, step: int) -> None:
        """Change the selected stem's gain on the selected bus by ``step`` dB (down to off, up to +24)."""

        def change() -> None:
            control = self._control(self.selected_stem)
            gain = control.gain_db
            if gain == -math.inf:
                new = GAIN_OFF_BELOW_DB if step > 0 else -math.inf
            else:
                new = gain + step * GAIN_STEP_DB
                if step < 0 and new < GAIN_OFF_BELOW_DB:
                    new = -math.inf
            control.gain_db = new

        self._guarded(change)

    def action_reset_bus(self) -> None:
        """The selected bus back to unity: every stem at 0 dB, nothing muted or soloed, bus gain 0 dB."""

        def change() -> None:
            bus = self.mixer.buses[self.bus_name]
            for control in bus.stems.values():
                control.reset()
            bus.gain_db = 0.0

        self._guarded(change)

    def action_learn(self) -> None:
        """MIDI learn (:mod:`bridge.live.ui_learn`): needs a view that can (the live session; it answers that
        there is no controller when it was started without --midi)."""
        if not hasattr(self.view, "learn"):
            self.key_error = "MIDI learn needs a MIDI controller: stemstream live --midi NAME (or --midi-virtual)"
            self.refresh_view()
            return
        from .ui_learn import LearnScreen

        self.key_error = None
        self.push_screen(LearnScreen(self.view, self.stem_name, self.bus_name))

    def action_web(self) -> None:
        """The browser mixer's address and QR code (:mod:`bridge.live.ui_web`), when the run has ``--web``."""
        web = getattr(self.view, "web", None)
        if not web:
            self.key_error = "no browser mixer in this run: stemstream live --web PORT"
            self.refresh_view()
            return
        from .ui_web import WebScreen

        self.key_error = None
        self.push_screen(WebScreen(*web))

    def action_stop(self) -> None:
        if not self._exiting:
            self._exiting = True
            self.exit("quit")

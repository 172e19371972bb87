"""MIDI learn in the terminal mixer: ``l`` opens :class:`LearnScreen` over the mixer.

1. the screen asks the view to start learning (``view.learn(("start",))``): the live session (the parent
   process, where the MIDI surface lives) waits for the next control moved on the controller;
2. once it says which control (``view.learn_state``: ``("captured", "ch1 cc 7")``), a key chooses the
   target: ``f``/``m``/``s`` the selected stem's fader/mute/solo on the selected bus, ``g`` the selected
   bus's fader, ``1``-``9`` scene N (in the rig's order); ``escape`` cancels;
3. the session maps it, uses it at once and writes the mapping file atomically (the next run reads it);
   the screen shows where (``("done", "...")``) or why not (``("error", "...")``) and closes.

The view (the mixer's child-process side, :mod:`bridge.live.ui_process`) carries the requests over the
pipe; a view without ``learn`` has no MIDI learn.
"""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Static

CLOSE_AFTER_SECONDS = 2.5
KEYS_TEXT = ("f fader, m mute, s solo of {stem} on {bus}; g the {bus} bus fader; 1-9 scene N; "
             "escape cancels")


class LearnScreen(ModalScreen):
    """The learn dialog (see the module docstring); ``stem``/``bus``: the mixer's selection."""

    DEFAULT_CSS = """
    LearnScreen { align: center middle; }
    #learn { width: 80%; height: auto; border: round $accent; padding: 1 2; background: $panel; }
    """
    BINDINGS = [Binding("f", "pick('fader')", "fader"), Binding("m", "pick('mute')", "mute"),
                Binding("s", "pick('solo')", "solo"), Binding("g", "bus_fader", "bus fader"),
                *[Binding(str(n), f"scene({n})", "scene", show=n == 1, key_display="1-9") for n in range(1, 10)],
                Binding("escape", "cancel", "cancel")]

    def __init__(self, view, stem: str, bus: str) -> None:
        super().__init__()
        self.view = view
        self.stem, self.bus = stem, bus
        self.sent = False
        self._closing = False

    def compose(self) -> ComposeResult:
        self.text = Static(id="learn")
        yield self.text

    def on_mount(self) -> None:
        self.view.learn(("start",))
        self.refresh_text()
        self.set_interval(0.1, self.refresh_text)

    @property
    def state(self) -> tuple[str, str]:
        return tuple(getattr(self.view, "learn_state", None) or ("starting", ""))

    def refresh_text(self) -> None:
        phase, detail = self.state
        text = Text("MIDI learn: ", style="bold")
        if phase == "starting":
            text.append("getting ready...")
        elif phase == "waiting":
            text.append("move a control on the controller (escape cancels)")
        elif phase == "captured":
            text.append(f"{detail}\n", style="bold yellow")
            text.append("map it to: " + KEYS_TEXT.format(stem=self.stem, bus=self.bus))
        elif phase == "done":
            text.append(detail, style="bold green")
        else:
            text.append(detail or phase, style="bold red")
        self.text.update(text)
        if phase in ("done", "error", "timeout") and not self._closing:
            self._closing = True
            self.set_timer(CLOSE_AFTER_SECONDS, self._close)

    def _close(self) -> None:
        if self.is_attached:
            self.dismiss(self.state[1])

    def _assign(self, target: dict) -> None:
        if self.state[0] != "captured" or self.sent:
            return
        self.sent = True
        self.view.learn(("assign", target))

    def action_pick(self, control: str) -> None:
        self._assign({"stem": self.stem, "bus": self.bus, "control": control})

    def action_bus_fader(self) -> None:
        self._assign({"bus": self.bus, "control": "fader"})

    def action_scene(self, number: int) -> None:
        self._assign({"scene": int(number)})

    def action_cancel(self) -> None:
        if self.state[0] in ("starting", "waiting", "captured"):
            self.view.learn(("cancel",))
        self.dismiss(None)

"""The browser mixer's address in the terminal mixer: ``w`` opens :class:`WebScreen`, the page's address
(with its access token) and its QR code, for a phone's camera; any key closes it.

The live session passes the address and the QR text to the mixer process when it starts it (a surface
with ``url`` and ``qr()``: :class:`bridge.web.surface.WebSurface`); the surface's label, which the
summary and ``session.json`` keep, never holds the token.
"""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Static


class WebScreen(ModalScreen):
    """The address and the QR code (``url``, ``qr``: text) over the mixer."""

    DEFAULT_CSS = """
    WebScreen { align: center middle; }
    #web { width: auto; height: auto; border: round $accent; padding: 0 2; background: $panel; }
    """
    BINDINGS = [Binding("escape", "close", "close"), Binding("w", "close", "close", show=False),
                Binding("q", "close", "close", show=False)]

    def __init__(self, url: str, qr: str) -> None:
        super().__init__()
        self.url = url
        self.qr = qr

    def compose(self) -> ComposeResult:
        text = Text()
        text.append("browser mixer: open on a phone, or scan\n", style="bold")
        text.append(self.url + "\n\n")
        text.append(self.qr.rstrip("\n") + "\n")
        text.append("\nescape closes", style="dim")
        yield Static(text, id="web")

    def action_close(self) -> None:
        self.dismiss()

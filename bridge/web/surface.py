"""The browser mixer as a control surface of a live session (``LiveSession.add_surface``), and the QR code
of its address for the terminal."""
from __future__ import annotations

import io
from typing import Callable, Sequence

from .server import WebMixer


def qr_text(url: str, border: int = 2) -> str:
    """``url`` as a QR code in text: two modules per character cell with Unicode half blocks, light
    modules drawn (for a dark terminal; phones read it either way)."""
    import segno

    out = io.StringIO()
    segno.make(url, error="m").terminal(out=out, compact=True, border=border)
    return out.getvalue().rstrip("\n")


class WebSurface:
    """``stemstream live --web PORT``: the browser mixer (:class:`bridge.web.server.WebMixer`) as a
    surface: ``start()`` binds the port (a ``SettingsError`` when it cannot), ``close()`` stops it,
    ``label`` is ``"web: http://HOST:PORT/"`` (without the token, which is in :attr:`url`), ``counters()``
    what ``/engine/status`` shows under ``web``."""

    name = "web"

    def __init__(self, separator, port: int, host: str = "127.0.0.1", allow: Sequence[str] = (),
                 token: str | None = None, status: Callable[[], dict] | None = None):
        self.server = WebMixer(separator, port=port, host=host, allow=allow, token=token, status=status)
        self.started = False

    def start(self) -> None:
        if not self.started:
            self.server.start()
            self.started = True

    @property
    def label(self) -> str:
        if not self.started:
            return f"web: port {self.server.requested_port} (not started)"
        return f"web: {self.server.base_url}"

    @property
    def url(self) -> str:
        """The page's address with the access token."""
        return self.server.url

    def qr(self) -> str:
        return qr_text(self.url)

    def qr_for(self, stream) -> str:
        """The QR code if ``stream`` can show its block characters, else a line saying to use the address."""
        text = self.qr()
        try:
            text.encode(getattr(stream, "encoding", None) or "ascii")
        except (UnicodeError, LookupError):
            return "(this terminal cannot show the QR code's characters: open the address above)"
        return text

    def counters(self) -> dict[str, int]:
        return self.server.status_counters()

    def close(self) -> None:
        self.server.close()

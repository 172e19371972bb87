"""What a live session reports while it runs, as one typed value (:class:`LiveStatus`).

``LiveSession.status()`` makes one; the status line (``--no-ui``), the terminal mixer (sent to its process:
the value pickles), and OSC's ``/engine/status`` (through the control model's host status) read it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LiveStatus:
    """A live session's numbers now.

    ``seconds``: audio played; ``latency_ms``: input to output, and ``latency_parts_ms`` where it comes from
    (algorithmic, processing, effects, resampling); ``realtime_factor``: each window's compute over the hop
    (NaN before the first); ``deadline_misses``: windows that came too late; ``input_overflows``,
    ``output_underflows``: the device's xruns; ``record_dropped``: recorder blocks dropped;
    ``recorded_seconds``: recorded so far (None without ``--record``); ``callback_ms_median``/``_p99``: the
    audio callback's duration; ``surfaces``: each control surface's label (``"osc: udp://127.0.0.1:9000"``);
    ``input``, ``output``: the devices; ``recording``: the take's folder; ``error``: what went wrong."""

    seconds: float = 0.0
    latency_ms: float = math.nan
    latency_parts_ms: dict[str, float] = field(default_factory=dict)
    realtime_factor: float = math.nan
    deadline_misses: int = 0
    input_overflows: int = 0
    output_underflows: int = 0
    record_dropped: int = 0
    recorded_seconds: float | None = None
    callback_ms_median: float = math.nan
    callback_ms_p99: float = math.nan
    surfaces: tuple[str, ...] = ()
    input: str | None = None
    output: str | None = None
    recording: str | None = None
    error: str | None = None

    @property
    def xruns(self) -> int:
        """Input overflows plus output underflows."""
        return int(self.input_overflows) + int(self.output_underflows)

    @property
    def osc(self) -> str | None:
        """The OSC surface's endpoints (None without one)."""
        for label in self.surfaces:
            kind, _, where = label.partition(":")
            if kind.strip() == "osc":
                return where.strip()
        return None

    def line(self) -> str:
        """The status line printed once a second without the terminal mixer."""
        text = (f"{self.seconds:7.1f} s | latency {self.latency_ms:.0f} ms | rtf {self.realtime_factor:.2f} | "
                f"misses {self.deadline_misses} | overflows {self.input_overflows} | "
                f"underflows {self.output_underflows} | rec dropped {self.record_dropped} | "
                f"callback p99 {self.callback_ms_p99:.2f} ms")
        if self.error:
            text += f" | {self.error}"
        return text

"""pedalboard's channel-layout rule, in one place (``StemSeparator`` and ``Chain`` both follow it).

1-D audio is mono. In 2-D audio the smaller dimension is the channels: ``(channels, frames)`` is
channels-first, ``(frames, channels)`` channels-last, and the output keeps the layout. A square
array cannot tell: it takes the layout remembered from the last non-square call, and is refused
when there is none (``reset()`` forgets it), as pedalboard's plugins do.
"""
from __future__ import annotations

from streamer.errors import AudioError, StemstreamError

MONO, FIRST, LAST = "mono", "first", "last"


class LayoutError(StemstreamError, RuntimeError):
    """A square block whose layout cannot be told (pedalboard raises RuntimeError here too)."""


class ChannelLayout:
    """Decides each block's layout and remembers the last non-square one."""

    def __init__(self) -> None:
        self.last: str | None = None

    def reset(self) -> None:
        self.last = None

    def decide(self, shape: tuple[int, ...]) -> str:
        """``MONO``, ``FIRST`` or ``LAST`` for an array of this shape."""
        if len(shape) == 1:
            return MONO
        if len(shape) != 2:
            raise AudioError(f"expected 1-D or 2-D audio, got shape {tuple(shape)}")
        if shape[0] == shape[1]:
            if self.last not in (FIRST, LAST):
                raise LayoutError(f"Unable to determine channel layout from shape: {tuple(shape)}. Provide a "
                                  "non-square array first, or call reset() after changing layouts.")
            return self.last
        self.last = FIRST if shape[0] < shape[1] else LAST
        return self.last

    def time_axis(self, shape: tuple[int, ...]) -> int:
        """The axis that holds the frames: 1 for channels-first, else 0."""
        return 1 if self.decide(shape) == FIRST else 0

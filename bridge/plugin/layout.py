"""pedalboard's channel-layout rule, in one place (``StemSeparator`` and ``Chain`` both follow it).

Found by experiment with real pedalboard 0.9 plugins (``Gain``, ``LowpassFilter``, and the same inside
``Pedalboard([...])``, one-shot ``reset=True`` and streaming ``reset=False`` alike; an impulse through
a low-pass filter shows which axis is time) and matching pedalboard's ``detectChannelLayout`` /
``Plugin::parseAndCacheChannelLayout``. Each plugin remembers two things from its previous calls: the
last **layout** it decided and the **channel count** it last processed (the *hint*, unset until a call
with at least one channel). ``reset()`` forgets both; a one-shot call does not. For every call:

1. 1-D audio is mono: channels-first with one channel (a later square block is channels-first).
2. Not 1-D or 2-D: refused (``RuntimeError``, "Number of input dimensions must be 1 or 2"); nothing is
   remembered.
3. 2-D ``(a, b)`` with a hint ``h``: a square ``a == b > 1`` is *undecided*; else ``a == h`` means
   channels-first, else ``b == h`` channels-last; otherwise go on.
4. ``(0, b>0)`` is channels-last (``b`` channels, no frames), ``(a>0, 0)`` channels-first; otherwise the
   smaller dimension is the channels (``b < a``: channels-last, ``a < b``: channels-first); ``(1, 1)``
   is channels-first; anything else (``(0, 0)``, squares ``> 1``) is *undecided*.
5. *Undecided* takes the remembered layout, and is refused (``RuntimeError``, "Unable to determine
   channel layout ... Provide a non-square array first") when there is none.
6. The decided layout is remembered; the hint becomes the decided channel count when it is at least 1
   (a block with no channels, ``(0, 0)``, leaves it).

The output keeps the input's shape and layout. Small shapes, on a fresh plugin, after a stereo
channels-first block ``(2, N)`` (hint 2, layout first) and after a mono block ``(N,)`` (hint 1, first):

=========  ==============================  ==============================  ==============================
shape      fresh                           after (2, N)                    after (N,)
=========  ==============================  ==============================  ==============================
(0,)       mono, 0 frames                  mono                            mono
(1,) (2,)  mono                            mono                            mono
(0, 0)     RuntimeError                    first, 0 channels (remembered)  first, 0 channels
(0, 2)     last: 2 channels, 0 frames      last: 2 ch                      last: 2 ch
(2, 0)     first: 2 channels, 0 frames     first: 2 ch                     first: 2 ch
(1, 1)     first: 1 channel, 1 frame       first                           first
(1, 2)     first: 1 ch, 2 frames           **last: 2 ch, 1 frame**         first: 1 ch, 2 frames
(2, 1)     last: 1 ch, 2 frames            **first: 2 ch, 1 frame**        last: 1 ch, 2 frames
(2, 2)     RuntimeError                    first (remembered)              first (remembered)
(3, 2)     last: 2 ch, 3 frames            last: 2 ch                      last: 2 ch
(2, 3)     first: 2 ch, 3 frames           first: 2 ch                     first: 2 ch
(1, N)     first: mono                     first: mono                     first: mono
(N, 1)     last: mono                      last: mono                      last: mono
(2, N)     first: stereo                   first: stereo                   first: stereo
(N, 2)     last: stereo                    last: stereo                    last: stereo
=========  ==============================  ==============================  ==============================

Order matters beyond the table: after ``(N, 2)`` (hint 2, layout last) ``(2, 1)`` is still
channels-first (the hint wins over the remembered layout) and ``(2, 2)`` channels-last; after ``(3, N)``
(hint 3) ``(2, 3)`` is channels-last and ``(3, 2)`` channels-first; after ``(0, 5)`` (hint 5) ``(5, 1)``
is channels-first; after ``(2, 0)`` a square is channels-first, after ``(0, 2)`` channels-last; after a
1-D block a square is channels-first; a refused call changes nothing.
"""
from __future__ import annotations

from streamer.errors import StemstreamError

MONO, FIRST, LAST = "mono", "first", "last"


class LayoutError(StemstreamError, RuntimeError):
    """A block whose layout cannot be told (pedalboard raises RuntimeError here too)."""


def detect(shape: tuple[int, ...], hint: int | None) -> str | None:
    """FIRST or LAST for a 1-D or 2-D ``shape`` given the channel-count ``hint``; None when undecided."""
    if len(shape) == 1:
        return FIRST
    a, b = shape
    if hint is not None:
        if a == b and a > 1:
            return None
        if a == hint:
            return FIRST
        if b == hint:
            return LAST
    if a == 0 and b > 0:
        return LAST
    if b == 0 and a > 0:
        return FIRST
    if b < a:
        return LAST
    if a < b:
        return FIRST
    if a == 1:  # (1, 1): one sample, the layout does not matter
        return FIRST
    return None


class ChannelLayout:
    """Decides each block's layout as a pedalboard plugin does, remembering the last layout and the
    last channel count (see the module docstring)."""

    def __init__(self) -> None:
        self.last: str | None = None        # FIRST or LAST
        self.channels: int | None = None    # pedalboard's channel-count hint

    def reset(self) -> None:
        self.last = None
        self.channels = None

    def decide(self, shape: tuple[int, ...]) -> str:
        """``MONO``, ``FIRST`` or ``LAST`` for an array of this shape (and remember it)."""
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (1, 2):
            raise LayoutError(f"Number of input dimensions must be 1 or 2 (got {len(shape)}): expected "
                              "(frames,), (channels, frames) or (frames, channels) audio")
        found = detect(shape, self.channels)
        if found is None:
            if self.last is None:
                raise LayoutError(f"Unable to determine channel layout from shape: {shape}. Provide a "
                                  "non-square array first, or call reset() after changing layouts.")
            found = self.last
        self.last = found
        channels = 1 if len(shape) == 1 else (shape[0] if found == FIRST else shape[1])
        if channels > 0:
            self.channels = channels
        return MONO if len(shape) == 1 else found

    def time_axis(self, shape: tuple[int, ...]) -> int:
        """Decide (and remember) the layout; the axis that holds the frames: 1 for channels-first, else 0."""
        return 1 if self.decide(shape) == FIRST else 0

    @staticmethod
    def channel_count(shape: tuple[int, ...], layout: str) -> int:
        """Channels of a block of ``shape`` decided as ``layout``."""
        if layout == MONO:
            return 1
        return int(shape[0] if layout == FIRST else shape[1])

    @staticmethod
    def frame_count(shape: tuple[int, ...], layout: str) -> int:
        """Frames of a block of ``shape`` decided as ``layout``."""
        if layout == MONO:
            return int(shape[0])
        return int(shape[1] if layout == FIRST else shape[0])

"""The live audio path: what the audio callback does with each block, and the latency it adds.

Per callback (``LivePath.process``), with every buffer allocated up front:

1. the input: the chosen device input channels (a mono input duplicated for a stereo model), or the
   next frames of a file already at the model's rate (``FileSource``);
2. if the device runs at another rate than the model, the input is resampled to the model's rate with
   soxr's streaming resampler (time-aligned, so it adds no delay of its own);
3. the separator streams it (engine, per-stem effects, the mixer with its click-free ramps and meters:
   ``StemSeparator.stream_into``), and the recorder gets the block (never waits);
4. the outputs at the model's rate: the first bus on outputs 1-2, each ``--route`` on its channels;
5. if resampling, back to the device's rate through a second streaming resampler into a FIFO primed
   so that it never runs dry (the priming is measured up front by running the exact block pattern
   through a pair of resamplers), and the device's block is taken from the FIFO.

Latency, in device frames, from an input frame to the output frame that plays it: the separator's
``reported_latency_samples`` (engine + effects) at the model's rate, plus, when resampling, ``pad``
model samples (so that the total is a whole number of device frames: the latency is exact) and the
FIFO's priming. ``LivePath.latency_frames`` is that number; an impulse measures it exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from streamer.errors import SettingsError

RESAMPLE_QUALITY = "HQ"
FIFO_MARGIN = 16            # device frames of priming beyond the measured worst case
SIMULATED_SECONDS = 4.0     # how much of the block pattern is run through resamplers to measure the priming


@dataclass(frozen=True)
class Route:
    """``--route NAME:FIRST-LAST``: a bus or a stem on output channels ``first``..``first+count-1`` (0-based)."""

    text: str
    source: str
    kind: str       # "bus" or "stem"
    index: int      # in the mixer's buses or the separator's stems
    first: int
    count: int      # 1: the source summed to mono; else the model's channel count

    @property
    def last(self) -> int:
        return self.first + self.count - 1


def parse_route(text: str, buses: Sequence[str], stems: Sequence[str], channels: int) -> Route:
    """A route from ``NAME:FIRST-LAST`` (1-based output channels; ``NAME:N`` is one channel, the source
    summed to mono). NAME is a bus, else a stem."""
    name, sep, spec = str(text).rpartition(":")
    if not sep or not name:
        raise SettingsError(f"--route {text}: expected NAME:FIRST-LAST, e.g. monitor:3-4 or vocals:5")
    first_s, dash, last_s = spec.partition("-")
    try:
        first = int(first_s)
        last = int(last_s) if dash else first
    except ValueError:
        raise SettingsError(f"--route {text}: channels must be whole numbers, as in monitor:3-4") from None
    if first < 1 or last < first:
        raise SettingsError(f"--route {text}: channels are counted from 1 and FIRST <= LAST")
    count = last - first + 1
    if count not in (1, channels):
        raise SettingsError(f"--route {text}: {count} channels; a route takes {channels} channels (the model's) "
                            "or 1 (summed to mono)")
    if name in buses:
        return Route(str(text), name, "bus", list(buses).index(name), first - 1, count)
    if name in stems:
        return Route(str(text), name, "stem", list(stems).index(name), first - 1, count)
    raise SettingsError(f"--route {text}: no bus or stem {name!r}; buses: {', '.join(buses)}; "
                        f"stems: {', '.join(stems)}")


def check_routes(routes: Sequence[Route], channels: int) -> int:
    """Refuse routes that overlap each other or the first bus's outputs; return the output channels needed."""
    used = {c: "the first bus" for c in range(channels)}
    for r in routes:
        for c in range(r.first, r.last + 1):
            if c in used:
                raise SettingsError(f"--route {r.text}: output {c + 1} is already used by {used[c]}")
            used[c] = f"--route {r.text}"
    return max(used) + 1


def parse_channels(text: str) -> list[int]:
    """``--in-channels 1,2`` -> [0, 1] (0-based)."""
    try:
        chans = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise SettingsError(f"--in-channels {text}: expected channel numbers counted from 1, like 1,2 or 3") from None
    if not chans or min(chans) < 1:
        raise SettingsError(f"--in-channels {text}: expected channel numbers counted from 1, like 1,2 or 3")
    return [c - 1 for c in chans]


class FileSource:
    """A file already at the model's rate (channels, frames), played from the start, optionally looped."""

    def __init__(self, audio: np.ndarray, loop: bool = False):
        if audio.ndim != 2 or audio.shape[1] == 0:
            raise SettingsError("the input file holds no audio")
        self.audio = np.ascontiguousarray(audio, np.float32)
        self.loop = bool(loop)
        self.frames = self.audio.shape[1]
        self.pos = 0        # frames read so far (grows past the end: silence after it when not looping)

    def read(self, out: np.ndarray, n: int) -> None:
        """The next ``n`` frames into ``out[:, :n]``."""
        done = 0
        while done < n:
            at = self.pos % self.frames if self.loop else self.pos
            if at >= self.frames:
                out[:, done:n] = 0.0
                self.pos += n - done
                return
            k = min(n - done, self.frames - at)
            out[:, done:done + k] = self.audio[:, at:at + k]
            done += k
            self.pos += k

    @property
    def finished(self) -> bool:
        return not self.loop and self.pos >= self.frames

    def rewind(self) -> None:
        self.pos = 0


class _Fifo:
    """A ring of device frames (frames, channels) between the output resampler and the device."""

    def __init__(self, capacity: int, channels: int):
        self.buf = np.zeros((capacity, channels), np.float32)
        self.cap = capacity
        self.read_pos = 0
        self.write_pos = 0

    @property
    def size(self) -> int:
        return self.write_pos - self.read_pos

    def clear(self, prime: int) -> None:
        self.read_pos = 0
        self.write_pos = prime
        self.buf[:prime] = 0.0

    def write(self, y: np.ndarray) -> int:
        """Appends ``y``; returns the frames that did not fit (dropped)."""
        n = min(y.shape[0], self.cap - self.size)
        at = self.write_pos % self.cap
        k = min(n, self.cap - at)
        self.buf[at:at + k] = y[:k]
        self.buf[:n - k] = y[k:n]
        self.write_pos += n
        return y.shape[0] - n

    def read(self, out: np.ndarray) -> int:
        """Fills ``out`` (frames, channels); returns the frames it lacked (filled with silence)."""
        n = min(out.shape[0], self.size)
        at = self.read_pos % self.cap
        k = min(n, self.cap - at)
        out[:k] = self.buf[at:at + k]
        out[k:n] = self.buf[:n - k]
        out[n:] = 0.0
        self.read_pos += n
        return out.shape[0] - n


class LivePath:
    """The per-block work of a live session (see the module docstring).

    ``separator`` is a real-time ``StemSeparator``; ``device_rate`` and ``blocksize`` are the stream's;
    ``out_channels`` the device output channels opened; ``in_map`` the device input channel (0-based)
    feeding each model channel, or ``source`` a :class:`FileSource` (then the device input is unused);
    ``recorder`` a :class:`~bridge.live.recorder.Recorder` or None.
    """

    def __init__(self, separator, device_rate: int, blocksize: int, out_channels: int,
                 routes: Sequence[Route] = (), in_map: Sequence[int] | None = None,
                 source: FileSource | None = None, recorder=None):
        self.sep = separator
        self.rate = int(separator.sample_rate)
        self.device_rate = int(device_rate)
        self.blocksize = int(blocksize)
        self.channels = int(separator.channels)
        self.out_channels = int(out_channels)
        self.routes = list(routes)
        if source is None and (in_map is None or len(in_map) != self.channels):
            raise SettingsError(f"in_map must name {self.channels} device input channels (one per model channel)")
        self.in_map = list(in_map or [])
        self.source = source
        self.recorder = recorder
        self.resampling = self.device_rate != self.rate
        stems, buses = len(separator.stem_names), len(separator.mixer.bus_names)
        self.max_frames = self.frames_bound(self.blocksize, self.rate, self.device_rate)
        m = self.max_frames
        self._xin = np.zeros((self.channels, self.blocksize), np.float32)   # device-rate input (model channels)
        self._x = np.zeros((self.channels, m), np.float32)                 # model-rate input
        self._stems = np.zeros((stems, self.channels, m), np.float32)
        self._dry = np.zeros((self.channels, m), np.float32)
        self._buses = np.zeros((buses, self.channels, m), np.float32)
        self._om = np.zeros((self.out_channels, m), np.float32)            # outputs at the model's rate
        self._omT = np.zeros((m, self.out_channels), np.float32)           # the same, frames first (soxr's layout)
        self.fed = 0              # model-rate frames streamed
        self.device_frames = 0    # device frames played
        self.fifo_underflows = 0  # device frames the output FIFO lacked (should stay 0)
        self.fifo_overflows = 0
        self._measure_latency()
        self.reset()

    @staticmethod
    def frames_bound(blocksize: int, rate: int, device_rate: int) -> int:
        """The most model-rate frames one piece of work handles: the block, or when resampling, the
        block at the model's rate plus room for the resampler's bursts (larger bursts are cut)."""
        if rate == device_rate:
            return int(blocksize)
        return int(math.ceil(blocksize * rate / device_rate)) + 1024

    # ------------------------------------------------------------------ latency
    def _resamplers(self):
        import soxr

        rs_in = None if self.source is not None else soxr.ResampleStream(
            self.device_rate, self.rate, self.channels, dtype="float32", quality=RESAMPLE_QUALITY)
        rs_out = soxr.ResampleStream(self.rate, self.device_rate, self.out_channels, dtype="float32",
                                     quality=RESAMPLE_QUALITY)
        return rs_in, rs_out

    def _file_frames(self, device_total: int) -> int:
        """Model-rate frames due after ``device_total`` device frames (file input)."""
        return device_total * self.rate // self.device_rate

    def _measure_latency(self) -> None:
        self.model_latency = int(self.sep.reported_latency_samples)
        self.pad = 0
        self.prime = 0
        if not self.resampling:
            self.latency_frames = self.model_latency
            return
        q = self.rate // math.gcd(self.rate, self.device_rate)
        self.pad = (-self.model_latency) % q
        # run the block pattern through a fresh pair of resamplers: the deficit the FIFO must cover
        rs_in, rs_out = self._resamplers()
        produced = rs_out.resample_chunk(np.zeros((self.pad, self.out_channels), np.float32)).shape[0]
        zin = np.zeros((self.blocksize, self.channels), np.float32)
        worst = 0
        fed = 0
        for k in range(1, int(SIMULATED_SECONDS * self.device_rate / self.blocksize) + 1):
            if rs_in is not None:
                m = rs_in.resample_chunk(zin).shape[0]
            else:
                m = self._file_frames(k * self.blocksize) - fed
            fed += m
            for pos in range(0, m, self.max_frames):
                piece = min(self.max_frames, m - pos)
                produced += rs_out.resample_chunk(np.zeros((piece, self.out_channels), np.float32)).shape[0]
            worst = max(worst, k * self.blocksize - produced)
        self.prime = worst + FIFO_MARGIN
        self.latency_frames = (self.model_latency + self.pad) * self.device_rate // self.rate + self.prime

    @property
    def latency_seconds(self) -> float:
        return self.latency_frames / self.device_rate

    @property
    def resampling_ms(self) -> float:
        """The latency the rate conversion adds (pad + FIFO priming), in ms."""
        return 1000.0 * (self.pad / self.rate + self.prime / self.device_rate)

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Start a new stream: the separator, the resamplers, the FIFO and the file position."""
        self.sep.reset()
        self.fed = 0
        self.device_frames = 0
        if self.source is not None:
            self.source.rewind()
        if self.resampling:
            self._rs_in, self._rs_out = self._resamplers()
            cap = self.prime + 8 * self.blocksize + 4 * self.max_frames
            self._fifo = _Fifo(cap, self.out_channels)
            self._fifo.clear(self.prime)
            self._to_fifo(self._rs_out.resample_chunk(np.zeros((self.pad, self.out_channels), np.float32)))

    def _to_fifo(self, y: np.ndarray) -> None:
        if y.shape[0]:
            self.fifo_overflows += self._fifo.write(y)

    # ------------------------------------------------------------------ per block
    def process(self, indata: np.ndarray | None, outdata: np.ndarray) -> None:
        """One callback: ``indata`` (frames, device input channels) or None with a file source;
        fills ``outdata`` (frames, out_channels)."""
        frames = outdata.shape[0]
        if not self.resampling:
            if frames > self.max_frames:  # a host that hands over a larger block than asked for
                for pos in range(0, frames, self.max_frames):
                    end = min(frames, pos + self.max_frames)
                    self.process(None if indata is None else indata[pos:end], outdata[pos:end])
                return
            self._input(indata, frames, self._x)
            self._model_block(frames)
            np.copyto(outdata, self._om[:, :frames].T)
            self.device_frames += frames
            return
        if self.source is not None:
            m = self._file_frames(self.device_frames + frames) - self.fed
            for pos in range(0, m, self.max_frames):
                piece = min(self.max_frames, m - pos)
                self.source.read(self._x, piece)
                self._model_block(piece)
                self._to_fifo(self._rs_out.resample_chunk(self._omT[:piece]))
        else:
            for pos in range(0, frames, self.blocksize):
                k = min(self.blocksize, frames - pos)
                self._input(indata[pos:pos + k], k, self._xin)
                y = self._rs_in.resample_chunk(self._xin[:, :k].T)
                for at in range(0, y.shape[0], self.max_frames):
                    piece = min(self.max_frames, y.shape[0] - at)
                    np.copyto(self._x[:, :piece], y[at:at + piece].T)
                    self._model_block(piece)
                    self._to_fifo(self._rs_out.resample_chunk(self._omT[:piece]))
        self.fifo_underflows += self._fifo.read(outdata)
        self.device_frames += frames

    def _input(self, indata: np.ndarray | None, n: int, into: np.ndarray) -> None:
        if self.source is not None:
            self.source.read(into, n)
            return
        for j, ch in enumerate(self.in_map):
            into[j, :n] = indata[:n, ch]

    def _model_block(self, m: int) -> None:
        """Separate and mix ``m`` model-rate frames from ``self._x``; the outputs land in ``self._om``
        (and ``self._omT`` when resampling)."""
        if m <= 0:
            return
        x = self._x[:, :m]
        stems, dry, buses = self._stems[:, :, :m], self._dry[:, :m], self._buses[:, :, :m]
        self.sep.stream_into(x, stems, dry, buses)
        self.fed += m
        if self.recorder is not None:
            self.recorder.push(x, buses, stems, m)
        om = self._om[:, :m]
        om[self.channels:] = 0.0
        om[:self.channels] = buses[0]
        for r in self.routes:
            src = buses[r.index] if r.kind == "bus" else stems[r.index]
            if r.count == 1:
                row = om[r.first]
                np.copyto(row, src[0])
                for c in range(1, self.channels):
                    row += src[c]
                if self.channels > 1:
                    row *= np.float32(1.0 / self.channels)
            else:
                om[r.first:r.first + r.count] = src
        if self.resampling:
            np.copyto(self._omT[:m], om.T)

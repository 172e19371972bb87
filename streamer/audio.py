"""Reading and adapting audio files (read, check, resample, mono/stereo) and song folders in MUSDB layout.

Writing output files and folders, atomically, is ``streamer.outputs``."""
from __future__ import annotations

import io
import os

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioError


AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff", ".opus")


READ_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError, OSError)   # what libsndfile raises on a bad file


def _read(path: str, action):
    """``action(path)`` with the readers' errors: a missing file, or one libsndfile cannot read, is an
    AudioError naming it."""
    if not os.path.exists(path):
        raise AudioError(f"audio file not found: {path}")
    try:
        return action(path)
    except READ_ERRORS as exc:
        raise AudioError(f"cannot read audio {path}: {exc}") from None


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """(channels, samples) float32 and the file's sample rate."""
    path = os.fspath(path)
    data, rate = _read(path, lambda p: sf.read(p, dtype="float32", always_2d=True))
    if data.shape[0] == 0:
        raise AudioError(f"audio file is empty: {path}")
    return np.ascontiguousarray(data.T), int(rate)


def read_blocks(path: str | os.PathLike, frames: int = 1 << 16):
    """The file's audio as :func:`read_audio` reads it (the same samples), a block of at most ``frames``
    at a time: yields (channels, n) float32 arrays, read in sequence (no seeking: compressed formats
    decode as in one read). The same errors as :func:`read_audio`, also for a file that breaks off."""
    path = os.fspath(path)
    handle = _read(path, sf.SoundFile)
    got = 0
    with handle:
        while True:
            try:
                block = handle.read(frames, dtype="float32", always_2d=True)
            except READ_ERRORS as exc:
                raise AudioError(f"cannot read audio {path}: {exc}") from None
            if block.shape[0] == 0:
                break
            got += block.shape[0]
            yield np.ascontiguousarray(block.T)
    if got == 0:
        raise AudioError(f"audio file is empty: {path}")


def audio_rate(path: str | os.PathLike) -> tuple[int, int]:
    """(sample rate, channels) of an audio file, with :func:`read_audio`'s errors."""
    info = _read(os.fspath(path), sf.info)
    return int(info.samplerate), int(info.channels)


class Resampler:
    """:func:`resample` a block at a time: the blocks' outputs joined are :func:`resample` of the blocks
    joined, sample for sample (soxr's stream, the same filter as its one-shot call); ``flush()`` at the end."""

    def __init__(self, rate_in: int, rate_out: int, channels: int):
        self.same = rate_in == rate_out
        self.stream = None if self.same else soxr.ResampleStream(rate_in, rate_out, channels, dtype="float32",
                                                                 quality="HQ")
        self.channels = channels

    def __call__(self, block: np.ndarray) -> np.ndarray:
        if self.same:
            return block
        out = self.stream.resample_chunk(np.ascontiguousarray(block.T, dtype=np.float32), last=False)
        return np.ascontiguousarray(out.T, dtype=np.float32)

    def flush(self) -> np.ndarray:
        if self.same:
            return np.zeros((self.channels, 0), np.float32)
        out = self.stream.resample_chunk(np.zeros((0, self.channels), np.float32), last=True)
        return np.ascontiguousarray(out.T, dtype=np.float32)


def read_audio_bytes(data: bytes, where: str) -> tuple[np.ndarray, int]:
    """:func:`read_audio` of a file's contents (the same samples): (channels, samples) float32 and
    its sample rate. ``where`` names the file in errors."""
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except READ_ERRORS as exc:
        # libsndfile's own words, without the "Error opening <_io.BytesIO object at 0x...>" around them
        reason = getattr(exc, "error_string", None) or str(exc)
        raise AudioError(f"cannot read audio {where}: {reason}") from None
    if samples.shape[0] == 0:
        raise AudioError(f"audio file is empty: {where}")
    return np.ascontiguousarray(samples.T), int(rate)


def check_finite(audio: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(audio)
    if bad.any():
        first = int(np.argmax(bad.any(axis=0)))
        raise AudioError(f"{where}: {int(bad.sum())} NaN/inf samples (first at sample {first}); the audio is corrupt")


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """(channels, samples) resampled with soxr (high quality)."""
    if rate_in == rate_out:
        return audio
    out = soxr.resample(np.ascontiguousarray(audio.T), rate_in, rate_out, quality="HQ")
    return np.ascontiguousarray(out.T, dtype=np.float32)


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """``x`` cut or zero-padded along its last axis to exactly ``n`` samples (a view when cut)."""
    if x.shape[-1] >= n:
        return x[..., :n]
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])])


def adapt_channels(audio: np.ndarray, channels: int, where: str = "audio") -> np.ndarray:
    """Mono to stereo by duplication, stereo to mono by averaging; more channels are refused."""
    have = audio.shape[0]
    if have == channels:
        return audio
    if have == 1:
        return np.repeat(audio, channels, axis=0)
    if channels == 1:
        return audio.mean(axis=0, keepdims=True)
    raise AudioError(f"{where}: has {have} channels; the model takes {channels} (mono or stereo input only)")


STEM_EXTENSIONS = (".wav", ".flac")


def stem_path(folder: str, stem: str) -> str | None:
    """``folder/stem.wav`` or ``folder/stem.flac``, whichever exists (None if neither)."""
    for ext in STEM_EXTENSIONS:
        path = os.path.join(folder, stem + ext)
        if os.path.exists(path):
            return path
    return None


def song_folders(paths: list[str], stems: list[str]) -> list[str]:
    """Song folders (MUSDB18-HQ layout: a wav or flac per stem) under the given folders, sorted."""
    found = []
    for root in paths:
        if not os.path.isdir(root):
            raise AudioError(f"data folder not found: {root}")
        for name in sorted(os.listdir(root)):
            folder = os.path.join(root, name)
            if os.path.isdir(folder) and all(stem_path(folder, s) for s in stems):
                found.append(folder)
    if not found:
        raise AudioError(f"no song folders with {', '.join(s + '.wav' for s in stems)} under {', '.join(paths)}")
    return found


def load_stems(folder: str, stems: list[str], rate: int, channels: int) -> np.ndarray:
    """(stems, channels, samples) float32 at ``rate`` from a song folder, cut to the shortest stem."""
    arrays = []
    for s in stems:
        path = stem_path(folder, s)
        if path is None:
            raise AudioError(f"{folder}: no {s}.wav or {s}.flac")
        data, sr = read_audio(path)
        arrays.append(adapt_channels(resample(data, sr, rate), channels, path))
    n = min(a.shape[1] for a in arrays)
    return np.stack([a[:, :n] for a in arrays])

"""Reading, adapting and writing audio files for offline separation."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff", ".opus")


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """(channels, samples) float32 and the file's sample rate."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise AudioError(f"audio file not found: {path}")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, OSError) as exc:
        raise AudioError(f"cannot read audio {path}: {exc}") from None
    if data.shape[0] == 0:
        raise AudioError(f"audio file is empty: {path}")
    return np.ascontiguousarray(data.T), int(rate)


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


def check_writable_dir(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise AudioError(f"cannot create output folder {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise AudioError(f"output folder is not writable: {path}")
    return path


class AtomicWriter:
    """Writes files under temporary names and renames them all at the end, or removes them all.

    Used as a context manager: if anything fails before ``commit()``, no output file is left behind.
    """

    def __init__(self):
        self._pending: list[tuple[str, str]] = []

    def write(self, path: str, audio: np.ndarray, rate: int, subtype: str | None = None) -> None:
        folder = os.path.dirname(os.path.abspath(path))
        check_writable_dir(folder)
        base, ext = os.path.splitext(os.path.basename(path))
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".part{ext}", dir=folder)
        os.close(fd)
        self._pending.append((tmp, path))
        try:
            sf.write(tmp, np.ascontiguousarray(audio.T), rate, subtype=subtype, format=_format_for(ext))
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as exc:
            raise AudioError(f"cannot write {path}: {exc}") from None

    def commit(self) -> list[str]:
        done = []
        for tmp, final in self._pending:
            os.replace(tmp, final)
            done.append(final)
        self._pending = []
        return done

    def abort(self) -> None:
        for tmp, _ in self._pending:
            try:
                os.remove(tmp)
            except OSError:
                pass
        self._pending = []

    def __enter__(self) -> "AtomicWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.commit()


def _format_for(ext: str) -> str:
    fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".aiff": "AIFF", ".aif": "AIFF"}.get(ext.lower())
    if fmt is None:
        raise AudioError(f"unsupported output format '{ext}' (use wav, flac, ogg or aiff)")
    return fmt


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

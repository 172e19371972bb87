"""Real multitrack music for the real-music check: the one real recording with stems a package registry
provides, fetched and decoded into the song-folder layout ``stemstream eval`` reads.

The ``stempeg`` package (its source distribution on PyPI) ships a 6-second excerpt of a MUSDB18 track,
"The Easton Ellises - Falcon 69", as a Native Instruments stem file: five AAC streams in an MP4,
mixture, drums, bass, other and vocals (the MUSDB18 order). It is fetched with ``pip download``
(nothing else is reachable on the project's machines), the one member extracted, and the streams
decoded with PyAV. The audio is MUSDB18's, for evaluation only: it is not part of this repository, and
no model of this project is trained or tuned on it.

Note on the stem file: its mixture is the real one, not the sum of the decoded stems (they differ by
about -15 dB relative to the mixture: separate AAC encodes and the track's own mix), so scores are
measured as the data set defines them, the model's estimates from the mixture against each stem.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile

import numpy as np

from ..errors import AudioError, SettingsError

PACKAGE = "stempeg==0.2.6"
MEMBER = "stempeg/data/The Easton Ellises - Falcon 69.stem.mp4"
SHA256 = "874a2552f4d6e2421789e9816f0db58337e97e20539579e34a6100029e3cde5d"  # of MEMBER in stempeg 0.2.6
SONG = "the_easton_ellises-falcon_69"
PIP_TIMEOUT_S = 600
STREAMS = ("mixture", "drums", "bass", "other", "vocals")  # the stream order of MUSDB18's stem files


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_stem_file(dest: pathlib.Path, pip: list[str] | None = None) -> pathlib.Path:
    """``dest`` (the .stem.mp4), fetched unless already there: ``pip download`` of stempeg's source
    distribution into a temporary folder (pip prepares its metadata, as an install would), the one
    member extracted, its SHA-256 checked, and renamed into place."""
    dest = pathlib.Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=dest.parent) as tmp:
        cmd = (pip or [sys.executable, "-m", "pip"]) + ["download", "--no-deps", "--no-binary", "stempeg",
                                                         "--disable-pip-version-check", "-q", "-d", tmp, PACKAGE]
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise SettingsError(f"could not download {PACKAGE} from the package index: no answer in "
                                f"{PIP_TIMEOUT_S} s") from None
        archives = sorted(pathlib.Path(tmp).glob("stempeg-*.tar.gz"))
        if run.returncode != 0 or not archives:
            why = (run.stderr or run.stdout).strip().splitlines()
            raise SettingsError(f"could not download {PACKAGE} from the package index: "
                                f"{why[-1] if why else f'pip exited with {run.returncode}'}")
        part = pathlib.Path(tmp) / "clip.stem.mp4"
        try:
            with tarfile.open(archives[0]) as tar:
                member = next((m for m in tar.getmembers() if m.isfile() and m.name.endswith(MEMBER)), None)
                if member is None:
                    raise SettingsError(f"{archives[0].name} holds no {MEMBER}")
                with tar.extractfile(member) as src, open(part, "wb") as out:  # type: ignore[union-attr]
                    shutil.copyfileobj(src, out)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise SettingsError(f"cannot read {archives[0].name}: {exc}") from None
        digest = _sha256(part)
        if digest != SHA256:
            raise SettingsError(f"{MEMBER} in {archives[0].name} is not the expected file (SHA-256 {digest[:16]}...)")
        os.replace(part, dest)
    return dest


def decode_stem_file(path: pathlib.Path) -> tuple[dict[str, np.ndarray], int]:
    """The streams of a stem file as {name: (channels, samples) float32} at its rate, all cut to the
    shortest stream's length."""
    try:
        import av
    except ImportError:
        raise SettingsError("decoding stem files needs PyAV: pip install av") from None
    audio: dict[str, np.ndarray] = {}
    rate = None
    try:
        with av.open(str(path)) as container:
            count = len(container.streams.audio)
        if count != len(STREAMS):
            raise AudioError(f"{path}: {count} audio streams, a stem file has {len(STREAMS)}")
        for index, name in enumerate(STREAMS):
            with av.open(str(path)) as container:
                stream = container.streams.audio[index]
                rate = rate or stream.rate
                if stream.rate != rate:
                    raise AudioError(f"{path}: stream {index} at {stream.rate} Hz, the first at {rate} Hz")
                # whatever the codec decodes to (planar or packed, float or integer): planar float32
                to_float = av.AudioResampler(format="fltp", layout=stream.layout, rate=stream.rate)
                frames = [out.to_ndarray() for frame in container.decode(stream) for out in to_float.resample(frame)]
                frames += [out.to_ndarray() for out in to_float.resample(None)]
            if not frames:
                raise AudioError(f"{path}: stream {index} ({name}) holds no audio")
            audio[name] = np.ascontiguousarray(np.concatenate(frames, axis=1), dtype=np.float32)
    except (av.error.FFmpegError, ValueError) as exc:  # type: ignore[attr-defined]
        raise AudioError(f"{path}: cannot decode: {exc}") from None
    length = min(a.shape[1] for a in audio.values())
    return {name: a[:, :length] for name, a in audio.items()}, int(rate)


def fetch_real_music(out: str | os.PathLike, cache: str | os.PathLike | None = None) -> pathlib.Path:
    """``OUT/<song>/{mixture,drums,bass,other,vocals}.wav`` (float32) from stempeg's MUSDB18 excerpt;
    the stem file is kept in ``cache`` (default: the user cache folder) so a second call does not
    download again. Returns the song folder. The folder appears whole or not at all."""
    from ..outputs import AtomicFolder, cache_folder

    if cache is None:
        cache = cache_folder("real-music")
    folder = pathlib.Path(out) / SONG
    writer = AtomicFolder(folder, replaceable=STREAMS)
    writer.check()  # before downloading anything
    stem_file = download_stem_file(pathlib.Path(cache) / "falcon69.stem.mp4")
    audio, rate = decode_stem_file(stem_file)
    with writer:
        for name in STREAMS:
            writer.write(str(folder / f"{name}.wav"), audio[name], rate, "FLOAT")
    return folder

"""The real-music check's data: a stem file (five AAC streams in an MP4) decoded in MUSDB18's stream
order into the song layout `stemstream eval` reads; stempeg's excerpt fetched with pip when the package
index is reachable."""
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from streamer.errors import AudioError, SettingsError
from streamer.lab import realmusic

av = pytest.importorskip("av", reason="PyAV decodes stem files (pip install av)")

RATE = 44100
LEVELS = (0.5, 0.1, 0.2, 0.3, 0.4)  # mixture, drums, bass, other, vocals: each stream recognisable by level


def make_stem_file(path, streams=5, seconds=1.0):
    """A stem-file-like MP4: `streams` stereo AAC streams of sines at LEVELS."""
    n = int(RATE * seconds)
    t = np.arange(n) / RATE
    with av.open(str(path), "w", format="mp4") as out:
        outs = [out.add_stream("aac", rate=RATE, layout="stereo") for _ in range(streams)]
        for i, stream in enumerate(outs):
            x = (LEVELS[i % 5] * np.sqrt(2) * np.sin(2 * np.pi * (220 + 110 * i) * t)).astype(np.float32)
            data = np.stack([x, x])
            for start in range(0, n, 1024):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, start:start + 1024]), format="fltp",
                                                   layout="stereo")
                frame.sample_rate = RATE
                for packet in stream.encode(frame):
                    out.mux(packet)
        for stream in outs:
            for packet in stream.encode(None):
                out.mux(packet)
    return path


def rms(x):
    return float(np.sqrt(np.mean(x[:, 4096:-4096] ** 2)))


def test_streams_decode_in_musdb_order(tmp_path):
    audio, rate = realmusic.decode_stem_file(make_stem_file(tmp_path / "x.stem.mp4"))
    assert rate == RATE and list(audio) == list(realmusic.STREAMS)
    lengths = {a.shape for a in audio.values()}
    assert len(lengths) == 1 and next(iter(lengths))[0] == 2 and next(iter(lengths))[1] >= RATE
    for name, level in zip(realmusic.STREAMS, LEVELS):
        assert audio[name].dtype == np.float32
        assert rms(audio[name]) == pytest.approx(level, rel=0.1), name


def test_a_file_without_five_streams_is_refused(tmp_path):
    with pytest.raises(AudioError, match="2 audio streams"):
        realmusic.decode_stem_file(make_stem_file(tmp_path / "two.mp4", streams=2))
    (tmp_path / "junk.mp4").write_bytes(b"not a stem file")
    with pytest.raises(AudioError, match="cannot decode"):
        realmusic.decode_stem_file(tmp_path / "junk.mp4")


def test_fetch_real_writes_a_song_folder_from_the_cached_stem_file(tmp_path):
    """With the stem file already in the cache nothing is downloaded; the folder holds the five wavs."""
    from bridge.cli.main import main

    cache = tmp_path / "cache"
    cache.mkdir()
    make_stem_file(cache / "falcon69.stem.mp4")
    out = tmp_path / "real"
    assert main(["fetch-real", "--out", str(out), "--cache", str(cache)]) == 0
    folder = out / realmusic.SONG
    assert sorted(os.listdir(folder)) == sorted(f"{n}.wav" for n in realmusic.STREAMS)
    vocals, rate = sf.read(folder / "vocals.wav", dtype="float32", always_2d=True)
    assert rate == RATE and vocals.shape[1] == 2 and rms(vocals.T) == pytest.approx(LEVELS[4], rel=0.1)
    # again: the folder is replaced whole, still without downloading
    assert main(["fetch-real", "--out", str(out), "--cache", str(cache)]) == 0
    assert sorted(os.listdir(out)) == [realmusic.SONG]


def test_a_failed_download_is_one_clear_error_and_leaves_nothing(tmp_path):
    failing_pip = [sys.executable, "-c", "import sys; print('ERROR: No matching distribution', file=sys.stderr); sys.exit(1)"]
    with pytest.raises(SettingsError, match="could not download stempeg.*No matching distribution"):
        realmusic.download_stem_file(tmp_path / "c" / "falcon69.stem.mp4", pip=failing_pip)
    assert os.listdir(tmp_path / "c") == []


def test_a_stem_file_other_than_the_expected_one_is_refused(tmp_path):
    """Whatever the index serves must be the excerpt itself (its SHA-256 is pinned)."""
    import tarfile

    made = make_stem_file(tmp_path / "fake.stem.mp4")
    sdist = tmp_path / "index" / "stempeg-0.2.6.tar.gz"
    sdist.parent.mkdir()
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(made, arcname="stempeg-0.2.6/" + realmusic.MEMBER)
    fake_pip = [sys.executable, "-c", "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[sys.argv.index('-d') + 1])",
                str(sdist)]
    with pytest.raises(SettingsError, match="not the expected file"):
        realmusic.download_stem_file(tmp_path / "c" / "falcon69.stem.mp4", pip=fake_pip)
    assert os.listdir(tmp_path / "c") == []


def test_the_real_excerpt_from_the_package_index(tmp_path):
    """The real thing, when the index can be reached: stempeg's MUSDB18 excerpt, 6 s of 44.1 kHz stereo."""
    try:
        folder = realmusic.fetch_real_music(tmp_path / "real", cache=tmp_path / "cache")
    except SettingsError as exc:
        # skip only when the index itself cannot be reached (a plain download of the same release fails too)
        probe = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp_path / "probe"),
                                realmusic.PACKAGE], capture_output=True, timeout=600)
        if probe.returncode != 0:
            pytest.skip(f"the package index is not reachable from here ({exc})")
        raise
    mix, rate = sf.read(folder / "mixture.wav", dtype="float32", always_2d=True)
    assert rate == 44100 and mix.shape[1] == 2 and 5.9 < mix.shape[0] / rate < 6.2
    stems = [sf.read(folder / f"{n}.wav", dtype="float32", always_2d=True)[0] for n in realmusic.STREAMS[1:]]
    assert all(s.shape == mix.shape and rms(s.T) > 0.01 for s in stems)

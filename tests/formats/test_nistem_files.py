"""Stem files encoded from audio files that ffmpeg reads itself (``write_stem_file_from_files``): what
``separate --format stem`` uses, so memory stays small whatever the song's length."""
import shutil

import numpy as np
import pytest
import soundfile as sf

from streamer.errors import AudioError, SettingsError
from streamer.formats import nistem

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                reason="ffmpeg not installed (Debian: ffmpeg)")
RATE = 44100


def _files(tmp_path, seconds=2.0, mix_channels=2, stem_extra=0):
    rng = np.random.default_rng(3)
    n = int(seconds * RATE)
    stems = (rng.standard_normal((4, 2, n + stem_extra)) * 0.1).astype(np.float32)
    mix = stems.sum(axis=0)[:, :n]
    if mix_channels == 1:
        mix = mix.mean(axis=0, keepdims=True)
    sf.write(tmp_path / "mix.wav", mix.T, RATE, subtype="FLOAT")
    paths = {}
    for name, stem in zip(("drums", "bass", "other", "vocals"), stems):
        paths[name] = str(tmp_path / f"{name}.wav")
        sf.write(paths[name], stem.T, RATE, subtype="FLOAT")
    return mix, stems[..., :n], paths


def test_alac_from_files_equals_the_files_to_24_bit(tmp_path):
    mix, stems, paths = _files(tmp_path)
    out = nistem.write_stem_file_from_files(tmp_path / "song.stem.mp4", tmp_path / "mix.wav", paths, codec="alac",
                                            bits=24, tags={"title": "T"})
    f = nistem.read_stem_file(out)
    assert f.rate == RATE and f.frames == mix.shape[1] and f.tags["title"] == "T"
    step = 2.0 ** -23
    assert np.abs(f.master - mix).max() <= step
    assert np.abs(f.stems - stems).max() <= step
    assert [s["name"] for s in nistem.read_stem_metadata(out)["stems"]] == ["Drums", "Bass", "Other", "Vocals"]


def test_from_files_cuts_longer_stems_doubles_a_mono_mix_and_resamples(tmp_path):
    mix, stems, paths = _files(tmp_path, mix_channels=1, stem_extra=300)
    out = nistem.write_stem_file_from_files(tmp_path / "song.stem.mp4", tmp_path / "mix.wav", paths, codec="alac",
                                            bits=16, out_rate=48000)
    f = nistem.read_stem_file(out)
    assert f.rate == 48000 and f.master.shape == (2, round(mix.shape[1] * 48000 / RATE))
    np.testing.assert_array_equal(f.master[0], f.master[1])            # mono: both channels the same
    assert f.stems.shape == (4, 2, f.master.shape[1])


def test_from_files_refuses_missing_files_and_unmappable_stems_and_leaves_nothing(tmp_path):
    _, _, paths = _files(tmp_path, seconds=0.5)
    with pytest.raises(AudioError, match="not found"):
        nistem.write_stem_file_from_files(tmp_path / "a.stem.mp4", tmp_path / "nope.wav", paths)
    with pytest.raises(SettingsError, match="--stem-order"):
        nistem.write_stem_file_from_files(tmp_path / "a.stem.mp4", tmp_path / "mix.wav",
                                          {"vocals": paths["vocals"], "instrumental": paths["bass"]})
    broken = dict(paths, vocals=str(tmp_path / "broken.wav"))
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(AudioError, match="ffmpeg failed"):
        nistem.write_stem_file_from_files(tmp_path / "a.stem.mp4", tmp_path / "mix.wav", broken)
    assert not list(tmp_path.glob("*.stem.mp4")) and not list(tmp_path.glob(".*part"))

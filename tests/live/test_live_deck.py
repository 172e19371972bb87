"""Stem decks: a stem file's own stems through the mixer with no model and no latency, in Python
(``StemSeparator.from_stems`` / ``from_stem_file``) and live (``stemstream live --input-file x.stem.mp4``
against a real JACK server)."""
import json
import shutil

import numpy as np
import pytest
from jack_helpers import JackServer, needs_jackd
from live_helpers import read_take, run_live

from bridge.plugin.separator import StemSeparator, deck_names
from conftest import write_yaml
from streamer.errors import AudioError, SettingsError
from streamer.formats import nistem

RATE = 44100
NI = ("drums", "bass", "other", "vocals")
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                  reason="ffmpeg not installed (Debian: ffmpeg; make install installs it)")


def _stems(seconds=3.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    out = []
    for k, f in enumerate((55.0, 110.0, 440.0, 660.0)):
        tone = 0.15 * np.sin(2 * np.pi * f * t + k) * (1 + 0.3 * np.sin(2 * np.pi * (k + 1) * t))
        out.append(np.stack([tone, np.roll(tone, 7 * (k + 1))]) + 0.01 * rng.standard_normal((2, t.size)))
    return np.asarray(out, np.float32)


@pytest.fixture(scope="module")
def stem_file(tmp_path_factory):
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.skip("ffmpeg not installed (Debian: ffmpeg)")
    d = tmp_path_factory.mktemp("deck")
    stems = _stems()
    path = d / "song.stem.mp4"
    nistem.write_stem_file(path, stems.sum(axis=0), dict(zip(NI, stems)), RATE, codec="alac", bits=24, out_rate=RATE,
                           names=["Drums", "Bass", "Other", "Vox"])
    return {"path": str(path), "file": nistem.read_stem_file(path), "dir": d}


def test_a_deck_plays_its_stems_at_zero_latency_and_the_mixer_works_on_them():
    stems = _stems(1.0)
    sep = StemSeparator.from_stems(stems, list(NI), RATE, output="stems")
    assert sep.reported_latency_samples == 0 and sep.engine.stats["deadline_misses"] == 0
    master = stems.sum(axis=0)
    got = np.concatenate([sep.process(master[:, i:i + 1000], RATE, reset=False) for i in range(0, RATE, 1000)], axis=1)
    np.testing.assert_array_equal(got, stems.reshape(-1, RATE))     # stems in order, zero latency, bit for bit
    sep.output = "main"
    sep.reset()
    np.testing.assert_array_equal(sep.process(master, RATE), stems.sum(axis=0))   # unity: the stems' sum
    sep.stems["vocals"].mute = True
    out = sep.process(master, RATE, reset=False)
    ramp = int(0.011 * RATE)
    np.testing.assert_allclose(out[:, ramp:], (master - stems[3])[:, ramp:], atol=1e-6)   # master minus the stem


def test_a_deck_follows_a_sources_position_and_loops_or_falls_silent():
    stems = _stems(0.5)
    frames = stems.shape[-1]
    read = {"pos": 0}
    sep = StemSeparator.from_stems(stems, list(NI), RATE, output="stems", position=lambda: read["pos"], loop=True)
    block = np.zeros((2, 4000), np.float32)
    outs = []
    for k in range(8):          # 32000 frames of a 22050-frame song: it wraps
        if k == 4:
            sep.reset()         # a reset (e.g. /engine/reset) does not move a deck that follows a source
        read["pos"] += 4000
        outs.append(sep.process(block, RATE, reset=False))
    got = np.concatenate(outs, axis=1).reshape(4, 2, -1)
    want = np.concatenate([stems, stems], axis=-1)[..., :32000]
    np.testing.assert_array_equal(got, want)
    once = StemSeparator.from_stems(stems, list(NI), RATE, output="stems")
    tail = once.process(np.zeros((2, frames + 500), np.float32), RATE, reset=False).reshape(4, 2, -1)
    np.testing.assert_array_equal(tail[..., :frames], stems)
    assert not tail[..., frames:].any()


def test_bad_stems_are_one_clear_error():
    with pytest.raises(SettingsError, match="different names"):
        StemSeparator.from_stems(_stems(0.1), ["a", "a", "b", "c"], RATE)
    bad = _stems(0.1)
    bad[0, 0, 5] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        StemSeparator.from_stems(bad, list(NI), RATE)
    assert deck_names(["Drums", "Bass", "Other", "Vox"]) == ["drums", "bass", "other", "vocals"]
    assert deck_names(["Kick & Snare", "kick & snare", "", "Lead/Vox"]) == ["kick___snare", "kick___snare2", "stem3",
                                                                        "lead_vox"]


@needs_ffmpeg
def test_from_stem_file_names_the_stems_as_the_mixer_does(stem_file):
    sep = StemSeparator.from_stem_file(stem_file["path"], output="stems")
    assert sep.stem_names == ["drums", "bass", "other", "vocals"]      # NI's "Vox" is the vocals control
    f = stem_file["file"]
    got = sep.process(f.master, RATE).reshape(4, 2, -1)
    np.testing.assert_array_equal(got, f.stems)


@needs_jackd
@needs_ffmpeg
def test_live_plays_a_stem_files_own_stems_with_no_model_and_no_latency(stem_file, tmp_path):
    f = stem_file["file"]
    with JackServer(log_dir=str(tmp_path)) as server:
        r = run_live(server, ["--input-file", stem_file["path"], "--output", "system", "--no-ui", "--seconds", "2",
                              "--record", str(tmp_path / "plain")])
        muted = run_live(server, ["--input-file", stem_file["path"], "--output", "system", "--no-ui", "--seconds",
                                  "2", "--mute", "vocals", "--record", str(tmp_path / "muted")])
    for result in (r, muted):
        assert result.returncode == 0, result.stderr[-3000:]
    assert "playing its own 4 stems (drums, bass, other, vocals) with no model" in r.stdout
    assert "the stems of" in r.stdout and "no separation, zero latency" in r.stdout
    take = read_take(tmp_path / "plain")
    s = take["session"]
    assert s["latency_samples"] == 0 and s["model"]["stem_file"].endswith("song.stem.mp4")
    assert s["model"]["stems"] == ["drums", "bass", "other", "vocals"] and s["counters"]["deadline_misses"] == 0
    n = take["input"].shape[0]
    assert n >= RATE
    np.testing.assert_array_equal(take["input"], f.master[:, :n].T)                 # what entered: the master
    for i, name in enumerate(s["stems"]):
        np.testing.assert_array_equal(take["stems"][name], f.stems[i][:, :n].T)       # the file's stems, no delay
    np.testing.assert_allclose(take["buses"]["main"], f.stems.sum(axis=0)[:, :n].T, atol=1e-6)
    m = read_take(tmp_path / "muted")
    k = min(n, m["input"].shape[0])
    start = int(0.02 * RATE)   # after the mute's 10 ms ramp
    np.testing.assert_allclose(m["buses"]["main"][start:k], (f.master - f.stem("vox"))[:, start:k].T, atol=2e-6)


@needs_jackd
@needs_ffmpeg
def test_a_model_given_with_a_stem_file_separates_its_master(stem_file, tmp_path):
    cfg = write_yaml(tmp_path / "tiny4.yaml", stems=("vocals", "drums", "bass", "other"), target=None,
                     extra_model={"num_stems": 4})
    with JackServer(log_dir=str(tmp_path)) as server:
        r = run_live(server, ["--config", str(cfg), "--checkpoint", "random", "--window", "0.5", "--hop", "0.1",
                              "--lookahead", "0.1", "--input-file", stem_file["path"], "--output", "system",
                              "--no-ui", "--seconds", "1.5", "--record", str(tmp_path / "take")])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "the model separates the file's master track" in r.stdout
    session = json.loads((tmp_path / "take" / "session.json").read_text())
    assert "master track" in session["model"]["input"] and session["latency_samples"] > 0
    take = read_take(tmp_path / "take")
    n = take["input"].shape[0]
    np.testing.assert_array_equal(take["input"], stem_file["file"].master[:, :n].T)

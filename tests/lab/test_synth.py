"""The song generator (streamer.lab.synth) and its synth command."""
import os

import numpy as np
import pytest

from bridge.cli import main
from streamer.lab.synth import STEMS, generate_song, missing_tools, write_song

needs_tools = pytest.mark.skipif(bool(missing_tools()), reason=f"song generator tools missing: {missing_tools()} "
                                 "(make synth-deps installs them)")


@needs_tools
def test_generated_songs_are_deterministic_sums_of_their_stems(tmp_path):
    a = generate_song(5, 3.0)
    b = generate_song(5, 3.0)
    c = generate_song(6, 3.0)
    for s in STEMS:
        assert a.stems[s].shape == (2, 3 * 44100) and a.stems[s].dtype == np.float32
        np.testing.assert_array_equal(a.stems[s], b.stems[s])
    np.testing.assert_allclose(a.mixture, sum(a.stems[s] for s in STEMS), atol=1e-6)
    assert not np.allclose(a.mixture, c.mixture)
    assert np.abs(a.mixture).max() <= 0.95
    assert all(np.sqrt(np.mean(a.stems[s] ** 2)) > 1e-3 for s in ("drums", "bass", "other"))
    write_song(a, tmp_path / "song")
    assert sorted(os.listdir(tmp_path / "song")) == ["bass.wav", "drums.wav", "mixture.wav", "other.wav", "vocals.wav"]


@needs_tools
def test_synth_command(tmp_path, capsys):
    assert main(["synth", "--seed", "11", "--count", "2", "--seconds", "2", "--out", str(tmp_path)]) == 0
    assert sorted(os.listdir(tmp_path)) == ["synth_000011", "synth_000012"]
    assert "bpm" in capsys.readouterr().out


"""The demo command (which also checks inspect on the demo's checkpoint)."""
import os

import numpy as np

from cli_helpers import model_files, run_cli
from conftest import write_yaml


def test_demo_streams_a_song_and_inspect(tmp_path, model_files, capsys):
    import soundfile as sf

    from streamer.lab.testsignals import generated_clip

    song = tmp_path / "song"
    song.mkdir()
    _, stems = generated_clip(2.0, 44100, seed=3)
    for name, data in stems.items():
        sf.write(song / f"{name}.flac", data.T, 44100, subtype="PCM_24")
    cfg_path, ckpt, _, _ = model_files
    demo_cfg = write_yaml(tmp_path / "demo.yaml", stems=("vocals", "drums", "bass", "other"), target=None,
                          extra_model={"num_stems": 4}, chunk_size=8820)
    code, stdout, _ = run_cli(["demo", "--out", tmp_path / "demo", "--config", demo_cfg, "--song", song,
                               "--block", "512"], capsys)
    assert code == 0
    assert sorted(os.listdir(tmp_path / "demo")) == sorted(
        ["mix.wav", "vocals.wav", "drums.wav", "bass.wav", "other.wav", "karaoke.wav", "spectrograms.png"])
    assert "RANDOM" in stdout and "latency:" in stdout and "real-time factor" in stdout
    assert "mean SDR improvement" in stdout
    mix, _ = sf.read(tmp_path / "demo" / "mix.wav", always_2d=True)
    parts = sum(sf.read(tmp_path / "demo" / f"{s}.wav", always_2d=True)[0] for s in ("vocals", "drums", "bass", "other"))
    np.testing.assert_allclose(parts, mix, atol=1e-5)  # the residual (spread): the stems add up to the mix
    karaoke, _ = sf.read(tmp_path / "demo" / "karaoke.wav", always_2d=True)
    vocals, _ = sf.read(tmp_path / "demo" / "vocals.wav", always_2d=True)
    np.testing.assert_allclose(karaoke + vocals, mix, atol=1e-5)
    code, stdout, _ = run_cli(["inspect", ckpt, "--config", cfg_path], capsys)
    assert code == 0 and "bs_roformer" in stdout and "dim: 16" in stdout and "matches" in stdout

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

import streamer
from bridge.cli import main
from streamer.lab.testsignals import generated_clip

from conftest import REPO, randomize, write_yaml


@pytest.fixture
def model_files(tmp_path):
    cfg_path = write_yaml(tmp_path / "tiny.yaml", chunk_size=22050, num_overlap=2, batch_size=2)
    cfg = streamer.load_config(cfg_path)
    torch.manual_seed(0)
    model = randomize(streamer.build_model(cfg))
    ckpt = tmp_path / "tiny.ckpt"
    torch.save(model.state_dict(), ckpt)
    return cfg_path, ckpt, model, cfg


@pytest.fixture
def song(tmp_path):
    mix, _ = generated_clip(2.0, 44100, seed=1)
    path = tmp_path / "song.wav"
    sf.write(path, mix.T, 44100, subtype="FLOAT")
    return path, mix


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_separate_end_to_end(tmp_path, model_files, song, capsys):
    cfg_path, ckpt, model, cfg = model_files
    path, mix = song
    out = tmp_path / "stems"
    code, stdout, _ = run_cli(["separate", path, "--config", cfg_path, "--checkpoint", ckpt, "--out", out,
                               "--instrumental"], capsys)
    assert code == 0 and "2 stems" in stdout
    assert sorted(os.listdir(out / "song")) == ["instrumental.wav", "vocals.wav"]
    vocals, rate = sf.read(out / "song" / "vocals.wav", always_2d=True)
    inst, _ = sf.read(out / "song" / "instrumental.wav", always_2d=True)
    assert rate == 44100 and vocals.shape == (mix.shape[1], 2)
    expected = streamer.demix(model, mix, cfg.chunk_size, cfg.num_overlap)
    np.testing.assert_allclose(vocals.T, expected[0], atol=1e-6)
    np.testing.assert_allclose(inst.T, mix - expected[0], atol=1e-6)


def test_resampled_mono_input_and_folder(tmp_path, model_files, capsys):
    cfg_path, ckpt, _, _ = model_files
    folder = tmp_path / "in"
    folder.mkdir()
    mix, _ = generated_clip(1.5, 48000, seed=2, channels=1)
    sf.write(folder / "a.flac", mix.T, 48000)
    sf.write(folder / "b.wav", mix.T, 48000)
    (folder / "notes.txt").write_text("not audio")
    out = tmp_path / "out"
    code, _, err = run_cli(["separate", folder, "--config", cfg_path, "--checkpoint", ckpt, "--out", out,
                            "--format", "flac", "--tta"], capsys)
    assert code == 0, err
    for name in ("a", "b"):
        info = sf.info(out / name / "vocals.flac")
        assert info.samplerate == 48000 and info.frames == mix.shape[1] and info.channels == 2
    code, _, _ = run_cli(["separate", folder / "a.flac", "--config", cfg_path, "--checkpoint", ckpt,
                          "--out", tmp_path / "m", "--output-rate", "model"], capsys)
    assert code == 0 and sf.info(tmp_path / "m" / "a" / "vocals.wav").samplerate == 44100


def _assert_one_line_error(code, err, *fragments):
    assert code != 0
    lines = [l for l in err.strip().splitlines() if not l.startswith("WARNING")]
    assert lines and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in err


def _no_outputs(folder):
    return not folder.exists() or not any(files for _, _, files in os.walk(folder))


def test_error_paths(tmp_path, model_files, song, capsys):
    cfg_path, ckpt, _, _ = model_files
    path, mix = song
    out = tmp_path / "o"
    base = ["--config", cfg_path, "--checkpoint", ckpt, "--out", out]

    code, _, err = run_cli(["separate", tmp_path / "missing.wav", *base], capsys)
    _assert_one_line_error(code, err, "not found")

    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF....WAVEjunk" * 10)
    code, _, err = run_cli(["separate", garbage, *base], capsys)
    _assert_one_line_error(code, err, "cannot read audio")

    bad_ckpt = tmp_path / "bad.ckpt"
    bad_ckpt.write_bytes(b"\x00\x01garbage" * 50)
    code, _, err = run_cli(["separate", path, "--config", cfg_path, "--checkpoint", bad_ckpt, "--out", out], capsys)
    _assert_one_line_error(code, err, "corrupt or not a PyTorch checkpoint")

    other = write_yaml(tmp_path / "demucs.yaml", model_type="htdemucs", model={"channels": 48, "depth": 4})
    code, _, err = run_cli(["separate", path, "--config", other, "--checkpoint", ckpt, "--out", out], capsys)
    _assert_one_line_error(code, err, "htdemucs", "not supported")

    nan = mix.copy()
    nan[0, 100:110] = np.nan
    nan_path = tmp_path / "nan.wav"
    sf.write(nan_path, nan.T, 44100, subtype="FLOAT")
    code, _, err = run_cli(["separate", nan_path, *base], capsys)
    _assert_one_line_error(code, err, "NaN/inf", "sample 100")

    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(["separate", path, "--config", cfg_path, "--checkpoint", ckpt,
                            "--out", blocker / "sub"], capsys)
    _assert_one_line_error(code, err, "cannot create output folder")

    wrong = write_yaml(tmp_path / "wrong.yaml", extra_model={"depth": 2})
    code, _, err = run_cli(["separate", path, "--config", wrong, "--checkpoint", ckpt, "--out", out], capsys)
    _assert_one_line_error(code, err, "missing 22 keys", "checkpoint has 1 layers, config says depth 2")
    assert _no_outputs(out)

    code, _, err = run_cli(["--verbose", "separate", tmp_path / "missing.wav", *base], capsys)
    assert code == 1 and "Traceback" in err


def test_failed_write_leaves_nothing_behind(tmp_path, model_files, song, capsys, monkeypatch):
    cfg_path, ckpt, _, _ = model_files
    path, _ = song
    real_write = sf.write
    calls = []

    def failing_write(file, *args, **kwargs):
        calls.append(file)
        if len(calls) == 2:
            raise sf.LibsndfileError(0, "disk full (simulated)")
        return real_write(file, *args, **kwargs)

    monkeypatch.setattr(sf, "write", failing_write)
    out = tmp_path / "o"
    code, _, err = run_cli(["separate", path, "--config", cfg_path, "--checkpoint", ckpt, "--out", out,
                            "--instrumental"], capsys)
    _assert_one_line_error(code, err, "disk full")
    assert len(calls) == 2 and _no_outputs(out)


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
    np.testing.assert_allclose(parts, mix, atol=1e-5)  # residual stem: the stems add up to the mix
    karaoke, _ = sf.read(tmp_path / "demo" / "karaoke.wav", always_2d=True)
    vocals, _ = sf.read(tmp_path / "demo" / "vocals.wav", always_2d=True)
    np.testing.assert_allclose(karaoke + vocals, mix, atol=1e-5)
    code, stdout, _ = run_cli(["inspect", ckpt, "--config", cfg_path], capsys)
    assert code == 0 and "bs_roformer" in stdout and "dim: 16" in stdout and "matches" in stdout


def test_console_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "bridge.cli", "separate", "--help"], capture_output=True,
                            text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0
    for flag in ("--config", "--checkpoint", "--out", "--instrumental", "--tta", "--trust-checkpoint"):
        assert flag in result.stdout

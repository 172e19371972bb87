"""The separate and inspect commands, and separate's error paths."""
import os

import numpy as np
import soundfile as sf

import streamer
from streamer.lab.testsignals import generated_clip

from cli_helpers import _assert_one_line_error, _no_outputs, model_files, run_cli, song
from conftest import write_yaml


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
    real_write = sf.SoundFile.write
    calls = []

    def failing_write(handle, *args, **kwargs):  # the stems are written a piece at a time
        if handle.name not in calls:
            calls.append(handle.name)
        if len(calls) == 2:
            raise sf.LibsndfileError(0, "disk full (simulated)")
        return real_write(handle, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "write", failing_write)
    out = tmp_path / "o"
    code, _, err = run_cli(["separate", path, "--config", cfg_path, "--checkpoint", ckpt, "--out", out,
                            "--instrumental"], capsys)
    _assert_one_line_error(code, err, "disk full")
    assert len(calls) == 2 and _no_outputs(out)


def test_recursive_folder_keeps_the_library_layout(tmp_path, model_files, capsys):
    cfg_path, ckpt, _, _ = model_files
    lib = tmp_path / "library"
    (lib / "live" / "2026").mkdir(parents=True)
    (lib / ".hidden").mkdir()
    mix, _ = generated_clip(1.0, 44100, seed=3)
    sf.write(lib / "top.wav", mix.T, 44100)
    sf.write(lib / "live" / "2026" / "set.flac", mix.T, 44100)
    sf.write(lib / "live" / "top.wav", mix.T, 44100)   # same name as ../top.wav: another folder, no clash
    sf.write(lib / ".hidden" / "skip.wav", mix.T, 44100)
    out = tmp_path / "stems"
    code, stdout, _ = run_cli(["separate", lib, "--config", cfg_path, "--checkpoint", ckpt, "--out", out,
                               "--recursive"], capsys)
    assert code == 0
    for folder in ("top", "live/top", "live/2026/set"):
        assert (out / folder / "vocals.wav").is_file(), folder
    assert not (out / "skip").exists() and not (out / ".hidden").exists()
    # without --recursive the subfolders are not searched, and the same names clash
    code, _, err = run_cli(["separate", lib / "top.wav", lib / "live" / "top.wav", "--config", cfg_path,
                            "--checkpoint", ckpt, "--out", tmp_path / "flat"], capsys)
    _assert_one_line_error(code, err, "would write the same stems folder")


def test_residual_makes_the_written_stems_sum_to_the_input(tmp_path, song, capsys):
    """--residual spread: each stem is the model's plus a quarter of what the four miss; --residual other:
    that stem is the input minus the others; the default writes the model's stems as they are."""
    from conftest import randomize
    import torch

    cfg_path = write_yaml(tmp_path / "four.yaml", stems=("vocals", "drums", "bass", "other"), target=None,
                          extra_model={"num_stems": 4}, chunk_size=22050, num_overlap=2)
    cfg = streamer.load_config(cfg_path)
    torch.manual_seed(0)
    model = randomize(streamer.build_model(cfg))
    ckpt = tmp_path / "four.ckpt"
    torch.save(model.state_dict(), ckpt)
    path, mix = song
    raw = streamer.demix(model, mix, cfg.chunk_size, cfg.num_overlap)
    got = {}
    for residual in ("none", "spread", "other"):
        out = tmp_path / residual
        code, _, err = run_cli(["separate", path, "--config", cfg_path, "--checkpoint", ckpt, "--out", out,
                                "--residual", residual], capsys)
        assert code == 0, err
        got[residual] = np.stack([sf.read(out / "song" / f"{s}.wav", always_2d=True)[0].T for s in cfg.stems])
    np.testing.assert_allclose(got["none"], raw, atol=1e-6)
    share = (mix - raw.sum(axis=0)) / 4
    assert np.abs(share).max() > 1e-3
    np.testing.assert_allclose(got["spread"], raw + share[None], atol=1e-5)
    np.testing.assert_allclose(got["other"][:3], raw[:3], atol=1e-6)
    for residual in ("spread", "other"):
        np.testing.assert_allclose(got[residual].sum(axis=0), mix, atol=1e-5)

    out = tmp_path / "bad"
    code, _, err = run_cli(["separate", path, "--config", cfg_path, "--checkpoint", ckpt, "--out", out,
                            "--residual", "rest"], capsys)
    _assert_one_line_error(code, err, "'rest' is not one of the model's stems", "spread")
    assert _no_outputs(out)


def test_spread_residual_is_refused_for_a_single_target_model(tmp_path, model_files, song, capsys):
    cfg_path, ckpt, _, _ = model_files
    out = tmp_path / "stems"
    code, _, err = run_cli(["separate", song[0], "--config", cfg_path, "--checkpoint", ckpt, "--out", out,
                            "--residual", "spread"], capsys)
    _assert_one_line_error(code, err, "more than one stem")
    assert _no_outputs(out)

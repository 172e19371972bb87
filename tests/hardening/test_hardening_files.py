"""Hardening of ``stemstream separate`` output files: one stems folder per input (namesakes are refused
before any work instead of overwriting each other), and the stems of one input appear all together or
not at all, with normal permissions, leaving nothing temporary behind (also for ``demo``'s AtomicWriter).

Tests marked "CLI-LEVEL" run ``bridge.cli.main`` and need ``cmd_separate`` to call ``plan_outputs`` and
``output_folder``; the others call the functions directly.
"""
import os
import stat

import numpy as np
import pytest
import soundfile as sf
import torch

import streamer
from bridge.cli import main
from streamer.errors import AudioError
from streamer.inference.separate import SeparationOptions, separate_file
from streamer.outputs import AtomicWriter
from streamer.lab.testsignals import generated_clip

from conftest import randomize, write_yaml

OPTS = SeparationOptions(instrumental=True, progress=False)  # two stems: vocals, instrumental


@pytest.fixture
def model(tmp_path):
    cfg_path = write_yaml(tmp_path / "tiny.yaml", chunk_size=22050, num_overlap=2, batch_size=2)
    cfg = streamer.load_config(cfg_path)
    torch.manual_seed(0)
    net = randomize(streamer.build_model(cfg))
    ckpt = tmp_path / "tiny.ckpt"
    torch.save(net.state_dict(), ckpt)
    return cfg_path, ckpt, net, cfg


@pytest.fixture
def umask():
    """``os.umask`` for one test; the process umask is restored afterwards."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def _song(path, seed=1, seconds=1.0):
    mix, _ = generated_clip(seconds, 44100, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, mix.T, 44100, subtype="FLOAT" if path.suffix == ".wav" else None)
    return path


def _old_stems(folder, names=("vocals", "instrumental")):
    """Stems left by an earlier run: short constant files, easy to tell from new ones."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        sf.write(folder / f"{name}.wav", np.full((100, 2), 0.1 * (i + 1), dtype=np.float32), 44100, subtype="FLOAT")


def _snapshot(folder):
    """Everything under ``folder``: relative path -> file bytes (None for a folder); None if it is missing."""
    if not folder.exists():
        return None
    snap = {}
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            snap[os.path.relpath(os.path.join(root, d), folder)] = None
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                snap[os.path.relpath(os.path.join(root, f), folder)] = fh.read()
    return snap


def _fail_on_second_write(monkeypatch, exc):
    """Writing raises ``exc`` when the second stem file is first written to, as a full disk or Ctrl-C
    would (the stems are written a piece at a time, through ``soundfile.SoundFile.write``)."""
    real_write = sf.SoundFile.write
    calls = []

    def write(handle, *args, **kwargs):
        if str(handle.name) not in calls:
            calls.append(str(handle.name))
            if len(calls) == 2:
                raise exc
        return real_write(handle, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "write", write)
    return calls


def _run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line(message):
    assert message and "\n" not in message, message


# ---------------------------------------------------------------- item 6: inputs that share a base name

def test_plan_outputs_maps_each_input_to_its_stems_folder(tmp_path):
    from streamer.inference.separate import plan_outputs

    out = tmp_path / "out"
    inputs = [str(tmp_path / "a.wav"), str(tmp_path / "b" / "c.flac"), str(tmp_path / "d.e.ogg")]
    plan = plan_outputs(inputs, str(out))
    assert plan == {inputs[0]: str(out / "a"), inputs[1]: str(out / "c"), inputs[2]: str(out / "d.e")}
    assert list(plan) == inputs
    assert not out.exists()  # planning creates nothing


def test_plan_outputs_lists_every_clash_in_one_error(tmp_path):
    from streamer.inference.separate import plan_outputs

    out = tmp_path / "out"
    inputs = ["a/song.wav", "b/song.wav", "song.flac", "solo.wav",
              "x/Take.wav", "y/take.ogg"]  # case-insensitive file systems (macOS, Windows, exFAT) merge these
    with pytest.raises(AudioError) as info:
        plan_outputs(inputs, str(out))
    message = str(info.value)
    _one_line(message)
    assert message.startswith("5 inputs would write the same stems folders: ")
    assert f"{out / 'song'} <- a/song.wav, b/song.wav, song.flac" in message
    assert f"{out / 'Take'} <- x/Take.wav, y/take.ogg" in message
    assert "solo" not in message
    assert message.endswith("rename them or separate them into different --out folders")
    assert not out.exists()

    with pytest.raises(AudioError, match=r"^2 inputs would write the same stems folder: .*song <- a/song.wav, "
                                         r"b/song.wav; rename them"):
        plan_outputs(["a/song.wav", "b/song.wav"], str(out))


def test_an_input_inside_its_own_stems_folder_is_refused(tmp_path, model):
    """Separating a stem again (out/vocals/vocals.wav --out out) would replace the input with its own stems."""
    _, _, net, cfg = model
    out = tmp_path / "out"
    path = _song(out / "vocals" / "vocals.wav")
    before = _snapshot(out)
    with pytest.raises(AudioError, match="inside") as info:
        separate_file(net, cfg, str(path), str(out), OPTS)
    _one_line(str(info.value))
    assert _snapshot(out) == before

    from streamer.inference.separate import plan_outputs

    with pytest.raises(AudioError, match="inside"):
        plan_outputs([str(tmp_path / "x.wav"), str(path)], str(out))
    assert _snapshot(out) == before


def test_separate_file_writes_into_the_planned_folder(tmp_path, model):
    from streamer.inference.separate import plan_outputs

    _, _, net, cfg = model
    path = _song(tmp_path / "a" / "song.wav")
    out = tmp_path / "out"
    result = separate_file(net, cfg, str(path), str(out), OPTS, folder=str(out / "song (a)"))
    assert sorted(os.listdir(out)) == ["song (a)"]
    assert sorted(os.listdir(out / "song (a)")) == ["instrumental.wav", "vocals.wav"]
    assert sorted(result.files) == [str(out / "song (a)" / "instrumental.wav"), str(out / "song (a)" / "vocals.wav")]
    plan = plan_outputs([str(path)], str(out))
    result = separate_file(net, cfg, str(path), str(out), OPTS, folder=plan[str(path)])
    assert os.path.dirname(result.files[0]) == str(out / "song")


def test_cli_level_namesakes_are_refused_before_any_work(tmp_path, model, capsys):
    """CLI-LEVEL (needs cmd_separate to call plan_outputs): a/song.wav and b/song.flac both map to OUT/song."""
    cfg_path, ckpt, _, _ = model
    a = _song(tmp_path / "a" / "song.wav", seed=1)
    b = _song(tmp_path / "b" / "song.flac", seed=2)
    out = tmp_path / "out"
    code, _, err = _run_cli(["separate", a, b, "--config", cfg_path, "--checkpoint", ckpt, "--out", out], capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: 2 inputs would write the same stems folder"), err
    assert str(a) in err and str(b) in err
    assert not any(files for _, _, files in os.walk(out)) if out.exists() else True


# ---------------------------------------------------------------- item 7: stems all together or not at all

def test_stems_replace_an_earlier_run_all_together(tmp_path, model, monkeypatch):
    """Readers of OUT/song see the old stems until the new ones are all there, then only the new ones."""
    _, _, net, cfg = model
    path = _song(tmp_path / "song.wav")
    out = tmp_path / "out"
    _old_stems(out / "song")
    old = _snapshot(out / "song")
    seen = []
    real_write = sf.SoundFile.write

    def watching_write(handle, *args, **kwargs):
        seen.append(_snapshot(out / "song"))
        return real_write(handle, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "write", watching_write)
    result = separate_file(net, cfg, str(path), str(out), SeparationOptions(progress=False))  # vocals only
    assert seen and all(s == old for s in seen)   # every piece written while readers still see the old stems
    # the earlier run's instrumental.wav does not survive next to the new vocals.wav
    assert sorted(os.listdir(out)) == ["song"] and sorted(os.listdir(out / "song")) == ["vocals.wav"]
    assert result.files == [str(out / "song" / "vocals.wav")]
    assert sf.info(out / "song" / "vocals.wav").frames == 44100


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()],
                         ids=["OSError", "KeyboardInterrupt"])
def test_a_failure_on_the_second_stem_leaves_nothing_behind(tmp_path, model, monkeypatch, exc):
    _, _, net, cfg = model
    path = _song(tmp_path / "song.wav")
    expected = AudioError if isinstance(exc, OSError) else KeyboardInterrupt

    # OUT (and its parent) did not exist: the failed run removes the folders it made
    made = tmp_path / "made"
    calls = _fail_on_second_write(monkeypatch, exc)
    with pytest.raises(expected) as info:
        separate_file(net, cfg, str(path), str(made / "out"), OPTS)
    assert len(calls) == 2
    if expected is AudioError:
        _one_line(str(info.value))
        assert "No space left on device" in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["song.wav", "tiny.ckpt", "tiny.yaml"]

    # OUT existed, empty: it stays, empty
    (tmp_path / "empty").mkdir()
    _fail_on_second_write(monkeypatch, exc)
    with pytest.raises(expected):
        separate_file(net, cfg, str(path), str(tmp_path / "empty"), OPTS)
    assert os.listdir(tmp_path / "empty") == []

    # OUT/song holds an earlier run's stems: they stay exactly as they were, and nothing else appears
    out = tmp_path / "out"
    _old_stems(out / "song")
    (out / "other").mkdir()
    before = _snapshot(out)
    _fail_on_second_write(monkeypatch, exc)
    with pytest.raises(expected):
        separate_file(net, cfg, str(path), str(out), OPTS)
    assert _snapshot(out) == before


def test_a_folder_in_the_way_of_a_stem_changes_nothing(tmp_path, model):
    """Today the first stem is renamed into place and then the second fails: a mix of new and old stems,
    a .part file, and a raw OSError. Now: one clear error and nothing touched."""
    _, _, net, cfg = model
    path = _song(tmp_path / "song.wav")
    out = tmp_path / "out"
    _old_stems(out / "song", names=("vocals",))
    (out / "song" / "instrumental.wav").mkdir()
    (out / "song" / "instrumental.wav" / "keep.txt").write_text("mine")
    before = _snapshot(out)
    with pytest.raises(AudioError) as info:
        separate_file(net, cfg, str(path), str(out), OPTS)
    _one_line(str(info.value))
    assert "instrumental.wav" in str(info.value)
    assert _snapshot(out) == before


def test_a_stems_folder_holding_other_files_is_not_replaced(tmp_path, model):
    """Replacing OUT/song would delete files the user keeps there: refused with a clear error, nothing lost."""
    _, _, net, cfg = model
    path = _song(tmp_path / "song.wav")
    out = tmp_path / "out"
    _old_stems(out / "song")
    (out / "song" / "notes.txt").write_text("my notes")
    before = _snapshot(out)
    with pytest.raises(AudioError, match="notes.txt") as info:
        separate_file(net, cfg, str(path), str(out), OPTS)
    _one_line(str(info.value))
    assert _snapshot(out) == before


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)],
                         ids=["umask022", "umask027"])
def test_output_permissions_follow_the_umask(tmp_path, model, umask, mask, file_mode, dir_mode):
    _, _, net, cfg = model
    path = _song(tmp_path / "song.wav")
    umask(mask)
    out = tmp_path / "out"
    result = separate_file(net, cfg, str(path), str(out), OPTS)
    assert stat.S_IMODE(os.stat(out / "song").st_mode) == dir_mode
    for f in result.files:
        assert stat.S_IMODE(os.stat(f).st_mode) == file_mode, f
    result = separate_file(net, cfg, str(path), str(out), OPTS)  # replacing an earlier run: the same
    assert stat.S_IMODE(os.stat(out / "song").st_mode) == dir_mode
    for f in result.files:
        assert stat.S_IMODE(os.stat(f).st_mode) == file_mode, f

    demo = tmp_path / "demo"
    demo.mkdir()
    with AtomicWriter() as writer:
        writer.write(str(demo / "mix.wav"), np.zeros((2, 100), np.float32), 44100, "FLOAT")
    assert stat.S_IMODE(os.stat(demo / "mix.wav").st_mode) == file_mode


def test_atomic_writer_into_one_existing_folder_is_all_or_nothing(tmp_path, monkeypatch):
    """demo's use: several files into one folder that also holds other things."""
    folder = tmp_path / "demo"
    folder.mkdir()
    sf.write(folder / "mix.wav", np.full((50, 2), 0.5, np.float32), 44100, subtype="FLOAT")
    (folder / "notes.txt").write_text("keep me")
    (folder / "karaoke.wav").mkdir()  # in the way of the last file: found only when renaming into place
    (folder / "karaoke.wav" / "x").write_text("mine")
    audio = np.zeros((2, 100), np.float32)
    before = _snapshot(folder)

    def write_all():
        with AtomicWriter() as writer:
            for name in ("mix", "vocals", "karaoke"):
                writer.write(str(folder / f"{name}.wav"), audio + 0.25, 44100, "FLOAT")

    with pytest.raises(AudioError, match="karaoke.wav") as info:
        write_all()
    _one_line(str(info.value))
    assert _snapshot(folder) == before

    for exc, expected in ((OSError(5, "Input/output error"), AudioError), (KeyboardInterrupt(), KeyboardInterrupt)):
        _fail_on_second_write(monkeypatch, exc)
        with pytest.raises(expected):
            write_all()
        assert _snapshot(folder) == before
    monkeypatch.undo()

    (folder / "karaoke.wav" / "x").unlink()
    (folder / "karaoke.wav").rmdir()
    write_all()
    assert sorted(os.listdir(folder)) == ["karaoke.wav", "mix.wav", "notes.txt", "vocals.wav"]
    assert (folder / "notes.txt").read_text() == "keep me"
    for name in ("mix", "vocals", "karaoke"):
        data, _ = sf.read(folder / f"{name}.wav", always_2d=True)
        assert data.shape == (100, 2) and np.all(data == 0.25)


def test_cli_level_failed_run_removes_the_out_folder_it_created(tmp_path, model, capsys, monkeypatch):
    """CLI-LEVEL (needs cmd_separate to create --out through output_folder): OUT did not exist, the run
    fails on the second stem, OUT does not exist afterwards; an OUT that existed before stays."""
    cfg_path, ckpt, _, _ = model
    path = _song(tmp_path / "song.wav")
    out = tmp_path / "made" / "out"
    _fail_on_second_write(monkeypatch, OSError(28, "No space left on device"))
    code, _, err = _run_cli(["separate", path, "--config", cfg_path, "--checkpoint", ckpt, "--out", out,
                             "--instrumental"], capsys)
    assert code == 1 and "No space left on device" in err
    assert not (tmp_path / "made").exists()

    out = tmp_path / "existing"
    out.mkdir()
    _fail_on_second_write(monkeypatch, OSError(28, "No space left on device"))
    code, _, err = _run_cli(["separate", path, "--config", cfg_path, "--checkpoint", ckpt, "--out", out,
                             "--instrumental"], capsys)
    assert code == 1 and os.listdir(out) == []

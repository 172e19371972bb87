"""The one error funnel: every error a user can cause is one `error:` line and exit status 1."""
import pytest

from bridge.cli import main
from bridge.cli.main import error_message
from streamer.errors import AudioError, SettingsError


def one_line_error(argv, capsys):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1, err
    lines = [line for line in err if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in "\n".join(err), err
    return lines[0]


@pytest.mark.parametrize("argv,message", [
    (["bench", "--window", "1", "--hop", "2", "--seconds", "1"], "hop (88200) cannot be longer than the window"),
    (["bench", "--hop", "-1", "--seconds", "1"], "--hop must be >= 0 s"),
    (["bench", "--crossfade-ms", "900", "--seconds", "1"], "cannot be longer than the look-ahead"),
    (["bench", "--device", "foo", "--seconds", "1"], "not a device"),
])
def test_bad_settings_are_one_error_line(argv, message, capsys):
    assert message in one_line_error(argv, capsys)


def test_verbose_shows_the_traceback_with_its_cause(tmp_path, capsys):
    import torch

    ckpt = tmp_path / "x.ckpt"
    torch.save({"w": torch.zeros(1)}, ckpt)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    assert "is not valid YAML" in one_line_error(["inspect", ckpt, "--config", bad], capsys)
    code = main(["--verbose", "inspect", str(ckpt), "--config", str(bad)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" in err and "direct cause" in err
    assert err.strip().splitlines()[-1].startswith("error:")


def test_error_messages():
    assert error_message(SettingsError("hop too long")) == "hop too long"
    assert error_message(AudioError("no such file")) == "no such file"
    assert error_message(FileNotFoundError(2, "No such file or directory", "x.wav")) == \
        "No such file or directory: x.wav"

"""Hardening of the command line's numbers, devices and checkpoint paths (issue 14).

Every case is a command line a user could type: negative, zero (where zero means nothing), non-finite or huge
numbers, devices this machine lacks, and checkpoint paths that are no checkpoint. Each must end in ONE clear
error line and a non-zero exit status, never a traceback, a hang, a silent fall back to a default or a
zero-frame file, and must leave nothing in the output folder.

Argument errors that argparse can see on its own (a count of 0, a negative length, nan, a window beyond the
60 s limit) are argparse's one-line usage error, exit status 2; errors that need the model or the stream
settings (a chunk shorter than the model's STFT, hop longer than the window, a missing device, a bad
checkpoint) are the funnel's ``error:`` line, exit status 1.

The cases run ``bridge.cli.main`` in this process on a tiny model (fast), under an alarm that fails a case
still running after 30 s (a hang); two run ``python -m bridge.cli`` as a real process to show what a shell
sees.
"""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

import streamer
from bridge.cli import main

from conftest import REPO, randomize, write_yaml

RATE = 44100


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny model (config + checkpoint), a short song, a MUSDB-style data folder, a demo song folder and
    some files that are not checkpoints."""
    root = tmp_path_factory.mktemp("cli14")
    cfg = write_yaml(root / "tiny.yaml", chunk_size=22050, num_overlap=2, batch_size=2)
    torch.manual_seed(0)
    model = randomize(streamer.build_model(streamer.load_config(cfg)))
    torch.save(model.state_dict(), root / "tiny.ckpt")
    rng = np.random.default_rng(0)
    noise = lambda seconds: (rng.standard_normal((int(seconds * RATE), 2)) * 0.1).astype(np.float32)  # noqa: E731
    sf.write(root / "song.wav", noise(0.5), RATE, subtype="FLOAT")
    song_dir = root / "data" / "song1"
    song_dir.mkdir(parents=True)
    stems = {name: noise(1.0) for name in ("vocals", "other")}
    for name, data in stems.items():
        sf.write(song_dir / f"{name}.wav", data, RATE, subtype="FLOAT")
    sf.write(song_dir / "mixture.wav", sum(stems.values()), RATE, subtype="FLOAT")
    demo_song = root / "demo_song"
    demo_song.mkdir()
    for name in ("vocals", "other"):
        sf.write(demo_song / f"{name}.flac", noise(0.5), RATE)
    (root / "empty.ckpt").write_bytes(b"")
    (root / "random.ckpt").write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (root / "folder.ckpt").mkdir()
    return root


def fill(argv, files, out):
    return [str(a).format(root=files, out=out) for a in argv]


class Hung(BaseException):
    """Raised by the alarm in :func:`run`: the command did not finish in time."""


def _hung(signum, frame):
    raise Hung("the command did not finish within the time limit")


def run(argv, files, out, capsys, limit=30):
    """(exit status, stdout, stderr) of ``stemstream ARGV`` in this process; argparse's exit is a status too.
    A command still running after ``limit`` seconds fails the test (a refused argument takes milliseconds)."""
    old = signal.signal(signal.SIGALRM, _hung)
    signal.setitimer(signal.ITIMER_REAL, limit, 1.0)  # repeated: an alarm raised inside a __del__ is swallowed
    try:
        code = main(fill(argv, files, out))
    except SystemExit as exc:
        code = exc.code
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def written(folder):
    """Every file under ``folder`` (none when it does not exist)."""
    return [os.path.join(d, f) for d, _, names in os.walk(folder) for f in names]


def assert_one_error(code, err, fragment):
    assert code in (1, 2), (code, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(lines) == 1 and err.strip().splitlines()[-1] == lines[0], err
    assert fragment in lines[0], err
    return lines[0]


TINY = ["--config", "{root}/tiny.yaml"]
MODEL = TINY + ["--checkpoint", "{root}/tiny.ckpt"]
SEPARATE = ["separate", "{root}/song.wav", *MODEL, "--out", "{out}"]
EVAL = ["eval", "{root}/data", *MODEL, "--presets"]
TRAIN = ["train", "{root}/data", *TINY, "--out", "{out}", "--steps", "1"]
BENCH = ["bench", *TINY, "--worker", "thread", "--seconds", "0.3"]
DEMO = ["demo", "--out", "{out}", "--config", "{root}/tiny.yaml", "--song", "{root}/demo_song"]

CASES = [
    # demo
    (DEMO + ["--block", "-256"], "--block"),
    (DEMO + ["--block", "0"], "--block"),
    (DEMO + ["--block", "1000000000"], "--block"),
    # bench: the stream
    (["bench", "--seconds", "-1"], "--seconds"),
    (["bench", "--seconds", "0"], "--seconds"),
    (["bench", "--seconds", "nan"], "--seconds"),
    (["bench", "--seconds", "inf"], "--seconds"),
    (["bench", "--seconds", "1e9"], "limit of 600 s"),
    (BENCH[:-2] + ["--seconds", "0.3", "--block", "0"], "--block"),
    (BENCH[:-2] + ["--seconds", "0.3", "--block", "-5"], "--block"),
    (BENCH[:-2] + ["--seconds", "0.3", "--block", "100000000"], "--block"),
    (BENCH[:-2] + ["--seconds", "0.3", "--block", "32768"], "longer than the 0.3 s stream"),
    (BENCH + ["--threads", "0"], "--threads"),
    (BENCH + ["--threads", "100000"], "--threads"),
    # bench: the settings (the model is needed for them, so these are the funnel's error line)
    (["bench", "--hop", "100", "--seconds", "1"], "limit of 60 s"),
    (["bench", "--window", "1e9", "--seconds", "1"], "limit of 60 s"),
    (BENCH + ["--window", "0"], "--window 0 s (0 samples) is too short for the model"),
    (BENCH + ["--allowance", "1e6"], "limit of 60 s"),
    (BENCH + ["--lookahead", "1e300"], "limit of 60 s"),
    (BENCH + ["--crossfade-ms", "1e300"], "limit of 60000 ms"),
    (BENCH + ["--window", "0.01", "--hop", "0.005"], "too short for the model"),
    (BENCH + ["--device", "mps"], "no MPS device"),
    # bench-mixer
    (["bench-mixer", "--blocks", "0"], "--blocks"),
    (["bench-mixer", "--blocks", "-1"], "--blocks"),
    (["bench-mixer", "--blocks", "1000000000000"], "--blocks"),
    (["bench-mixer", "--stems", "0", "--blocks", "10"], "--stems"),
    (["bench-mixer", "--buses", "0", "--blocks", "10"], "--buses"),
    (["bench-mixer", "--block", "0", "--blocks", "10"], "--block"),
    (["bench-mixer", "--block", "-1", "--blocks", "10"], "--block"),
    # bench-model
    (["bench-model", *TINY, "--seconds", "0", "-1"], "--seconds"),
    (["bench-model", *TINY, "--seconds", "0.1", "--repeats", "0"], "--repeats"),
    (["bench-model", *TINY, "--seconds", "0.1", "--threads", "0"], "--threads"),
    (["bench-model", *TINY, "--seconds", "0.001"], "too short for the model"),
    (["bench-model", *TINY, "--seconds", "1e9"], "limit of 60 s"),
    (["bench-model", *TINY, "--seconds", "0.1", "--device", "mps"], "no MPS device"),
    # bench-gpu
    (["bench-gpu", "{out}", "--dry-run", "--budget", "0"], "--budget"),
    (["bench-gpu", "{out}", "--dry-run", "--budget", "nan"], "--budget"),
    # separate: 0 used to fall back silently to the config's value
    (SEPARATE + ["--chunk-size", "0"], "--chunk-size"),
    (SEPARATE + ["--chunk-size", "-5"], "--chunk-size"),
    (SEPARATE + ["--chunk-size", "100"], "too short for the model"),
    (SEPARATE + ["--chunk-size", "1000000000"], "limit of 60 s"),
    (SEPARATE + ["--num-overlap", "0"], "--num-overlap"),
    (SEPARATE + ["--num-overlap", "1000000"], "--num-overlap"),
    (SEPARATE + ["--batch-size", "0"], "--batch-size"),
    (SEPARATE + ["--batch-size", "-3"], "--batch-size"),
    (SEPARATE + ["--device", "mps"], "no MPS device"),
    (SEPARATE + ["--device", "foo"], "not a device"),
    (SEPARATE + ["--device", "meta"], "not supported"),
    # eval
    (EVAL + ["--seconds", "-1"], "--seconds"),
    (EVAL + ["--seconds", "0"], "--seconds"),
    (EVAL + ["--seconds", "nan"], "--seconds"),
    (EVAL + ["--setting", "1,2,0.5"], "hop (88200) cannot be longer than the window (44100)"),
    (EVAL + ["--setting", "nan,0.1,0.1"], "--setting"),
    (EVAL + ["--setting", "1e9,0.1,0.1"], "limit of 60 s"),
    (EVAL + ["--setting", "0.01,0.005,0"], "too short for the model"),
    (EVAL + ["--device", "mps"], "no MPS device"),
    # synth
    (["synth", "--count", "0", "--out", "{out}"], "--count"),
    (["synth", "--count", "-1", "--out", "{out}"], "--count"),
    (["synth", "--seconds", "0", "--out", "{out}"], "--seconds"),
    (["synth", "--seconds", "-1", "--out", "{out}"], "--seconds"),
    (["synth", "--seconds", "1e9", "--out", "{out}"], "limit of 600 s"),
    (["synth", "--seed", "-1", "--out", "{out}"], "--seed"),
    # train
    (TRAIN[:-2] + ["--steps", "0"], "--steps"),
    (TRAIN + ["--threads", "0"], "--threads"),
    (TRAIN + ["--batch-size", "0"], "--batch-size"),
    (TRAIN + ["--segment", "0"], "--segment"),
    (TRAIN + ["--segment", "0.001"], "too short for the model"),
    (TRAIN + ["--lr", "nan"], "--lr"),
    (TRAIN + ["--val-every", "0"], "--val-every"),
    (TRAIN + ["--val-seconds", "0"], "--val-seconds"),
    (TRAIN + ["--seed", "-1"], "--seed"),
    (TRAIN + ["--device", "foo"], "not a device"),
    (TRAIN + ["--device", "mps"], "no MPS device"),
]


def _case_id(case):
    argv, _ = case
    return " ".join(a.replace("{root}/", "").replace("{out}", "OUT") for a in argv if "--config" not in a)[:80]


@pytest.mark.parametrize("argv,fragment", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_numbers_and_devices_are_one_error_line(argv, fragment, files, tmp_path, capsys, monkeypatch):
    if "mps" in argv and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        pytest.skip("this machine has an MPS device")
    monkeypatch.chdir(tmp_path)  # defaults that write relative to here stay in the test's folder
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    try:
        code, _, err = run(argv, files, out, capsys)
    finally:
        torch.set_num_threads(threads)
    assert_one_error(code, err, fragment)
    assert written(tmp_path) == [], written(tmp_path)


def test_cuda_without_cuda_is_one_error_line(files, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for argv in (SEPARATE + ["--device", "cuda"], BENCH + ["--device", "cuda"], TRAIN + ["--device", "cuda:0"]):
        code, _, err = run(argv, files, tmp_path / "out", capsys)
        assert_one_error(code, err, "no CUDA device")
    assert written(tmp_path) == []


CHECKPOINTS = {
    "folder": ("{root}/folder.ckpt", "is a folder"),
    "passwd": ("/etc/passwd", "corrupt or not a PyTorch checkpoint"),
    "wav": ("{root}/song.wav", "corrupt or not a PyTorch checkpoint"),
    "yaml": ("{root}/tiny.yaml", "corrupt or not a PyTorch checkpoint"),
    "empty": ("{root}/empty.ckpt", "the file is empty"),
    "random": ("{root}/random.ckpt", "corrupt or not a PyTorch checkpoint"),
}


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_checkpoints_that_are_not_checkpoints(name, files, tmp_path, capsys):
    if name == "passwd" and not os.path.isfile("/etc/passwd"):
        pytest.skip("no /etc/passwd here")
    path, fragment = CHECKPOINTS[name]
    out = tmp_path / "out"
    code, _, err = run(["inspect", path], files, out, capsys)
    assert code == 1
    assert_one_error(code, err, fragment)
    code, _, err = run(["separate", "{root}/song.wav", *TINY, "--checkpoint", path, "--out", "{out}"], files, out,
                       capsys)
    assert code == 1
    assert_one_error(code, err, fragment)
    assert written(tmp_path) == []


def test_garbage_checkpoint_keeps_the_cause_for_verbose(files, tmp_path, capsys):
    code, _, err = run(["--verbose", "inspect", "{root}/song.wav"], files, tmp_path, capsys)
    assert code == 1 and "Traceback" in err and "direct cause" in err
    assert err.strip().splitlines()[-1].startswith("error: ")


def test_zero_values_no_longer_fall_back_to_the_config(files, tmp_path, capsys):
    """``--chunk-size 0`` used to separate with the config's chunk size and exit 0: a silent fallback."""
    for flag in ("--chunk-size", "--num-overlap", "--batch-size"):
        code, out, err = run(SEPARATE + [flag, "0"], files, tmp_path / "out", capsys)
        assert code == 2 and "stems in" not in out
        assert_one_error(code, err, f"argument {flag}: must be a whole number")
    assert written(tmp_path) == []


@pytest.mark.parametrize("argv,fragment", [
    (["inspect", "/etc/passwd"], "error: /etc/passwd: corrupt or not a PyTorch checkpoint"),
    (["bench", "--window", "1e9", "--seconds", "1"], "error: --window 1e+09 s is beyond the limit of 60 s"),
])
def test_as_a_process(argv, fragment, tmp_path):
    if not os.path.isfile("/etc/passwd") and "/etc/passwd" in argv:
        pytest.skip("no /etc/passwd here")
    proc = subprocess.run([sys.executable, "-m", "bridge.cli", *argv], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(fragment), proc.stderr
    assert os.listdir(tmp_path) == []

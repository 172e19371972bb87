"""Hardening, second round (issue 28), ``stemstream live``: how a show ends (signals, SIGKILL), a killed
take and the next run into its folder, a full disk, non-finite input in the recording, and the model
when none is given.

Every run is a real ``stemstream live`` subprocess on a real JACK server (dummy backend, private name,
stopped by its PID), as in ``tests/live/``; the full disk is a small tmpfs the test mounts (root only:
skipped where it cannot be mounted). A WAV file is read as a strict reader does
(``live_helpers.read_wav_strictly``).
"""
import json
import os
import pathlib
import pty
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "live"))

import streamer  # noqa: E402
from bridge.cli import main  # noqa: E402
from conftest import REPO, randomize, write_yaml  # noqa: E402
from jack_helpers import JACKD, JackServer  # noqa: E402
from live_helpers import STEMSTREAM, read_take, read_wav_strictly, run_live, start_live, wait_for_ports  # noqa: E402

RATE = 44100
STEMS = ("vocals", "drums", "bass", "other")
ENGINE = ["--window", "0.5", "--hop", "0.1", "--lookahead", "0.1"]
WAVS = ["input.wav", "main.wav"] + [f"stems/{s}.wav" for s in STEMS]
NONFINITE = 4200
needs_jackd = pytest.mark.skipif(JACKD is None, reason="jackd is not installed (make install installs jackd2)")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("live2")
    cfg = write_yaml(d / "tiny4.yaml", stems=STEMS, target=None, extra_model={"num_stems": 4})
    torch.manual_seed(0)
    torch.save(randomize(streamer.build_model(streamer.load_config(cfg))).state_dict(), d / "tiny4.ckpt")
    t = np.arange(3 * RATE) / RATE
    rng = np.random.default_rng(0)
    song = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.3 * np.sin(2 * np.pi * 330 * t)], 1)
    song = (song + 0.05 * rng.standard_normal(song.shape)).astype(np.float32)
    sf.write(d / "song.wav", song, RATE, subtype="FLOAT")
    bad = song.copy()
    where = rng.choice(int(1.5 * RATE) * 2, NONFINITE, replace=False)   # in the first 1.5 s, both channels
    bad.reshape(-1)[where] = np.array([np.nan, np.inf, -np.inf], np.float32)[np.arange(NONFINITE) % 3]
    sf.write(d / "nonfinite.wav", bad, RATE, subtype="FLOAT")
    return {"config": str(cfg), "checkpoint": str(d / "tiny4.ckpt"), "song": str(d / "song.wav"),
            "nonfinite": str(d / "nonfinite.wav"), "song_audio": song, "bad_mask": ~np.isfinite(bad)}


def model(files):
    return ["--config", files["config"], "--checkpoint", files["checkpoint"], *ENGINE, "--output", "system", "--no-ui"]


def check_take(folder, least_seconds):
    """Every file of a finished take: complete for a strict reader, all of one length; nothing left over."""
    folder = pathlib.Path(folder)
    lengths = {name: read_wav_strictly(folder / name).shape[0] for name in WAVS}
    assert len(set(lengths.values())) == 1 and lengths["input.wav"] >= least_seconds * RATE, lengths
    left = [p.name for p in folder.rglob("*") if p.name.startswith(".") or (p.is_file() and p.stat().st_size == 0)]
    assert left == [], left
    return json.loads((folder / "session.json").read_text()), lengths["input.wav"]


def _children(pid: int) -> list[int]:
    kids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            kids += [int(k) for k in pathlib.Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return kids


# ---------------------------------------------------------------- item 3: ending a show
@needs_jackd
@pytest.mark.parametrize("how", ["SIGHUP, the terminal gone", "SIGTERM"])
def test_a_signal_ends_the_show_as_ctrl_c_does(files, tmp_path, how):
    """SIGHUP as a terminal that closes sends it (to the whole process group, the inference worker too;
    writing to the terminal fails from then on) and SIGTERM while the show runs: the show ends, every
    file is finished, session.json gives the reason, the worker lived to the end, exit status 0."""
    hup = how.startswith("SIGHUP")
    args = model(files) + ["--input-file", files["song"], "--loop", "--record", str(tmp_path / "take")]
    with JackServer(log_dir=str(tmp_path)) as server:
        env = dict(server.env, PYTHONPATH=str(REPO))
        if hup:
            master, slave = pty.openpty()
            proc = subprocess.Popen(STEMSTREAM + ["live", *args], env=env, cwd=REPO, stdin=subprocess.DEVNULL,
                                    stdout=slave, stderr=slave, start_new_session=True)
            os.close(slave)
        else:
            proc = start_live(server, args)
        try:
            wait_for_ports(server, "PortAudio:out", proc=proc)
            time.sleep(2.0)
            if hup:
                # the worker process holds the stop signals back: a hangup of the whole group leaves it to
                # the session to end
                workers = [k for k in _children(proc.pid)
                           if b"spawn_main" in pathlib.Path(f"/proc/{k}/cmdline").read_bytes()]
                assert workers
                for k in workers:
                    blocked = int(next(line for line in pathlib.Path(f"/proc/{k}/status").read_text().splitlines()
                                       if line.startswith("SigBlk:")).split()[1], 16)
                    held = [blocked >> (s - 1) & 1 for s in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)]
                    assert all(held), hex(blocked)
                os.set_blocking(master, False)
                seen = os.read(master, 65536).decode(errors="replace")
                assert "warming up" in seen, seen
                os.close(master)            # the terminal is gone: every later write to it fails
                os.killpg(proc.pid, signal.SIGHUP)
                proc.wait(timeout=30)
                out = ""
            else:
                proc.send_signal(signal.SIGTERM)
                out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, (proc.returncode, out)
    session, frames = check_take(tmp_path / "take", 1.5)
    if hup:
        assert session["stopped_by"] == "hangup (SIGHUP: the terminal or the connection closed)"
    else:
        assert session["stopped_by"] == "terminated (SIGTERM)"
        assert "stopped: terminated (SIGTERM) after" in out and "recorded: 7 files" in out, out
    assert abs(session["duration_seconds"] - frames / RATE) < 0.5
    assert session["error"] is None and session["counters"]["worker_restarts"] == 0, session


@needs_jackd
def test_sigterm_while_warming_up_ends_at_once_and_leaves_nothing(files, tmp_path):
    with JackServer(log_dir=str(tmp_path)) as server:
        proc = start_live(server, model(files) + ["--input-file", files["song"], "--loop",
                                                  "--record", str(tmp_path / "take")])
        try:
            line = proc.stdout.readline()
            assert "warming up" in line, line
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, (proc.returncode, err[-2000:])
    assert "stopped: terminated (SIGTERM) before the show started; nothing was played or recorded" in out, out
    assert "Traceback" not in err, err
    assert not (tmp_path / "take").exists() or not list((tmp_path / "take").rglob("*"))


# ---------------------------------------------------------------- items 3 and 4: SIGKILL, then the next run
@needs_jackd
def test_a_killed_take_is_readable_and_the_next_run_recovers_it_instead_of_recording_over_it(files, tmp_path):
    take = tmp_path / "take"
    with JackServer(log_dir=str(tmp_path)) as server:
        proc = start_live(server, model(files) + ["--input-file", files["song"], "--loop", "--record", str(take)])
        try:
            wait_for_ports(server, "PortAudio:out", proc=proc)
            time.sleep(2.5)
        finally:
            proc.kill()
            proc.communicate(timeout=30)
        # what the killed run left, as a strict reader sees it: at most ~1 s behind what was played
        left = {name: read_wav_strictly(take / os.path.dirname(name) / f".{os.path.basename(name)}.partial",
                                        closed=False) for name in WAVS}
        frames = {a.shape[0] for a in left.values()}
        assert len(frames) == 1 and min(frames) >= 1.0 * RATE, frames
        np.testing.assert_array_equal(left["input.wav"][:RATE], files["song_audio"][:RATE])
        # the next run into the folder: refused, and the take recovered (nothing lost, nothing replaced)
        again = run_live(server, model(files) + ["--input-file", files["song"], "--seconds", "1",
                                                  "--record", str(take)])
    assert again.returncode == 1
    errors = [line for line in again.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "holds an interrupted take" in errors[0] and "recovered" in errors[0], again.stderr
    session, n = check_take(take, 1.0)
    assert n >= min(frames)
    np.testing.assert_array_equal(read_wav_strictly(take / "input.wav")[:n // 2], left["input.wav"][:n // 2])
    assert session["stopped_by"] == "killed" and session["latency_samples"] == round(0.3 * RATE)


# ---------------------------------------------------------------- item 5: a full disk
@needs_jackd
def test_a_full_disk_stops_the_recording_in_words_and_the_show_goes_on(files, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        with JackServer(log_dir=str(tmp_path)) as server:
            r = run_live(server, model(files) + ["--input-file", files["song"], "--loop", "--seconds", "4",
                                                  "--record", str(disk / "take")])
        words = f"no space left on tmpfs (mounted at {disk})"
        assert r.returncode == 1, r.stderr[-3000:]
        assert "System error" not in r.stdout + r.stderr
        status = [line for line in r.stdout.splitlines() if " s | latency" in line]
        assert status and words in status[-1], r.stdout
        assert "stopped: seconds after 4.0 s" in r.stdout, r.stdout       # the show went on to the end
        assert f"recording stopped: {words}, after" in r.stdout and "the show went on" in r.stdout, r.stdout
        errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "is incomplete" in errors[0] and words in errors[0], r.stderr
        session, frames = check_take(disk / "take", 0.2)
        assert frames < 3.5 * RATE
        assert session["stopped_by"] == "seconds" and words in session["recording"]["error"]
        assert abs(session["recording"]["seconds"] - frames / RATE) < 1e-3
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# ---------------------------------------------------------------- item 9: non-finite input
@needs_jackd
def test_input_wav_is_what_entered_the_engine_and_the_summary_counts_the_non_finite_samples(files, tmp_path):
    with JackServer(log_dir=str(tmp_path)) as server:
        r = run_live(server, model(files) + ["--input-file", files["nonfinite"], "--seconds", "2",
                                              "--record", str(tmp_path / "take")])
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"non-finite input: {NONFINITE} samples (NaN or inf) replaced with 0" in r.stdout, r.stdout
    take = read_take(tmp_path / "take")
    x, mask = take["input"], files["bad_mask"][:take["input"].shape[0]]
    assert np.isfinite(x).all()
    assert (x[mask] == 0).all() and np.array_equal(x[~mask], files["song_audio"][:x.shape[0]][~mask])
    s = take["session"]
    assert s["counters"]["nonfinite_input"] == NONFINITE == s["recording"]["nonfinite_input_recorded_as_zero"]


# ---------------------------------------------------------------- item 10: the model
def test_config_without_checkpoint_is_refused_in_one_line(files, capsys):
    assert main(["live", "--config", files["config"], "--no-ui", "--seconds", "1"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith(f"error: --config {files['config']} needs --checkpoint MODEL.ckpt"), err


@needs_jackd
def test_no_model_plays_the_bundled_demo_model_and_says_so(files, tmp_path):
    with JackServer(log_dir=str(tmp_path)) as server:
        r = run_live(server, ["--input-file", files["song"], "--output", "system", "--no-ui", "--seconds", "1",
                              "--record", str(tmp_path / "take")])
    assert r.returncode == 0, r.stderr[-3000:]
    first = r.stdout.splitlines()[0]
    assert first.startswith("no model given: playing the bundled demo model") and "--config" in first, r.stdout
    s = read_take(tmp_path / "take")["session"]
    assert s["model"]["checkpoint"].endswith("demo_bs_roformer_64x2.ckpt") and s["stems"] == list(STEMS)


def test_every_stop_signal_is_caught_and_named():
    """The signals a show can be ended with, besides SIGINT, SIGTERM and SIGHUP (tested end to end above):
    each is caught and named; before the stream runs the first one stops the set-up at once, later ones
    never cut the clean-up short; the old handlers come back afterwards."""
    from bridge.live.session import STOP_SIGNALS, StopSignals, Stopped

    names = {signal.Signals(s).name for s in STOP_SIGNALS}
    assert {"SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2"} <= names
    before = signal.getsignal(signal.SIGUSR1)
    with StopSignals() as signals:
        with pytest.raises(Stopped, match="quit"):
            os.kill(os.getpid(), signal.SIGQUIT)
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGUSR2)     # a second signal while cleaning up: noted, not raised
        time.sleep(0.05)
        got = []
        signals.on_stop = got.append
        for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM):
            os.kill(os.getpid(), sig)
            time.sleep(0.05)
    assert got == ["signal SIGUSR1", "signal SIGUSR2", "terminated (SIGTERM)"]
    assert signals.reason == "quit (SIGQUIT)" and signal.getsignal(signal.SIGUSR1) == before

"""The live recorder: a bounded hand-over the callback never waits on, drops counted and kept on the timeline."""
import json
import os

import numpy as np
import pytest
import soundfile as sf

from bridge.live.recorder import DROPPED, Recorder, write_json
from live_helpers import read_wav_strictly
from streamer.errors import AudioError

RATE = 44100


def blocks(k, n=256, buses=2, stems=4, seed=0):
    rng = np.random.default_rng(seed + k)
    return (rng.standard_normal((2, n)).astype(np.float32), rng.standard_normal((buses, 2, n)).astype(np.float32),
            rng.standard_normal((stems, 2, n)).astype(np.float32))


def new(folder, **kw):
    return Recorder(folder, RATE, 2, ["main", "monitor"], ["vocals", "drums", "bass", "other"], 256, **kw)


def test_every_block_lands_in_its_file(tmp_path):
    rec = new(tmp_path / "take").start()
    sent = [blocks(k) for k in range(50)]
    for x, b, s in sent:
        rec.push(x, b, s, 256)
    summary = rec.close()
    assert summary["dropped_blocks"] == 0 and summary["frames"] == 50 * 256 and summary["error"] is None
    take = tmp_path / "take"
    np.testing.assert_array_equal(sf.read(take / "input.wav", dtype="float32")[0].T, np.concatenate([x for x, _, _ in sent], 1))
    np.testing.assert_array_equal(sf.read(take / "monitor.wav", dtype="float32")[0].T, np.concatenate([b[1] for _, b, _ in sent], 1))
    np.testing.assert_array_equal(sf.read(take / "stems" / "bass.wav", dtype="float32")[0].T,
                                  np.concatenate([s[2] for _, _, s in sent], 1))
    assert sf.info(take / "main.wav").subtype == "FLOAT"
    assert not [p for p in take.rglob("*") if p.name.endswith(".partial")]


def test_a_writer_that_falls_behind_drops_counted_blocks_and_keeps_the_timeline(tmp_path):
    rec = new(tmp_path / "take", buffer_seconds=0.0)   # the smallest ring: 4 slots
    assert rec.slots == 4
    sent = [blocks(k) for k in range(10)]
    for x, b, s in sent[:6]:     # the writer is not running: 4 fit, 2 are dropped
        rec.push(x, b, s, 256)
    assert rec.counters[DROPPED] == 2
    rec.start()
    import time
    deadline = time.monotonic() + 5
    while rec.counters[1] < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    for x, b, s in sent[6:]:
        rec.push(x, b, s, 256)
    summary = rec.close()
    assert summary["dropped_blocks"] == 2 and summary["dropped_frames"] == 512
    got = sf.read(tmp_path / "take" / "input.wav", dtype="float32")[0].T
    assert got.shape[1] == 10 * 256            # the session's length: dropped blocks are silent gaps
    expect = np.concatenate([x if k not in (4, 5) else np.zeros_like(x) for k, (x, _, _) in enumerate(sent)], 1)
    np.testing.assert_array_equal(got, expect)


def test_blocks_dropped_at_the_very_end_still_count_as_time(tmp_path):
    rec = new(tmp_path / "take", buffer_seconds=0.0)
    for k in range(7):
        rec.push(*blocks(k), 256)
    summary = rec.close()      # never started: close writes what was handed over, then the final gap
    assert summary["dropped_blocks"] == 3
    assert sf.info(tmp_path / "take" / "stems" / "vocals.wav").frames == 7 * 256


def test_refuses_a_folder_that_holds_a_recording_or_is_a_file(tmp_path):
    rec = new(tmp_path / "take")
    rec.close()
    write_json(str(tmp_path / "take" / "session.json"), {"a": 1})
    assert json.loads((tmp_path / "take" / "session.json").read_text()) == {"a": 1}
    with pytest.raises(AudioError, match="already holds a recording"):
        new(tmp_path / "take")
    (tmp_path / "file").write_text("x")
    with pytest.raises(AudioError, match="is a file"):
        new(tmp_path / "file")
    os.chmod(tmp_path, 0o500)
    try:
        if os.geteuid() != 0:
            with pytest.raises(AudioError, match="cannot (record|create output folder)"):
                new(tmp_path / "new")
    finally:
        os.chmod(tmp_path, 0o700)


def test_discard_removes_what_it_created(tmp_path):
    rec = new(tmp_path / "a" / "take")
    rec.push(*blocks(0), 256)
    rec.discard()
    assert not (tmp_path / "a").exists()


def test_a_failing_disk_is_reported_and_the_files_stay_readable(tmp_path):
    rec = new(tmp_path / "take").start()
    rec.push(*blocks(0), 256)
    import time
    time.sleep(0.1)
    full = os.open("/dev/full", os.O_WRONLY)     # the disk fills up under one file: its next write fails
    os.dup2(full, rec._tracks[1].fd)
    os.close(full)
    rec.push(*blocks(1), 256)
    summary = rec.close()
    assert summary["error"] and "recording stopped: no space left on" in summary["error"]
    assert sf.info(tmp_path / "take" / "input.wav").frames == summary["frames"] >= 256


# ---------------------------------------------------------------- issue 28 (second round), items 3, 4, 5, 9
def _wait(cond, timeout=5.0):
    import time

    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cond()


def test_the_headers_say_what_the_files_hold_while_recording(tmp_path):
    """Item 3: a take whose process is killed (SIGKILL, power cut) must be readable by a strict reader: the
    headers are brought up to date about once a second, never claiming more than the file holds."""
    rec = new(tmp_path / "take", sync_seconds=0.05).start()
    sent = [blocks(k) for k in range(20)]
    for x, b, s in sent:
        rec.push(x, b, s, 256)
    import time
    time.sleep(0.3)
    try:
        got = read_wav_strictly(tmp_path / "take" / ".input.wav.partial", closed=False)
        np.testing.assert_array_equal(got.T, np.concatenate([x for x, _, _ in sent], 1))
        stem = read_wav_strictly(tmp_path / "take" / "stems" / ".bass.wav.partial", closed=False)
        assert stem.shape == (20 * 256, 2)
    finally:
        rec.close()
    for path in ["input.wav", "main.wav", "monitor.wav", "stems/vocals.wav"]:
        assert read_wav_strictly(tmp_path / "take" / path).shape == (20 * 256, 2)


def _killed_take(folder, n_blocks=12):
    """A take as a killed run leaves it: files never closed, session.json from the start of the show."""
    rec = new(folder, sync_seconds=0.05)
    rec.write_start({"sample_rate": RATE, "latency_samples": 123, "stopped_by": None})
    rec.start()
    sent = [blocks(k) for k in range(n_blocks)]
    for x, b, s in sent:
        rec.push(x, b, s, 256)
    _wait(lambda: rec.counters[1] == n_blocks)
    rec._stop.set()
    rec._thread.join()
    with open(rec._tracks[0].tmp, "ab") as fh:     # data the header has not caught up with yet
        fh.write(np.zeros((100, 2), np.float32).tobytes() + b"\x01\x02")   # and a torn last frame
    for t in rec._tracks:
        os.close(t.fd)
    return sent


def test_a_take_left_by_a_killed_run_is_recovered_and_never_recorded_over(tmp_path):
    """Item 4: the next run into that folder recovers the take (every file readable, nothing lost) and
    refuses to record there."""
    take = tmp_path / "take"
    sent = _killed_take(take)
    with pytest.raises(AudioError, match=r"holds an interrupted take .*recovered 0\.1 s in .*input\.wav.*choose a "
                                         r"new folder"):
        new(take)
    got = read_wav_strictly(take / "input.wav")
    assert got.shape == (12 * 256 + 100, 2)          # all whole frames on the disk
    np.testing.assert_array_equal(got[:12 * 256].T, np.concatenate([x for x, _, _ in sent], 1))
    np.testing.assert_array_equal(read_wav_strictly(take / "stems" / "drums.wav").T,
                                  np.concatenate([s[1] for _, _, s in sent], 1))
    session = json.loads((take / "session.json").read_text())
    assert session["stopped_by"] == "killed" and session["latency_samples"] == 123
    assert "killed" in session["error"] and "stems/drums.wav" in session["files"]
    assert not [p for p in take.rglob("*") if p.name.startswith(".")]
    with pytest.raises(AudioError, match="already holds a recording"):    # and again: the recovered take stays
        new(take)
    assert read_wav_strictly(take / "input.wav").shape == (12 * 256 + 100, 2)


def test_non_finite_input_is_recorded_as_the_engine_took_it_and_counted(tmp_path):
    """Item 9: input.wav is what entered the engine: NaN and inf are 0 there, as in the engine."""
    rec = new(tmp_path / "take").start()
    x, b, s = blocks(0)
    x[0, 10:20] = np.nan
    x[1, 30] = np.inf
    x[1, 31] = -np.inf
    rec.push(x, b, s, 256)
    summary = rec.close()
    assert summary["nonfinite_input"] == 12
    got = sf.read(tmp_path / "take" / "input.wav", dtype="float32")[0].T
    assert np.isfinite(got).all()
    expect = np.where(np.isfinite(x), x, 0.0)
    np.testing.assert_array_equal(got, expect)


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (root only; skipped where it cannot be mounted)."""
    import subprocess

    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_full_disk_stops_the_recording_in_words_with_files_of_one_length(small_disk):
    """Item 5: a full disk is said in words, every file ends at the same frame, session.json still fits and
    nothing empty is left behind."""
    take = small_disk / "take"
    rec = new(take).start()
    for k in range(400):          # 400 blocks x 7 files x 2 KiB: more than 1 MiB
        rec.push(*blocks(k % 5), 256)
        if k % 3 == 0:
            import time
            time.sleep(0.002)
    _wait(lambda: rec.stopped)
    rec.push(*blocks(0), 256)          # after the failure: not handed over, not counted as dropped
    summary = rec.close()
    assert summary["error"].startswith(f"recording stopped: no space left on tmpfs (mounted at {small_disk}), after ")
    assert summary["dropped_blocks"] == 0
    lengths = {p.name: read_wav_strictly(p).shape[0] for p in take.rglob("*.wav")}
    assert len(lengths) == 7 and set(lengths.values()) == {summary["frames"]} and summary["frames"] > 256, lengths
    assert rec.write_session({"error": summary["error"]}) is None       # the space kept for it
    assert json.loads((take / "session.json").read_text())["error"] == summary["error"]
    assert sorted(p.name for p in take.rglob("*") if p.name.startswith(".") or p.stat().st_size == 0) == []


def test_a_session_json_that_cannot_be_written_is_said_and_leaves_nothing_half_written(tmp_path):
    """Item 5: when session.json cannot be written, the reason comes back in words (the summary prints
    it) and no empty temporary file is left."""
    rec = new(tmp_path / "take").start()
    rec.push(*blocks(0), 256)
    rec.close()
    (tmp_path / "take" / "session.json").mkdir()        # something in the way that no retry fixes
    why = rec.write_session({"stopped_by": "seconds"})
    assert why and why.startswith(f"cannot write {tmp_path / 'take' / 'session.json'}: ")
    assert sorted(p.name for p in (tmp_path / "take").iterdir() if p.name.startswith(".")) == []

"""The live recorder: a bounded hand-over the callback never waits on, drops counted and kept on the timeline."""
import json
import os

import numpy as np
import pytest
import soundfile as sf

from bridge.live.recorder import DROPPED, Recorder, write_json
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
    rec._tracks[1].file.close()        # the disk goes away under one file: the writer's next write fails
    rec.push(*blocks(1), 256)
    summary = rec.close()
    assert summary["error"] and "recording stopped" in summary["error"]
    assert sf.info(tmp_path / "take" / "input.wav").frames >= 256

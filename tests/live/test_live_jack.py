"""``stemstream live`` end to end against a real JACK server (dummy backend, paced in real time).

Every test starts its own server under a private name and stops it by its PID; the command runs as a
real subprocess that PortAudio connects to the server.
"""
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import soundfile as sf
from jack_helpers import JackServer, needs_jackd
from live_helpers import delayed, read_take, run_live, start_live, wait_for_ports

from conftest import write_yaml

pytestmark = needs_jackd

RATE = 44100
STEMS = ("vocals", "drums", "bass", "other")
ENGINE = ["--checkpoint", "random", "--window", "0.5", "--hop", "0.1", "--lookahead", "0.1"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("live")
    cfg = write_yaml(d / "tiny4.yaml", stems=STEMS, target=None, extra_model={"num_stems": 4})
    t = np.arange(3 * RATE) / RATE
    rng = np.random.default_rng(0)
    song = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.3 * np.sin(2 * np.pi * 330 * t)], 1)
    song += 0.05 * rng.standard_normal(song.shape)
    sf.write(d / "song.wav", song.astype(np.float32), RATE, subtype="FLOAT")
    return {"config": str(cfg), "song": str(d / "song.wav")}


def model(files):
    return ["--config", files["config"], *ENGINE, "--output", "system", "--no-ui"]


def check_ok(result):
    assert result.returncode == 0, result.stderr[-3000:]
    assert "error" not in result.stderr.lower(), result.stderr[-3000:]


def test_file_run_records_stems_that_sum_to_the_delayed_input(files, tmp_path):
    with JackServer(log_dir=str(tmp_path)) as server:
        r = run_live(server, model(files) + ["--input-file", files["song"], "--seconds", "3",
                                              "--record", str(tmp_path / "take")])
    check_ok(r)
    assert "stopped: seconds after 3.0 s" in r.stdout and "deadline misses" in r.stdout
    take = read_take(tmp_path / "take")
    s, x = take["session"], take["input"]
    L = s["latency_samples"]
    assert s["sample_rate"] == RATE and s["device_sample_rate"] == RATE and s["latency_frames"] == L
    assert L == round(0.3 * RATE) and s["stopped_by"] == "seconds"
    assert x.shape[0] >= 3 * RATE - 512 and np.abs(x).max() > 0.2
    for audio in [*take["buses"].values(), *take["stems"].values()]:
        assert audio.shape == x.shape
    # the first samples of the song went in
    np.testing.assert_array_equal(x[:RATE], sf.read(files["song"], dtype="float32")[0][:RATE])
    # the residual (spread): the stems add up to the delayed input; nothing engaged: the bus IS the delayed input
    np.testing.assert_allclose(sum(take["stems"].values()), delayed(x, L), atol=2e-6)
    np.testing.assert_array_equal(take["buses"]["main"], delayed(x, L))
    assert s["counters"]["record_dropped_blocks"] == 0 and s["counters"]["resampler_underflow_frames"] == 0
    assert sorted(s["files"]) == sorted(["input.wav", "main.wav", "session.json"] +
                                        [f"stems/{n}.wav" for n in STEMS])
    assert not list((tmp_path / "take").rglob("*.partial"))


def test_mute_and_a_routed_bus_arrive_on_the_device_outputs_sample_aligned(files, tmp_path):
    with JackServer(playback=4, log_dir=str(tmp_path)) as server:
        proc = start_live(server, model(files) + ["--input-file", files["song"], "--seconds", "3.5", "--buses",
                                                  "main,monitor", "--route", "monitor:3-4", "--mute", "vocals",
                                                  "--record", str(tmp_path / "take")])
        ports = wait_for_ports(server, "PortAudio:out", proc=proc)
        deadline = time.monotonic() + 10
        while len(ports) < 4 and time.monotonic() < deadline:   # PortAudio registers its ports one by one
            time.sleep(0.05)
            ports = wait_for_ports(server, "PortAudio:out", proc=proc)
        assert len(ports) == 4
        time.sleep(1.0)   # past the latency: the outputs carry the song
        subprocess.run(["jack_rec", "-f", str(tmp_path / "device.wav"), "-d", "1", "-b", "32", *sorted(ports)],
                       env=server.env, check=True, capture_output=True, timeout=30)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    take = read_take(tmp_path / "take")
    x, L = take["input"], take["session"]["latency_samples"]
    main, monitor = take["buses"]["main"], take["buses"]["monitor"]
    # --mute vocals on the first bus only: main = the delayed input minus the vocals; monitor untouched
    np.testing.assert_allclose(main, delayed(x, L) - take["stems"]["vocals"], atol=2e-6)
    np.testing.assert_array_equal(monitor, delayed(x, L))
    assert np.abs(main - monitor).max() > 1e-3
    # what the device got: outputs 1-2 = main and 3-4 = monitor, at one and the same offset. An xrun
    # (a loaded machine) shifts the device's timeline against the recording's by whole periods, so
    # each 256-frame block of the capture is placed on its own: the offset where its outputs 3-4 are
    # the monitor bus (within jack_rec's PCM 32 rounding); there, outputs 1-2 must be the main bus.
    dev = sf.read(tmp_path / "device.wav", dtype="float32")[0]
    assert dev.shape[1] == 4 and np.abs(dev).max() > 0.1
    c = np.correlate(monitor[:, 0], dev[:, 2], mode="valid")
    guess = int(np.argmax(c))
    placed = aligned = 0
    blocks = dev.shape[0] // 256
    for b in range(blocks):
        piece = dev[b * 256:(b + 1) * 256]
        for k in range(-16, 17):
            at = guess + b * 256 + k * 256
            if 0 <= at and at + 256 <= monitor.shape[0] and np.abs(piece[:, 2:4] - monitor[at:at + 256]).max() < 1e-6:
                placed += 1
                aligned += np.abs(piece[:, 0:2] - main[at:at + 256]).max() < 1e-6
                break
    assert placed >= 0.7 * blocks, (placed, blocks)
    assert aligned == placed, (aligned, placed)


def _echo_lag(x: np.ndarray, lo: int, hi: int, width: int = 2000) -> tuple[int, int]:
    """(first click, lag of its echo) in ``x``: the click's first sample, and where a copy of it starts
    again between ``lo`` and ``hi`` samples later (cross-correlation peak)."""
    t0 = int(np.flatnonzero(np.abs(x) > 1e-3)[0])
    ref = x[t0 - 200:t0 - 200 + width]
    seg = x[t0 - 200 + lo:t0 - 200 + hi + width]
    return t0, lo + int(np.argmax(np.correlate(seg, ref, mode="valid")))


@pytest.mark.parametrize("server_rate", [44100, 48000])
def test_loopback_round_trip_is_the_reported_latency_plus_the_servers_buffering(files, tmp_path, server_rate):
    """A click enters the live input (jack_metro), the live output is wired back to the live input, and
    the recorded input shows the click and its echo one round trip later: the reported latency plus
    what the device reports for itself (the JACK server's two periods)."""
    with JackServer(rate=server_rate, log_dir=str(tmp_path)) as server:
        proc = start_live(server, ["--config", files["config"], *ENGINE, "--input", "system", "--output", "system",
                                   "--no-ui", "--seconds", "5", "--record", str(tmp_path / "take")])
        wait_for_ports(server, "PortAudio:in", proc=proc)
        time.sleep(0.5)
        server.disconnect("system:capture_1", "PortAudio:in_0")
        server.disconnect("system:capture_2", "PortAudio:in_1")
        server.connect("PortAudio:out_0", "PortAudio:in_0")
        metro = subprocess.Popen(["jack_metro", "-b", "60", "-D", "2", "-n", "click"], env=server.env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_ports(server, "click:")
            server.connect("click:60_bpm", "PortAudio:in_0")
            out, err = proc.communicate(timeout=60)
        finally:
            metro.terminate()
            metro.wait(10)
    assert proc.returncode == 0, err[-3000:]
    take = read_take(tmp_path / "take")
    s = take["session"]
    assert s["device_sample_rate"] == server_rate and s["device_buffer_latency_frames"] == 2 * 256
    lo = int(0.2 * RATE)
    t0, lag = _echo_lag(take["input"][:, 0], lo, int(0.6 * RATE))
    assert take["input"].shape[0] > t0 + lag + 2000, "the echo must be inside the recording"
    measured = lag * server_rate / RATE          # input.wav is at the model's rate: in device frames
    expected = s["latency_frames"] + s["device_buffer_latency_frames"]
    assert abs(measured - expected) <= (0 if server_rate == RATE else 1.0), (measured, expected)
    if server_rate != RATE:
        assert s["latency_ms"]["resampling"] > 0


def test_a_device_at_another_rate_runs_a_file_with_an_exact_latency(files, tmp_path):
    with JackServer(rate=48000, log_dir=str(tmp_path)) as server:
        r = run_live(server, model(files) + ["--input-file", files["song"], "--seconds", "2",
                                              "--record", str(tmp_path / "take")])
    check_ok(r)
    take = read_take(tmp_path / "take")
    s = take["session"]
    assert s["sample_rate"] == RATE and s["device_sample_rate"] == 48000
    assert s["latency_frames"] > s["latency_samples"] * 48000 / RATE     # the rate conversion adds some
    assert s["counters"]["resampler_underflow_frames"] == 0
    np.testing.assert_array_equal(take["buses"]["main"], delayed(take["input"], s["latency_samples"]))


def _children(pid: int) -> list[int]:
    kids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                kids += [int(k) for k in fh.read().split()]
        except OSError:
            pass
    return kids


def _gone(pids, timeout=5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [p for p in pids if os.path.exists(f"/proc/{p}") and "Z" not in open(f"/proc/{p}/stat").read().split()[2]]:
            return True
        time.sleep(0.05)
    return False


def test_sigint_stops_within_a_second_with_complete_files_and_no_process_left(files, tmp_path):
    with JackServer(log_dir=str(tmp_path)) as server:
        proc = start_live(server, model(files) + ["--input-file", files["song"], "--loop",
                                                  "--record", str(tmp_path / "take")])
        wait_for_ports(server, "PortAudio:out", proc=proc)
        time.sleep(2.0)
        kids = _children(proc.pid)
        assert kids, "the inference worker process runs"
        t = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - t
    assert proc.returncode == 0, err[-3000:]
    assert took < 3.0, took          # the session stops within a second; closing files and the worker follows
    assert "stopped: interrupted" in out
    assert _gone(kids)
    take = read_take(tmp_path / "take")
    assert take["session"]["stopped_by"] == "interrupted"
    n = take["input"].shape[0]
    assert n > RATE and all(a.shape[0] == n for a in [*take["buses"].values(), *take["stems"].values()])
    assert not list((tmp_path / "take").rglob("*.partial"))


def test_a_killed_command_leaves_no_worker_behind(files, tmp_path):
    with JackServer(log_dir=str(tmp_path)) as server:
        proc = start_live(server, model(files) + ["--input-file", files["song"], "--loop"])
        wait_for_ports(server, "PortAudio:out", proc=proc)
        kids = _children(proc.pid)
        assert kids
        proc.kill()
        proc.communicate(timeout=30)
        assert _gone(kids, timeout=5.0), "the worker process outlived a killed command"


@pytest.mark.parametrize("extra,words", [
    (["--output", "nosuch"], "no output device matches 'nosuch'; output devices: 0: system"),
    (["--output", "system", "--buses", "main,monitor", "--route", "monitor:3-4"],
     "output device 'system' has 2 output channels; --route monitor:3-4 needs 4"),
    (["--output", "system", "--input", "system", "--in-channels", "3"], "has 2 input channels"),
])
def test_device_errors_are_one_line(files, tmp_path, extra, words):
    with JackServer(log_dir=str(tmp_path)) as server:
        r = run_live(server, ["--config", files["config"], *ENGINE, "--no-ui", "--seconds", "1", *extra])
    assert r.returncode == 1
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], r.stderr


def test_a_server_that_dies_ends_the_run_with_one_error_and_closed_files(files, tmp_path):
    server = JackServer(log_dir=str(tmp_path))
    try:
        proc = start_live(server, model(files) + ["--input-file", files["song"], "--loop", "--seconds", "30",
                                                  "--record", str(tmp_path / "take")])
        wait_for_ports(server, "PortAudio:out", proc=proc)
        kids = _children(proc.pid)
        time.sleep(1.0)
        server.proc.terminate()                 # the audio server goes away mid-run (SIGKILL would leave its
        # entry in JACK's shared registry, which holds few servers: later servers would fail to start)
        out, err = proc.communicate(timeout=30)
    finally:
        server.stop()
    assert proc.returncode == 1, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "stopped calling back" in errors[0] and "Traceback" not in err, err
    assert "stopped: error" in out
    assert _gone(kids)
    take = read_take(tmp_path / "take")
    assert take["session"]["stopped_by"] == "error" and take["input"].shape[0] > RATE // 2
    assert not list((tmp_path / "take").rglob("*.partial"))

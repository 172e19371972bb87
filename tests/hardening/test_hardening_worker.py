"""Hardening of the real-time worker: no hang without a __main__ guard, low file-descriptor limits,
frozen and killed workers stopped in time, dead workers noticed, recorded and restarted, and audio
that keeps flowing the safe way meanwhile; read-only input blocks."""
import mmap
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import streamer
from streamer import StreamEngine

from conftest import REPO
from standins import ContextModel, FailingModel

RATE = 44100
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}


def run_script(tmp_path, body, timeout, shell_prefix=""):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    cmd = f"{shell_prefix} exec {sys.executable} {script}"
    return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=timeout, env=ENV,
                          cwd=tmp_path)


def gone(pid):
    return not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def noise(seconds, seed=0):
    return (np.random.default_rng(seed).standard_normal((2, int(seconds * RATE))) * 0.2).astype(np.float32)


def paced(engine, audio, block=441, speed=1.0, during=None):
    """Feed at ``speed`` x real time; ``during(i)`` is called before block i."""
    outs = []
    period = block / RATE / speed
    t0 = time.perf_counter()
    for i, pos in enumerate(range(0, audio.shape[1], block)):
        if during:
            during(i)
        while time.perf_counter() < t0 + i * period:
            time.sleep(0.0005)
        outs.append(engine.process(audio[:, pos:pos + block]))
    return np.concatenate(outs, axis=-1)


def test_script_without_main_guard_gets_one_clear_error_not_a_hang(tmp_path):
    result = run_script(tmp_path, """
        import streamer
        from streamer.assets import DEMO_CONFIG, DEMO_CHECKPOINT
        m = streamer.load_model(DEMO_CONFIG, DEMO_CHECKPOINT)
        engine = streamer.StreamEngine.from_config(m.config, m.model, preset="balanced", realtime=True)
        engine.start(timeout=60)
        print("started")
        engine.stop()
    """, timeout=90)
    assert result.returncode != 0 and "started" not in result.stdout
    assert 'if __name__ == "__main__":' in result.stderr.splitlines()[-1], result.stderr[-2000:]


def test_process_worker_under_a_low_file_descriptor_limit(tmp_path):
    # the demo model has 1221 parameters: sharing them tensor by tensor needs more descriptors than 256
    result = run_script(tmp_path, """
        import numpy as np
        import streamer
        from streamer.assets import DEMO_CONFIG, DEMO_CHECKPOINT
        if __name__ == "__main__":
            m = streamer.load_model(DEMO_CONFIG, DEMO_CHECKPOINT)
            assert len(list(m.model.parameters())) > 256
            with streamer.StreamEngine.from_config(m.config, m.model, preset="balanced", realtime=True,
                                                   residual="other") as engine:
                out = engine.process(np.zeros((2, 4096), np.float32))
                assert engine.stats["error"] is None, engine.stats
            print("ok", out.shape)
    """, timeout=180, shell_prefix="ulimit -n 256;")
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


@pytest.mark.parametrize("how", [signal.SIGSTOP, signal.SIGKILL])
def test_stop_ends_a_frozen_or_killed_worker_within_two_seconds(how):
    engine = StreamEngine(ContextModel(), ["a", "b", "c"], RATE, window=4410, hop=1102, lookahead=1102,
                          realtime=True, worker="process").start()
    pid = engine.worker_pid
    assert pid and not gone(pid)
    os.kill(pid, how)
    t0 = time.monotonic()
    engine.stop()
    assert time.monotonic() - t0 < 2.5
    assert gone(pid) and not engine.running and engine.worker_pid is None


def test_a_killed_worker_is_noticed_recorded_restarted_and_audio_stays_safe():
    audio = noise(4.0, seed=3)
    hop = 2205
    engine = StreamEngine(ContextModel(), ["a", "b", "c"], RATE, window=8820, hop=hop, lookahead=hop,
                          residual="c", realtime=True, worker="process", compute_allowance=4 * hop)
    killed = {}

    def kill_once(i):
        if i == 150 and not killed:  # 1.5 s in
            killed["pid"] = engine.worker_pid
            killed["at"] = time.monotonic()
            os.kill(killed["pid"], signal.SIGKILL)
        if killed and "noticed" not in killed and engine.stats["worker_deaths"]:
            killed["noticed"] = time.monotonic() - killed["at"]

    with engine:
        got = paced(engine, audio, during=kill_once)
        stats = engine.stats
    assert "SIGKILL" in (stats["error"] or ""), stats
    assert stats["worker_deaths"] == 1 and stats["worker_restarts"] == 1, stats
    assert killed["noticed"] < hop / RATE + 0.05
    assert gone(killed["pid"])
    lat = engine.latency_samples
    # the stems sum to the delayed input all the way through (dry fallback while the worker was down)
    np.testing.assert_allclose(got.sum(axis=0)[:, lat:], audio[:, : got.shape[-1] - lat], atol=2e-6)
    # and separation came back after the restart: the last second has separated (non-dry) output
    tail = got[:2, :, -RATE:]
    assert np.abs(tail).max() > 0


def test_restarts_are_bounded_and_reported():
    audio = noise(2.0, seed=4)
    engine = StreamEngine(FailingModel(), ["a", "b", "c"], RATE, window=4410, hop=1102, lookahead=1102,
                          residual="c", realtime=True, worker="thread", max_restarts=2)
    with engine:
        got = paced(engine, audio, speed=2.0)
        time.sleep(0.2)
        stats = engine.stats
    assert "simulated model failure" in stats["error"]
    assert stats["worker_restarts"] == 2 and stats["worker_deaths"] == 3 and stats["worker_given_up"], stats
    lat = engine.latency_samples
    np.testing.assert_allclose(got.sum(axis=0)[:, lat:], audio[:, : got.shape[-1] - lat], atol=2e-6)


def test_read_only_blocks_are_accepted(tmp_path):
    engine = StreamEngine(ContextModel(), ["a", "b", "c"], RATE, window=1000, hop=250, lookahead=250)
    data = noise(0.1, seed=5)
    ro = data.copy()
    ro.setflags(write=False)
    expected = StreamEngine(ContextModel(), ["a", "b", "c"], RATE, window=1000, hop=250, lookahead=250).process(data)
    np.testing.assert_array_equal(engine.process(ro), expected)
    engine.reset()
    buf = np.frombuffer(data.tobytes(), np.float32).reshape(data.shape)
    assert not buf.flags.writeable
    np.testing.assert_array_equal(engine.process(buf), expected)
    path = tmp_path / "raw.f32"
    data.tofile(path)
    with open(path, "rb") as fh:
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        mapped = np.frombuffer(mm, np.float32).reshape(data.shape)
        engine.reset()
        np.testing.assert_array_equal(engine.process(mapped[:, :]), expected)
        out = np.zeros((3, 2, 100), np.float32)
        engine.process_into(mapped[:, :100], out)
        del mapped
        mm.close()

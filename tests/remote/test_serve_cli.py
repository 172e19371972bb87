"""``stemstream serve``: refusals before anything starts, and a real start, a client, SIGTERM and no Ray
process left behind (its own local Ray instance, under a private temporary folder)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from bridge.cli.main import main

from remote_helpers import TOKEN, free_port, status, tiny_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model"))


@pytest.mark.parametrize("extra, message", [
    (["--host", "0.0.0.0"], "error: --host 0.0.0.0 listens beyond this machine: name who may connect with --allow "
                            "CIDR (e.g. --allow 10.0.0.0/8)"),
    (["--host", "my.host"], "error: --host must be an IP address to listen on (e.g. 127.0.0.1 or 0.0.0.0), got "
                            "'my.host'"),
    (["--allow", "10.0.0.0/33"], "error: --allow: '10.0.0.0/33' does not appear to be an IPv4 or IPv6 network"),
])
def test_bad_settings_are_one_error_line_before_ray_starts(model, capsys, extra, message):
    cfg, ckpt = model
    rc = main(["serve", "--config", str(cfg), "--checkpoint", str(ckpt), "--token", TOKEN, *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err == [message]
    assert "ray" not in sys.modules or not __import__("ray").is_initialized()


def test_a_short_token_and_a_missing_model_are_refused(model, capsys, monkeypatch):
    cfg, ckpt = model
    monkeypatch.delenv("STEMSTREAM_TOKEN", raising=False)
    assert main(["serve", "--config", str(cfg), "--checkpoint", str(ckpt)]) == 1
    assert capsys.readouterr().err.strip() == "error: serve needs --token of at least 8 characters (clients must " \
                                              "present it)"
    assert main(["serve", "--token", TOKEN]) == 1
    assert "give the model as --config C --checkpoint K" in capsys.readouterr().err
    assert main(["serve", "--model", "tiny", "--token", TOKEN]) == 1
    assert capsys.readouterr().err.strip() == "error: --model 'tiny': expected NAME=CONFIG,CHECKPOINT"
    assert main(["serve", "--model", f"a={cfg},{ckpt}", "--model", f"a={cfg},{ckpt}", "--token", TOKEN]) == 1
    assert capsys.readouterr().err.strip() == "error: model names must be distinct, got a, a"


def _processes_with(marker: str, sid: int) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid=,sid=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if marker in line or line.split()[1] == str(sid)]


def test_serve_starts_answers_and_stops_on_sigterm_leaving_nothing(model):
    pytest.importorskip("ray.serve", reason="the serve extra is not installed")
    from streamer.remote.client import Connection

    cfg, ckpt = model
    port = free_port()
    ray_tmp = tempfile.mkdtemp(prefix="rs-", dir="/tmp")  # short: Ray's socket paths live under it
    env = dict(os.environ, RAY_TMPDIR=ray_tmp, PYTHONPATH=REPO)
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "serve", "--config", str(cfg), "--checkpoint",
                             str(ckpt), "--port", str(port), "--token", TOKEN, "--local-cpus", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True, cwd=REPO)
    try:
        line = proc.stdout.readline()  # blocks until the service is up (or the command ended)
        assert line.startswith(f"serving tiny at ws://127.0.0.1:{port}/stream"), (line, proc.stderr.read()
                                                                                  if proc.poll() is not None else "")
        conn = Connection(f"127.0.0.1:{port}", TOKEN)
        assert list(conn.models) == ["tiny"]
        conn.close()
        assert status(port)["version"] == 1
        assert _processes_with(ray_tmp, proc.pid)  # Ray's processes run under its folder
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    deadline = time.monotonic() + 15
    while _processes_with(ray_tmp, proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_with(ray_tmp, proc.pid) == []
    shutil.rmtree(ray_tmp, ignore_errors=True)

"""Separation as a service: the Ray Serve application against real clients (one local Ray instance and
Serve for the module, on a free port; stopped at the end)."""
from __future__ import annotations

import threading
import time
import urllib.error

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("ray.serve", reason="the serve extra is not installed (pip install 'stemstream[serve]')")
pytest.importorskip("websockets", reason="the serve extra is not installed (pip install 'stemstream[serve]')")

import streamer  # noqa: E402
from streamer.inference.separate import SeparationOptions, separate_file  # noqa: E402
from streamer.remote.client import Connection, RemoteModel, separate_file_remote  # noqa: E402
from streamer.remote.host import remote_engine  # noqa: E402
from streamer.remote.protocol import RemoteError, check_server_hello, dumps, loads  # noqa: E402

from remote_helpers import RATE, TOKEN, free_port, song, status, tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    import ray

    from bridge.serve.app import ModelSpec, ServeSpec, start, stop

    cfg, ckpt = tiny_model(tmp_path_factory.mktemp("model"))
    if ray.is_initialized():
        ray.shutdown()
    spec = ServeSpec(models=[ModelSpec("tiny", str(cfg), str(ckpt))], token=TOKEN, port=free_port(), max_batch=8,
                     batch_wait_ms=20, max_streams_per_client=6, precision="fp32", max_unread_s=2.0)
    url = start(spec, num_cpus=2)
    try:
        yield dict(url=url, port=spec.port, cfg=cfg, ckpt=ckpt, spec=spec)
    finally:
        stop()


@pytest.fixture(scope="module")
def local(service):
    return streamer.load_model(str(service["cfg"]), str(service["ckpt"]))


def test_a_file_through_the_service_equals_local_separate(service, local, tmp_path):
    wav = tmp_path / "song.wav"
    sf.write(wav, song(2.3).T, RATE, subtype="FLOAT")
    opts = SeparationOptions(progress=False)
    remote = separate_file_remote(service["url"], TOKEN, str(wav), str(tmp_path / "remote"), opts)
    here = separate_file(local.model, local.config, str(wav), str(tmp_path / "local"), opts)
    assert [p.rsplit("/", 1)[-1] for p in remote.files] == [p.rsplit("/", 1)[-1] for p in here.files]
    for a, b in zip(remote.files, here.files):
        x, _ = sf.read(a, dtype="float32")
        y, _ = sf.read(b, dtype="float32")
        assert x.shape == y.shape
        assert np.abs(x - y).max() <= 1e-5
        assert np.abs(y).max() > 0.01  # the stems are not silence


def test_four_clients_at_once_are_batched_and_get_their_own_stems(service, local):
    before = status(service["port"])["batch_sizes"]
    window = local.config.chunk_size
    rng = np.random.default_rng(1)
    inputs = [torch.from_numpy((0.1 * rng.standard_normal((3, 1, 2, window))).astype(np.float32)) for _ in range(4)]
    clients = [RemoteModel(service["url"], TOKEN) for _ in range(4)]
    results: list = [None] * 4
    go = threading.Barrier(4)

    def run(i):
        go.wait()
        results[i] = [clients[i](x) for x in inputs[i]]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for c in clients:
        c.close()
    with torch.inference_mode():
        for i in range(4):
            for x, got in zip(inputs[i], results[i]):
                assert torch.allclose(got, local.model(x), atol=1e-5)
    after = status(service["port"])
    grew = {int(k): v - before.get(k, 0) for k, v in after["batch_sizes"].items()}
    assert any(size > 1 and n > 0 for size, n in grew.items()), after["batch_sizes"]
    assert after["windows_per_second"] > 0
    assert after["queue_wait_ms"]["median"] is not None


def test_a_wrong_token_or_version_is_refused_with_one_line(service):
    from websockets.sync.client import connect

    with pytest.raises(RemoteError) as wrong:
        Connection(service["url"], "not-the-token")
    assert str(wrong.value) == "the server refused: wrong token"
    with connect(service["url"]) as ws:
        ws.send(dumps({"type": "hello", "version": 99, "token": TOKEN}))
        reply = loads(ws.recv(timeout=10))
    assert reply == {"type": "error", "message": "protocol version 99 is not the server's 1: install the same "
                                                 "stemstream version on both ends"}
    with pytest.raises(RemoteError) as old:  # and the client refuses a server of another version
        check_server_hello({"type": "hello", "version": 2, "models": {}})
    assert "\n" not in str(old.value) and "version 2" in str(old.value)
    with pytest.raises(RemoteError) as mismatch:  # a served model other than the client expects
        RemoteModel(service["url"], TOKEN, sample_rate=48000)
    assert str(mismatch.value) == "the served model 'tiny' does not match: sample_rate 44100 (expected 48000)"
    with pytest.raises(urllib.error.HTTPError) as denied:
        status(service["port"], token="nope")
    assert denied.value.code == 401


def test_streams_per_client_are_bounded(service):
    deadline = time.monotonic() + 10
    while status(service["port"])["streams"] and time.monotonic() < deadline:
        time.sleep(0.05)  # the earlier tests' connections are closing
    conns = [Connection(service["url"], TOKEN) for _ in range(service["spec"].max_streams_per_client)]
    try:
        with pytest.raises(RemoteError) as many:
            Connection(service["url"], TOKEN)
        assert str(many.value) == "the server refused: 127.0.0.1 has 6 streams open already (the server's limit)"
    finally:
        for c in conns:
            c.close()


def test_a_client_that_stops_reading_is_dropped_and_the_others_go_on(service, local):
    from streamer.remote.protocol import Kind, choose_model, pack

    before = status(service["port"])["dropped_slow_clients"]
    deaf = Connection(service["url"], TOKEN)
    info = choose_model(deaf.models, None)
    deaf.open(info, "stream")
    hops = np.zeros((2, info.hop), np.float32)

    def flood():  # 4 s of audio as fast as it goes, never reading a result
        try:
            for i in range(int(4 * RATE / info.hop)):
                deaf.ws.send(pack(Kind.HOP, 0, i, hops))
        except Exception:  # noqa: BLE001 - the server hung up: expected
            pass

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    other = RemoteModel(service["url"], TOKEN)
    x = torch.from_numpy((0.1 * np.random.default_rng(5).standard_normal((1, 2, info.window))).astype(np.float32))
    try:
        deadline = time.monotonic() + 40
        while status(service["port"])["dropped_slow_clients"] == before:
            assert time.monotonic() < deadline, "the deaf client was not dropped"
            with torch.inference_mode():
                assert torch.allclose(other(x), local.model(x), atol=1e-5)  # the others keep being served
            time.sleep(0.1)
    finally:
        other.close()
        deaf.close()
        flooder.join(10)


def _wait(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def _paced(engine, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(stems, dry) of ``audio`` fed a hop at a time, each once the previous window's region is back (the
    service paces the stream: no misses)."""
    hop = engine.hop
    outs, drys = [], []
    for i in range(audio.shape[1] // hop):
        out = np.empty((len(engine.stems), 2, hop), np.float32)
        dry = np.empty((2, hop), np.float32)
        engine.process_into(audio[:, i * hop:(i + 1) * hop], out, dry)
        _wait(lambda: engine.buffers.is_published(i), 10, f"region {i}")
        outs.append(out)
        drys.append(dry)
    return np.concatenate(outs, -1), np.concatenate(drys, -1)


def test_a_remote_engine_gives_the_local_engines_stems(service, local):
    engine = remote_engine(service["url"], TOKEN, residual="spread", sample_rate=RATE)
    s = engine.settings
    here = streamer.StreamEngine(local.model, local.config.stems, RATE, s.window, s.hop, s.lookahead, s.crossfade,
                                 residual="spread")
    audio = song(1.2, seed=3)
    extra = engine.compute_allowance
    with engine:
        got, dry = _paced(engine, audio)
        first = engine.stats
        engine.reset()                      # a new stream: the service's window state starts again too
        again, _ = _paced(engine, audio)
        stats = engine.stats
    ref = here.process(audio[:, :got.shape[-1]])
    assert first["deadline_misses"] == 0 and first["hops"] >= got.shape[-1] // s.hop - 2
    assert np.abs(got.sum(0) - dry).max() <= 1e-5           # the stems sum to the delayed input
    assert np.abs(got[..., extra:] - ref[..., :-extra]).max() <= 1e-5  # and equal the local engine's
    assert np.abs(ref).max() > 0.01
    assert stats["deadline_misses"] == 0 and np.abs(again - got).max() <= 1e-5  # after reset(): the same again
    assert stats["remote"]["connect_round_trip_ms"] > 0 and stats["remote"]["reconnects"] == 0


def _kill_ingress() -> None:
    """Kill the service's ingress replica (its process dies; Serve starts a new one)."""
    import ray

    names = [a for a in ray.util.list_named_actors(all_namespaces=True) if "#Ingress#" in a["name"]]
    assert len(names) == 1, names
    ray.kill(ray.get_actor(names[0]["name"], namespace=names[0]["namespace"]), no_restart=True)


def test_the_engine_plays_dry_while_the_server_is_down_and_recovers(service):
    engine = remote_engine(service["url"], TOKEN, residual="spread")
    block = 512
    audio = song(1.0, seed=4)
    worst = [0.0]
    stop = threading.Event()

    def stream():
        out = np.empty((len(engine.stems), 2, block), np.float32)
        dry = np.empty((2, block), np.float32)
        t0, n = time.monotonic(), 0
        while not stop.is_set():
            at = (n * block) % (audio.shape[1] - block)
            engine.process_into(audio[:, at:at + block], out, dry)
            worst[0] = max(worst[0], float(np.abs(out.sum(0) - dry).max()))
            n += 1
            time.sleep(max(0.0, t0 + n * block / RATE - time.monotonic()))  # real time

    with engine:
        feeder = threading.Thread(target=stream)
        feeder.start()
        try:
            _wait(lambda: engine.stats["hops"] > 10, 20, "windows from the service")
            misses = engine.stats["deadline_misses"]
            _kill_ingress()
            _wait(lambda: engine.stats["deadline_misses"] > misses + 5, 20, "misses while the server is down")
            _wait(lambda: engine.stats["remote"]["connects"] >= 2, 60, "a connection to the new server")
            hops = engine.stats["hops"]
            _wait(lambda: engine.stats["hops"] > hops + 10, 30, "windows from the new server")
            # the client reports its misses, and the status shows them per stream
            _wait(lambda: sum(status(service["port"])["misses"].values()) > misses, 10, "misses in the status")
            after = engine.stats
        finally:
            stop.set()
            feeder.join(10)
    assert after["remote"]["reconnects"] >= 1
    assert after["worker_given_up"] is False and after["error"] is None
    assert worst[0] <= 1e-5  # the stems summed to the delayed input throughout, service or not


def _live_helpers():
    import pathlib
    import sys

    live = str(pathlib.Path(__file__).resolve().parents[1] / "live")
    if live not in sys.path:
        sys.path.insert(0, live)
    import jack_helpers
    import live_helpers

    return jack_helpers, live_helpers


def test_live_remote_records_stems_that_sum_to_the_delayed_input(service, tmp_path):
    jack_helpers, live_helpers = _live_helpers()
    if jack_helpers.JACKD is None:
        pytest.skip("jackd is not installed (make install installs jackd2)")
    wav = tmp_path / "song.wav"
    sf.write(wav, song(3.0, seed=2).T, RATE, subtype="FLOAT")
    with jack_helpers.JackServer(log_dir=str(tmp_path)) as server:
        r = live_helpers.run_live(server, ["--remote", service["url"], "--token", TOKEN, "--input-file", str(wav),
                                           "--output", "system", "--no-ui", "--seconds", "2.5",
                                           "--record", str(tmp_path / "take")])
        refused = live_helpers.run_live(server, ["--remote", service["url"], "--token", "wrong-token-000",
                                                 "--input-file", str(wav), "--output", "system", "--no-ui"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "model: on the service at" in r.stdout
    take = live_helpers.read_take(tmp_path / "take")
    s, x = take["session"], take["input"]
    assert s["model"]["remote"] == service["url"] and s["model"]["round_trips_ms"]
    L = s["latency_samples"]
    assert L > s["engine"]["hop"] + s["engine"]["lookahead"]      # the network allowance is in the latency
    assert np.abs(x).max() > 0.1
    # late or not, the stems add up to the delayed input; nothing engaged: the bus IS the delayed input
    np.testing.assert_allclose(sum(take["stems"].values()), live_helpers.delayed(x, L), atol=2e-6)
    np.testing.assert_array_equal(take["buses"]["main"], live_helpers.delayed(x, L))
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1].startswith("error: ") and "token" in refused.stderr.lower()


def test_separate_remote_writes_the_same_files_as_local_separate(service, tmp_path, capsys):
    from bridge.cli import main

    wav = tmp_path / "song.wav"
    sf.write(wav, song(1.7, seed=3).T, RATE, subtype="FLOAT")
    assert main(["separate", str(wav), "--remote", service["url"], "--token", TOKEN, "--out", str(tmp_path / "r"),
                 "--config", str(service["cfg"]), "--no-progress"]) == 0
    assert main(["separate", str(wav), "--config", str(service["cfg"]), "--checkpoint", str(service["ckpt"]),
                 "--out", str(tmp_path / "l"), "--no-progress"]) == 0
    remote = sorted(p.relative_to(tmp_path / "r") for p in (tmp_path / "r").rglob("*.wav"))
    assert remote == sorted(p.relative_to(tmp_path / "l") for p in (tmp_path / "l").rglob("*.wav")) and remote
    for rel in remote:
        x, _ = sf.read(tmp_path / "r" / rel, dtype="float32")
        y, _ = sf.read(tmp_path / "l" / rel, dtype="float32")
        assert x.shape == y.shape and np.abs(x - y).max() <= 1e-5
    capsys.readouterr()
    assert main(["separate", str(wav), "--remote", service["url"], "--token", "wrong-token-000",
                 "--out", str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "token" in err[0].lower()
    assert main(["separate", str(wav), "--out", str(tmp_path / "n")]) == 1
    assert "--config MODEL.yaml --checkpoint MODEL.ckpt (or --remote URL" in capsys.readouterr().err

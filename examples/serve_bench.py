"""Measure the separation service on this machine: the round trip one window adds, windows per second of
one replica with and without batching, and the bytes per second a stream puts on the wire.

    .venv/bin/python examples/serve_bench.py --config C.yaml --checkpoint K.ckpt [--seconds 10] [--clients 4]

Starts its own local Ray instance and Serve on a free port, and stops them at the end.
"""
from __future__ import annotations

import argparse
import socket
import threading
import time

import numpy as np
import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def paced_round_trips(url: str, token: str, seconds: float, wire: str) -> tuple[list[float], dict]:
    """One stream fed a hop at a time, each once the previous region is back: seconds per round trip,
    and the bytes sent and received per second of audio."""
    from streamer.remote.host import remote_engine

    engine = remote_engine(url, token, residual="spread", wire=wire)
    hop, rate = engine.hop, engine.sample_rate
    audio = (0.1 * np.random.default_rng(0).standard_normal((engine.channels, int(seconds * rate)))).astype(np.float32)
    times = []
    with engine:
        out = np.empty((len(engine.stems), engine.channels, hop), np.float32)
        for i in range(audio.shape[1] // hop):
            t = time.perf_counter()
            engine.process_into(audio[:, i * hop:(i + 1) * hop], out)
            while not engine.buffers.is_published(i):
                time.sleep(0.0002)
            times.append(time.perf_counter() - t)
    size = 2 if wire == "fp16" else 4
    hops_per_s = rate / hop
    up = (16 + engine.channels * hop * size) * hops_per_s
    down = (16 + len(engine.stems) * engine.channels * hop * size) * hops_per_s
    return times[2:], {"up_bytes_per_s": up, "down_bytes_per_s": down}


def throughput(url: str, token: str, clients: int, seconds: float) -> float:
    """Windows per second with ``clients`` file clients sending one window per request as fast as they can
    (each warmed with one window first; divided by the time the clients really ran)."""
    from streamer.remote.client import RemoteModel

    models = [RemoteModel(url, token) for _ in range(clients)]
    info = models[0].info
    x = (0.1 * torch.randn(1, info.channels, info.window)).float()
    for m in models:
        m(x)   # warm
    counts = [0] * clients
    end = time.monotonic() + seconds

    def run(i):
        while time.monotonic() < end:
            models[i](x)
            counts[i] += 1

    start = time.monotonic()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    for m in models:
        m.close()
    return sum(counts) / elapsed


def main() -> None:
    from ray import serve

    from bridge.serve.app import APP_NAME, ModelSpec, ServeSpec, build_app, start, stop

    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    args = p.parse_args()
    token = "bench-token-0123"
    spec = ServeSpec(models=[ModelSpec("bench", args.config, args.checkpoint)], token=token, port=free_port(),
                     max_batch=8, batch_wait_ms=args.batch_wait_ms, precision="fp32")
    url = start(spec)
    try:
        for wire in ("fp32", "fp16"):
            rt, wire_bytes = paced_round_trips(url, token, args.seconds, wire)
            print(f"{wire}: window round trip median {1e3 * np.median(rt):.1f} ms, p99 "
                  f"{1e3 * np.percentile(rt, 99):.1f} ms ({len(rt)} windows); per stream "
                  f"{wire_bytes['up_bytes_per_s'] / 1e3:.1f} kB/s up, {wire_bytes['down_bytes_per_s'] / 1e3:.1f} kB/s down",
                  flush=True)
        batched = throughput(url, token, args.clients, args.seconds)
        print(f"max-batch 8: {batched:.1f} windows/s with {args.clients} clients", flush=True)
        spec.max_batch = 1
        serve.run(build_app(spec), name=APP_NAME, route_prefix="/", blocking=False)
        single = throughput(url, token, args.clients, args.seconds)
        print(f"max-batch 1: {single:.1f} windows/s with {args.clients} clients", flush=True)
    finally:
        stop()


if __name__ == "__main__":
    main()

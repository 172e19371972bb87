"""How many live streams one replica of the separation service holds with zero deadline misses.

    .venv/bin/python examples/serve_streams.py [--config C.yaml --checkpoint K.ckpt] [--preset balanced]
        [--hop SECONDS] [--seconds 20] [--max-streams 6] [--max-batch 8] [--cpus-per-replica 1]

Starts its own local Ray instance and Serve (one replica, ``--cpus-per-replica`` CPUs) with the model
(default: the embedded demo model), then runs 1, 2, 3, ... live streams at once from this process: each
a real-time ``remote_engine`` (as ``stemstream live --remote`` uses) fed 1024-sample blocks at real-time
pace on its own thread for ``--seconds``. It prints each count's deadline misses (windows that came
back too late, so the dry input played) and stops after the first count with misses. Run it on an
idle machine: the streams' clients share this machine with the service.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_bench import free_port  # noqa: E402

BLOCK = 1024


def run_streams(url: str, token: str, count: int, seconds: float, hop: float | None = None) -> list[dict]:
    """``count`` real-time streams at once for ``seconds`` (``hop`` in seconds, None: the service's preset);
    each one's misses and latency."""
    from streamer.remote.host import remote_engine

    lengths = {} if hop is None else {"hop": int(round(hop * 44100)), "lookahead": int(round(hop * 44100))}
    engines = [remote_engine(url, token, residual="spread", **lengths) for _ in range(count)]
    results: list[dict] = [{} for _ in range(count)]
    start = threading.Barrier(count)

    def play(i: int) -> None:
        engine = engines[i]
        rng = np.random.default_rng(i)
        audio = (0.1 * rng.standard_normal((engine.channels, int((seconds + 2) * engine.sample_rate)))).astype(np.float32)
        out = np.empty((len(engine.stems), engine.channels, BLOCK), np.float32)
        with engine:
            start.wait()
            t0 = time.monotonic()
            for k in range(audio.shape[1] // BLOCK):
                engine.process_into(audio[:, k * BLOCK:(k + 1) * BLOCK], out)
                time.sleep(max(0.0, t0 + (k + 1) * BLOCK / engine.sample_rate - time.monotonic()))
            st = engine.stats
            results[i] = {"misses": int(st["deadline_misses"]), "windows": int(st.get("windows", 0) or 0),
                          "latency_ms": float(st["latency_ms"])}

    threads = [threading.Thread(target=play, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def main() -> None:
    from bridge.serve.app import ModelSpec, ServeSpec, start, stop
    from streamer.assets import DEMO_CHECKPOINT, DEMO_CONFIG

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(DEMO_CONFIG))
    p.add_argument("--checkpoint", default=str(DEMO_CHECKPOINT))
    p.add_argument("--preset", default="balanced")
    p.add_argument("--hop", type=float, help="hop and look-ahead of the streams in seconds (default: the preset's)")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--max-streams", type=int, default=6)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--cpus-per-replica", type=float, default=1.0)
    args = p.parse_args()
    token = "bench-token-0123"
    spec = ServeSpec(models=[ModelSpec("bench", args.config, args.checkpoint)], token=token, port=free_port(),
                     preset=args.preset, max_batch=args.max_batch, precision="fp32",
                     cpus_per_replica=args.cpus_per_replica)
    url = start(spec)
    try:
        print(f"| streams | deadline misses (per stream) | latency |\n|---|---|---|", flush=True)
        for count in range(1, args.max_streams + 1):
            results = run_streams(url, token, count, args.seconds, args.hop)
            misses = [r["misses"] for r in results]
            print(f"| {count} | {sum(misses)} ({', '.join(map(str, misses))}) | {results[0]['latency_ms']:.0f} ms |",
                  flush=True)
            if sum(misses):
                break
    finally:
        stop()


if __name__ == "__main__":
    main()

"""Windows per second of one service replica with ``serve.batch`` (``--max-batch 8``) against without
(``--max-batch 1``), in interleaved rounds so that a machine whose load changes affects both alike.

    .venv/bin/python examples/serve_batching_bench.py [--config C.yaml --checkpoint K.ckpt] \
        [--rounds 5] [--seconds 5] [--clients 4] [--cpus-per-replica 1]

Default model: the demo model (``streamer/assets/demo``). One local Ray instance runs two applications
side by side, each with one CPU replica of the model (``/b``: batched, ``/s``: one window per call);
each round runs ``--clients`` file clients (one window per request, as fast as the service answers)
against one then the other, alternating which goes first. Prints each round and the min and median
of both; stops Ray at the end.
"""
from __future__ import annotations

import argparse
import logging
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_bench import free_port, throughput  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
DEMO = REPO / "streamer" / "assets" / "demo" / "demo_bs_roformer_64x2"
TOKEN = "bench-token-0123"


def batch_sizes(port: int, app: str) -> dict:
    import json
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{port}/{app}/status", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["batch_sizes"]


def main() -> None:
    import ray
    from ray import serve

    from bridge.serve.app import ModelSpec, ServeSpec, build_app

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(DEMO) + ".yaml")
    p.add_argument("--checkpoint", default=str(DEMO) + ".ckpt")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument("--cpus-per-replica", type=int, default=1)
    args = p.parse_args()
    port = free_port()
    ray.init(address="local", num_cpus=2 * args.cpus_per_replica + 1, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"log_level": "WARNING"})
        apps = {"b": args.max_batch, "s": 1}
        for prefix, max_batch in apps.items():
            spec = ServeSpec(models=[ModelSpec("bench", args.config, args.checkpoint)], token=TOKEN, port=port,
                             max_batch=max_batch, batch_wait_ms=args.batch_wait_ms, precision="fp32",
                             cpus_per_replica=args.cpus_per_replica)
            serve.run(build_app(spec), name=f"bench-{prefix}", route_prefix=f"/{prefix}", blocking=False)
        for prefix in apps:   # wait until both answer
            deadline = time.monotonic() + 300
            while True:
                try:
                    throughput(f"ws://127.0.0.1:{port}/{prefix}", TOKEN, 1, 0.1)
                    break
                except Exception:  # noqa: BLE001 - not up yet
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1.0)
        results: dict[str, list[float]] = {prefix: [] for prefix in apps}
        for r in range(args.rounds):
            order = list(apps) if r % 2 == 0 else list(apps)[::-1]
            line = []
            for prefix in order:
                wps = throughput(f"ws://127.0.0.1:{port}/{prefix}", TOKEN, args.clients, args.seconds)
                results[prefix].append(wps)
                line.append(f"max-batch {apps[prefix]}: {wps:.1f}")
            print(f"round {r + 1}: " + ", ".join(line) + " windows/s", flush=True)
        for prefix, values in results.items():
            print(f"max-batch {apps[prefix]}: min {min(values):.1f}, median {statistics.median(values):.1f} windows/s "
                  f"({args.clients} clients, {args.rounds} rounds of {args.seconds:g} s); batch sizes "
                  f"{batch_sizes(port, prefix)}", flush=True)
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()

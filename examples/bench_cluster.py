"""Throughput of `stemstream separate --ray` against plain `separate` on this machine, and what the
Ray path costs per job and per file, so a user can tell from which library size it pays off.

Whole commands are timed (start-up, model loading and writing included), each in a fresh output
folder, the options interleaved over ``--rounds`` rounds (min and median reported):

* throughput: a library of ``--files`` generated songs of ``--seconds`` s each, in audio seconds per
  wall second, for plain `separate`, and `--ray` with 1 worker (1 and 2 CPUs) and 2 workers (1 CPU each);
* overhead: 1 file and ``--small-files`` files of 1 s, plain vs `--ray --workers 1 --cpus-per-worker N`
  (the same torch threads): the fixed cost of a Ray job (start-up) and the extra cost per file.

    python examples/bench_cluster.py                      # demo model, 8 x 30 s, 2 rounds
    python examples/bench_cluster.py --files 4 --seconds 10 --rounds 1 --backend torch
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import soundfile as sf

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streamer.assets import DEMO_CHECKPOINT, DEMO_CONFIG  # noqa: E402
from streamer.lab.testsignals import generated_clip  # noqa: E402


def make_library(folder: pathlib.Path, files: int, seconds: float) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        mix, _ = generated_clip(seconds, 44100, seed=100 + i)
        sf.write(folder / f"song{i:03d}.wav", mix.T, 44100, subtype="PCM_16")
    return folder


def timed(args: list[str], out: pathlib.Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "bridge.cli", *args, "--out", str(out), "--no-progress"],
                         cwd=REPO, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if run.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{run.stderr[-3000:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=DEMO_CONFIG)
    ap.add_argument("--checkpoint", default=DEMO_CHECKPOINT)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--small-files", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--backend", default="torch", choices=["auto", "torch", "onnx"])
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray instance")
    args = ap.parse_args()

    model = ["--config", args.config, "--checkpoint", args.checkpoint, "--backend", args.backend]
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        tmp = pathlib.Path(tmp)
        lib = make_library(tmp / "lib", args.files, args.seconds)
        one = make_library(tmp / "one", 1, 1.0)
        small = make_library(tmp / "small", args.small_files, 1.0)
        ray = ["--ray", "--local-cpus", str(args.cpus)]
        options = {
            "plain separate": ["separate", str(lib), *model],
            "--ray, 1 worker x 1 CPU": ["separate", str(lib), *model, *ray, "--workers", "1"],
            f"--ray, 1 worker x {args.cpus} CPUs": ["separate", str(lib), *model, *ray, "--workers", "1",
                                                    "--cpus-per-worker", str(args.cpus)],
            f"--ray, {args.cpus} workers x 1 CPU": ["separate", str(lib), *model, *ray, "--workers", str(args.cpus)],
        }
        overhead = {
            "plain, 1 file": ["separate", str(one), *model],
            f"plain, {args.small_files} files": ["separate", str(small), *model],
            "ray, 1 file": ["separate", str(one), *model, *ray, "--workers", "1", "--cpus-per-worker", str(args.cpus)],
            f"ray, {args.small_files} files": ["separate", str(small), *model, *ray, "--workers", "1",
                                               "--cpus-per-worker", str(args.cpus)],
        }
        times: dict[str, list[float]] = {k: [] for k in [*options, *overhead]}
        for r in range(args.rounds):
            for name, cmd in [*options.items(), *overhead.items()]:
                times[name].append(timed(cmd, tmp / "out"))
                print(f"round {r + 1}: {name}: {times[name][-1]:.1f} s", file=sys.stderr)

    audio = args.files * args.seconds
    print(f"machine: {os.cpu_count()} CPUs; model {os.path.basename(args.config)}, backend {args.backend}; "
          f"{args.rounds} interleaved rounds, whole commands")
    print(f"\nthroughput, {args.files} files x {args.seconds:g} s = {audio:g} s of audio:")
    print(f"{'option':32s} {'wall min':>9s} {'median':>8s} {'audio s / wall s':>17s}")
    for name in options:
        t = times[name]
        print(f"{name:32s} {min(t):8.1f}s {statistics.median(t):7.1f}s {audio / min(t):17.2f}")
    m = {k: min(v) for k, v in times.items()}
    n = args.small_files
    fixed = m["ray, 1 file"] - m["plain, 1 file"]
    per_file = (m[f"ray, {n} files"] - m["ray, 1 file"] - (m[f"plain, {n} files"] - m["plain, 1 file"])) / (n - 1)
    print(f"\noverhead of the Ray path (1 worker with the same threads as plain, files of 1 s):")
    for name in overhead:
        print(f"  {name:24s} {m[name]:6.1f} s")
    print(f"  fixed per job: {fixed:+.1f} s (Ray start-up, the worker's model load)")
    print(f"  per file: {per_file * 1000:+.0f} ms (hashing, the object store, the manifest)")


if __name__ == "__main__":
    main()

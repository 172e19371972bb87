"""Peak memory and speed of ``stemstream separate`` on a long file (issue 28, item 2).

Makes a long input (a generated 20 s clip tiled to ``--minutes``, 16-bit FLAC, in ``--workdir``), runs
``stemstream separate`` on it with the demo model as a separate process, and prints its peak resident
memory (the largest resident set of the process, as ``/usr/bin/time -v`` reports it: with ``--ray``,
the largest of its processes, driver or Ray worker) and its time per hour of audio::

    python examples/bench_separate_memory.py --minutes 10
    python examples/bench_separate_memory.py --minutes 10 --code /tmp/before   # another checkout
    python examples/bench_separate_memory.py --minutes 60 --ray --local-cpus 2

``--code DIR`` runs the checkout in DIR (its ``bridge`` and ``streamer`` packages, through PYTHONPATH)
with this environment's Python: compare a version before a change with the one after.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import soundfile as sf

REPO = pathlib.Path(__file__).resolve().parents[1]
DEMO = REPO / "streamer" / "assets" / "demo"


def make_input(path: pathlib.Path, minutes: float, rate: int = 44100) -> pathlib.Path:
    """A ``minutes`` long 16-bit stereo FLAC: a generated 20 s clip (a mix of synthesised stems), tiled."""
    if path.exists() and sf.info(str(path)).duration >= minutes * 60 - 1:
        return path
    from streamer.lab.testsignals import generated_clip

    clip, _ = generated_clip(20.0, rate, seed=1)
    clip = (clip / max(1.0, float(np.abs(clip).max()) * 1.1)).T
    total = int(round(minutes * 60 * rate))
    partial = path.with_name(path.name + ".partial")  # renamed when complete: a killed run leaves no short input
    with sf.SoundFile(str(partial), "w", rate, 2, subtype="PCM_16", format="FLAC") as fh:
        left = total
        while left > 0:
            n = min(left, clip.shape[0])
            fh.write(clip[:n])
            left -= n
    os.replace(partial, path)
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="length of the input (default 10)")
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "stemstream-bench-separate"),
                   help="where the input and the stems go (the stems are removed afterwards)")
    p.add_argument("--code", help="run the stemstream checkout in this folder instead of this one")
    p.add_argument("--ray", action="store_true", help="separate --ray (a local Ray instance)")
    p.add_argument("--local-cpus", type=int, help="with --ray: CPUs of the local instance")
    p.add_argument("--backend", default="torch", help="--backend of separate (default torch)")
    args, extra = p.parse_known_args()

    work = pathlib.Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    song = make_input(work / f"song{args.minutes:g}m.flac", args.minutes)
    out = work / "stems"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "bridge.cli", "separate", str(song), "--config",
           str(DEMO / "demo_bs_roformer_64x2.yaml"), "--checkpoint", str(DEMO / "demo_bs_roformer_64x2.ckpt"),
           "--out", str(out), "--no-progress", "--backend", args.backend, *extra]
    if args.ray:
        cmd += ["--ray"] + (["--local-cpus", str(args.local_cpus)] if args.local_cpus else [])
    env = dict(os.environ)
    code = pathlib.Path(args.code).resolve() if args.code else REPO
    env["PYTHONPATH"] = str(code) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t0 = time.perf_counter()
    run = subprocess.run(cmd, cwd=str(code), env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB, the largest child
    shutil.rmtree(out, ignore_errors=True)
    if run.returncode != 0:
        print(run.stdout[-2000:], run.stderr[-2000:], sep="\n", file=sys.stderr)
        return run.returncode
    hours = args.minutes / 60
    print(f"{args.minutes:g} min of audio{' (--ray)' if args.ray else ''} with {code}: peak resident "
          f"{peak_kib / 1024:.0f} MiB; {wall:.0f} s ({wall / 60 / hours:.1f} min per hour of audio, "
          f"{wall / (args.minutes * 60):.2f}x real time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

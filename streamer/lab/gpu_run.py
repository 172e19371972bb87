"""The GPU check as one command for an offline GPU machine, inside a fixed time.

    python3 -m streamer.lab.gpu_run OUT              # on the GPU machine, from the repository root
    python3 -m streamer.lab.gpu_run OUT --dry-run    # the same steps on the CPU with tiny models

Steps, each with its whole output kept in ``OUT`` (and echoed):

1. the wheels in ``.whl/`` (``make device-wheels``), if present, installed into a temporary folder
   put on ``PYTHONPATH`` (no network, nothing installed system-wide): ``OUT/install.txt``;
2. the preflight (``streamer.lab.gpu_preflight``): ``OUT/preflight.json`` first, in seconds;
3. the CUDA tests (``tests/stream/test_gpu.py``, skipped without CUDA): ``OUT/pytest.txt``;
4. the check (``streamer.lab.gpu_check``) with the time that is left as its budget: ``OUT/log.txt``,
   ``OUT/gpu_check.json`` and ``OUT/gpu_check.md``, rewritten as each part finishes.

``--seconds`` (default 420) bounds the whole command: each step gets what is left, a step that runs
over is ended with its whole process group, and ``OUT/run.json`` says what each step did. So the
command ends in about 7 minutes and a second try still fits a 15-minute slot. Only the standard
library is imported here.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GPU_TESTS = ["tests/stream/test_gpu.py", "tests/models/test_precision_safety.py"]
MARGIN = 20.0          # seconds kept back from the check's budget for its last section to finish


class Run:
    def __init__(self, out: str, seconds: float):
        self.out = out
        self.deadline = time.monotonic() + seconds
        self.steps: list[dict] = []
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.env["PYTHONPATH"] = os.pathsep.join([REPO] + [p for p in self.env.get("PYTHONPATH", "").split(os.pathsep) if p])

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def step(self, name: str, cmd: list[str], log: str, limit: float) -> int:
        """Run ``cmd`` in its own session, its output to ``OUT/log`` and to stdout, ended (the whole
        process group) after ``limit`` seconds."""
        limit = max(1.0, min(limit, self.left()))
        path = os.path.join(self.out, log)
        print(f"== {name} (at most {limit:.0f} s): {' '.join(cmd)}", flush=True)
        start = time.monotonic()
        with open(path, "w") as fh:
            proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, text=True, bufsize=1)
            copier = threading.Thread(target=_copy, args=(proc.stdout, fh), daemon=True)
            copier.start()
            timed_out = False
            try:
                rc = proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                timed_out = True
                rc = _end_group(proc)
            copier.join(timeout=5)
            if timed_out:
                fh.write(f"\n== {name}: ended after {limit:.0f} s (time limit)\n")
        seconds = round(time.monotonic() - start, 1)
        self.steps.append({"step": name, "rc": rc, "seconds": seconds, "timed_out": timed_out, "log": log})
        print(f"== {name}: exit {rc} in {seconds} s{' (TIME LIMIT)' if timed_out else ''}", flush=True)
        self.save()
        return rc

    def save(self) -> None:
        with open(os.path.join(self.out, "run.json"), "w") as fh:
            json.dump({"steps": self.steps, "seconds_left": round(self.left(), 1)}, fh, indent=1)


def _copy(stream, fh) -> None:
    for line in stream:
        fh.write(line)
        fh.flush()
        sys.stdout.write(line)
        sys.stdout.flush()


def _end_group(proc: subprocess.Popen) -> int:
    """SIGTERM to the process group, SIGKILL after 5 s (compile workers and other children included)."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            return proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m streamer.lab.gpu_run", description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder for every log and report (created)")
    parser.add_argument("--dry-run", action="store_true", help="tiny models on the CPU, short settings")
    parser.add_argument("--seconds", type=float, default=420.0, help="time for the whole command (default 420)")
    parser.add_argument("--pytest-seconds", type=float, default=90.0, help="time for the CUDA tests (default 90)")
    parser.add_argument("--wheels", default=os.path.join(REPO, ".whl"),
                        help="folder of wheels to install first, if it exists (default: .whl)")
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    run = Run(out, args.seconds)
    py = sys.executable
    wheels = sorted(glob.glob(os.path.join(args.wheels, "*.whl")))
    if wheels:
        site = tempfile.mkdtemp(prefix="stemstream-site-")
        run.step("install", [py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                             "--no-cache-dir", "--disable-pip-version-check", "--upgrade", "--target", site, *wheels],
                 "install.txt", 60)
        run.env["PYTHONPATH"] = os.pathsep.join([site, run.env["PYTHONPATH"]])
    run.step("preflight", [py, "-m", "streamer.lab.gpu_preflight", out], "preflight.txt", 60)
    run.step("pytest", [py, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *GPU_TESTS], "pytest.txt",
             args.pytest_seconds)
    budget = run.left() - MARGIN
    check = [py, "-m", "streamer.lab.gpu_check", out, "--budget", f"{max(budget, 10.0):.0f}"]
    rc = run.step("gpu_check", check + (["--dry-run"] if args.dry_run else []), "log.txt", run.left())
    print(f"== done: reports in {out} (run.json, preflight.json, pytest.txt, log.txt, gpu_check.json, gpu_check.md)",
          flush=True)
    failed = [s["step"] for s in run.steps if s["rc"] != 0]
    return 1 if failed or rc != 0 else 0


if __name__ == "__main__":
    sys.exit(main())

"""Resident memory and forward time of the Roformers, and what the packed per-band weights cost.

For each config: the parameters' bytes, the bytes of all distinct storages reachable from the model
(parameters, buffers and any packed weights: exact, no allocator noise), and the process's resident
memory (VmRSS) grown by building the model and by one forward pass of a 1 s window in eval and
inference mode, each measured after the forward's activations were freed (gc, then glibc's
malloc_trim so that freed heap pages are returned); "peak" is VmHWM (construction and the forward's
activations included). Each (config, code) pair is measured in a fresh process, after a tiny model
of the same kind was built and run once (what a first forward loads once per process is not the
model's). With ``--old`` the same is done for another version of ``streamer/models/roformer.py`` (a
file, or a git revision such as ``HEAD``), and the forward time of both is compared in one process,
interleaved, on identical weights: wall and CPU time (min, median), the cost of one
``packed_weights()`` call, and whether the outputs are bit-identical.

    python examples/bench_model_memory.py --old HEAD
    python examples/bench_model_memory.py --old HEAD --skip-memory --threads 1 --repeats 30 \
        --configs streamer/assets/demo/demo_bs_roformer_64x2.yaml
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = [
    "streamer/assets/demo/demo_bs_roformer_64x2.yaml",
    "tests/data/msst-configs/config_vocals_bs_roformer.yaml",
    "tests/data/msst-configs/config_vocals_mel_band_roformer.yaml",
    "tests/data/msst-configs/KimberleyJensen/config_vocals_mel_band_roformer_kj.yaml",
]
MiB = 1024 * 1024


def _proc_status(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def _settle() -> int:
    """VmRSS after a garbage collection and returning freed heap pages to the system."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return _proc_status("VmRSS")


def _load_roformer(old: str | None):
    """streamer.models.roformer, or the version of it in the file ``old``."""
    if old is None:
        from streamer.models import roformer
        return roformer
    spec = importlib.util.spec_from_file_location("streamer.models._roformer_baseline", old)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _storage_bytes(model) -> int:
    """Bytes of the distinct storages reachable from the model: parameters, buffers, and the packed
    weights whichever way a version keeps them (``_packed`` cache, ``_arena``)."""
    import torch

    tensors = list(model.parameters()) + list(model.buffers())

    def collect(obj):
        if isinstance(obj, torch.Tensor):
            tensors.append(obj)
        elif isinstance(obj, dict):
            for v in obj.values():
                collect(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                collect(v)

    collect(getattr(model, "_packed", None))
    collect(getattr(model, "_arena", None))
    seen = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage._cdata] = storage.nbytes()
    return sum(seen.values())


def _build(roformer, config_path: str):
    import streamer

    config = streamer.load_config(config_path)
    model = roformer.model_class(config.model_type)(**config.model).eval()
    return model, config


def _warm_up(roformer, config_path: str) -> None:
    """Build and run a tiny model of the same kind first, so that what the first forward of any model
    loads or allocates once per process (libraries, kernels, thread pools, lazy imports) is not
    counted as the measured model's memory."""
    import torch

    import streamer

    config = streamer.load_config(config_path)
    tiny = dict(config.model, dim=16, depth=1, heads=2, dim_head=8)
    model = roformer.model_class(config.model_type)(**tiny).eval()
    with torch.inference_mode():
        model(torch.randn(1, model.audio_channels, config.sample_rate) * 0.1)
    del model


def child(config_path: str, old: str | None, threads: int) -> dict:
    """Memory of one (config, code) pair, in this (fresh) process."""
    import torch

    torch.set_num_threads(threads)
    roformer = _load_roformer(old)
    _warm_up(roformer, config_path)
    base = _settle()
    model, config = _build(roformer, config_path)
    built = _settle()
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    buffer_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
    storages_built = _storage_bytes(model)
    audio = torch.randn(1, model.audio_channels, config.sample_rate) * 0.1
    with torch.inference_mode():
        out = model(audio)
    del out
    after = _settle()
    return {
        "params": param_bytes, "buffers": buffer_bytes, "storages_built": storages_built,
        "storages_after": _storage_bytes(model), "rss_build": built - base, "rss_after": after - base,
        "peak": _proc_status("VmHWM") - base,
    }


def measure(config_path: str, old: str | None, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", config_path, "--threads", str(threads)]
    if old is not None:
        cmd += ["--old-file", old]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {config_path} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def timing(config_path: str, old: str, repeats: int, threads: int) -> dict:
    """Forward time of the current and the old code on identical weights, interleaved."""
    import torch

    torch.set_num_threads(threads)
    new_mod, old_mod = _load_roformer(None), _load_roformer(old)
    new, config = _build(new_mod, config_path)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    ref, _ = _build(old_mod, config_path)
    ref.load_state_dict(new.state_dict())
    audio = torch.randn(1, new.audio_channels, config.sample_rate, generator=g) * 0.1
    times = {"new": [], "old": []}
    cpu = {"new": [], "old": []}  # CPU time of the process: less disturbed by other processes than wall time
    with torch.inference_mode():
        a, b = new(audio), ref(audio)  # warm-up (packs the old code's cache)
        diff = float((a - b).abs().max())
        for i in range(repeats):
            for name, model in ((("new", new), ("old", ref)) if i % 2 == 0 else (("old", ref), ("new", new))):
                c0, t0 = time.process_time(), time.perf_counter()
                model(audio)
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
        calls = {}
        for name, model in (("new", new), ("old", ref)):
            n = 200
            t0 = time.perf_counter()
            for _ in range(n):
                model.packed_weights()
            calls[name] = (time.perf_counter() - t0) / n
    return {"times": times, "cpu": cpu, "diff": diff, "identical": diff == 0.0, "packed_call": calls}


def _resolve_old(old: str | None) -> tuple[str | None, str | None]:
    """(file, temporary file to delete) for --old: a path, or a git revision of roformer.py."""
    if old is None:
        return None, None
    if os.path.isfile(old):
        return os.path.abspath(old), None
    text = subprocess.run(["git", "-C", str(REPO), "show", f"{old}:streamer/models/roformer.py"],
                          capture_output=True, text=True, check=True).stdout
    fd, path = tempfile.mkstemp(prefix="roformer_old_", suffix=".py")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path, path


def _mib(n: float) -> str:
    return f"{n / MiB:8.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=CONFIGS, help="MSST YAML configs (paths from the repo root)")
    parser.add_argument("--old", help="another roformer.py to compare with: a file or a git revision (e.g. HEAD)")
    parser.add_argument("--repeats", type=int, default=10, help="timed forwards per model (interleaved)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--skip-memory", action="store_true", help="only the timing comparison (needs --old)")
    parser.add_argument("--skip-timing", action="store_true", help="only the memory table")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--old-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.old_file, args.threads)))
        return 0

    old, temporary = _resolve_old(args.old)
    try:
        print(f"threads {args.threads}; memory in MiB, measured in a fresh process per row after gc + malloc_trim")
        print(f"{'config':44} {'code':4} {'params':>8} {'storages':>8} {'RSS build':>9} {'RSS +fwd':>8} "
              f"{'peak':>8}  {'RSS/params':>10}")
        for cfg in ([] if args.skip_memory else args.configs):
            for code, path in ([("new", None)] + ([("old", old)] if old else [])):
                m = measure(cfg, path, args.threads)
                print(f"{pathlib.Path(cfg).stem[:44]:44} {code:4} {_mib(m['params'])} {_mib(m['storages_after'])} "
                      f"{_mib(m['rss_build']):>9} {_mib(m['rss_after'])} {_mib(m['peak'])}  "
                      f"{m['rss_after'] / m['params']:10.3f}", flush=True)
        if old and not args.skip_timing:
            print(f"\nforward of a 1 s window, eval + inference_mode, {args.repeats} interleaved runs each: wall "
                  f"time (ms) and the process's CPU time (ms, summed over threads)")
            print(f"{'config':44} {'new min':>8} {'new med':>8} {'old min':>8} {'old med':>8} {'new/old':>7} "
                  f"{'cpu new':>8} {'cpu old':>8} {'new/old':>7} {'packed_weights() new/old':>25}  outputs")
            for cfg in args.configs:
                r = timing(cfg, old, args.repeats, args.threads)
                new_t, old_t = r["times"]["new"], r["times"]["old"]
                new_c, old_c = statistics.median(r["cpu"]["new"]), statistics.median(r["cpu"]["old"])
                calls = r["packed_call"]
                same = "bit-identical" if r["identical"] else f"max diff {r['diff']:.2g}"
                print(f"{pathlib.Path(cfg).stem[:44]:44} {min(new_t) * 1e3:8.1f} {statistics.median(new_t) * 1e3:8.1f} "
                      f"{min(old_t) * 1e3:8.1f} {statistics.median(old_t) * 1e3:8.1f} "
                      f"{statistics.median(new_t) / statistics.median(old_t):7.3f} "
                      f"{new_c * 1e3:8.1f} {old_c * 1e3:8.1f} {new_c / old_c:7.3f} "
                      f"{calls['new'] * 1e6:10.1f} us / {calls['old'] * 1e6:8.1f} us  {same}", flush=True)
    finally:
        if temporary:
            os.unlink(temporary)
    return 0


if __name__ == "__main__":
    sys.exit(main())

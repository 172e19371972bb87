"""The GPU check's preflight: a few seconds that say whether the machine can run the check at all.

    python3 -m streamer.lab.gpu_preflight OUT

Written first, to ``OUT/preflight.json``, before anything heavy is imported: the versions of Python
and of every package the check imports (an import that fails is recorded with its error, so a
missing or broken numba cannot end the run with nothing to show), the GPU's name and memory, the
size of ``/dev/shm`` (the hop search's worker process gets the model's weights through shared
memory), free disk, CPUs and memory. Only the standard library is imported at module level.
"""
from __future__ import annotations

import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time

# what the check imports (top-level package name -> distribution name for the version)
PACKAGES = {
    "torch": "torch", "numpy": "numpy", "numba": "numba", "einops": "einops",
    "rotary_embedding_torch": "rotary-embedding-torch", "yaml": "pyyaml", "soundfile": "soundfile",
    "soxr": "soxr", "pedalboard": "pedalboard", "mido": "mido", "safetensors": "safetensors", "tqdm": "tqdm",
    "pytest": "pytest",
}
SHM = "/dev/shm"
MIB = 2 ** 20


def _version(module, dist: str) -> str:
    version = getattr(module, "__version__", None)
    if version:
        return str(version)
    try:
        from importlib.metadata import version as dist_version

        return dist_version(dist)
    except Exception:  # noqa: BLE001 - a version is information, never a failure
        return "unknown"


def packages() -> dict:
    """Each package's version, or ``"error: ..."`` when it does not import."""
    found = {}
    for name, dist in PACKAGES.items():
        try:
            module = importlib.import_module(name)
            found[name] = _version(module, dist)
        except BaseException as exc:  # noqa: BLE001 - SystemExit from a broken import too; Ctrl-C still ends it
            if isinstance(exc, KeyboardInterrupt):
                raise
            found[name] = f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    return found


def shared_memory(path: str = SHM) -> dict:
    """Total and free bytes of the shared-memory file system (absent: both None)."""
    try:
        usage = shutil.disk_usage(path)
    except OSError as exc:
        return {"path": path, "total_mib": None, "free_mib": None, "error": str(exc)}
    return {"path": path, "total_mib": round(usage.total / MIB), "free_mib": round(usage.free / MIB)}


def shared_memory_enough(need_bytes: int, path: str = SHM, margin: int = 256 * MIB) -> tuple[bool, str]:
    """Whether a worker process can take ``need_bytes`` of weights through shared memory, and why not."""
    shm = shared_memory(path)
    free = shm["free_mib"]
    if free is None:
        return False, f"{path} is missing ({shm.get('error')})"
    need_mib = (need_bytes + margin) / MIB
    if free < need_mib:
        return False, f"{path} has {free} MiB free, the model's weights need about {need_mib:.0f} MiB"
    return True, f"{path} has {free} MiB free"


def gpu() -> dict:
    """The CUDA devices as torch sees them, and nvidia-smi's line (both optional)."""
    info: dict = {}
    try:
        import torch

        info["cuda_available"] = bool(torch.cuda.is_available())
        info["torch_cuda"] = torch.version.cuda
        if info["cuda_available"]:
            info["devices"] = []
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                info["devices"].append({"name": props.name, "memory_gib": round(props.total_memory / 2 ** 30, 1),
                                        "capability": f"{props.major}.{props.minor}",
                                        "multiprocessors": props.multi_processor_count})
            info["bf16_supported"] = bool(torch.cuda.is_bf16_supported())
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, KeyboardInterrupt):
            raise
        info["error"] = f"{type(exc).__name__}: {exc}"[:300]
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        info["nvidia_smi"] = f"unavailable ({type(exc).__name__})"
    return info


def memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
    except (ValueError, OSError, AttributeError):
        return None


# what the check imports from the project (the engine pulls in the numba kernels)
CHECK_MODULES = ("streamer.assets", "streamer.inference.demix", "streamer.inference.graphs",
                 "streamer.inference.loader", "streamer.inference.precision", "streamer.inference.residual",
                 "streamer.stream.engine", "streamer.stream.settings", "streamer.lab.benchmarks",
                 "streamer.lab.testsignals")


def check_import() -> str:
    """Whether what the check imports imports here: "ok" or the first error."""
    try:
        for name in CHECK_MODULES:
            importlib.import_module(name)
        return "ok"
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, KeyboardInterrupt):
            raise
        return f"error: {type(exc).__name__}: {exc}"[:500]


def preflight(out: str) -> dict:
    """Collect everything, write ``out/preflight.json`` (twice: the cheap facts first, then the imports)
    and return it; ``problems`` lists what would stop or change the check."""
    start = time.monotonic()
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "preflight.json")
    facts: dict = {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   "python": platform.python_version(), "executable": sys.executable, "host": platform.node(),
                   "cpu_count": os.cpu_count(), "memory_gib": memory_gib(), "shm": shared_memory(),
                   "disk_free_gib": round(shutil.disk_usage(out).free / 2 ** 30, 1)}
    _write(path, facts)
    facts["packages"] = packages()
    _write(path, facts)
    facts["gpu"] = gpu()
    facts["check_imports"] = check_import()
    problems = [f"{name} does not import ({v[len('error: '):]})" for name, v in facts["packages"].items()
                if v.startswith("error") and name != "pytest"]
    if facts["check_imports"] != "ok":
        problems.append(f"the check's modules do not import ({facts['check_imports'][len('error: '):]})")
    if not facts["gpu"].get("cuda_available"):
        problems.append("no CUDA device (only the --dry-run rehearsal can run)")
    shm = facts["shm"]
    if shm["free_mib"] is None or shm["free_mib"] < 1024:
        problems.append(f"{SHM} is small ({shm['free_mib']} MiB free): the hop search runs its worker as a thread "
                        "when the weights do not fit")
    facts["problems"] = problems
    facts["seconds"] = round(time.monotonic() - start, 1)
    _write(path, facts)
    return facts


def _write(path: str, data: dict) -> None:
    tmp = path + ".partial"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1, default=str)
    os.replace(tmp, path)


def summary(facts: dict) -> str:
    devices = facts.get("gpu", {}).get("devices") or [{"name": "no CUDA device"}]
    pk = facts.get("packages", {})
    lines = [f"preflight: python {facts['python']}, torch {pk.get('torch')} (CUDA {facts.get('gpu', {}).get('torch_cuda')}), "
             f"numpy {pk.get('numpy')}, numba {pk.get('numba')}, einops {pk.get('einops')}, "
             f"rotary-embedding-torch {pk.get('rotary_embedding_torch')}",
             "preflight: " + ", ".join(f"{d['name']} ({d.get('memory_gib', '-')} GiB)" for d in devices)
             + f"; /dev/shm {facts['shm'].get('free_mib')} MiB free; {facts['cpu_count']} CPUs, {facts['memory_gib']} GiB"]
    lines += [f"preflight: PROBLEM: {p}" for p in facts.get("problems", [])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python3 -m streamer.lab.gpu_preflight OUT", file=sys.stderr)
        return 2
    facts = preflight(args[0])
    print(summary(facts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

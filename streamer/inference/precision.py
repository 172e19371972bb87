"""The device and precision rules, once for offline separation, the streaming engine, the separator
and the CLI.

* device: ``"auto"`` is CUDA when present, else CPU; asking for CUDA (or a CUDA index, or MPS) this
  machine lacks is an error, and so is any other device type.
* precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"int8"`` (``"auto"``/``None``: bf16 on CUDA when the model
  was trained with mixed precision, else fp32). Half precisions are autocast: on CUDA both; on the
  CPU bf16 only where the CPU computes bf16 natively (AVX512-BF16 or AMX; checked at run time by
  :func:`cpu_has_native_bf16`: elsewhere it would be emulated, slower than fp32), fp16 never. What
  cannot run falls back to fp32 with a warning. On the CPU ``auto`` stays fp32: bf16 is opt-in
  (``BENCHMARKS.md`` has its speed and its SDR against fp32 on this project's machine). The STFT, the
  iSTFT and the masks stay fp32 whatever the precision (the model disables autocast around them).
  ``int8`` is the ONNX Runtime core with its matrix products quantised to int8 (dynamic quantisation,
  CPU only, opt-in: ``streamer.inference.onnx_core``); torch cannot run it (``make_runner`` refuses
  int8 with the torch backend).
"""
from __future__ import annotations

import contextlib
import logging
import math

import torch

from ..errors import SettingsError

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
# significant bits of each autocast precision (the implicit leading bit included)
_SIGNIFICAND_BITS = {"fp32": 24, "bf16": 8, "fp16": 11}


def agreement_db(precision: str) -> float:
    """How close a whole model's output in ``precision`` must be to its fp32 output: the error energy
    relative to the output's (dB, as ``streamer.inference.graphs.error_db`` measures it) may be at
    most that of a relative error of 8 units of the precision's rounding, 20 log10(8 * 2**-bits):
    bf16 -30.1 dB, fp16 -48.2 dB (a random 4-stem test model on the CPU measures -44 and -62)."""
    if precision not in _SIGNIFICAND_BITS:
        raise SettingsError(f"no agreement limit for precision {precision!r}")
    return 20.0 * math.log10(8.0 * 2.0 ** -_SIGNIFICAND_BITS[precision])
_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; otherwise cpu, cuda, cuda:N or mps, each only where this
    machine has it (a device type torch knows but this project does not run on, e.g. meta, is refused)."""
    if name is None or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise SettingsError(f"device {name!r} is not a device torch knows (cpu, cuda, cuda:1, ...)") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingsError(f"device {name}: no CUDA device is available (use cpu)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise SettingsError(f"device {name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise SettingsError(f"device {name}: no MPS device is available (use cpu)")
    elif device.type != "cpu":
        raise SettingsError(f"device {name!r} is not supported: use auto, cpu, cuda, cuda:N or mps")
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX tiles), as torch's CPU kernels see it."""
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(cpu, probe, None)
        if check is not None:
            try:
                if check():
                    return True
            except Exception:  # noqa: BLE001 - a private probe that fails means "not known to have it"
                continue
    return False


def resolve_precision(precision: str | None, device: str | torch.device, use_amp: bool = True) -> str:
    """The precision a model runs in on ``device`` (see the module docstring)."""
    device = torch.device(device)
    if precision is None or precision == "auto":
        return "bf16" if device.type == "cuda" and use_amp else "fp32"
    name = _ALIASES.get(precision, precision)
    if name not in PRECISIONS:
        raise SettingsError(f"precision must be fp32, bf16, fp16 or int8, got {precision!r}")
    if name == "int8":
        if device.type == "cpu":
            return "int8"
        log.warning("precision int8 runs in the ONNX Runtime core on the CPU only; running fp32 on %s", device)
        return "fp32"
    if device.type == "cpu" and name == "bf16":
        if cpu_has_native_bf16():
            return "bf16"
        log.warning("this CPU has no native bf16 (AVX512-BF16 or AMX): bf16 would be emulated and slower; "
                    "running fp32")
        return "fp32"
    if device.type != "cuda" and name != "fp32":
        log.warning("precision %s does not run on %s; running fp32", name, device)
        return "fp32"
    return name


def autocast_context(device: str | torch.device, precision: str, cache_enabled: bool = True):
    """Autocast for a resolved half precision (bf16/fp16 on CUDA, bf16 on a CPU that has it); a no-op for
    fp32 (CUDA graph capture needs ``cache_enabled=False``)."""
    device = torch.device(device)
    if precision in ("fp32", "int8") or device.type not in ("cuda", "cpu"):
        return contextlib.nullcontext()
    if device.type == "cpu":
        if precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=cache_enabled)
    return torch.autocast("cuda", dtype=_AUTOCAST_DTYPES[precision], cache_enabled=cache_enabled)

"""The device and precision rules, once for offline separation, the streaming engine, the separator
and the CLI.

* device: ``"auto"`` is CUDA when present, else CPU; asking for CUDA (or a CUDA index, or MPS) this
  machine lacks is an error, and so is any other device type.
* precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (``"auto"``/``None``: bf16 on CUDA when the model
  was trained with mixed precision, else fp32). Half precisions are CUDA autocast; elsewhere the
  model runs fp32 (a warning says so when half precision was asked for explicitly).
"""
from __future__ import annotations

import contextlib
import logging

import torch

from ..errors import SettingsError

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
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


def resolve_precision(precision: str | None, device: str | torch.device, use_amp: bool = True) -> str:
    """The precision a model runs in on ``device`` (see the module docstring)."""
    device = torch.device(device)
    if precision is None or precision == "auto":
        return "bf16" if device.type == "cuda" and use_amp else "fp32"
    name = _ALIASES.get(precision, precision)
    if name not in PRECISIONS:
        raise SettingsError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
    if device.type != "cuda" and name != "fp32":
        log.warning("precision %s only applies on CUDA; running fp32 on %s", name, device)
        return "fp32"
    return name


def autocast_context(device: str | torch.device, precision: str, cache_enabled: bool = True):
    """Autocast for a resolved bf16/fp16 precision on CUDA; a no-op for fp32 (CUDA graph capture
    needs ``cache_enabled=False``)."""
    device = torch.device(device)
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=_AUTOCAST_DTYPES[precision], cache_enabled=cache_enabled)

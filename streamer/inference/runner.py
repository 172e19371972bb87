"""Where and how a model runs: the device and precision rules, its output normalised, and the
per-window :class:`WindowRunner` the stream worker calls.

One rule each, used by offline separation, the streaming engine, the separator and the CLI:

* device: ``"auto"`` is CUDA when present, else CPU; asking for CUDA without it is an error.
* precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (``"auto"``/``None``: bf16 on CUDA when the model
  was trained with mixed precision, else fp32). Half precisions are CUDA autocast; elsewhere the
  model runs fp32 (a warning says so when half precision was asked for explicitly).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SettingsError

log = logging.getLogger(__name__)

Model = Callable[[torch.Tensor], torch.Tensor]

PRECISIONS = ("fp32", "bf16", "fp16")
_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; CUDA requested without a CUDA device is refused."""
    if name is None or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise SettingsError(f"device {name!r} is not a device torch knows (cpu, cuda, cuda:1, ...)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError(f"device {name}: no CUDA device is available (use cpu)")
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


def autocast_context(device: str | torch.device, precision: str):
    """Autocast for a resolved bf16/fp16 precision on CUDA; a no-op for fp32."""
    device = torch.device(device)
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=_AUTOCAST_DTYPES[precision])


def model_device(model: Model) -> torch.device:
    """The device of a module's parameters (CPU for anything else)."""
    if isinstance(model, torch.nn.Module):
        p = next(model.parameters(), None)
        if p is not None:
            return p.device
    return torch.device("cpu")


def model_stems_output(out: torch.Tensor, length: int) -> torch.Tensor:
    """A model's output as float (batch, stems, channels, length): older single-output models give
    (batch, channels, L); Mel models without match_input_audio_length give hop * floor(L / hop)
    samples, padded here with zeros as MSST does."""
    if out.ndim == 3:
        out = out.unsqueeze(1)
    out = out.float()
    if out.shape[-1] < length:
        out = F.pad(out, (0, length - out.shape[-1]))
    return out[..., :length]


class WindowRunner:
    """Runs the model on one window: (channels, window) numpy -> (stems, channels, window) numpy.

    On CUDA the window goes through a pinned host buffer with an asynchronous copy and the model
    runs under bf16/fp16 autocast (the model keeps its STFT and masks in fp32).
    """

    def __init__(self, model: Model, channels: int, window: int, device: torch.device, precision: str):
        self.model = model
        self.device = torch.device(device)
        self.precision = precision
        self.window = window
        pin = self.device.type == "cuda"
        self.host = torch.zeros((1, channels, window), dtype=torch.float32, pin_memory=pin)
        self.host_np = self.host.numpy()

    def __call__(self, window: np.ndarray) -> np.ndarray:
        self.host_np[0] = window
        with torch.inference_mode(), autocast_context(self.device, self.precision):
            x = self.host.to(self.device, non_blocking=True)
            out = self.model(x)
        return model_stems_output(out, self.window)[0].cpu().numpy()

    def warm_up(self, stems: int) -> None:
        """Two windows of silence before going live; the first also checks the model's output shape."""
        channels = self.host.shape[1]
        out = self(np.zeros((channels, self.window), np.float32))
        if out.shape != (stems, channels, self.window):
            raise SettingsError(f"the model returned stems of shape {out.shape} for one window, expected "
                                f"{(stems, channels, self.window)} ({stems} stems, {channels} channels)")
        self(np.zeros((channels, self.window), np.float32))


def make_runner(model: Model, channels: int, window: int, device: torch.device, precision: str) -> WindowRunner:
    """The runner for ``model`` (an nn.Module is moved to ``device`` and put in eval mode; any other
    callable is used as it is)."""
    if isinstance(model, torch.nn.Module):
        model = model.to(device).eval()
    return WindowRunner(model, channels, window, device, precision)

"""Running a model on windows: its output normalised to (batch, stems, channels, length), and the
per-window :class:`WindowRunner` the stream worker calls (device and precision rules are in
``streamer.inference.precision``)."""
from __future__ import annotations

import logging
import math
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SettingsError
from .graphs import capture, use_cuda_graph
from .precision import autocast_context, resolve_precision

Model = Callable[[torch.Tensor], torch.Tensor]


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


def run_batch(model: Model, windows: np.ndarray, device, precision: str) -> np.ndarray:
    """Many streams' windows, (batch, channels, n) float32, through the model in one forward call on
    ``device`` in ``precision``: (batch, stems, channels, n) float32. What a served model's replica runs
    for each batch it forms (``bridge.serve``), and what the GPU check times for its serving numbers."""
    x = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)).to(device)
    with torch.inference_mode(), autocast_context(device, precision):
        out = model_stems_output(model(x), x.shape[-1])
    return out.cpu().numpy()


class WindowRunner:
    """Runs the model on one window: (channels, window) numpy -> (stems, channels, window) numpy.

    On CUDA the window goes through a pinned host buffer with an asynchronous copy and the model
    runs under bf16/fp16 autocast (the model keeps its STFT and masks in fp32), replayed as a CUDA
    graph when ``cuda_graph`` says so (see ``streamer.inference.graphs``; ``graphed`` tells whether
    the capture worked). On the CPU, bf16 autocast where the CPU has it, or the model core in ONNX
    Runtime (``core``: an ``OnnxCore``; ``backend`` says which runs).
    """

    def __init__(self, model: Model, channels: int, window: int, device: torch.device, precision: str,
                 cuda_graph: bool | None = None, core=None):
        self.model = model
        self.device = torch.device(device)
        self.precision = precision
        self.window = window
        self.channels = channels
        self.core = core
        self.backend = "onnx" if core is not None else "torch"
        pin = self.device.type == "cuda"
        self.host = torch.zeros((1, channels, window), dtype=torch.float32, pin_memory=pin)
        self.host_np = self.host.numpy()
        self.graph = None
        if core is None and use_cuda_graph(cuda_graph, self.device):
            self.graph = capture(model, (1, channels, window), self.device, precision)

    @property
    def graphed(self) -> bool:
        return self.graph is not None

    def describe(self) -> str:
        """Which backend and precision run, e.g. ``onnx (ONNX Runtime, fp32, 1 thread)``."""
        if self.core is not None:
            n = self.core.threads
            return f"onnx (ONNX Runtime, {self.core.precision}, {n} thread{'s' if n != 1 else ''})"
        return f"torch ({self.precision} on {self.device}{', CUDA graph' if self.graphed else ''})"

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, channels, window) float on the device -> (B, stems, channels, window) float32."""
        with torch.inference_mode():
            if self.core is not None:
                out = self.core.forward(batch)
            elif self.graph is not None and batch.shape[0] == 1:
                out = self.graph(batch)
            else:
                with autocast_context(self.device, self.precision):
                    out = self.model(batch)
        return model_stems_output(out, batch.shape[-1])

    def __call__(self, window: np.ndarray) -> np.ndarray:
        self.host_np[0] = window
        with torch.inference_mode():
            x = self.host.to(self.device, non_blocking=True)
            out = self.forward(x)
        return out[0].cpu().numpy()

    def warm_up(self, stems: int) -> None:
        """Two windows of silence before going live; the first also checks the model's output shape."""
        channels = self.host.shape[1]
        out = self(np.zeros((channels, self.window), np.float32))
        if out.shape != (stems, channels, self.window):
            raise SettingsError(f"the model returned stems of shape {out.shape} for one window, expected "
                                f"{(stems, channels, self.window)} ({stems} stems, {channels} channels)")
        self(np.zeros((channels, self.window), np.float32))


BACKENDS = ("auto", "torch", "onnx")
AUTO_TRIALS = 3   # windows each backend is timed on when "auto" decides


def _onnx_core(model, channels: int, window: int, threads: int | None, log, precision: str = "fp32"):
    """An OnnxCore, or None with one warning line saying why torch runs instead."""
    from .onnx_core import OnnxCore, OnnxUnavailable

    try:
        return OnnxCore(model, channels, window, threads=threads, log=log, precision=precision)
    except OnnxUnavailable as exc:
        logging.getLogger(__name__).warning("ONNX Runtime backend unavailable, running torch: %s", exc)
        return None


def _fastest(runners: list[WindowRunner]) -> WindowRunner:
    """The runner with the smallest time on AUTO_TRIALS windows, timed interleaved."""
    x = np.random.default_rng(0).standard_normal((runners[0].channels, runners[0].window)).astype(np.float32) * 0.1
    best = {id(r): math.inf for r in runners}
    for r in runners:
        r(x)  # warm-up
    for _ in range(AUTO_TRIALS):
        for r in runners:
            t = time.perf_counter()
            r(x)
            best[id(r)] = min(best[id(r)], time.perf_counter() - t)
    return min(runners, key=lambda r: best[id(r)])


def make_runner(model: Model, window: int, device=None, precision: str | None = "auto", backend: str = "auto",
                channels: int | None = None, cuda_graph: bool | None = None, threads: int | None = None,
                log=None) -> WindowRunner:
    """The one way to run a model on windows of ``window`` samples: a callable taking (channels, window)
    float32 numpy and returning (stems, channels, window) float32 numpy (``forward`` takes batches).

    An nn.Module is moved to ``device`` (default: where it is) and put in eval mode; any other callable
    runs as it is, with torch. ``precision``: fp32, bf16, fp16 or auto (``streamer.inference.precision``).
    ``backend``: ``"torch"``; ``"onnx"``, the model core in ONNX Runtime (CPU, fp32 or int8; exported once and
    cached, see ``streamer.inference.onnx_core``; if it cannot run, one warning and torch); ``"auto"``:
    on the CPU in fp32 with ONNX Runtime installed, whichever of the two is faster on AUTO_TRIALS
    windows of this model on this machine, else torch. ``runner.backend`` and ``runner.describe()``
    say what runs. ``threads``: ONNX Runtime's threads (default: torch's).
    """
    if backend not in BACKENDS:
        raise SettingsError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    device = torch.device(device) if device is not None else model_device(model)
    if isinstance(model, torch.nn.Module):
        model = model.to(device).eval()
    if channels is None:
        channels = int(getattr(model, "audio_channels", 2))
    precision = resolve_precision(precision, device)
    int8 = precision == "int8"
    if int8 and backend == "torch":
        raise SettingsError("precision int8 runs in the ONNX Runtime core only: use --backend onnx (or auto)")
    torch_precision = "fp32" if int8 else precision
    torch_runner = lambda: WindowRunner(model, channels, window, device, torch_precision, cuda_graph)  # noqa: E731
    onnx_possible = (isinstance(model, torch.nn.Module) and hasattr(model, "core") and device.type == "cpu"
                     and precision in ("fp32", "int8"))
    if backend == "torch" or (backend == "auto" and not onnx_possible and not int8):
        return torch_runner()
    if not onnx_possible:
        logging.getLogger(__name__).warning(
            "the ONNX Runtime backend runs fp32 or int8 on the CPU; running torch (%s on %s)", torch_precision, device)
        return torch_runner()
    if backend == "auto" and not int8:
        from .onnx_core import ort_available

        if not ort_available():
            return torch_runner()
    core = _onnx_core(model, channels, window, threads, log, precision=precision)
    if core is None:
        return torch_runner()
    onnx_runner = WindowRunner(model, channels, window, device, precision, core=core)
    if backend == "onnx" or int8:  # int8 was asked for: not raced against fp32 torch
        return onnx_runner
    return _fastest([torch_runner(), onnx_runner])

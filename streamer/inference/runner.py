"""Running a model on windows: its output normalised to (batch, stems, channels, length), and the
per-window :class:`WindowRunner` the stream worker calls (device and precision rules are in
``streamer.inference.precision``)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SettingsError
from .graphs import capture, use_cuda_graph
from .precision import autocast_context

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


class WindowRunner:
    """Runs the model on one window: (channels, window) numpy -> (stems, channels, window) numpy.

    On CUDA the window goes through a pinned host buffer with an asynchronous copy and the model
    runs under bf16/fp16 autocast (the model keeps its STFT and masks in fp32), replayed as a CUDA
    graph when ``cuda_graph`` says so (see ``streamer.inference.graphs``; ``graphed`` tells whether
    the capture worked).
    """

    def __init__(self, model: Model, channels: int, window: int, device: torch.device, precision: str,
                 cuda_graph: bool | None = None):
        self.model = model
        self.device = torch.device(device)
        self.precision = precision
        self.window = window
        pin = self.device.type == "cuda"
        self.host = torch.zeros((1, channels, window), dtype=torch.float32, pin_memory=pin)
        self.host_np = self.host.numpy()
        self.graph = None
        if use_cuda_graph(cuda_graph, self.device):
            self.graph = capture(model, (1, channels, window), self.device, precision)

    @property
    def graphed(self) -> bool:
        return self.graph is not None

    def __call__(self, window: np.ndarray) -> np.ndarray:
        self.host_np[0] = window
        with torch.inference_mode():
            x = self.host.to(self.device, non_blocking=True)
            if self.graph is not None:
                out = self.graph(x)
            else:
                with autocast_context(self.device, self.precision):
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


def make_runner(model: Model, channels: int, window: int, device: torch.device, precision: str,
                cuda_graph: bool | None = None) -> WindowRunner:
    """The runner for ``model`` (an nn.Module is moved to ``device`` and put in eval mode; any other
    callable is used as it is)."""
    if isinstance(model, torch.nn.Module):
        model = model.to(device).eval()
    return WindowRunner(model, channels, window, device, precision, cuda_graph)

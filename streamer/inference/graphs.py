"""CUDA graphs for fixed-shape windows: the model's core captured once, replayed for every window.

A Roformer window is thousands of small kernels; launching them from Python costs more than
running them on a fast GPU. For a fixed input shape (the engine's window, ``demix``'s chunk batch)
the core (everything between the STFT and the iSTFT, ``model.core``) is captured into a CUDA graph
and replayed: one launch per window. The STFT and the iSTFT run eagerly around it (``torch.istft``
checks its window on the host, which a graph cannot capture).

Whether graphs are used is a setting (``cuda_graph``): ``True``/``False``, or ``None`` for the
default, :data:`DEFAULT_CUDA_GRAPH`, which stays off until the GPU check (``stemstream bench-gpu``)
has shown on real hardware that graphs are exact and faster. A capture that fails, or a replay
that does not match eager execution, falls back to eager with a logged reason, never an error.
"""
from __future__ import annotations

import logging
import math

import torch

from .precision import autocast_context

log = logging.getLogger(__name__)

# Off until measured on a GPU (issue 12): the GPU check reports exactness and speed-up per model.
DEFAULT_CUDA_GRAPH = False

# how close a replay must be to eager execution of the same window (relative error energy, dB)
MATCH_DB = {"fp32": -90.0, "bf16": -40.0, "fp16": -50.0}


def use_cuda_graph(setting: bool | None, device: torch.device) -> bool:
    """Whether a model on ``device`` runs as a CUDA graph under ``setting`` (None: the default)."""
    wanted = DEFAULT_CUDA_GRAPH if setting is None else bool(setting)
    return wanted and torch.device(device).type == "cuda"


def has_core(model) -> bool:
    return all(callable(getattr(model, name, None)) for name in ("analysis", "core", "synthesis"))


def error_db(estimate: torch.Tensor, reference: torch.Tensor) -> float:
    """10 log10(energy of the difference / energy of the reference); -inf when equal."""
    ref = reference.double()
    err = float(((estimate.double() - ref) ** 2).sum())
    energy = float((ref ** 2).sum())
    if err == 0.0:
        return float("-inf")
    return 10.0 * math.log10(err / max(energy, 1e-30))


class GraphedModel:
    """Callable like the model for one input shape ``(batch, channels, samples)`` on CUDA: the STFT
    eagerly, the captured core replayed, the iSTFT eagerly. Build it with :func:`capture`."""

    def __init__(self, model, shape: tuple[int, int, int], precision: str, graph, static_in, static_out):
        self.model = model
        self.shape = shape
        self.precision = precision
        self._graph = graph
        self._static_in = static_in
        self._static_out = static_out

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        if tuple(audio.shape) != self.shape:
            raise ValueError(f"this graph takes input of shape {self.shape}, got {tuple(audio.shape)}")
        with autocast_context(audio.device, self.precision):
            self._static_in.copy_(self.model.analysis(audio))
        self._graph.replay()
        return self.model.synthesis(self._static_out, self.shape[-1])


def capture(model, shape: tuple[int, int, int], device: torch.device, precision: str,
            check: bool = True) -> GraphedModel | None:
    """A :class:`GraphedModel` for ``model`` and this input shape, or None (with the reason logged)
    when the device is not CUDA, the model has no core, capture fails or the replay does not match."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    if not has_core(model):
        log.info("no CUDA graph: the model has no analysis/core/synthesis split")
        return None
    try:
        with torch.inference_mode():
            probe = torch.randn(shape, device=device) * 0.1
            with autocast_context(device, precision):
                spec = model.analysis(probe)
            static_in = spec.clone()
            # warm-up on a side stream (cuBLAS/cuFFT handles, packed weights, rotary caches), then capture
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(3):
                    with autocast_context(device, precision, cache_enabled=False):
                        model.core(static_in)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                with autocast_context(device, precision, cache_enabled=False):
                    static_out = model.core(static_in)
            graphed = GraphedModel(model, tuple(shape), precision, graph, static_in, static_out)
            if check:
                with autocast_context(device, precision):
                    eager = model(probe)
                replay = graphed(probe)
                db = error_db(replay.float(), eager.float())
                if db > MATCH_DB.get(precision, -40.0):
                    log.warning("CUDA graph replay differs from eager execution (%.1f dB); running eagerly", db)
                    return None
            return graphed
    except Exception as exc:  # noqa: BLE001 - any capture failure means: run eagerly
        log.warning("CUDA graph capture failed (%s: %s); running eagerly", type(exc).__name__, exc)
        return None


"""Offline chunked separation, as MSST's ``demix`` does it (reference spec, section 6).

One difference by design: every chunk gets the window MSST gives it at ``batch_size=1`` (fade-in
dropped on the first chunk, fade-out dropped on the last), so the result does not depend on how
many chunks we run per forward call.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import AudioError, SettingsError
from .chunks import chunk_plan, chunk_weights
from .graphs import capture, use_cuda_graph
from .precision import autocast_context, resolve_precision
from .runner import Model, make_runner, model_device, model_stems_output


def demix(
    model: Model,
    mix: np.ndarray,
    chunk_size: int,
    num_overlap: int,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    precision: str | None = None,
    progress: bool = False,
    cuda_graph: bool | None = None,
    backend: str = "torch",
) -> np.ndarray:
    """Separate ``mix`` (channels, samples) into (stems, channels, samples) float32.

    ``device`` defaults to the model's; ``precision`` (see ``streamer.inference.runner``) defaults to
    fp32, as MSST on CPU. ``cuda_graph``: replay full batches as a CUDA graph (see
    ``streamer.inference.graphs``; None: the default there). ``backend``: torch, onnx or auto, as
    ``streamer.make_runner`` runs a chunk (the ONNX Runtime core: CPU, fp32).

    Border reflect padding, chunk padding (reflect when more than half a chunk is real audio,
    zeros otherwise), weighted overlap-add divided by the summed weights, and 0 where no chunk
    contributes (0/0), all as the reference does.
    """
    mix = np.asarray(mix)
    if mix.ndim != 2:
        raise AudioError(f"mix must have shape (channels, samples), got {mix.shape}")
    if not np.issubdtype(mix.dtype, np.floating):
        raise AudioError(f"mix must be floating point audio, got {mix.dtype}")
    if not np.isfinite(mix).all():
        raise AudioError("mix contains NaN or infinite samples")
    if batch_size < 1:
        raise SettingsError(f"batch_size must be >= 1, got {batch_size}")
    length = mix.shape[1]
    if length == 0:
        raise AudioError("mix is empty")
    device = torch.device(device) if device is not None else model_device(model)
    precision = resolve_precision(precision or "fp32", device)

    border, padded, starts = chunk_plan(length, chunk_size, num_overlap)
    step = chunk_size // num_overlap
    x = torch.from_numpy(np.ascontiguousarray(mix, dtype=np.float32))
    if border:
        x = F.pad(x.unsqueeze(0), (border, border), mode="reflect").squeeze(0)
    weights = chunk_weights(chunk_size, starts, step, padded)

    runner = None
    if backend != "torch":
        runner = make_runner(model, chunk_size, device, precision, backend=backend, channels=mix.shape[0])
        if runner.backend != "onnx":
            runner = None
        else:
            # the ONNX core runs the windows of a batch side by side, one per thread: give it a batch
            # per thread at least (the result does not depend on the batch size)
            batch_size = max(batch_size, runner.core.threads)
    graph = None
    if runner is None and use_cuda_graph(cuda_graph, device):
        graph = capture(model, (batch_size, mix.shape[0], chunk_size), device, precision)

    result: torch.Tensor | None = None
    counter = torch.zeros(mix.shape[0], padded)
    bar = tqdm(total=len(starts), desc="separating", unit="chunk", disable=not progress, leave=False)
    with torch.inference_mode(), autocast_context(device, precision):
        for b0 in range(0, len(starts), batch_size):
            batch_starts = starts[b0 : b0 + batch_size]
            chunks, sizes = [], []
            for s in batch_starts:
                part = x[:, s : s + chunk_size]
                n = part.shape[1]
                if n < chunk_size:
                    mode = "reflect" if n > chunk_size // 2 else "constant"
                    part = F.pad(part.unsqueeze(0), (0, chunk_size - n), mode=mode).squeeze(0)
                chunks.append(part)
                sizes.append(n)
            batch = torch.stack(chunks).to(device)
            if runner is not None:
                out = runner.forward(batch).cpu()
            else:
                run = graph if graph is not None and batch.shape[0] == batch_size else model
                out = model_stems_output(run(batch), chunk_size).cpu()
            if result is None:
                result = torch.zeros(out.shape[1], mix.shape[0], padded)
            for j, (s, n) in enumerate(zip(batch_starts, sizes)):
                w = weights[b0 + j][:n]
                result[..., s : s + n] += out[j, ..., :n] * w
                counter[:, s : s + n] += w
            bar.update(len(batch_starts))
    bar.close()
    est = result / counter
    est = torch.nan_to_num(est, nan=0.0)
    if border:
        est = est[..., border : padded - border]
    return est.numpy().astype(np.float32, copy=False)


def demix_tta(model: Model, mix: np.ndarray, chunk_size: int, num_overlap: int, **kwargs) -> np.ndarray:
    """Test-time augmentation: average of the plain, channel-swapped and polarity-inverted passes."""
    plain = demix(model, mix, chunk_size, num_overlap, **kwargs)
    swapped = demix(model, mix[::-1].copy(), chunk_size, num_overlap, **kwargs)[:, ::-1]
    inverted = demix(model, -mix, chunk_size, num_overlap, **kwargs)
    return ((plain + swapped - inverted) / 3.0).astype(np.float32)

"""Offline chunked separation, as MSST's ``demix`` does it (reference spec, section 6).

One difference by design: every chunk gets the window MSST gives it at ``batch_size=1`` (fade-in
dropped on the first chunk, fade-out dropped on the last), so the result does not depend on how
many chunks we run per forward call.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

Model = Callable[[torch.Tensor], torch.Tensor]


def msst_window(chunk_size: int) -> torch.Tensor:
    """1 in the middle, linear fades of chunk_size // 10 at both ends (end points included)."""
    fade = chunk_size // 10
    window = torch.ones(chunk_size)
    if fade > 0:
        window[:fade] = torch.linspace(0, 1, fade)
        window[-fade:] = torch.linspace(1, 0, fade)
    return window


def chunk_plan(length: int, chunk_size: int, num_overlap: int) -> tuple[int, int, list[int]]:
    """(border, padded length, chunk starts) for an input of ``length`` samples."""
    step = chunk_size // num_overlap
    if step < 1:
        raise ValueError(f"num_overlap {num_overlap} is larger than chunk_size {chunk_size}")
    border = chunk_size - step
    if not (length > 2 * border and border > 0):
        border = 0  # short input (or no overlap): no border padding
    padded = length + 2 * border
    return border, padded, list(range(0, padded, step))


def chunk_weights(chunk_size: int, starts: list[int], step: int, padded: int) -> list[torch.Tensor]:
    """The window each chunk is weighted with (first: no fade-in, last: no fade-out)."""
    base = msst_window(chunk_size)
    fade = chunk_size // 10
    out = []
    for s in starts:
        w = base
        if s == 0:
            w = base.clone()
            if fade:
                w[:fade] = 1
        elif s + step >= padded:
            w = base.clone()
            if fade:
                w[-fade:] = 1
        out.append(w)
    return out


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


def _model_dtype_device(model: Model) -> tuple[torch.device, torch.dtype]:
    if isinstance(model, torch.nn.Module):
        p = next(model.parameters(), None)
        if p is not None:
            return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def autocast_context(device: torch.device, precision: str | None):
    """Autocast for bf16/fp16 on CUDA; a no-op elsewhere or for fp32."""
    if precision in (None, "fp32", "float32") or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if precision not in dtype:
        raise ValueError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
    return torch.autocast("cuda", dtype=dtype[precision])


def demix(
    model: Model,
    mix: np.ndarray,
    chunk_size: int,
    num_overlap: int,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    precision: str | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Separate ``mix`` (channels, samples) into (stems, channels, samples) float32.

    Border reflect padding, chunk padding (reflect when more than half a chunk is real audio,
    zeros otherwise), weighted overlap-add divided by the summed weights, and 0 where no chunk
    contributes (0/0), all as the reference does.
    """
    mix = np.asarray(mix)
    if mix.ndim != 2:
        raise ValueError(f"mix must have shape (channels, samples), got {mix.shape}")
    if not np.issubdtype(mix.dtype, np.floating):
        raise ValueError(f"mix must be floating point audio, got {mix.dtype}")
    if not np.isfinite(mix).all():
        raise ValueError("mix contains NaN or infinite samples")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    length = mix.shape[1]
    if length == 0:
        raise ValueError("mix is empty")
    model_device, _ = _model_dtype_device(model)
    device = torch.device(device) if device is not None else model_device

    step = chunk_size // num_overlap
    border, padded, starts = chunk_plan(length, chunk_size, num_overlap)
    x = torch.from_numpy(np.ascontiguousarray(mix, dtype=np.float32))
    if border:
        x = F.pad(x.unsqueeze(0), (border, border), mode="reflect").squeeze(0)
    weights = chunk_weights(chunk_size, starts, step, padded)

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
            out = model_stems_output(model(torch.stack(chunks).to(device)), chunk_size).cpu()
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

"""Offline chunked separation, as MSST's ``demix`` does it (reference spec, section 6).

One difference by design: every chunk gets the window MSST gives it at ``batch_size=1`` (fade-in
dropped on the first chunk, fade-out dropped on the last), so the result does not depend on how
many chunks we run per forward call.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import AudioError, SettingsError
from .chunks import chunk_plan, chunk_weights
from .graphs import capture, use_cuda_graph
from .precision import autocast_context, resolve_precision
from .runner import Model, make_runner, model_device, model_stems_output


@dataclass(frozen=True)
class ChunkPlan:
    """Where the chunks of an input of ``length`` samples go: the input is reflect-padded by ``border``
    at both ends to ``padded`` samples and chunk ``i`` reads and writes ``starts[i]`` to ``starts[i] +
    chunk_size`` of it (the last ones run past the end and are padded there)."""

    length: int
    chunk_size: int
    num_overlap: int
    border: int
    padded: int
    starts: tuple[int, ...]

    @property
    def step(self) -> int:
        return self.chunk_size // self.num_overlap

    def span(self, first: int, last: int) -> tuple[int, int]:
        """The padded samples chunks ``first`` to ``last - 1`` read and write: [start, end)."""
        return self.starts[first], min(self.starts[last - 1] + self.chunk_size, self.padded)

    def ranges(self, max_chunks: int) -> list[tuple[int, int]]:
        """The chunks cut into consecutive ranges of at most ``max_chunks``, as even as possible."""
        n = len(self.starts)
        parts = max(1, -(-n // max(1, int(max_chunks))))
        bounds = [round(i * n / parts) for i in range(parts + 1)]
        return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def plan_chunks(length: int, chunk_size: int, num_overlap: int) -> ChunkPlan:
    border, padded, starts = chunk_plan(length, chunk_size, num_overlap)
    return ChunkPlan(length, chunk_size, num_overlap, border, padded, tuple(starts))


class RunnerCache:
    """``make_runner`` results for one model, made on first use per (chunk size, channels): a model that
    separates many files or ranges pays the ONNX export or session, and ``auto``'s timing, once.
    ``get`` returns None for the torch backend (``demix_range`` then runs the model directly)."""

    def __init__(self, model: Model, device: str | torch.device | None = None, precision: str | None = None,
                 backend: str = "torch"):
        self.model = model
        self.device = device
        self.precision = precision
        self.backend = backend
        self._runners: dict[tuple[int, int], object] = {}

    def get(self, chunk_size: int, channels: int):
        if self.backend == "torch":
            return None
        key = (int(chunk_size), int(channels))
        if key not in self._runners:
            self._runners[key] = make_runner(self.model, chunk_size, self.device, self.precision,
                                             backend=self.backend, channels=channels)
        return self._runners[key]


def check_mix(mix: np.ndarray) -> np.ndarray:
    """``mix`` as an array, or AudioError saying what is wrong with it."""
    mix = np.asarray(mix)
    if mix.ndim != 2:
        raise AudioError(f"mix must have shape (channels, samples), got {mix.shape}")
    if not np.issubdtype(mix.dtype, np.floating):
        raise AudioError(f"mix must be floating point audio, got {mix.dtype}")
    if not np.isfinite(mix).all():
        raise AudioError("mix contains NaN or infinite samples")
    if mix.shape[1] == 0:
        raise AudioError("mix is empty")
    return mix


def pad_for_chunks(mix: np.ndarray, plan: ChunkPlan) -> torch.Tensor:
    """The (channels, padded) float32 signal the chunks are cut from."""
    x = torch.from_numpy(np.ascontiguousarray(mix, dtype=np.float32))
    if plan.border:
        x = F.pad(x.unsqueeze(0), (plan.border, plan.border), mode="reflect").squeeze(0)
    return x


def demix_range(
    model: Model,
    span_audio: torch.Tensor,
    plan: ChunkPlan,
    first: int,
    last: int,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    precision: str | None = None,
    progress: bool = False,
    cuda_graph: bool | None = None,
    backend: str = "torch",
    runner=None,
    graph=None,
    into: "Accumulator | None" = None,
    records: list | None = None,
    record_before: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunks ``first`` to ``last - 1`` of ``plan``: the weighted sum of their stems and the sum of their
    weights over their span, ``(stems, channels, n)`` and ``(channels, n)`` for the ``n`` samples of
    ``plan.span(first, last)``. ``span_audio`` is that span of the padded signal (see
    :func:`pad_for_chunks`). Ranges that together cover every chunk, added at their span's start, give
    :func:`demix`'s sums exactly (the overlap-add is a sum of independent chunks); :func:`finish_chunks`
    does that and the division. Arguments as :func:`demix`; ``runner``: a ``make_runner`` result for
    this chunk size to reuse (a worker separating many ranges makes it once), instead of ``backend``;
    ``graph``: a :func:`~streamer.inference.graphs.capture` result for ``(batch_size, channels,
    chunk_size)`` to replay for full batches instead of capturing one (made once for many calls);
    ``into``: an :class:`Accumulator` to add each chunk's weighted stems and weights to (in chunk order,
    as one call over all chunks adds them: the sums stay bit for bit :func:`demix`'s), instead of new
    zeros over the span; its sums are returned. ``records``: a list to append ``(start, weighted stems,
    weights)`` to for each chunk that starts before padded sample ``record_before``, cut there (what
    :class:`RangeMerger` needs where earlier ranges' chunks overlap this range's).
    """
    if batch_size < 1:
        raise SettingsError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= first < last <= len(plan.starts):
        raise SettingsError(f"chunk range {first}-{last} outside the plan's {len(plan.starts)} chunks")
    span_start, span_end = plan.span(first, last)
    if span_audio.shape[-1] != span_end - span_start:
        raise SettingsError(f"chunks {first}-{last} span {span_end - span_start} samples, got {span_audio.shape[-1]}")
    device = torch.device(device) if device is not None else model_device(model)
    precision = resolve_precision(precision or "fp32", device)
    if precision == "int8" and runner is None and backend == "torch":
        raise SettingsError("precision int8 runs in the ONNX Runtime core only: use backend onnx (or auto)")
    chunk_size = plan.chunk_size
    channels = span_audio.shape[0]
    starts = list(plan.starts[first:last])
    weights = chunk_weights(chunk_size, starts, plan.step, plan.padded)
    x = span_audio

    if runner is None and backend != "torch":
        runner = make_runner(model, chunk_size, device, precision, backend=backend, channels=channels)
    if runner is not None:
        if runner.backend != "onnx":
            runner = None
        else:
            # the ONNX core runs the windows of a batch side by side, one per thread: give it a batch
            # per thread at least (the result does not depend on the batch size)
            batch_size = max(batch_size, runner.core.threads)
    if graph is not None and (runner is not None or graph.shape != (batch_size, channels, chunk_size)):
        raise SettingsError(f"the CUDA graph takes batches of shape {graph.shape}, not "
                            f"{(batch_size, channels, chunk_size)} of the torch backend")
    if graph is None and runner is None and use_cuda_graph(cuda_graph, device):
        graph = capture(model, (batch_size, channels, chunk_size), device, precision)

    if into is None:
        result: torch.Tensor | None = None
        counter = torch.zeros(channels, span_end - span_start)
        origin = span_start
    else:
        result, counter, origin = into.result, into.counter, into.origin
        if span_start < origin or span_end > origin + counter.shape[-1]:
            raise SettingsError(f"chunks {first}-{last} span {span_start}-{span_end}, outside the sums' "
                                f"{origin}-{origin + counter.shape[-1]}")
    bar = tqdm(total=len(starts), desc="separating", unit="chunk", disable=not progress, leave=False)
    with torch.inference_mode(), autocast_context(device, precision):
        for b0 in range(0, len(starts), batch_size):
            batch_starts = [s - span_start for s in starts[b0 : b0 + batch_size]]
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
                result = torch.zeros(out.shape[1], channels, counter.shape[-1])
            for j, (s, n) in enumerate(zip(batch_starts, sizes)):
                w = weights[b0 + j][:n]
                o = s + span_start - origin
                weighted = out[j, ..., :n] * w
                result[..., o : o + n] += weighted
                counter[:, o : o + n] += w
                if records is not None and s + span_start < record_before:
                    m = min(n, record_before - s - span_start)
                    records.append((s + span_start, weighted[..., :m].clone(), w[:m].clone()))
            bar.update(len(batch_starts))
    bar.close()
    if into is not None:
        into.result = result
    return result, counter


@dataclass
class Accumulator:
    """Running overlap-add sums over the padded samples ``origin`` to ``origin + counter.shape[-1]``:
    the weighted stems (stems, channels, n; None until the first chunk) and the summed weights
    (channels, n). :func:`demix_range` adds chunks into it (``into=``); :func:`demix_pieces` keeps
    one over the chunks of a piece and the overlap the next piece still adds to."""

    origin: int
    counter: torch.Tensor
    result: torch.Tensor | None = None

    @property
    def end(self) -> int:
        return self.origin + self.counter.shape[-1]

    @classmethod
    def over(cls, start: int, end: int, channels: int, carry: "Accumulator | None" = None) -> "Accumulator":
        """Sums over [start, end), zero but where ``carry`` (which starts at or before ``start``) has
        sums already: those are carried over as they are."""
        acc = cls(start, torch.zeros(channels, end - start))
        if carry is not None and carry.result is not None:
            acc.result = torch.zeros(carry.result.shape[0], channels, end - start)
            n = min(carry.end, end) - start
            if n > 0:
                at = start - carry.origin
                acc.counter[:, :n] = carry.counter[:, at : at + n]
                acc.result[..., :n] = carry.result[..., at : at + n]
        return acc

    def estimate(self, plan: ChunkPlan, start: int, end: int) -> tuple[int, np.ndarray] | None:
        """The finished estimate of padded samples [start, end) (no later chunk may add to them), as
        :func:`finish_chunks` makes it: (first input sample, (stems, channels, n) float32), without the
        border padding; None if [start, end) lies in the border."""
        lo, hi = start, end
        if plan.border:
            lo, hi = max(lo, plan.border), min(hi, plan.padded - plan.border)
        if hi <= lo:
            return None
        at = lo - self.origin
        est = self.result[..., at : at + hi - lo] / self.counter[:, at : at + hi - lo]
        est = torch.nan_to_num(est, nan=0.0)
        return lo - plan.border, est.numpy().astype(np.float32, copy=False)


class RangeMerger:
    """The estimate of consecutive chunk ranges run apart (on cluster workers), merged in order a range at
    a time into finished pieces, bit for bit :func:`demix`'s (and :func:`demix_tta`'s with three passes)
    whatever the ranges: where a range's span overlaps the earlier ranges' (its first ``num_overlap - 1``
    chunks at most), its chunks' weighted stems are added one by one after the earlier ones', as one pass
    over every chunk adds them; beyond, its sums are taken as they are. Memory: one range and the
    overlap, not the file.

    Each range's part, per pass: ``(weighted stems, weights, records)`` of :func:`demix_range` with
    ``records`` kept before ``record_before=range_head_end(plan, first)``."""

    def __init__(self, plan: ChunkPlan, channels: int, passes: int = 1):
        self.plan = plan
        self.channels = channels
        self.passes = passes
        self.sums: list[Accumulator | None] = [None] * passes
        self.done = 0
        self.next_chunk = 0

    def add(self, first: int, last: int, parts) -> tuple[int, np.ndarray] | None:
        """Merge the range of chunks ``first`` to ``last - 1`` (the one after the last merged) and return the
        estimate now finished, (first input sample, (stems, channels, n) float32), or None (all border)."""
        if first != self.next_chunk or len(parts) != self.passes:
            raise SettingsError(f"range {first}-{last} merged out of order (expected chunk {self.next_chunk})")
        plan = self.plan
        start, end = plan.span(first, last)
        head_end = range_head_end(plan, first)
        for k, (numerator, weights, records) in enumerate(parts):
            numerator, weights = _tensor(numerator), _tensor(weights)
            acc = Accumulator.over(self.done, end, self.channels, self.sums[k])
            if acc.result is None:
                acc.result = torch.zeros(numerator.shape[0], self.channels, end - self.done)
            for s, weighted, w in records:  # in chunk order, after the earlier ranges' chunks
                at, m = s - acc.origin, w.shape[-1]
                acc.result[..., at : at + m] += _tensor(weighted)
                acc.counter[:, at : at + m] += _tensor(w)
            cut, at = head_end - start, head_end - acc.origin
            acc.result[..., at : at + end - head_end] += numerator[..., cut:]
            acc.counter[:, at : at + end - head_end] += weights[:, cut:]
            self.sums[k] = acc
        finished = plan.starts[last] if last < len(plan.starts) else plan.padded
        ests = [acc.estimate(plan, self.done, finished) for acc in self.sums]
        self.done, self.next_chunk = finished, last
        if ests[0] is None:
            return None
        if self.passes == 1:
            return ests[0]
        return ests[0][0], combine_tta(ests[0][1], ests[1][1][:, ::-1], ests[2][1])


def _tensor(a) -> torch.Tensor:
    """A tensor sharing ``a``'s memory, also for the read-only arrays Ray hands out (only read here)."""
    if isinstance(a, torch.Tensor):
        return a
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.as_tensor(a)


def range_head_end(plan: ChunkPlan, first: int) -> int:
    """Where the spans of the chunks before ``first`` end: a range from chunk ``first`` overlaps them up
    to there (its own start for the first range)."""
    return plan.span(0, first)[1] if first > 0 else plan.starts[0]


def split_ranges(plan: ChunkPlan, max_chunks: int, batch_size: int = 1) -> list[tuple[int, int]]:
    """The chunks cut into consecutive ranges of ``max_chunks`` (rounded up to whole batches: each batch
    then holds the chunks it holds in one pass over all chunks), the last one shorter."""
    per = -(-max(1, int(max_chunks)) // max(1, batch_size)) * max(1, batch_size)
    n = len(plan.starts)
    return [(a, min(a + per, n)) for a in range(0, n, per)]


def effective_batch(batch_size: int, runner) -> int:
    """The batch size :func:`demix_range` runs with this runner (the ONNX core: one chunk per thread at least)."""
    if runner is not None and getattr(runner, "backend", None) == "onnx":
        return max(batch_size, runner.core.threads)
    return batch_size


def demix_pieces(
    model: Model,
    read_span,
    plan: ChunkPlan,
    channels: int,
    piece_chunks: int,
    tta: bool = False,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    precision: str | None = None,
    progress: bool = False,
    cuda_graph: bool | None = None,
    backend: str = "torch",
    runner=None,
):
    """:func:`demix` (or :func:`demix_tta` with ``tta``) a piece at a time, in bounded memory: yields
    ``(first input sample, estimate (stems, channels, n) float32)`` in order, the pieces together the
    whole estimate bit for bit as :func:`demix`/:func:`demix_tta` make it of the whole input.

    ``read_span(start, end)``: the padded input's samples [start, end) (channels, n) float32 tensor
    (see :func:`pad_for_chunks`), asked for in increasing order. About ``piece_chunks`` chunks run per
    piece (rounded up to whole batches, so every batch holds the chunks it holds in one call); memory is
    one piece's span, its stems and an overlap's sums whatever the input's length. Other arguments as
    :func:`demix`; ``runner``: a ``make_runner`` result to use (else made once here for ``backend``)."""
    if batch_size < 1:
        raise SettingsError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device) if device is not None else model_device(model)
    precision = resolve_precision(precision or "fp32", device)
    chunk_size = plan.chunk_size
    if runner is None and backend != "torch":
        runner = make_runner(model, chunk_size, device, precision, backend=backend, channels=channels)
    batch = effective_batch(batch_size, runner)
    graph = None
    onnx = runner is not None and runner.backend == "onnx"
    if not onnx and use_cuda_graph(cuda_graph, device):
        graph = capture(model, (batch, channels, chunk_size), device, precision)  # once, for every piece
    per_piece = -(-max(1, int(piece_chunks)) // batch) * batch
    total = len(plan.starts)
    passes = 3 if tta else 1
    sums: list[Accumulator | None] = [None] * passes
    bar = tqdm(total=total * passes, desc="separating", unit="chunk", disable=not progress, leave=False)
    try:
        for first in range(0, total, per_piece):
            last = min(first + per_piece, total)
            start, end = plan.span(first, last)
            span = read_span(start, end)
            views = [span, span.flip(0), -span] if tta else [span]
            for k, x in enumerate(views):
                acc = Accumulator.over(start, end, channels, sums[k])
                demix_range(model, x, plan, first, last, batch_size=batch_size, device=device, precision=precision,
                            backend=backend, runner=runner, graph=graph, into=acc)
                sums[k] = acc
                bar.update(last - first)
            done = plan.starts[last] if last < total else plan.padded
            ests = [acc.estimate(plan, start, done) for acc in sums]
            if ests[0] is None:
                continue
            at = ests[0][0]
            est = ests[0][1] if not tta else combine_tta(ests[0][1], ests[1][1][:, ::-1], ests[2][1])
            yield at, est
    finally:
        bar.close()


def finish_chunks(plan: ChunkPlan, parts: list[tuple[int, torch.Tensor, torch.Tensor]]) -> np.ndarray:
    """The stems (stems, channels, length) float32 from the ranges' sums: ``parts`` holds (span start,
    weighted stems, weights) of ranges that together cover every chunk of ``plan`` once. One range of
    all chunks gives :func:`demix`'s result bit for bit; several give it to float rounding (the sums
    where ranges overlap are added in another order)."""
    if len(parts) == 1 and parts[0][0] == 0 and parts[0][2].shape[-1] == plan.padded:
        _, result, counter = parts[0]
    else:
        first = parts[0][1]
        result = torch.zeros(first.shape[0], first.shape[1], plan.padded)
        counter = torch.zeros(first.shape[1], plan.padded)
        for start, numerator, weights in sorted(parts, key=lambda p: p[0]):
            n = weights.shape[-1]
            result[..., start : start + n] += numerator
            counter[:, start : start + n] += weights
    est = result / counter
    est = torch.nan_to_num(est, nan=0.0)
    if plan.border:
        est = est[..., plan.border : plan.padded - plan.border]
    return est.numpy().astype(np.float32, copy=False)


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
    runners: RunnerCache | None = None,
    graph=None,
) -> np.ndarray:
    """Separate ``mix`` (channels, samples) into (stems, channels, samples) float32.

    ``device`` defaults to the model's; ``precision`` (see ``streamer.inference.runner``) defaults to
    fp32, as MSST on CPU. ``cuda_graph``: replay full batches as a CUDA graph (see
    ``streamer.inference.graphs``; None: the default there). ``backend``: torch, onnx or auto, as
    ``streamer.make_runner`` runs a chunk (the ONNX Runtime core: CPU, fp32 or int8); ``runners``: a
    :class:`RunnerCache` to take the runner from (and keep it for the next call) instead; ``graph``: a
    captured graph to reuse (see :func:`demix_range`).

    Border reflect padding, chunk padding (reflect when more than half a chunk is real audio,
    zeros otherwise), weighted overlap-add divided by the summed weights, and 0 where no chunk
    contributes (0/0), all as the reference does. (The same sums in ranges, for long files split
    between machines: :func:`demix_range` and :func:`finish_chunks`.)
    """
    mix = check_mix(mix)
    plan = plan_chunks(mix.shape[1], chunk_size, num_overlap)
    x = pad_for_chunks(mix, plan)
    runner = runners.get(chunk_size, x.shape[0]) if runners is not None else None
    numerator, counter = demix_range(model, x, plan, 0, len(plan.starts), batch_size=batch_size, device=device,
                                     precision=precision, progress=progress, cuda_graph=cuda_graph,
                                     backend=backend, runner=runner, graph=graph)
    return finish_chunks(plan, [(0, numerator, counter)])


def demix_tta(model: Model, mix: np.ndarray, chunk_size: int, num_overlap: int, **kwargs) -> np.ndarray:
    """Test-time augmentation: average of the plain, channel-swapped and polarity-inverted passes."""
    plain = demix(model, mix, chunk_size, num_overlap, **kwargs)
    swapped = demix(model, mix[::-1].copy(), chunk_size, num_overlap, **kwargs)[:, ::-1]
    inverted = demix(model, -mix, chunk_size, num_overlap, **kwargs)
    return combine_tta(plain, swapped, inverted)


def combine_tta(plain: np.ndarray, swapped: np.ndarray, inverted: np.ndarray) -> np.ndarray:
    """The test-time-augmentation average: ``swapped`` with its channels already swapped back,
    ``inverted`` the estimate of the polarity-inverted mix (subtracted)."""
    return ((plain + swapped - inverted) / 3.0).astype(np.float32)

"""The model core (everything between the STFT and the iSTFT) as an ONNX Runtime session, for CPUs.

A Roformer's forward is ``synthesis(core(analysis(audio)), length)``. The core has fixed shapes for a
fixed window, so it exports to one ONNX graph per window length (the TorchScript-based exporter,
opset 18); ONNX Runtime then runs it faster than eager torch on the CPU. Complex tensors do not export,
so the exported graph returns the masked spectra as real (B, N, F*S, T, 2) and the complex view is
taken in torch afterwards. The STFT and iSTFT stay in torch. Attention exports as ONNX Runtime's fused
``MultiHeadAttention`` and ``RotaryEmbedding`` operators (:mod:`.onnx_fused`; 20% off the demo model's
core); a runtime that cannot run them gets the plain traced graph instead.

The graph is exported once and cached under :func:`cache_dir` (``STEMSTREAM_CACHE_DIR`` overrides),
named by :func:`cache_key`: a hash of the weights, the model's structure and the source of the modules
that define it, the window, channels, precision and the torch/ONNX Runtime versions. Every
:class:`OnnxCore` checks its session against torch on one window before it is used; anything that
goes wrong raises :class:`OnnxUnavailable` with the reason, and the caller runs torch instead.

Precisions: fp32, and int8: the fp32 graph with its matrix products quantised by ONNX Runtime's
dynamic quantisation (int8 weights, activations quantised per call; cached as its own graph). int8 is
opt-in: 1.3-1.5x faster than the fp32 core on this project's machine, with errors of 1-5% of the
output's scale (BENCHMARKS.md has its speed and its SDR cost). ONNX Runtime's CPU execution provider
has bf16/fp16 kernels for few operators (its x86 builds cast around the rest), so a half-precision
request raises OnnxUnavailable and the caller runs that precision in torch.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import pathlib
import shutil
import sys
import tempfile
import time
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import torch
from torch import nn

from ..outputs import cache_folder
from . import onnx_fused

_logger = logging.getLogger(__name__)

OPSET = 18
PRECISIONS = ("fp32", "int8")
_ALIASES = {"float32": "fp32"}
INT8_CHECK_TOL = 0.2       # int8 on the check window: a gross failure only (typical errors 1-5% of the scale)
_KEY_VERSION = 2          # bump when the exported graph's contract changes (2: fused attention)
_STALE_EXPORT_S = 3600.0  # temporary export folders older than this are left-overs of a killed process


class OnnxUnavailable(Exception):
    """ONNX Runtime cannot run this model's core (not installed, export or session failed, or the
    output does not match torch); the caller falls back to torch."""


def ort_available() -> bool:
    """True when onnxruntime can be imported. (Exporting a graph also needs the ``onnx`` package; a graph
    already in the cache runs without it.)"""
    try:
        import onnxruntime  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken install is as unavailable as a missing one
        return False
    return True


def cache_dir() -> pathlib.Path:
    """Where exported graphs are kept: ``$STEMSTREAM_CACHE_DIR/onnx`` when set, else the user cache
    folder (``platformdirs.user_cache_dir("stemstream")/onnx``, ``~/.cache/stemstream/onnx`` without
    platformdirs). Not created here."""
    return cache_folder("onnx")


# ---------------------------------------------------------------------------------------------- key
def _normalise_precision(precision: str) -> str:
    name = _ALIASES.get(precision, precision)
    if name not in PRECISIONS:
        raise OnnxUnavailable(f"the ONNX Runtime core runs fp32 or int8, not {precision!r} (torch runs {precision})")
    return name


def _ort_version() -> str:
    try:
        import onnxruntime
    except Exception:  # noqa: BLE001
        return "none"
    return str(onnxruntime.__version__)


def _onnx_version() -> str:
    try:
        import onnx
    except Exception:  # noqa: BLE001
        return "none"
    return str(onnx.__version__)


def _hash_tensor(h: Any, name: str, t: torch.Tensor) -> None:
    t = t.detach()
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
    if t.device.type != "cpu":
        t = t.cpu()
    if t.numel():
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy())  # no copy for a CPU tensor


def _is_cache(name: str) -> bool:
    """A cache filled as the model runs (rotary_embedding_torch's ``cached_freqs``, ``cached_freqs_seq_len``):
    left out of the key, which must not depend on what the model ran before."""
    return name.rsplit(".", 1)[-1].startswith("cached")


def _structure(model: nn.Module) -> str:
    """The model's modules and their plain settings (ints, floats, strings, tuples of those)."""
    plain = (bool, int, float, str, type(None))
    lines = []
    for name, module in model.named_modules():
        attrs = []
        for k, v in sorted(vars(module).items()):
            if k.startswith("_") or k == "training" or _is_cache(k):
                continue
            if isinstance(v, plain) or (isinstance(v, (tuple, list)) and all(isinstance(i, plain) for i in v)):
                attrs.append(f"{k}={v!r}")
        lines.append(f"{name}:{type(module).__module__}.{type(module).__qualname__}({', '.join(attrs)})")
    return "\n".join(lines)


def _source_files(model: nn.Module) -> list[str]:
    """The source files of the (non-torch) modules that define the model's classes, and this file."""
    files = {os.path.abspath(__file__), os.path.abspath(onnx_fused.__file__)}
    for module in model.modules():
        for cls in type(module).__mro__:
            mod = sys.modules.get(cls.__module__)
            path = getattr(mod, "__file__", None)
            if path and not cls.__module__.startswith(("torch.", "builtins")) and cls.__module__ != "torch":
                files.add(os.path.abspath(path))
    return sorted(files)


def cache_key(model: nn.Module, channels: int, window: int, precision: str) -> str:
    """The name of the exported graph for ``model`` at this window: changes when any weight or buffer,
    the model's structure or settings, the source of its modules, the window, channel count,
    precision, opset or the torch/onnxruntime versions change (not with what the model ran before:
    caches the model fills as it runs are left out). About 0.1 s per 100 MB of weights."""
    h = hashlib.sha256()
    h.update(f"v{_KEY_VERSION}|opset{OPSET}|torch {torch.__version__}|ort {_ort_version()}|"
             f"channels {int(channels)}|window {int(window)}|{precision}\n".encode())
    h.update(_structure(model).encode())
    for path in _source_files(model):
        try:
            h.update(pathlib.Path(path).read_bytes())
        except OSError:
            h.update(path.encode())
    state = model.state_dict()
    for name, t in state.items():
        _hash_tensor(h, name, t)
    for name, t in model.named_buffers():  # non-persistent buffers (STFT window, mel indices)
        if name not in state and not _is_cache(name):
            _hash_tensor(h, name, t)
    return f"{type(model).__name__}-{int(channels)}ch-{int(window)}-{precision}-{h.hexdigest()[:40]}"


# ---------------------------------------------------------------------------------------------- graph
class _RealCore(nn.Module):
    """``model.core`` with a real output: the masked spectra time-major, (B, N, T, F*S, 2) float32.

    The same steps as ``_RoformerBase.core``; the complex product is written out in real arithmetic,
    and the masks stay in the (time, rows) order the mask estimators produce them in: the transpose to
    (rows, time) that the iSTFT needs is left to torch, whose strided copy is several times faster
    than ONNX Runtime's Transpose of the same tensor (which took about 10% of the demo model's time).
    (Every OnnxCore compares its session with ``model.core`` on a window, so a change to the model's
    core that is not mirrored here is caught and falls back to torch.)"""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, packed_stft: torch.Tensor) -> torch.Tensor:
        m = self.model
        b = packed_stft.shape[0]
        x = m._gather(packed_stft)                                         # (B, rows, T, 2)
        t = x.shape[2]
        x = x.permute(0, 2, 1, 3).reshape(b, t, -1)                         # b t (f c)
        packed = m.packed_weights()
        x = m._band_split(x, packed)                                        # (K, B*T, D)
        k, _, d = x.shape
        x = x.reshape(k, b, t, d).permute(1, 2, 0, 3)                       # (B, T, K, D)
        x = m._transform(x)
        xk = x.permute(2, 0, 1, 3).reshape(k, b * t, d).contiguous()        # (K, B*T, D)
        masks = torch.stack([m._mask(xk, n, packed) for n in range(m.num_stems)], dim=0)  # (N, B*T, rows*2)
        n = masks.shape[0]
        masks = masks.float().reshape(n, b, t, -1, 2).transpose(0, 1)        # (B, N, T, rows, 2)
        masks = m._spread_masks(masks, dim=3)                               # (B, N, T, F*S, 2)
        s = packed_stft.transpose(1, 2).unsqueeze(1)                        # (B, 1, T, F*S, 2)
        sr, si = s[..., 0], s[..., 1]
        mr, mi = masks[..., 0], masks[..., 1]
        return torch.stack([sr * mr - si * mi, sr * mi + si * mr], dim=-1)


def _say(log: Any, message: str) -> None:
    if log is None:
        _logger.info(message)
    elif hasattr(log, "info"):
        log.info(message)
    else:
        log(message)


def _clean_stale_exports(folder: pathlib.Path) -> None:
    now = time.time()
    for p in folder.glob(".export-*"):
        try:
            if now - p.stat().st_mtime > _STALE_EXPORT_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _export(model: nn.Module, example: torch.Tensor, path: pathlib.Path, fused: bool = True) -> None:
    """Export the real-output core to ``path`` atomically: into a private temporary folder next to
    it, then renamed into place; nothing is left behind when it fails. ``fused``: attention as ONNX
    Runtime's fused operators (:mod:`.onnx_fused`), else as traced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_exports(path.parent)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=".export-", dir=path.parent))
    try:
        out = tmp / "core.onnx"
        fuse = onnx_fused.fused_attention(model) if fused else contextlib.nullcontext()
        with torch.no_grad(), warnings.catch_warnings(), fuse:
            warnings.simplefilter("ignore")  # the tracer's warnings about Python control flow
            torch.onnx.export(
                _RealCore(model), (example,), str(out), dynamo=False, opset_version=OPSET,
                input_names=["packed_stft"], output_names=["masked"], do_constant_folding=True,
            )
        extra = sorted(p.name for p in tmp.iterdir() if p.name != "core.onnx")
        if not out.is_file() or extra:
            raise RuntimeError("the exporter wrote external data (a model over 2 GB)" if extra
                               else "the exporter wrote no file")
        os.replace(out, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _onnx_hint() -> str:
    return " (the exporter needs the onnx package: pip install onnx)" if _onnx_version() == "none" else ""


def _export_or_raise(model: nn.Module, example: torch.Tensor, path: pathlib.Path, fused: bool) -> None:
    """:func:`_export`, any failure as OnnxUnavailable."""
    try:
        _export(model, example, path, fused=fused)
    except Exception as exc:  # noqa: BLE001 - any exporter failure means: use torch
        raise OnnxUnavailable(f"exporting the model core to ONNX failed: {type(exc).__name__}: {exc}{_onnx_hint()}") from exc


def _weights_as_initializers(source: pathlib.Path, dest: pathlib.Path) -> int:
    """Copy the graph ``source`` to ``dest`` with its float ``Constant`` nodes turned into initializers;
    returns how many moved. The band-split and mask-estimator weights are views of the model's
    packed arena, which the tracer records as Constant nodes: ONNX Runtime's quantiser takes a
    MatMul's weight only from an initializer, so without this those products (about a fifth of the
    demo model's int8 time) would stay fp32."""
    import onnx

    graph_model = onnx.load(str(source))
    graph = graph_model.graph
    kept, moved = [], 0
    for node in graph.node:
        value = node.attribute[0].t if node.op_type == "Constant" and len(node.attribute) == 1 else None
        if (value is not None and node.attribute[0].name == "value"
                and value.data_type == onnx.TensorProto.FLOAT and len(value.dims) >= 2):
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
            moved += 1
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    onnx.save(graph_model, str(dest))
    return moved


def _quantize(source: pathlib.Path, path: pathlib.Path) -> None:
    """The int8 graph of the fp32 graph ``source`` at ``path``, atomically: ONNX Runtime's dynamic
    quantisation of the MatMul nodes (int8 weights, per-call activation scales), the band-split and
    mask-estimator products included (:func:`_weights_as_initializers`)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = pathlib.Path(tempfile.mkdtemp(prefix=".export-", dir=path.parent))
    try:
        out = tmp / "core.onnx"
        staged = tmp / "weights.onnx"
        _weights_as_initializers(source, staged)
        source = staged
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.disable(logging.WARNING)  # the quantiser logs a line per MatMul it leaves alone, and advice
            try:
                quantize_dynamic(str(source), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
            finally:
                logging.disable(logging.NOTSET)
        os.replace(out, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _session(path: pathlib.Path, threads: int, spin: bool) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only
    # without spinning, idle pool threads sleep instead of busy-waiting for the next parallel section:
    # they leave the CPU to the audio thread (and measured as fast or faster on a busy 2-core machine)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------------------- core
class OnnxCore:
    """The model core as an ONNX Runtime session for one window length.

    ``OnnxCore(model, channels, window)(model.analysis(audio))`` equals ``model.core(...)``: a packed
    STFT (B, F*S, T, 2) float32 -> masked complex spectra (B, N, F*S, T). The graph is exported on
    first use (seconds) and reused from ``cache`` (default :func:`cache_dir`) afterwards; ``exported``
    tells which happened, ``path`` where the graph is. ``threads``: ONNX Runtime's intra-op threads
    (the caller's thread budget; default ``torch.get_num_threads()``). ``log``: a print-like callable
    or a logger for the one message an export prints. ``check_tol``: the largest error, relative to
    the largest output value, allowed on the check window. ``spin``: let ONNX Runtime's idle pool
    threads busy-wait (off by default: they sleep and leave the cores to the audio thread).

    Raises :class:`OnnxUnavailable` (with the reason) when ONNX Runtime is missing, the precision is
    not fp32, the model is not on the CPU, or the export, the session or the check window fails.
    """

    def __init__(self, model: nn.Module, channels: int, window: int, threads: int | None = None,
                 precision: str = "fp32", cache: pathlib.Path | str | None = None,
                 log: Callable[[str], Any] | logging.Logger | None = None, check_tol: float = 1e-4,
                 spin: bool = False):
        if not ort_available():
            raise OnnxUnavailable("onnxruntime is not installed (pip install onnxruntime onnx)")
        self.precision = _normalise_precision(precision)
        for attr in ("analysis", "synthesis", "core", "_gather", "_spread_masks", "packed_weights"):
            if not hasattr(model, attr):
                raise OnnxUnavailable(f"{type(model).__name__} has no {attr}(): not a Roformer of this project")
        p = next(model.parameters(), None)
        if p is not None and p.device.type != "cpu":
            raise OnnxUnavailable(f"the model is on {p.device}; the ONNX Runtime core runs on the CPU")
        if getattr(model, "audio_channels", channels) != channels:
            raise ValueError(f"the model takes {model.audio_channels} channels, not {channels}")
        if model.training:
            model.eval()
        self.model = model
        self.channels = int(channels)
        self.window = int(window)
        self.threads = int(threads) if threads is not None else torch.get_num_threads()
        self.spin = bool(spin)
        folder = pathlib.Path(cache) if cache is not None else cache_dir()
        self.key = cache_key(model, channels, window, self.precision)
        self.path = folder / f"{self.key}.onnx"
        self.exported = False
        self.export_seconds: float | None = None
        # batches: windows run side by side on a one-thread session (see __call__), made on first use
        self._pool: ThreadPoolExecutor | None = None
        self._pool_session: Any = None
        self._pool_lock = threading.Lock()

        g = torch.Generator().manual_seed(1234)
        check_audio = torch.randn((1, self.channels, self.window), generator=g) * 0.1
        with torch.no_grad():
            example = model.analysis(check_audio).float().contiguous()
            reference = torch.view_as_real(model.core(example).transpose(2, 3)).float()  # time-major
        self.input_shape = tuple(example.shape)
        self.output_shape = tuple(reference.shape)

        fp32_tol = check_tol
        if self.precision == "int8":
            check_tol = max(check_tol, INT8_CHECK_TOL)
        if self.path.is_file():
            try:
                self._open_and_check(self.path, example, reference, check_tol)
                return
            except OnnxUnavailable:
                # a cached graph that no longer opens or matches (e.g. another onnxruntime build)
                self.path.unlink(missing_ok=True)
        seconds = self.window / float(getattr(model, "audio_sample_rate", 44100) or 44100)
        start = time.perf_counter()
        if self.precision == "fp32":
            _say(log, f"exporting the model core to ONNX for {seconds:.2f} s windows (once; cached in {folder})")
            self._export_checked(self.path, example, reference, fp32_tol, log)
        else:
            # int8: quantise the checked fp32 graph (cached under its own key, which fp32 runs then reuse);
            # a failure here never touches that fp32 graph
            fp32_path = folder / f"{cache_key(model, channels, window, 'fp32')}.onnx"
            if fp32_path.is_file():
                _say(log, f"quantising the model core's matrix products to int8 for {seconds:.2f} s windows "
                          f"(once; cached in {folder})")
            else:
                _say(log, f"exporting the model core to ONNX and quantising it to int8 for {seconds:.2f} s windows "
                          f"(once; cached in {folder})")
                self._export_checked(fp32_path, example, reference, fp32_tol, log)
            try:
                _quantize(fp32_path, self.path)
            except Exception as exc:  # noqa: BLE001 - the quantiser's failure means: use torch
                self.path.unlink(missing_ok=True)
                raise OnnxUnavailable(f"quantising the model core to int8 failed: {type(exc).__name__}: {exc}"
                                      f"{_onnx_hint()}") from exc
            try:
                self._open_and_check(self.path, example, reference, check_tol)
            except OnnxUnavailable:
                self.path.unlink(missing_ok=True)
                raise
        self.export_seconds = time.perf_counter() - start
        self.exported = True

    def _export_checked(self, path: pathlib.Path, example: torch.Tensor, reference: torch.Tensor, tol: float,
                        log: Any) -> None:
        """An fp32 graph at ``path`` that opens and matches torch within ``tol``, with this core's
        session on it: attention as the fused operators, or, where those cannot run or disagree with
        torch, the plain traced graph. Nothing is left at ``path`` when neither works."""
        try:
            _export_or_raise(self.model, example, path, fused=True)
            self._open_and_check(path, example, reference, tol)
            return
        except OnnxUnavailable as fused_failure:
            path.unlink(missing_ok=True)
            _say(log, f"the fused attention graph cannot be used here ({fused_failure}); exporting the plain graph")
        try:
            _export_or_raise(self.model, example, path, fused=False)
            self._open_and_check(path, example, reference, tol)
        except OnnxUnavailable:
            path.unlink(missing_ok=True)
            raise

    def _open_and_check(self, path: pathlib.Path, example: torch.Tensor, reference: torch.Tensor, tol: float) -> None:
        """Open ``path`` as this core's session and compare it with torch on the check window."""
        try:
            self.session = _session(path, self.threads, self.spin)
        except Exception as exc:  # noqa: BLE001
            raise OnnxUnavailable(f"ONNX Runtime could not open {path}: {type(exc).__name__}: {exc}") from exc
        self._input = self.session.get_inputs()[0].name
        try:
            got = self._run(example)
        except Exception as exc:  # noqa: BLE001
            raise OnnxUnavailable(f"ONNX Runtime failed on the check window: {type(exc).__name__}: {exc}") from exc
        if tuple(got.shape) != tuple(reference.shape):
            raise OnnxUnavailable(f"the ONNX core returned shape {tuple(got.shape)}, torch {tuple(reference.shape)}")
        scale = float(reference.abs().max())
        err = float((got - reference).abs().max())
        self.check_error = err / max(scale, 1e-12)
        if not math.isfinite(err) or err > tol * max(scale, 1e-12):
            raise OnnxUnavailable(f"the ONNX core differs from torch on the check window: max error {err:.3g} "
                                  f"at output scale {scale:.3g}")

    def _run(self, packed: torch.Tensor, session: Any = None) -> torch.Tensor:
        """(1, F*S, T, 2) float32 -> real time-major (1, N, T, F*S, 2)."""
        x = packed.detach()
        if x.dtype != torch.float32:
            x = x.float()
        (out,) = (session or self.session).run(None, {self._input: x.cpu().contiguous().numpy()})
        return torch.from_numpy(out)

    def _parallel(self) -> tuple[ThreadPoolExecutor, Any]:
        with self._pool_lock:
            if self._pool is None:
                self._pool_session = _session(self.path, 1, self.spin)
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="onnx-window")
            return self._pool, self._pool_session

    def close(self) -> None:
        """Stop the batch threads (if a batch ever ran); the core still runs single windows after."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self._pool, self._pool_session = None, None

    def __call__(self, packed_stft: torch.Tensor) -> torch.Tensor:
        """Same contract as ``model.core``: (B, F*S, T, 2) float -> complex (B, N, F*S, T) on the CPU."""
        if tuple(packed_stft.shape[1:]) != self.input_shape[1:]:
            raise ValueError(f"this ONNX core takes packed STFTs of shape (B, {', '.join(map(str, self.input_shape[1:]))}) "
                             f"({self.window}-sample windows), got {tuple(packed_stft.shape)}")
        b = packed_stft.shape[0]
        if b == 1:
            out = self._run(packed_stft)
        elif self.threads == 1:
            out = torch.cat([self._run(packed_stft[i:i + 1]) for i in range(b)], dim=0)
        else:
            # several windows: each runs on one thread of its own (a one-thread session, run from
            # `threads` threads at once; ONNX Runtime releases the GIL). Small models use two cores
            # far better this way than by splitting each operator between them (1.5-1.7x per window).
            pool, session = self._parallel()
            parts = pool.map(lambda i: self._run(packed_stft[i:i + 1], session), range(b))
            out = torch.cat(list(parts), dim=0)
        return torch.view_as_complex(out).transpose(2, 3)  # (B, N, F*S, T), a strided view

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """The model's full forward with this core: (B, S, L) audio -> (B, N, S, L') stems, equal to
        ``model.synthesis(self(model.analysis(audio)), L)``.

        A batch on a core of several threads runs window by window on its threads, each window's
        STFT and iSTFT beside its core, so those run on both cores too (offline separation: about
        10% of its time was the iSTFT alone, done while the second core waited)."""
        model, length, b = self.model, audio.shape[-1], audio.shape[0]
        if b == 1 or self.threads == 1:
            with torch.inference_mode():
                return model.synthesis(self(model.analysis(audio)), length)
        pool, session = self._parallel()

        def one(i: int) -> torch.Tensor:
            with torch.inference_mode():  # per thread: torch's grad mode is thread-local
                packed = model.analysis(audio[i:i + 1])
                masked = torch.view_as_complex(self._run(packed, session)).transpose(2, 3)
                return model.synthesis(masked, length)

        return torch.cat(list(pool.map(one, range(b))), dim=0)

    def __repr__(self) -> str:
        return (f"OnnxCore({type(self.model).__name__}, channels={self.channels}, window={self.window}, "
                f"threads={self.threads}, path={str(self.path)!r}, exported={self.exported})")


def run_with_onnx(model: nn.Module, audio: torch.Tensor, core: OnnxCore) -> torch.Tensor:
    """The model's full forward with the ONNX Runtime core ``core`` (made for ``model``): (B, S, L) or
    (B, L) audio -> (B, N, S, L') stems (:meth:`OnnxCore.forward`)."""
    if core.model is not model:
        raise ValueError("this ONNX core was made for another model")
    if audio.ndim == 2:
        audio = audio.unsqueeze(1)
    return core.forward(audio)

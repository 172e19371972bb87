"""The wire protocol of separation as a service, shared by the server (``bridge.serve``) and the clients.

One WebSocket per stream (or per file). Text frames carry JSON control messages, binary frames audio.

1. client -> ``{"type": "hello", "version": 1, "token": T}``; the server checks the version first (a
   mismatch is answered with one ``error`` line saying both versions), then the token (constant-time);
2. server -> ``{"type": "hello", "version": 1, "models": {name: ModelInfo...}, "limits": {...}}``;
3. client -> ``{"type": "open", "model": name, "mode": "stream" | "chunks", "wire": "fp32" | "fp16",
   "hop": .., "lookahead": .., "crossfade": .., "residual": .., "start_hop": k}`` (stream mode; the
   window is the model's); server -> ``{"type": "ready", ...}`` or ``{"type": "error", "message": ..}``.
   A stream may be opened again on the same connection (a reset, or a skip after falling behind).
4. binary frames, each a 16-byte header ``<BBHIq`` (kind, wire, reserved, epoch, index) then samples:

   * ``PRIME`` (stream): the ``window - hop`` input samples before hop ``start_hop`` (channels, n);
   * ``HOP`` (stream, client -> server): input hop ``index`` (channels, hop): the new audio only;
   * ``REGION`` (stream, server -> client): the finished stems of hop region ``index``
     (stems_out, channels, hop): only the stems' new region;
   * ``CHUNKS`` (file, client -> server): a batch of windows (b, channels, window), ``index`` a request id;
   * ``STEMS`` (file, server -> client): the model's stems of those windows (b, stems, channels, window).

   ``epoch`` is the client's count of ``open`` messages: replies carry it back, so a client drops results
   of a stream it has re-opened since.
5. ``{"type": "ping", "t": x}`` -> ``{"type": "pong", "t": x}`` (round trip); ``{"type": "report",
   "epoch": e, "received": k, "misses": n}`` (stream, about twice a second: the newest region the client
   has taken, and its miss count for the status endpoint). A stream whose client has not confirmed the
   regions of the last 5 s of audio is dropped (a client that stops reading must not hold the server).
"""
from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass
from enum import IntEnum

import numpy as np

from ..errors import StemstreamError

VERSION = 1
PATH = "/stream"            # the WebSocket route, under the service's URL
STATUS_PATH = "/status"     # JSON health, GET with ``Authorization: Bearer TOKEN``
HEADER = struct.Struct("<BBHIq")
WIRES = ("fp32", "fp16")
WIRE_DTYPES = {0: np.float32, 1: np.float16}
WIRE_CODES = {"fp32": 0, "fp16": 1}
MODES = ("stream", "chunks")


class RemoteError(StemstreamError, RuntimeError):
    """The service refused or cannot be reached; the message is one line meant for the user."""


class Kind(IntEnum):
    PRIME = 1
    HOP = 2
    REGION = 3
    CHUNKS = 4
    STEMS = 5


@dataclass(frozen=True)
class ModelInfo:
    """What a served model is, as the server's hello states it."""

    name: str
    sample_rate: int
    channels: int
    stems: list
    window: int
    hop: int                 # the server's default hop and look-ahead (a stream may ask for others)
    lookahead: int
    crossfade: object
    chunk_size: int
    num_overlap: int
    config: dict             # the MSST config (raw), so a file client separates as local ``separate`` does

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "ModelInfo":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def dumps(message: dict) -> str:
    return json.dumps(message, separators=(",", ":"))


def loads(text: str | bytes) -> dict:
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RemoteError(f"malformed control message: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise RemoteError("malformed control message: expected a JSON object with a 'type'")
    return data


def error_message(message: str) -> str:
    return dumps({"type": "error", "message": message})


def pack(kind: Kind, epoch: int, index: int, samples: np.ndarray, wire: str = "fp32") -> bytes:
    """One binary frame: header + samples as ``wire`` (fp32 or fp16), C order."""
    code = WIRE_CODES[wire]
    data = np.ascontiguousarray(samples, dtype=WIRE_DTYPES[code])
    return HEADER.pack(int(kind), code, 0, int(epoch) & 0xFFFFFFFF, int(index)) + data.tobytes()


def unpack(frame: bytes, shape_of) -> tuple[Kind, int, int, np.ndarray]:
    """(kind, epoch, index, float32 samples) of a binary frame. ``shape_of(kind, count)``: the expected
    shape for a frame of that kind holding ``count`` samples, or None to refuse it (RemoteError)."""
    if len(frame) < HEADER.size:
        raise RemoteError(f"binary frame of {len(frame)} bytes is shorter than its header")
    kind, code, _, epoch, index = HEADER.unpack_from(frame)
    if code not in WIRE_DTYPES:
        raise RemoteError(f"binary frame with unknown sample format {code}")
    try:
        kind = Kind(kind)
    except ValueError:
        raise RemoteError(f"binary frame of unknown kind {kind}") from None
    dtype = np.dtype(WIRE_DTYPES[code])
    body = len(frame) - HEADER.size
    if body % dtype.itemsize:
        raise RemoteError(f"binary frame of {len(frame)} bytes is not whole samples")
    shape = shape_of(kind, body // dtype.itemsize)
    if shape is None:
        raise RemoteError(f"unexpected {kind.name} frame of {body // dtype.itemsize} samples")
    data = np.frombuffer(frame, dtype, offset=HEADER.size).reshape(shape).astype(np.float32)
    return kind, epoch, index, data


def check_server_hello(reply: dict) -> dict[str, ModelInfo]:
    """The models a server's hello offers, or RemoteError with the server's one line."""
    if reply.get("type") == "error":
        raise RemoteError(f"the server refused: {reply.get('message', 'no reason given')}")
    if reply.get("type") != "hello":
        raise RemoteError(f"the server answered {reply.get('type')!r} instead of its hello")
    if reply.get("version") != VERSION:
        raise RemoteError(f"the server speaks protocol version {reply.get('version')}, this client {VERSION}: "
                          "install the same stemstream version on both ends")
    return {name: ModelInfo.from_json(info) for name, info in reply.get("models", {}).items()}


def choose_model(models: dict[str, ModelInfo], name: str | None) -> ModelInfo:
    if not models:
        raise RemoteError("the server serves no model")
    if name is None:
        if len(models) > 1:
            raise RemoteError(f"the server serves several models ({', '.join(models)}): name one")
        return next(iter(models.values()))
    if name not in models:
        raise RemoteError(f"the server does not serve a model {name!r}; it serves {', '.join(models)}")
    return models[name]


def check_expected(info: ModelInfo, **expected) -> None:
    """RemoteError, one line, when the served model differs from what the client expects (a None
    expectation is not checked): e.g. ``sample_rate=44100, channels=2, stems=[...], window=...``."""
    wrong = [f"{key} {getattr(info, key)!r} (expected {value!r})" for key, value in expected.items()
             if value is not None and (list(value) if isinstance(value, (list, tuple)) else value)
             != getattr(info, key)]
    if wrong:
        raise RemoteError(f"the served model {info.name!r} does not match: {', '.join(wrong)}")

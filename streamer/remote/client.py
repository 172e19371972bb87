"""Clients of separation as a service: one connection (hello, open, round trip), and the file client.

``wss://`` URLs connect over TLS and verify the server's certificate and name: against the system's
certificate authorities, or only against ``tls_ca`` (a PEM file: the service's own CA or self-signed
certificate). A failed verification is one RemoteError line.

The file client separates as local ``separate`` does (``streamer.inference.separate.separate_file``), with
the model replaced by :class:`RemoteModel`: every batch of chunks goes to the service and the model's
stems come back, so the chunking, normalisation, overlap-add and writing are the local code's and the
stems equal local ones to float rounding (the service batches windows of several clients together).
"""
from __future__ import annotations

import os
import ssl
import time

import numpy as np
import torch

from ..msst.config import Config, config_from_dict
from .protocol import (PATH, VERSION, Kind, ModelInfo, RemoteError, check_expected, check_server_hello,
                       choose_model, dumps, loads, pack, unpack)

CONNECT_TIMEOUT_S = 5.0
REPLY_TIMEOUT_S = 60.0


def service_url(url: str) -> str:
    """``ws://host:port``, ``wss://host:port`` or ``host:port`` -> the stream endpoint's URL."""
    if "://" not in url:
        url = "ws://" + url
    scheme = url.split("://", 1)[0].lower()
    if scheme not in ("ws", "wss"):
        raise RemoteError(f"the service's URL must start with ws:// or wss:// (TLS), got {url!r}")
    url = url.rstrip("/")
    return url if url.endswith(PATH) else url + PATH


def tls_context(url: str, tls_ca: str | os.PathLike | None = None) -> ssl.SSLContext | None:
    """The TLS context for ``url``: None for ``ws://``; for ``wss://`` one that verifies the server's
    certificate and host name against the system's CAs, or against ``tls_ca`` (a PEM file) only.
    RemoteError (one line) for a CA file that cannot be read, or ``tls_ca`` with a ``ws://`` URL."""
    secure = service_url(url).lower().startswith("wss://")
    if not secure:
        if tls_ca is not None:
            raise RemoteError(f"a TLS CA file goes with a wss:// URL; {url!r} is not encrypted (use wss://)")
        return None
    if tls_ca is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=os.fspath(tls_ca))
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else (exc.reason or str(exc))
        raise RemoteError(f"cannot read the TLS CA file {os.fspath(tls_ca)}: {reason} (expected PEM "
                          "certificates)") from None


def _unreachable(url: str, exc: BaseException, tls_ca) -> RemoteError:
    """One line for a connection that failed; a certificate that does not verify says what to do."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        how = (f"it is not signed by the CA in {os.fspath(tls_ca)}" if tls_ca is not None else
               "give the service's CA or self-signed certificate with --tls-ca FILE (tls_ca= in Python)")
        return RemoteError(f"TLS verification of {url} failed: {exc.verify_message or exc.reason}; {how}")
    if isinstance(exc, ssl.SSLError):
        return RemoteError(f"TLS with {url} failed: {exc.reason or exc} (is the service serving TLS? "
                           "wss:// needs --tls-cert/--tls-key or a TLS proxy; ws:// is plain)")
    return RemoteError(f"cannot reach the service at {url}: {exc}")


class Connection:
    """One WebSocket to the service, past the hello: ``models`` is what the server serves.

    Raises RemoteError with one line: unreachable, wrong token, version mismatch."""

    def __init__(self, url: str, token: str, timeout: float = CONNECT_TIMEOUT_S, tls_ca=None):
        from websockets.exceptions import WebSocketException
        from websockets.sync.client import connect

        self.url = service_url(url)
        context = tls_context(self.url, tls_ca)
        try:
            options = dict(open_timeout=timeout, max_size=None, compression=None)
            if context is not None:
                options["ssl"] = context
            try:
                self.ws = connect(self.url, legacy=True, **options)  # websockets >= 16: a plain connection
            except TypeError:
                self.ws = connect(self.url, **options)
        except (OSError, WebSocketException, TimeoutError) as exc:
            raise _unreachable(self.url, exc, tls_ca) from None
        try:
            self.ws.send(dumps({"type": "hello", "version": VERSION, "token": token}))
            self.models = check_server_hello(self.recv_control(timeout))
        except BaseException:
            self.close()
            raise

    def recv_control(self, timeout: float = REPLY_TIMEOUT_S) -> dict:
        from websockets.exceptions import ConnectionClosed

        try:
            message = self.ws.recv(timeout=timeout)
        except TimeoutError:
            raise RemoteError(f"the service at {self.url} did not answer within {timeout:g} s") from None
        except ConnectionClosed as exc:
            raise RemoteError(f"the service at {self.url} closed the connection ({exc.rcvd.reason if exc.rcvd else 'no reason'})"
                              ) from None
        if isinstance(message, bytes):
            raise RemoteError("the service sent audio where a control message was expected")
        return loads(message)

    def open(self, info: ModelInfo, mode: str, wire: str = "fp32", epoch: int = 0, **stream) -> dict:
        self.ws.send(dumps({"type": "open", "model": info.name, "mode": mode, "wire": wire, "epoch": epoch,
                            **stream}))
        reply = self.recv_control()
        if reply.get("type") == "error":
            raise RemoteError(f"the service refused the stream: {reply.get('message')}")
        if reply.get("type") != "ready":
            raise RemoteError(f"the service answered {reply.get('type')!r} to open")
        return reply

    def round_trip(self, count: int = 5) -> list[float]:
        """Seconds per ping-pong, ``count`` times (the network's share of a window's round trip)."""
        times = []
        for _ in range(count):
            t = time.perf_counter()
            self.ws.send(dumps({"type": "ping", "t": t}))
            while True:
                reply = self.recv_control()
                if reply.get("type") == "pong":
                    break
            times.append(time.perf_counter() - t)
        return times

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001
            pass


class RemoteModel:
    """A served model as a local callable model: (batch, channels, window) tensor -> (batch, stems,
    channels, window), each call one round trip (at most the server's ``max_batch_windows`` per frame)."""

    def __init__(self, url: str, token: str, model: str | None = None, wire: str = "fp32", tls_ca=None,
                 **expected):
        self.conn = Connection(url, token, tls_ca=tls_ca)
        try:
            self.info = choose_model(self.conn.models, model)
            check_expected(self.info, **expected)
            self.conn.open(self.info, "chunks", wire)
        except BaseException:
            self.conn.close()
            raise
        self.wire = wire
        self.audio_sample_rate = self.info.sample_rate
        self.audio_channels = self.info.channels
        self._request = 0

    @property
    def config(self) -> Config:
        """The served model's config, as the server read it."""
        return config_from_dict(self.info.config, path=f"{self.conn.url} ({self.info.name})")

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.detach().float().cpu().numpy()
        b, c, n = x.shape
        if c != self.info.channels or n != self.info.window:
            raise RemoteError(f"the served model takes windows of ({self.info.channels}, {self.info.window}), "
                              f"got ({c}, {n})")
        stems = len(self.info.stems)
        self._request += 1
        self.conn.ws.send(pack(Kind.CHUNKS, 0, self._request, x, self.wire))
        from websockets.exceptions import ConnectionClosed

        try:
            reply = self.conn.ws.recv(timeout=REPLY_TIMEOUT_S)
        except (TimeoutError, ConnectionClosed) as exc:
            raise RemoteError(f"the service at {self.conn.url} stopped answering: {exc}") from None
        if isinstance(reply, str):
            message = loads(reply)
            raise RemoteError(f"the service refused: {message.get('message', message)}")
        _, _, index, out = unpack(reply, lambda k, count: (b, stems, c, n) if k == Kind.STEMS
                                  and count == b * stems * c * n else None)
        if index != self._request:
            raise RemoteError(f"the service answered request {index}, expected {self._request}")
        return torch.from_numpy(out)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "RemoteModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def separate_file_remote(url: str, token: str, path: str, out_dir: str, opts=None, model: str | None = None,
                         folder: str | None = None, config: Config | None = None, wire: str = "fp32",
                         tls_ca=None):
    """``stemstream separate`` of one file through the service: the same stems as local separation with
    the served model (the local chunking, normalisation, residual and atomic writing). ``config``: the
    local config to check the served model against (rate, channels, stems, chunk); default the server's.
    ``tls_ca``: with a ``wss://`` URL, the PEM file to verify the server with (default: the system's CAs).
    Returns ``streamer.inference.separate.SeparationResult``."""
    from ..inference.separate import SeparationOptions, separate_file

    opts = opts or SeparationOptions()
    expected = {}
    if config is not None:
        expected = dict(sample_rate=config.sample_rate, channels=config.channels, stems=list(config.stems))
    with RemoteModel(url, token, model, wire=wire, tls_ca=tls_ca, **expected) as remote:
        cfg = config or remote.config
        chunk = opts.chunk_size or cfg.chunk_size
        if chunk != remote.info.window:
            raise RemoteError(f"the served model runs windows of {remote.info.window} samples, not chunks of {chunk}")
        return separate_file(remote, cfg, path, out_dir, opts, folder=folder)


def separate_array_remote(url: str, token: str, mix: np.ndarray, opts=None, model: str | None = None,
                          wire: str = "fp32", tls_ca=None) -> dict[str, np.ndarray]:
    """``streamer.inference.separate.separate_array`` through the service: (channels, samples) at the
    model's rate -> {stem: (channels, samples)}."""
    from ..inference.separate import SeparationOptions, separate_array

    with RemoteModel(url, token, model, wire=wire, tls_ca=tls_ca) as remote:
        return separate_array(remote, remote.config, mix, opts or SeparationOptions(progress=False))

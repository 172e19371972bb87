"""The engine's remote host: the windows run on a separation service, the audio side is unchanged.

A :class:`RemoteHost` stands where a thread or process worker stands (``streamer.stream.host``): it reads
each new hop of input out of the engine's input ring, sends it (only the new audio), and publishes each
returned hop region into the output ring with its tag, exactly as a local ``WindowWorker`` does. The audio
side never waits for it: a region that is late or never comes plays the dry delayed input and is counted
as a miss, as with a slow local worker. When the connection drops or the server restarts, the host
reconnects with backoff (0.1 s doubling to 2 s) and re-opens the stream at the first hop that can still be
in time, sending the window's earlier input once (``PRIME``); the audio plays the dry input meanwhile.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

import numpy as np

from ..errors import SettingsError
from ..stream.host import _ServingHost
from ..stream.ring import AudioSlot, SharedBuffers, WorkerSlot
from ..stream.settings import WorkerSettings
from ..stream.worker import skip_target
from .client import Connection
from .protocol import Kind, ModelInfo, RemoteError, check_expected, choose_model, dumps, loads, pack, unpack

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 2.0
REPORT_EVERY_S = 0.5   # the miss count and the newest region received, to the server
POLL_S = 0.0005


@dataclass(frozen=True)
class RemoteLink:
    """Where an engine's windows run: the service's URL and token, the model's name (None: the only one
    served), the sample format on the wire ("fp32" or "fp16") and, for a ``wss://`` URL, the PEM file to
    verify the server with (None: the system's CAs)."""

    url: str
    token: str
    model: str | None = None
    wire: str = "fp32"
    tls_ca: str | None = None

    def probe(self, pings: int = 5) -> tuple[ModelInfo, list[float]]:
        """The served model's description and ``pings`` round trips in seconds (one connection)."""
        conn = Connection(self.url, self.token, tls_ca=self.tls_ca)
        try:
            info = choose_model(conn.models, self.model)
            return info, conn.round_trip(pings)
        finally:
            conn.close()

    def make_host(self, buffers: SharedBuffers, settings: WorkerSettings, residual: str | None) -> "RemoteHost":
        return RemoteHost(buffers, settings, self, residual)


def network_allowance(round_trips: list[float], sample_rate: int) -> int:
    """Samples of latency to give the network: twice the worst measured round trip plus 5 ms."""
    return int(math.ceil((2 * max(round_trips) + 0.005) * sample_rate))


class _Lost(Exception):
    """The connection is gone: reconnect."""


class RemoteHost(_ServingHost):
    """Runs the engine's windows on a separation service (see the module docstring)."""

    kind = "remote"

    def __init__(self, buffers: SharedBuffers, settings: WorkerSettings, link: RemoteLink, residual: str | None):
        self.buffers = buffers
        self.worker = None
        self.settings = settings
        self.link = link
        self.residual = residual
        s = settings.stream
        self.window, self.hop, self.lookahead = s.window, s.hop, s.lookahead
        self.allowance = settings.allowance
        self.max_inflight = max(2, settings.allowance // s.hop + 3)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.connects = 0
        self.reconnects = 0
        self.skips = 0
        self.connect_round_trip_ms: list[float] = []
        self.last_error = ""
        self._permanent = ""
        self._sent_at = np.zeros(4096, np.float64)

    # -------------------------------------------------------------- the host's face
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def pid(self):
        return None

    def exit_cause(self) -> str:
        return self.buffers.error_message() or self._permanent or "the remote host's thread ended"

    def restart_stream(self) -> None:
        pass  # the host follows the ring's generation itself

    def start(self, timeout: float = 120.0) -> None:
        if self.running:
            return
        self._reset_flags()
        self._stop.clear()
        self._thread = threading.Thread(target=self._main, name="stemstream-remote", daemon=True)
        self._thread.start()
        self._wait_ready(timeout)

    def stop(self) -> None:
        self._started = False
        self.buffers.worker_state[WorkerSlot.STOP] = 1
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3.0)
            self._thread = None

    def remote_stats(self) -> dict:
        rtt = self.connect_round_trip_ms
        return {"url": self.link.url, "model": self.link.model, "connects": self.connects,
                "reconnects": self.reconnects, "skips": self.skips,
                "connect_round_trip_ms": float(np.median(rtt)) if rtt else None, "last_error": self.last_error}

    # -------------------------------------------------------------- the loop
    def _main(self) -> None:
        b = self.buffers
        backoff = BACKOFF_FIRST_S
        while not self._stop.is_set():
            try:
                conn = self._connect()
            except RemoteError as exc:
                self.last_error = str(exc)
                if not b.worker_state[WorkerSlot.READY]:
                    b.set_error(str(exc))   # the first connection: start() fails with this line
                    return
                log.warning("remote host: %s (retrying in %.1f s)", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(BACKOFF_MAX_S, backoff * 2)
                continue
            backoff = BACKOFF_FIRST_S
            try:
                self._serve(conn)
            except (_Lost, RemoteError) as exc:
                self.last_error = str(exc) or "connection lost"
                log.warning("remote host: connection lost (%s), reconnecting", self.last_error)
                self.reconnects += 1
            finally:
                conn.close()

    def _connect(self) -> Connection:
        conn = Connection(self.link.url, self.link.token, tls_ca=self.link.tls_ca)
        try:
            info = choose_model(conn.models, self.link.model)
            s = self.settings
            check_expected(info, channels=s.channels, window=self.window)
            if len(info.stems) != s.model_stems:
                raise RemoteError(f"the served model {info.name!r} has {len(info.stems)} stems, the engine "
                                  f"{s.model_stems}")
            rtts = conn.round_trip(3)
            self.connect_round_trip_ms = [1e3 * t for t in rtts]
        except BaseException:
            conn.close()
            raise
        self.info = info
        self.connects += 1
        return conn

    def _open(self, conn: Connection, epoch: int, start_hop: int, wait: bool) -> None:
        message = {"hop": self.hop, "lookahead": self.lookahead, "crossfade": self.settings.stream.crossfade,
                   "residual": self.residual, "start_hop": start_hop}
        if wait:
            reply = conn.open(self.info, "stream", self.link.wire, epoch, **message)
            if len(reply.get("stems", [])) != self.settings.stems_out:
                raise RemoteError(f"the service's stream has stems {reply.get('stems')}, the engine "
                                  f"{self.settings.stems_out}")
        else:
            conn.ws.send(dumps({"type": "open", "model": self.info.name, "mode": "stream", "wire": self.link.wire,
                                "epoch": epoch, **message}))
        if start_hop > 0:
            conn.ws.send(pack(Kind.PRIME, epoch, start_hop, self._input(start_hop * self.hop - (self.window - self.hop),
                                                                        start_hop * self.hop), self.link.wire))

    def _input(self, start: int, end: int) -> np.ndarray:
        ring = self.buffers.in_ring
        out = np.zeros((ring.shape[0], end - start), np.float32)
        lead = max(0, -start)
        pos = np.arange(start + lead, end) % ring.shape[1]
        out[:, lead:] = ring[:, pos]
        return out

    def _start_hop(self) -> int:
        """The first hop to send: the oldest whose region can still be in time."""
        fed = int(self.buffers.audio_state[AudioSlot.FED])
        return skip_target(fed, self.hop, self.hop, self.allowance) // self.hop - 1

    def _serve(self, conn: Connection) -> None:
        from websockets.exceptions import ConnectionClosed

        b = self.buffers
        st = b.audio_state
        self._gen = int(st[AudioSlot.GENERATION])
        self._epoch = 0
        self._broken = False
        next_hop = self._start_hop()
        self._open(conn, self._epoch, next_hop, wait=True)
        self._last_rx = next_hop - 1
        b.worker_state[WorkerSlot.READY] = 1
        receiver = threading.Thread(target=self._receive, args=(conn,), name="stemstream-remote-rx", daemon=True)
        receiver.start()
        last_report = 0.0
        try:
            while not self._stop.is_set():
                if self._broken:
                    raise _Lost(self.last_error)
                gen = int(st[AudioSlot.GENERATION])
                fed = int(st[AudioSlot.FED])
                if gen != self._gen:  # reset(): a new stream from hop 0
                    self._gen = gen
                    self._epoch += 1
                    next_hop = 0
                    self._last_rx = -1
                    self._open(conn, self._epoch, 0, wait=False)
                    continue
                end = (next_hop + 1) * self.hop
                target = skip_target(fed, end, self.hop, self.allowance)
                if target > end:   # fell behind: re-open at the first hop that can be in time
                    skipped = (target - end) // self.hop
                    b.worker_state[WorkerSlot.SKIPPED] += skipped
                    self.skips += 1
                    self._epoch += 1
                    next_hop = target // self.hop - 1
                    self._last_rx = next_hop - 1
                    self._open(conn, self._epoch, next_hop, wait=False)
                    continue
                now = time.monotonic()
                if now - last_report > REPORT_EVERY_S:
                    conn.ws.send(dumps({"type": "report", "epoch": self._epoch, "received": self._last_rx,
                                        "misses": int(st[AudioSlot.MISSES])}))
                    last_report = now
                if fed < end or next_hop - self._last_rx > self.max_inflight:
                    time.sleep(POLL_S)
                    continue
                data = self._input(next_hop * self.hop, end)
                if int(st[AudioSlot.FED]) - next_hop * self.hop > b.in_ring.shape[1]:
                    continue  # overwritten while copied: the skip above catches up
                self._sent_at[next_hop % self._sent_at.size] = time.perf_counter()
                conn.ws.send(pack(Kind.HOP, self._epoch, next_hop, data, self.link.wire))
                next_hop += 1
        except (ConnectionClosed, OSError) as exc:
            raise _Lost(str(exc)) from None
        finally:
            self._broken = True
            receiver.join(timeout=1.0)

    def _receive(self, conn: Connection) -> None:
        from websockets.exceptions import ConnectionClosed

        b = self.buffers
        shape = (self.settings.stems_out, self.settings.channels, self.hop)
        size = int(np.prod(shape))
        try:
            while not self._broken and not self._stop.is_set():
                try:
                    message = conn.ws.recv(timeout=0.1)
                except TimeoutError:
                    continue
                if isinstance(message, str):
                    reply = loads(message)
                    if reply.get("type") == "error":
                        self.last_error = f"the service refused the stream: {reply.get('message')}"
                        log.warning("remote host: %s", self.last_error)
                        break
                    continue
                _, epoch, k, region = unpack(message, lambda kd, n: shape if kd == Kind.REGION and n == size
                                             else None)
                if epoch != self._epoch or int(b.audio_state[AudioSlot.GENERATION]) != self._gen:
                    continue  # a stream re-opened since
                self._publish(k, region)
        except (ConnectionClosed, OSError, RemoteError) as exc:
            self.last_error = str(exc) or "connection closed"
        finally:
            self._broken = True

    def _publish(self, k: int, region: np.ndarray) -> None:
        """As ``WindowWorker.run_window``: data first, then the tag; late results are counted."""
        b = self.buffers
        self._last_rx = max(self._last_rx, k)
        slot = k % b.num_slots
        b.out_ring[:, :, slot * self.hop:(slot + 1) * self.hop] = region
        b.hop_tag[slot] = b.tag(k)
        b.record_time(time.perf_counter() - self._sent_at[k % self._sent_at.size])
        b.worker_state[WorkerSlot.WINDOWS] += 1
        if int(b.audio_state[AudioSlot.CUR_HOP]) >= k:
            b.worker_state[WorkerSlot.LATE] += 1


def remote_engine(url: str, token: str, model: str | None = None, *, hop: int | None = None,
                  lookahead: int | None = None, crossfade=None, residual: str | None = None,
                  compute_allowance: int | None = None, network_allowance_samples: int | None = None,
                  wire: str = "fp32", fade_ms: float = 5.0, max_restarts: int = 3, tls_ca: str | None = None,
                  **expected):
    """A real-time ``StreamEngine`` whose windows run on the service at ``url`` (not started: call
    ``start()`` or use it in a ``with``).

    Lengths in samples; None takes the server's (its preset's hop and look-ahead). The latency is
    look-ahead + hop + compute allowance (default one hop) + network allowance (default from the round
    trips measured now: :func:`network_allowance`). ``expected``: what the client requires of the served
    model (``sample_rate=``, ``channels=``, ``stems=``, ``window=``): a mismatch is one RemoteError line.
    ``tls_ca``: with a ``wss://`` URL, the PEM file to verify the server with (default: the system's CAs)."""
    from ..stream.engine import StreamEngine

    if wire not in ("fp32", "fp16"):
        raise SettingsError(f"wire must be fp32 or fp16, got {wire!r}")
    link = RemoteLink(url, token, model, wire, None if tls_ca is None else str(tls_ca))
    info, rtts = link.probe()
    check_expected(info, **expected)
    hop = info.hop if hop is None else int(hop)
    lookahead = info.lookahead if lookahead is None else int(lookahead)
    if crossfade is None and hop == info.hop and lookahead == info.lookahead:
        crossfade = info.crossfade
    if network_allowance_samples is None:
        network_allowance_samples = network_allowance(rtts, info.sample_rate)
    allowance = (hop if compute_allowance is None else int(compute_allowance)) + int(network_allowance_samples)
    engine = StreamEngine(None, info.stems, info.sample_rate, info.window, hop, lookahead, crossfade=crossfade,
                          residual=residual, realtime=True, worker="remote", remote=link, compute_allowance=allowance,
                          channels=info.channels, fade_ms=fade_ms, max_restarts=max_restarts)
    engine.round_trips_ms = [1e3 * t for t in rtts]
    return engine

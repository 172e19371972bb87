"""Separation as a service on Ray Serve: a model deployment whose windows from every stream are batched
with ``serve.batch``, behind a WebSocket ingress that keeps each stream's window state, and a JSON status
endpoint. The wire protocol is ``streamer.remote.protocol``; the clients are in ``streamer.remote``.

TLS: with ``tls_cert``/``tls_key`` (PEM files) Serve's proxy speaks HTTPS and the clients connect with
``wss://`` (checked here before Ray starts: a file that is missing or does not hold a matching certificate
and key is one SettingsError line). Or TLS ends at a reverse proxy in front of a 127.0.0.1 service.

The one place Ray Serve is imported (with ``bridge.cli.serve``, which starts it).
"""

import asyncio
import collections
import hmac
import ipaddress
import logging
import os
import ssl
import time
from dataclasses import dataclass, field

import numpy as np

from streamer.errors import SettingsError
from streamer.remote.protocol import (MODES, PATH, STATUS_PATH, VERSION, WIRE_CODES, WIRES, Kind, ModelInfo,
                                      RemoteError, dumps, error_message, loads, pack, unpack)
from streamer.remote.state import StreamState

log = logging.getLogger("stemstream.serve")

APP_NAME = "stemstream"
MAX_BATCH_LIMIT = 256
SEND_TIMEOUT_S = 2.0          # a client that does not take its results for this long is dropped
MAX_IN_FLIGHT = 16            # a stream's hops at the model at once (more: the server stops reading it)
HISTOGRAM_WINDOW_S = 10.0     # windows per second over this many seconds


@dataclass
class ModelSpec:
    name: str
    config: str
    checkpoint: str | None


@dataclass
class ServeSpec:
    """Everything ``stemstream serve`` sets; checked by :func:`check_spec`."""

    models: list[ModelSpec]
    token: str
    preset: str = "balanced"
    replicas: int = 1
    gpus_per_replica: float = 0.0
    cpus_per_replica: float = 1.0
    max_batch: int = 8
    batch_wait_ms: float = 5.0
    precision: str | None = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    allow: list[str] = field(default_factory=list)
    max_streams_per_client: int = 8
    max_batch_windows: int = 16     # windows per CHUNKS frame (file clients)
    max_unread_s: float = 5.0       # a stream whose client has not confirmed the regions of this much audio is dropped
    log_every_s: float = 60.0
    tls_cert: str | None = None     # PEM certificate (chain) and its key: the service speaks wss:// and https://
    tls_key: str | None = None
    tls_key_password: str | None = field(default=None, repr=False)   # an encrypted key's passphrase
    tls_key_password_env: str | None = None                           # where it came from (for messages)

    @property
    def scheme(self) -> str:
        return "wss" if self.tls_cert else "ws"


def check_tls(cert: str | None, key: str | None, password: str | None = None, password_env: str | None = None) -> None:
    """SettingsError (one line) unless both or neither are given and they hold a certificate and its key (an
    encrypted key opened with ``password``, which came from the environment variable ``password_env``).
    OpenSSL is never left to ask for a passphrase on the terminal."""
    if bool(cert) != bool(key):
        raise SettingsError("--tls-cert and --tls-key go together (the certificate and its private key, PEM)")
    if not cert:
        return
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not os.path.isfile(path):
            raise SettingsError(f"{flag}: no such file: {path}")
    asked = []

    def passphrase() -> bytes:
        asked.append(True)
        return (password or "").encode()

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key, password=passphrase)
    except ssl.SSLError as exc:
        if asked and password is None:
            raise SettingsError(f"--tls-key {key} is encrypted: put its passphrase in an environment variable and "
                                f"name it with --tls-key-password-env VAR") from None
        if asked:
            raise SettingsError(f"--tls-key {key}: the passphrase in ${password_env} does not open it") from None
        raise SettingsError(f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate and its matching "
                            f"private key ({exc.reason or exc})") from None
    except OSError as exc:
        raise SettingsError(f"--tls-cert {cert} / --tls-key {key}: cannot read: {exc.strerror or exc}") from None


def check_spec(spec: ServeSpec) -> list:
    """The allowed networks, or SettingsError (one line) for a spec that must not start."""
    if not spec.models:
        raise SettingsError("serve needs a model: --config C --checkpoint K, --rig R or --model NAME=C,K")
    if not spec.token or len(spec.token) < 8:
        raise SettingsError("serve needs --token of at least 8 characters (clients must present it)")
    if not 1 <= spec.max_batch <= MAX_BATCH_LIMIT:
        raise SettingsError(f"--max-batch must be from 1 to {MAX_BATCH_LIMIT}, got {spec.max_batch}")
    if spec.batch_wait_ms < 0 or spec.batch_wait_ms > 1000:
        raise SettingsError(f"--batch-wait-ms must be from 0 to 1000, got {spec.batch_wait_ms:g}")
    if spec.gpus_per_replica not in (0, 0.5, 1):
        raise SettingsError(f"--gpus-per-replica must be 1 or 0.5 (or 0: CPUs), got {spec.gpus_per_replica:g}")
    names = [m.name for m in spec.models]
    if len(set(names)) != len(names):
        raise SettingsError(f"model names must be distinct, got {', '.join(names)}")
    try:
        nets = [ipaddress.ip_network(a, strict=False) for a in spec.allow]
    except ValueError as exc:
        raise SettingsError(f"--allow: {exc}") from None
    try:
        loopback = spec.host == "localhost" or ipaddress.ip_address(spec.host).is_loopback
    except ValueError:
        raise SettingsError(f"--host must be an IP address to listen on (e.g. 127.0.0.1 or 0.0.0.0), "
                            f"got {spec.host!r}") from None
    if not loopback and not nets:
        raise SettingsError(f"--host {spec.host} listens beyond this machine: name who may connect with "
                            "--allow CIDR (e.g. --allow 10.0.0.0/8)")
    check_tls(spec.tls_cert, spec.tls_key, spec.tls_key_password, spec.tls_key_password_env)
    return nets


def model_info(m: ModelSpec, preset: str) -> ModelInfo:
    """What the hello states for a model: its config's numbers and the preset's hop and look-ahead."""
    from streamer.msst.config import load_config
    from streamer.stream.settings import preset_settings

    config = load_config(m.config)
    s = preset_settings(preset, config)
    return ModelInfo(name=m.name, sample_rate=config.sample_rate, channels=config.channels, stems=list(config.stems),
                     window=s.window, hop=s.hop, lookahead=s.lookahead, crossfade=s.crossfade,
                     chunk_size=config.chunk_size, num_overlap=config.num_overlap, config=config.to_yaml_dict())


class Metrics:
    """The ingress's counters: windows, batch sizes, queue waits, per-stream state."""

    def __init__(self):
        self.windows = 0
        self.recent = collections.deque(maxlen=100000)     # completion times (monotonic)
        self.batches = collections.Counter()                # batch size -> windows run in such batches
        self.waits = collections.deque(maxlen=4096)         # seconds from request to batch start
        self.streams: dict[int, dict] = {}
        self.refused = collections.Counter()
        self.dropped = 0

    def record(self, batch_size: int, wait: float) -> None:
        self.windows += 1
        self.recent.append(time.monotonic())
        self.batches[int(batch_size)] += 1
        self.waits.append(wait)

    def windows_per_second(self) -> float:
        cut = time.monotonic() - HISTOGRAM_WINDOW_S
        while self.recent and self.recent[0] < cut:
            self.recent.popleft()
        return len(self.recent) / HISTOGRAM_WINDOW_S

    def snapshot(self) -> dict:
        waits = np.array(self.waits) * 1e3
        return {
            "version": VERSION,
            "streams": len(self.streams),
            "stream_list": list(self.streams.values()),
            "windows": self.windows,
            "windows_per_second": self.windows_per_second(),
            "batch_sizes": {str(k): v for k, v in sorted(self.batches.items())},
            "queue_wait_ms": {"median": float(np.median(waits)) if waits.size else None,
                              "p99": float(np.percentile(waits, 99)) if waits.size else None},
            "misses": {str(k): s.get("misses", 0) for k, s in self.streams.items()},
            "refused": dict(self.refused),
            "dropped_slow_clients": self.dropped,
        }


def build_app(spec: ServeSpec):
    """The Serve application (bound deployments) for ``spec``."""
    import torch
    from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
    from fastapi.responses import JSONResponse
    from ray import serve

    nets = check_spec(spec)
    infos = {m.name: model_info(m, spec.preset) for m in spec.models}
    cpus = spec.cpus_per_replica if spec.gpus_per_replica == 0 else 1.0
    actor_options = {"num_cpus": cpus, "num_gpus": spec.gpus_per_replica}

    @serve.deployment(num_replicas=spec.replicas, ray_actor_options=actor_options,
                      max_ongoing_requests=max(64, 4 * spec.max_batch))
    class SeparatorModel:
        """One served model: windows in, the model's stems out, many streams' windows per forward call."""

        def __init__(self, m: ModelSpec, precision, threads: int):
            from streamer.inference.loader import load_model

            torch.set_num_threads(max(1, int(threads)))
            loaded = load_model(m.config, m.checkpoint, device="auto", precision=precision)
            self.model, self.device, self.precision = loaded.model.eval(), loaded.device, loaded.precision

        @serve.batch(max_batch_size=spec.max_batch, batch_wait_timeout_s=spec.batch_wait_ms / 1000.0)
        async def run(self, windows: list, sent: list):
            from streamer.inference.runner import run_batch

            start = time.time()
            out = run_batch(self.model, np.stack(windows), self.device, self.precision)
            n = len(windows)
            return [(out[i], n, max(0.0, start - sent[i])) for i in range(n)]

    app = FastAPI()

    @serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
    @serve.ingress(app)
    class Ingress:
        """WebSocket streams (each with its window state) and the status endpoint."""

        def __init__(self, handles: dict):
            self.handles = handles
            self.infos = infos
            self.metrics = Metrics()
            self.per_client = collections.Counter()
            self.next_id = 0
            self._logger = None

        def _ensure_logger(self) -> None:
            if self._logger is None:
                self._logger = asyncio.get_running_loop().create_task(self._log_loop())

        async def _log_loop(self) -> None:
            while True:
                await asyncio.sleep(spec.log_every_s)
                s = self.metrics.snapshot()
                log.warning("serve: %d streams, %.1f windows/s, batch sizes %s, queue wait median %s ms, misses %d",
                            s["streams"], s["windows_per_second"], s["batch_sizes"], s["queue_wait_ms"]["median"],
                            sum(s["misses"].values()))

        def _authorised(self, token) -> bool:
            return isinstance(token, str) and hmac.compare_digest(token.encode(), spec.token.encode())

        def _client_allowed(self, host: str | None) -> bool:
            try:
                addr = ipaddress.ip_address(host or "")
            except ValueError:
                return False
            return addr.is_loopback or any(addr in n for n in nets)

        @app.get(STATUS_PATH)
        async def status(self, request: Request):
            self._ensure_logger()
            auth = request.headers.get("authorization", "")
            if not self._authorised(auth.removeprefix("Bearer ")):
                return JSONResponse({"error": "a valid token is required (Authorization: Bearer TOKEN)"}, 401)
            return JSONResponse(self.metrics.snapshot())

        async def _refuse(self, ws, reason: str, message: str) -> None:
            self.metrics.refused[reason] += 1
            try:
                await ws.send_text(error_message(message))
                await ws.close(code=1008)
            except Exception:  # noqa: BLE001 - already gone
                pass

        async def _send(self, ws, data) -> None:
            send = ws.send_bytes(data) if isinstance(data, bytes) else ws.send_text(data)
            await asyncio.wait_for(send, SEND_TIMEOUT_S)

        @app.websocket(PATH)
        async def stream(self, ws: WebSocket):
            self._ensure_logger()
            client = ws.client.host if ws.client else None
            await ws.accept()
            if not self._client_allowed(client):
                return await self._refuse(ws, "address", f"address {client} is not allowed")
            try:
                hello = loads(await asyncio.wait_for(ws.receive_text(), 10))
            except Exception:  # noqa: BLE001
                return await self._refuse(ws, "hello", "expected a hello first")
            if hello.get("type") != "hello" or hello.get("version") != VERSION:
                return await self._refuse(ws, "version", f"protocol version {hello.get('version')!r} is not "
                                          f"the server's {VERSION}: install the same stemstream version on both ends")
            if not self._authorised(hello.get("token")):
                return await self._refuse(ws, "token", "wrong token")
            if self.per_client[client] >= spec.max_streams_per_client:
                return await self._refuse(ws, "streams", f"{client} has {spec.max_streams_per_client} streams "
                                          "open already (the server's limit)")
            self.per_client[client] += 1
            sid = self.next_id = self.next_id + 1
            entry = {"id": sid, "client": client, "model": None, "mode": None, "hops": 0, "misses": 0, "sent": -1,
                     "received": -1}
            self.metrics.streams[sid] = entry
            try:
                await self._send(ws, dumps({"type": "hello", "version": VERSION,
                                            "models": {k: v.to_json() for k, v in self.infos.items()},
                                            "limits": {"max_batch_windows": spec.max_batch_windows}}))
                await self._serve(ws, entry)
            except (WebSocketDisconnect, asyncio.CancelledError):
                pass
            except (asyncio.TimeoutError, _Unread):
                self.metrics.dropped += 1
                log.warning("serve: dropped stream %d of %s: it did not take its results", sid, client)
                try:
                    await ws.close(code=1008)
                except Exception:  # noqa: BLE001
                    pass
            except RemoteError as exc:
                await self._refuse(ws, "protocol", str(exc))
            except Exception as exc:  # noqa: BLE001 - one stream's failure never takes the others down
                log.exception("serve: stream %d failed", sid)
                await self._refuse(ws, "failure", f"{type(exc).__name__}: {exc}")
            finally:
                self.per_client[client] -= 1
                self.metrics.streams.pop(sid, None)

        async def _run(self, name: str, windows: np.ndarray) -> list:
            sent = time.time()
            handle = self.handles[name]
            results = await asyncio.gather(*[handle.run.remote(w, sent) for w in windows])
            for _, size, wait in results:
                self.metrics.record(size, wait)
            return [r[0] for r in results]

        async def _finish(self, ws, pending: asyncio.Queue, entry: dict) -> None:
            try:
                while True:
                    state, epoch, index, win, run, wire = await pending.get()
                    (out,) = await run
                    region = state.finish(out, win)
                    entry["hops"] += 1
                    entry["sent"] = index
                    await self._send(ws, pack(Kind.REGION, epoch, index, region, wire))
            except asyncio.CancelledError:
                raise
            except asyncio.TimeoutError:
                self.metrics.dropped += 1
                log.warning("serve: dropped stream %d of %s: it did not take its results", entry["id"],
                            entry["client"])
            except Exception as exc:  # noqa: BLE001
                log.warning("serve: stream %d failed: %s: %s", entry["id"], type(exc).__name__, exc)
            try:
                await ws.close(code=1011)
            except Exception:  # noqa: BLE001
                pass

        async def _serve(self, ws, entry: dict) -> None:
            tasks: dict = {}
            try:
                await self._serve_frames(ws, entry, tasks)
            finally:
                if "finisher" in tasks:
                    tasks["finisher"].cancel()

        async def _serve_frames(self, ws, entry: dict, tasks: dict) -> None:
            info = state = None
            wire, epoch = "fp32", 0
            pending: asyncio.Queue = asyncio.Queue(maxsize=MAX_IN_FLIGHT)
            finisher = None
            max_unread = 0
            while True:
                if finisher is not None and finisher.done():
                    return
                message = await ws.receive()
                if message.get("type") == "websocket.disconnect":
                    return
                if message.get("text") is not None:
                    msg = loads(message["text"])
                    kind = msg["type"]
                    if kind == "ping":
                        await self._send(ws, dumps({"type": "pong", "t": msg.get("t")}))
                    elif kind == "report":
                        entry["misses"] = int(msg.get("misses", 0))
                        if int(msg.get("epoch", -1)) == epoch:
                            entry["received"] = int(msg.get("received", entry["received"]))
                    elif kind == "open":
                        info = self.infos.get(msg.get("model") or next(iter(self.infos)))
                        if info is None:
                            raise RemoteError(f"no model {msg.get('model')!r}; the server serves "
                                              f"{', '.join(self.infos)}")
                        mode, wire = msg.get("mode", "stream"), msg.get("wire", "fp32")
                        if mode not in MODES or wire not in WIRES:
                            raise RemoteError(f"mode must be one of {', '.join(MODES)} and wire one of "
                                              f"{', '.join(WIRES)}")
                        epoch = int(msg.get("epoch", 0))
                        entry.update(model=info.name, mode=mode)
                        ready = {"type": "ready", "epoch": epoch, "mode": mode}
                        if mode == "stream":
                            try:
                                state = StreamState(info, msg.get("hop"), msg.get("lookahead"), msg.get("crossfade"),
                                                    msg.get("residual"), int(msg.get("start_hop", 0)))
                            except (SettingsError, ValueError, TypeError) as exc:
                                raise RemoteError(str(exc)) from None
                            ready.update(state.describe())
                            entry["sent"] = entry["received"] = state.next_hop - 1
                            max_unread = int(np.ceil(spec.max_unread_s * info.sample_rate / state.hop))
                        else:
                            state = None
                        await self._send(ws, dumps(ready))
                    else:
                        raise RemoteError(f"unknown message type {kind!r}")
                    continue
                frame = message.get("bytes")
                if frame is None or info is None:
                    raise RemoteError("audio before the stream was opened")
                if state is not None:
                    k, ep, index, data = unpack(frame, lambda kd, n: _stream_shape(state, kd, n))
                    if ep != epoch:
                        continue  # a frame of a stream re-opened since
                    if k == Kind.PRIME:
                        state.prime(data)
                        continue
                    if entry["sent"] - entry["received"] > max_unread:
                        raise _Unread(f"dropped: the client did not confirm its results for {spec.max_unread_s:g} s")
                    win = state.push(index, data)
                    # pipelined: the next hops go to the model while this one runs (so consecutive hops of
                    # one stream batch too); the finisher overlap-adds and sends the regions in order
                    run = asyncio.ensure_future(self._run(info.name, win[None]))
                    if finisher is None:
                        finisher = tasks["finisher"] = asyncio.ensure_future(self._finish(ws, pending, entry))
                    await pending.put((state, epoch, index, win, run, wire))
                else:
                    k, ep, index, data = unpack(frame, lambda kd, n: _chunk_shape(info, kd, n,
                                                                                  spec.max_batch_windows))
                    outs = await self._run(info.name, data)
                    entry["hops"] += len(outs)
                    await self._send(ws, pack(Kind.STEMS, ep, index, np.stack(outs), wire))

    threads = max(1, int(cpus))
    handles = {name: SeparatorModel.options(name=f"model-{name}").bind(m, spec.precision, threads)
               for name, m in ((m.name, m) for m in spec.models)}
    return Ingress.bind(handles)


class _Unread(Exception):
    """A stream's client stopped taking its results."""


def _stream_shape(state: StreamState, kind: Kind, count: int):
    shape = state.shape_of(kind.name)
    return shape if shape is not None and int(np.prod(shape)) == count else None


def _chunk_shape(info: ModelInfo, kind: Kind, count: int, most: int):
    per = info.channels * info.window
    if kind != Kind.CHUNKS or count % per or not 1 <= count // per <= most:
        return None
    return (count // per, info.channels, info.window)


def start(spec: ServeSpec, address: str | None = None, num_cpus: int | None = None) -> str:
    """Start Ray (a new local instance, or connect to ``address``), Serve on ``spec.host:spec.port`` (HTTPS
    with ``spec.tls_cert``/``tls_key``) and the application; returns the service's WebSocket URL."""
    import ray
    from ray import serve

    app = build_app(spec)
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(address="local", num_cpus=num_cpus, **kwargs)
    http = {"host": spec.host, "port": spec.port}
    if spec.tls_cert:  # absolute: Serve's proxy actor opens them (with --ray, on the head node: same paths there)
        http.update(ssl_certfile=os.path.abspath(spec.tls_cert), ssl_keyfile=os.path.abspath(spec.tls_key))
        if spec.tls_key_password is not None:
            http["ssl_keyfile_password"] = spec.tls_key_password
    serve.start(http_options=http, logging_config={"log_level": "WARNING"})
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    return f"{spec.scheme}://{spec.host}:{spec.port}{PATH}"


def stop(local: bool = True) -> None:
    """``local`` (we started the Ray instance): stop Serve (its controller, proxy and replicas) and Ray, so no
    process is left. On a cluster we joined: delete our application only and disconnect."""
    import ray
    from ray import serve

    try:
        if local:
            serve.shutdown()
        else:
            serve.delete(APP_NAME)
    finally:
        if ray.is_initialized():
            ray.shutdown()


__all__ = ["ServeSpec", "ModelSpec", "build_app", "start", "stop", "check_spec", "check_tls", "APP_NAME", "WIRE_CODES"]

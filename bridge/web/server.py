"""``WebMixer``: the browser mixer's server (aiohttp), on its own thread with its own event loop.

``WebMixer(separator, port=8080, host="127.0.0.1", allow=(), token=None)``; ``start()`` binds the port
(a port that cannot be opened raises a ``SettingsError``), ``close()`` stops it (idempotent); ``url`` is
the page's address with its token. The server acts on the separator's one control model
(:class:`bridge.control.model.ControlModel`), so the page, OSC, MIDI and the terminal mixer stay in sync.

What is served (nothing else answers but 404):

* ``GET /?t=TOKEN``: the page (HTML with its CSS and JavaScript inlined, from ``bridge/web/static``;
  a Content-Security-Policy allows only those and a WebSocket to this server). Without the token, a
  short page that says to scan the QR code (status 401), with no controls.
* ``GET /ws?t=TOKEN``: one WebSocket per page. JSON text frames:

  - from the server: ``{"hello": {stems, buses, scenes, meters, state, status}}`` once on connect (the
    whole state: a page that reconnects resyncs from it); ``{"state": {address: value}}`` for every
    change, whoever made it (a gain of -inf is ``null``); ``{"m": [peak, rms, peak, rms, ...]}``
    meters (dBFS, 0.1 dB, in ``hello.meters`` order: stems, then ``bus:<name>``) at ``meter_hz``;
    ``{"status": {...}}`` once a second (``ControlModel.status().values()``); ``{"error": {address,
    reason}}`` to the sender of a value the model refused;
  - from the page: ``{"a": "<address>", "v": value}``: a fader (0..1), a gain (dB), a mute/solo/bypass
    (true/false or 1/0) at one of the model's addresses, or ``{"a": "/scene/<name>", "v": fade seconds}``.

Safety (the page controls a live show on a shared network):

* the token (random per run unless given) is needed for the page and the WebSocket (compared in
  constant time); the page is sent with ``Referrer-Policy: no-referrer`` so the token does not leak;
* a WebSocket whose ``Origin`` is not the page's own is refused (cross-site WebSocket hijacking);
  a client that sends no ``Origin`` is not a browser and still needs the token;
* the allow-list: listening on anything but a loopback address needs ``allow`` (``--web-allow``), as
  OSC does; other sources are answered 403 and counted;
* per client: at most ``RATE`` messages a second (a burst of ``BURST``); text frames over
  ``MAX_MESSAGE`` characters, binary frames, malformed JSON, unknown addresses, NaN/inf and wrong types
  are ignored and counted, logged at most once a second; a frame over ``MAX_FRAME`` bytes closes that
  connection (the page reconnects); at most ``MAX_CLIENTS`` pages.

Sending never waits for a slow page: each client has a sender task and a bounded outbox of one slot per
kind: state changes merge by address (never lost: the latest value of each address is sent), the meter
frame and the status keep only the newest (a frame replaced before it was sent is counted as dropped).
Nothing more is written to a page whose connection holds more than ``MAX_BUFFERED`` bytes it has not taken
(its meter frames are replaced meanwhile); one that stays so for ``SEND_TIMEOUT`` seconds is disconnected
(it reconnects and resyncs when it can). The audio callback is
never touched: changes go through the model's setters, which the audio side picks up at its next block;
the meters are read from the mixer's meter array.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import secrets
import socket
import threading
import struct
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Callable, Sequence

from streamer.errors import SettingsError

from bridge.control.addresses import ControlError
from bridge.control.model import ControlModel
from bridge.control.transport import is_loopback_host, parse_allow

log = logging.getLogger(__name__)

if sys.platform.startswith("linux"):
    import fcntl
    import termios

    _SIOCOUTQ = termios.TIOCOUTQ      # a socket's send queue: bytes not yet acknowledged by the peer
else:  # pragma: no cover - elsewhere only the transport's own buffer counts
    fcntl = None
    _SIOCOUTQ = None

METER_HZ = 25.0
STATUS_INTERVAL = 1.0
STATE_CHECK_INTERVAL = 0.25      # a change no listener announced (none expected) is found within this
MAX_MESSAGE = 1024               # characters in one text frame from a page; longer ones are ignored
MAX_FRAME = 64 * 1024            # bytes; a longer frame closes its connection
MAX_ADDRESS = 256
RATE = 200.0                     # messages a second per client (a fader drag sends about 60)
BURST = 400.0
MAX_CLIENTS = 32
MAX_BUFFERED = 64 * 1024         # bytes waiting in a page's connection: beyond it the page is not reading
SEND_TIMEOUT = 10.0
LOG_INTERVAL = 1.0
FLOOR_DB = -120.0
NOT_FROM_PAGES = ("/engine/reset", "/engine/status", "/scene")
COUNTER_NAMES = ("requests", "refused", "unauthorized", "bad_origin", "busy", "connections", "messages",
                 "applied", "errors", "malformed", "unknown", "oversized", "rate_limited", "state_frames",
                 "meter_frames", "meter_dropped")


class _Throttled:
    """Log lines at most once per ``interval`` seconds; the next line says how many were left out."""

    def __init__(self, interval: float = LOG_INTERVAL):
        self.interval = interval
        self._last = -math.inf
        self._skipped = 0
        self._lock = threading.Lock()

    def __call__(self, level: int, msg: str, *args) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.interval:
                self._skipped += 1
                return
            self._last = now
            skipped, self._skipped = self._skipped, 0
        if skipped:
            msg += " (%d more since the last line)"
            args += (skipped,)
        log.log(level, msg, *args)


def _jsonable(value: Any) -> Any:
    """A state value as JSON has it: -inf (a silent gain) and other non-finite numbers as null."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "dtype"):
        return _jsonable(value.item())
    return value


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number")


def check_options(host: str, allow: Sequence[str]) -> list:
    """The allow-list's networks; a ``SettingsError`` for a bad entry, or for a host that is not a loopback
    address with no allow-list (as ``--osc-allow``)."""
    try:
        networks = parse_allow(allow)
    except SettingsError as exc:
        raise SettingsError(str(exc).replace("bad OSC allow-list entry", "--web-allow: bad entry")) from None
    if not is_loopback_host(str(host)) and not networks:
        shown = host or "all interfaces"
        raise SettingsError(
            f"--web-allow is required when the browser mixer listens on {shown} (not a loopback address): "
            f"name the networks or addresses allowed to control this machine, e.g. --web-allow 192.168.1.0/24")
    return networks


def check_token(token: str | None) -> None:
    """A given token: 8 to 256 printable ASCII characters without spaces (a ``SettingsError`` otherwise)."""
    if token is not None and (not isinstance(token, str) or not 8 <= len(token) <= 256
                              or not token.isascii() or not token.isprintable() or " " in token):
        raise SettingsError("--web-token: expected 8 to 256 printable ASCII characters without spaces")


def lan_address() -> str:
    """This machine's address on its default network (for a URL a phone can open); 127.0.0.1 when none."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("10.254.254.254", 9))       # a UDP connect sends nothing: it only picks a route
        return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    finally:
        s.close()


def _name_thread(name: bytes) -> None:
    """The calling thread's name as top and ps show it (Linux; elsewhere nothing)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name[:15]), 0, 0, 0)   # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def _static(name: str) -> str:
    return resources.files("bridge.web").joinpath("static", name).read_text(encoding="utf-8")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


@dataclass(eq=False)
class _Client:
    ws: Any
    peer: str
    transport: Any = None
    stalled_since: float | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    state: dict = field(default_factory=dict)       # address -> value not yet sent (merged)
    meter: str | None = None                         # the newest meter frame not yet sent
    status: str | None = None
    error: str | None = None
    tokens: float = BURST
    refilled: float = field(default_factory=time.monotonic)
    closed: bool = False


class WebMixer:
    """The browser mixer's server (see the module docstring)."""

    def __init__(self, separator, port: int = 8080, host: str = "127.0.0.1", allow: Sequence[str] = (),
                 token: str | None = None, status: Callable[[], dict] | None = None,
                 meter_hz: float = METER_HZ, send_timeout: float = SEND_TIMEOUT):
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise SettingsError(f"--web: the port must be 0 to 65535 (0: any free port), got {port!r}")
        check_token(token)
        if not (isinstance(meter_hz, (int, float)) and 1.0 <= float(meter_hz) <= 60.0):
            raise SettingsError(f"web meter rate must be 1 to 60 Hz, got {meter_hz!r}")
        self.sep = separator
        self.model = ControlModel.of(separator)
        if status is not None:
            self.model.set_host_status(status)
        self.host = str(host)
        self.requested_port = port
        self.port = port
        self.networks = check_options(self.host, allow)
        self.loopback = is_loopback_host(self.host)
        self.token = token or secrets.token_urlsafe(12)
        self.meter_hz = float(meter_hz)
        self.send_timeout = float(send_timeout)
        self.counters = dict.fromkeys(COUNTER_NAMES, 0)
        self.clients: set[_Client] = set()
        self._log = _Throttled()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._dirty = False
        self._state: dict[str, Any] = {}
        self._allowed_cache: dict[str, bool] = {}
        self._closed = False
        self._page = self._build_page()

    # ------------------------------------------------------------------ lifetime
    def start(self) -> "WebMixer":
        """Bind the port and serve, on a thread of its own; raises a ``SettingsError`` when it cannot."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="stemstream-web", daemon=True)
        self._thread.start()
        self._ready.wait(30.0)
        if self._start_error is not None:
            self._thread.join(5.0)
            self._thread = None
            raise self._start_error
        if not self._ready.is_set():
            raise SettingsError(f"--web {self.requested_port}: the browser mixer did not start within 30 s")
        self.model.add_listener(self._changed)
        return self

    def close(self) -> None:
        """Stop serving: every page is told (close code 1001) and reconnects when a server is back."""
        if self._closed:
            return
        self._closed = True
        self.model.remove_listener(self._changed)
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:   # the loop has already ended
                pass
        if self._thread is not None:
            self._thread.join(10.0)
            self._thread = None

    def __enter__(self) -> "WebMixer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def display_host(self) -> str:
        """The host a phone can reach: the LAN address when listening on every interface."""
        h = self.host.strip().strip("[]")
        if h in ("", "0.0.0.0", "::"):
            return lan_address()
        return f"[{h}]" if ":" in h else h

    @property
    def base_url(self) -> str:
        return f"http://{self.display_host}:{self.port}/"

    @property
    def url(self) -> str:
        """The page's address with its token (what the QR code holds)."""
        return f"{self.base_url}?t={self.token}"

    def status_counters(self) -> dict[str, int]:
        """The counters (``clients``: pages connected now), as ``/engine/status`` shows them under ``web``."""
        out = dict(self.counters)
        out["clients"] = len(self.clients)
        return out

    # ------------------------------------------------------------------ the loop
    def _run(self) -> None:
        _name_thread(b"stemstream-web")
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to start() or logged
            if not self._ready.is_set():
                self._start_error = exc if isinstance(exc, SettingsError) else SettingsError(
                    f"--web {self.requested_port}: the browser mixer could not start: {type(exc).__name__}: {exc}")
                self._ready.set()
            else:
                log.error("the browser mixer stopped: %s: %s", type(exc).__name__, exc)
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    async def _serve(self) -> None:
        from aiohttp import web

        self._stop = asyncio.Event()
        app = web.Application(middlewares=[self._gate], client_max_size=4096)
        app.router.add_get("/", self._index)
        app.router.add_get("/ws", self._websocket)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host.strip().strip("[]") or None, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise SettingsError(f"--web {self.requested_port}: cannot listen on {self.host or 'all interfaces'} "
                                f"port {self.requested_port}: {exc.strerror or exc}") from None
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.port = int(server.sockets[0].getsockname()[1])
        self._state = {a: _jsonable(v) for a, v in self.model.space.state().items()}
        ticker = asyncio.ensure_future(self._ticker())
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            ticker.cancel()
            for c in list(self.clients):
                c.closed = True
                c.wake.set()
                try:
                    await asyncio.wait_for(c.ws.close(code=1001, message=b"server stopping"), 1.0)
                except Exception:  # noqa: BLE001 - a page that is gone already
                    pass
            await runner.cleanup()

    # ------------------------------------------------------------------ HTTP
    def _allowed(self, ip: str | None) -> bool:
        if ip is None:
            return False
        ok = self._allowed_cache.get(ip)
        if ok is None:
            try:
                addr = ipaddress.ip_address(ip.split("%", 1)[0])
                if addr.version == 6 and addr.ipv4_mapped is not None:
                    addr = addr.ipv4_mapped
            except ValueError:
                return False
            if self.networks:
                ok = any(addr.version == n.version and addr in n for n in self.networks)
            else:
                ok = addr.is_loopback
            if len(self._allowed_cache) > 4096:
                self._allowed_cache.clear()
            self._allowed_cache[ip] = ok
        return ok

    def _token_ok(self, request) -> bool:
        given = request.query.get("t", "")
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.token.encode())

    @property
    def _gate(self):
        from aiohttp import web

        @web.middleware
        async def gate(request, handler):
            self.counters["requests"] += 1
            if not self._allowed(request.remote):
                self.counters["refused"] += 1
                self._log(logging.WARNING, "browser mixer: request from %s refused (not in the allow-list)",
                          request.remote)
                return web.Response(status=403, text="forbidden\n")
            return await handler(request)
        return gate

    def _build_page(self) -> tuple[str, str, str]:
        css, js = _static("mixer.css"), _static("mixer.js")
        html = _static("index.html").replace("/*CSS*/", css).replace("/*JS*/", js)
        csp = ("default-src 'none'; " f"script-src {_csp_hash(js)}; style-src {_csp_hash(css)}; "
               "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
        return html, csp, _static("locked.html")

    async def _index(self, request):
        from aiohttp import web

        html, csp, locked = self._page
        headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
                   "X-Content-Type-Options": "nosniff"}
        if not self._token_ok(request):
            self.counters["unauthorized"] += 1
            self._log(logging.INFO, "browser mixer: page asked for without the token from %s", request.remote)
            return web.Response(status=401, text=locked, content_type="text/html",
                                headers=dict(headers, **{"Content-Security-Policy": "default-src 'none'; "
                                                         "style-src 'unsafe-inline'"}))
        return web.Response(text=html, content_type="text/html",
                            headers=dict(headers, **{"Content-Security-Policy": csp}))

    def _origin_ok(self, request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True        # not a browser (a browser always sends it): the token still applies
        return origin.lower() in (f"{request.scheme}://{request.host}".lower(),)

    # ------------------------------------------------------------------ WebSocket
    async def _websocket(self, request):
        from aiohttp import WSMsgType, web

        if not self._token_ok(request):
            self.counters["unauthorized"] += 1
            self._log(logging.WARNING, "browser mixer: WebSocket without the token from %s refused", request.remote)
            return web.Response(status=401, text="token required\n")
        if not self._origin_ok(request):
            self.counters["bad_origin"] += 1
            self._log(logging.WARNING, "browser mixer: WebSocket from origin %r refused (the page is at %s)",
                      request.headers.get("Origin"), request.host)
            return web.Response(status=403, text="cross-origin WebSocket refused\n")
        if len(self.clients) >= MAX_CLIENTS:
            self.counters["busy"] += 1
            self._log(logging.WARNING, "browser mixer: %d pages open already; one more refused", MAX_CLIENTS)
            return web.Response(status=503, text="too many pages open\n")
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME, heartbeat=10.0, compress=False)
        await ws.prepare(request)
        client = _Client(ws, str(request.remote), request.transport)
        self.counters["connections"] += 1
        hello = json.dumps({"hello": self._hello()}, separators=(",", ":"))
        self.clients.add(client)      # at the state the hello holds: later changes gather in its outbox
        sender = None
        try:
            await self._send(client, hello)
            sender = asyncio.ensure_future(self._sender(client))     # the outbox only after the hello
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    try:
                        self._receive(client, msg.data)
                    except Exception as exc:  # noqa: BLE001 - one message never ends the page or the server
                        self._bad(client, "errors", f"internal error: {type(exc).__name__}: {exc}")
                elif msg.type == WSMsgType.BINARY:
                    self._bad(client, "malformed", f"a binary frame ({len(msg.data)} bytes)")
                elif msg.type == WSMsgType.ERROR:
                    self._bad(client, "oversized", f"the connection failed: {ws.exception()}")
                    break
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            client.closed = True
            client.wake.set()
            self.clients.discard(client)
            if sender is not None:
                sender.cancel()
            if not ws.closed:
                await ws.close()
        return ws

    def _hello(self) -> dict:
        mixer = self.sep.mixer
        return {"stems": list(mixer.stem_names), "buses": list(mixer.bus_names), "scenes": self.model.scenes,
                "meters": list(mixer.meter_names), "meter_hz": self.meter_hz, "state": dict(self._state),
                "status": self._status_values()}

    def _status_values(self) -> dict:
        try:
            values = self.model.status().values()
        except Exception as exc:  # noqa: BLE001 - a host that cannot say now: the page keeps the last
            self._log(logging.WARNING, "browser mixer: status unavailable: %s", exc)
            return {}
        return {k: _jsonable(v) for k, v in values.items() if isinstance(v, (int, float, str))}

    async def _send(self, client: _Client, text: str) -> None:
        await asyncio.wait_for(client.ws.send_str(text), self.send_timeout)

    async def _sender(self, client: _Client) -> None:
        """Send a client what its outbox holds, state first; a page that stalls is disconnected."""
        try:
            while not client.closed:
                await client.wake.wait()
                client.wake.clear()
                while not client.closed:
                    if self._backlog(client) > MAX_BUFFERED:
                        # the page is not reading: nothing more is queued for it (meter frames are replaced
                        # meanwhile, state changes merge) until it catches up, or it is disconnected
                        now = time.monotonic()
                        if client.stalled_since is None:
                            client.stalled_since = now
                        elif now - client.stalled_since > self.send_timeout:
                            raise asyncio.TimeoutError
                        await asyncio.sleep(0.05)
                        continue
                    client.stalled_since = None
                    if client.state:
                        changes, client.state = client.state, {}
                        await self._send(client, json.dumps({"state": changes}, separators=(",", ":")))
                        self.counters["state_frames"] += 1
                    elif client.error is not None:
                        text, client.error = client.error, None
                        await self._send(client, text)
                    elif client.status is not None:
                        text, client.status = client.status, None
                        await self._send(client, text)
                    elif client.meter is not None:
                        text, client.meter = client.meter, None
                        await self._send(client, text)
                        self.counters["meter_frames"] += 1
                    else:
                        break
        except asyncio.CancelledError:
            raise
        except (asyncio.TimeoutError, ConnectionError, RuntimeError) as exc:
            self._log(logging.WARNING, "browser mixer: page at %s disconnected (%s)", client.peer,
                      "it took no frame for %.0f s" % self.send_timeout if isinstance(exc, asyncio.TimeoutError)
                      else exc)
            client.closed = True
            if client.transport is not None:
                client.transport.abort()     # its buffers are full: no close frame would get through

    @staticmethod
    def _backlog(client: _Client) -> int:
        """Bytes written to the page's connection that it has not taken: in the transport's buffer, plus
        (on Linux) in the kernel's send queue, unsent or not yet acknowledged."""
        transport = client.transport
        if transport is None:
            return 0
        try:
            n = int(transport.get_write_buffer_size())
        except Exception:  # noqa: BLE001 - a transport that is gone: the receive loop ends it
            return 0
        if _SIOCOUTQ is not None:
            sock = transport.get_extra_info("socket")
            try:
                n += struct.unpack("i", fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0\0\0\0"))[0]
            except (OSError, AttributeError, ValueError):
                pass
        return n

    # ------------------------------------------------------------------ messages from pages
    def _bad(self, client: _Client, counter: str, reason: str) -> None:
        self.counters[counter] += 1
        self._log(logging.WARNING, "browser mixer: message from %s ignored: %s", client.peer, reason)

    def _receive(self, client: _Client, text: str) -> None:
        self.counters["messages"] += 1
        now = time.monotonic()
        client.tokens = min(BURST, client.tokens + (now - client.refilled) * RATE)
        client.refilled = now
        if client.tokens < 1.0:
            self._bad(client, "rate_limited", f"more than {RATE:.0f} messages a second")
            return
        client.tokens -= 1.0
        if len(text) > MAX_MESSAGE:
            self._bad(client, "oversized", f"{len(text)} characters (at most {MAX_MESSAGE})")
            return
        try:
            msg = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            self._bad(client, "malformed", f"not JSON: {exc}")
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("a"), str) or set(msg) - {"a", "v"}:
            self._bad(client, "malformed", 'expected {"a": address, "v": value}')
            return
        address, value = msg["a"], msg.get("v")
        if not self._settable(address):
            self._bad(client, "unknown", f"no such address {address[:80]!r}")
            return
        if value is None and address.startswith("/scene/"):
            value = 0.0
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, (int, float)):
            self._bad(client, "malformed", f"{address}: expected a number or true/false, got {type(value).__name__}")
            return
        try:
            finite = math.isfinite(value)
        except OverflowError:     # an integer too large for a float
            finite = False
        if not finite:
            self._bad(client, "malformed", f"{address}: expected a finite number")
            return
        try:
            self.model.set(address, value)
            self.counters["applied"] += 1
        except (ControlError, SettingsError, ValueError) as exc:
            self._bad(client, "errors", str(exc))
            client.error = json.dumps({"error": {"address": address, "reason": str(exc)[:200]}})
            client.wake.set()

    def _settable(self, address: str) -> bool:
        if len(address) > MAX_ADDRESS or not address.startswith("/") or address in NOT_FROM_PAGES \
                or any(ch in address for ch in "*?[]{}, #"):
            return False
        eps = self.model.match(address)
        return len(eps) == 1 and eps[0].set is not None and eps[0].address == address

    # ------------------------------------------------------------------ changes, meters, status
    def _changed(self) -> None:
        """The model's listener (any thread): wake the loop once; the state is read there."""
        if self._dirty:
            return
        self._dirty = True
        loop = self._loop
        if loop is not None and not self._closed:
            try:
                loop.call_soon_threadsafe(self._flush_state)
            except RuntimeError:
                pass

    def _flush_state(self) -> None:
        self._dirty = False
        state = {a: _jsonable(v) for a, v in self.model.space.state().items()}
        changes = {a: v for a, v in state.items() if self._state.get(a, ...) != v}
        self._state = state
        if not changes:
            return
        for c in self.clients:
            c.state.update(changes)
            c.wake.set()

    def meter_frame(self) -> str:
        values = self.sep.mixer.meters.tolist()
        return json.dumps({"m": [round(max(FLOOR_DB, v), 1) if math.isfinite(v) else FLOOR_DB for v in values]},
                          separators=(",", ":"))

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.meter_hz
        next_meter = loop.time()
        next_status = next_meter
        next_check = next_meter
        while True:
            now = loop.time()
            if not self.clients:          # nobody to send to: wake rarely
                await asyncio.sleep(0.1)
                next_meter = next_status = next_check = loop.time()
                continue
            if self.clients:
                if now >= next_status:
                    next_status = now + STATUS_INTERVAL
                    status = json.dumps({"status": self._status_values()}, separators=(",", ":"))
                    for c in self.clients:
                        c.status = status
                        c.wake.set()
                if now >= next_check:
                    next_check = now + STATE_CHECK_INTERVAL
                    self._flush_state()
                frame = self.meter_frame()
                for c in self.clients:
                    if c.meter is not None:
                        self.counters["meter_dropped"] += 1
                    c.meter = frame
                    c.wake.set()
            next_meter = max(next_meter + period, now - period)   # exact on average; after a stall, from now
            await asyncio.sleep(max(0.0, next_meter - loop.time()))


__all__ = ["WebMixer", "check_options", "check_token", "lan_address", "METER_HZ"]

"""The network side of the OSC control server: packets in, bytes back, nothing about what they mean.

``OSCTransport`` listens on one port for UDP datagrams and, optionally, TCP connections that carry
OSC 1.1 SLIP-framed packets. Every packet that passes the checks (allowed source, size, the shape
of an OSC message or bundle) becomes a ``Packet`` in one bounded queue, in arrival order, whichever
transport it came on; the control layer reads them with ``get()``.

Threads, all daemon threads, all joined by ``close()``:

* one UDP receiver (a blocking socket with a short timeout, so ``close()`` is prompt); never a
  thread per datagram, which would reorder "mute" and "unmute";
* with ``tcp=True``: one accept thread and one reader thread per connection.

TCP connections are limited so that no set of idle or abusive connections can keep a controller out:

* at most ``max_connections`` (16) open, at most ``max_per_address`` (8) from one IP address;
* a new connection is always accepted: when its address already holds ``max_per_address``, that
  address's most idle connection is closed to make room; when ``max_connections`` are open, the most
  idle connection of the address holding the most is. "Most idle": a connection that has never sent
  an OSC packet goes before any that has; among those alike, the one whose last OSC packet (or whose
  connect, if none) is oldest. Bytes that are not an OSC packet (garbage, a frame that never ends)
  do not count as activity;
* a connection that sends no OSC packet for ``idle_timeout`` seconds (300) is closed;
* a peer that half-closes (shuts down its sending side) still gets the answers to the packets it
  sent: the connection stays open until the consumer has called ``Packet.done()`` on every one of
  them, at most ``HALF_CLOSE_LINGER_S``;
* connection events (evicted, idle, refused, garbage) are logged at most once a second, with the
  count of the ones left out.

Nothing in here blocks for long: a full queue drops the new packet (counted), a TCP peer that does
not read its replies is disconnected after a short send timeout, and a peer that sends garbage
costs at most ``max_packet`` bytes of buffer.

Safety rule: listening on anything but a loopback address needs an allow-list (``--osc-allow``);
sources outside it are dropped (UDP) or disconnected (TCP) and counted, never queued.
"""
from __future__ import annotations

import ipaddress
import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Sequence

from streamer.errors import SettingsError

log = logging.getLogger(__name__)

# OSC 1.1 stream framing is SLIP (RFC 1055): END ends a frame, ESC escapes END and ESC inside it.
SLIP_END = b"\xc0"
SLIP_ESC = b"\xdb"
SLIP_ESC_END = b"\xdb\xdc"     # an END byte inside a frame
SLIP_ESC_ESC = b"\xdb\xdd"     # an ESC byte inside a frame

_POLL_S = 0.1                  # receive/accept timeout: the longest close() waits for a thread
_TCP_IO_TIMEOUT_S = 0.25       # per-connection socket timeout; a reply that cannot go out by then closes the connection
_RCVBUF_BYTES = 4 * 1024 * 1024
_TCP_RECV_CHUNK = 65536
_TCP_BACKLOG = 128             # connections the kernel holds before accept(): a burst is taken, then sorted out
HALF_CLOSE_LINGER_S = 5.0      # after a peer's EOF, how long its answers may take before the connection closes
LOG_INTERVAL_S = 1.0           # connection events: at most one log line a second

COUNTER_NAMES = (
    "received",          # datagrams and complete non-empty TCP frames, before any check
    "queued",            # handed to get()
    "dropped_full",      # the queue was full
    "refused",           # source outside the allow-list (UDP datagrams, TCP connections)
    "oversize",          # larger than max_packet
    "malformed_frames",  # bad SLIP escape sequence on a TCP connection
    "not_osc",           # not shaped like an OSC message or bundle (empty, unaligned, wrong first bytes)
    "tcp_connections",   # TCP connections accepted
    "tcp_evicted",       # TCP connections closed to make room for a new one (the most idle first)
    "tcp_idle_closed",   # TCP connections closed after idle_timeout without an OSC packet
    "send_errors",       # replies / send_to that failed
)


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Packet:
    """One OSC packet (a message or a bundle) as received, with a way to answer its sender.

    ``done()``: the consumer has handled it (answers sent). A TCP peer that half-closed its side is
    answered until all its packets are done (at most ``HALF_CLOSE_LINGER_S``). Calling it is optional
    and idempotent enough: a second call does nothing."""

    data: bytes
    source: tuple[str, int]
    transport: str                                       # "udp" | "tcp"
    reply: Callable[[bytes], bool] = field(repr=False, compare=False)   # True when sent
    done: Callable[[], None] = field(default=_nothing, repr=False, compare=False)


# ------------------------------------------------------------------------------------------------
# addresses


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address from a socket or a user, with an IPv6 scope dropped and IPv4-mapped IPv6 unwrapped."""
    addr = ipaddress.ip_address(text.strip().strip("[]").split("%", 1)[0])
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def parse_allow(specs: Sequence[str] | str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Networks from allow-list entries: CIDR ("192.168.1.0/24") or single addresses ("10.0.0.5").

    Entries may also be comma-separated inside one string. Host bits in a CIDR are ignored
    ("192.168.1.7/24" means 192.168.1.0/24). A bad entry raises ``SettingsError`` naming it.
    """
    if isinstance(specs, str):
        specs = [specs]
    nets = []
    for spec in specs:
        for item in str(spec).replace(",", " ").split():
            try:
                if "/" in item:
                    net = ipaddress.ip_network(item.strip("[]"), strict=False)
                else:
                    addr = _ip(item)
                    net = ipaddress.ip_network(addr)
            except ValueError as e:
                raise SettingsError(
                    f"bad OSC allow-list entry {item!r}: expected an IP address or a network such as "
                    f"192.168.1.0/24 ({e})") from e
            if net.version == 6 and net.prefixlen >= 96:
                mapped = net.network_address.ipv4_mapped
                if mapped is not None:   # ::ffff:a.b.c.d/128 -> a.b.c.d/32
                    net = ipaddress.ip_network(f"{mapped}/{net.prefixlen - 96}")
            nets.append(net)
    return nets


def is_loopback_host(host: str) -> bool:
    """True when ``host`` names only loopback addresses ("127.0.0.1", "::1", "localhost", ...).

    The wildcards "" / "0.0.0.0" / "::" are not loopback. A host name is resolved; it counts as
    loopback only if every address it resolves to is.
    """
    h = host.strip().strip("[]")
    if not h:
        return False
    if h.lower() == "localhost":
        return True
    try:
        return _ip(h).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(h, None)
    except (OSError, UnicodeError):
        return False
    addrs = set()
    for info in infos:
        try:
            addrs.add(_ip(info[4][0]))
        except ValueError:
            return False
    return bool(addrs) and all(a.is_loopback for a in addrs)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _endpoint(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


# ------------------------------------------------------------------------------------------------
# framing


def slip_encode(data: bytes) -> bytes:
    """One SLIP frame (END at both ends, as OSC 1.1 recommends) around ``data``."""
    data = bytes(data)
    return SLIP_END + data.replace(SLIP_ESC, SLIP_ESC_ESC).replace(SLIP_END, SLIP_ESC_END) + SLIP_END


def _slip_unescape(raw: bytes) -> bytes | None:
    """The payload of one frame without its END bytes; None for a bad escape sequence."""
    n_esc = raw.count(SLIP_ESC)
    if not n_esc:
        return raw
    # every ESC must start ESC_END or ESC_ESC; non-overlapping counts make this exact
    if n_esc != raw.count(SLIP_ESC_END) + raw.count(SLIP_ESC_ESC):
        return None
    # valid input has no other ESC byte, so replacing ESC_END first cannot touch an ESC_ESC
    return raw.replace(SLIP_ESC_END, SLIP_END).replace(SLIP_ESC_ESC, SLIP_ESC)


OVERSIZE = "oversize"
MALFORMED = "malformed"


class SlipDecoder:
    """Incremental SLIP decoder for one stream, with bounded memory.

    ``feed(chunk)`` returns, in order, one item per finished frame: its payload (bytes), or the
    marker ``OVERSIZE`` / ``MALFORMED``. Empty frames (END END) are skipped. A frame that grows
    past ``max_packet`` decoded bytes is discarded as it arrives (reported once) up to the next END,
    so a peer that never sends END costs at most about ``max_packet`` plus one chunk.
    """

    def __init__(self, max_packet: int):
        self.max_packet = int(max_packet)
        self._buf = bytearray()
        self._discarding = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, chunk: bytes) -> list:
        out = []
        parts = bytes(chunk).split(SLIP_END)
        last = len(parts) - 1
        for i, part in enumerate(parts):
            if part and not self._discarding:
                self._buf += part
                if (len(self._buf) > self.max_packet
                        and len(self._buf) - self._buf.count(SLIP_ESC) > self.max_packet):
                    self._buf.clear()
                    self._discarding = True
                    out.append(OVERSIZE)
            if i == last:
                break
            # an END: the current frame is complete
            if self._discarding:
                self._discarding = False
            elif self._buf:
                payload = _slip_unescape(bytes(self._buf))
                self._buf.clear()
                out.append(MALFORMED if payload is None else payload)
        return out


def looks_like_osc(data: bytes) -> bool:
    """The shape of an OSC packet: 4-byte aligned, an address ("/...") or "#bundle"."""
    n = len(data)
    return n >= 4 and n % 4 == 0 and (data[0] == 0x2F or data.startswith(b"#bundle\x00"))


# ------------------------------------------------------------------------------------------------
# the transport


class _Throttled:
    """Log lines of one kind at most once per ``interval`` seconds; the next line says how many were
    left out. Lines whose level is off are not counted and take no slot."""

    def __init__(self, logger: logging.Logger, interval: float):
        self.log = logger
        self.interval = float(interval)
        self._lock = threading.Lock()
        self._last = -float("inf")
        self._skipped = 0

    def __call__(self, level: int, msg: str, *args) -> bool:
        if not self.log.isEnabledFor(level):
            return False
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.interval:
                self._skipped += 1
                return False
            self._last = now
            skipped, self._skipped = self._skipped, 0
        if skipped:
            msg += " (%d more since the last line)"
            args += (skipped,)
        self.log.log(level, msg, *args)
        return True


class _Conn:
    """One TCP connection: its socket, its reader thread and what the limits look at."""

    __slots__ = ("sock", "source", "send_lock", "closed", "thread", "reply", "warned", "connected",
                 "last_packet", "packets", "pending", "cond", "evicted")

    def __init__(self, sock: socket.socket, source: tuple[str, int]):
        self.sock = sock
        self.source = source
        self.send_lock = threading.Lock()
        self.closed = False
        self.thread: threading.Thread | None = None
        self.reply: Callable[[bytes], None] | None = None
        self.warned = False
        self.connected = time.monotonic()
        self.last_packet = self.connected    # the last OSC packet it sent (its connect until then)
        self.packets = 0                     # OSC packets it sent
        self.pending = 0                     # of those, queued and not yet done()
        self.cond = threading.Condition()
        self.evicted = False                 # closed by the server to make room

    def idle_rank(self) -> tuple:
        """Sorts the most idle first: never sent an OSC packet, then the oldest last packet."""
        return (self.packets > 0, self.last_packet)

    def idle_s(self, now: float) -> float:
        return now - self.last_packet

    def packet_done(self) -> None:
        with self.cond:
            self.pending = max(0, self.pending - 1)
            if not self.pending:
                self.cond.notify_all()

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def shutdown(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Done:
    """``Packet.done`` for a TCP packet: tells its connection once."""

    __slots__ = ("conn", "called")

    def __init__(self, conn: _Conn):
        self.conn = conn
        self.called = False

    def __call__(self) -> None:
        if not self.called:
            self.called = True
            self.conn.packet_done()


class OSCTransport:
    """Receives OSC packets on UDP (and optionally TCP with OSC 1.1 SLIP framing) on one port, in arrival order, into a bounded queue."""

    def __init__(self, port: int, host: str = "127.0.0.1", allow: Sequence[str] = (), tcp: bool = False,
                 queue_size: int = 4096, max_packet: int = 65536, max_connections: int = 16,
                 max_per_address: int = 8, idle_timeout: float | None = 300.0):
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise SettingsError(f"OSC port must be an integer 0..65535 (0 = any free port), got {port!r}")
        if int(queue_size) < 1:
            raise SettingsError(f"OSC queue_size must be at least 1, got {queue_size!r}")
        if int(max_packet) < 8:
            raise SettingsError(f"OSC max_packet must be at least 8 bytes, got {max_packet!r}")
        if int(max_connections) < 1:
            raise SettingsError(f"OSC max_connections must be at least 1, got {max_connections!r}")
        if int(max_per_address) < 1:
            raise SettingsError(f"OSC max_per_address must be at least 1, got {max_per_address!r}")
        if idle_timeout is not None and not float(idle_timeout) > 0:
            raise SettingsError(f"OSC idle_timeout must be a number of seconds above 0 (None: never), "
                                f"got {idle_timeout!r}")
        self.host = str(host)
        self._bind_host = self.host.strip().strip("[]")
        self._family = _family(self._bind_host)
        self._networks = parse_allow(allow)
        self.loopback = is_loopback_host(self.host)
        if not self.loopback and not self._networks:
            shown = self.host or "all interfaces"
            raise SettingsError(
                f"--osc-allow is required when listening for OSC on {shown} (not a loopback address): "
                f"name the networks or addresses allowed to control this machine, e.g. --osc-allow 192.168.1.0/24")
        self._requested_port = port
        self.tcp = bool(tcp)
        self.queue_size = int(queue_size)
        self.max_packet = int(max_packet)
        self.max_connections = int(max_connections)
        self.max_per_address = min(int(max_per_address), self.max_connections)
        self.idle_timeout = None if idle_timeout is None else float(idle_timeout)
        self.port: int = port
        self.endpoints: list[str] = []
        self.rcvbuf: int = 0                          # the UDP receive buffer the kernel granted
        self._queue: queue.Queue[Packet] = queue.Queue(self.queue_size)
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._count_lock = threading.Lock()
        self._lock = threading.Lock()                 # start/close/connection table
        self._stop = threading.Event()
        self._started = False
        self._closed = False
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._conns: set[_Conn] = set()              # the table the limits count
        self._readers: set[_Conn] = set()            # every connection whose reader thread runs
        self._log_conn = _Throttled(log, LOG_INTERVAL_S)      # connection events users should see
        self._log_debug = _Throttled(log, LOG_INTERVAL_S)     # the same for --verbose only
        self._allow_cache: dict[str, bool] = {}
        self._warned_full = False

    # ---- state -------------------------------------------------------------------------------

    @property
    def counters(self) -> dict[str, int]:
        """A snapshot of the counters (see ``COUNTER_NAMES``)."""
        with self._count_lock:
            return dict(self._counters)

    @property
    def allow(self) -> list:
        return list(self._networks)

    @property
    def running(self) -> bool:
        return self._started and not self._closed

    @property
    def connections(self) -> int:
        """TCP connections open now (those being closed not counted)."""
        with self._lock:
            return len(self._conns)

    def qsize(self) -> int:
        """Packets waiting for ``get()``; never more than ``queue_size``."""
        return self._queue.qsize()

    def __repr__(self) -> str:
        state = "running" if self.running else ("closed" if self._closed else "not started")
        return f"OSCTransport({', '.join(self.endpoints) or f'{self.host}:{self.port}'}, {state})"

    def _count(self, name: str, n: int = 1) -> None:
        with self._count_lock:
            self._counters[name] += n

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "OSCTransport":
        """Bind the sockets and start the threads. Binding failures raise ``SettingsError``."""
        with self._lock:
            if self._closed:
                raise RuntimeError("this OSCTransport is closed; make a new one")
            if self._started:
                return self
            # with port 0 the UDP port is picked first; the same TCP port may be taken: try again
            attempts = 20 if (self.tcp and self._requested_port == 0) else 1
            for attempt in range(attempts):
                udp = self._bind(socket.SOCK_DGRAM, self._requested_port, "udp")
                port = udp.getsockname()[1]
                tcp = None
                if self.tcp:
                    try:
                        tcp = self._bind(socket.SOCK_STREAM, port, "tcp")
                    except SettingsError:
                        udp.close()
                        if attempt == attempts - 1:
                            raise
                        continue
                break
            self._udp, self._tcp = udp, tcp
            self.port = port
            bound = udp.getsockname()[0]
            self.endpoints = [_endpoint("udp", bound, port)] + ([_endpoint("tcp", bound, port)] if tcp else [])
            self._threads = [threading.Thread(target=self._udp_loop, name=f"osc-udp-{port}", daemon=True)]
            if tcp is not None:
                self._threads.append(threading.Thread(target=self._accept_loop, name=f"osc-tcp-accept-{port}",
                                                      daemon=True))
            self._started = True
            for t in self._threads:
                t.start()
        log.info("OSC listening on %s%s", ", ".join(self.endpoints),
                 f" (allow: {', '.join(map(str, self._networks))})" if self._networks else "")
        return self

    def _bind(self, kind: int, port: int, scheme: str) -> socket.socket:
        sock = None
        try:
            sock = socket.socket(self._family, kind)
            if kind == socket.SOCK_STREAM:
                # only skips TIME_WAIT after a restart; Linux still refuses a second listener
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            else:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF_BYTES)
                except OSError:
                    pass                      # best effort; the kernel caps it at net.core.rmem_max
                self.rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            sock.bind((self._bind_host, port))
            if kind == socket.SOCK_STREAM:
                sock.listen(max(_TCP_BACKLOG, self.max_connections))
            sock.settimeout(_POLL_S)
        except (OSError, OverflowError, ValueError, TypeError, UnicodeError) as e:
            if sock is not None:
                sock.close()
            reason = getattr(e, "strerror", None) or str(e)
            raise SettingsError(
                f"cannot listen for OSC on {_endpoint(scheme, self.host, port)}: {reason}") from e
        return sock

    def close(self) -> None:
        """Stop the threads (within about ``_POLL_S``), close the sockets. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conns = list(self._readers)
        self._stop.set()
        for c in conns:
            c.shutdown()                       # wakes its reader at once
            c.wake()                           # and one waiting for its answers after an EOF
        for t in self._threads:
            t.join(timeout=2.0)
        for c in conns:
            if c.thread is not None:
                c.thread.join(timeout=2.0)
        for sock in (self._udp, self._tcp):
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
        if self._started:
            log.info("OSC transport closed: %s", self.counters)

    def __enter__(self) -> "OSCTransport":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- the control side --------------------------------------------------------------------

    def get(self, timeout: float) -> Packet | None:
        """The next packet in arrival order, or None after ``timeout`` seconds (0: don't wait)."""
        try:
            if timeout is not None and timeout <= 0:
                return self._queue.get_nowait()
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def send_to(self, address: tuple[str, int], data: bytes) -> bool:
        """Send one UDP datagram from the server socket (feedback to subscribers). Never raises;
        a failure is logged at debug level, counted in ``send_errors`` and returns False."""
        sock = self._udp
        if sock is None or self._closed:
            self._count("send_errors")
            self._log_debug(logging.DEBUG, "OSC send_to %s: transport not running", address)
            return False
        try:
            sock.sendto(data, address)
            return True
        except Exception as e:                 # noqa: BLE001 - a send must never take the caller down
            self._count("send_errors")
            self._log_debug(logging.DEBUG, "OSC send_to %s failed: %s", address, e)
            return False

    # ---- receiving ---------------------------------------------------------------------------

    def _allowed(self, ip: str) -> bool:
        if not self._networks:
            return True
        ok = self._allow_cache.get(ip)
        if ok is None:
            try:
                addr = _ip(ip)
            except ValueError:
                ok = False
            else:
                ok = any(addr in net for net in self._networks)
            if len(self._allow_cache) > 4096:
                self._allow_cache.clear()
            self._allow_cache[ip] = ok
        return ok

    def _offer(self, pkt: Packet, conn: _Conn | None = None) -> None:
        if conn is not None:
            with conn.cond:
                conn.pending += 1              # before the put: the consumer may be done with it at once
        try:
            self._queue.put_nowait(pkt)
        except queue.Full:
            if conn is not None:
                conn.packet_done()
            self._count("dropped_full")
            if not self._warned_full:
                self._warned_full = True
                log.warning("OSC queue full (%d packets): dropping new packets until it drains", self.queue_size)
            return
        self._count("queued")

    def _udp_loop(self) -> None:
        sock = self._udp
        stop = self._stop
        bufsize = self.max_packet + 1
        reply_udp = self._reply_udp
        while not stop.is_set():
            try:
                data, src = sock.recvfrom(bufsize)
            except socket.timeout:
                continue
            except OSError as e:
                if stop.is_set() or sock.fileno() < 0:
                    break
                log.debug("OSC udp receive error: %s", e)
                continue
            self._count("received")
            if not self._allowed(src[0]):
                self._count("refused")
                continue
            if len(data) > self.max_packet:
                self._count("oversize")
                continue
            if not looks_like_osc(data):
                self._count("not_osc")
                continue
            self._offer(Packet(data, (src[0], src[1]), "udp", partial(reply_udp, src)))

    def _reply_udp(self, dest, data: bytes) -> bool:
        return self.send_to(dest, data)

    def _accept_loop(self) -> None:
        lsock = self._tcp
        stop = self._stop
        while not stop.is_set():
            try:
                sock, src = lsock.accept()
            except socket.timeout:
                continue
            except OSError as e:
                if stop.is_set() or lsock.fileno() < 0:
                    break
                log.debug("OSC tcp accept error: %s", e)
                stop.wait(0.05)                # e.g. out of file descriptors: don't spin
                continue
            source = (src[0], src[1])
            if not self._allowed(source[0]):
                self._count("refused")
                self._log_conn(logging.INFO, "OSC tcp connection from %s refused (not in the allow-list)",
                               source[0])
                sock.close()
                continue
            conn = _Conn(sock, source)
            with self._lock:
                closed = self._closed
                if not closed:
                    victim = self._make_room(source[0])
                    self._conns.add(conn)
                    self._readers.add(conn)
            if closed:
                sock.close()
                continue
            if victim is not None:
                self._count("tcp_evicted")
                victim.evicted = True
                with victim.send_lock:         # not while its reader closes the socket
                    if not victim.closed:
                        victim.shutdown()      # its reader wakes at once and closes it
                victim.wake()
                why = (f"idle {victim.idle_s(conn.connected):.1f} s" if victim.packets
                       else f"no OSC packet in {victim.idle_s(conn.connected):.1f} s")
                self._log_conn(logging.WARNING,
                               "OSC tcp connection from %s:%d closed (%s) to make room for %s:%d "
                               "(at most %d connections, %d per address)",
                               victim.source[0], victim.source[1], why, source[0], source[1],
                               self.max_connections, self.max_per_address)
            self._count("tcp_connections")
            sock.settimeout(_TCP_IO_TIMEOUT_S)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            conn.reply = partial(self._reply_tcp, conn)
            conn.thread = threading.Thread(target=self._conn_loop, args=(conn,),
                                           name=f"osc-tcp-{source[0]}:{source[1]}", daemon=True)
            conn.thread.start()

    def _make_room(self, ip: str) -> _Conn | None:
        """With ``self._lock`` held: the connection to close for a new one from ``ip`` (taken out of the
        table), or None when the limits leave room."""
        same = [c for c in self._conns if c.source[0] == ip]
        if len(same) >= self.max_per_address:
            pool = same                       # an address only ever competes with itself
        elif len(self._conns) >= self.max_connections:
            per_ip: dict[str, int] = {}
            for c in self._conns:
                per_ip[c.source[0]] = per_ip.get(c.source[0], 0) + 1
            most = max(per_ip.values())
            pool = [c for c in self._conns if per_ip[c.source[0]] == most]
        else:
            return None
        victim = min(pool, key=_Conn.idle_rank)
        self._conns.discard(victim)
        return victim

    def _conn_loop(self, conn: _Conn) -> None:
        decoder = SlipDecoder(self.max_packet)
        stop = self._stop
        idle_timeout = self.idle_timeout
        eof = False
        try:
            while not stop.is_set() and not conn.evicted:
                # checked on every pass: bytes that are not OSC packets do not keep a connection open
                if idle_timeout is not None and time.monotonic() - conn.last_packet > idle_timeout:
                    self._count("tcp_idle_closed")
                    self._log_conn(logging.INFO, "OSC tcp connection from %s:%d closed: no OSC packet in %g s",
                                   conn.source[0], conn.source[1], idle_timeout)
                    break
                try:
                    chunk = conn.sock.recv(_TCP_RECV_CHUNK)
                except socket.timeout:
                    continue
                except OSError as e:
                    self._log_debug(logging.DEBUG, "OSC tcp %s:%d receive error: %s", *conn.source, e)
                    break
                if not chunk:
                    eof = not conn.evicted
                    break
                for item in decoder.feed(chunk):
                    self._count("received")
                    if item is OVERSIZE:
                        self._count("oversize")
                        self._warn_stream(conn, f"a frame larger than {self.max_packet} bytes")
                    elif item is MALFORMED:
                        self._count("malformed_frames")
                        self._warn_stream(conn, "a frame with a bad SLIP escape")
                    elif not looks_like_osc(item):
                        self._count("not_osc")
                        self._warn_stream(conn, "a frame that is not an OSC packet")
                    else:
                        conn.packets += 1
                        conn.last_packet = time.monotonic()
                        self._offer(Packet(item, conn.source, "tcp", conn.reply, _Done(conn)), conn)
            if eof:
                # the peer has half-closed: answer what it sent, then close
                deadline = time.monotonic() + HALF_CLOSE_LINGER_S
                with conn.cond:
                    while conn.pending and not stop.is_set() and not conn.evicted:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        conn.cond.wait(min(left, _POLL_S))
        finally:
            with self._lock:
                self._conns.discard(conn)
                self._readers.discard(conn)
            with conn.send_lock:
                conn.closed = True
                conn.shutdown()
                try:
                    conn.sock.close()
                except OSError:
                    pass
            self._log_debug(logging.DEBUG, "OSC tcp connection from %s:%d closed", *conn.source)

    def _warn_stream(self, conn: _Conn, what: str) -> None:
        if not conn.warned:
            conn.warned = True
            self._log_conn(logging.WARNING, "OSC tcp connection from %s:%d sent %s (dropped); OSC over TCP here "
                           "is OSC 1.1 SLIP framing, not the OSC 1.0 length prefix",
                           conn.source[0], conn.source[1], what)

    def _reply_tcp(self, conn: _Conn, data: bytes) -> bool:
        try:
            frame = slip_encode(data)
        except Exception as e:                 # noqa: BLE001
            self._count("send_errors")
            self._log_debug(logging.DEBUG, "OSC tcp reply to %s:%d: bad data: %s", *conn.source, e)
            return False
        with conn.send_lock:
            if conn.closed or self._closed:
                self._count("send_errors")
                self._log_debug(logging.DEBUG, "OSC tcp reply to %s:%d: connection closed", *conn.source)
                return False
            try:
                conn.sock.sendall(frame)
                return True
            except Exception as e:             # noqa: BLE001
                # a partial frame may be on the wire: the stream is out of step, so end it
                self._count("send_errors")
                self._log_debug(logging.DEBUG, "OSC tcp reply to %s:%d failed (%s); closing the connection",
                                *conn.source, e)
                conn.shutdown()
                return False

"""``OSCControl``: a separator's mixer, effects, scenes and engine, controlled over OSC, with meters and
state feedback for subscribers.

``bridge.OSCControl(separator, port=9000)`` (``host=``, ``allow=``, ``tcp=``; a context manager;
``close()``). The addresses are in :mod:`bridge.control.addresses`; the network side (UDP, TCP with
SLIP framing, the allow-list, the bounded queue) in :mod:`bridge.control.transport`.

Three threads, none of them on the audio path:

* the transport's receivers put whole packets, in arrival order, into a bounded queue (a flood is
  dropped there and counted);
* the *apply* thread takes them one at a time, so one client's messages take effect in the order
  sent; a bundle's messages are applied inside ``StemMixer.batch()``, so they reach the audio side at
  one and the same block. Control changes use the same setters as Python code: the audio side picks
  them up at its next block boundary and ramps;
* the *feedback* thread sends each subscriber its meters (``/meter/<stem>`` and ``/meter/bus/<bus>``:
  peak dBFS, RMS dBFS) at the rate it asked for, and echoes every state change, whoever made it
  (OSC, the terminal mixer, MIDI, Python, a scene's fade): the control model calls a listener after
  every change (:meth:`bridge.control.model.ControlModel.add_listener`), which only sets an event;
  the feedback thread then compares the echoed values with the ones it sent last and sends what
  differs, at most once every ``ECHO_INTERVAL`` (a fader moved from elsewhere is one echo per
  interval with its latest value, never a flood). Nothing changes: nothing is compared. Effect
  parameters are echoed when they change through the model (any surface); set directly on a plugin
  from Python, call ``ControlModel.announce()``.

``/subscribe [port] [rate Hz]`` registers the sender (at its own port, or the one given) for
``SUBSCRIPTION_SECONDS``: renew it before it expires, as X32 clients renew ``/xremote``;
``/unsubscribe [port]`` ends it. Bad messages are ignored: a log line (at most one a second, with the
count of the ones left out) and an ``/error`` message (address, reason) to the sender only; the
subscribers get at most one ``/error/summary`` (count, source, address, reason: how many since the
last summary, and the latest) every ``ERROR_SUMMARY_INTERVAL``, so that one client's mistakes cannot
flood every controller.
"""
from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

from streamer.errors import SettingsError

from .addresses import ControlError
from .model import ControlModel
from .transport import OSCTransport, Packet

log = logging.getLogger(__name__)

SUBSCRIPTION_SECONDS = 10.0
DEFAULT_METER_HZ = 25.0
MAX_METER_HZ = 100.0
MAX_SUBSCRIBERS = 32
ECHO_INTERVAL = 0.02
ERROR_LOG_INTERVAL = 1.0
ERROR_SUMMARY_INTERVAL = 1.0      # at most one /error/summary a second to each subscriber
MAX_SEND_FAILURES = 20
FEEDBACK_PREFIXES = ("/error", "/meter/", "/engine/status/")   # what servers send, never commands


class _RateLimitPythonOsc(logging.Filter):
    """python-osc logs a warning on the root logger for every unknown type tag in a packet (one packet
    can hold hundreds): those records are let through at most once per ERROR_LOG_INTERVAL."""

    def __init__(self):
        super().__init__("stemstream-pythonosc")
        self._last = 0.0
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "pythonosc" not in record.pathname:
            return True
        now = time.monotonic()
        if now - self._last >= ERROR_LOG_INTERVAL:
            self._last = now
            return True
        self.suppressed += 1
        return False


PYTHONOSC_LOG_FILTER = _RateLimitPythonOsc()


def _install_log_filter() -> None:
    root = logging.getLogger()
    if PYTHONOSC_LOG_FILTER not in root.filters:
        root.addFilter(PYTHONOSC_LOG_FILTER)


def _arg(builder: OscMessageBuilder, value: Any) -> None:
    if isinstance(value, bool):
        builder.add_arg(int(value), OscMessageBuilder.ARG_TYPE_INT)
    elif isinstance(value, int):
        builder.add_arg(value, OscMessageBuilder.ARG_TYPE_INT)
    elif isinstance(value, float):
        builder.add_arg(value, OscMessageBuilder.ARG_TYPE_FLOAT)
    elif value is None:
        builder.add_arg("", OscMessageBuilder.ARG_TYPE_STRING)
    else:
        builder.add_arg(str(value), OscMessageBuilder.ARG_TYPE_STRING)


def message(address: str, *values: Any) -> OscMessageBuilder:
    b = OscMessageBuilder(address=address)
    for v in values:
        _arg(b, float(v) if hasattr(v, "dtype") else v)  # numpy scalars are refused by python-osc
    return b


def packet(messages: list[OscMessageBuilder]) -> bytes:
    """One message as itself, several as one bundle (one datagram)."""
    if len(messages) == 1:
        return messages[0].build().dgram
    bundle = OscBundleBuilder(IMMEDIATELY)
    for m in messages:
        bundle.add_content(m.build())
    return bundle.build().dgram


@dataclass
class Subscriber:
    key: tuple
    send: Callable[[bytes], None]
    rate: float
    expires: float
    next_meter: float = 0.0
    failures: int = 0


class OSCControl:
    """OSC control of ``separator`` (a ``StemSeparator``). ``status``: the host's status (the live session
    passes its own :class:`bridge.live.status.LiveStatus`: latency, seconds, xruns; see
    :meth:`ControlModel.set_host_status`); ``scenes``: name -> Scene (default: the separator's, from its rig).
    As a control surface it has ``label`` and :meth:`surface_counters`."""

    def __init__(self, separator, port: int = 9000, host: str = "127.0.0.1", allow: Sequence[str] = (),
                 tcp: bool = False, status: Callable[[], Any] | None = None, scenes: dict | None = None,
                 queue_size: int = 4096, subscription_seconds: float = SUBSCRIPTION_SECONDS):
        self.sep = separator
        self.mixer = separator.mixer
        self.model = ControlModel.of(separator)   # shared with every other surface of this separator
        self.recaller = self.model.recaller
        if scenes is not None:
            self.recaller.scenes = dict(scenes)
            self.model.refresh()
        if status is not None:
            self.model.set_host_status(status)
        self.subscription_seconds = float(subscription_seconds)
        self.space = self.model.space
        self.counters = {"messages": 0, "applied": 0, "queries": 0, "errors": 0, "malformed": 0,
                         "feedback_ignored": 0, "meter_packets": 0, "echo_packets": 0, "echo_checks": 0}
        self.subscribers: dict[tuple, Subscriber] = {}
        self._subs_lock = threading.Lock()
        self._stop = threading.Event()
        self._dirty = threading.Event()   # set by the model's change listener; the feedback thread compares
        self._last_error_log = 0.0
        self._errors_unlogged = 0
        self._errors_lock = threading.Lock()
        self._errors_unsummarized = 0     # errors since the last /error/summary
        self._last_error: tuple[str, str, str] = ("", "", "")   # source, address, reason
        self._threads: list[threading.Thread] = []
        self.transport = OSCTransport(port, host=host, allow=allow, tcp=tcp, queue_size=queue_size)
        self._start()

    # ------------------------------------------------------------------ lifetime
    def _start(self) -> None:
        _install_log_filter()
        self.transport.start()
        self.model.add_surface("osc", self._counters)
        self._state = self.space.state()
        self._on_change = self._dirty.set  # one bound method: removed by identity in close()
        self.model.add_listener(self._on_change)
        for target, name in ((self._apply_loop, "stemstream-osc-apply"), (self._feedback_loop, "stemstream-osc-feedback")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    @property
    def endpoints(self) -> list[str]:
        """Where it listens, e.g. ``["udp://127.0.0.1:9000"]``."""
        return list(self.transport.endpoints)

    @property
    def port(self) -> int:
        return self.transport.port

    @property
    def label(self) -> str:
        """``osc: udp://127.0.0.1:9000`` (as a control surface)."""
        return "osc: " + ", ".join(self.endpoints)

    def surface_counters(self) -> dict[str, int]:
        """Messages, errors, packets dropped (queue full) and refused (allow-list), subscribers."""
        return self._counters()

    def close(self) -> None:
        """Stop the threads and close the sockets (idempotent)."""
        self._stop.set()
        self.model.remove_listener(self._on_change)
        self.model.remove_surface("osc")
        self.transport.close()
        for t in self._threads:
            t.join(2.0)
        self._threads = []

    def __enter__(self) -> "OSCControl":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def refresh(self) -> None:
        """Rebuild the address space (after effect chains or scenes changed)."""
        self.space.refresh()
        self._dirty.set()                 # new addresses: their values are echoed

    # ------------------------------------------------------------------ applying messages
    def _apply_loop(self) -> None:
        while not self._stop.is_set():
            pkt = self.transport.get(0.05)
            if pkt is not None:
                try:
                    self.handle(pkt)
                except Exception as exc:  # noqa: BLE001 - the server must survive anything a packet causes
                    self._error(pkt, "", f"internal error: {type(exc).__name__}: {exc}")
                finally:
                    pkt.done()            # answered: a TCP peer that half-closed may now be closed

    def handle(self, pkt: Packet) -> None:
        """Apply one packet (a message, or a bundle as one change)."""
        try:
            parsed = OscPacket(pkt.data)
        except Exception as exc:  # noqa: BLE001 - python-osc raises several kinds on malformed data
            self.counters["malformed"] += 1
            self._error(pkt, "", f"malformed OSC packet ({len(pkt.data)} bytes): {exc}")
            return
        msgs = [tm.message for tm in parsed.messages]
        if len(msgs) > 1:
            with self.mixer.batch():
                for m in msgs:
                    self._message(m.address, tuple(m.params), pkt)
        elif msgs:
            self._message(msgs[0].address, tuple(msgs[0].params), pkt)

    def _message(self, address: str, args: tuple, pkt: Packet) -> None:
        """One message; whatever it does wrong is answered and logged, and the next message goes on."""
        self.counters["messages"] += 1
        if address.startswith(FEEDBACK_PREFIXES):
            # what servers send (ours included: a subscription pointed back at a server); answering it
            # could start an endless exchange of errors, so it is counted and dropped
            self.counters["feedback_ignored"] += 1
            return
        try:
            if address == "/subscribe":
                self._subscribe(pkt, args)
            elif address == "/unsubscribe":
                self._unsubscribe(pkt, args)
            elif address == "/engine/status":
                pkt.reply(packet([message(f"/engine/status/{k}", v) for k, v in self.status().items()]))
                self.counters["queries"] += 1
            elif address == "/scene" and not args:
                pkt.reply(packet([message("/scene", *self.recaller.scenes)]))
                self.counters["queries"] += 1
            else:
                self._endpoints(address, args, pkt)
        except SettingsError as exc:   # ControlError, or a setter's own refusal
            self._error(pkt, address, str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad message never cancels the others
            self._error(pkt, address, f"internal error: {type(exc).__name__}: {exc}")

    def _endpoints(self, address: str, args: tuple, pkt: Packet) -> None:
        eps = self.space.match(address)
        if not eps:
            raise ControlError(f"{address}: no such address (see /scene, /engine/status; stems: "
                               f"{', '.join(self.mixer.stem_names)}; buses: {', '.join(self.mixer.bus_names)})")
        if not args and all(ep.get is not None for ep in eps):
            pkt.reply(packet([message(ep.address, ep.get()) for ep in eps]))
            self.counters["queries"] += 1
            return
        settable = [ep for ep in eps if ep.set is not None]
        if not settable:
            raise ControlError(f"{address}: answers queries only (send it without arguments)")
        self.model.set_endpoints(settable, args)   # one change; takes over a fade; announces effect parameters
        self.counters["applied"] += 1

    # ------------------------------------------------------------------ errors
    def _error(self, pkt: Packet | None, address: str, reason: str) -> None:
        self.counters["errors"] += 1
        now = time.monotonic()
        if now - self._last_error_log >= ERROR_LOG_INTERVAL:
            more = f" ({self._errors_unlogged} more since the last line)" if self._errors_unlogged else ""
            source = f" from {pkt.source[0]}:{pkt.source[1]}" if pkt is not None else ""
            log.warning("OSC message ignored%s: %s%s", source, reason, more)
            self._last_error_log = now
            self._errors_unlogged = 0
        else:
            self._errors_unlogged += 1
        if pkt is not None:
            pkt.reply(packet([message("/error", address, reason)]))   # the sender, and only the sender
        with self._errors_lock:           # the subscribers: a summary, from the feedback thread
            self._errors_unsummarized += 1
            self._last_error = (f"{pkt.source[0]}:{pkt.source[1]}" if pkt is not None else "", address, reason)

    def _error_summary(self) -> bytes | None:
        """``/error/summary count source address reason`` for the errors since the last one, or None."""
        with self._errors_lock:
            count, self._errors_unsummarized = self._errors_unsummarized, 0
            last = self._last_error
        if not count:
            return None
        return packet([message("/error/summary", count, *last)])

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        """What ``/engine/status`` answers: latency, real-time factor, misses, xruns (live), the model,
        and every surface's counters (this server's: messages, errors, drops, refusals, subscribers)."""
        return self.model.status().values()

    def _counters(self) -> dict[str, int]:
        t = self.transport.counters
        return {"messages": self.counters["messages"], "errors": self.counters["errors"],
                "dropped": int(t.get("dropped_full", 0)), "refused": int(t.get("refused", 0)),
                "subscribers": len(self.subscribers)}

    # ------------------------------------------------------------------ subscriptions
    def _subscribe(self, pkt: Packet, args: tuple) -> None:
        port, rate = None, DEFAULT_METER_HZ
        if len(args) > 2:
            raise ControlError("/subscribe: expected [port] [rate Hz]")
        if args:
            if isinstance(args[0], bool) or not isinstance(args[0], (int, float)) or not math.isfinite(args[0]) \
                    or not 0 <= int(args[0]) <= 65535:
                raise ControlError(f"/subscribe: the port must be 0 to 65535 (0: the sender's), got {args[0]!r}")
            port = int(args[0]) or None
        if len(args) > 1:
            if isinstance(args[1], bool) or not isinstance(args[1], (int, float)) or not math.isfinite(args[1]) \
                    or args[1] <= 0:
                raise ControlError(f"/subscribe: the rate must be a number of Hz above 0, got {args[1]!r}")
            rate = min(MAX_METER_HZ, float(args[1]))
        if pkt.transport == "tcp":
            key, send = ("tcp",) + tuple(pkt.source), pkt.reply
        else:
            target = (pkt.source[0], port or pkt.source[1])
            if target[1] == self.transport.port and self._is_local(target[0]):
                raise ControlError("/subscribe: that is this server's own address; give the port your client "
                                   "listens on")
            key = ("udp",) + target
            send = (lambda data, t=target: self.transport.send_to(t, data))
        now = time.monotonic()
        with self._subs_lock:
            if key not in self.subscribers and len(self.subscribers) >= MAX_SUBSCRIBERS:
                raise ControlError(f"/subscribe: {MAX_SUBSCRIBERS} subscribers already; unsubscribe one first")
            old = self.subscribers.get(key)
            self.subscribers[key] = Subscriber(key, send, rate, now + self.subscription_seconds,
                                               old.next_meter if old else now)

    def _is_local(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return addr.is_loopback or ip == self.transport.host or self.transport.host in ("0.0.0.0", "::", "")

    def _unsubscribe(self, pkt: Packet, args: tuple) -> None:
        port = int(args[0]) if args and isinstance(args[0], (int, float)) and not isinstance(args[0], bool) \
            and math.isfinite(args[0]) else 0
        key = ("tcp",) + tuple(pkt.source) if pkt.transport == "tcp" else \
            ("udp", pkt.source[0], port or pkt.source[1])
        with self._subs_lock:
            self.subscribers.pop(key, None)

    def _live_subscribers(self) -> list[Subscriber]:
        now = time.monotonic()
        with self._subs_lock:
            for key in [k for k, s in self.subscribers.items() if s.expires <= now]:
                del self.subscribers[key]
            return list(self.subscribers.values())

    def _send(self, sub: Subscriber, data: bytes) -> None:
        """Send to a subscriber; a TCP subscriber whose connection is gone is dropped at once, a UDP one
        after MAX_SEND_FAILURES failures in a row (it expires anyway)."""
        if sub.send(data) is False:
            sub.failures += 1
            if sub.key[0] == "tcp" or sub.failures >= MAX_SEND_FAILURES:
                with self._subs_lock:
                    if self.subscribers.get(sub.key) is sub:
                        del self.subscribers[sub.key]
        else:
            sub.failures = 0

    # ------------------------------------------------------------------ feedback
    def meter_messages(self) -> list[OscMessageBuilder]:
        m = self.mixer
        levels = m.meter_view(m.meters.copy())   # one snapshot of what the audio side wrote
        out = [message(f"/meter/{stem}", *levels[stem]) for stem in m.stem_names]
        out += [message(f"/meter/bus/{bus}", *levels[f"bus:{bus}"]) for bus in m.bus_names]
        return out

    def _feedback_loop(self) -> None:
        next_echo = time.monotonic()
        next_summary = next_echo
        while not self._stop.wait(0.005):
            subs = self._live_subscribers()
            now = time.monotonic()
            if now >= next_summary:
                data = self._error_summary()
                if data is not None:      # errors with no subscriber to tell are dropped from the summary
                    next_summary = now + ERROR_SUMMARY_INTERVAL
                    for sub in subs:
                        self._send(sub, data)
            if now >= next_echo and self._dirty.is_set():
                self._dirty.clear()       # a change after this is seen at the next interval
                next_echo = now + ECHO_INTERVAL
                self.counters["echo_checks"] += 1
                state = self.space.state()
                changed = [message(a, v) for a, v in state.items() if self._state.get(a) != v]
                self._state = state
                if changed and subs:
                    data = packet(changed)
                    for sub in subs:
                        self._send(sub, data)
                        self.counters["echo_packets"] += 1
            due = [s for s in subs if s.next_meter <= now]
            if due:
                data = packet(self.meter_messages())
                for sub in due:
                    self._send(sub, data)
                    self.counters["meter_packets"] += 1
                    # keep the rate exact on average; after a stall, start again from now
                    sub.next_meter = max(sub.next_meter + 1.0 / sub.rate, now - 1.0 / sub.rate)

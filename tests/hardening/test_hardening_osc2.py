"""Hardening of the OSC remote control, second round (issue 28, items 6 and 7), against real clients on
private loopback ports: plain TCP sockets speaking OSC 1.1 SLIP (framed with python-osc's own ``slip``
module, not the server's), python-osc over UDP and liblo's ``oscdump`` as a subscriber.

6. No set of idle or abusive TCP connections keeps a real controller out: a new connection always gets
   in (the longest-idle connection, of its own address first, makes room), a connection that has sent
   OSC ranks after every one that never has, an idle connection is closed after ``idle_timeout``,
   connection events are logged at most once a second, and a client that half-closes its side still
   gets the answers to what it sent.
7. One client's mistakes are answered to that client only; subscribers get at most one
   ``/error/summary`` a second (the count since the last one and the latest error).

Every loop is bounded in count and time; every server is started here on port 0 and closed here.
"""
import logging
import queue
import shutil
import socket
import subprocess
import threading
import time

import pytest
from pythonosc import slip
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

from bridge import OSCControl
from bridge.control.transport import OSCTransport

from conftest import FOUR_STEMS, four_stem_separator, wait_for

STEMS = FOUR_STEMS


@pytest.fixture
def sep(tmp_path):
    return four_stem_separator(tmp_path)


def osc(address, *args) -> bytes:
    b = OscMessageBuilder(address=address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


def messages(data: bytes):
    return [(m.message.address, tuple(m.message.params)) for m in OscPacket(data).messages]


class SlipClient:
    """A TCP controller: a plain socket, SLIP frames (python-osc's encoder) out, frames split on END in."""

    def __init__(self, port, bind="127.0.0.1", timeout=3.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.bind((bind, 0))
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        self.eof = False

    def send(self, address, *args):
        self.sock.sendall(slip.encode(osc(address, *args)))

    def receive(self, seconds=3.0, until=None):
        """Messages received within ``seconds`` (or until ``until(messages)`` holds, or end of stream)."""
        out, deadline, reads = [], time.monotonic() + seconds, 0
        while not self.eof:                               # at least one read, even with seconds=0
            *frames, self.buf = self.buf.split(b"\xc0")
            out += [m for f in frames if f for m in messages(slip.decode(b"\xc0" + f + b"\xc0"))]
            if until is not None and until(out):
                break
            left = deadline - time.monotonic()
            if left <= 0 and reads:
                break
            reads += 1
            self.sock.settimeout(max(0.005, min(0.1, left)))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                self.eof = True
                break
            if not chunk:
                self.eof = True
            self.buf += chunk
        *frames, self.buf = self.buf.split(b"\xc0")
        out += [m for f in frames if f for m in messages(slip.decode(b"\xc0" + f + b"\xc0"))]
        return out

    def query(self, address="/stem/vocals/mute", seconds=3.0):
        self.send(address)
        got = self.receive(seconds, until=lambda m: any(a == address for a, _ in m))
        return [v for a, v in got if a == address]

    def close(self):
        self.sock.close()


def open_idle(port, n, bind="127.0.0.1", seconds=20.0):
    """``n`` connections that never send anything (bounded by ``seconds`` in all)."""
    socks, deadline = [], time.monotonic() + seconds
    for _ in range(n):
        if time.monotonic() > deadline:
            break
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(2.0)
        s.bind((bind, 0))
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            s.close()
            continue
        socks.append(s)
    return socks


class Records(logging.Handler):
    """Log records of one logger at INFO and above, for the duration of a ``with``."""

    def __init__(self, name):
        super().__init__(logging.INFO)
        self.logger = logging.getLogger(name)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def __enter__(self):
        self.level = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level)


# ------------------------------------------------------------------------------------------- item 6


def test_200_idle_connections_cannot_keep_a_controller_out_and_are_logged_once_a_second(sep):
    with Records("bridge.control.transport") as logs, OSCControl(sep, port=0, tcp=True) as control:
        t = control.transport
        sep.mixer.stems["vocals"].mute = True
        first = SlipClient(control.port)                        # a controller that is already working
        assert first.query() == [(1,)]
        t0 = time.monotonic()
        idle = open_idle(control.port, 200)
        try:
            assert len(idle) == 200
            # a new controller gets in and is answered, and the working one was not the one evicted
            late = SlipClient(control.port)
            assert late.query() == [(1,)], t.counters
            assert first.query() == [(1,)], t.counters
            sep.mixer.stems["vocals"].mute = False
            assert late.query() == [(0,)]
            elapsed = time.monotonic() - t0
            assert t.counters["tcp_connections"] == 202, t.counters
            # all from 127.0.0.1: one address holds at most max_per_address; the idle ones made room,
            # the oldest first, and nothing else was closed
            assert t.connections <= t.max_per_address
            assert t.counters["tcp_evicted"] == 202 - t.connections, t.counters
            closed = 0
            for s in idle[:50]:
                s.settimeout(0.5)
                try:
                    closed += s.recv(10) == b""
                except ConnectionResetError:
                    closed += 1
                except socket.timeout:
                    pass
            assert closed == 50
            late.close()
            first.close()
        finally:
            for s in idle:
                s.close()
    lines = [r for r in logs.records if "connection" in r.getMessage()]
    assert len(lines) <= elapsed + 2, (len(lines), elapsed, [r.getMessage() for r in lines[:5]])
    assert any("more since the last line" in r.getMessage() for r in lines) or len(lines) <= 2
    print(f"\n200 idle connections + 2 controllers: {len(lines)} connection log lines in {elapsed:.2f} s; "
          f"{t.counters['tcp_evicted']} evicted")


def test_abusive_connections_sending_garbage_or_dribbling_do_not_keep_a_controller_out(sep):
    with Records("bridge.control.transport") as logs, OSCControl(sep, port=0, tcp=True) as control:
        t = control.transport
        stop = threading.Event()
        abusers = open_idle(control.port, 3 * t.max_connections)

        def abuse():        # garbage frames, bad escapes, a frame that never ends: never a valid OSC packet
            deadline = time.monotonic() + 10.0
            i = 0
            while not stop.is_set() and time.monotonic() < deadline:
                s = abusers[i % len(abusers)]
                try:
                    s.sendall([b"\xc0not osc!\xc0", b"\xc0\xdb\x41\xc0", b"/abc"][i % 3])
                except OSError:
                    pass
                i += 1
                time.sleep(0.001)

        thread = threading.Thread(target=abuse, daemon=True)
        thread.start()
        try:
            assert wait_for(lambda: t.counters["not_osc"] + t.counters["malformed_frames"] >= 10, 5.0)
            c = SlipClient(control.port)
            assert c.query("/stem/drums/mute") == [(0,)], t.counters
            time.sleep(0.2)
            assert c.query("/stem/drums/solo") == [(0,)], t.counters
            c.close()
        finally:
            stop.set()
            thread.join(5.0)
            for s in abusers:
                s.close()
    # one "sent garbage" warning per connection would be 48 lines
    warnings = [r for r in logs.records if r.levelno >= logging.WARNING]
    assert len(warnings) <= 6, [r.getMessage() for r in warnings]


def test_a_half_closed_client_still_gets_its_answers(sep):
    sep.mixer.stems["bass"].gain_db = -6.0
    with OSCControl(sep, port=0, tcp=True) as control:
        for _ in range(3):
            c = SlipClient(control.port)
            c.send("/stem/bass/gain")
            c.send("/stem/bass/mute")
            c.send("/engine/status")
            c.sock.shutdown(socket.SHUT_WR)                       # "that is all I have to say"
            got = c.receive(5.0)
            assert c.eof, "the server did not end the connection after answering"
            c.close()
            assert ("/stem/bass/gain", (-6.0,)) in got, got
            assert ("/stem/bass/mute", (0,)) in got, got
            assert any(a == "/engine/status/osc_messages" for a, _ in got), got
        assert wait_for(lambda: control.transport.connections == 0, 3.0)


def test_idle_connections_are_closed_after_the_idle_timeout_and_active_ones_are_not():
    with OSCTransport(0, tcp=True, idle_timeout=0.8) as t:
        idle = open_idle(t.port, 2)
        active = SlipClient(t.port)
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < 2.0:                         # a packet every 0.1 s for 2 s
            active.send("/keep", n)
            n += 1
            time.sleep(0.1)
        for s in idle:
            s.settimeout(1.5)
            try:
                assert s.recv(10) == b""
            except ConnectionResetError:
                pass
            s.close()
        took = time.monotonic() - t0
        assert took < 4.0
        assert t.counters["tcp_idle_closed"] == 2
        active.send("/keep", n)                                   # still open
        got = []
        while len(got) < n + 1:
            pkt = t.get(1.0)
            assert pkt is not None
            got.append(messages(pkt.data)[0][1][0])
        assert got == list(range(n + 1))
        assert t.connections == 1
        active.close()


def test_one_address_cannot_evict_the_connections_of_another():
    with OSCTransport(0, host="0.0.0.0", allow=["127.0.0.0/8"], tcp=True, max_connections=4,
                      max_per_address=2) as t:
        mine = [SlipClient(t.port), SlipClient(t.port, bind="127.0.0.3")]
        for i, c in enumerate(mine):
            c.send("/hello", i)
            assert t.get(2.0) is not None
        flood = open_idle(t.port, 20, bind="127.0.0.2")
        try:
            assert wait_for(lambda: t.counters["tcp_connections"] == 22, 5.0), t.counters
            assert wait_for(lambda: t.connections <= 4, 2.0)
            for i, c in enumerate(mine):                           # both still served
                c.send("/again", i)
                pkt = t.get(2.0)
                assert pkt is not None and messages(pkt.data) == [("/again", (i,))]
                pkt.reply(osc("/ok", i))
                assert c.receive(2.0, until=lambda m: m) == [("/ok", (i,))]
            # 127.0.0.2 holds at most 2: the others were closed
            open_ = 0
            for s in flood:
                s.settimeout(0.2)
                try:
                    open_ += s.recv(10) != b""
                except socket.timeout:
                    open_ += 1
                except ConnectionResetError:
                    pass
            assert open_ <= 2
        finally:
            for s in flood:
                s.close()
            for c in mine:
                c.close()


# ------------------------------------------------------------------------------------------- item 7


class UDPClient:
    def __init__(self, port):
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.02)

    def send(self, address, *args):
        self.sock.sendto(osc(address, *args), ("127.0.0.1", self.port))

    def drain(self, out, seconds=0.0):
        deadline = time.monotonic() + seconds
        for _ in range(100_000):
            try:
                out += messages(self.sock.recv(65536))
            except socket.timeout:
                if time.monotonic() >= deadline:
                    break
        return out

    def close(self):
        self.sock.close()


@pytest.mark.skipif(not shutil.which("oscdump"), reason="liblo-tools (oscdump) not installed")
def test_one_clients_errors_go_to_it_and_subscribers_get_a_summary_at_most_once_a_second(sep):
    n = 500
    with OSCControl(sep, port=0, tcp=True) as control:
        # subscribers: a UDP client, liblo's oscdump (subscribed by port) and a TCP controller
        sub = UDPClient(control.port)
        sub.send("/subscribe", 0, 1.0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            dump_port = probe.getsockname()[1]
        dump = subprocess.Popen(["oscdump", "-L", str(dump_port)], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        dump_lines = queue.Queue()
        reader = threading.Thread(target=lambda: [dump_lines.put(line) for line in dump.stdout], daemon=True)
        reader.start()
        tcp = SlipClient(control.port)
        try:
            sub.send("/subscribe", dump_port, 1.0)
            tcp.send("/subscribe", 0, 1.0)
            assert wait_for(lambda: len(control.subscribers) == 3), control.subscribers
            # oscdump gives no "ready" sign: wait until it prints a meter
            assert dump_lines.get(timeout=5.0)
            sub_got, tcp_got, bad_got = [], [], []
            bad = UDPClient(control.port)
            bad_source = "127.0.0.1:%d" % bad.sock.getsockname()[1]
            t0 = time.monotonic()
            for i in range(n):                                   # refused: a negative rate
                bad.send("/subscribe", 0, -1.0)
                if i % 25 == 24:                                  # read as we go: no kernel drops
                    bad.drain(bad_got, 0.01)
                    sub.drain(sub_got)
                    tcp_got += tcp.receive(0.0)
            burst = time.monotonic() - t0

            def summarized(got):
                return sum(v[0] for a, v in got if a == "/error/summary")

            def dumped():
                return sum(int(f[3]) for f in dump_got if len(f) > 3 and f[1] == "/error/summary")

            dump_got = []
            deadline = time.monotonic() + 10.0                    # until everything is in, read as it comes
            while time.monotonic() < deadline:
                bad.drain(bad_got, 0.02)
                sub.drain(sub_got)
                tcp_got += tcp.receive(0.0)
                while not dump_lines.empty():
                    dump_got.append(dump_lines.get_nowait().split())
                if (len([m for m in bad_got if m[0] == "/error"]) >= n and summarized(sub_got) >= n
                        and summarized(tcp_got) >= n and dumped() >= n):
                    break
            took = time.monotonic() - t0
            time.sleep(0.2)                                       # nothing more comes
            bad.drain(bad_got, 0.05)
            sub.drain(sub_got, 0.05)
            tcp_got += tcp.receive(0.05)
        finally:
            tcp.close()
            dump.kill()                                            # by its PID
            dump.wait(5.0)
            reader.join(2.0)
        bad.close()
        sub.close()

    # the sender gets every one of its errors
    errors = [v for a, v in bad_got if a == "/error"]
    assert len(errors) == n and all(v[0] == "/subscribe" and "rate" in v[1] for v in errors), len(errors)
    bound = took + 2
    for name, got in (("udp", sub_got), ("tcp", tcp_got)):
        assert not [m for m in got if m[0] == "/error"], f"{name} subscriber got the sender's /error messages"
        summaries = [v for a, v in got if a == "/error/summary"]
        assert 1 <= len(summaries) <= bound, (name, len(summaries), took)
        assert sum(v[0] for v in summaries) == n, (name, summaries)
        assert summaries[-1][1:3] == (bad_source, "/subscribe") and "rate" in summaries[-1][3]
    # oscdump: "<timetag> /error/summary isss 123 127.0.0.1:PORT /subscribe ..."
    assert not [f for f in dump_got if len(f) > 1 and f[1] == "/error"]
    dump_summaries = [f for f in dump_got if len(f) > 3 and f[1] == "/error/summary"]
    assert 1 <= len(dump_summaries) <= bound and sum(int(f[3]) for f in dump_summaries) == n, dump_summaries
    print(f"\n{n} refused /subscribe in {burst:.2f} s: sender {len(errors)} /error; subscribers "
          f"{len([m for m in sub_got if m[0] == '/error/summary'])} (udp), "
          f"{len([m for m in tcp_got if m[0] == '/error/summary'])} (tcp), {len(dump_summaries)} (oscdump) summaries")

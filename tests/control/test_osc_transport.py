"""bridge.control.transport against real, independent OSC clients: liblo's oscsend/oscdump and python-osc."""
import queue
import shutil
import socket
import struct
import subprocess
import threading
import time

import pytest

from bridge.control.transport import (MALFORMED, OVERSIZE, OSCTransport, Packet, SlipDecoder, is_loopback_host,
                                      looks_like_osc, parse_allow, slip_encode)
from streamer.errors import SettingsError

from conftest import wait_for as wait_until

try:
    from pythonosc import slip as osc_slip
    from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
    from pythonosc.osc_message import OscMessage
    from pythonosc.osc_message_builder import build_msg
    from pythonosc.osc_packet import OscPacket
    from pythonosc.tcp_client import SimpleTCPClient
    from pythonosc.udp_client import SimpleUDPClient
    HAVE_PYTHONOSC = True
except ImportError:       # python-osc is the reference client here, not a dependency of the transport
    HAVE_PYTHONOSC = False

needs_pythonosc = pytest.mark.skipif(not HAVE_PYTHONOSC, reason="python-osc not installed")
needs_liblo = pytest.mark.skipif(not (shutil.which("oscsend") and shutil.which("oscdump")),
                                 reason="liblo-tools (oscsend, oscdump) not installed")


def osc_message(address: str, *ints: int) -> bytes:
    """A ,i... OSC message built by hand (for the tests that don't need python-osc)."""
    def pad(b):
        return b + b"\0" * (4 - len(b) % 4)
    return pad(address.encode()) + pad(b"," + b"i" * len(ints)) + b"".join(struct.pack(">i", i) for i in ints)


def decode(pkt: Packet):
    """(address, params) of every message in a packet, parsed by python-osc."""
    return [(m.message.address, list(m.message.params)) for m in OscPacket(pkt.data).messages]


def osc_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("osc-") and t.is_alive()]


def free_port(kind=socket.SOCK_DGRAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def no_thread_left_behind():
    before = set(osc_threads())
    yield
    assert wait_until(lambda: set(osc_threads()) <= before, 2.0), osc_threads()


# ------------------------------------------------------------------------------------------------
# liblo (C library, independent implementation)


@needs_liblo
@needs_pythonosc
def test_oscsend_message_arrives_as_one_packet():
    with OSCTransport(0) as t:
        subprocess.run(["oscsend", "localhost", str(t.port), "/stem/vocals/mute", "i", "1"],
                       check=True, timeout=5, capture_output=True)
        pkt = t.get(2.0)
        assert pkt is not None
        assert pkt.transport == "udp"
        assert pkt.source[0] == "127.0.0.1" and pkt.source[1] > 0
        assert decode(pkt) == [("/stem/vocals/mute", [1])]
        assert t.get(0.05) is None
        c = t.counters
        assert (c["received"], c["queued"], c["refused"], c["dropped_full"]) == (1, 1, 0, 0)
        assert t.endpoints == [f"udp://127.0.0.1:{t.port}"]


@needs_liblo
def test_oscdump_receives_send_to():
    port2 = free_port()
    proc = subprocess.Popen(["oscdump", "-L", str(port2)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)
    reader.start()
    try:
        with OSCTransport(0) as t:
            msg = osc_message("/meter/vocals", 7, -12)
            line = None
            deadline = time.monotonic() + 5.0
            while line is None and time.monotonic() < deadline:   # oscdump gives no "ready" sign: resend
                assert t.send_to(("127.0.0.1", port2), msg) is True
                try:
                    line = lines.get(timeout=0.1)
                except queue.Empty:
                    pass
            assert line is not None, proc.stderr.read() if proc.poll() is not None else "no output from oscdump"
            # "<timetag> /meter/vocals ii 7 -12"
            assert line.split()[1:] == ["/meter/vocals", "ii", "7", "-12"]
            assert t.counters["send_errors"] == 0
    finally:
        proc.kill()                                   # by its PID (Popen.kill)
        proc.wait(timeout=5)
        reader.join(timeout=2)


# ------------------------------------------------------------------------------------------------
# python-osc over UDP


@needs_pythonosc
def test_500_back_to_back_arrive_complete_and_in_order():
    n = 500
    with OSCTransport(0) as t:
        got = []

        def read():
            while len(got) < n:
                pkt = t.get(1.0)
                if pkt is None:
                    return
                got.append(decode(pkt)[0])

        reader = threading.Thread(target=read)
        reader.start()
        client = SimpleUDPClient("127.0.0.1", t.port)
        t0 = time.perf_counter()
        for i in range(n):
            client.send_message("/seq", [i, 0.5])
        reader.join(timeout=5)
        elapsed = time.perf_counter() - t0
        client._sock.close()
        assert [params[0] for _, params in got] == list(range(n))
        assert all(addr == "/seq" for addr, _ in got)
        assert t.counters["dropped_full"] == 0 and t.counters["queued"] == n
        print(f"{n} messages in order in {elapsed * 1e3:.1f} ms ({n / elapsed:.0f} msg/s)")


@needs_pythonosc
def test_bundle_arrives_as_one_packet():
    with OSCTransport(0) as t:
        bundle = OscBundleBuilder(IMMEDIATELY)
        bundle.add_content(build_msg("/stem/drums/gain", -6.0))
        bundle.add_content(build_msg("/stem/bass/mute", 1))
        client = SimpleUDPClient("127.0.0.1", t.port)
        client.send(bundle.build())
        pkt = t.get(2.0)
        assert pkt is not None and pkt.data.startswith(b"#bundle\0")
        assert decode(pkt) == [("/stem/drums/gain", [-6.0]), ("/stem/bass/mute", [1])]
        assert t.get(0.05) is None
        client._sock.close()


@needs_pythonosc
def test_udp_reply_reaches_the_python_osc_client():
    with OSCTransport(0) as t:
        client = SimpleUDPClient("127.0.0.1", t.port)
        client.send_message("/stem/vocals/mute", None)            # a query: no args
        pkt = t.get(2.0)
        assert pkt is not None and decode(pkt) == [("/stem/vocals/mute", [])]
        assert pkt.source[1] == client._sock.getsockname()[1]
        pkt.reply(build_msg("/stem/vocals/mute", 1).dgram)
        replies = client.get_messages(2.0)
        msg = next(replies)
        assert (msg.address, msg.params) == ("/stem/vocals/mute", [1])
        assert t.counters["send_errors"] == 0
        client._sock.close()


def test_not_osc_and_oversize_datagrams_are_dropped_and_counted():
    with OSCTransport(0, max_packet=64) as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        dest = ("127.0.0.1", t.port)
        s.sendto(b"hello world!", dest)                 # aligned but not an address
        s.sendto(b"/ab", dest)                          # not 4-byte aligned
        s.sendto(osc_message("/" + "x" * 80, 1), dest)  # > 64 bytes
        s.sendto(osc_message("/ok", 1), dest)
        pkt = t.get(2.0)
        assert pkt is not None and pkt.data == osc_message("/ok", 1)
        c = t.counters
        assert (c["received"], c["not_osc"], c["oversize"], c["queued"]) == (4, 2, 1, 1)


# ------------------------------------------------------------------------------------------------
# TCP, OSC 1.1 SLIP


@needs_pythonosc
def test_tcp_three_messages_in_order_and_reply():
    with OSCTransport(0, tcp=True) as t:
        assert t.endpoints == [f"udp://127.0.0.1:{t.port}", f"tcp://127.0.0.1:{t.port}"]
        with SimpleTCPClient("127.0.0.1", t.port, mode="1.1", timeout=2.0) as client:
            for i in range(3):
                client.send_message("/stem/other/gain", [i, -3.5])
            pkts = [t.get(2.0) for _ in range(3)]
            assert all(p is not None and p.transport == "tcp" for p in pkts)
            assert [decode(p)[0][1][0] for p in pkts] == [0, 1, 2]
            assert pkts[0].source == client.socket.getsockname()
            pkts[2].reply(build_msg("/ack", [2, "ok"]).dgram)
            frames = client.receive(2.0)
            assert len(frames) == 1
            ack = OscMessage(frames[0])
            assert (ack.address, ack.params) == ("/ack", [2, "ok"])
        c = t.counters
        assert (c["tcp_connections"], c["queued"], c["send_errors"]) == (1, 3, 0)


@needs_pythonosc
def test_udp_and_tcp_interleave_by_arrival():
    with OSCTransport(0, tcp=True) as t:
        udp = SimpleUDPClient("127.0.0.1", t.port)
        with SimpleTCPClient("127.0.0.1", t.port, mode="1.1", timeout=2.0) as tcp:
            for n, (client, word) in enumerate([(udp, "a"), (tcp, "b"), (udp, "c"), (tcp, "d")], 1):
                client.send_message("/word", word)
                assert wait_until(lambda: t.counters["queued"] == n)
            got = [(p.transport, decode(p)[0][1][0]) for p in (t.get(1.0) for _ in range(4))]
        assert got == [("udp", "a"), ("tcp", "b"), ("udp", "c"), ("tcp", "d")]
        udp._sock.close()


def test_tcp_garbage_and_oversize_are_counted_and_the_server_survives():
    with OSCTransport(0, tcp=True, max_packet=1024) as t:
        with socket.create_connection(("127.0.0.1", t.port), timeout=2) as s:
            s.sendall(b"\xc0\xdb\x41garbage\xc0")                  # bad escape
            s.sendall(slip_encode(b"not an OSC packet"))
            s.sendall(b"\xc0" + b"\x01" * 5000 + b"\xc0")          # oversize
            for _ in range(20):                                     # 20 * 8 KiB with no END at all
                s.sendall(b"\x02" * 8192)
            s.sendall(b"\xc0")
            s.sendall(slip_encode(osc_message("/still/alive", 42)))
            pkt = t.get(3.0)
            assert pkt is not None and pkt.data == osc_message("/still/alive", 42) and pkt.transport == "tcp"
            c = t.counters
            assert (c["malformed_frames"], c["not_osc"], c["oversize"], c["queued"]) == (1, 1, 2, 1)
        # a fresh, well-behaved client is still served
        with socket.create_connection(("127.0.0.1", t.port), timeout=2) as s:
            s.sendall(slip_encode(osc_message("/again", 1)))
            pkt = t.get(3.0)
            assert pkt is not None and pkt.data == osc_message("/again", 1)
            pkt.reply(osc_message("/ok", 2))
            assert s.recv(100) == slip_encode(osc_message("/ok", 2))
        assert t.counters["tcp_connections"] == 2


def test_slip_decoder_matches_python_osc_slip_and_bounds_memory():
    payload = osc_message("/x", 0) + bytes([0xC0, 0xDB, 0xDC, 0xDD, 0xDB, 0xC0, 0x00, 0x01])
    wire = (osc_slip.encode(payload) if HAVE_PYTHONOSC else slip_encode(payload)) * 2 + b"\xc0\xc0"
    d = SlipDecoder(1024)
    out = []
    for i in range(len(wire)):                     # one byte at a time
        out += d.feed(wire[i:i + 1])
    assert out == [payload, payload]               # empty frames skipped
    assert d.feed(b"\xdb\xdb\xc0") == [MALFORMED]
    assert d.feed(b"\xdb\xc0") == [MALFORMED]      # trailing ESC
    big = SlipDecoder(1000)
    results = []
    for _ in range(100):                            # 6.4 MB without END
        results += big.feed(b"\x05" * 65536)
        assert big.buffered <= 1000 + 65536
    assert results == [OVERSIZE] and big.buffered == 0
    assert big.feed(b"\xc0" + slip_encode(osc_message("/y", 1))) == [osc_message("/y", 1)]
    # 1000 escaped bytes take 2000 on the wire but are not oversize
    assert SlipDecoder(1000).feed(slip_encode(b"\xc0" * 1000)) == [b"\xc0" * 1000]
    assert looks_like_osc(b"#bundle\0" + b"\0" * 8) and not looks_like_osc(b"") and not looks_like_osc(b"abcd")


def test_tcp_connection_limit_makes_room_by_closing_the_most_idle():
    with OSCTransport(0, tcp=True, max_connections=2) as t:
        socks = [socket.create_connection(("127.0.0.1", t.port), timeout=2) for _ in range(2)]
        try:
            socks[1].sendall(slip_encode(osc_message("/active", 1)))      # socks[0] never sends
            assert t.get(2.0).data == osc_message("/active", 1)
            socks.append(socket.create_connection(("127.0.0.1", t.port), timeout=2))
            assert wait_until(lambda: t.counters["tcp_evicted"] == 1 and t.counters["tcp_connections"] == 3)
            assert t.connections == 2
            assert socks[0].recv(10) == b""         # the idle one was closed by the server, not the new one
            for i in (1, 2):
                socks[i].sendall(slip_encode(osc_message("/fits", i)))
                pkt = t.get(2.0)
                assert pkt.data == osc_message("/fits", i)
                pkt.reply(osc_message("/ok", i))
                assert socks[i].recv(100) == slip_encode(osc_message("/ok", i))
            # a fourth: socks[1] and socks[2] have both sent; the one whose last packet is older goes
            socks.append(socket.create_connection(("127.0.0.1", t.port), timeout=2))
            assert wait_until(lambda: t.counters["tcp_evicted"] == 2)
            assert socks[1].recv(10) == b"" and t.connections == 2
            socks[2].sendall(slip_encode(osc_message("/still", 2)))
            assert t.get(2.0).data == osc_message("/still", 2)
        finally:
            for s in socks:
                s.close()
    with pytest.raises(SettingsError, match="max_per_address"):
        OSCTransport(0, max_per_address=0)
    with pytest.raises(SettingsError, match="idle_timeout"):
        OSCTransport(0, idle_timeout=0)


def test_a_half_closed_tcp_peer_is_answered_until_its_packets_are_done():
    with OSCTransport(0, tcp=True) as t, socket.create_connection(("127.0.0.1", t.port), timeout=3) as s:
        s.sendall(slip_encode(osc_message("/q", 1)) + slip_encode(osc_message("/q", 2)))
        s.shutdown(socket.SHUT_WR)
        pkts = [t.get(2.0) for _ in range(2)]
        time.sleep(0.3)                              # the server has seen the EOF by now, and waits
        for i, pkt in enumerate(pkts, 1):
            assert pkt.reply(osc_message("/a", i)) is True
            pkt.done()
            pkt.done()                               # a second call does nothing
        data = b""
        for _ in range(100):                         # each recv waits at most the socket's 3 s
            chunk = s.recv(1000)
            if not chunk:
                break
            data += chunk
        assert data == slip_encode(osc_message("/a", 1)) + slip_encode(osc_message("/a", 2))
        assert wait_until(lambda: t.connections == 0)


# ------------------------------------------------------------------------------------------------
# allow-list


def test_allow_list_refuses_other_sources():
    with OSCTransport(0, host="0.0.0.0", allow=["127.0.0.1/32"], tcp=True) as t:
        assert t.endpoints[0] == f"udp://0.0.0.0:{t.port}"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as me:
            other.bind(("127.0.0.2", 0))              # Linux routes all of 127/8 to lo
            me.bind(("127.0.0.1", 0))
            other.sendto(osc_message("/from/other", 1), ("127.0.0.1", t.port))
            assert wait_until(lambda: t.counters["refused"] == 1)
            me.sendto(osc_message("/from/me", 1), ("127.0.0.1", t.port))
            pkt = t.get(2.0)
            assert pkt is not None and pkt.data == osc_message("/from/me", 1)
            assert pkt.source == me.getsockname()
            assert t.get(0.05) is None
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.2", 0))
            s.settimeout(2)
            s.connect(("127.0.0.1", t.port))
            try:
                closed = s.recv(10) == b""
            except ConnectionResetError:
                closed = True
            assert closed
        assert wait_until(lambda: t.counters["refused"] == 2)
        assert t.counters["queued"] == 1 and t.counters["tcp_connections"] == 0


def test_non_loopback_host_needs_an_allow_list():
    with pytest.raises(SettingsError, match="--osc-allow is required .*0.0.0.0"):
        OSCTransport(9000, host="0.0.0.0")
    with pytest.raises(SettingsError, match="--osc-allow"):
        OSCTransport(9000, host="")
    OSCTransport(9000, host="localhost")              # loopback: fine without (not started)
    OSCTransport(9000, host="::1")


def test_parse_allow_and_is_loopback_host():
    nets = parse_allow(["10.0.0.0/8", "192.168.1.5", "192.168.7.9/24, 172.16.0.1", "::1", "::ffff:10.1.1.1"])
    assert [str(n) for n in nets] == ["10.0.0.0/8", "192.168.1.5/32", "192.168.7.0/24", "172.16.0.1/32",
                                      "::1/128", "10.1.1.1/32"]
    assert parse_allow([]) == [] and parse_allow("127.0.0.1") == parse_allow(["127.0.0.1/32"])
    for bad in ["10.0.0.300", "lan", "10.0.0.0/33"]:
        with pytest.raises(SettingsError, match=f"'{bad}'"):
            parse_allow(["10.0.0.1", bad])
    with pytest.raises(SettingsError, match="'nope'"):
        OSCTransport(0, allow=["nope"])
    for host in ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"]:
        assert is_loopback_host(host), host
    for host in ["0.0.0.0", "", "::", "192.168.1.10", "10.0.0.1"]:
        assert not is_loopback_host(host), host


# ------------------------------------------------------------------------------------------------
# bounds and lifecycle


def test_full_queue_drops_new_packets_and_stays_bounded():
    n = 300
    with OSCTransport(0, queue_size=8) as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(n):
            s.sendto(osc_message("/flood", i), ("127.0.0.1", t.port))
        assert wait_until(lambda: t.counters["received"] == n)
        c = t.counters
        assert c["queued"] == 8 and c["dropped_full"] == n - 8 and t.qsize() == 8
        seqs = [struct.unpack(">i", t.get(0.5).data[-4:])[0] for _ in range(8)]
        assert seqs == list(range(8))                 # the first ones kept, the new ones dropped
        assert t.get(0) is None
        s.sendto(osc_message("/after", 1), ("127.0.0.1", t.port))
        assert t.get(2.0).data == osc_message("/after", 1)


def test_port_in_use_and_bad_host():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(SettingsError, match=f"cannot listen for OSC on udp://127.0.0.1:{port}: "
                                                f"Address already in use"):
            OSCTransport(port).start()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(SettingsError, match=f"tcp://127.0.0.1:{port}: Address already in use"):
            OSCTransport(port, tcp=True).start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:    # the UDP half was released
            u.bind(("127.0.0.1", port))
    with pytest.raises(SettingsError, match="udp://192.0.2.1:0"):
        OSCTransport(0, host="192.0.2.1", allow=["192.0.2.0/24"]).start()
    with pytest.raises(SettingsError, match="0..65535"):
        OSCTransport(70000)
    assert osc_threads() == []


def test_close_is_prompt_idempotent_and_leaves_no_thread():
    t = OSCTransport(0, tcp=True).start()
    assert len(osc_threads()) == 2
    conn = socket.create_connection(("127.0.0.1", t.port), timeout=2)
    conn.sendall(slip_encode(osc_message("/hi", 1)))
    pkt = t.get(2.0)
    assert pkt is not None and len(osc_threads()) == 3
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(osc_message("/u", 1), ("127.0.0.1", t.port))
        udp_pkt_reply = t.get(2.0).reply
    t0 = time.perf_counter()
    t.close()
    took = time.perf_counter() - t0
    assert took < 1.0, took
    assert osc_threads() == []
    t.close()                                          # idempotent
    assert conn.recv(10) == b""                        # the server side of the connection was closed
    conn.close()
    # after close nothing raises, failures are counted
    before = t.counters["send_errors"]
    pkt.reply(osc_message("/late", 1))
    udp_pkt_reply(osc_message("/late", 1))
    assert t.send_to(("127.0.0.1", 9), osc_message("/late", 1)) is False
    assert t.counters["send_errors"] == before + 3
    assert t.get(0.01) is None
    with pytest.raises(RuntimeError):
        t.start()
    print(f"close took {took * 1e3:.1f} ms")

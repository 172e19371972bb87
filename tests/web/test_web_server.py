"""The browser mixer's server over real HTTP and WebSockets (aiohttp's client), on a real separator: the
token, the Origin check, the allow-list, junk of every kind, rate limits, a slow page, a restart."""
import asyncio
import base64
import json
import math
import os
import socket
import time

import aiohttp
import numpy as np
import pytest
from web_helpers import TOKEN, sep, web  # noqa: F401 - fixtures

from bridge.control.model import ControlModel
from bridge.web.server import WebMixer
from streamer.errors import SettingsError

from conftest import wait_for as conftest_wait_for

STEM_COUNT = 4


def ws_url(w, token=TOKEN):
    return f"ws://127.0.0.1:{w.port}/ws?t={token}"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def receive_until(ws, pred, timeout=5.0):
    """Messages until one satisfies ``pred``; returns (that message, all received)."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            break
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"the connection ended: {msg}")
        data = json.loads(msg.data)
        got.append(data)
        if pred(data):
            return data, got
    raise AssertionError(f"no such message within {timeout} s: {got[-5:]}")


def wait_for(cond, timeout=5.0):
    return conftest_wait_for(cond, timeout)   # this file's tests wait 5 s unless they say otherwise


def test_the_page_and_the_websocket_need_the_token(web, sep):
    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.get(web.url) as r:
                page = await r.text()
                assert r.status == 200
                assert r.headers["Referrer-Policy"] == "no-referrer"
                csp = r.headers["Content-Security-Policy"]
                assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert 'data-control="/engine/bypass"' in page and "http" not in page.split("<body", 1)[1].split(
                "<script>", 1)[0]                       # nothing fetched from elsewhere
            for url in (web.base_url, web.base_url + "?t=wrong-token", web.base_url + "?t="):
                async with s.get(url) as r:
                    locked = await r.text()
                    assert r.status == 401
                    assert "Scan the QR code" in locked and "data-control" not in locked and "<script" not in locked
            for token in ("", "wrong-token", TOKEN + "x"):
                with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                    await s.ws_connect(ws_url(web, token))
                assert err.value.status == 401
            async with s.get(web.base_url + "static/mixer.js") as r:
                assert r.status == 404                   # only the page itself, with its token
    before = ControlModel.of(sep).space.state()
    run(go())
    assert ControlModel.of(sep).space.state() == before
    assert web.counters["unauthorized"] == 6


def test_a_page_changes_the_mixer_and_every_page_follows_any_change(web, sep):
    model = ControlModel.of(sep)

    async def go():
        async with aiohttp.ClientSession() as s:
            a = await s.ws_connect(ws_url(web))
            b = await s.ws_connect(ws_url(web))
            hello, _ = await receive_until(a, lambda m: "hello" in m)
            h = hello["hello"]
            assert h["stems"] == ["vocals", "drums", "bass", "other"] and h["buses"] == ["main", "monitor"]
            assert sorted(h["scenes"]) == ["full", "karaoke"]
            assert h["meters"] == ["vocals", "drums", "bass", "other", "bus:main", "bus:monitor"]
            assert h["state"]["/stem/vocals/fader"] == 0.75 and h["state"]["/bus/monitor/mute"] == 0
            assert {"latency_ms", "realtime_factor", "deadline_misses", "model"} <= set(h["status"])
            await receive_until(b, lambda m: "hello" in m)

            await a.send_str(json.dumps({"a": "/stem/vocals/mute", "v": True}))
            await a.send_str(json.dumps({"a": "/bus/monitor/stem/drums/fader", "v": 0.5}))
            await a.send_str(json.dumps({"a": "/bus/monitor/gain", "v": -6}))
            want = {"/stem/vocals/mute": 1, "/bus/monitor/stem/drums/fader": 0.5, "/bus/monitor/gain": -6.0}
            seen = {}
            await receive_until(b, lambda m: seen.update(m.get("state", {})) or all(
                seen.get(k) == v for k, v in want.items()))
            assert sep.mixer.buses["main"].stems["vocals"].mute is True
            assert sep.mixer.buses["monitor"].stems["drums"].gain_db == pytest.approx(-10.0)   # 0.5 = -10 dB
            assert seen["/bus/monitor/stem/drums/gain"] == pytest.approx(-10.0)

            # a change from elsewhere (Python, OSC, MIDI, the terminal mixer) reaches every page
            model.set("/stem/bass/gain", -120.0)
            sep.mixer.bypass = True
            seen = {}
            await receive_until(a, lambda m: seen.update(m.get("state", {})) or seen.get("/engine/bypass") == 1)
            await receive_until(a, lambda m: seen.update(m.get("state", {})) or "/stem/bass/gain" in seen)
            assert seen["/stem/bass/fader"] == 0.0

            # a scene with a fade: the page sees it land
            await b.send_str(json.dumps({"a": "/scene/karaoke", "v": 0.2}))
            await a.send_str(json.dumps({"a": "/stem/vocals/mute", "v": False}))
            await a.send_str(json.dumps({"a": "/scene/full"}))     # no fade given: at once
            seen = {}
            await receive_until(a, lambda m: seen.update(m.get("state", {})) or seen.get("/stem/bass/gain") == 0.0)
            await a.close()
            await b.close()
    run(go())
    assert wait_for(lambda: not web.clients)
    assert web.counters["applied"] == 6 and web.counters["errors"] == 0


def test_a_value_the_model_refuses_is_answered_to_its_sender_only(web, sep):
    async def go():
        async with aiohttp.ClientSession() as s:
            a = await s.ws_connect(ws_url(web))
            await receive_until(a, lambda m: "hello" in m)
            await a.send_str(json.dumps({"a": "/stem/vocals/mute", "v": 0.5}))
            err, _ = await receive_until(a, lambda m: "error" in m)
            assert err["error"]["address"] == "/stem/vocals/mute" and "expected" in err["error"]["reason"]
            await a.close()
    run(go())
    assert web.counters["errors"] == 1 and sep.mixer.buses["main"].stems["vocals"].mute is False


def junk_frames():
    """A thousand frames a page must never send: each one ignored, none changes anything."""
    frames = ["", "{", "null", "[]", "1", '"x"', "{}", '{"a": 5}', '{"a": null, "v": 1}', '{"v": 1}',
              '{"a": "/stem/vocals/mute"}', '{"a": "/stem/vocals/mute", "v": "yes"}',
              '{"a": "/stem/vocals/mute", "v": [1]}', '{"a": "/stem/vocals/mute", "v": {"x": 1}}',
              '{"a": "/stem/vocals/fader", "v": NaN}', '{"a": "/stem/vocals/fader", "v": Infinity}',
              '{"a": "/stem/vocals/gain", "v": -Infinity}', '{"a": "/stem/vocals/fader", "v": 1e999}',
              '{"a": "/stem/vocals/gain", "v": ' + "9" * 400 + "}",
              '{"a": "/stem/*/mute", "v": 1}', '{"a": "/stem/{vocals,drums}/mute", "v": 1}',
              '{"a": "/engine/reset", "v": 1}', '{"a": "/engine/status", "v": 1}', '{"a": "/scene", "v": 1}',
              '{"a": "/scene/nope", "v": 1}', '{"a": "/stem/nope/mute", "v": 1}', '{"a": "stem/vocals/mute", "v": 1}',
              '{"a": "/stem/vocals/mute", "v": 1, "x": 2}', '{"a": "/meter/vocals", "v": 1}',
              '{"a": "/stem/vocals/mute\\u0000", "v": 1}', "[" * 5000 + "]" * 5000, "\udcff" * 3,
              '{"a": "' + "/x" * 300 + '", "v": 1}']
    rng = np.random.default_rng(1)
    out = list(frames)
    while len(out) < 1000:
        out.append(bytes(rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8)).decode("latin-1"))
    return out[:1000]


def test_junk_changes_nothing_and_kills_nothing(web, sep):
    model = ControlModel.of(sep)
    before = model.space.state()

    async def go():
        async with aiohttp.ClientSession() as s:
            good = await s.ws_connect(ws_url(web))
            await receive_until(good, lambda m: "hello" in m)
            bad = await s.ws_connect(ws_url(web))
            await receive_until(bad, lambda m: "hello" in m)
            for i, frame in enumerate(junk_frames()):
                try:
                    await bad.send_str(frame)
                except UnicodeEncodeError:
                    await bad.send_bytes(frame.encode("utf-8", "surrogateescape"))
                if i % 100 == 99:
                    await asyncio.sleep(0.6)          # under the rate limit: every frame is looked at
            await bad.send_bytes(b"\x00\x01binary")
            await bad.send_str(json.dumps({"a": "/stem/vocals/fader", "v": 0.1, "pad": "x" * 2000}))  # oversized
            await asyncio.sleep(0.3)
            assert not bad.closed                     # all of it ignored: the page stays connected
            await bad.send_str(json.dumps({"a": "/stem/drums/solo", "v": 1}))
            seen = {}
            await receive_until(good, lambda m: seen.update(m.get("state", {})) or "/stem/drums/solo" in seen)
            assert model.get("/stem/drums/solo") == 1
            model.set("/stem/drums/solo", 0)

            # a frame over the hard limit closes that connection only
            await bad.send_str("x" * (200 * 1024))
            msg = await bad.receive(timeout=5)
            while msg.type == aiohttp.WSMsgType.TEXT:    # what was on its way before
                msg = await bad.receive(timeout=5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
            # the other page still gets meters, and the server still takes changes
            await receive_until(good, lambda m: "m" in m)
            await good.send_str(json.dumps({"a": "/stem/other/mute", "v": True}))
            seen = {}
            await receive_until(good, lambda m: seen.update(m.get("state", {})) or seen.get("/stem/other/mute") == 1)
            model.set("/stem/other/mute", 0)
            await good.close()
    run(go())
    assert wait_for(lambda: model.space.state() == before)
    c = web.counters
    assert c["malformed"] + c["unknown"] + c["oversized"] >= 1000, c
    assert c["unknown"] >= 10 and c["oversized"] >= 2 and c["malformed"] >= 900, c
    assert c["applied"] == 2


def test_a_flood_is_rate_limited_per_client(web, sep):
    async def go():
        async with aiohttp.ClientSession() as s:
            a = await s.ws_connect(ws_url(web))
            await receive_until(a, lambda m: "hello" in m)
            for i in range(2000):
                await a.send_str(json.dumps({"a": "/stem/vocals/fader", "v": (i % 100) / 100}))
            await asyncio.sleep(0.5)
            assert not a.closed
            await a.close()
    run(go())
    assert wait_for(lambda: web.counters["messages"] == 2000)
    assert web.counters["rate_limited"] >= 1000 and 400 <= web.counters["applied"] < 1000, web.counters


def test_the_websocket_refuses_another_origin(web, sep):
    async def go():
        async with aiohttp.ClientSession() as s:
            for origin in ("http://evil.example", f"http://127.0.0.1:{web.port + 1}", "null",
                           f"https://127.0.0.1:{web.port}"):
                with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                    await s.ws_connect(ws_url(web), headers={"Origin": origin})
                assert err.value.status == 403
            ok = await s.ws_connect(ws_url(web), headers={"Origin": f"http://127.0.0.1:{web.port}"})
            await receive_until(ok, lambda m: "hello" in m)
            await ok.close()
    run(go())
    assert web.counters["bad_origin"] == 4 and web.counters["connections"] == 1


def test_the_allow_list(sep):
    for host in ("0.0.0.0", "::", ""):
        with pytest.raises(SettingsError, match="--web-allow is required"):
            WebMixer(sep, port=0, host=host)
    with pytest.raises(SettingsError, match="--web-allow: bad entry 'nonsense'"):
        WebMixer(sep, port=0, allow=["nonsense"])
    with pytest.raises(SettingsError, match="--web-token"):
        WebMixer(sep, port=0, token="short")
    # a source outside the list is refused, page and WebSocket alike
    with WebMixer(sep, port=0, token=TOKEN, allow=["10.99.0.0/16"]) as w:
        async def go():
            async with aiohttp.ClientSession() as s:
                async with s.get(w.url) as r:
                    assert r.status == 403
                with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                    await s.ws_connect(ws_url(w))
                assert err.value.status == 403
        run(go())
        assert w.counters["refused"] == 2 and w.counters["connections"] == 0
    with WebMixer(sep, port=0, host="0.0.0.0", token=TOKEN, allow=["127.0.0.0/8"]) as w:
        async def go():
            async with aiohttp.ClientSession() as s:
                async with s.get(f"http://127.0.0.1:{w.port}/?t={TOKEN}") as r:
                    assert r.status == 200
        run(go())
    # a port in use is one clear error
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(SettingsError, match=r"--web \d+: cannot listen"):
            WebMixer(sep, port=taken.getsockname()[1], token=TOKEN).start()


def raw_websocket(port, token=TOKEN):
    """A WebSocket client that completes the handshake and then never reads (a phone that stalled)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws?t={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def test_a_page_that_stops_reading_loses_meter_frames_never_slows_the_others(sep):
    model = ControlModel.of(sep)
    x = (np.random.default_rng(0).standard_normal((2, 4410)) * 0.3).astype(np.float32)
    sep.process(x, 44100, reset=False)
    with WebMixer(sep, port=0, token=TOKEN, send_timeout=3.0) as w:
        stalled = raw_websocket(w.port)

        async def go():
            async with aiohttp.ClientSession() as s:
                good = await s.ws_connect(ws_url(w))
                await receive_until(good, lambda m: "hello" in m)
                assert wait_for(lambda: len(w.clients) == 2)
                # big state frames for everyone (all faders, many times) until the stalled page's buffers fill
                t0 = time.monotonic()
                frames, seen = 0, {}
                for i in range(150):
                    model.set("/bus/*/stem/*/fader", 0.3 + (i % 2) * 0.2)
                    model.set("/bus/*/stem/*/gain", -3.0 - (i % 7))
                    await asyncio.sleep(0.01)
                    while True:        # the good page keeps up: it reads as it goes
                        try:
                            msg = await good.receive(timeout=0.001)
                        except asyncio.TimeoutError:
                            break
                        data = json.loads(msg.data)
                        frames += "m" in data
                        seen.update(data.get("state", {}))
                model.set("/stem/vocals/mute", 1)
                _, got = await receive_until(good, lambda m: seen.update(m.get("state", {})) or
                                             seen.get("/stem/vocals/mute") == 1)
                elapsed = time.monotonic() - t0
                frames += sum("m" in m for m in got)
                assert seen["/bus/monitor/stem/other/gain"] == model.get("/bus/monitor/stem/other/gain")
                assert frames / elapsed >= 12, (frames, elapsed)       # 25 Hz asked; loaded machine: >= 12
                # the stalled page is dropped after send_timeout; the good one stays
                assert await asyncio.get_running_loop().run_in_executor(None, wait_for, lambda: len(w.clients) == 1,
                                                                          10.0)
                _, got = await receive_until(good, lambda m: "m" in m)
                await good.close()
        try:
            run(go())
        finally:
            stalled.close()
        assert w.counters["meter_dropped"] > 0, w.counters


def test_a_restarted_server_resyncs_a_page_that_reconnects(sep):
    model = ControlModel.of(sep)
    w = WebMixer(sep, port=0, token=TOKEN).start()
    port = w.port

    async def go():
        async with aiohttp.ClientSession() as s:
            a = await s.ws_connect(ws_url(w))
            await receive_until(a, lambda m: "hello" in m)
            await asyncio.get_running_loop().run_in_executor(None, w.close)
            msg = await a.receive(timeout=5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            model.set("/bus/monitor/stem/vocals/solo", 1)          # changed while no server runs
            w2 = WebMixer(sep, port=port, token=TOKEN)
            await asyncio.get_running_loop().run_in_executor(None, w2.start)
            try:
                b = await s.ws_connect(f"ws://127.0.0.1:{port}/ws?t={TOKEN}")
                hello, _ = await receive_until(b, lambda m: "hello" in m)
                assert hello["hello"]["state"]["/bus/monitor/stem/vocals/solo"] == 1
                await b.close()
            finally:
                await asyncio.get_running_loop().run_in_executor(None, w2.close)
    run(go())


def test_meters_and_status_reach_a_page(web, sep):
    x = (np.random.default_rng(0).standard_normal((2, 8820)) * 0.3).astype(np.float32)
    sep.process(x, 44100, reset=False)

    async def go():
        async with aiohttp.ClientSession() as s:
            a = await s.ws_connect(ws_url(web))
            await receive_until(a, lambda m: "hello" in m)
            t0 = time.monotonic()
            _, got = await receive_until(a, lambda m: time.monotonic() - t0 >= 2.0, timeout=5)
            meters = [m["m"] for m in got if "m" in m]
            assert 30 <= len(meters) <= 56, len(meters)            # 25 Hz over 2 s
            assert all(len(m) == 2 * (STEM_COUNT + 2) for m in meters)
            assert all(-120.0 <= v <= 24 and math.isfinite(v) for m in meters for v in m)
            assert max(meters[-1]) > -40.0                         # the audio that went through shows
            status = [m["status"] for m in got if "status" in m]
            assert status and status[-1]["model"] == "four.yaml"
            await a.close()
    run(go())


def test_the_page_ships_whole_in_the_package():
    """No CDN, no build step: the page is these files, and they load nothing from elsewhere."""
    from importlib import resources

    static = resources.files("bridge.web").joinpath("static")
    names = sorted(p.name for p in static.iterdir())
    assert names == ["index.html", "locked.html", "mixer.css", "mixer.js"]
    for name in names:
        text = static.joinpath(name).read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text and "@import" not in text, name
        assert "<script src" not in text and 'rel="stylesheet"' not in text, name

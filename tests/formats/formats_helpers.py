"""Helpers for the tests of streamer.formats: MP4 boxes built by hand and a box reader written here,
to Mixxx's rules, independent of the module under test."""
import json
import struct


# --- building boxes by hand (independent of the module's own writer) ----------------------------------

def box(kind, payload=b""):
    return struct.pack(">I4s", 8 + len(payload), kind.encode()) + payload


def box64(kind, payload=b""):
    return struct.pack(">I4sQ", 1, kind.encode(), 16 + len(payload)) + payload


def full(kind, body, version=0, flags=0):
    return box(kind, bytes([version]) + flags.to_bytes(3, "big") + body)


def tkhd(flags, group=1):
    body = b"\0" * 20 + b"\0" * 8 + b"\0\0" + struct.pack(">H", group) + b"\x01\x00" + b"\0\0" + b"\0" * 36 + b"\0" * 8
    return full("tkhd", body, flags=flags)


def trak(flags, offsets, table="stco"):
    fmt = ">I" if table == "stco" else ">Q"
    stco = full(table, struct.pack(">I", len(offsets)) + b"".join(struct.pack(fmt, o) for o in offsets))
    hdlr = full("hdlr", b"\0" * 4 + b"soun" + b"\0" * 12 + b"sound\0")
    return box("trak", tkhd(flags) + box("mdia", hdlr + box("minf", box("stbl", stco))))


def walk(data, start=0, end=None):
    """(type, start, header, size) of the boxes in data[start:end] (test's own reader)."""
    end = len(data) if end is None else end
    out = []
    while start < end:
        size, kind = struct.unpack(">I4s", data[start:start + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[start + 8:start + 16])[0], 16
        elif size == 0:
            size = end - start
        out.append((kind.decode(), start, header, size))
        start += size
    return out


def child(data, parent, kind):
    _, start, header, size = parent
    return next(b for b in walk(data, start + header, start + size) if b[0] == kind)


def chunk_offsets(data):
    """Every track's chunk offsets, in track order, read with the walker above."""
    moov = next(b for b in walk(data) if b[0] == "moov")
    result = []
    for t in (b for b in walk(data, moov[1] + moov[2], moov[1] + moov[3]) if b[0] == "trak"):
        stbl = child(data, child(data, child(data, t, "mdia"), "minf"), "stbl")
        table = next(b for b in walk(data, stbl[1] + stbl[2], stbl[1] + stbl[3]) if b[0] in ("stco", "co64"))
        p = table[1] + table[2]
        n = struct.unpack(">I", data[p + 4:p + 8])[0]
        fmt = ">I" if table[0] == "stco" else ">Q"
        width = 4 if table[0] == "stco" else 8
        result.append((table[0], [struct.unpack(fmt, data[p + 8 + i * width:p + 8 + (i + 1) * width])[0]
                                  for i in range(n)]))
    return result


def mixxx_stem_json(data):
    """The stem metadata as Mixxx reads it (steminfoimporter): moov -> udta -> stem, trailing NULs
    stripped, JSON with version >= 1 (else None: no stems)."""
    moov = next((b for b in walk(data) if b[0] == "moov"), None)
    if moov is None:
        return None
    udta = next((b for b in walk(data, moov[1] + moov[2], moov[1] + moov[3]) if b[0] == "udta"), None)
    if udta is None:
        return None
    stem = next((b for b in walk(data, udta[1] + udta[2], udta[1] + udta[3]) if b[0] == "stem"), None)
    if stem is None:
        return None
    meta = json.loads(data[stem[1] + stem[2]:stem[1] + stem[3]].rstrip(b"\0").decode("utf-8"))
    return meta if meta.get("version", 0) >= 1 else None


def track_headers(data):
    """(flags, alternate_group) of each track header, in track order."""
    moov = next(b for b in walk(data) if b[0] == "moov")
    out = []
    for t in (b for b in walk(data, moov[1] + moov[2], moov[1] + moov[3]) if b[0] == "trak"):
        tk = child(data, t, "tkhd")
        p = tk[1] + tk[2]
        version = data[p]
        flags = int.from_bytes(data[p + 1:p + 4], "big")
        at = p + 4 + (32 if version == 1 else 20) + 8 + 2
        out.append((flags, struct.unpack(">H", data[at:at + 2])[0]))
    return out

"""A small reader and editor of ISO Base Media (MP4) boxes: enough to read and write the movie header
(``moov``) of an audio file without touching its media data.

An MP4 file is a sequence of boxes: a 32-bit size (1: a 64-bit size follows the type; 0: the box runs
to the end of the file), a four-character type, then the payload; container boxes (``moov``, ``trak``,
``udta`` ...) hold more boxes. The samples live in ``mdat``; the sample tables in ``moov`` point at them
with absolute file offsets (``stco``: 32-bit, ``co64``: 64-bit), so a ``moov`` that grows or shrinks in
front of ``mdat`` moves the media and its offsets must follow. :func:`rewrite_moov` takes care of that
(and turns a ``stco`` into a ``co64`` when an offset no longer fits 32 bits); the rest of the file is
copied byte for byte.

Every problem with a file is an :class:`~streamer.errors.AudioError` naming it.
"""
from __future__ import annotations

import os
import secrets
import shutil
import struct
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from ..errors import AudioError

#: boxes that hold only other boxes (the ones this module needs to walk into)
CONTAINERS = frozenset({"moov", "trak", "mdia", "minf", "stbl", "udta", "edts", "dinf", "mvex"})

TKHD_ENABLED = 0x1      # tkhd flag: the track is enabled (players play it)
TKHD_IN_MOVIE = 0x2     # tkhd flag: the track is used in the presentation
TKHD_IN_PREVIEW = 0x4

_U32_MAX = 0xFFFFFFFF


def _type_str(raw: bytes) -> str:
    return raw.decode("latin-1")


def _type_bytes(kind: str) -> bytes:
    raw = kind.encode("latin-1")
    if len(raw) != 4:
        raise ValueError(f"a box type has four characters, not {kind!r}")
    return raw


@dataclass(frozen=True)
class BoxHeader:
    """Where one box lies: its ``type``, ``start`` (offset of the header), header length and total size."""
    type: str
    start: int
    header: int
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def payload_start(self) -> int:
        return self.start + self.header


def _parse_header(head: bytes, start: int, limit: int, where: str) -> BoxHeader:
    """The header at ``start`` from its first (up to) 16 bytes ``head``; ``limit`` is where the enclosing
    box (or the file) ends."""
    if len(head) < 8:
        raise AudioError(f"{where}: truncated box header at byte {start}")
    size, raw = struct.unpack(">I4s", head[:8])
    header = 8
    if size == 1:
        if len(head) < 16:
            raise AudioError(f"{where}: truncated 64-bit box header at byte {start}")
        size = struct.unpack(">Q", head[8:16])[0]
        header = 16
    elif size == 0:
        size = limit - start
    if size < header or start + size > limit:
        raise AudioError(f"{where}: box {_type_str(raw)!r} at byte {start} has a bad size ({size}; "
                         f"{limit - start} bytes left)")
    return BoxHeader(_type_str(raw), start, header, size)


def iter_boxes(data: bytes, start: int = 0, end: int | None = None, where: str = "MP4 data") -> Iterator[BoxHeader]:
    """The boxes in ``data[start:end]``, one after the other (not descending into them)."""
    end = len(data) if end is None else end
    pos = start
    while pos < end:
        if end - pos < 8:
            raise AudioError(f"{where}: {end - pos} stray bytes at byte {pos}")
        box = _parse_header(data[pos:pos + 16], pos, end, where)
        yield box
        pos = box.end


def top_level_boxes(path: str | os.PathLike) -> list[BoxHeader]:
    """The top-level boxes of the file at ``path`` (headers only; nothing else is read)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            total = os.fstat(fh.fileno()).st_size
            boxes = []
            pos = 0
            while pos < total:
                fh.seek(pos)
                head = fh.read(16)
                box = _parse_header(head, pos, total, path)
                boxes.append(box)
                pos = box.end
    except OSError as exc:
        raise AudioError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not boxes or boxes[0].type not in ("ftyp", "styp", "free", "skip", "wide", "moov", "mdat", "pdin"):
        raise AudioError(f"{path}: not an MP4 (ISO base media) file")
    return boxes


def _read_range(path: str, start: int, size: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read(size)
    except OSError as exc:
        raise AudioError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) != size:
        raise AudioError(f"{path}: file ends inside a box")
    return data


def find_moov(path: str | os.PathLike) -> tuple[BoxHeader, list[BoxHeader]]:
    """The ``moov`` box's header and all top-level headers; AudioError if there is not exactly one."""
    path = os.fspath(path)
    boxes = top_level_boxes(path)
    moovs = [b for b in boxes if b.type == "moov"]
    if len(moovs) != 1:
        raise AudioError(f"{path}: an MP4 file has one movie box (moov); this one has {len(moovs)}")
    return moovs[0], boxes


def read_moov(path: str | os.PathLike) -> "Box":
    """The parsed ``moov`` box of the file at ``path`` (only the movie header is read, not the media)."""
    path = os.fspath(path)
    moov, _ = find_moov(path)
    return parse_box(_read_range(path, moov.start, moov.size), where=path)


@dataclass
class Box:
    """A box in memory: a container (``children``, after ``prefix`` bytes such as a full box's version
    and flags) or a leaf (``payload``). Offsets and sizes are worked out again when it is serialized."""
    type: str
    payload: bytes = b""
    children: list["Box"] | None = None
    prefix: bytes = b""

    # --- finding ------------------------------------------------------------------------------------
    def all(self, kind: str) -> list["Box"]:
        """The direct children of type ``kind``, in order."""
        return [c for c in (self.children or []) if c.type == kind]

    def first(self, kind: str) -> "Box | None":
        found = self.all(kind)
        return found[0] if found else None

    def find(self, path: str) -> "Box | None":
        """The first box at ``path`` below this one, e.g. ``"udta/stem"`` (each step the first child of
        that type), or None."""
        node: Box | None = self
        for kind in path.split("/"):
            if node is None or node.children is None:
                return None
            node = node.first(kind)
        return node

    def walk(self) -> Iterator["Box"]:
        """This box and every box below it, depth first."""
        yield self
        for child in self.children or []:
            yield from child.walk()

    # --- changing -----------------------------------------------------------------------------------
    def set_child(self, kind: str, payload: bytes) -> "Box":
        """Replaces the payload of the first child of type ``kind`` (removing any further ones), or
        appends a new leaf child; returns it."""
        if self.children is None:
            raise ValueError(f"box {self.type!r} is not a container")
        _type_bytes(kind)
        found = self.all(kind)
        if found:
            found[0].payload, found[0].children, found[0].prefix = bytes(payload), None, b""
            for extra in found[1:]:
                self.children.remove(extra)
            return found[0]
        box = Box(kind, bytes(payload))
        self.children.append(box)
        return box

    def container(self, kind: str) -> "Box":
        """The first child container of type ``kind``, appended (empty) if there is none."""
        if self.children is None:
            raise ValueError(f"box {self.type!r} is not a container")
        found = self.first(kind)
        if found is None:
            found = Box(kind, children=[])
            self.children.append(found)
        elif found.children is None:
            raise ValueError(f"box {kind!r} is not a container")
        return found

    # --- writing ------------------------------------------------------------------------------------
    def to_bytes(self, offsets: Callable[[np.ndarray], np.ndarray] | None = None) -> bytes:
        """The box as bytes (a 64-bit size only where 32 bits do not reach). ``offsets`` maps the chunk
        offsets of every ``stco``/``co64`` below (as uint64); a ``stco`` with an offset past 4 GiB is
        written as a ``co64``."""
        kind = self.type
        if self.children is not None:
            body = self.prefix + b"".join(c.to_bytes(offsets) for c in self.children)
        elif offsets is not None and kind in ("stco", "co64"):
            kind, body = _chunk_offsets(self.payload, kind, offsets)
        else:
            body = self.payload
        size = 8 + len(body)
        if size <= _U32_MAX:
            return struct.pack(">I4s", size, _type_bytes(kind)) + body
        return struct.pack(">I4sQ", 1, _type_bytes(kind), size + 8) + body


def parse_box(data: bytes, where: str = "MP4 data") -> Box:
    """``data`` (one whole box, header included) as a :class:`Box` tree; containers in
    :data:`CONTAINERS` are walked into, every other box is kept as it is."""
    boxes = list(iter_boxes(data, 0, len(data), where))
    if len(boxes) != 1:
        raise AudioError(f"{where}: expected one box, found {len(boxes)}")
    return _parse(data, boxes[0], where)


def _parse(data: bytes, head: BoxHeader, where: str) -> Box:
    if head.type in CONTAINERS:
        children = [_parse(data, h, where) for h in iter_boxes(data, head.payload_start, head.end, where)]
        return Box(head.type, children=children)
    return Box(head.type, bytes(data[head.payload_start:head.end]))


def _chunk_offsets(payload: bytes, kind: str, mapping: Callable[[np.ndarray], np.ndarray]) -> tuple[str, bytes]:
    width = 4 if kind == "stco" else 8
    if len(payload) < 8:
        raise AudioError(f"{kind} box too short ({len(payload)} bytes)")
    count = struct.unpack(">I", payload[4:8])[0]
    if len(payload) < 8 + count * width:
        raise AudioError(f"{kind} box holds {len(payload) - 8} bytes for {count} entries")
    values = np.frombuffer(payload, dtype=">u4" if width == 4 else ">u8", count=count, offset=8).astype(np.uint64)
    values = np.asarray(mapping(values), dtype=np.uint64)
    head = payload[:8]
    if kind == "stco" and (count == 0 or int(values.max()) <= _U32_MAX):
        return "stco", head + values.astype(">u4").tobytes()
    return "co64", head + values.astype(">u8").tobytes()


# --- tracks -------------------------------------------------------------------------------------------

def handler_type(trak: Box) -> str | None:
    """The handler of a ``trak`` (``"soun"`` for audio, ``"vide"`` ...), or None."""
    hdlr = trak.find("mdia/hdlr")
    if hdlr is None or len(hdlr.payload) < 12:
        return None
    return _type_str(hdlr.payload[8:12])


def audio_tracks(moov: Box) -> list[Box]:
    """The audio ``trak`` boxes of a ``moov``, in file order."""
    return [t for t in moov.all("trak") if handler_type(t) == "soun"]


def _tkhd(trak: Box) -> Box:
    tkhd = trak.first("tkhd")
    if tkhd is None or len(tkhd.payload) < 4:
        raise AudioError("track without a track header (tkhd)")
    return tkhd


def track_flags(trak: Box) -> int:
    """The 24-bit flags of a track's header (:data:`TKHD_ENABLED` ...)."""
    return int.from_bytes(_tkhd(trak).payload[1:4], "big")


def set_track_flags(trak: Box, flags: int) -> None:
    tkhd = _tkhd(trak)
    tkhd.payload = tkhd.payload[:1] + int(flags & 0xFFFFFF).to_bytes(3, "big") + tkhd.payload[4:]


def _alternate_group_at(tkhd: Box) -> int:
    # after version+flags: times and ids (20 bytes in version 0, 32 in version 1), 8 reserved, layer
    at = 4 + (32 if tkhd.payload[0] == 1 else 20) + 8 + 2
    if len(tkhd.payload) < at + 2:
        raise AudioError("track header (tkhd) too short")
    return at


def alternate_group(trak: Box) -> int:
    tkhd = _tkhd(trak)
    at = _alternate_group_at(tkhd)
    return struct.unpack(">H", tkhd.payload[at:at + 2])[0]


def set_alternate_group(trak: Box, group: int) -> None:
    tkhd = _tkhd(trak)
    at = _alternate_group_at(tkhd)
    tkhd.payload = tkhd.payload[:at] + struct.pack(">H", group) + tkhd.payload[at + 2:]


# --- rewriting a file ---------------------------------------------------------------------------------

def _copy_range(src, dst, start: int, size: int) -> None:
    src.seek(start)
    left = size
    while left > 0:
        block = src.read(min(left, 1 << 20))
        if not block:
            raise AudioError(f"{getattr(src, 'name', 'file')}: ends early")
        dst.write(block)
        left -= len(block)


def _serialize_moved(moov: Box, old: BoxHeader) -> bytes:
    """``moov`` as bytes for the place of ``old``: chunk offsets at or past the old moov's end move by
    the change in its size (the data behind it moves), found by iterating until the size is stable (a
    stco that becomes a co64 grows the box once more)."""
    delta = 0
    for _ in range(8):
        def shift(values, d=delta):
            moved = values.astype(np.int64)
            moved[values >= old.end] += d
            return moved.astype(np.uint64)
        data = moov.to_bytes(shift)
        new_delta = len(data) - old.size
        if new_delta == delta:
            return data
        delta = new_delta
    raise AudioError("the movie box size does not settle")  # pragma: no cover - cannot happen with growth only


def rewrite_moov(path: str | os.PathLike, edit: Callable[[Box], None], dst: str | os.PathLike | None = None) -> str:
    """Reads the ``moov`` of ``path``, lets ``edit`` change it in place, and writes the file again with
    the new ``moov`` where the old one was (its chunk offsets corrected). With ``dst`` the result goes
    there (written under a temporary name next to it and renamed when complete) and ``path`` is left
    alone; without, ``path`` itself is updated: in place when ``moov`` is its last box, else through a
    temporary file renamed over it. Returns the path written."""
    path = os.fspath(path)
    old, boxes = find_moov(path)
    moov = parse_box(_read_range(path, old.start, old.size), where=path)
    edit(moov)
    data = _serialize_moved(moov, old)
    total = boxes[-1].end
    if dst is None and old.end == total:
        try:
            with open(path, "r+b") as fh:
                fh.seek(old.start)
                fh.write(data)
                fh.truncate()
        except OSError as exc:
            raise AudioError(f"cannot write {path}: {exc.strerror or exc}") from None
        return path
    target = os.fspath(dst) if dst is not None else path
    folder, name = os.path.split(os.path.abspath(target))
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.part")
    try:
        with open(path, "rb") as src, open(tmp, "xb") as out:
            _copy_range(src, out, 0, old.start)
            out.write(data)
            _copy_range(src, out, old.end, total - old.end)
        shutil.copymode(path, tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise AudioError(f"cannot write {target}: {exc.strerror or exc}") from None
        raise
    return target


def read_box(path: str | os.PathLike, box_path: str) -> bytes | None:
    """The payload of the first box at ``box_path`` below ``moov`` (e.g. ``"udta/stem"``) in the file
    at ``path``, or None. Reads only the movie header."""
    found = read_moov(path).find(box_path)
    if found is None:
        return None
    return found.payload if found.children is None else found.to_bytes()[8:]

"""The MP4 box code: hand-built files (64-bit sizes, moov before mdat, a box running to the end of the
file) checked with a box walker written here, and real ffmpeg files whose audio must decode the same
after their movie box grew in front of the media."""
import shutil
import struct
import subprocess

import numpy as np
import pytest

from streamer.errors import AudioError
from streamer.formats import mp4box

from formats_helpers import box, box64, chunk_offsets, full, trak, walk

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed (Debian: ffmpeg)")


MARKERS = [b"chunk-A0", b"chunk-A1", b"chunk-B0"]


def moov_first_file(path, mdat64=True, mdat_to_end=False, table="stco"):
    """ftyp, moov (two audio tracks), mdat holding three marked chunks; offsets point at the markers."""
    ftyp = box("ftyp", b"M4A \0\0\0\0isomM4A ")
    payload = b"".join(m + b"." * 24 for m in MARKERS)

    def build(offs):
        return box("moov", full("mvhd", b"\0" * 96) + trak(3, offs[:2], table) + trak(3, offs[2:], table))
    moov = build([0, 0, 0])
    header = 16 if mdat64 else 8
    base = len(ftyp) + len(moov) + header
    offsets = [base + i * 32 for i in range(3)]
    moov = build(offsets)
    if mdat_to_end:
        mdat = struct.pack(">I4s", 0, b"mdat") + payload
    else:
        mdat = box64("mdat", payload) if mdat64 else box("mdat", payload)
    path.write_bytes(ftyp + moov + mdat)
    return path


def markers_at_offsets(data):
    found = []
    for _, offs in chunk_offsets(data):
        found += [data[o:o + 8] for o in offs]
    return found


def add_stem(payload):
    def edit(moov):
        moov.container("udta").set_child("stem", payload)
    return edit


# --- tests --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mdat64,to_end,table", [(True, False, "stco"), (False, True, "stco"), (False, False, "co64")])
def test_moov_growing_before_mdat_moves_the_chunk_offsets(tmp_path, mdat64, to_end, table):
    src = moov_first_file(tmp_path / "in.mp4", mdat64=mdat64, mdat_to_end=to_end, table=table)
    before = src.read_bytes()
    assert markers_at_offsets(before) == MARKERS
    out = mp4box.rewrite_moov(src, add_stem(b'{"version":1}' + b"x" * 1000), dst=tmp_path / "out.mp4")
    data = open(out, "rb").read()
    assert src.read_bytes() == before                       # the source is left alone
    assert [b[0] for b in walk(data)] == ["ftyp", "moov", "mdat"]
    assert len(data) > len(before) + 1000
    assert markers_at_offsets(data) == MARKERS              # every offset still finds its chunk
    assert [t for t, _ in chunk_offsets(data)] == [table, table]
    mdat = walk(data)[2]
    assert mdat[2] == (16 if mdat64 else 8)                 # the media box is copied as it was
    # the box is where Mixxx looks, and the rest of the movie box is unchanged
    assert mp4box.read_box(out, "udta/stem").startswith(b'{"version":1}')
    moov = mp4box.read_moov(out)
    assert [mp4box.track_flags(t) for t in mp4box.audio_tracks(moov)] == [3, 3]
    # rewriting again (the box replaced, not added twice) keeps the file consistent
    mp4box.rewrite_moov(out, add_stem(b"{}"))
    data = open(out, "rb").read()
    assert markers_at_offsets(data) == MARKERS and mp4box.read_box(out, "udta/stem") == b"{}"
    assert len(mp4box.read_moov(out).find("udta").all("stem")) == 1


def test_a_64_bit_movie_box_is_read(tmp_path):
    ftyp = box("ftyp", b"isom\0\0\0\0isom")
    mdat = box("mdat", MARKERS[0] + b"-" * 8)
    moov = box64("moov", full("mvhd", b"\0" * 96) + trak(1, [len(ftyp) + 8]) + box("udta", box("stem", b'{"a":1}\0\0')))
    path = tmp_path / "m.mp4"
    path.write_bytes(ftyp + mdat + moov)
    assert [b.type for b in mp4box.top_level_boxes(path)] == ["ftyp", "mdat", "moov"]
    assert mp4box.top_level_boxes(path)[2].header == 16
    assert mp4box.read_box(path, "udta/stem") == b'{"a":1}\0\0'
    # moov last: edited in place, offsets untouched (nothing moves), written back with a 32-bit header
    mp4box.rewrite_moov(path, add_stem(b"new"))
    data = path.read_bytes()
    assert markers_at_offsets(data) == MARKERS[:1]
    assert walk(data)[2][2] == 8 and mp4box.read_box(path, "udta/stem") == b"new"


def test_offsets_past_4_gib_turn_a_stco_into_a_co64():
    moov = mp4box.parse_box(box("moov", trak(1, [100, 200])))
    shifted = moov.to_bytes(lambda v: v + np.uint64(1 << 32))
    back = mp4box.parse_box(shifted)
    table = back.find("trak/mdia/minf/stbl/co64")
    assert table is not None and back.find("trak/mdia/minf/stbl/stco") is None
    assert struct.unpack(">IIQQ", table.payload) == (0, 2, (1 << 32) + 100, (1 << 32) + 200)
    # offsets that fit stay a stco
    assert mp4box.parse_box(moov.to_bytes(lambda v: v + np.uint64(8))).find("trak/mdia/minf/stbl/stco") is not None


def test_track_flags_and_alternate_group_are_set():
    moov = mp4box.parse_box(box("moov", trak(3, [1]) + trak(3, [2])))
    a, b = mp4box.audio_tracks(moov)
    mp4box.set_track_flags(b, 0)
    mp4box.set_alternate_group(a, 0)
    again = mp4box.parse_box(moov.to_bytes())
    a, b = mp4box.audio_tracks(again)
    assert (mp4box.track_flags(a), mp4box.track_flags(b)) == (3, 0)
    assert (mp4box.alternate_group(a), mp4box.alternate_group(b)) == (0, 1)


def test_broken_files_are_one_clear_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(box("ftyp", b"isom") + struct.pack(">I4s", 5000, b"moov") + b"\0" * 10)
    with pytest.raises(AudioError, match="bad.mp4: box 'moov' at byte 12 has a bad size"):
        mp4box.read_moov(bad)
    text = tmp_path / "text.mp4"
    text.write_bytes(b"this is not a movie at all, just text")
    with pytest.raises(AudioError, match="text.mp4"):
        mp4box.read_moov(text)
    none = tmp_path / "none.mp4"
    none.write_bytes(box("ftyp", b"isom") + box("mdat", b"x"))
    with pytest.raises(AudioError, match="has 0"):
        mp4box.read_moov(none)
    with pytest.raises(AudioError, match="cannot read"):
        mp4box.read_moov(tmp_path / "missing.mp4")


def decode(path):
    run = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:a:0", "-map", "0:a:1",
                          "-f", "s16le", "-"], capture_output=True, check=True)
    return run.stdout


@needs_ffmpeg
@pytest.mark.parametrize("faststart", [True, False])
def test_real_ffmpeg_files_decode_the_same_after_the_edit(tmp_path, faststart):
    src = tmp_path / "two.m4a"
    cmd = ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=f=440:d=1", "-f", "lavfi", "-i", "sine=f=660:d=1",
           "-map", "0", "-map", "1", "-c:a", "alac"]
    subprocess.run(cmd + (["-movflags", "+faststart"] if faststart else []) + [str(src)], check=True)
    order = [b.type for b in mp4box.top_level_boxes(src)]
    assert (order.index("moov") < order.index("mdat")) == faststart
    before = decode(src)
    mp4box.rewrite_moov(src, add_stem(b"s" * 5000))      # in place (through a temporary file if moov first)
    assert decode(src) == before and len(before) > 40000
    assert mp4box.read_box(src, "udta/stem") == b"s" * 5000
    assert not [p for p in tmp_path.iterdir() if p.name != "two.m4a"]

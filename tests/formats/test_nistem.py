"""NI Stem files: written with ffmpeg and our box code, read back with independent tools (ffprobe, a box
reader to Mixxx's rules, stempeg, mutagen) and with our own reader; failures leave no file."""
import json
import pathlib
import shutil
import stat
import subprocess

import numpy as np
import pytest
import soundfile as sf

from streamer.errors import AudioError, SettingsError
from streamer.formats import mp4box, nistem
from streamer.formats.nistem import match_stems, read_stem_file, write_stem_file

from formats_helpers import mixxx_stem_json, track_headers, walk

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                reason="ffmpeg not installed (Debian: ffmpeg)")

RATE = 44100
SECONDS = 2.0
FREQS = {"vocals": 523.25, "drums": 196.0, "bass": 98.0, "other": 329.6}


def make_stems(rate=RATE, seconds=SECONDS, seed=0):
    n = int(rate * seconds)
    t = np.arange(n) / rate
    rng = np.random.default_rng(seed)
    stems = {}
    for i, (name, f) in enumerate(FREQS.items()):
        left = 0.2 * np.sin(2 * np.pi * f * t) + 0.02 * rng.standard_normal(n)
        right = 0.15 * np.sin(2 * np.pi * f * 1.01 * t + i) + 0.02 * rng.standard_normal(n)
        stems[name] = np.stack([left, right]).astype(np.float32)
    return sum(stems.values()).astype(np.float32), stems


def snr_db(ref, got):
    n = min(ref.shape[-1], got.shape[-1])
    err = got[..., :n] - ref[..., :n]
    return 10 * np.log10(np.sum(ref[..., :n] ** 2) / max(np.sum(err ** 2), 1e-20))


def ffprobe_streams(path):
    run = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, check=True, text=True)
    return json.loads(run.stdout)["streams"]


@pytest.fixture(scope="module")
def song():
    return make_stems()


@pytest.fixture(scope="module")
def aac_file(song, tmp_path_factory):
    mix, stems = song
    path = tmp_path_factory.mktemp("aac") / "song.stem.mp4"
    write_stem_file(path, mix, stems, RATE, tags={"title": "Tëst Song", "artist": "The Band", "album": "LP"})
    return path


# --- which stem goes where -----------------------------------------------------------------------------

def test_model_stems_are_put_in_ni_order():
    assert match_stems(["vocals", "drums", "bass", "other"]) == ["drums", "bass", "other", "vocals"]
    assert match_stems(["Vocals", "Other", "Bass", "Drums"]) == ["Drums", "Bass", "Other", "Vocals"]
    assert match_stems(["vox", "drum", "others", "bass"]) == ["drum", "bass", "others", "vox"]
    six = ["drums", "bass", "other", "vocals", "guitar", "piano"]
    assert match_stems(six, "drums, bass,guitar,vocals") == ["drums", "bass", "guitar", "vocals"]
    assert match_stems(["speech", "music", "sfx", "noise"], ["sfx", "noise", "music", "speech"]) == \
        ["sfx", "noise", "music", "speech"]


@pytest.mark.parametrize("stems,order,message", [
    (["vocals", "instrumental"], None, r"the model has 2: vocals, instrumental; map four of them .*--stem-order"),
    (["drums", "bass", "other", "vocals", "guitar", "piano"], None, r"has 6: drums, bass, other, vocals, guitar, piano"),
    (["speech", "music", "sfx", "noise"], None, r"not NI's drums, bass, other, vocals \(no drums, bass, other, vocals\)"),
    (["vocals", "drums", "bass", "other"], "drums,bass,vocals", r"needs 4 stem names .* got 3"),
    (["vocals", "drums", "bass", "other"], "drums,bass,piano,vocals", r"names piano, which the model does not have"),
    (["vocals", "drums", "bass", "other"], "drums,drums,other,vocals", r"names drums more than once"),
])
def test_stems_that_do_not_fit_are_one_clear_error(stems, order, message):
    with pytest.raises(SettingsError, match=message) as info:
        match_stems(stems, order)
    assert "\n" not in str(info.value)


# --- the file, read by independent tools ---------------------------------------------------------------

def test_aac_file_has_five_stereo_tracks_and_only_the_master_plays(aac_file):
    streams = ffprobe_streams(aac_file)
    assert [s["codec_type"] for s in streams] == ["audio"] * 5
    assert {s["codec_name"] for s in streams} == {"aac"}
    assert {s["channels"] for s in streams} == {2}
    assert {int(s["sample_rate"]) for s in streams} == {44100}
    assert [s["disposition"]["default"] for s in streams] == [1, 0, 0, 0, 0]
    assert all(200_000 < int(s["bit_rate"]) < 300_000 for s in streams)       # 256 kbps
    # track headers as NI's own tool (MP4Box) writes them: the stems without flags, no alternate group
    # (ffmpeg alone leaves the stems "in movie" and puts all five in one alternate group)
    flags = track_headers(aac_file.read_bytes())
    assert flags[0][0] & 1 == 1 and [f for f, _ in flags[1:]] == [0, 0, 0, 0] and {g for _, g in flags} == {0}


def test_aac_file_has_the_ni_box_as_mixxx_reads_it(aac_file):
    meta = mixxx_stem_json(aac_file.read_bytes())
    assert meta is not None and meta["version"] == 1
    assert [(s["name"], s["color"]) for s in meta["stems"]] == [
        ("Drums", "#009E73"), ("Bass", "#D55E00"), ("Other", "#CC79A7"), ("Vocals", "#56B4E9")]
    dsp = meta["mastering_dsp"]
    assert dsp["compressor"]["enabled"] is False and dsp["limiter"]["enabled"] is False
    assert {"ratio", "threshold", "attack", "release", "input_gain", "output_gain", "hp_cutoff", "dry_wet"} \
        <= set(dsp["compressor"])
    assert {"threshold", "release", "ceiling"} <= set(dsp["limiter"])


def test_aac_file_has_the_itunes_tags(aac_file):
    from mutagen.mp4 import MP4

    tags = MP4(str(aac_file)).tags
    assert tags["\xa9nam"] == ["Tëst Song"] and tags["\xa9ART"] == ["The Band"] and tags["\xa9alb"] == ["LP"]
    assert tags["TAUT"] == ["STEM"]


def test_aac_audio_reads_back_within_20_db(aac_file, song):
    mix, stems = song
    got = read_stem_file(aac_file)
    assert got.rate == RATE and got.codec == "aac" and got.names == ["Drums", "Bass", "Other", "Vocals"]
    assert got.master.dtype == np.float32 and got.stems.dtype == np.float32
    assert got.stems.shape == (4, 2, mix.shape[1]) and got.master.shape == mix.shape   # the AAC padding is cut
    assert snr_db(mix, got.master) > 20
    for i, name in enumerate(nistem.NI_STEMS):
        assert snr_db(stems[name], got.stems[i]) > 20, name
    assert got.tags == {"title": "Tëst Song", "artist": "The Band", "album": "LP", "stem": "STEM"}
    assert got.stem("vocals") is not None and got.metadata["version"] == 1


def test_stempeg_reads_the_file(aac_file, song):
    stempeg = pytest.importorskip("stempeg")
    mix, stems = song
    audio, rate = stempeg.read_stems(str(aac_file))
    assert rate == RATE and audio.shape[0] == 5 and audio.shape[2] == 2
    assert snr_db(mix, audio[0].T) > 20
    for i, name in enumerate(nistem.NI_STEMS):
        assert snr_db(stems[name], audio[1 + i].T) > 20, name


@pytest.mark.parametrize("bits", [16, 24])
def test_alac_is_lossless_to_its_bit_depth(tmp_path, song, bits):
    mix, stems = song
    path = write_stem_file(tmp_path / "song.stem.mp4", mix, stems, RATE, codec="alac", bits=bits)
    streams = ffprobe_streams(path)
    assert [s["codec_name"] for s in streams] == ["alac"] * 5
    assert {int(s["bits_per_raw_sample"]) for s in streams} == {bits}
    got = read_stem_file(path)
    lsb = 2.0 ** -(bits - 1)
    assert got.master.shape == mix.shape
    assert np.abs(got.master - mix).max() <= lsb / 2 + 1e-7
    for i, name in enumerate(nistem.NI_STEMS):
        err = np.abs(got.stems[i] - stems[name]).max()
        assert err <= lsb / 2 + 1e-7, name
        if bits == 24:
            assert err < 2.0 ** -15 / 16     # far finer than 16 bit
    assert mixxx_stem_json(pathlib.Path(path).read_bytes())["version"] == 1


def test_other_rates_mono_and_mapped_names(tmp_path):
    mix, stems = make_stems(rate=48000, seconds=1.0)
    named = {"lead": stems["vocals"][:1], "kit": stems["drums"], "low": stems["bass"], "rest": stems["other"]}
    path = write_stem_file(tmp_path / "x.stem.mp4", mix[:1], named, 48000, order="kit,low,rest,lead",
                           codec="alac")
    streams = ffprobe_streams(path)
    assert {int(s["sample_rate"]) for s in streams} == {44100} and {s["channels"] for s in streams} == {2}
    got = read_stem_file(path)
    assert got.names == ["Kit", "Low", "Rest", "Lead"]
    assert abs(got.frames - 44100) <= 1
    assert np.array_equal(got.master[0], got.master[1])              # mono doubled
    back = read_stem_file(path, rate=48000)
    assert back.rate == 48000 and abs(back.frames - 48000) <= 2
    assert snr_db(stems["drums"], back.stems[0]) > 20     # the noise above 22.05 kHz is gone


def test_tags_are_copied_from_the_input(tmp_path, song):
    import mutagen.flac

    mix, stems = song
    flac = tmp_path / "in.flac"
    sf.write(flac, mix.T, RATE)
    tagged = mutagen.flac.FLAC(flac)
    tagged["title"], tagged["artist"], tagged["album"] = "Flac Title", "Flac Artist", "Flac Album"
    tagged.save()
    wav = tmp_path / "plain.wav"
    sf.write(wav, mix.T, RATE)
    assert nistem.read_tags(flac) == {"title": "Flac Title", "artist": "Flac Artist", "album": "Flac Album"}
    assert nistem.read_tags(wav) == {}
    import mutagen.wave
    from mutagen.id3 import TALB, TIT2

    tagged_wav = tmp_path / "tagged.wav"
    sf.write(tagged_wav, mix[:, :1000].T, RATE)
    w = mutagen.wave.WAVE(tagged_wav)
    w.add_tags()
    w.tags.add(TIT2(encoding=3, text="Wav Title"))
    w.tags.add(TALB(encoding=3, text="Wav Album"))
    w.save()
    assert nistem.read_tags(tagged_wav) == {"title": "Wav Title", "album": "Wav Album"}
    assert nistem.read_tags(tmp_path / "missing.flac") == {}
    path = write_stem_file(tmp_path / "x.stem.mp4", mix[:, :RATE // 2], {k: v[:, :RATE // 2] for k, v in stems.items()},
                           RATE, codec="alac", tags=nistem.read_tags(flac))
    assert read_stem_file(path).tags["album"] == "Flac Album"


# --- moov first, 64-bit boxes, other writers --------------------------------------------------------

def test_files_with_moov_first_and_64_bit_boxes_are_read(tmp_path, song):
    mix, stems = song
    short = {k: v[:, :RATE] for k, v in stems.items()}
    # moov first: five tracks muxed by ffmpeg with +faststart, the NI box added by our code in front of mdat
    plain = tmp_path / "plain.stem.mp4"
    write_stem_file(plain, mix[:, :RATE], short, RATE, codec="alac")
    fast = tmp_path / "fast.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(plain), "-map", "0:a", "-c", "copy",
                    "-movflags", "+faststart", str(fast)], check=True)
    order = [b[0] for b in walk(fast.read_bytes())]
    assert order.index("moov") < order.index("mdat")
    with pytest.raises(AudioError, match="no NI stem box"):
        read_stem_file(fast)
    meta = nistem.stem_metadata(["A", "B", "C", "D"])
    mp4box.rewrite_moov(fast, lambda moov: moov.container("udta").set_child("stem", json.dumps(meta).encode() + b"\0\0"))
    got, ref = read_stem_file(fast), read_stem_file(plain)
    assert got.names == ["A", "B", "C", "D"]
    assert np.array_equal(got.master, ref.master) and np.array_equal(got.stems, ref.stems)

    # 64-bit boxes: ffmpeg's 8-byte free box before mdat becomes mdat's 64-bit header; moov gets one too
    data = bytearray(plain.read_bytes())
    boxes = walk(bytes(data))
    free, mdat, moov = (next(b for b in boxes if b[0] == k) for k in ("free", "mdat", "moov"))
    assert free[3] == 8 and free[1] + 8 == mdat[1] and mdat[2] == 8
    data[free[1]:free[1] + 16] = b"\0\0\0\x01mdat" + (mdat[3] + 8).to_bytes(8, "big")
    body = bytes(data[moov[1] + 8:moov[1] + moov[3]])
    data[moov[1]:] = b"\0\0\0\x01moov" + (len(body) + 16).to_bytes(8, "big") + body
    wide = tmp_path / "wide.stem.mp4"
    wide.write_bytes(bytes(data))
    assert [(b[0], b[2]) for b in walk(bytes(data))][-2:] == [("mdat", 16), ("moov", 16)]
    got = read_stem_file(wide)
    assert np.array_equal(got.master, ref.master) and np.array_equal(got.stems, ref.stems)
    # and our box code rewrites it (the NI box replaced) without moving the media
    mp4box.rewrite_moov(wide, lambda moov: moov.container("udta").set_child("stem", json.dumps(meta).encode()))
    assert np.array_equal(read_stem_file(wide).stems, ref.stems) and read_stem_file(wide).names[0] == "A"


def test_a_stem_file_from_another_writer_is_read():
    """stempeg ships a stem file written with MP4Box (moov first, cover art, NI's 'Vox')."""
    stempeg = pytest.importorskip("stempeg")
    path = pathlib.Path(stempeg.__file__).parent / "data" / "The Easton Ellises - Falcon 69.stem.mp4"
    if not path.is_file():
        pytest.skip("stempeg's example stem file is not installed")
    got = read_stem_file(path)
    assert got.names == ["Drums", "Bass", "Other", "Vox"] and got.rate == 44100 and got.codec == "aac"
    ref, rate = stempeg.read_stems(str(path))
    n = got.frames
    assert n == ref.shape[1]
    assert np.allclose(got.master, ref[0].T, atol=1e-6) and np.allclose(got.stems, ref[1:].transpose(0, 2, 1), atol=1e-6)
    assert nistem.is_stem_path(path) and not nistem.is_stem_path("song.mp4")


def test_files_that_are_not_stem_files_are_refused(tmp_path, song):
    mix, _ = song
    two = tmp_path / "two.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=d=0.5", "-f", "lavfi", "-i", "sine=d=0.5",
                    "-map", "0", "-map", "1", "-c:a", "aac", str(two)], check=True)
    with pytest.raises(AudioError, match="two.m4a is not a stem file: it has no NI stem box"):
        read_stem_file(two)
    mp4box.rewrite_moov(two, lambda m: m.container("udta").set_child("stem", json.dumps(nistem.stem_metadata("abcd")).encode()))
    with pytest.raises(AudioError, match="5 audio tracks are needed .* the file has 2"):
        read_stem_file(two)
    mp4box.rewrite_moov(two, lambda m: m.container("udta").set_child("stem", b'{"version": 0, "stems": []}'))
    with pytest.raises(AudioError, match="no version >= 1"):
        read_stem_file(two)
    junk = tmp_path / "junk.stem.mp4"
    junk.write_bytes(b"\0\0\0\x10junkjunkjunk")
    with pytest.raises(AudioError, match="junk.stem.mp4"):
        read_stem_file(junk)
    with pytest.raises(AudioError, match="not found"):
        read_stem_file(tmp_path / "missing.stem.mp4")


# --- failures leave no file ----------------------------------------------------------------------------

def entries(folder):
    return sorted(p.name for p in pathlib.Path(folder).iterdir())


def test_a_bad_setting_or_bad_audio_leaves_no_file(tmp_path, song):
    mix, stems = song
    out = tmp_path / "out"
    out.mkdir()
    target = out / "x.stem.mp4"
    with pytest.raises(SettingsError, match="the model has 2: vocals, other"):
        write_stem_file(target, mix, {"vocals": mix, "other": mix}, RATE)
    with pytest.raises(SettingsError, match="codec must be one of aac, alac"):
        write_stem_file(target, mix, stems, RATE, codec="mp3")
    with pytest.raises(SettingsError, match="16 or 24 bit"):
        write_stem_file(target, mix, stems, RATE, codec="alac", bits=20)
    with pytest.raises(SettingsError, match="32 to 512 kbps, not 1000"):
        write_stem_file(target, mix, stems, RATE, kbps=1000)
    with pytest.raises(SettingsError, match="whole numbers, not 'fast'"):
        write_stem_file(target, mix, stems, RATE, kbps="fast")
    bad = dict(stems, bass=np.where(np.arange(mix.shape[1]) == 7, np.nan, stems["bass"]).astype(np.float32))
    with pytest.raises(AudioError, match="stem bass: 2 NaN/inf samples"):
        write_stem_file(target, mix, bad, RATE)
    # a rate the AAC encoder refuses: ffmpeg fails after starting; its reason is in the one line
    with pytest.raises(AudioError, match="ffmpeg failed .*sample rate 12345 is not supported") as info:
        write_stem_file(target, mix, stems, RATE, out_rate=12345)
    assert "\n" not in str(info.value)
    assert entries(out) == []


def test_ffmpeg_killed_midway_leaves_no_file_and_keeps_the_old_one(tmp_path):
    mix, stems = make_stems(seconds=20.0)
    out = tmp_path / "out"
    out.mkdir()
    target = out / "x.stem.mp4"
    target.write_bytes(b"the previous file")
    wrapper = tmp_path / "ffmpeg-killed"
    # runs the real ffmpeg and kills it (by its PID) as soon as its output file has data
    wrapper.write_text(f"""#!/bin/bash
out="${{@: -1}}"
{shutil.which("ffmpeg")} "$@" &
pid=$!
for i in $(seq 1 3000); do
  if [ -s "$out" ]; then kill -KILL $pid; echo killed > {tmp_path}/was-killed; break; fi
  sleep 0.005
done
wait $pid
""")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(AudioError, match="cannot write .*x.stem.mp4: ffmpeg failed"):
        write_stem_file(target, mix, stems, RATE, ffmpeg=str(wrapper))
    assert (tmp_path / "was-killed").exists()
    assert entries(out) == ["x.stem.mp4"] and target.read_bytes() == b"the previous file"


def test_a_missing_ffmpeg_is_one_error_naming_the_package(tmp_path, song, monkeypatch):
    mix, stems = song
    made = write_stem_file(tmp_path / "ok.stem.mp4", mix[:, :4096], {k: v[:, :4096] for k, v in stems.items()},
                           RATE, codec="alac")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(SettingsError, match=r"ffmpeg not found: .*apt-get install ffmpeg"):
        write_stem_file(tmp_path / "x.stem.mp4", mix, stems, RATE)
    with pytest.raises(SettingsError, match=r"not found: .*apt-get install ffmpeg"):
        read_stem_file(made)
    assert entries(tmp_path) == ["ok.stem.mp4"]

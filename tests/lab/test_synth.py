"""The song generator (streamer.lab.synth, with arrangement, grooves, midiedit, singing) and its synth command."""
import os
import random
import re

import mido
import numpy as np
import pytest

from bridge.cli import main
from streamer.lab import synth
from streamer.lab.arrangement import plan_song
from streamer.lab.grooves import families, library_dir
from streamer.lab.synth import STEMS, generate_song, missing_tools, soundfonts, write_song

needs_tools = pytest.mark.skipif(bool(missing_tools()), reason=f"song generator tools missing: {missing_tools()} "
                                 "(make synth-deps installs them)")
POOL_SECONDS = 3.0


def _seeds_where(pred, seconds: float, count: int, start: int = 0) -> list[int]:
    """Seeds whose song plan (the first thing generate_song draws) satisfies pred."""
    out = []
    for seed in range(start, start + 500):
        if pred(plan_song(random.Random(seed), seconds)):
            out.append(seed)
            if len(out) == count:
                return out
    raise AssertionError("no seed found")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """A handful of short songs whose vocals start at once, with their MIDI files."""
    root = tmp_path_factory.mktemp("pool")
    seeds = _seeds_where(lambda p: p.sections[0].vocals and p.bars * p.bar_seconds > POOL_SECONDS, POOL_SECONDS, 7)
    return [(generate_song(seed, POOL_SECONDS, midi_dir=str(root / str(seed))), str(root / str(seed)))
            for seed in seeds]


def _f0(x: np.ndarray, rate: int) -> np.ndarray:
    """Autocorrelation f0 (Hz) of 40 ms frames that carry at least a tenth of the loudest frame's energy."""
    n, hop = int(0.04 * rate), int(0.02 * rate)
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[::hop]
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = (frames ** 2).sum(axis=1)
    frames = frames[energy > 0.1 * energy.max()]
    spec = np.fft.rfft(frames * np.hanning(n), 2 * n)
    ac = np.fft.irfft(np.abs(spec) ** 2)[:, :n]
    lo, hi = rate // 800, rate // 80
    lag = lo + np.argmax(ac[:, lo:hi], axis=1)
    clear = ac[np.arange(len(ac)), lag] > 0.5 * ac[:, 0]
    return rate / lag[clear]


@needs_tools
def test_generated_songs_are_deterministic_sums_of_their_stems(tmp_path):
    a = generate_song(5, 3.0)
    b = generate_song(5, 3.0)
    c = generate_song(6, 3.0)
    for s in STEMS:
        assert a.stems[s].shape == (2, 3 * 44100) and a.stems[s].dtype == np.float32
        np.testing.assert_array_equal(a.stems[s], b.stems[s])
    np.testing.assert_allclose(a.mixture, sum(a.stems[s] for s in STEMS), atol=1e-6)
    assert not np.allclose(a.mixture, c.mixture)
    assert np.abs(a.mixture).max() <= 0.95
    assert all(np.sqrt(np.mean(a.stems[s] ** 2)) > 1e-3 for s in ("drums", "bass", "other"))
    assert a.info == b.info
    write_song(a, tmp_path / "song")
    assert sorted(os.listdir(tmp_path / "song")) == ["bass.wav", "drums.wav", "mixture.wav", "other.wav", "vocals.wav"]


@needs_tools
def test_synth_command(tmp_path, capsys):
    assert main(["synth", "--seed", "11", "--count", "2", "--seconds", "2", "--out", str(tmp_path)]) == 0
    assert sorted(os.listdir(tmp_path)) == ["synth_000011", "synth_000012"]
    assert "bpm" in capsys.readouterr().out


@needs_tools
def test_groove_table_names_grooves_of_the_installed_library():
    fams = families()
    assert len(fams) > 100 and {"4/4", "3/4", "6/8"} <= {f.meter for f in fams}
    for fam in fams:
        with open(os.path.join(library_dir(), fam.library + ".mma"), errors="replace") as fh:
            defined = {m.lower() for m in re.findall(r"^\s*defgroove\s+(\S+)", fh.read(), re.I | re.M)}
        for name in fam.mains + fam.intros + fam.fills + fam.ends:
            assert name.lower() in defined, (fam.library, name)


def test_plans_vary_meter_tempo_form_and_parts():
    plans = [plan_song(random.Random(seed), 20.0) for seed in range(60)] if families() else []
    if not plans:
        pytest.skip("MMA's groove library is not installed")
    assert {"4/4", "3/4"} <= {p.meter for p in plans}
    assert min(p.tempo for p in plans) < 80 and max(p.tempo for p in plans) > 150
    assert len({p.family.library for p in plans}) > 30
    assert any(len({s.groove for s in p.sections}) > 1 for p in plans)  # the arrangement changes within a song
    assert any(s.fill for p in plans for s in p.sections) and any(s.drum_fill for p in plans for s in p.sections)
    assert any(p.ending for p in plans) and any(n.harmony is not None for p in plans for n in p.melody)
    assert any(part.confuser for p in plans for part in p.parts)
    kinds = {part.kind for p in plans for part in p.parts}
    assert {"pad", "keys", "guitar", "arp", "lead"} <= kinds
    for p in plans:
        assert all(part.program in (52, 53, 54, 85, 91) for part in p.parts if part.confuser)
        assert all(part.program not in (52, 53, 54, 85, 91) for part in p.parts if not part.confuser)


@needs_tools
def test_a_three_four_song_sings_three_beats_to_the_bar(tmp_path):
    seed = _seeds_where(lambda p: p.meter == "3/4" and p.sections[0].vocals, 4.0, 1)[0]
    plan = plan_song(random.Random(seed), 4.0)
    song = generate_song(seed, 4.0, midi_dir=str(tmp_path))
    assert song.info["meter"] == "3/4" and np.sqrt(np.mean(song.stems["vocals"] ** 2)) > 1e-3
    sig = [m for m in mido.MidiFile(tmp_path / "song.mid").tracks[0] if m.type == "time_signature"]
    assert (sig[-1].numerator, sig[-1].denominator) == (3, 4)
    mel = mido.MidiFile(tmp_path / "melody.mid")
    sig = [m for m in mel.tracks[0] if m.type == "time_signature"]
    assert (sig[0].numerator, sig[0].denominator) == (3, 4)
    assert max(n.start + n.dur for n in plan.melody) <= plan.bars * 3
    # the melody's bars are 3 beats long: notes on a downbeat are tones of that bar's chord (longer plans)
    downbeats = 0
    for seed in _seeds_where(lambda p: p.meter == "3/4", 20.0, 5):
        plan = plan_song(random.Random(seed), 20.0)
        bar_lines = [line.split()[1:] for line in plan.chart.splitlines() if line[:1].isdigit()]
        assert plan.beats == 3 and len(bar_lines) == plan.bars and all(len(b) == 3 for b in bar_lines)
        for n in plan.melody:
            if n.start % 3 == 0:
                assert n.pitch % 12 in plan.chord_at(n.start).pcs
                downbeats += 1
    assert downbeats > 5


@needs_tools
def test_pool_songs_sum_use_both_soundfonts_and_sing(pool):
    fonts = {os.path.splitext(os.path.basename(f))[0] for f in soundfonts()}
    used = {f for song, _ in pool for f in song.info["soundfonts"].values()}
    assert used == fonts
    if len(fonts) > 1:
        assert any(len(set(song.info["soundfonts"].values())) > 1 for song, _ in pool)  # per part, not only per song
    for song, _ in pool:
        np.testing.assert_allclose(song.mixture, sum(song.stems[s] for s in STEMS), atol=1e-6)
        assert np.abs(song.mixture).max() <= 0.95
        info = song.info
        for key in ("style", "meter", "tempo", "key", "soundfonts", "sections", "vocal_style", "confuser_lead"):
            assert key in info
        assert 60 <= info["tempo"] <= 180
        # sung vocals: present, and their pitch moves
        vocals = song.stems["vocals"].mean(axis=0)
        assert np.sqrt(np.mean(vocals ** 2)) > 1e-3
        f0 = _f0(vocals, song.rate)
        assert len(f0) > 10
        semitones = 12 * np.log2(np.percentile(f0, 90) / np.percentile(f0, 10))
        assert semitones > 1.5, semitones


@needs_tools
def test_ghost_notes_fills_and_slides_are_in_the_midi(pool):
    ghosts = fills = slides = 0
    for song, midi in pool:
        drums = [m for t in mido.MidiFile(os.path.join(midi, "drums.mid")).tracks for m in t]
        ghosts += sum(1 for m in drums if m.type == "note_on" and m.channel == 9 and m.note in (38, 40)
                      and 0 < m.velocity < 45)
        toms = sum(1 for m in drums if m.type == "note_on" and m.velocity > 0 and m.note in (41, 43, 45, 47, 48, 50))
        with open(os.path.join(midi, "song.mma")) as fh:
            fills += bool(re.search(r"^Groove \S*fill", fh.read(), re.I | re.M)) or bool(toms)
        bass = [m for t in mido.MidiFile(os.path.join(midi, "bass.mid")).tracks for m in t]
        slides += sum(1 for m in bass if m.type == "pitchwheel" and m.pitch != 0)
        assert song.info["drums"]["ghost_notes"] >= 0 and song.info["bass"]["articulation"]
    assert ghosts > 0 and fills > 0 and slides > 0


@needs_tools
def test_a_vocal_like_lead_goes_to_other_only(monkeypatch):
    """Rendering replaced by a tone for the confuser part and silence for everything else: the tone ends up in
    "other", and the vocals are the same with or without it."""
    seed = _seeds_where(lambda p: any(part.confuser for part in p.parts), 2.0, 1)[0]

    def fake(tone):
        def render(midi, wav, font, seconds, work, rng):
            n = int(seconds * synth.RATE)
            name = os.path.basename(midi)
            if tone and name.startswith("voice-"):
                return np.tile(np.sin(2 * np.pi * 440 * np.arange(n) / synth.RATE).astype(np.float32), (2, 1))
            return np.zeros((2, n), np.float32)
        return render

    monkeypatch.setattr(synth, "_render", fake(True))
    with_lead = generate_song(seed, 2.0)
    monkeypatch.setattr(synth, "_render", fake(False))
    without = generate_song(seed, 2.0)
    assert with_lead.info["confuser_lead"]
    assert np.sqrt(np.mean(with_lead.stems["other"] ** 2)) > 1e-3
    assert not np.any(without.stems["other"])
    np.testing.assert_allclose(with_lead.stems["vocals"] / np.abs(with_lead.stems["vocals"]).max(),
                               without.stems["vocals"] / np.abs(without.stems["vocals"]).max(), rtol=1e-5, atol=1e-6)


@needs_tools
def test_sung_syllables_follow_the_notes(tmp_path):
    from streamer.lab import singing

    voice = singing.Voice("en-us", "f3", True, 50, 120)
    speaker = singing.Espeak(voice, str(tmp_path))
    ref = speaker.syllable("a", 48)
    ref_hz = float(np.median(ref.f0[ref.voiced]))
    notes = [singing.VocalNote(0.1 + 0.6 * i, 0.5, p, 0.8, t, 0) for i, (p, t) in
             enumerate(zip((60, 64, 67, 72), ("la", "love", "me", "oh")))]
    y = singing.sing_line(notes, speaker, singing.Expression(vibrato_depth=0.0, drift=0.0, accuracy=0.0, scoop=0,
                                                             fall=0), random.Random(0), int(2.8 * singing.SR), ref_hz)
    f0, aper, rms = singing.f0_track(y)
    t = np.arange(len(f0)) * singing.HOP / singing.SR
    for note in notes:
        sel = (t > note.start + 0.15) & (t < note.start + note.dur - 0.1) & (aper < 0.3) & (rms > 0.05 * rms.max())
        assert sel.sum() > 5
        got = np.median(f0[sel])
        assert abs(12 * np.log2(got / singing.midi_hz(note.pitch))) < 0.5, (note.pitch, got)


def test_soundfont_presets_reads_drum_kits():
    from streamer.lab.midiedit import soundfont_presets

    for path in soundfonts():
        presets = soundfont_presets(path)
        assert (0, 0) in presets and (128, 0) in presets


def test_missing_soundfonts_are_reported(monkeypatch):
    monkeypatch.setattr(synth, "SOUNDFONTS", ("/nonexistent/a.sf2",))
    assert any("soundfont" in m for m in missing_tools())


def test_installed_soundfonts_listed_once():
    fonts = soundfonts()
    assert len({os.path.realpath(f) for f in fonts}) == len(fonts)
    assert all(os.path.exists(f) for f in fonts)


def test_silent_sections_of_a_stem_are_digital_silence():
    """Traces far below hearing (filter and effect leftovers) become exact zeros, so a silent
    reference second is skipped by the per-second SDR instead of scoring -50 dB."""
    from streamer.lab.synth import GATE_BLOCK, _gate

    x = np.zeros((2, 20 * GATE_BLOCK), np.float32)
    x[:, : 5 * GATE_BLOCK] = 0.1
    x[:, 10 * GATE_BLOCK:] = 1e-8   # -160 dBFS: a trace
    y = _gate(x)
    np.testing.assert_array_equal(y[:, : 5 * GATE_BLOCK], x[:, : 5 * GATE_BLOCK])
    assert not y[:, 10 * GATE_BLOCK:].any()
    quiet_but_real = np.full((2, 4 * GATE_BLOCK), 1e-4, np.float32)  # -80 dBFS is kept
    np.testing.assert_array_equal(_gate(quiet_but_real), quiet_but_real)


def test_no_sampled_singer_is_a_confuser_in_other():
    from streamer.lab.arrangement import SUNG_PROGRAMS

    confusers = [part.program for seed in range(300) for part in plan_song(random.Random(seed), 20.0).parts
                 if part.confuser]
    assert len(confusers) > 30 and not set(confusers) & set(SUNG_PROGRAMS)


@needs_tools
def test_a_backing_choir_of_sampled_singers_goes_to_vocals_only(tmp_path, monkeypatch):
    """A song with a backing choir: choir.mid plays a sampled-voice program in the choir's sections; the
    vocals stem carries it (more energy than the same song without the choir) while drums, bass and other
    are the same song as without it, and the mixture is still the exact sum."""
    from streamer.lab import arrangement
    from streamer.lab.arrangement import SUNG_PROGRAMS, backing_choir

    seconds = 4.0
    def choir_from_the_start(seed):
        part = backing_choir(seed, plan_song(random.Random(seed), seconds))
        return part is not None and 0 in part.sections

    seed = next(s for s in _seeds_where(lambda p: p.sections[0].vocals, seconds, 40, start=100)
                if choir_from_the_start(s))
    with_choir = generate_song(seed, seconds, midi_dir=str(tmp_path / "with"))
    info = with_choir.info["backing_choir"]
    assert info["program"] in SUNG_PROGRAMS and -12 <= info["level_db"] <= -4
    programs = [m.program for t in mido.MidiFile(str(tmp_path / "with" / "choir.mid")).tracks for m in t
                if m.type == "program_change"]
    assert programs == [info["program"]]
    np.testing.assert_allclose(with_choir.mixture, sum(with_choir.stems[s] for s in STEMS), atol=1e-6)

    monkeypatch.setattr(arrangement, "backing_choir", lambda seed, plan: None)
    without = generate_song(seed, seconds, midi_dir=str(tmp_path / "without"))
    assert without.info["backing_choir"] is None and not (tmp_path / "without" / "choir.mid").exists()

    def shape(x):
        return x / np.abs(x).max()

    for stem in ("drums", "bass", "other"):
        np.testing.assert_allclose(shape(with_choir.stems[stem]), shape(without.stems[stem]), rtol=1e-5, atol=1e-6)
    # the choir is in the vocals: what the lead alone does not explain
    v_with, v_without = shape(with_choir.stems["vocals"]), shape(without.stems["vocals"])
    assert np.sqrt(np.mean((v_with - v_without) ** 2)) > 0.01

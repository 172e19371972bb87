"""Multitrack songs with ground truth, generated from Debian packages only (no data downloads).

Per song (deterministic by seed):

* MMA (Musical MIDI Accompaniment) turns a random chord chart (key, mode, progression, tempo,
  groove) into a multi-track MIDI file; its tracks are split by name into drums (``Drum*``),
  bass (``Bass*``, ``Walk*``) and other (chords, arpeggios, scales, plucks, ...).
* The vocal stem is a melody over the chords, sung by a General MIDI voice patch (choir "aahs",
  voice "oohs", synth voice) and, in most songs, chanted words from espeak-ng on top.
* FluidSynth renders each stem separately with a General MIDI soundfont.
* Every stem gets a random gain, stereo placement and tone filtering (vocals included, so that
  a model cannot learn "no energy above 11 kHz means voice", espeak's weakness), and the
  mixture is the exact sum of the stems.

``stemstream synth`` writes songs in MUSDB18-HQ layout: one folder per song with
``mixture.wav``, ``vocals.wav``, ``drums.wav``, ``bass.wav`` and ``other.wav``.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from ..audio import resample
from ..errors import StemstreamError

STEMS = ("vocals", "drums", "bass", "other")
RATE = 44100
SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/TimGM6mb.sf2",
              "/usr/share/sounds/sf2/default-GM.sf2")
TOOLS = {"mma": "mma", "fluidsynth": "fluidsynth", "espeak-ng": "espeak-ng"}
# 4/4 grooves of MMA's standard library that have drum, bass and chord tracks
GROOVES = ("8Beat", "50sRock", "60sRock", "BasicRock", "Ballad", "Blues", "BossaNova", "SlowCountry", "Folk",
           "FolkRock", "JazzRock", "PopBallad", "RockBallad", "SoftRock", "Ska", "Swing",
           "Shuffleboggie", "Samba", "Rhumba", "Twist", "Zydeco", "Strut", "Trance", "Bluegrass", "Calypso",
           "CountryBlues", "Jive", "Mambo", "DSoul", "BvFunk", "SlowBlues", "Son", "HillCountry")
NOTE_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
# progressions as scale degrees (0-based) with chord quality suffixes per mode
PROGRESSIONS = ((0, 5, 3, 4), (0, 4, 5, 3), (0, 3, 4, 4), (5, 3, 0, 4), (0, 3, 0, 4), (1, 4, 0, 0),
                (0, 0, 3, 3, 4, 4, 0, 0), (0, 5, 1, 4), (3, 4, 0, 5), (0, 2, 3, 4))
MAJOR_QUALITY = ("", "m", "m", "", "7", "m", "dim")
MINOR_QUALITY = ("m", "dim", "", "m", "7", "", "")
VOICE_PROGRAMS = (52, 53, 54, 85)  # Choir Aahs, Voice Oohs, Synth Voice, Lead 6 (voice)
ESPEAK_VOICES = ("en+f1", "en+f2", "en+f3", "en+f4", "en+m1", "en+m2", "en+m3", "en+m4", "en-us+f2", "en-us+m3")
WORDS = ("love", "night", "baby", "home", "light", "dream", "fire", "heart", "away", "tonight", "forever",
         "dancing", "river", "shine", "stay", "alone", "together", "yeah", "oh", "la la", "hold me", "come on")


@dataclass
class Song:
    seed: int
    rate: int
    stems: dict[str, np.ndarray]   # name -> (2, samples) float32
    mixture: np.ndarray            # (2, samples), the exact sum of the stems
    info: dict


def missing_tools() -> list[str]:
    """Programs and files the generator needs that are not installed."""
    missing = [name for name, exe in TOOLS.items() if shutil.which(exe) is None]
    if soundfont() is None:
        missing.append("a General MIDI soundfont (timgm6mb-soundfont or fluid-soundfont-gm)")
    return missing


def soundfont() -> str | None:
    return next((p for p in SOUNDFONTS if os.path.exists(p)), None)


def _run(cmd: list[str], cwd: str) -> None:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        raise StemstreamError(f"{cmd[0]} failed ({res.returncode}): {(res.stderr or res.stdout).strip()[-500:]}")


def _chart(rng: random.Random, bars: int) -> tuple[str, list[list[int]], dict]:
    """An MMA chord chart and, per bar, the chord's pitch classes."""
    key = rng.randrange(12)
    minor = rng.random() < 0.35
    scale, quality = (MINOR, MINOR_QUALITY) if minor else (MAJOR, MAJOR_QUALITY)
    prog = rng.choice(PROGRESSIONS)
    tempo = rng.randint(76, 150)
    groove = rng.choice(GROOVES)
    lines = [f"RndSeed {rng.randrange(1, 1_000_000)}", f"Tempo {tempo}", f"Groove {groove}"]
    chords = []
    for bar in range(bars):
        degree = prog[bar % len(prog)]
        root = (key + scale[degree]) % 12
        q = quality[degree]
        lines.append(f"{bar + 1} {NOTE_NAMES[root]}{q}")
        third = 3 if q in ("m", "dim") else 4
        fifth = 6 if q == "dim" else 7
        chords.append([root, (root + third) % 12, (root + fifth) % 12])
    info = {"key": NOTE_NAMES[key] + ("m" if minor else ""), "tempo": tempo, "groove": groove, "bars": bars}
    return "\n".join(lines) + "\n", chords, info


def _split_midi(path: str, out_dir: str) -> dict[str, str]:
    """Split MMA's MIDI file by track name into drums/bass/other files; returns stem -> path."""
    import mido

    mid = mido.MidiFile(path)
    conductor = mid.tracks[0]
    groups: dict[str, list] = {"drums": [], "bass": [], "other": []}
    for track in mid.tracks[1:]:
        name = track.name.lower()
        stem = "drums" if name.startswith("drum") else "bass" if name.startswith(("bass", "walk")) else "other"
        groups[stem].append(track)
    files = {}
    for stem, tracks in groups.items():
        if not tracks:
            continue
        out = mido.MidiFile(type=1, ticks_per_beat=mid.ticks_per_beat)
        out.tracks.append(conductor)
        out.tracks.extend(tracks)
        files[stem] = os.path.join(out_dir, f"{stem}.mid")
        out.save(files[stem])
    return files


def _melody_midi(rng: random.Random, chords: list[list[int]], tempo: int, path: str) -> None:
    """A sung melody: chord tones on strong beats, scale steps between, phrases with rests."""
    import mido

    tpb = 480
    mid = mido.MidiFile(type=1, ticks_per_beat=tpb)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo), time=0))
    program = rng.choice(VOICE_PROGRAMS)
    track.append(mido.Message("program_change", program=program, channel=0, time=0))
    low = rng.randint(55, 64)
    pending = 0
    prev = low + 7
    for bar, chord in enumerate(chords):
        if rng.random() < 0.2:  # a resting bar
            pending += 4 * tpb
            continue
        beat = 0.0
        while beat < 4:
            dur = rng.choice((0.5, 0.5, 1.0, 1.0, 1.5, 2.0))
            dur = min(dur, 4 - beat)
            if rng.random() < 0.12:
                pending += int(dur * tpb)
                beat += dur
                continue
            pcs = chord if beat in (0.0, 2.0) else chord + [(chord[0] + 2) % 12, (chord[0] + 9) % 12]
            candidates = [n for n in range(low, low + 19) if n % 12 in pcs]
            note = min(candidates, key=lambda n: abs(n - prev) + rng.random() * 6)
            prev = note
            vel = rng.randint(70, 115)
            track.append(mido.Message("note_on", note=note, velocity=vel, channel=0, time=pending))
            length = int(dur * tpb * rng.uniform(0.8, 0.98))
            track.append(mido.Message("note_off", note=note, velocity=0, channel=0, time=length))
            pending = int(dur * tpb) - length
            beat += dur
    mid.save(path)


def _espeak_phrases(rng: random.Random, seconds: float, tempo: int, work: str) -> np.ndarray:
    """Chanted words from espeak-ng at random places: (samples,) at RATE."""
    out = np.zeros(int(seconds * RATE), np.float32)
    voice = rng.choice(ESPEAK_VOICES)
    bar = 4 * 60.0 / tempo
    t = rng.uniform(0, bar)
    i = 0
    while t < seconds - 0.5:
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
        wav = os.path.join(work, f"say{i}.wav")
        _run(["espeak-ng", "-v", voice, "-p", str(rng.randint(30, 90)), "-s", str(rng.randint(110, 200)),
              "-w", wav, words], work)
        data, rate = sf.read(wav, dtype="float32", always_2d=True)
        data = resample(data.T, rate, RATE)[0]
        start = int(t * RATE)
        end = min(len(out), start + len(data))
        out[start:end] += data[: end - start]
        t += len(data) / RATE + rng.choice((0.5, 1.0, 1.0, 2.0)) * bar
        i += 1
    return out


def _render(midi: str, wav: str, font: str, seconds: float, work: str, rng: random.Random) -> np.ndarray:
    _run(["fluidsynth", "-ni", "-q", "-g", "0.6", "-r", str(RATE), "-R", str(int(rng.random() < 0.5)),
          "-C", "0", "-F", wav, font, midi], work)
    data, _ = sf.read(wav, dtype="float32", always_2d=True)
    return _fit(data.T, int(seconds * RATE))


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    if x.shape[-1] >= n:
        return x[..., :n]
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])])


def _tone(x: np.ndarray, rng: random.Random, lowpass_range: tuple[float, float], p_lowpass: float) -> np.ndarray:
    """Random smooth tone shaping: a low-pass (sometimes), a gentle tilt, a high-pass at 20-120 Hz."""
    spec = np.fft.rfft(x, axis=-1)
    f = np.fft.rfftfreq(x.shape[-1], 1 / RATE)
    gain = np.ones_like(f)
    if rng.random() < p_lowpass:
        fc = rng.uniform(*lowpass_range)
        gain /= np.sqrt(1 + (f / fc) ** (2 * rng.choice((2, 3, 4))))
    hp = rng.uniform(20, 120)
    gain /= np.sqrt(1 + (hp / np.maximum(f, 1e-3)) ** 4)
    tilt = rng.uniform(-2.0, 2.0)  # dB per octave around 1 kHz
    gain *= 10 ** (tilt * np.log2(np.maximum(f, 20) / 1000) / 20)
    return np.fft.irfft(spec * gain, n=x.shape[-1], axis=-1).astype(np.float32)


def _place(x: np.ndarray, rng: random.Random, width: float) -> np.ndarray:
    """Stereo placement: a random pan (constant power) of the stem's mid, keeping some of its side."""
    if x.shape[0] == 1:
        x = np.repeat(x, 2, axis=0)
    pan = rng.uniform(-width, width)
    left, right = np.sqrt(0.5 * (1 - pan)), np.sqrt(0.5 * (1 + pan))
    mid = x.mean(axis=0)
    side = (x[0] - x[1]) * 0.5 * rng.uniform(0.3, 1.0)
    return np.stack([mid * left * 1.414 + side, mid * right * 1.414 - side]).astype(np.float32)


def generate_song(seed: int, seconds: float = 20.0) -> Song:
    """One song with ground truth: (2, seconds * 44100) float32 stems and their exact sum."""
    missing = missing_tools()
    if missing:
        raise StemstreamError("the song generator needs " + ", ".join(missing) +
                              ": run `make synth-deps` (apt-get install mma fluidsynth timgm6mb-soundfont espeak-ng)")
    rng = random.Random(seed)
    font = soundfont()
    bars = int(seconds * 150 / 60 / 4) + 3  # enough bars at the fastest tempo
    chart, chords, info = _chart(rng, bars)
    with tempfile.TemporaryDirectory(prefix="stemstream-synth-") as work:
        with open(os.path.join(work, "song.mma"), "w") as fh:
            fh.write(chart)
        _run(["mma", "song.mma", "-f", "song.mid"], work)
        parts = _split_midi(os.path.join(work, "song.mid"), work)
        n = int(seconds * RATE)
        stems = {s: np.zeros((2, n), np.float32) for s in STEMS}
        for stem, midi in parts.items():
            stems[stem] = _render(midi, os.path.join(work, f"{stem}.wav"), font, seconds, work, rng)
        _melody_midi(rng, chords, info["tempo"], os.path.join(work, "melody.mid"))
        vocals = _render(os.path.join(work, "melody.mid"), os.path.join(work, "melody.wav"), font, seconds, work, rng)
        vocals /= np.abs(vocals).max() + 1e-9
        info["espeak"] = rng.random() < 0.75
        if info["espeak"]:
            words = _espeak_phrases(rng, seconds, info["tempo"], work)
            words /= np.abs(words).max() + 1e-9
            vocals = vocals * rng.uniform(0.3, 0.8) + words[None] * rng.uniform(0.5, 1.0)
        stems["vocals"] = vocals
    levels_db = {"vocals": (-4, 0), "drums": (-7, -1), "bass": (-8, -2), "other": (-10, -3)}
    lowpass = {"vocals": (5000, 16000), "drums": (6000, 18000), "bass": (1500, 8000), "other": (4000, 16000)}
    for name in STEMS:
        x = stems[name]
        if not np.any(x):
            continue
        x = _tone(x, rng, lowpass[name], 0.6)
        x = _place(x, rng, 0.15 if name in ("vocals", "bass") else 0.6)
        rms = np.sqrt(np.mean(x**2)) + 1e-9
        stems[name] = (x / rms * 0.1 * 10 ** (rng.uniform(*levels_db[name]) / 20)).astype(np.float32)
    mixture = np.sum([stems[s] for s in STEMS], axis=0)
    peak = np.abs(mixture).max()
    scale = rng.uniform(0.5, 0.95) / peak if peak > 0 else 1.0
    stems = {k: (v * scale).astype(np.float32) for k, v in stems.items()}
    mixture = np.sum([stems[s] for s in STEMS], axis=0).astype(np.float32)
    info["seed"] = seed
    return Song(seed, RATE, stems, mixture, info)


def write_song(song: Song, folder: str) -> None:
    """MUSDB18-HQ layout: folder/{mixture,vocals,drums,bass,other}.wav (float32)."""
    os.makedirs(folder, exist_ok=True)
    sf.write(os.path.join(folder, "mixture.wav"), song.mixture.T, song.rate, subtype="FLOAT")
    for name, data in song.stems.items():
        sf.write(os.path.join(folder, f"{name}.wav"), data.T, song.rate, subtype="FLOAT")

"""Multitrack songs with ground truth, generated from Debian packages only (no data downloads).

Per song (deterministic by seed; streamer.lab.arrangement draws every musical choice first):

* A plan: meter (4/4, 3/4, 6/8, 5/4), tempo (60-180 quarter notes a minute), key and mode, one of about 200
  groove families of MMA's libraries (streamer.lab.grooves), a form of sections (intro, verse, pre-chorus,
  chorus, bridge, outro) with their own progressions, groove variants, loudness and fills, sometimes an ending
  or a key change; a melody with lyrics, harmonies and backing vocals; extra parts for "other".
* MMA (Musical MIDI Accompaniment) turns the chord chart into multi-track MIDI, split note by note into drums
  (channel 10), bass (bass programs) and other; the drums get a kit, ghost notes, generated fills and
  crashes, the bass slides and articulation (streamer.lab.midiedit); "other" gets pads, keys, strummed
  guitars, arpeggios, counter melodies and, in some songs, a vocal-like synth lead (a confuser: not vocals).
  Sampled singers (General MIDI choir aahs, voice oohs) are never "other": as in MUSDB18, every sung voice
  is vocals, so about 30% of songs get a sampled backing choir in the vocals stem (choir.mid).
* FluidSynth renders drums, bass, the accompaniment and the extra parts separately, each with a General MIDI
  soundfont drawn per song and per part among the installed ones (FluidR3_GM, TimGM6mb).
* The vocals are sung by espeak-ng voices: syllables re-pitched and re-timed to the melody with glides,
  vibrato, breaths, harmonies, doubles (streamer.lab.singing).
* Every stem gets a random gain, stereo placement and tone filtering (vocals included, so that a model cannot
  learn "no energy above 11 kHz means voice", espeak's weakness), and the mixture is the exact sum of the
  stems.

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

from ..audio import fit_length
from ..errors import StemstreamError

STEMS = ("vocals", "drums", "bass", "other")
RATE = 44100
SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/TimGM6mb.sf2",
              "/usr/share/sounds/sf2/default-GM.sf2")
TOOLS = {"mma": "mma", "fluidsynth": "fluidsynth", "espeak-ng": "espeak-ng"}


@dataclass
class Song:
    seed: int
    rate: int
    stems: dict[str, np.ndarray]   # name -> (2, samples) float32
    mixture: np.ndarray            # (2, samples), the exact sum of the stems
    info: dict


def missing_tools() -> list[str]:
    """Programs and files the generator needs that are not installed."""
    from .grooves import families

    missing = [name for name, exe in TOOLS.items() if shutil.which(exe) is None]
    if not soundfonts():
        missing.append("a General MIDI soundfont (fluid-soundfont-gm or timgm6mb-soundfont)")
    if shutil.which("mma") is not None and not families():
        missing.append("MMA's groove library")
    return missing


def soundfonts() -> list[str]:
    """The installed General MIDI soundfonts (each file once: default-GM.sf2 is a link to one of them)."""
    seen, out = set(), []
    for path in SOUNDFONTS:
        if os.path.exists(path):
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                out.append(path)
    return out


def soundfont() -> str | None:
    fonts = soundfonts()
    return fonts[0] if fonts else None


def _run(cmd: list[str], cwd: str) -> None:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        raise StemstreamError(f"{cmd[0]} failed ({res.returncode}): {(res.stderr or res.stdout).strip()[-500:]}")


def _render(midi: str, wav: str, font: str, seconds: float, work: str, rng: random.Random) -> np.ndarray:
    """FluidSynth, offline, float output, with a random reverb and (sometimes) chorus."""
    reverb = rng.random() < 0.6
    opts = ["-o", "synth.dynamic-sample-loading=1", "-o", f"synth.reverb.active={int(reverb)}",
            "-o", f"synth.chorus.active={int(rng.random() < 0.25)}"]
    if reverb:
        opts += ["-o", f"synth.reverb.room-size={rng.uniform(0.1, 0.9):.3f}",
                 "-o", f"synth.reverb.level={rng.uniform(0.3, 0.9):.3f}",
                 "-o", f"synth.reverb.damp={rng.uniform(0.1, 0.7):.3f}"]
    _run(["fluidsynth", "-ni", "-q", "-g", f"{rng.uniform(0.45, 0.7):.3f}", "-r", str(RATE), "-O", "float", *opts,
          "-F", wav, font, midi], work)
    data, _ = sf.read(wav, dtype="float32", always_2d=True)
    return fit_length(data.T, int(seconds * RATE))



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


def generate_song(seed: int, seconds: float = 20.0, midi_dir: str | None = None) -> Song:
    """One song with ground truth: (2, seconds * 44100) float32 stems and their exact sum. ``midi_dir``, if
    given, receives the chart (song.mma), MMA's MIDI (song.mid), the MIDI files rendered (drums, bass,
    accompaniment and one per extra part: pad, keys, guitar, arp, lead, voice-lead, voice-pad; choir.mid for a
    backing choir) and melody.mid (the sung melody, harmony notes on channel 2)."""
    import mido

    from .arrangement import NOTE_NAMES, plan_song
    from .midiedit import edit_bass, edit_drums, melody_midi, parts_events, save, soundfont_presets, split_stems
    from .singing import render_vocals

    missing = missing_tools()
    if missing:
        raise StemstreamError("the song generator needs " + ", ".join(missing) + ": run `make synth-deps` "
                              "(apt-get install mma fluidsynth fluid-soundfont-gm timgm6mb-soundfont espeak-ng)")
    rng = random.Random(seed)
    plan = plan_song(rng, seconds)
    fonts = soundfonts()
    song_font = rng.choice(fonts)
    font = {part: song_font if rng.random() < 0.5 else rng.choice(fonts)
            for part in ("drums", "bass", "accompaniment") + tuple(p.kind for p in plan.parts)}
    n = int(seconds * RATE)
    info: dict = {
        "seed": seed, "style": plan.family.style, "library": plan.family.library, "meter": plan.meter,
        "tempo": plan.tempo, "key": NOTE_NAMES[plan.key] + ("m" if plan.minor else ""),
        "groove": plan.sections[0].groove,
        "sections": [{"kind": s.kind, "bars": s.bars, "groove": s.groove, "fill": s.fill or
                      ("drums" if s.drum_fill else None), "key": NOTE_NAMES[s.key]} for s in plan.sections],
        "ending": plan.ending, "key_change": len({s.key for s in plan.sections}) > 1,
        "soundfonts": {part: os.path.splitext(os.path.basename(f))[0] for part, f in font.items()},
        "parts": [{"kind": p.kind, "program": p.program} for p in plan.parts],
        "confuser_lead": any(p.confuser for p in plan.parts),
    }
    with tempfile.TemporaryDirectory(prefix="stemstream-synth-") as work:
        keep = midi_dir or work
        os.makedirs(keep, exist_ok=True)
        with open(os.path.join(keep, "song.mma"), "w") as fh:
            fh.write(plan.chart)
        _run(["mma", os.path.join(keep, "song.mma"), "-f", os.path.join(keep, "song.mid")], work)
        mid = mido.MidiFile(os.path.join(keep, "song.mid"))
        tpb = mid.ticks_per_beat
        conductor = mid.tracks[0]
        events, split_info = split_stems(mid, rng)
        info.update(split_info)
        events["drums"], info["drums"] = edit_drums(events["drums"], plan, rng, tpb,
                                                    soundfont_presets(font["drums"]))
        events["bass"], info["bass"] = edit_bass(events["bass"], plan, rng, tpb)
        parts = {"drums": events["drums"], "bass": events["bass"], "accompaniment": events["other"]}
        for p in plan.parts:
            parts[p.kind] = parts_events([p], plan, rng, tpb)
        melody_midi(plan.melody, plan, os.path.join(keep, "melody.mid"))
        audio = {}
        for part, part_events in parts.items():
            path = os.path.join(keep, f"{part}.mid")
            save(part_events, conductor, tpb, path)
            if any(m.type == "note_on" for _, _, m in part_events):
                audio[part] = _render(path, os.path.join(work, f"{part}.wav"), font[part], seconds, work, rng)
            else:
                audio[part] = np.zeros((2, n), np.float32)
        stems = {"drums": audio["drums"], "bass": audio["bass"]}
        acc = audio["accompaniment"]
        ref = np.sqrt(np.mean(acc ** 2)) + 1e-4
        other = acc.copy()
        for p in plan.parts:  # each extra part at a level of its own against MMA's accompaniment
            x = audio[p.kind]
            gain = 10 ** (rng.uniform(-9, 1) / 20)
            if np.any(x):
                other += x * ref / (np.sqrt(np.mean(x ** 2)) + 1e-9) * gain
        stems["other"] = other.astype(np.float32)
        stems["vocals"], info["vocals"] = render_vocals(plan, rng, work, n, RATE)
        info["backing_choir"] = _add_backing_choir(stems, seed, plan, conductor, tpb, fonts, keep, work, seconds)
    info["vocal_style"] = info["vocals"]["style"]
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
    stems = {k: _gate((v * scale).astype(np.float32)) for k, v in stems.items()}
    mixture = np.sum([stems[s] for s in STEMS], axis=0).astype(np.float32)
    return Song(seed, RATE, stems, mixture, info)


def _add_backing_choir(stems: dict, seed: int, plan, conductor, tpb: int, fonts: list[str], keep: str, work: str,
                       seconds: float) -> dict | None:
    """Mix the song's sampled backing choir (arrangement.backing_choir), if it has one, into the vocals
    stem, 4-12 dB under the lead; returns what was added (for the song's info) or None. Its own random
    stream: the rest of the song does not change with it."""
    from .arrangement import backing_choir
    from .midiedit import parts_events, save

    part = backing_choir(seed, plan)
    if part is None or not part.notes:
        return None
    rng = random.Random(f"backing-choir-mix-{seed}")
    path = os.path.join(keep, "choir.mid")
    save(parts_events([part], plan, rng, tpb), conductor, tpb, path)
    font = rng.choice(fonts)
    sung = _render(path, os.path.join(work, "choir.wav"), font, seconds, work, rng)
    level = rng.uniform(-12, -4)
    if not np.any(sung):
        return None
    lead = stems["vocals"]
    ref = float(np.sqrt(np.mean(lead ** 2))) if np.any(lead) else 0.05
    stems["vocals"] = (lead + sung * (ref / (float(np.sqrt(np.mean(sung ** 2))) + 1e-9)) * 10 ** (level / 20)
                       ).astype(np.float32)
    return {"program": part.program, "sections": part.sections, "level_db": round(level, 1),
            "soundfont": os.path.splitext(os.path.basename(font))[0]}


GATE_DB = -100.0   # stems' blocks quieter than this become digital silence
GATE_BLOCK = 512


def _gate(x: np.ndarray) -> np.ndarray:
    """Digital silence where a stem is silent: the tone filter (an FFT over the whole song) and the
    effects leave traces of -120 to -180 dBFS in a stem's silent sections; a reference with such
    traces is not silent, and its per-second SDR (see ``streamer.lab.metrics``) becomes a meaningless
    -50 dB instead of being skipped as MUSDB's silent stems are. Blocks of GATE_BLOCK samples whose
    peak is below GATE_DB are set to zero."""
    n = x.shape[-1]
    blocks = -(-n // GATE_BLOCK)
    padded = np.pad(np.abs(x).max(axis=0), (0, blocks * GATE_BLOCK - n)).reshape(blocks, GATE_BLOCK)
    quiet = padded.max(axis=1) < 10 ** (GATE_DB / 20)
    if not quiet.any():
        return x
    mask = np.repeat(~quiet, GATE_BLOCK)[:n]
    return (x * mask).astype(np.float32)


def write_song(song: Song, folder: str) -> None:
    """MUSDB18-HQ layout: folder/{mixture,vocals,drums,bass,other}.wav (float32)."""
    os.makedirs(folder, exist_ok=True)
    sf.write(os.path.join(folder, "mixture.wav"), song.mixture.T, song.rate, subtype="FLOAT")
    for name, data in song.stems.items():
        sf.write(os.path.join(folder, f"{name}.wav"), data.T, song.rate, subtype="FLOAT")

"""Song plans for the generator: every musical choice of a song, drawn from one ``random.Random`` before any
rendering.

A plan has a meter, a tempo, a key (major or minor) and an MMA groove family; a form of sections (intro, verse,
pre-chorus, chorus, bridge, outro) each with its own chord progression, harmonic rhythm, groove variant,
loudness and, at its end, a fill (the groove's Fill variant or a generated drum fill); sometimes an ending
(the groove's End variant and then silence) and a key change for the last chorus. Over it: a sung melody
(motifs repeated the way songs repeat them, chord tones on strong beats, phrases with breaths, melismas,
harmony notes on some phrases, backing "oohs"), and extra parts for the "other" stem (pads, keys, strummed
guitars, arpeggios, a counter melody and, in some songs, a vocal-like synth lead as a confuser). Times are in
MMA beats (quarter notes, eighth notes in 6/8) from the song's start.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from .grooves import METERS, Family, families

NOTE_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
CHORD_TONES = {"": (0, 4, 7), "m": (0, 3, 7), "7": (0, 4, 7, 10), "maj7": (0, 4, 7, 11), "m7": (0, 3, 7, 10),
               "sus4": (0, 5, 7), "sus2": (0, 2, 7), "add9": (0, 4, 7, 2), "6": (0, 4, 7, 9), "m6": (0, 3, 7, 9),
               "m7b5": (0, 3, 6, 10), "dim": (0, 3, 6), "9": (0, 4, 7, 10, 2), "m9": (0, 3, 7, 10, 2)}
# triad quality of each scale degree
MAJOR_TRIADS = ("", "m", "m", "", "", "m", "m7b5")
MINOR_TRIADS = ("m", "m7b5", "", "m", "7", "", "")
SEVENTHS = {"": "maj7", "m": "m7", "m7b5": "m7b5", "7": "7"}
# progressions as scale degrees (0-based), one chord per harmonic step
PROGRESSIONS = ((0, 5, 3, 4), (0, 4, 5, 3), (0, 3, 4, 4), (5, 3, 0, 4), (0, 3, 0, 4), (1, 4, 0, 0),
                (0, 0, 3, 3, 4, 4, 0, 0), (0, 5, 1, 4), (3, 4, 0, 5), (0, 2, 3, 4), (0, 3, 5, 4), (0, 4, 3, 4),
                (5, 4, 3, 4), (0, 1, 3, 4), (3, 0, 4, 5), (0, 4, 5, 2, 3, 0, 3, 4), (1, 4, 0, 5), (5, 1, 4, 0),
                (0, 6, 5, 4), (3, 3, 0, 0), (0, 0, 4, 4), (5, 4, 0, 3), (0, 2, 5, 4), (3, 4, 5, 5))
BLUES = (0, 0, 0, 0, 3, 3, 0, 0, 4, 3, 0, 4)
FORMS = (("intro", "verse", "chorus", "verse", "chorus", "bridge", "chorus", "outro"),
         ("intro", "verse", "pre", "chorus", "verse", "pre", "chorus", "bridge", "chorus", "outro"),
         ("intro", "verse", "verse", "chorus", "verse", "chorus", "outro"),
         ("verse", "chorus", "verse", "chorus", "bridge", "chorus", "outro"),
         ("intro", "chorus", "verse", "chorus", "bridge", "chorus", "outro"),
         ("intro", "verse", "chorus", "bridge", "verse", "chorus", "chorus", "outro"))
VOLUMES = {"intro": ("mp", "mf"), "verse": ("mp", "mf"), "pre": ("mf",), "chorus": ("f", "mf", "ff"),
           "bridge": ("mp", "mf", "f"), "outro": ("mf", "mp")}
SWING_STYLES = ("swing", "jazz", "shuffle", "blues", "boggie", "boogie", "bebop", "dixie", "ragtime", "charleston",
                "foxtrot", "softshoe", "quickstep", "bigband", "basie", "bouncy")
METER_WEIGHTS = {"4/4": 0.6, "3/4": 0.25, "6/8": 0.1, "5/4": 0.05}
STRONG_BEATS = {"4/4": (0, 2), "3/4": (0,), "6/8": (0, 3), "5/4": (0, 3)}
# General MIDI programs (0-based) of the extra parts
PAD_PROGRAMS = (48, 49, 50, 51, 88, 89, 90, 92, 93, 94, 95, 16, 19, 61, 44)
KEYS_PROGRAMS = (0, 1, 2, 3, 4, 5, 6, 7, 11, 16, 17, 18)
GUITAR_PROGRAMS = (24, 25, 26, 27, 28, 29, 30)
ARP_PROGRAMS = (46, 12, 13, 8, 10, 24, 25, 0, 4, 81, 80, 98, 108, 104, 105)
LEAD_PROGRAMS = (56, 57, 60, 64, 65, 66, 68, 71, 73, 74, 40, 41, 22, 80, 81, 82, 83, 84, 86, 87, 29, 30, 26, 11, 9)
# The confusers of "other": vocal-like synthesizers (pad 4 (choir), synth voice, lead 6 (voice)). Listed with
# repeats so that a song draws them exactly as when this list began with choir aahs and voice oohs (52, 53):
# those are recordings of singers, and in MUSDB18's convention every sung voice, a choir included, is
# "vocals", so they sing in the vocals stem now (backing_choir) and never in "other".
VOICE_PROGRAMS = (91, 54, 54, 85, 91)
SUNG_PROGRAMS = (52, 53)          # choir aahs, voice oohs: sampled singers (backing_choir)
CHOIR_PROBABILITY = 0.3           # songs with a sampled backing choir in the vocals stem


@dataclass
class Chord:
    beat: float      # MMA beats from the bar's start
    root: int        # pitch class
    quality: str     # an MMA chord suffix (a key of CHORD_TONES)

    @property
    def name(self) -> str:
        return NOTE_NAMES[self.root] + self.quality

    @property
    def pcs(self) -> list[int]:
        return [(self.root + i) % 12 for i in CHORD_TONES[self.quality]]


@dataclass
class Section:
    kind: str
    start: int                # first bar (0-based)
    bars: int
    groove: str
    fill: str | None          # MMA groove of the last bar (a Fill variant), if any
    drum_fill: bool           # a generated drum fill in the last bar
    volume: str
    key: int
    chords: list[list[Chord]]  # per bar
    vocals: bool

    @property
    def end(self) -> int:
        return self.start + self.bars


@dataclass
class Note:
    start: float              # MMA beats from the song's start
    dur: float
    pitch: int
    vel: int
    syllable: bool = True     # False: a melisma (the previous note's syllable goes on)
    phrase: int = 0
    harmony: int | None = None
    lyric: int = 0            # which lyric line this phrase sings (repeated choruses repeat it)


@dataclass
class Part:
    kind: str                 # pad, keys, guitar, arp, lead, voice-lead, voice-pad; choir (vocals)
    program: int
    notes: list[Note] = field(default_factory=list)
    confuser: bool = False    # a vocal-like sound that belongs to "other"
    sections: list[int] = field(default_factory=list)


@dataclass
class Plan:
    family: Family
    meter: str
    beats: int                # MMA beats per bar
    mma_tempo: int            # MMA beats per minute
    tempo: int                # quarter notes per minute
    key: int
    minor: bool
    sections: list[Section]
    female: bool              # the singer's register
    melody: list[Note]
    backing: list[Note]
    parts: list[Part]
    ending: bool
    double: bool
    harmony: str | None
    rap: bool
    swing: float = 0.5        # where an off-beat eighth falls within the beat (0.5 straight, 2/3 triplet swing)
    chart: str = ""

    def warp(self, beat: float) -> float:
        """A straight position in beats moved to the groove's swing (off-beat eighths late)."""
        if self.swing == 0.5:
            return beat
        whole = math.floor(beat)
        frac = beat - whole
        if frac <= 0.5:
            return whole + frac / 0.5 * self.swing
        return whole + self.swing + (frac - 0.5) / 0.5 * (1 - self.swing)

    def seconds(self, beat: float) -> float:
        return self.warp(beat) * self.beat_seconds

    @property
    def beat_seconds(self) -> float:
        return 60.0 / self.mma_tempo

    @property
    def bar_seconds(self) -> float:
        return self.beats * self.beat_seconds

    @property
    def bars(self) -> int:
        return self.sections[-1].end if self.sections else 0

    def chord_at(self, beat: float) -> Chord:
        bar = min(int(beat // self.beats), self.bars - 1)
        sec = next(s for s in self.sections if s.start <= bar < s.end)
        chords = sec.chords[bar - sec.start]
        pos = beat - bar * self.beats
        return [c for c in chords if c.beat <= pos + 1e-9][-1] if pos >= 0 else chords[0]

    def section_at(self, beat: float) -> Section:
        bar = min(int(beat // self.beats), self.bars - 1)
        return next(s for s in self.sections if s.start <= bar < s.end)

    def scale(self, key: int) -> list[int]:
        return [(key + i) % 12 for i in (MINOR if self.minor else MAJOR)]


def plan_song(rng: random.Random, seconds: float) -> Plan:
    fams = families()
    meters = [m for m in METER_WEIGHTS if any(f.meter == m for f in fams)]
    meter = rng.choices(meters, [METER_WEIGHTS[m] for m in meters])[0]
    family = rng.choice([f for f in fams if f.meter == meter])
    beats, unit = METERS[meter]
    tempo = rng.randint(60, 120) if meter == "6/8" else rng.randint(60, 180)
    mma_tempo = int(round(tempo / unit))
    key = rng.randrange(12)
    minor = rng.random() < 0.4
    color = rng.choices(("triads", "sevenths", "colour"), (0.45, 0.25, 0.3))[0]
    bar_s = beats * 60.0 / mma_tempo
    need = math.ceil(seconds / bar_s) + 1

    # harmony of each section kind
    bluesy = any(w in family.style.lower() for w in ("blues", "boogie", "shuffle"))
    progs = {}
    for kind in ("verse", "pre", "chorus", "bridge"):
        if kind == "verse" and bluesy and rng.random() < 0.5:
            progs[kind] = BLUES
        else:
            progs[kind] = rng.choice([p for p in PROGRESSIONS if p not in progs.values()])
    progs["intro"] = rng.choice((progs["verse"], progs["chorus"]))
    progs["outro"] = progs["chorus"]
    per_bar = {k: rng.choices((1, 2, 0.5), (0.65, 0.25 if beats in (4, 6) else 0.0, 0.1 if bar_s < 1.8 else 0.0))[0]
               for k in progs}

    # form
    L = min((2, 4, 8), key=lambda b: abs(b * bar_s - rng.uniform(5, 12)))
    lengths = {"intro": rng.choice((1, 2, max(1, L // 2), L)), "verse": L * rng.choice((1, 1, 1, 2)),
               "pre": max(1, L // 2), "chorus": L, "bridge": rng.choice((max(2, L // 2), L)),
               "outro": max(1, L // 2)}
    form = list(rng.choice(FORMS))
    if rng.random() < 0.35:  # an excerpt from later in the song
        form = form[rng.randrange(1, len(form) - 1):]
    kinds: list[str] = []
    total = 0
    i = 0
    while total < need:
        kind = form[i] if i < len(form) else ("verse", "chorus")[(i - len(form)) % 2]
        i += 1
        if kind == "outro" and total + lengths[kind] < need:
            continue  # the form goes on: no outro in the middle
        kinds.append(kind)
        total += lengths[kind]
    ending = rng.random() < 0.25 and seconds >= 6 * bar_s
    bar_counts = [lengths[k] for k in kinds]
    if ending:  # stop a little before the end of the song, on an ending groove
        last = max(2, int((seconds - rng.uniform(0.8, 2.5)) / bar_s))
        end_bars = min(2, last - 1) if family.ends else 1
        kinds2, counts2, used = [], [], 0
        for k, c in zip(kinds, bar_counts):
            if used >= last - end_bars:
                break
            c = min(c, last - end_bars - used)
            kinds2.append(k)
            counts2.append(c)
            used += c
        kinds, bar_counts = kinds2 + ["outro"], counts2 + [end_bars]

    # grooves for each kind
    mains = family.mains
    g = {"verse": rng.choice(mains)}
    others = [m for m in mains if m != g["verse"]] or list(mains)
    g["chorus"] = rng.choice(others) if rng.random() < 0.75 else g["verse"]
    g["bridge"] = rng.choice(mains)
    g["pre"] = rng.choice((g["verse"], g["chorus"]))
    g["intro"] = rng.choice(family.intros) if family.intros and rng.random() < 0.7 else g["verse"]
    g["outro"] = g["chorus"]
    modulate = rng.random() < 0.15
    last_chorus = max((j for j, k in enumerate(kinds) if k == "chorus"), default=-1)
    shift = rng.choice((1, 2)) if modulate and last_chorus > 0 else 0
    volume = {k: rng.choice(v) for k, v in VOLUMES.items()}
    bridge_vocals = rng.random() < 0.6

    sections = []
    start = 0
    for j, (kind, bars) in enumerate(zip(kinds, bar_counts)):
        sec_key = (key + (shift if shift and j >= last_chorus else 0)) % 12
        is_end = ending and j == len(kinds) - 1
        groove = rng.choice(family.ends) if is_end and family.ends else g[kind]
        has_next = j + 1 < len(kinds)
        fill = rng.choice(family.fills) if has_next and family.fills and bars > 1 and rng.random() < 0.8 else None
        drum_fill = has_next and fill is None and rng.random() < 0.6
        chords = _section_chords(rng, progs[kind], per_bar[kind], bars, beats, sec_key, minor, color, meter)
        vocals = kind in ("verse", "pre", "chorus") or (kind == "bridge" and bridge_vocals)
        sections.append(Section(kind, start, bars, groove, fill, drum_fill, volume[kind], sec_key, chords, vocals))
        start += bars

    female = rng.random() < 0.55
    plan = Plan(family, meter, beats, mma_tempo, tempo, key, minor, sections, female, [], [], [], ending,
                double=rng.random() < 0.35, harmony=rng.choice((None, None, "third above", "third below",
                                                                 "sixth below", "fifth above")),
                rap=rng.random() < 0.1)
    if meter != "6/8" and any(w in family.style.lower() for w in SWING_STYLES):
        plan.swing = rng.uniform(0.58, 0.67)
    plan.melody = _melody(rng, plan)
    plan.backing = _backing(rng, plan) if rng.random() < 0.2 else []
    plan.parts = _parts(rng, plan)
    plan.chart = _chart(rng, plan)
    return plan


def _quality(rng: random.Random, degree: int, minor: bool, color: str) -> str:
    q = (MINOR_TRIADS if minor else MAJOR_TRIADS)[degree]
    if color == "sevenths":
        return SEVENTHS.get(q, q) if degree != 4 or minor else "7"
    if color == "colour" and rng.random() < 0.35:
        if q == "":
            return rng.choice(("maj7", "add9", "6", "sus2", "sus4", "7" if degree == 4 else "maj7"))
        if q == "m":
            return rng.choice(("m7", "m9", "m6" if degree == 0 else "m7"))
        if q == "7":
            return rng.choice(("9", "sus4", "7"))
    return q


def _section_chords(rng: random.Random, prog: tuple[int, ...], per_bar: float, bars: int, beats: int, key: int,
                    minor: bool, color: str, meter: str) -> list[list[Chord]]:
    scale = MINOR if minor else MAJOR
    qualities = {d: _quality(rng, d, minor, color) for d in set(prog)}
    out = []
    step = 0
    for bar in range(bars):
        if per_bar == 2:
            half = {4: 2, 6: 3}.get(beats, beats)
            positions = [0, half]
        elif per_bar == 0.5 and bar % 2 == 1:
            out.append([Chord(0, out[-1][-1].root, out[-1][-1].quality)])
            continue
        else:
            positions = [0]
        chords = []
        for pos in positions:
            d = prog[step % len(prog)]
            chords.append(Chord(pos, (key + scale[d]) % 12, qualities[d]))
            step += 1
        out.append(chords)
    return out


def _chart(rng: random.Random, plan: Plan) -> str:
    """The MMA file: library, seed, tempo, then per section its groove and volume and one line per bar."""
    lines = [f"Use {plan.family.library}", f"RndSeed {rng.randrange(1, 1_000_000)}", f"Tempo {plan.mma_tempo}"]
    for sec in plan.sections:
        lines += [f"Groove {sec.groove}", f"Volume {sec.volume}"]
        for i, chords in enumerate(sec.chords):
            if sec.fill and i == sec.bars - 1:
                lines.append(f"Groove {sec.fill}")
            tokens = ["/"] * plan.beats
            for c in chords:
                tokens[int(c.beat)] = c.name
            lines.append(f"{sec.start + i + 1} " + " ".join(tokens))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# melodies


def _grid(plan: Plan) -> float:
    return 1.0 if plan.meter == "6/8" else (0.25 if plan.beat_seconds >= 0.8 else 0.5)


def _rhythm(rng: random.Random, plan: Plan, span: float, rest: float,
            density: float = 1.0) -> list[tuple[float, float]]:
    """Onsets and lengths (beats, from the phrase's start) filling span - rest: note lengths around a singable
    0.2-0.8 s, a pickup now and then, an occasional rest, a long last note."""
    g = _grid(plan)
    choices = [g * k for k in (1, 2, 3, 4, 6, 8)]
    target = 0.42 / density
    weights = [math.exp(-(math.log(max(c * plan.beat_seconds, 1e-3) / target)) ** 2 / 0.5) for c in choices]
    t = rng.choice((0.0, 0.0, 0.0, g, 2 * g))
    stop = span - rest
    out = []
    while t < stop - g / 2:
        d = rng.choices(choices, weights)[0]
        d = min(d, stop - t)
        if rng.random() < 0.08 and out:
            t += g
            continue
        out.append((t, d))
        t += d
    if out:
        t0, _ = out[-1]
        out[-1] = (t0, max(stop - t0, g))
    return out


def _shape(rng: random.Random, n: int) -> list[float]:
    """A melodic contour in semitones around the phrase's centre."""
    kind = rng.choice(("arch", "fall", "rise", "wave", "flat"))
    amp = rng.uniform(3, 7)
    out = []
    for i in range(n):
        x = i / max(n - 1, 1)
        v = {"arch": math.sin(math.pi * x), "fall": 1 - x, "rise": x, "wave": math.sin(2 * math.pi * x),
             "flat": 0.3}[kind]
        out.append(amp * (v - 0.4) + rng.gauss(0, 1.5))
    return out


def _fit(plan: Plan, beat: float, target: float, prev: int | None, strong: bool, lo: int, hi: int,
         rng: random.Random) -> int:
    chord = plan.chord_at(beat)
    sec = plan.section_at(beat)
    pcs = set(chord.pcs) if strong else set(plan.scale(sec.key))
    cands = [p for p in range(lo, hi + 1) if p % 12 in pcs] or list(range(lo, hi + 1))

    def cost(p: int) -> float:
        c = abs(p - target)
        if prev is not None:
            leap = abs(p - prev)
            c += 0.5 * max(0, leap - 4) + (2.0 if leap > 9 else 0.0) + (0.8 if leap == 0 else 0.0)
        return c + rng.random() * 1.5

    return min(cands, key=cost)


def _compose(rng: random.Random, plan: Plan, sec: Section, centre: int, lo: int, hi: int, density: float,
             rest_beats: float) -> list[tuple[float, float, float, bool, int]]:
    """A section's melody as (beat from the section's start, length, contour target, melisma, phrase index),
    phrase by phrase: phrase shapes repeat in an AABA-like pattern."""
    bar_s = plan.bar_seconds
    pb = 1 if bar_s >= 3.2 else 2 if bar_s >= 1.3 else 4
    pb = min(pb, sec.bars)
    n_phr = max(1, sec.bars // pb)
    pattern = rng.choice(((0, 1, 0, 2), (0, 0, 1, 1), (0, 1, 0, 1), (0, 1, 2, 0), (0, 0, 1, 2)))
    motifs: dict[int, tuple] = {}
    out = []
    for k in range(n_phr):
        pid = pattern[k % len(pattern)]
        if pid not in motifs:
            rhythm = _rhythm(rng, plan, pb * plan.beats, rest_beats, density)
            motifs[pid] = (rhythm, _shape(rng, len(rhythm)), [rng.random() < 0.1 for _ in rhythm])
        rhythm, shape, melis = motifs[pid]
        off = k * pb * plan.beats
        lift = rng.choice((0, 0, 0, 2, -2)) if pid == pattern[0] and k > 0 else 0
        for (t, d), s, m in zip(rhythm, shape, melis):
            out.append((off + t, d, centre + s + lift, m, k))
    return out


def _melody(rng: random.Random, plan: Plan) -> list[Note]:
    lo, hi = (55, 79) if plan.female else (43, 67)
    centre = (lo + hi) // 2 + rng.randint(-3, 2)
    density = rng.uniform(0.7, 1.4)
    rest_beats = {"6/8": 2.0}.get(plan.meter, rng.choice((1.0, 1.5, 2.0)))
    composed: dict[str, list] = {}
    lyric_ids: dict[str, int] = {}
    notes: list[Note] = []
    strong = STRONG_BEATS[plan.meter]
    phrase_id = 0
    lyric_counter = 0
    harmony_p = {"chorus": rng.uniform(0.4, 1.0), "bridge": rng.uniform(0.1, 0.6)}
    for sec in plan.sections:
        if not sec.vocals:
            continue
        kind = sec.kind
        lift = {"chorus": rng.randint(2, 5), "pre": 1, "bridge": rng.randint(-1, 3)}.get(kind, 0)
        if kind not in composed:
            composed[kind] = _compose(rng, plan, sec, centre + lift, lo, hi, density * (1.15 if kind == "chorus"
                                                                                        else 1.0), rest_beats)
        if kind == "chorus" and kind in lyric_ids:
            lyric_base = lyric_ids[kind]
        else:
            lyric_base = lyric_counter
            lyric_ids[kind] = lyric_base
            lyric_counter += 32
        prev = None
        cur_phrase = -1
        harmonise = False
        for t, d, target, melisma, k in composed[kind]:
            beat = sec.start * plan.beats + t
            if t >= sec.bars * plan.beats:
                break
            if k != cur_phrase:
                cur_phrase = k
                phrase_id += 1
                harmonise = plan.harmony is not None and rng.random() < harmony_p.get(kind, 0.15)
            pos = t % plan.beats
            is_strong = any(abs(pos - s) < 1e-6 for s in strong) or d * plan.beat_seconds >= 0.6
            shift = (sec.key - plan.key) % 12  # a key change moves the tune up with it
            pitch = _fit(plan, beat, target + (shift - 12 if shift > 6 else shift), prev, is_strong, lo, hi, rng)
            vel = int(min(120, max(50, rng.gauss(88 if is_strong else 78, 9))))
            note = Note(beat, d, pitch, vel, syllable=not (melisma and prev is not None), phrase=phrase_id,
                        lyric=lyric_base + k)
            if harmonise:
                note.harmony = _harmony_pitch(plan, sec.key, pitch, plan.harmony)
            notes.append(note)
            prev = pitch
    return notes


def _harmony_pitch(plan: Plan, key: int, pitch: int, kind: str) -> int:
    scale = sorted(plan.scale(key))
    degrees = [o * 12 + pc for o in range(11) for pc in scale]
    i = min(range(len(degrees)), key=lambda j: abs(degrees[j] - pitch))
    step = {"third above": 2, "third below": -2, "sixth below": -5, "fifth above": 4}[kind]
    return degrees[max(0, min(len(degrees) - 1, i + step))]


def _backing(rng: random.Random, plan: Plan) -> list[Note]:
    """Backing vocals: sustained chord tones ("oohs") in choruses, two voices."""
    lo, hi = (55, 74) if plan.female else (45, 64)
    out = []
    phrase = 10_000
    for sec in plan.sections:
        if sec.kind != "chorus":
            continue
        for b, chords in enumerate(sec.chords):
            for ci, c in enumerate(chords):
                start = (sec.start + b) * plan.beats + c.beat
                end = (sec.start + b) * plan.beats + (chords[ci + 1].beat if ci + 1 < len(chords) else plan.beats)
                pcs = c.pcs[1:3] if len(c.pcs) >= 3 else c.pcs
                phrase += 1
                for pc in pcs:
                    cands = [p for p in range(lo, hi + 1) if p % 12 == pc]
                    if cands:
                        out.append(Note(start, (end - start) * 0.95, cands[len(cands) // 2], 70, phrase=phrase))
    return out


# ---------------------------------------------------------------------------------------------------------
# extra parts of "other"


def _parts(rng: random.Random, plan: Plan) -> list[Part]:
    kinds = rng.sample(("pad", "keys", "guitar", "arp", "lead"), rng.choices((0, 1, 2, 3), (0.15, 0.4, 0.3, 0.15))[0])
    if rng.random() < 0.35:
        kinds.append(rng.choice(("voice-lead", "voice-lead", "voice-pad")))
    programs = {"pad": PAD_PROGRAMS, "keys": KEYS_PROGRAMS, "guitar": GUITAR_PROGRAMS, "arp": ARP_PROGRAMS,
                "lead": LEAD_PROGRAMS, "voice-lead": VOICE_PROGRAMS[:4], "voice-pad": VOICE_PROGRAMS}
    active = {"pad": {"intro": .6, "verse": .5, "pre": .7, "chorus": .9, "bridge": .7, "outro": .6},
              "keys": {"intro": .7, "verse": .8, "pre": .8, "chorus": .8, "bridge": .7, "outro": .7},
              "guitar": {"intro": .7, "verse": .8, "pre": .8, "chorus": .9, "bridge": .6, "outro": .7},
              "arp": {"intro": .7, "verse": .5, "pre": .6, "chorus": .7, "bridge": .6, "outro": .5},
              "lead": {"intro": .8, "verse": .25, "pre": .2, "chorus": .3, "bridge": .9, "outro": .7},
              "voice-lead": {"intro": .9, "verse": .45, "pre": .5, "chorus": .5, "bridge": .9, "outro": .8},
              "voice-pad": {"intro": .6, "verse": .4, "pre": .6, "chorus": .9, "bridge": .8, "outro": .6}}
    parts = []
    for kind in kinds:
        part = Part(kind, rng.choice(programs[kind]), confuser=kind.startswith("voice"))
        part.sections = [i for i, s in enumerate(plan.sections) if rng.random() < active[kind][s.kind]]
        if not part.sections:
            part.sections = [rng.randrange(len(plan.sections))]
        maker = {"pad": _pad, "voice-pad": _pad, "keys": _keys, "guitar": _guitar, "arp": _arp,
                 "lead": _lead, "voice-lead": _lead}[kind]
        for i in part.sections:
            part.notes += maker(rng, plan, plan.sections[i], part)
        if part.notes:
            parts.append(part)
    return parts


def _voicing(pcs: list[int], lo: int, hi: int, count: int, rng: random.Random) -> list[int]:
    """A close voicing of the chord's pitch classes starting near a random point of [lo, hi]."""
    base = rng.randint(lo, max(lo, hi - 12))
    out = []
    p = base
    i = 0
    while len(out) < count and p <= hi + 12:
        if p % 12 in pcs[:count] or (len(pcs) < count and p % 12 in pcs):
            out.append(p)
        p += 1
        i += 1
    return out or [base]


def _chord_spans(plan: Plan, sec: Section):
    for b, chords in enumerate(sec.chords):
        for ci, c in enumerate(chords):
            bar0 = (sec.start + b) * plan.beats
            end = chords[ci + 1].beat if ci + 1 < len(chords) else plan.beats
            yield bar0, c, bar0 + c.beat, bar0 + end


def _pattern_hits(plan: Plan, sec: Section, pattern: list[float]):
    """Each hit of a one-bar rhythm over the section's bars: (index in the pattern, beat in the bar,
    start beat, beats until the next hit or the bar's end, the chord there)."""
    for b in range(sec.bars):
        bar0 = (sec.start + b) * plan.beats
        for i, on in enumerate(pattern):
            nxt = pattern[i + 1] if i + 1 < len(pattern) else plan.beats
            yield i, on, bar0 + on, nxt - on, plan.chord_at(bar0 + on)


def backing_choir(seed: int, plan: Plan) -> Part | None:
    """The sampled backing choir of song ``seed`` (a part for the vocals stem), or None (most songs).

    Sustained "aah" or "ooh" chords in the singer's register (General MIDI choir aahs or voice oohs, which
    the soundfonts sample from real singers), in most choruses, bridges and outros. Drawn from a random
    stream of its own, so the rest of the song is the same with or without it."""
    rng = random.Random(f"backing-choir-{seed}")
    if rng.random() >= CHOIR_PROBABILITY:
        return None
    part = Part("choir", rng.choice(SUNG_PROGRAMS))
    wanted = [i for i, s in enumerate(plan.sections) if s.kind in ("chorus", "bridge", "outro")]
    part.sections = [i for i in wanted if rng.random() < 0.8] or wanted[:1] or [len(plan.sections) - 1]
    lo, hi = (57, 77) if plan.female else (48, 69)
    voices = rng.choice((3, 4))
    for i in part.sections:
        vel = rng.randint(50, 85)
        for _, c, start, end in _chord_spans(plan, plan.sections[i]):
            for pitch in _voicing(c.pcs, lo, hi, voices, rng):
                part.notes.append(Note(start, (end - start) * 0.95, pitch, vel))
    return part


def _pad(rng: random.Random, plan: Plan, sec: Section, part: Part) -> list[Note]:
    lo, hi = (55, 76) if not part.confuser else ((57, 76) if plan.female else (48, 67))
    vel = rng.randint(45, 80)
    out = []
    for _, c, s, e in _chord_spans(plan, sec):
        for p in _voicing(c.pcs, lo, hi, rng.choice((3, 4)), rng):
            out.append(Note(s, (e - s) * 0.97, p, vel))
    return out


def _pattern(rng: random.Random, plan: Plan) -> list[float]:
    """A comping rhythm: onsets within a bar."""
    b = plan.beats
    if plan.meter == "6/8":
        return rng.choice(([0, 3], [0, 2, 3, 5], [0, 1, 2, 3, 4, 5], [0, 3, 4]))
    if b == 3:
        return rng.choice(([0, 1, 2], [1, 2], [0, 1.5, 2], [0, 0.5, 1, 1.5, 2, 2.5]))
    if b == 5:
        return rng.choice(([0, 1.5, 3], [0, 1, 2, 3, 4], [0, 3]))
    return rng.choice(([0, 1, 2, 3], [0, 1.5, 2.5], [0, 0.5, 1.5, 2, 3, 3.5], [1, 3], [0, 2], [0, 0.75, 1.5, 2.5, 3],
                       [x * 0.5 for x in range(8)], [0.5, 1.5, 2.5, 3.5]))


def _keys(rng: random.Random, plan: Plan, sec: Section, part: Part) -> list[Note]:
    pattern = _pattern(rng, plan)
    length = rng.uniform(0.35, 0.95)
    out = []
    for _, on, start, span, c in _pattern_hits(plan, sec, pattern):
        vel = int(min(120, max(30, rng.gauss(85 if on == 0 else 70, 10))))
        for p in _voicing(c.pcs, 52, 74, rng.choice((3, 4)), rng):
            out.append(Note(start, span * length, p, vel))
    return out


def _guitar(rng: random.Random, plan: Plan, sec: Section, part: Part) -> list[Note]:
    pattern = _pattern(rng, plan)
    power = part.program in (29, 30)
    strum = rng.uniform(0.008, 0.025) / plan.beat_seconds  # beats between strings
    length = rng.uniform(0.4, 0.95) if part.program != 28 else 0.2
    out = []
    for i, on, start, span, c in _pattern_hits(plan, sec, pattern):
        root = 40 + (c.root - 40) % 12
        if power:
            voicing = [root, root + 7, root + 12]
        else:
            voicing = [root] + [p for p in range(root + 5, root + 27) if p % 12 in c.pcs][:rng.choice((3, 4, 5))]
        if i % 2 == 1:
            voicing = voicing[::-1]  # an up-stroke
        vel = int(min(120, max(35, rng.gauss(90 if on == 0 else 75, 10))))
        for k, p in enumerate(voicing):
            out.append(Note(start + k * strum, max(0.05, span * length - k * strum), p, max(20, vel - 3 * k)))
    return out


def _arp(rng: random.Random, plan: Plan, sec: Section, part: Part) -> list[Note]:
    step = 1.0 if plan.meter == "6/8" else rng.choice((0.5, 0.5, 0.25 if plan.beat_seconds > 0.45 else 0.5))
    order = rng.choice(("up", "down", "updown", "random"))
    lo = rng.randint(52, 62)
    out = []
    vel = rng.randint(55, 85)
    for _, c, s, e in _chord_spans(plan, sec):
        tones = [p for p in range(lo, lo + 20) if p % 12 in c.pcs]
        if order == "down":
            tones = tones[::-1]
        elif order == "updown":
            tones = tones + tones[-2:0:-1]
        t, i = s, 0
        while t < e - 1e-6:
            p = rng.choice(tones) if order == "random" else tones[i % len(tones)]
            out.append(Note(t, step * 0.9, p, max(20, vel + rng.randint(-12, 12))))
            t += step
            i += 1
    return out


def _lead(rng: random.Random, plan: Plan, sec: Section, part: Part) -> list[Note]:
    """A counter melody; for the vocal-like confuser, a line in the singer's range."""
    if part.confuser:
        lo, hi = ((55, 79) if plan.female else (45, 69))
    else:
        lo, hi = rng.choice(((60, 84), (55, 79), (48, 72)))
    centre = (lo + hi) // 2 + rng.randint(-3, 3)
    out = []
    strong = STRONG_BEATS[plan.meter]
    for t, d, target, _melisma, _k in _compose(rng, plan, sec, centre, lo, hi, rng.uniform(0.8, 1.5),
                                               rng.choice((1.0, 2.0, 3.0))):
        if t >= sec.bars * plan.beats:
            break
        beat = sec.start * plan.beats + t
        pos = t % plan.beats
        is_strong = any(abs(pos - s) < 1e-6 for s in strong)
        prev = out[-1].pitch if out else None
        p = _fit(plan, beat, target, prev, is_strong, lo, hi, rng)
        legato = 0.98 if part.confuser else rng.uniform(0.6, 0.95)
        out.append(Note(beat, d * legato, p, int(min(120, max(40, rng.gauss(85, 10))))))
    return out

"""MIDI work for the song generator (with mido): MMA's multi-track file split into stems by instrument, drums
with kits, ghost notes, generated fills and crashes, bass lines with slides (pitch bends) and varied
articulation, and the extra parts and the melody written as MIDI files."""
from __future__ import annotations

import random
import struct
from collections import Counter

from .arrangement import SWING_STYLES, Note, Part, Plan

BASS_PROGRAMS = frozenset(range(32, 40)) | {43}
LOW_BRASS = frozenset({57, 58, 70})     # trombone, tuba, bassoon: bass when they play a "Bass" track
SONG_BASS_PROGRAMS = (32, 33, 33, 33, 34, 34, 35, 36, 37, 38, 39)
SNARES = (38, 40)
KICKS = (35, 36)
TOMS = (50, 48, 47, 45, 43, 41)         # high to low
CRASHES = (49, 57)
# GM drum kits (bank 128) and their weights; style words raise some
KITS = {0: 4.0, 8: 1.5, 16: 1.5, 24: 0.7, 25: 0.7, 32: 1.0, 40: 0.6, 48: 0.2}
ELECTRONIC_STYLES = ("dance", "techno", "house", "trance", "rave", "hip", "ambient", "triphop", "electric", "digital",
                     "8beatdance", "disco", "funk", "rb")
Event = tuple[int, int, object]          # (tick, order, mido message); order: offs, controls, bends, ons


def _order(msg) -> int:
    if msg.type == "note_off" or (msg.type == "note_on" and msg.velocity == 0):
        return 0
    if msg.type == "pitchwheel":
        return 2
    if msg.type == "note_on":
        return 3
    return 1


def soundfont_presets(path: str) -> set[tuple[int, int]]:
    """(bank, program) of every preset of a SoundFont 2 file, read from its phdr chunk."""
    found: set[tuple[int, int]] = set()
    try:
        with open(path, "rb") as fh:
            riff, size, kind = struct.unpack("<4sI4s", fh.read(12))
            if riff != b"RIFF":
                return found
            end = 8 + size
            while fh.tell() < end:
                head = fh.read(8)
                if len(head) < 8:
                    break
                cid, csize = struct.unpack("<4sI", head)
                if cid == b"LIST":
                    ltype = fh.read(4)
                    if ltype != b"pdta":
                        fh.seek(csize - 4 + (csize & 1), 1)
                        continue
                    stop = fh.tell() + csize - 4
                    while fh.tell() < stop:
                        sid, ssize = struct.unpack("<4sI", fh.read(8))
                        if sid == b"phdr":
                            data = fh.read(ssize)
                            for i in range(0, len(data) - 38, 38):  # the last record is the terminal one
                                prog, bank = struct.unpack("<HH", data[i + 20:i + 24])
                                found.add((bank, prog))
                            return found
                        fh.seek(ssize + (ssize & 1), 1)
                else:
                    fh.seek(csize + (csize & 1), 1)
    except (OSError, struct.error):
        pass
    return found


def _abs_events(track) -> list[tuple[int, object]]:
    out, tick = [], 0
    for msg in track:
        tick += msg.time
        out.append((tick, msg))
    return out


def split_stems(mid, rng: random.Random) -> tuple[dict[str, list[Event]], dict]:
    """MMA's tracks split note by note into drums (channel 10), bass (bass programs; a low "Bass"/"Walk" track
    with another program is given a bass program when the song has no bass) and other."""
    tracks = [(t.name.lower(), _abs_events(t)) for t in mid.tracks[1:]]
    # notes per track with their program, to find the bass
    has_bass = False
    low_named = []
    for ti, (name, events) in enumerate(tracks):
        prog: dict[int, int] = {}
        pitches = []
        for _, msg in events:
            if msg.type == "program_change":
                prog[msg.channel] = msg.program
            elif msg.type == "note_on" and msg.velocity > 0 and msg.channel != 9:
                p = prog.get(msg.channel, 0)
                if p in BASS_PROGRAMS or (p in LOW_BRASS and name.startswith(("bass", "walk"))):
                    has_bass = True
                pitches.append(msg.note)
        if pitches and name.startswith(("bass", "walk")):
            pitches.sort()
            if pitches[len(pitches) // 2] <= 52:
                low_named.append((len(pitches), ti))
    override = None
    bass_program = rng.choice(SONG_BASS_PROGRAMS)
    if not has_bass and low_named:
        override = max(low_named)[1]
    stems: dict[str, list[Event]] = {"drums": [], "bass": [], "other": []}
    voice_patch = False
    for ti, (name, events) in enumerate(tracks):
        prog = {}
        routed: dict[tuple[int, int], str] = {}
        for tick, msg in events:
            if msg.is_meta:
                continue
            if msg.type == "program_change":
                if ti == override:
                    msg = msg.copy(program=bass_program)
                prog[msg.channel] = msg.program
            if msg.type in ("note_on", "note_off"):
                key = (msg.channel, msg.note)
                if msg.type == "note_on" and msg.velocity > 0:
                    p = prog.get(msg.channel, 0)
                    if msg.channel == 9:
                        stem = "drums"
                    elif ti == override or p in BASS_PROGRAMS or (p in LOW_BRASS and name.startswith(("bass", "walk"))):
                        stem = "bass"
                    else:
                        stem = "other"
                        voice_patch |= p in (52, 53, 54, 85, 91)
                    routed[key] = stem
                else:
                    stem = routed.pop(key, "other")
                stems[stem].append((tick, _order(msg), msg))
            else:
                for stem in stems:
                    stems[stem].append((tick, _order(msg), msg))
    for stem in stems:
        stems[stem].sort(key=lambda e: (e[0], e[1]))
    info = {"bass_from_bass_track": override is not None, "voice_patch_in_accompaniment": voice_patch}
    return stems, info


def _notes(events: list[Event]) -> tuple[list[list], list[Event]]:
    """Notes as [start, end, pitch, velocity, channel] and the other events."""
    notes, rest, open_ = [], [], {}
    for tick, order, msg in events:
        if msg.type == "note_on" and msg.velocity > 0:
            n = [tick, None, msg.note, msg.velocity, msg.channel]
            open_.setdefault((msg.channel, msg.note), []).append(n)
            notes.append(n)
        elif msg.type in ("note_on", "note_off"):
            stack = open_.get((msg.channel, msg.note))
            if stack:
                stack.pop(0)[1] = tick
        else:
            rest.append((tick, order, msg))
    for n in notes:
        if n[1] is None:
            n[1] = n[0] + 1
    return notes, rest


def _note_events(notes: list[list]) -> list[Event]:
    import mido

    out = []
    for start, end, pitch, vel, ch in notes:
        out.append((start, 3, mido.Message("note_on", channel=ch, note=pitch, velocity=int(max(1, min(127, vel))))))
        out.append((max(end, start + 1), 0, mido.Message("note_off", channel=ch, note=pitch, velocity=0)))
    return out


def _kit(rng: random.Random, style: str, presets: set[tuple[int, int]]) -> int:
    kits = {k: w for k, w in KITS.items() if (128, k) in presets} or {0: 1.0}
    s = style.lower()
    if any(w in s for w in ELECTRONIC_STYLES):
        for k in (24, 25):
            if k in kits:
                kits[k] *= 4
    if any(w in s for w in ("jazz", "ballad", "bossa", "swing", "waltz")):
        for k in (32, 40):
            if k in kits:
                kits[k] *= 3
    if any(w in s for w in ("rock", "metal", "punk", "beat")):
        if 16 in kits:
            kits[16] *= 3
    return rng.choices(list(kits), list(kits.values()))[0]


def edit_drums(events: list[Event], plan: Plan, rng: random.Random, tpb: int,
               presets: set[tuple[int, int]]) -> tuple[list[Event], dict]:
    """A kit, humanised velocities, ghost notes on the snare, generated fills and crashes at section starts."""
    import mido

    notes, rest = _notes(events)
    kit = _kit(rng, plan.family.style, presets)
    rest.append((0, 1, mido.Message("program_change", channel=9, program=kit)))
    for n in notes:
        n[3] = n[3] * rng.uniform(0.82, 1.12)
    beat = tpb
    bar = plan.beats * beat
    swing = plan.meter == "6/8" or any(w in plan.family.style.lower() for w in SWING_STYLES)
    step = beat / 3 if swing and plan.meter != "6/8" else beat / 4 if plan.meter != "6/8" else beat / 2
    fills = 0
    # generated fills: the end of sections marked for one
    for sec in plan.sections:
        if not sec.drum_fill:
            continue
        length = rng.choice((1, 2)) if plan.beats <= 4 else rng.choice((2, 3))
        end = sec.end * bar
        start = end - length * beat
        notes[:] = [n for n in notes if not (start <= n[0] < end) or n[2] in KICKS or n[2] == 44]
        k = int(round((end - start) / step))
        toms = list(TOMS[rng.randrange(0, 2):])
        for i in range(k):
            t = int(start + i * step)
            x = i / max(k - 1, 1)
            if rng.random() < 0.3:
                pitch = SNARES[0]
            else:
                pitch = toms[min(len(toms) - 1, int(x * len(toms)))]
            if rng.random() < 0.12 and i < k - 1:
                continue
            notes.append([t, t + int(step * 0.8), pitch, 60 + 55 * x + rng.uniform(-8, 8), 9])
        fills += 1
    # crashes (with a kick) on section downbeats
    crashes = 0
    for sec in plan.sections[1:]:
        t = sec.start * bar
        if rng.random() < (0.9 if plan.sections[plan.sections.index(sec) - 1].drum_fill else 0.45):
            if not any(abs(n[0] - t) < beat / 8 and n[2] in CRASHES for n in notes):
                notes.append([t, t + beat, rng.choice(CRASHES), rng.uniform(90, 118), 9])
                if not any(abs(n[0] - t) < beat / 8 and n[2] in KICKS for n in notes):
                    notes.append([t, t + beat // 4, 36, rng.uniform(90, 115), 9])
                crashes += 1
    # ghost notes on the snare, off the beat, away from other snare and kick hits
    ghosts = 0
    snare_counts = Counter(n[2] for n in notes if n[2] in SNARES)
    p_ghost = rng.choice((0.0, 0.0, 0.08, 0.15, 0.25, 0.35))
    if snare_counts and p_ghost > 0:
        snare = snare_counts.most_common(1)[0][0]
        hits = sorted(n[0] for n in notes if n[2] in SNARES or n[2] in KICKS)
        import bisect
        fill_bars = {sec.end - 1 for sec in plan.sections if sec.drum_fill or sec.fill}
        total = plan.bars * bar
        t = step
        while t < total:
            ti = int(round(t))
            on_beat = abs(t / beat - round(t / beat)) < 1e-6
            if not on_beat and int(t // bar) not in fill_bars and rng.random() < p_ghost:
                j = bisect.bisect_left(hits, ti - step / 2)
                if j >= len(hits) or hits[j] > ti + step / 2:
                    notes.append([ti, ti + int(step / 2), snare, rng.uniform(12, 38), 9])
                    ghosts += 1
            t += step
    for n in notes:  # a little timing looseness (at most about 3 ms)
        n[0] = max(0, n[0] + rng.randint(-1, 1))
        n[1] = max(n[0] + 1, n[1])
    out = rest + _note_events(notes)
    out.sort(key=lambda e: (e[0], e[1]))
    return out, {"kit": kit, "ghost_notes": ghosts, "generated_fills": fills, "crashes": crashes,
                 "groove_fills": sum(1 for s in plan.sections if s.fill)}


def edit_bass(events: list[Event], plan: Plan, rng: random.Random, tpb: int) -> tuple[list[Event], dict]:
    """Articulation (legato, staccato, dead notes), velocity shaping, and slides: scoops into notes and glides
    into the next note, as pitch bends (range set to 12 semitones)."""
    import mido

    notes, rest = _notes(events)
    style = rng.choice(("legato", "natural", "staccato", "mixed"))
    p_slide = rng.choice((0.0, 0.06, 0.12, 0.2, 0.3))
    sec_per_tick = plan.beat_seconds / tpb
    ms = lambda x: max(1, int(x / 1000 / sec_per_tick))  # noqa: E731
    channels = sorted({n[4] for n in notes})
    for ch in channels:  # pitch-bend range: RPN 0 = 12 semitones
        for cc, val in ((101, 0), (100, 0), (6, 12), (38, 0), (101, 127), (100, 127)):
            rest.append((0, 1, mido.Message("control_change", channel=ch, control=cc, value=val)))
    bends: list[Event] = []
    slides = scoops = dead = 0
    bar = plan.beats * tpb
    for ch in channels:
        line = sorted((n for n in notes if n[4] == ch), key=lambda n: n[0])
        for i, n in enumerate(line):
            nxt = line[i + 1] if i + 1 < len(line) else None
            gap_to_next = (nxt[0] - n[1]) if nxt else None
            length = n[1] - n[0]
            mode = style if style != "mixed" else rng.choice(("legato", "natural", "staccato"))
            if mode == "legato" and nxt and 0 <= gap_to_next < tpb:
                n[1] = nxt[0] - ms(5)
            elif mode == "staccato":
                n[1] = n[0] + max(ms(40), int(length * rng.uniform(0.35, 0.65)))
            else:
                n[1] = n[0] + max(ms(40), int(length * rng.uniform(0.75, 1.0)))
            downbeat = n[0] % bar < tpb / 8
            n[3] = n[3] * (1.1 if downbeat else 1.0) * rng.uniform(0.78, 1.12)
            if rng.random() < 0.04 and not downbeat:
                n[1] = n[0] + ms(35)
                n[3] = rng.uniform(30, 55)
                dead += 1
                continue
            if nxt is None or rng.random() >= p_slide:
                continue
            overlap = nxt[0] < n[0] + 2
            if overlap:
                continue
            interval = nxt[2] - n[2]
            if rng.random() < 0.55 and 1 <= abs(interval) <= 7 and nxt[0] - n[0] >= ms(120):
                # glide into the next note: hold until it, bend towards it in the last 60-180 ms
                n[1] = nxt[0]
                dur = min(ms(rng.uniform(60, 180)), (nxt[0] - n[0]) // 2)
                steps = max(4, dur // ms(8))
                for k in range(1, steps + 1):
                    t = nxt[0] - dur + k * dur // (steps + 1)
                    v = int(8191 * interval / 12 * (k / steps) ** 1.5)
                    bends.append((t, 2, mido.Message("pitchwheel", channel=ch, pitch=max(-8192, min(8191, v)))))
                bends.append((nxt[0], 2, mido.Message("pitchwheel", channel=ch, pitch=0)))
                slides += 1
            else:
                # scoop into the next note from below (or above)
                depth = rng.choice((-1, -2, -2, -3, -5, 2))
                dur = min(ms(rng.uniform(40, 120)), max(2, (nxt[1] - nxt[0]) // 2))
                steps = max(3, dur // ms(8))
                for k in range(steps + 1):
                    v = int(8191 * depth / 12 * (1 - k / steps))
                    bends.append((nxt[0] + k * dur // steps, 2,
                                  mido.Message("pitchwheel", channel=ch, pitch=max(-8192, min(8191, v)))))
                scoops += 1
    out = rest + bends + _note_events(notes)
    out.sort(key=lambda e: (e[0], e[1]))
    return out, {"articulation": style, "slides": slides, "scoops": scoops, "dead_notes": dead}


def save(events: list[Event], conductor, tpb: int, path: str) -> None:
    """Absolute-tick events as a type-1 file: the conductor track, then one track."""
    import mido

    mid = mido.MidiFile(type=1, ticks_per_beat=tpb)
    mid.tracks.append(conductor)
    track = mido.MidiTrack()
    last = 0
    for tick, _, msg in events:
        track.append(msg.copy(time=tick - last))
        last = tick
    mid.tracks.append(track)
    mid.save(path)


def parts_events(parts: list[Part], plan: Plan, rng: random.Random, tpb: int) -> list[Event]:
    """The extra parts on their own channels: program, volume, pan, reverb send; humanised timing and
    velocity; vocal-like leads with portamento and modulation-wheel vibrato."""
    import mido

    out: list[Event] = []
    channels = [c for c in range(16) if c != 9]
    tick_ms = plan.beat_seconds / tpb * 1000
    for part, ch in zip(parts, channels):
        out.append((0, 1, mido.Message("program_change", channel=ch, program=part.program)))
        for cc, val in ((7, rng.randint(80, 112)), (10, rng.randint(20, 108)), (91, rng.randint(10, 80))):
            out.append((0, 1, mido.Message("control_change", channel=ch, control=cc, value=val)))
        if part.kind == "voice-lead":
            out.append((0, 1, mido.Message("control_change", channel=ch, control=65, value=127)))
            out.append((0, 1, mido.Message("control_change", channel=ch, control=5, value=rng.randint(8, 40))))
        jitter = max(0, int(rng.uniform(0, 8) / tick_ms))
        notes = []
        for n in part.notes:
            start = max(0, int(round(plan.warp(n.start) * tpb)) + rng.randint(-jitter, jitter))
            end = max(start + 1, int(round(plan.warp(n.start + n.dur) * tpb)))
            notes.append([start, end, n.pitch, n.vel * rng.uniform(0.9, 1.08), ch])
            if part.kind == "voice-lead" and n.dur * plan.beat_seconds > 0.5 and rng.random() < 0.7:
                on = start + int(0.25 / plan.beat_seconds * tpb)
                for k in range(6):
                    t = on + k * int(0.05 / plan.beat_seconds * tpb)
                    if t < end:
                        out.append((t, 1, mido.Message("control_change", channel=ch, control=1,
                                                       value=min(127, 20 * k))))
                out.append((end, 1, mido.Message("control_change", channel=ch, control=1, value=0)))
        out += _note_events(notes)
    out.sort(key=lambda e: (e[0], e[1]))
    return out


def melody_midi(melody: list[Note], plan: Plan, path: str, tpb: int = 480) -> None:
    """The sung melody (and harmony notes on channel 2) as a MIDI file with the song's meter and tempo: for
    inspection and tests, not rendered."""
    import mido

    num, den = {"4/4": (4, 4), "3/4": (3, 4), "6/8": (6, 8), "5/4": (5, 4)}[plan.meter]
    conductor = mido.MidiTrack()
    conductor.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(plan.mma_tempo), time=0))
    conductor.append(mido.MetaMessage("time_signature", numerator=num, denominator=den, time=0))
    notes = [[int(round(n.start * tpb)), int(round((n.start + n.dur) * tpb)), n.pitch, n.vel, 0] for n in melody]
    notes += [[int(round(n.start * tpb)), int(round((n.start + n.dur) * tpb)), n.harmony, n.vel, 1]
              for n in melody if n.harmony is not None]
    save(sorted(_note_events(notes), key=lambda e: (e[0], e[1])), conductor, tpb, path)

"""Sung vocals from espeak-ng: syllables spoken by espeak, re-pitched and re-timed to a melody.

Each distinct syllable is spoken once by espeak-ng (one voice per song), analysed (f0 track, voicing, pitch
marks: one per glottal period; the vowel nucleus) and then resynthesised with TD-PSOLA (pitch-synchronous
overlap-add): grains of two source periods are laid at the output's pitch period, so the pitch follows any
contour (notes, glides between them, vibrato, drift) while the formants, the voice's timbre, stay; the time
map keeps consonants at their spoken speed and stretches or squeezes the vowel to the note's length. A
phrase is one continuous resynthesis, so notes join legato. On top: breaths before phrases, air (noise
following the voice above 5 kHz, espeak has nothing above 11 kHz), harmonies (a third or a fifth away),
doubles (detuned, a little late), backing "oohs", a rapped variant (speech rhythm, spoken pitch).

Everything here is deterministic for a given ``random.Random`` state.
"""
from __future__ import annotations

import os
import random
import subprocess
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from ..errors import StemstreamError

SR = 22050          # espeak-ng's output rate; the vocals are built at this rate, then resampled
HOP = 110           # analysis hop (5 ms)
UNVOICED_SPACING = 110
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5", "Annie", "Andrea", "anika", "belinda", "linda", "steph",
                   "Alicia", "female2", "female3")
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "klatt", "klatt2", "klatt3", "max", "michel", "Mike",
                 "paul", "robert", "john", "Andy", "edward", "david", "Gene")
# languages whose voices read plain Latin-letter syllables (weights: English most often)
LANGUAGES = (("en-us", 18), ("en-gb", 8), ("en-029", 2), ("en-gb-scotland", 1), ("es", 5), ("es-419", 3),
             ("it", 4), ("pt-br", 3), ("pt", 1), ("fr-fr", 3), ("de", 3), ("nl", 2), ("sv", 1), ("nb", 1),
             ("fi", 1), ("pl", 1), ("cs", 1), ("ro", 1), ("id", 1), ("sw", 1), ("tr", 1), ("hu", 1), ("ca", 1),
             ("eo", 1), ("la", 1), ("haw", 1), ("mi", 1))
# English words and phonetic spellings of syllables that espeak reads well one at a time
EN_SYLLABLES = ("love", "night", "bay", "bee", "home", "light", "dream", "fire", "heart", "a", "way", "to",
                "night", "for", "ev", "er", "dan", "sing", "ri", "ver", "shine", "stay", "lone", "geth", "yeah",
                "oh", "la", "hold", "me", "come", "on", "you", "and", "I", "we", "go", "sky", "rain", "fall",
                "time", "so", "high", "feel", "the", "my", "your", "know", "now", "down", "run", "free", "fly",
                "day", "all", "cry", "burn", "sun", "moon", "stars", "sea", "soul", "mind", "eyes", "hands",
                "through", "dark", "gold", "wild", "young", "blue", "sweet", "call", "name", "hear", "lie",
                "more", "dance", "world", "be", "there", "here", "hey", "ooh", "why", "road", "gone", "dreams",
                "tell", "side", "back", "wait", "long", "slow", "fast", "ground", "sound", "star", "kiss", "true",
                "lost", "found", "deep", "ba", "na", "da", "what", "when", "need", "want", "take", "give", "keep")
ONSETS = ("", "", "b", "d", "f", "g", "l", "l", "m", "m", "n", "n", "p", "r", "s", "t", "t", "v", "k", "ch", "j")
VOWELS = ("a", "a", "e", "e", "i", "o", "o", "u", "ai", "ei", "au")
CODAS = ("", "", "", "", "n", "n", "m", "l", "r", "s")
VOWEL_SOUNDS = ("oo", "ah", "oh", "mm")  # backing vocals


def midi_hz(m: np.ndarray | float) -> np.ndarray | float:
    return 440.0 * 2.0 ** ((np.asarray(m, dtype=np.float64) - 69.0) / 12.0)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


# ---------------------------------------------------------------------------------------------------------
# analysis


def f0_track(x: np.ndarray, sr: int = SR, hop: int = HOP, fmin: float = 60.0, fmax: float = 700.0,
             threshold: float = 0.2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YIN-style f0 per hop: (f0 in Hz, aperiodicity 0..1 (low = periodic), frame rms)."""
    tau_max = int(sr / fmin) + 1
    tau_min = max(2, int(sr / fmax))
    win = 2 * tau_max
    pad = np.pad(x.astype(np.float64), (win // 2, win))
    n_frames = max(1, int(np.ceil(len(x) / hop)))
    idx = np.arange(n_frames)[:, None] * hop + np.arange(win)[None, :]
    frames = pad[idx]
    frames = frames - frames.mean(axis=1, keepdims=True)
    nfft = 1 << int(np.ceil(np.log2(2 * win)))
    spec = np.fft.rfft(frames, nfft, axis=1)
    r = np.fft.irfft(spec * np.conj(spec), nfft, axis=1)[:, :tau_max + 1]
    sq = np.cumsum(frames ** 2, axis=1)
    total = sq[:, -1:]
    taus = np.arange(tau_max + 1)
    # d(tau) = sum_{j<W-tau} x_j^2 + sum_{j>=tau} x_j^2 - 2 r(tau)
    e0 = sq[:, win - 1 - taus]
    et = total - np.concatenate([np.zeros((len(frames), 1)), sq[:, :tau_max]], axis=1)
    d = np.maximum(e0 + et - 2 * r, 0.0)
    d[:, 0] = 0.0
    cum = np.cumsum(d[:, 1:], axis=1)
    cmndf = np.ones_like(d)
    cmndf[:, 1:] = d[:, 1:] * taus[1:] / np.maximum(cum, 1e-12)
    seg = cmndf[:, tau_min:]
    below = seg < threshold
    first = np.where(below.any(axis=1), below.argmax(axis=1), seg.argmin(axis=1))
    # the local minimum following the first dip below the threshold
    cols = np.arange(seg.shape[1])[None, :]
    window = (cols >= first[:, None]) & (cols <= (first * 1.5 + 3)[:, None])
    best = np.where(window, seg, np.inf).argmin(axis=1)
    tau = best + tau_min
    # parabolic refinement
    t0 = np.clip(tau, 1, tau_max - 1)
    rows = np.arange(len(frames))
    a, b, c = cmndf[rows, t0 - 1], cmndf[rows, t0], cmndf[rows, t0 + 1]
    den = a - 2 * b + c
    shift = np.where(np.abs(den) > 1e-12, 0.5 * (a - c) / np.where(np.abs(den) > 1e-12, den, 1), 0.0)
    tau_f = t0 + np.clip(shift, -1, 1)
    rms = np.sqrt(np.mean(frames[:, win // 2 - hop: win // 2 + hop] ** 2, axis=1))
    return sr / tau_f, np.clip(seg[rows, best], 0, 1), rms


@dataclass
class Syllable:
    """One espeak syllable, analysed."""
    text: str
    x: np.ndarray              # samples at SR
    marks: np.ndarray          # pitch marks (sample index), increasing
    periods: np.ndarray        # half grain width per mark (samples)
    voiced_marks: np.ndarray   # bool per mark
    voiced: np.ndarray         # bool per hop frame
    f0: np.ndarray             # Hz per hop frame (interpolated through unvoiced frames)
    nucleus: tuple[int, int]   # the vowel: stretched or squeezed to fit a note

    @property
    def onset(self) -> int:
        return self.nucleus[0]

    @property
    def coda(self) -> int:
        return len(self.x) - self.nucleus[1]

    def voiced_at(self, pos: np.ndarray) -> np.ndarray:
        i = np.clip((np.asarray(pos) / HOP).astype(int), 0, len(self.voiced) - 1)
        return self.voiced[i]

    def f0_at(self, pos: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(pos) / HOP, np.arange(len(self.f0)), self.f0)


def analyse(text: str, x: np.ndarray) -> Syllable:
    """Trim, track f0, find voiced runs, the nucleus and pitch marks."""
    x = x.astype(np.float64)
    peak = np.abs(x).max() if len(x) else 0.0
    if peak <= 0:
        x = np.zeros(HOP * 4)
        peak = 1.0
    loud = np.flatnonzero(np.abs(x) > 0.02 * peak)
    lo, hi = (max(0, loud[0] - 60), min(len(x), loud[-1] + 200)) if len(loud) else (0, len(x))
    x = x[lo:hi] / peak
    f0, aper, rms = f0_track(x)
    voiced = (aper < 0.3) & (rms > 0.06 * max(rms.max(), 1e-9)) & (f0 > 60) & (f0 < 700)
    # close one-frame gaps, drop one-frame islands
    v = voiced.copy()
    v[1:-1] |= voiced[:-2] & voiced[2:]
    v[1:-1] &= v[:-2] | v[2:]
    voiced = v
    if voiced.any():
        good = np.flatnonzero(voiced)
        med = np.median(f0[good])
        # octave errors against the syllable's median
        f0 = np.where(voiced & (f0 > 1.7 * med), f0 / 2, f0)
        f0 = np.where(voiced & (f0 < 0.6 * med), f0 * 2, f0)
        f0 = np.interp(np.arange(len(f0)), good, f0[good])
    else:
        f0 = np.full(len(f0), 120.0)
    runs = _runs(voiced)
    n = len(x)
    if runs:
        start, end = max(runs, key=lambda r: (rms[r[0]:r[1]] ** 2).sum())
        s, e = start * HOP, min(n, end * HOP)
        length = e - s
        nucleus = (s + int(0.22 * length), e - int(0.18 * length))
    else:
        nucleus = (int(0.3 * n), int(0.7 * n))
    marks, periods, vm = _pitch_marks(x, f0, voiced)
    return Syllable(text, x.astype(np.float32), marks, periods, vm, voiced, f0, nucleus)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def _pitch_marks(x: np.ndarray, f0: np.ndarray, voiced: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Marks every period in voiced runs (at the strongest peak of each period, one polarity), every
    UNVOICED_SPACING samples elsewhere."""
    n = len(x)
    marks, periods, flags = [], [], []
    pos = 0
    for a, b in _runs(voiced) + [(len(voiced), len(voiced))]:
        s, e = min(n, a * HOP), min(n, b * HOP)
        # unvoiced stretch before this run
        for m in range(pos + UNVOICED_SPACING // 2, s - UNVOICED_SPACING // 2, UNVOICED_SPACING):
            marks.append(m)
            periods.append(UNVOICED_SPACING)
            flags.append(False)
        if e <= s:
            pos = max(pos, s)
            continue
        seg = x[s:e]
        sign = 1.0 if seg.max() >= -seg.min() else -1.0
        period = lambda p: max(20, int(round(SR / np.interp(p / HOP, np.arange(len(f0)), f0))))  # noqa: E731
        p0 = period(s)
        m = s + int(np.argmax(sign * x[s:min(e, s + p0)]))
        while m < e:
            p = period(m)
            marks.append(m)
            periods.append(p)
            flags.append(True)
            # the next mark: the lag (0.75..1.25 periods) where the signal best repeats the current period
            half = p // 2
            lo, hi = int(0.75 * p), int(1.25 * p)
            if m + hi + half >= n or m - half < 0:
                m += p
                continue
            ref = x[m - half:m + half]
            span = x[m + lo - half:m + hi + half]
            corr = np.correlate(span, ref, mode="valid")
            energy = np.sqrt(np.convolve(span ** 2, np.ones(len(ref)), mode="valid")) + 1e-12
            m = m + lo + int(np.argmax(corr / energy))
        pos = marks[-1] + periods[-1] // 2 if marks else e
    return np.asarray(marks, np.int64), np.asarray(periods, np.int64), np.asarray(flags, bool)


# ---------------------------------------------------------------------------------------------------------
# espeak


@dataclass
class Voice:
    language: str
    variant: str
    female: bool
    espeak_pitch: int
    speed: int

    @property
    def name(self) -> str:
        return f"{self.language}+{self.variant}"


def pick_voice(rng: random.Random, female: bool | None = None) -> Voice:
    langs, weights = zip(*LANGUAGES)
    language = rng.choices(langs, weights)[0]
    if female is None:
        female = rng.random() < 0.55
    variant = rng.choice(FEMALE_VARIANTS if female else MALE_VARIANTS)
    return Voice(language, variant, female, rng.randint(35, 70), rng.randint(95, 140))


def lexicon(rng: random.Random, voice: Voice, size: int) -> list[str]:
    """Syllables for a song's lyrics: English words for English voices (mostly), made-up syllables otherwise."""
    out = []
    english = voice.language.startswith("en")
    while len(out) < size:
        if english and rng.random() < 0.8:
            out.append(rng.choice(EN_SYLLABLES))
        else:
            out.append(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS))
    return out


class Espeak:
    """Renders and analyses syllables with one voice, each distinct text once."""

    def __init__(self, voice: Voice, work: str):
        self.voice = voice
        self.work = work
        self.cache: dict[tuple[str, int], Syllable] = {}

    def syllable(self, text: str, pitch: int | None = None) -> Syllable:
        key = (text, self.voice.espeak_pitch if pitch is None else pitch)
        if key not in self.cache:
            path = os.path.join(self.work, f"syl{len(self.cache)}.wav")
            cmd = ["espeak-ng", "-v", self.voice.name, "-p", str(key[1]), "-s", str(self.voice.speed), "-z",
                   "-w", path, text]
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            if res.returncode != 0 or not os.path.exists(path):
                raise StemstreamError(f"espeak-ng failed ({res.returncode}): "
                                      f"{(res.stderr or res.stdout).strip()[-300:]}")
            data, rate = sf.read(path, dtype="float32", always_2d=True)
            data = data[:, 0]
            if rate != SR:
                from ..audio import resample
                data = resample(data[None], rate, SR)[0]
            self.cache[key] = analyse(text, data)
        return self.cache[key]


# ---------------------------------------------------------------------------------------------------------
# resynthesis


@dataclass
class Segment:
    """Output samples [t0, t1) read source samples [s0, s1) of a syllable, linearly."""
    syl: Syllable
    t0: int
    t1: int
    s0: float
    s1: float


def psola(segments: list[Segment], f0: np.ndarray | None, ratio: np.ndarray | None, n: int,
          shimmer: np.ndarray | None = None) -> np.ndarray:
    """TD-PSOLA over segments into n output samples. In voiced parts the output pitch is ``f0`` (Hz per
    output sample) or, where f0 is None, the source's own pitch times ``ratio``. ``shimmer``: random gains
    (around 1) taken in turn by the grains, a voice's cycle-to-cycle loudness wobble."""
    out = np.zeros(n + 4 * SR // 50 + 2048, np.float64)
    if not segments:
        return out[:n].astype(np.float32)
    starts = np.array([s.t0 for s in segments])
    t = np.arange(n)
    k = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, len(segments) - 1)
    t0 = starts[k]
    t1 = np.array([s.t1 for s in segments])[k]
    inside = (t >= t0) & (t < t1)
    s0 = np.array([s.s0 for s in segments])[k]
    s1 = np.array([s.s1 for s in segments])[k]
    src = s0 + (t - t0) * (s1 - s0) / np.maximum(t1 - t0, 1)
    voiced = np.zeros(n, bool)
    src_f0 = np.full(n, 150.0)
    for i, seg in enumerate(segments):
        sel = inside & (k == i)
        if sel.any():
            voiced[sel] = seg.syl.voiced_at(src[sel])
            if f0 is None:
                src_f0[sel] = seg.syl.f0_at(src[sel])
    target = (f0 if f0 is not None else src_f0 * ratio).astype(np.float64)
    rate = np.where(voiced, target, SR / UNVOICED_SPACING)
    rate = np.where(inside, rate, SR / UNVOICED_SPACING)
    phase = np.cumsum(rate / SR)
    out_marks = np.flatnonzero(np.diff(np.floor(phase), prepend=0.0) > 0)
    windows: dict[int, np.ndarray] = {}
    for count, tm in enumerate(out_marks):
        if not inside[tm]:
            continue
        seg = segments[k[tm]]
        syl = seg.syl
        if len(syl.marks) == 0:
            continue
        j = int(np.searchsorted(syl.marks, src[tm]))
        if j > 0 and (j == len(syl.marks) or src[tm] - syl.marks[j - 1] < syl.marks[j] - src[tm]):
            j -= 1
        m, p = int(syl.marks[j]), int(syl.periods[j])
        lo, hi = m - p, m + p + 1
        if lo < 0 or hi > len(syl.x):
            a, b = max(lo, 0), min(hi, len(syl.x))
            grain = np.zeros(2 * p + 1)
            grain[a - lo: b - lo] = syl.x[a:b]
        else:
            grain = syl.x[lo:hi].astype(np.float64)
        w = windows.get(p)
        if w is None:
            w = windows[p] = np.hanning(2 * p + 1)
        gain = 1.0
        if voiced[tm] and syl.voiced_marks[j]:
            gain = float(np.clip(np.sqrt(SR / target[tm] / p), 0.5, 1.6))
            if shimmer is not None:
                gain *= shimmer[count % len(shimmer)]
        start = tm - p
        if start < 0:
            grain, w_ = grain[-start:], w[-start:]
            start = 0
        else:
            w_ = w
        out[start:start + len(grain)] += gain * grain * w_
    return out[:n].astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# sung lines


@dataclass
class VocalNote:
    start: float               # seconds
    dur: float                 # seconds
    pitch: float               # MIDI note number
    vel: float = 0.8           # 0..1
    text: str | None = None    # the syllable; None continues the previous note's syllable (a melisma)
    phrase: int = 0


@dataclass
class Expression:
    """How a singer sings: vibrato, glides, scoops and falls, pitch drift and accuracy."""
    vibrato_depth: float = 0.35   # semitones (peak)
    vibrato_rate: float = 5.5     # Hz
    vibrato_delay: float = 0.25   # s after a note's onset
    glide: float = 0.08           # s for a legato step between notes
    scoop: float = 0.3            # probability of a scoop from below into a phrase
    fall: float = 0.2             # probability of a fall at a phrase's end
    drift: float = 0.08           # semitones of slow wander
    accuracy: float = 0.06        # semitones (sd) of per-note intonation error
    consonant_lead: float = 0.08  # s of consonant before the beat (at most)
    jitter: float = 0.05          # semitones (sd) of fast pitch wobble
    shimmer: float = 0.05         # sd of the grains' loudness wobble

    @classmethod
    def random(cls, rng: random.Random) -> Expression:
        return cls(vibrato_depth=rng.choice((0.1, 0.2, 0.3, 0.4, 0.55)), vibrato_rate=rng.uniform(4.6, 6.6),
                   vibrato_delay=rng.uniform(0.12, 0.4), glide=rng.uniform(0.03, 0.14), scoop=rng.uniform(0, 0.6),
                   fall=rng.uniform(0, 0.4), drift=rng.uniform(0.02, 0.15), accuracy=rng.uniform(0.0, 0.12),
                   consonant_lead=rng.uniform(0.03, 0.12), jitter=rng.uniform(0.0, 0.08),
                   shimmer=rng.uniform(0.0, 0.08))


def espeak_level(target_hz: float, ref_hz: float, ref_level: int = 50) -> int:
    """espeak-ng's -p (0..99) that puts a voice whose -p 50 pitch is ref_hz near target_hz (about 0.73 octave
    per 50 steps), rounded to steps of 12 so that syllables are shared between nearby notes."""
    p = ref_level + np.log2(target_hz / ref_hz) / 0.0146
    return int(np.clip(round(p / 12) * 12, 0, 96))


def sing_line(notes: list[VocalNote], espeak: Espeak, expr: Expression, rng: random.Random, n: int,
              ref_hz: float, rap: bool = False) -> np.ndarray:
    """A vocal line at SR: n samples. Phrases are resynthesised as a whole; in rap mode the pitch is the spoken
    one (scaled by a gentle contour) and syllables keep their spoken length when they fit."""
    out = np.zeros(n, np.float32)
    nrng = np.random.default_rng(rng.getrandbits(64))
    phrases: dict[int, list[VocalNote]] = {}
    for note in sorted(notes, key=lambda v: v.start):
        phrases.setdefault(note.phrase, []).append(note)
    for group in phrases.values():
        _sing_phrase(group, espeak, expr, rng, nrng, out, ref_hz, rap)
    return out


def _sing_phrase(notes: list[VocalNote], espeak: Espeak, expr: Expression, rng: random.Random,
                 nrng: np.random.Generator, out: np.ndarray, ref_hz: float, rap: bool) -> None:
    # syllable events: a note with text and the melisma notes that follow it
    events: list[list[VocalNote]] = []
    for note in notes:
        if note.text is None and events:
            events[-1].append(note)
        else:
            events.append([note])
    syls = []
    for ev in events:
        text = ev[0].text or "a"
        mean_pitch = float(np.mean([v.pitch for v in ev]))
        level = espeak.voice.espeak_pitch if rap else espeak_level(float(midi_hz(mean_pitch)), ref_hz)
        syls.append(espeak.syllable(text, level))
    leads = [min(int(expr.consonant_lead * SR), int(0.6 * s.onset)) for s in syls]
    first = int(events[0][0].start * SR) - leads[0]
    base = max(0, first - int(0.05 * SR))
    if base >= len(out):
        return
    last_end = int((notes[-1].start + notes[-1].dur) * SR)
    length = last_end - base + int(0.5 * SR)
    segments: list[Segment] = []
    cursor = 0
    for i, (ev, syl) in enumerate(zip(events, syls)):
        t0 = max(int(ev[0].start * SR) - leads[i] - base, cursor)
        end = int((ev[-1].start + ev[-1].dur) * SR) - base
        if i + 1 < len(events):
            nxt = int(events[i + 1][0].start * SR) - leads[i + 1] - base
            end = nxt if nxt - end < int(0.15 * SR) else min(end + int(0.06 * SR), nxt)  # legato across short gaps
        else:
            end += int(0.08 * SR)  # the release of the phrase's last syllable
        avail = end - t0
        if avail < 64:
            continue
        L = len(syl.x)
        a, b = syl.nucleus
        coda = L - b
        if rap:
            if avail >= L:
                segments.append(Segment(syl, t0, t0 + L, 0, L))
                cursor = t0 + L
            else:
                segments.append(Segment(syl, t0, t0 + avail, 0, L * min(1.0, avail / (0.7 * L))))
                cursor = t0 + avail
            continue
        if avail >= a + coda + 0.3 * (b - a):
            segs = [(t0, t0 + a, 0, a), (t0 + a, end - coda, a, b), (end - coda, end, b, L)]
        else:  # too short for the spoken consonants: squeeze the whole syllable
            f = avail / L
            segs = [(t0, t0 + int(f * b), 0, b), (t0 + int(f * b), end, b, L)]
        for s0, s1, r0, r1 in segs:
            if s1 > s0:
                segments.append(Segment(syl, s0, s1, r0, r1))
        cursor = end
    if not segments:
        return
    t = np.arange(length) / SR
    if rap:
        ratio = 2.0 ** ((np.interp(t, [0, t[-1] + 1e-9], [rng.uniform(0, 2), rng.uniform(-3, 0)])
                         + _drift(nrng, t, 0.6)) / 12)
        y = psola(segments, None, ratio, length)
    else:
        f0 = midi_hz(_contour(notes, expr, rng, nrng, base, length))
        y = psola(segments, f0, None, length, shimmer=1 + nrng.normal(0, expr.shimmer, 997))
    y *= _gain(notes, base, length, rap)
    stop = min(len(out), base + length)
    out[base:stop] += y[:stop - base]


def _drift(nrng: np.random.Generator, t: np.ndarray, amount: float) -> np.ndarray:
    d = np.zeros_like(t)
    for _ in range(3):
        d += np.sin(2 * np.pi * nrng.uniform(0.15, 1.5) * t + nrng.uniform(0, 2 * np.pi))
    return amount * d / 3


def _contour(notes: list[VocalNote], expr: Expression, rng: random.Random, nrng: np.random.Generator, base: int,
             length: int) -> np.ndarray:
    """Pitch in semitones per output sample of a phrase: notes with intonation errors, glides between them,
    a scoop into the phrase, a fall at its end, vibrato on long notes, slow drift."""
    t = (np.arange(length) + base) / SR
    pitches = [v.pitch + nrng.normal(0, expr.accuracy) for v in notes]
    starts = [v.start for v in notes]
    pitch = np.full(length, pitches[0])
    for i in range(1, len(notes)):
        prev_end = notes[i - 1].start + notes[i - 1].dur
        g = min(expr.glide * (1 + 0.06 * abs(pitches[i] - pitches[i - 1])), 0.5 * notes[i].dur,
                0.5 * notes[i - 1].dur)
        if starts[i] - prev_end > 0.15:
            g = 0.01
        x = (t - (starts[i] - 0.4 * g)) / max(g, 1e-3)
        pitch += (pitches[i] - pitches[i - 1]) * _smoothstep(x)
    if rng.random() < expr.scoop:
        depth = rng.uniform(0.5, 2.0)
        dur = rng.uniform(0.05, 0.15)
        pitch -= depth * (1 - _smoothstep((t - starts[0]) / dur))
    if rng.random() < expr.fall:
        end = notes[-1].start + notes[-1].dur
        dur = min(rng.uniform(0.1, 0.25), 0.6 * notes[-1].dur)
        pitch -= rng.uniform(1.0, 4.0) * _smoothstep((t - (end - dur)) / dur)
    vib = np.zeros(length)
    for v in notes:
        if v.dur < 0.3:
            continue
        rate = expr.vibrato_rate * rng.uniform(0.93, 1.07)
        depth = expr.vibrato_depth * rng.uniform(0.7, 1.25)
        on = v.start + expr.vibrato_delay
        ramp = _smoothstep((t - on) / 0.25) * (1 - _smoothstep((t - (v.start + v.dur)) / 0.05))
        vib += depth * ramp * np.sin(2 * np.pi * rate * (t - on))
    # jitter: white noise smoothed over about 10 ms
    k = int(0.01 * SR)
    c = np.cumsum(nrng.normal(0, 1, length + k))
    jit = (c[k:] - c[:-k]) / np.sqrt(k)
    return pitch + vib + _drift(nrng, t, expr.drift) + expr.jitter * jit


def _gain(notes: list[VocalNote], base: int, length: int, rap: bool) -> np.ndarray:
    """Loudness per sample: each note's velocity, a short fade after notes that a rest follows."""
    t = (np.arange(length) + base) / SR
    g = np.zeros(length)
    for i, v in enumerate(notes):
        end = v.start + v.dur
        nxt = notes[i + 1].start if i + 1 < len(notes) else None
        if nxt is not None and nxt - end < 0.12:
            end = nxt
            fade = 0.0
        else:
            fade = 0.06
        lo = np.searchsorted(t, v.start - 0.15)
        hi = np.searchsorted(t, end + fade + (0.15 if rap else 0.05))
        seg = t[lo:hi]
        env = np.full(len(seg), 0.45 + 0.55 * v.vel)
        if fade:  # the release: from just before the note's end to a little after it
            env *= 1 - _smoothstep((seg - (end - 0.03)) / (fade + 0.06))
        if v.dur > 0.5 and not rap:  # a slow swell into long notes
            env *= 0.85 + 0.15 * _smoothstep((seg - v.start) / (0.6 * v.dur))
        g[lo:hi] = np.maximum(g[lo:hi], env)
    return g.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# at 44.1 kHz: breaths, air


def breath(nrng: np.random.Generator, rate: int, seconds: float) -> np.ndarray:
    """An inhalation: noise through a broad resonance, rising then falling."""
    n = max(16, int(seconds * rate))
    noise = nrng.normal(0, 1, n)
    spec = np.fft.rfft(noise)
    f = np.fft.rfftfreq(n, 1 / rate)
    centre = nrng.uniform(900, 2500)
    shape = np.exp(-0.5 * (np.log2(np.maximum(f, 1) / centre) / nrng.uniform(0.6, 1.2)) ** 2)
    shape += 0.25 * (f > 4000) * np.exp(-(f - 4000) / 6000)
    shape *= f > 150
    x = np.fft.irfft(spec * shape, n)
    env = np.sin(np.pi * np.linspace(0, 1, n)) ** nrng.uniform(1.0, 2.5)
    x *= env
    return (x / (np.abs(x).max() + 1e-9)).astype(np.float32)


def air(voice: np.ndarray, rate: int, nrng: np.random.Generator, level: float) -> np.ndarray:
    """Breathy noise above 5 kHz following the voice's loudness (espeak has nothing above 11 kHz)."""
    n = len(voice)
    win = int(0.01 * rate)
    env = np.sqrt(np.convolve(voice.astype(np.float64) ** 2, np.ones(win) / win, mode="same"))
    noise = nrng.normal(0, 1, n)
    spec = np.fft.rfft(noise)
    f = np.fft.rfftfreq(n, 1 / rate)
    spec *= 1 / np.sqrt(1 + (5000 / np.maximum(f, 1)) ** 4) / np.sqrt(1 + (f / 9000) ** 2)
    noise = np.fft.irfft(spec, n)
    return (level * env * noise).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# a song's vocal stem


def _lyrics(rng: random.Random, words: list[str], count: int) -> list[str]:
    """A lyric line: syllables from the song's lexicon, with repeats (hooks)."""
    line = []
    while len(line) < count:
        if line and rng.random() < 0.2:
            line.append(line[rng.randrange(len(line))])
        else:
            line.append(rng.choice(words))
    return line


def _pan(x: np.ndarray, pan: float) -> np.ndarray:
    return np.stack([x * np.sqrt(0.5 * (1 - pan)), x * np.sqrt(0.5 * (1 + pan))]) * 1.414


def render_vocals(plan, rng: random.Random, work: str, n: int, rate: int) -> tuple[np.ndarray, dict]:
    """The vocal stem of a plan (streamer.lab.arrangement.Plan): (2, n) float32 at ``rate``, and its info."""
    from ..audio import resample

    nrng = np.random.default_rng(rng.getrandbits(64))
    voice = pick_voice(rng, plan.female)
    espeak = Espeak(voice, work)
    ref = espeak.syllable("a", 48)
    ref_hz = float(np.median(ref.f0[ref.voiced])) if ref.voiced.any() else (200.0 if voice.female else 100.0)
    words = lexicon(rng, voice, rng.randint(10, 30))
    expr = Expression.random(rng)
    bs = plan.beat_seconds
    n_sr = int(n * SR / rate) + 1
    lines: dict[int, list[str]] = {}
    lead_notes: list[VocalNote] = []
    harmony_notes: list[VocalNote] = []
    rap_notes: list[VocalNote] = []
    count: dict[int, int] = {}
    rap_kinds = ("verse", "pre") if plan.rap else ()
    for note in plan.melody:
        line = lines.setdefault(note.lyric, _lyrics(rng, words, 64))
        kind = plan.section_at(note.start).kind
        if kind in rap_kinds:
            # rapped: the note's time split into quick syllables
            k = max(1, int(round(note.dur * bs / rng.uniform(0.16, 0.3))))
            for j in range(k):
                i = count.get(note.lyric, 0)
                count[note.lyric] = i + 1
                t0, t1 = plan.seconds(note.start + j * note.dur / k), plan.seconds(note.start + (j + 1) * note.dur / k)
                rap_notes.append(VocalNote(t0, (t1 - t0) * 0.95, note.pitch, note.vel / 127, line[i % len(line)],
                                           note.phrase))
            continue
        text = None
        if note.syllable:
            i = count.get(note.lyric, 0)
            count[note.lyric] = i + 1
            text = line[i % len(line)]
        t0 = plan.seconds(note.start)
        v = VocalNote(t0, plan.seconds(note.start + note.dur) - t0, note.pitch, note.vel / 127, text, note.phrase)
        lead_notes.append(v)
        if note.harmony is not None:
            harmony_notes.append(VocalNote(v.start, v.dur, note.harmony, v.vel * 0.9, text, v.phrase))
    for i, v in enumerate(lead_notes):  # a melisma's first note needs a syllable
        if v.text is None and (i == 0 or lead_notes[i - 1].phrase != v.phrase):
            v.text = words[0]
    for i, v in enumerate(harmony_notes):
        if v.text is None and (i == 0 or harmony_notes[i - 1].phrase != v.phrase):
            v.text = words[0]

    stereo = np.zeros((2, n_sr), np.float32)
    lead = sing_line(lead_notes, espeak, expr, rng, n_sr, ref_hz)
    if rap_notes:
        lead += sing_line(rap_notes, espeak, expr, rng, n_sr, ref_hz, rap=True) * 1.2
    stereo += _pan(lead, rng.uniform(-0.1, 0.1))
    info = {"voice": voice.name, "language": voice.language, "female": voice.female,
            "style": "sung and rapped" if rap_notes else "sung", "harmony": None, "double": False,
            "backing": False, "vibrato_semitones": round(expr.vibrato_depth, 2), "breaths": 0}
    if harmony_notes:
        hvoice = espeak
        if rng.random() < 0.4:  # a second singer, same language
            other = pick_voice(rng, plan.female)
            other.language = voice.language
            hvoice = Espeak(other, work)
        offsets = {v.phrase: rng.uniform(-0.01, 0.02) for v in harmony_notes}  # the second singer's timing
        shifted = [VocalNote(v.start + offsets[v.phrase], v.dur, v.pitch, v.vel, v.text, v.phrase)
                   for v in harmony_notes]
        h = sing_line(shifted, hvoice, Expression.random(rng), rng, n_sr, ref_hz)
        stereo += _pan(h, rng.choice((-1, 1)) * rng.uniform(0.2, 0.6)) * 10 ** (rng.uniform(-9, -4) / 20)
        info["harmony"] = plan.harmony
    if plan.double and lead_notes:
        cents = rng.choice((-1, 1)) * rng.uniform(6, 14) / 100
        delay = rng.uniform(0.012, 0.035)
        dbl = [VocalNote(v.start + delay, v.dur, v.pitch + cents, v.vel, v.text, v.phrase) for v in lead_notes]
        d = sing_line(dbl, espeak, Expression.random(rng), rng, n_sr, ref_hz)
        stereo += _pan(d, rng.uniform(-0.5, 0.5)) * 10 ** (rng.uniform(-8, -3) / 20)
        info["double"] = True
    if plan.backing:
        vowel = rng.choice(("oo", "ah", "oh")) if voice.language.startswith("en") else rng.choice(("u", "a", "o"))
        bexpr = Expression.random(rng)
        bexpr.vibrato_depth *= 0.5
        voices: dict[int, list[VocalNote]] = {}
        for note in plan.backing:  # the chord's tones, low to high, as separate lines
            line_notes = voices.setdefault(note.phrase, [])
            line_notes.append(note)
        upper, lower = [], []
        for chord in voices.values():
            chord.sort(key=lambda x: x.pitch)
            for j, note in enumerate(chord):
                t0 = plan.seconds(note.start)
                v = VocalNote(t0, plan.seconds(note.start + note.dur) - t0, note.pitch, 0.6, vowel, note.phrase)
                (lower if j == 0 else upper).append(v)
        for line_notes, pan in ((lower, -0.5), (upper, 0.5)):
            if line_notes:
                b = sing_line(line_notes, espeak, bexpr, rng, n_sr, ref_hz)
                stereo += _pan(b, pan * rng.uniform(0.6, 1.2)) * 10 ** (rng.uniform(-13, -7) / 20)
        info["backing"] = True

    out = resample(stereo, SR, rate)
    out = out[:, :n] if out.shape[1] >= n else np.pad(out, ((0, 0), (0, n - out.shape[1])))
    peak = float(np.abs(out).max())
    if peak <= 0:
        return out.astype(np.float32), info
    # breaths before phrases that follow a rest
    p_breath = rng.uniform(0.3, 0.95)
    starts: dict[int, float] = {}
    ends: dict[int, float] = {}
    for v in lead_notes + rap_notes:
        starts[v.phrase] = min(starts.get(v.phrase, 1e9), v.start)
        ends[v.phrase] = max(ends.get(v.phrase, 0.0), v.start + v.dur)
    prev_end = -1.0
    breaths = 0
    for ph in sorted(starts, key=starts.get):
        s = starts[ph] - expr.consonant_lead
        if s - prev_end > 0.35 and s > 0.2 and rng.random() < p_breath:
            dur = min(rng.uniform(0.15, 0.4), s - prev_end - 0.1)
            gap = rng.uniform(0.02, 0.08)
            b = breath(nrng, rate, dur) * peak * rng.uniform(0.02, 0.08)
            i0 = int((s - gap - dur) * rate)
            i1 = min(n, i0 + len(b))
            if i0 >= 0 and i1 > i0:
                out[:, i0:i1] += b[None, :i1 - i0]
                breaths += 1
        prev_end = max(prev_end, ends[ph])
    info["breaths"] = breaths
    info["syllables"] = len(espeak.cache)
    # air above 5 kHz following the voice
    mono = out.mean(axis=0)
    out += air(mono, rate, nrng, rng.uniform(0.01, 0.06))[None]
    out = _vocal_chain(out, rate, rng)
    return out.astype(np.float32), info


def _vocal_chain(x: np.ndarray, rate: int, rng: random.Random) -> np.ndarray:
    """A mix engineer's vocal chain: compression, sometimes saturation, a delay and a reverb."""
    import pedalboard as pb

    fx = [pb.Compressor(threshold_db=rng.uniform(-24, -12), ratio=rng.uniform(2, 5), attack_ms=rng.uniform(2, 15),
                        release_ms=rng.uniform(60, 200))]
    if rng.random() < 0.3:
        fx.append(pb.Distortion(drive_db=rng.uniform(2, 10)))
    if rng.random() < 0.25:
        fx.append(pb.Delay(delay_seconds=rng.uniform(0.15, 0.45), feedback=rng.uniform(0.1, 0.35),
                           mix=rng.uniform(0.05, 0.2)))
    if rng.random() < 0.75:
        fx.append(pb.Reverb(room_size=rng.uniform(0.1, 0.85), damping=rng.uniform(0.2, 0.8),
                            wet_level=rng.uniform(0.05, 0.3), dry_level=1.0, width=rng.uniform(0.5, 1.0)))
    peak = np.abs(x).max()
    y = pb.Pedalboard(fx)(x / peak * 0.5, rate)
    return np.asarray(y, np.float32)

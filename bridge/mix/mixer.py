"""Stem mixer: per-stem gain, fader, mute and solo on named output buses, click-free, with meters.

Controls can be changed at any time from any thread (an OSC server, a UI): a change only sets a
target, picked up by the audio side at the next block boundary, which moves each gain linearly from
where it is to its new target over ``ramp_ms`` (10 ms: ``round(ramp_ms * rate / 1000)`` samples), so
nothing clicks and every change, a mute from +24 dB as much as a 1 dB nudge, ends on its target one
ramp time after the block boundary that picked it up (a change during a ramp starts a new ramp from
where the gain is). Solo is additive, as on a mixing desk: when any stem of a bus is
soloed, only the soloed stems are heard on that bus (mute still wins).

Fader law (``fader``, 0..1, as X32/M32 consoles and TouchOSC faders use it): four linear segments
in dB, 1.0 = +10 dB, 0.75 = 0 dB (unity), 0.5 = -10 dB, 0.25 = -30 dB, 0.0625 = -60 dB, 0 = off.

Control values (one rule each, :data:`RULES`, used by every source: Python, rig files, CLI flags, the
terminal mixer, OSC, MIDI, the browser mixer): ``gain_db`` is a number (``-inf`` is silence; above +24 dB
it stops at +24), ``fader`` a finite number (beyond 0..1 it stops at its ends, as a fader does),
``mute``/``solo`` ``True``/``False`` (or 1/0, as OSC toggles send them). NaN, +inf, strings, ``None``
and other types are refused with a
``SettingsError`` naming the stem and the control, and the control keeps its value: nothing is
silently read as something else (a NaN fader is not "off", the string ``"false"`` is not true).

Changes are announced: ``mixer.add_listener(fn)`` calls ``fn()`` after every published change (a
setter, a batch's end, bypass, a reset), on the thread that made it; listeners must be quick (set an
event, bump a counter) and never block. Surfaces use it to send feedback instead of polling the state.

With every gain of a bus at unity and nothing muted or soloed, the bus is the delayed input itself,
bit for bit (when the engine has a residual, spread or in a stem, the stems sum to it), as DJ hardware passes the
signal through untouched when nothing is engaged.
"""
from __future__ import annotations

import contextlib
import math
import numbers
import threading
from typing import Iterable, Sequence

import numpy as np
from numba import njit

from streamer.errors import SettingsError

SILENCE_DB = -120.0


def _real(value) -> bool:
    """A real number (Python or numpy), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


# ---------------------------------------------------------------------------------- value rules
# Every control value follows one rule, defined here and used by every source: Python, rig files, CLI
# flags, the terminal mixer, OSC, MIDI and the browser mixer (bridge.control.model). A rule returns the
# value the control takes, or raises ValueError with what it accepts (the caller names the control).
FLAG_TEXT = "true or false (or 1/0)"
GAIN_TEXT = "a number of dB: finite, or -inf for silence (above +24 it stops at +24)"
FADER_TEXT = "a number from 0 to 1 (0.75 = unity, 0 = off)"
MAX_GAIN_DB = 24.0


def flag_value(value) -> bool:
    """``mute``/``solo``/``bypass``: True/False, or 1/0 (int or float, as OSC toggles and YAML send them)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if _real(value) and float(value) in (0.0, 1.0):
        return float(value) == 1.0
    raise ValueError(FLAG_TEXT)


def gain_value(value) -> float:
    """``gain_db``: a number; -inf is silence; above +24 it stops at +24; NaN and +inf refused."""
    if not _real(value):
        raise ValueError(GAIN_TEXT)
    value = float(value)
    if math.isnan(value) or value == math.inf:
        raise ValueError(GAIN_TEXT)
    return min(MAX_GAIN_DB, value)


def fader_value(value) -> float:
    """``fader``: a finite number; beyond 0..1 it stops at its ends, as a fader does."""
    if not _real(value) or not math.isfinite(float(value)):
        raise ValueError(FADER_TEXT)
    return min(1.0, max(0.0, float(value)))


def shown(value) -> str:
    """A refused value as messages show it (NaN and infinities spelled out)."""
    if _real(value) and not math.isfinite(float(value)):
        return "NaN" if math.isnan(float(value)) else ("inf" if float(value) > 0 else "-inf")
    return repr(value)


RULES = {"gain_db": gain_value, "fader": fader_value, "mute": flag_value, "solo": flag_value, "bypass": flag_value}


def checked_fader(where: str, value) -> float:
    """A fader position from a control (:func:`fader_value`), or a SettingsError naming ``where``."""
    try:
        return fader_value(value)
    except ValueError:
        raise SettingsError(f"{where}: fader must be {FADER_TEXT}, got {shown(value)}") from None


def fader_to_db(fader: float) -> float:
    """X32 fader law: 0..1 -> dB (-inf at 0; beyond 0..1 the fader stops at its ends; NaN refused)."""
    f = checked_fader("fader_to_db", fader)
    if f >= 0.5:
        return 40.0 * f - 30.0
    if f >= 0.25:
        return 80.0 * f - 50.0
    if f >= 0.0625:
        return 160.0 * f - 70.0
    if f > 0.0:
        return 480.0 * f - 90.0
    return -math.inf


def db_to_fader(db: float) -> float:
    """Inverse of ``fader_to_db`` (clamped to 0..1)."""
    if db == -math.inf or db <= -90.0:
        return 0.0
    if db >= -10.0:
        f = (db + 30.0) / 40.0
    elif db >= -30.0:
        f = (db + 50.0) / 80.0
    elif db >= -60.0:
        f = (db + 70.0) / 160.0
    else:
        f = (db + 90.0) / 480.0
    return min(1.0, max(0.0, f))


def checked_db(where: str, value: float) -> float:
    """A gain in dB from a control (:func:`gain_value`), or a SettingsError naming ``where``."""
    try:
        return gain_value(value)
    except ValueError:
        raise SettingsError(f"{where}: gain_db must be {GAIN_TEXT}, got {shown(value)}") from None


def checked_flag(where: str, key: str, value) -> bool:
    """``mute``/``solo`` from a control (:func:`flag_value`), or a SettingsError naming ``where`` and ``key``."""
    try:
        return flag_value(value)
    except ValueError:
        raise SettingsError(f"{where}: {key} must be {FLAG_TEXT}, got {shown(value)}") from None


def audible_gain(gain_db: float, mute: bool, solo: bool, soloing: bool, master: float) -> float:
    """The linear gain a stem is heard at on its bus: its own gain times the bus master's (``master``, 0
    when the bus is muted), 0 when muted or when another stem of the bus is soloed (solo is additive,
    mute wins). The one rule, used by the audio side's targets and by scene fades."""
    if mute or (soloing and not solo):
        return 0.0
    return db_to_gain(gain_db) * master


def db_to_gain(db: float) -> float:
    return 0.0 if db == -math.inf else 10.0 ** (db / 20.0)


_MIX_SIG = "void(float32[:, :, :], float32[:], float32[:], float32[:], int64[:], float32[:, :])"


@njit(_MIX_SIG, cache=True, nogil=True)
def mix_bus(stems, current, target, step, left, out):
    """out (channels, n) = sum over stems of gain * stem; a gain with ``left[s]`` samples of ramp to go
    moves by ``step[s]`` per sample and lands exactly on ``target[s]`` at its last one (see
    :func:`retarget`); ``current`` and ``left`` are updated in place."""
    num_stems, channels, n = stems.shape
    for c in range(channels):
        for i in range(n):
            out[c, i] = 0.0
    for s in range(num_stems):
        g = current[s]
        k = left[s]
        if k == 0:
            if g == 0.0:
                continue
            for c in range(channels):
                for i in range(n):
                    out[c, i] += g * stems[s, c, i]
            continue
        t = target[s]
        d = step[s]
        for i in range(n):
            if k > 0:
                k -= 1
                g = t if k == 0 else g + d
            for c in range(channels):
                out[c, i] += g * stems[s, c, i]
        current[s] = g
        left[s] = k


@njit("void(float32[:, :], float32[:, :], float32[:, :], float32[:, :], int64[:, :], int64)", cache=True,
      nogil=True)
def retarget(pending, target, current, step, left, ramp):
    """Take the new targets (``target[:] = pending``); each gain whose target changed starts a linear
    ramp of ``ramp`` samples from where it is now (``step``: the move per sample, ``left``: samples to go).
    In place, no allocation: runs on the audio side at a block boundary."""
    buses, stems = pending.shape
    for b in range(buses):
        for s in range(stems):
            t = pending[b, s]
            if t == target[b, s]:
                continue
            target[b, s] = t
            if current[b, s] == t:
                left[b, s] = 0
                step[b, s] = 0.0
            else:
                left[b, s] = ramp
                step[b, s] = (t - current[b, s]) / np.float32(ramp)


@njit("float32(float32[:, :], float32[:, :], float32, float32, float32)", cache=True, nogil=True)
def blend_dry(out, dry, g, target, step):
    """out = (1 - g) * out + g * dry, g ramping to ``target`` by ``step`` per sample; returns the final g.
    At g = 1 the output is ``dry`` exactly."""
    channels, n = out.shape
    if g == target:
        if g == 0.0:
            return g
        if g == 1.0:
            for c in range(channels):
                for i in range(n):
                    out[c, i] = dry[c, i]
            return g
    for i in range(n):
        if g < target:
            g = min(target, g + step)
        elif g > target:
            g = max(target, g - step)
        for c in range(channels):
            out[c, i] = (1.0 - g) * out[c, i] + g * dry[c, i]
    return g


_METER_SIG = "void(float32[:, :], float32[:], int64)"


@njit(_METER_SIG, cache=True, nogil=True)
def meter_block(x, meters, index):
    """meters[2*index] = peak dBFS, meters[2*index + 1] = RMS dBFS of ``x`` (channels, n)."""
    channels, n = x.shape
    peak = 0.0
    acc = 0.0
    for c in range(channels):
        for i in range(n):
            v = abs(x[c, i])
            if v > peak:
                peak = v
            acc += x[c, i] * x[c, i]
    rms = math.sqrt(acc / max(1, channels * n))
    meters[2 * index] = 20.0 * math.log10(peak) if peak > 1e-6 else -120.0
    meters[2 * index + 1] = 20.0 * math.log10(rms) if rms > 1e-6 else -120.0


class Listeners:
    """Functions called after a change (``add``, ``remove``; calling the object calls them all), on the
    changing thread. The list is replaced, never mutated, so calling iterates it without a lock; a
    listener's exception never undoes the change nor stops the others."""

    def __init__(self):
        self._fns: tuple = ()
        self._lock = threading.Lock()

    def add(self, fn) -> None:
        with self._lock:
            self._fns = self._fns + (fn,)

    def remove(self, fn) -> None:
        with self._lock:
            self._fns = tuple(f for f in self._fns if f is not fn)

    def __len__(self) -> int:
        return len(self._fns)

    def __call__(self) -> None:
        for fn in self._fns:
            try:
                fn()
            except Exception:  # noqa: BLE001 - see the class docstring
                pass


class StemControl:
    """One stem's controls on one bus. Setting any of them is safe from any thread."""

    def __init__(self, name: str, on_change):
        self.name = name
        self._gain_db = 0.0
        self._mute = False
        self._solo = False
        self._on_change = on_change

    @property
    def gain_db(self) -> float:
        return self._gain_db

    @gain_db.setter
    def gain_db(self, value: float) -> None:
        self._gain_db = checked_db(self.name, value)
        self._on_change()

    @property
    def fader(self) -> float:
        """0..1 on the X32 law (0.75 = unity); setting it sets gain_db."""
        return db_to_fader(self._gain_db)

    @fader.setter
    def fader(self, value: float) -> None:
        self.gain_db = fader_to_db(checked_fader(self.name, value))

    @property
    def mute(self) -> bool:
        return self._mute

    @mute.setter
    def mute(self, value: bool) -> None:
        self._mute = checked_flag(self.name, "mute", value)
        self._on_change()

    @property
    def solo(self) -> bool:
        return self._solo

    @solo.setter
    def solo(self, value: bool) -> None:
        self._solo = checked_flag(self.name, "solo", value)
        self._on_change()

    def reset(self) -> None:
        self._gain_db, self._mute, self._solo = 0.0, False, False
        self._on_change()

    def __repr__(self) -> str:
        return f"StemControl({self.name!r}, gain_db={self._gain_db:g}, mute={self._mute}, solo={self._solo})"


class Bus:
    """A named output: its own controls for every stem, and a bus gain."""

    def __init__(self, name: str, stems: Sequence[str], on_change):
        self.name = name
        self.stem_names = list(stems)
        self.stems = {s: StemControl(s, on_change) for s in stems}
        self._gain_db = 0.0
        self._mute = False
        self._on_change = on_change

    @property
    def gain_db(self) -> float:
        return self._gain_db

    @gain_db.setter
    def gain_db(self, value: float) -> None:
        self._gain_db = checked_db(f"bus {self.name}", value)
        self._on_change()

    @property
    def fader(self) -> float:
        """The bus master's fader, 0..1 on the X32 law (0.75 = unity); setting it sets gain_db."""
        return db_to_fader(self._gain_db)

    @fader.setter
    def fader(self, value: float) -> None:
        self.gain_db = fader_to_db(checked_fader(f"bus {self.name}", value))

    @property
    def mute(self) -> bool:
        """The bus master's mute: the whole bus silent (its stems' own controls are kept)."""
        return self._mute

    @mute.setter
    def mute(self, value: bool) -> None:
        self._mute = checked_flag(f"bus {self.name}", "mute", value)
        self._on_change()

    def targets(self) -> np.ndarray:
        soloing = any(c.solo for c in self.stems.values())
        master = 0.0 if self._mute else db_to_gain(self._gain_db)
        return np.array([audible_gain(c.gain_db, c.mute, c.solo, soloing, master)
                         for c in (self.stems[name] for name in self.stem_names)], np.float32)

    def __getitem__(self, stem: str) -> StemControl:
        try:
            return self.stems[stem]
        except KeyError:
            raise KeyError(f"no stem {stem!r} on bus {self.name!r}; stems: {', '.join(self.stem_names)}") from None


class StemMixer:
    """Mixes separated stems into named buses. ``process`` runs on the audio side and never blocks.

    ``mixer.buses["main"].stems["vocals"].mute = True`` (or ``mixer["main"]["vocals"]``);
    ``mixer.stems`` is the first bus's controls, for the common one-bus case.
    """

    def __init__(self, stems: Sequence[str], sample_rate: int, buses: Iterable[str] = ("main",),
                 ramp_ms: float = 10.0, channels: int = 2):
        self.stem_names = list(stems)
        self.sample_rate = int(sample_rate)
        self.channels = channels
        names = list(buses)
        if not names or len(set(names)) != len(names):
            raise SettingsError(f"bus names must be distinct and at least one, got {names}")
        self._lock = threading.Lock()  # only between control threads; the audio side never takes it
        self.buses = {b: Bus(b, self.stem_names, self._changed) for b in names}
        self.bus_names = names
        n = len(names)
        self._current = np.ones((n, len(self.stem_names)), np.float32)
        self._targets = np.ones((n, len(self.stem_names)), np.float32)
        self._pending = np.ones((n, len(self.stem_names)), np.float32)
        self._version = 0
        self._applied = 0
        self._announce = Listeners()   # called after every published change (add_listener)
        self._batching = 0
        self._batch_dirty = False
        self._bypass_target = np.zeros(1, np.float32)   # set by control threads
        self._bypass_state = np.zeros(1, np.float32)    # the audio side's current bypass amount
        # every change ramps over this many samples, whatever its size; ``step`` is a unit change's move per
        # sample (the bypass crossfade's, 0 to 1)
        self.ramp_samples = max(1, int(round(ramp_ms * 1e-3 * self.sample_rate)))
        self.step = np.float32(1.0 / self.ramp_samples)
        self._steps = np.zeros((n, len(self.stem_names)), np.float32)   # per gain: move per sample
        self._left = np.zeros((n, len(self.stem_names)), np.int64)      # per gain: ramp samples to go
        # meters: [stems..., buses...] x (peak dB, rms dB); written by the audio side, read by anyone
        self.meters = np.full(2 * (len(self.stem_names) + n), SILENCE_DB, np.float32)
        self._warm_up()

    def _warm_up(self) -> None:
        stems = np.zeros((len(self.stem_names), self.channels, 4), np.float32)
        out = np.zeros((self.channels, 4), np.float32)
        cur = np.ones(len(self.stem_names), np.float32)
        left = np.full(len(self.stem_names), 2, np.int64)
        mix_bus(stems, cur, np.zeros_like(cur), np.full_like(cur, -0.5), left, out)
        grid = np.ones((1, len(self.stem_names)), np.float32)
        retarget(grid * 0, grid.copy(), grid.copy(), grid.copy(), np.zeros(grid.shape, np.int64), 4)
        meter_block(out, np.zeros(2, np.float32), 0)
        blend_dry(out, out.copy(), np.float32(0.0), np.float32(1.0), np.float32(0.5))

    @property
    def stems(self) -> dict[str, StemControl]:
        return self.buses[self.bus_names[0]].stems

    def __getitem__(self, bus: str) -> Bus:
        try:
            return self.buses[bus]
        except KeyError:
            raise KeyError(f"no bus {bus!r}; buses: {', '.join(self.bus_names)}") from None

    def _changed(self) -> None:
        # called from control threads: compute the new targets and publish them with a version bump
        with self._lock:
            if self._batching:
                self._batch_dirty = True
                return
            for i, b in enumerate(self.bus_names):
                self._pending[i] = self.buses[b].targets()
            self._version += 1
        self._announce()

    # ------------------------------------------------------------------ change notification
    def add_listener(self, fn) -> None:
        """Call ``fn()`` after every published change (see the module docstring); quick, never blocking."""
        self._announce.add(fn)

    def remove_listener(self, fn) -> None:
        self._announce.remove(fn)

    @property
    def version(self) -> int:
        """Bumped by every published change of the controls."""
        return self._version

    @contextlib.contextmanager
    def batch(self):
        """Changes made inside ``with mixer.batch():`` reach the audio side together, at one block
        boundary (an OSC bundle, a scene): nothing is published until the outermost batch ends."""
        with self._lock:
            self._batching += 1
        try:
            yield self
        finally:
            with self._lock:
                self._batching -= 1
                publish = self._batching == 0 and self._batch_dirty
                if publish:
                    self._batch_dirty = False
            if publish:
                self._changed()

    @property
    def bypass(self) -> bool:
        """Every bus plays the delayed input itself (what the stems came from), crossfaded over the ramp
        time; the controls are kept for when bypass ends. Needs the dry signal in ``process``."""
        return bool(self._bypass_target[0] == 1.0)

    @bypass.setter
    def bypass(self, value: bool) -> None:
        target = 1.0 if checked_flag("mixer", "bypass", value) else 0.0
        if self._bypass_target[0] != target:
            self._bypass_target[0] = target
            self._announce()

    def reset_controls(self) -> None:
        for bus in self.buses.values():
            bus._gain_db = 0.0
            bus._mute = False
            for c in bus.stems.values():
                c._gain_db, c._mute, c._solo = 0.0, False, False
        self._changed()

    @property
    def meter_names(self) -> list[str]:
        """The meters in order: every stem, then every bus as ``"bus:<name>"``."""
        return self.stem_names + [f"bus:{b}" for b in self.bus_names]

    def meter(self, name: str) -> tuple[float, float]:
        """(peak dBFS, RMS dBFS) of the last block of a stem or a bus (``"bus:main"``)."""
        return self.meter_view()[name]

    def meter_view(self, values: np.ndarray | None = None) -> dict[str, tuple[float, float]]:
        """Every meter by name (:attr:`meter_names`): (peak dBFS, RMS dBFS), from ``values`` (a copy of
        :attr:`meters`, as a surface or the mixer process receives it) or the live meters."""
        v = self.meters if values is None else values
        return {name: (float(v[2 * i]), float(v[2 * i + 1])) for i, name in enumerate(self.meter_names)}

    def is_unity(self, bus: int) -> bool:
        return bool(np.all(self._current[bus] == 1.0) and np.all(self._targets[bus] == 1.0))

    def process(self, stems: np.ndarray, out: np.ndarray, dry: np.ndarray | None = None,
                dry_is_sum: bool = True) -> None:
        """Mix ``stems`` (stems, channels, n) into ``out`` (buses, channels, n).

        ``dry`` is the delayed input those stems were separated from: a bus at unity with nothing
        muted or soloed outputs it bit for bit (unless ``dry_is_sum`` is False: the stems were
        processed, by effects, and no longer add up to it), and bypass plays it.
        """
        if self._version != self._applied:  # pick up control changes at the block boundary
            version = self._version
            retarget(self._pending, self._targets, self._current, self._steps, self._left, self.ramp_samples)
            self._applied = version
        for s in range(stems.shape[0]):
            meter_block(stems[s], self.meters, s)
        bypassing = dry is not None and (self._bypass_state[0] != 0.0 or self._bypass_target[0] != 0.0)
        for b in range(len(self.bus_names)):
            if dry is not None and dry_is_sum and self.is_unity(b):
                out[b] = dry
            else:
                mix_bus(stems, self._current[b], self._targets[b], self._steps[b], self._left[b], out[b])
        if bypassing:  # every bus makes the same move towards the dry signal
            g0, target = self._bypass_state[0], self._bypass_target[0]
            g = g0
            for b in range(len(self.bus_names)):
                g = blend_dry(out[b], dry, g0, target, self.step)
            self._bypass_state[0] = g
        for b in range(len(self.bus_names)):
            meter_block(out[b], self.meters, len(self.stem_names) + b)

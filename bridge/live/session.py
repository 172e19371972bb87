"""A live session: devices chosen and checked, the model warm, the stream open, the status shown,
and everything closed whatever ends it.

Order of events (``LiveSession.run``):

1. set-up, before any audio flows (every mistake is one clear error here): the devices are found
   (``bridge.live.devices``), the routes and channels checked against them, the rate chosen (the
   model's when the devices take it, else the output device's own, with resampling), the file read
   and resampled once, the recording folder created;
2. warm-up: the worker process starts and runs its first windows, and the whole path (numba
   kernels, effect chains, resamplers) runs on silence; then it is reset and the garbage collector's
   current objects are frozen;
3. the stream runs: PortAudio calls :meth:`LiveSession._callback` for every block, which only calls
   :meth:`LivePath.process` and counts (overflows, underflows, its own duration), never waiting on
   anything; the main thread feeds the terminal mixer, which runs in a process of its own
   (``bridge.live.ui_process``), or prints a status line per second, and watches for the end: ``--seconds``,
   the end of a file, ``q``, a signal (:data:`STOP_SIGNALS`: Ctrl-C, SIGTERM, SIGHUP from a closed
   terminal or ssh session, ...), an error in the callback, a device that stops calling back;
4. the end: the stream is closed, the recorder drains and renames its files, ``session.json`` is
   written, the worker process stopped, and a summary printed.

Signals (:class:`StopSignals`): while the model loads, a stop signal raises :class:`Stopped` (a
``KeyboardInterrupt``) at once; during the set-up and the warm-up it is acted on between steps (a
worker process being spawned is not cut short), and the run ends leaving nothing behind; from the
moment the stream opens it only asks the session to end, which then ends as for ``q``: summary,
finished files, ``session.json`` with the reason. A terminal that is gone (SIGHUP)
cannot take the summary: printing is best effort (:func:`say`), the files and ``session.json`` are not.
"""
from __future__ import annotations

import atexit
import datetime
import gc
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamer.audio import adapt_channels, read_audio, resample
from streamer.errors import SettingsError

from .devices import Device, DeviceError, check_channels, find_device, portaudio, query
from .path import FileSource, LivePath, check_routes, parse_route
from .recorder import Recorder
from .ui_process import UiProcess

STREAM_CLOSE_SECONDS = 2.0   # a stream that does not close within this is abandoned (see _close_stream)
DEVICE_LOST_SECONDS = 2.0    # no callback for this long while streaming: the device is gone
WARM_UP_SECONDS = 0.5        # of silence through the whole path before the stream opens
UI_REFRESH_HZ = 15.0
SWITCH_INTERVAL = 0.001        # s, while streaming (see run)
TIMES = 65536                # callback durations kept for the statistics

# every signal whose default action would end the process (and that is not a fault of the process itself
# nor a timer it set), with the words the summary and session.json give as the reason
_SIGNAL_WORDS = {
    "SIGINT": "interrupted", "SIGTERM": "terminated (SIGTERM)",
    "SIGHUP": "hangup (SIGHUP: the terminal or the connection closed)", "SIGQUIT": "quit (SIGQUIT)",
    "SIGUSR1": "signal SIGUSR1", "SIGUSR2": "signal SIGUSR2", "SIGXCPU": "CPU time limit (SIGXCPU)",
    "SIGPWR": "power failure (SIGPWR)",
}
STOP_SIGNALS = tuple(getattr(signal, name) for name in _SIGNAL_WORDS if hasattr(signal, name))


def signal_words(num: int) -> str:
    """The stop reason for signal ``num``."""
    try:
        name = signal.Signals(num).name
    except ValueError:
        return f"signal {num}"
    return _SIGNAL_WORDS.get(name, f"signal {name}")


class Stopped(KeyboardInterrupt):
    """A stop signal arrived before the stream ran (``reason``: its words)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class StopSignals:
    """``with StopSignals() as signals:`` catches :data:`STOP_SIGNALS` (main thread only; elsewhere it does
    nothing), in one of three modes:

    * at first (``raising``): the first signal raises :class:`Stopped` where the main thread is; for work
      that may be cut anywhere (loading a model, as Ctrl-C always could);
    * after :meth:`hold`: a signal is only noted, and :meth:`check`, called where stopping is safe (between
      the steps of the warm-up), raises :class:`Stopped`; nothing half-started (a worker process being
      spawned, files being created) is cut short;
    * once ``on_stop`` is set (the stream runs): ``on_stop(reason)`` is called.

    A signal after the first never interrupts the clean-up. SIGXFSZ is ignored meanwhile, so a file-size
    limit is a write error the recorder reports, not the end of the process."""

    def __init__(self):
        self.on_stop = None
        self.reason: str | None = None
        self.raising = True
        self._old: dict = {}

    def hold(self) -> None:
        """From here a signal is only noted; :meth:`check` acts on it."""
        self.raising = False

    def check(self) -> None:
        """Raise :class:`Stopped` if a stop signal arrived."""
        if self.reason is not None:
            raise Stopped(self.reason)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
            if hasattr(signal, "SIGXFSZ"):
                self._old[signal.SIGXFSZ] = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        return self

    def _handle(self, num, frame) -> None:
        reason = signal_words(num)
        first = self.reason is None
        self.reason = self.reason or reason
        if self.on_stop is not None:
            self.on_stop(reason)
        elif self.raising and first:
            self.raising = False
            raise Stopped(reason)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._old.clear()


def say(text: str, file=None) -> bool:
    """Print ``text`` (stdout by default); a terminal or pipe that is gone (a closed ssh session) is not an
    error: the stream is pointed at /dev/null, so that nothing fails later either. Returns whether it got out."""
    file = file or sys.stdout
    try:
        print(text, file=file, flush=True)
        return True
    except (OSError, ValueError):
        try:
            fd = file.fileno()
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, fd)
            os.close(null)
        except (OSError, ValueError, AttributeError):
            pass
        return False


@dataclass
class LiveOptions:
    """What ``stemstream live`` was asked for (devices by index or name, None for the defaults)."""

    input: str | None = None
    output: str | None = None
    in_channels: list[int] | None = None     # 0-based device input channels
    input_file: str | None = None
    input_audio: Any = None                  # the file's audio already read, (channels, frames) at the model's rate
    loop: bool = False
    blocksize: int = 256
    seconds: float | None = None
    routes: list[str] = field(default_factory=list)
    record: str | None = None
    model: dict[str, Any] = field(default_factory=dict)   # what session.json says about the model


def _sd_error(exc: Exception, what: str) -> DeviceError:
    text = str(exc).strip() or type(exc).__name__
    return DeviceError(f"{what}: {text}")


class LiveSession:
    """One run of a separator on live devices (see the module docstring). ``sd`` is the sounddevice
    module (``portaudio()`` when not given)."""

    def __init__(self, separator, options: LiveOptions, sd=None):
        self.sep = separator
        self.opt = options
        self.sd = sd or portaudio()
        self.rate = separator.sample_rate
        C = self.channels = separator.channels
        devices = query(self.sd)
        self.out_dev: Device = find_device(options.output, "output", devices)
        self.in_dev: Device | None = None if options.input_file else find_device(options.input, "input", devices)
        self.routes = [parse_route(r, separator.mixer.bus_names, separator.stem_names, C) for r in options.routes]
        self.out_channels = check_routes(self.routes, C)
        why = " ".join(f"--route {r.text}" for r in self.routes) or f"the first bus ({C} channels)"
        check_channels(self.out_dev, "output", self.out_channels, why)
        self.in_map = None
        self.in_open = 0
        if self.in_dev is not None:
            self.in_map, self.in_open = self._input_map(options.in_channels)
        self.device_rate = self._choose_rate()
        self.source = None
        if options.input_file:
            if options.input_audio is not None:   # read by the caller (a stem file's master)
                audio = options.input_audio
            else:
                audio, file_rate = read_audio(options.input_file)
                if file_rate != self.rate:
                    audio = resample(audio, file_rate, self.rate)
            self.source = FileSource(adapt_channels(audio, C, options.input_file), loop=options.loop)
            follow = getattr(separator.engine, "follow", None)
            if follow is not None:   # a stem deck plays the stems at the position the file source has read
                source = self.source
                follow(lambda: source.pos, source.loop)
        self.recorder = None
        max_frames = LivePath.frames_bound(options.blocksize, self.rate, self.device_rate)
        if options.record:
            self.recorder = Recorder(options.record, self.rate, C, separator.mixer.bus_names, separator.stem_names,
                                     max_frames)
        try:
            self.path = LivePath(separator, self.device_rate, options.blocksize, self.out_channels, self.routes,
                                 in_map=self.in_map, source=self.source, recorder=self.recorder)
        except Exception:
            self._discard_recording()
            raise
        # counters written by the callback (one writer), read by anyone
        self.input_overflows = 0
        self.output_underflows = 0
        self.calls = 0
        self._times = np.zeros(TIMES, np.float64)
        self._last_call = 0.0
        self.error: str | None = None        # what ended the session abnormally
        self.stop_reason: str | None = None
        self._stop_requested: str | None = None
        self.started_at: float | None = None
        self._stream = None
        self.osc: str | None = None          # the OSC endpoint(s), shown by the terminal mixer
        self.control = None                  # bridge.control.server.OSCControl, when started
        self.device_buffer_frames: int | None = None
        self.session_json_error: str | None = None   # why session.json could not be written (a full disk)
        self._summary: dict | None = None             # once closed

    # ------------------------------------------------------------------ set-up
    def _input_map(self, chosen: list[int] | None) -> tuple[list[int], int]:
        C, dev = self.channels, self.in_dev
        have = dev.max_input_channels
        if chosen is None:
            chosen = list(range(C)) if have >= C else [0]
        if len(chosen) not in (1, C):
            raise SettingsError(f"--in-channels: {len(chosen)} channels for a {C}-channel model; give 1 "
                                f"(duplicated) or {C}")
        needed = max(chosen) + 1
        check_channels(dev, "input", needed, f"--in-channels {','.join(str(c + 1) for c in chosen)}")
        return (chosen * C if len(chosen) == 1 else list(chosen)), needed

    def _settings_ok(self, rate: float) -> str | None:
        try:
            self.sd.check_output_settings(device=self.out_dev.index, channels=self.out_channels, dtype="float32",
                                          samplerate=rate)
            if self.in_dev is not None:
                self.sd.check_input_settings(device=self.in_dev.index, channels=self.in_open, dtype="float32",
                                             samplerate=rate)
        except Exception as exc:  # noqa: BLE001 - sounddevice raises PortAudioError or ValueError
            return str(exc).strip()
        return None

    def _choose_rate(self) -> int:
        """The model's rate when the devices take it, else the output device's default rate (resampled)."""
        first = self._settings_ok(self.rate)
        if first is None:
            return self.rate
        fallback = int(round(self.out_dev.default_samplerate))
        if fallback != self.rate and self._settings_ok(fallback) is None:
            return fallback
        raise DeviceError(f"{self.out_dev.name} cannot run at the model's {self.rate} Hz"
                          + (f" nor at its default {fallback} Hz" if fallback != self.rate else "") + f": {first}")

    def _discard_recording(self) -> None:
        if self.recorder is not None:
            self.recorder.discard()
            self.recorder = None

    def start_osc(self, port: int, host: str = "127.0.0.1", allow=(), tcp: bool = False):
        """OSC control of this session's separator (``bridge.control``), with this session's status
        (xruns, callback times) in ``/engine/status``; closed with the session."""
        from bridge.control.server import OSCControl

        self.control = OSCControl(self.sep, port=port, host=host, allow=allow, tcp=tcp, status=self.status)
        self.osc = ", ".join(self.control.endpoints)
        return self.control

    # ------------------------------------------------------------------ latency
    @property
    def latency_parts_ms(self) -> dict[str, float]:
        """Where the latency comes from, in ms: look-ahead + hop (algorithmic), the compute allowance
        (processing), the effect chains, the rate conversion."""
        parts = self.sep.engine.latency_parts
        ms = lambda n: 1000.0 * n / self.rate  # noqa: E731
        return {"algorithmic": ms(parts["algorithmic"]), "processing": ms(parts["processing"]),
                "effects": ms(self.sep.effects_latency_samples), "resampling": self.path.resampling_ms}

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.path.latency_frames / self.device_rate

    def _note_device_latency(self, stream) -> None:
        """What the audio device itself adds (PortAudio's input + output latency), in frames."""
        try:
            lat = stream.latency
            total = sum(lat) if isinstance(lat, (tuple, list)) else float(lat)
            self.device_buffer_frames = int(round(total * self.device_rate))
        except Exception:  # noqa: BLE001 - informative only
            self.device_buffer_frames = None

    # ------------------------------------------------------------------ the callback
    def _callback(self, indata, outdata, frames, time_info, status) -> None:
        t0 = time.perf_counter()
        if status:
            if status.input_overflow:
                self.input_overflows += 1
            if status.output_underflow:
                self.output_underflows += 1
        if self.error is not None:
            outdata.fill(0.0)
        else:
            try:
                self.path.process(indata, outdata)
            except Exception as exc:  # noqa: BLE001 - the stream must keep running to end cleanly
                outdata.fill(0.0)
                self.error = f"the audio path failed: {type(exc).__name__}: {exc}"
        t1 = time.perf_counter()
        self._times[self.calls % TIMES] = t1 - t0
        self.calls += 1
        self._last_call = t1

    def _out_callback(self, outdata, frames, time_info, status) -> None:
        self._callback(None, outdata, frames, time_info, status)

    # ------------------------------------------------------------------ status
    @property
    def mixer(self):
        """The separator's stem mixer (what the terminal mixer and OSC control)."""
        return self.sep.mixer

    @property
    def seconds(self) -> float:
        return self.path.device_frames / self.device_rate

    def callback_ms(self) -> tuple[float, float]:
        """Median and 99th percentile of the callback's duration, in ms."""
        n = min(self.calls, TIMES)
        if not n:
            return float("nan"), float("nan")
        t = self._times[:n]
        return 1000.0 * float(np.median(t)), 1000.0 * float(np.percentile(t, 99))

    def status(self) -> dict[str, Any]:
        st = self.sep.engine.stats
        med, p99 = self.callback_ms()
        rec = self.recorder
        return {
            "seconds": self.seconds, "latency_ms": self.latency_ms, "latency_parts_ms": self.latency_parts_ms,
            "realtime_factor": st["realtime_factor"], "deadline_misses": st["deadline_misses"],
            "input_overflows": self.input_overflows, "output_underflows": self.output_underflows,
            "record_dropped": int(rec.counters[2]) if rec else 0,
            "recorded_seconds": rec.frames / rec.sample_rate if rec else None,
            "callback_ms_median": med, "callback_ms_p99": p99,
            "osc": self.osc, "input": self.input_label, "output": self.out_dev.label(),
            "recording": rec.folder if rec else None,
            "error": self.error or st["error"] or (rec.error if rec else None),
        }

    @property
    def input_label(self) -> str:
        if self.opt.input_file:
            return f"file {self.opt.input_file}" + (" (looped)" if self.opt.loop else "")
        return self.in_dev.label()

    def status_line(self) -> str:
        s = self.status()
        line = (f"{s['seconds']:7.1f} s | latency {s['latency_ms']:.0f} ms | rtf {s['realtime_factor']:.2f} | "
                f"misses {s['deadline_misses']} | overflows {s['input_overflows']} | "
                f"underflows {s['output_underflows']} | rec dropped {s['record_dropped']} | "
                f"callback p99 {s['callback_ms_p99']:.2f} ms")
        if s["error"]:
            line += f" | {s['error']}"
        return line

    # ------------------------------------------------------------------ end conditions
    @property
    def finished(self) -> bool:
        """True once the session should end (and ``stop_reason`` says why)."""
        if self.stop_reason is not None:
            return True
        reason = None
        if self._stop_requested:
            reason = self._stop_requested
        elif self.error is not None:
            reason = "error"
        elif self.opt.seconds is not None and self.seconds >= self.opt.seconds:
            reason = "seconds"
        elif self.source is not None and not self.source.loop and \
                self.path.device_frames >= self._file_end_frames:
            reason = "end of file"
        elif self._stream is not None and self.calls and \
                (time.perf_counter() - self._last_call > DEVICE_LOST_SECONDS or not self._stream.active):
            self.error = (f"the audio device {self.out_dev.name!r} stopped calling back: was it disconnected, or "
                          "did its server stop?")
            reason = "error"
        if reason is not None:
            self.stop_reason = reason
            return True
        return False

    @property
    def _file_end_frames(self) -> int:
        return int(math.ceil(self.source.frames * self.device_rate / self.rate)) + self.path.latency_frames

    def request_stop(self, reason: str = "quit") -> None:
        """Ask the session to end (from a signal handler, the UI or another thread)."""
        self._stop_requested = self._stop_requested or reason

    # ------------------------------------------------------------------ run
    def warm_up(self, signals: StopSignals | None = None) -> None:
        """Start the worker (it warms the model), run the whole path on silence, reset, freeze the GC.
        ``signals``: checked between the steps (a stop signal ends the warm-up there)."""
        check = signals.check if signals is not None else (lambda: None)
        check()
        # the stop signals are held back while the worker process is spawned: it inherits the mask, so a
        # terminal that closes (SIGHUP to the whole process group) or a Ctrl-C there does not kill it
        # mid-show; the session ends it. Here they stay pending and are acted on just after.
        main = threading.current_thread() is threading.main_thread()
        if main:   # started first: starting it later would unblock SIGINT and SIGTERM again
            from multiprocessing import resource_tracker

            resource_tracker.ensure_running()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS) if main else None
        try:
            self.sep.engine.start()
        finally:
            if mask is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        check()
        rec, self.path.recorder = self.path.recorder, None
        try:
            silence_in = np.zeros((self.opt.blocksize, max(1, self.in_open)), np.float32)
            out = np.zeros((self.opt.blocksize, self.out_channels), np.float32)
            for k in range(max(2, int(WARM_UP_SECONDS * self.device_rate / self.opt.blocksize))):
                if k % 16 == 0:
                    check()
                self.path.process(None if self.source is not None else silence_in, out)
            self._callback(None if self.source is not None else silence_in, out, self.opt.blocksize, None, None)
        finally:
            self.path.recorder = rec
        self.path.reset()
        self.sep.engine.reset_stats()
        self.calls = 0
        self._times[:] = 0.0
        gc.collect()
        gc.freeze()

    def open_stream(self):
        sd = self.sd
        common = dict(samplerate=self.device_rate, blocksize=self.opt.blocksize, dtype="float32")
        try:
            if self.source is not None:
                stream = sd.OutputStream(device=self.out_dev.index, channels=self.out_channels,
                                         callback=self._out_callback, **common)
            else:
                stream = sd.Stream(device=(self.in_dev.index, self.out_dev.index),
                                   channels=(self.in_open, self.out_channels), callback=self._callback, **common)
        except Exception as exc:  # noqa: BLE001 - PortAudioError, ValueError
            raise _sd_error(exc, f"cannot open {self.input_label} -> {self.out_dev.label()}") from exc
        return stream

    def run(self, ui: bool = True, out=None, signals: StopSignals | None = None) -> dict:
        """Run until the end (see the module docstring); returns the summary (also in session.json).
        ``signals``: the caller's :class:`StopSignals` (one is made for the run without it)."""
        own = signals is None
        if own:
            signals = StopSignals().__enter__()
        signals.hold()
        try:
            return self._run(ui, out or sys.stdout, signals)
        finally:
            if own:
                signals.__exit__(None, None, None)

    def _run(self, ui: bool, out, signals: StopSignals) -> dict:
        mixer = None
        # the audio callback's thread waits for the GIL whenever another thread of this process holds
        # it; with a 1 ms switch interval (default 5) it gets it within a millisecond
        switch = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        try:
            mixer = UiProcess(self, UI_REFRESH_HZ).start() if ui else None   # starts while the model warms up
            self.warm_up(signals)
            if mixer is not None:
                mixer.wait_ready()   # its start-up (imports, first drawing) must not compete with the audio
            signals.check()
            if self.recorder is not None:
                self.recorder.start()
            # from here a signal only asks the session to end: the stream and the files close in order
            signals.on_stop = self.request_stop
            signals.check()
            self._stream = self.open_stream()
            self._note_device_latency(self._stream)
            self._last_call = time.perf_counter()
            try:
                self._stream.start()
            except Exception as exc:  # noqa: BLE001
                raise _sd_error(exc, f"cannot start {self.out_dev.label()}") from exc
            self.started_at = time.monotonic()
            if self.recorder is not None:   # what a take a killed run leaves behind is known
                self.recorder.write_start(self.summary(self.sep.engine.stats, None, started))
            next_line = time.monotonic() + 1.0
            while not self.finished:
                time.sleep(0.02)
                if mixer is not None and mixer.alive:
                    mixer.pump()
                elif time.monotonic() >= next_line:  # no mixer (or it closed): a status line a second
                    say(self.status_line(), out)
                    next_line += 1.0
        finally:
            stream, self._stream = self._stream, None
            if stream is not None:   # the audio stops first: the counters end with the session
                self._close_stream(stream)
            sys.setswitchinterval(switch)
            if mixer is not None:
                mixer.close()
            summary = self.close(started)
        return summary

    def close(self, started: str | None = None) -> dict:
        """Stop everything, in order; returns the summary. Safe to call more than once."""
        if self._summary is not None:
            return self._summary
        stream, self._stream = self._stream, None
        if stream is not None:
            self._close_stream(stream)
        gc.unfreeze()
        if self.control is not None:
            self.control.close()
        stats = self.sep.engine.stats
        self.sep.engine.stop()
        if self.started_at is None:
            self._discard_recording()  # nothing was played: leave no empty take behind
        recording = self.recorder.close() if self.recorder is not None else None
        self.stop_reason = self.stop_reason or ("error" if self.error else "quit")
        summary = self.summary(stats, recording, started)
        if self.recorder is not None and self.session_json_error is None:
            self.session_json_error = self.recorder.write_session(summary)
            summary["recording"]["session_json_error"] = self.session_json_error
        self._summary = summary
        return summary

    def _close_stream(self, stream) -> None:
        """Stop and close the stream from a helper thread: PortAudio waits for ever on a device whose
        server is gone (JACK killed), and nothing else may wait on it. A stream that does not close
        within STREAM_CLOSE_SECONDS is abandoned, and so is PortAudio's clean-up at exit (which would
        wait the same way, or abort the interpreter)."""
        failure: list[str] = []

        def shut() -> None:
            try:
                stream.abort()
                stream.close()
            except Exception as exc:  # noqa: BLE001 - a lost device may refuse; the rest must still close
                failure.append(str(exc))

        closer = threading.Thread(target=shut, name="stemstream-stream-close", daemon=True)
        closer.start()
        closer.join(STREAM_CLOSE_SECONDS)
        if closer.is_alive():
            failure.append(f"it did not close within {STREAM_CLOSE_SECONDS:g} s")
            handler = getattr(self.sd, "_exit_handler", None)
            if handler is not None:
                atexit.unregister(handler)
        if failure and self.error is None:
            self.error = f"closing the audio device failed: {failure[0]}"

    def summary(self, stats: dict, recording: dict | None, started: str | None) -> dict:
        e = self.sep.engine
        med, p99 = self.callback_ms()
        rate = self.rate
        return {
            "started": started,
            "duration_seconds": round(self.seconds, 3),
            "stopped_by": self.stop_reason,
            "error": self.error or stats["error"] or (recording or {}).get("error"),
            "sample_rate": rate,
            "latency_samples": int(self.sep.reported_latency_samples),
            "device_sample_rate": self.device_rate,
            "latency_frames": int(self.path.latency_frames),
            "device_buffer_latency_frames": self.device_buffer_frames,
            "latency_ms": {"total": self.latency_ms, **self.latency_parts_ms},
            "engine": {"window": e.window, "hop": e.hop, "lookahead": e.lookahead,
                       "crossfade": e.settings.crossfade, "compute_allowance": e.compute_allowance,
                       "residual": e.residual, "device": str(e.device), "precision": e.precision,
                       "backend": stats.get("backend", "torch"),
                       "seconds": {"window": e.window / rate, "hop": e.hop / rate, "lookahead": e.lookahead / rate}},
            "model": dict(self.opt.model, stems=list(self.sep.stem_names)),
            "buses": list(self.sep.mixer.bus_names),
            "stems": list(self.sep.stem_names),
            "input": self.input_label,
            "output": self.out_dev.label(),
            "routes": [r.text for r in self.routes],
            "blocksize": self.opt.blocksize,
            "counters": {
                "callbacks": self.calls,
                "callback_ms_median": med, "callback_ms_p99": p99,
                "deadline_misses": stats["deadline_misses"], "late_results": stats["late_results"],
                "skipped_windows": stats["skipped_windows"], "realtime_factor": stats["realtime_factor"],
                "input_overflows": self.input_overflows, "output_underflows": self.output_underflows,
                "record_dropped_blocks": (recording or {}).get("dropped_blocks", 0),
                "record_dropped_frames": (recording or {}).get("dropped_frames", 0),
                "resampler_underflow_frames": self.path.fifo_underflows,
                "nonfinite_input": stats["nonfinite_input"], "worker_restarts": stats["worker_restarts"],
            },
            "recording": None if self.recorder is None else {
                "folder": self.recorder.folder,
                "seconds": round((recording or {}).get("seconds", self.recorder.frames / rate), 3),
                "error": (recording or {}).get("error", self.recorder.error),
                "nonfinite_input_recorded_as_zero": (recording or {}).get("nonfinite_input", self.recorder.nonfinite),
                "session_json_error": None,
            },
            "files": None if self.recorder is None else sorted(os.path.relpath(p, self.recorder.folder)
                                                                for p in self.recorder.paths) + ["session.json"],
        }


def format_summary(s: dict) -> str:
    """The lines printed when a session ends."""
    c = s["counters"]
    parts = ", ".join(f"{k} {v:.0f}" for k, v in s["latency_ms"].items() if k != "total" and v)
    lines = [
        f"stopped: {s['stopped_by']} after {s['duration_seconds']:.1f} s",
        f"latency: {s['latency_ms']['total']:.1f} ms ({parts}) = {s['latency_frames']} frames at "
        f"{s['device_sample_rate']} Hz" + (f", plus the device's own {s['device_buffer_latency_frames']} frames"
                                           if s.get("device_buffer_latency_frames") else ""),
        f"deadline misses {c['deadline_misses']}, input overflows {c['input_overflows']}, output underflows "
        f"{c['output_underflows']}, dropped record blocks {c['record_dropped_blocks']}",
        f"callback {c['callback_ms_median']:.3f} ms median, {c['callback_ms_p99']:.3f} ms p99 "
        f"({c['callbacks']} calls)",
        (f"model: none: the stems of {s['model']['stem_file']} play as they are (no separation, zero latency)"
         if s["model"].get("stem_file") else
         f"model: on the service at {s['model']['remote']} (round trips at connect {s['model'].get('round_trips_ms')} ms, "
         f"network allowance {s['model'].get('network_allowance_ms')} ms), each window {c['realtime_factor']:.2f}x the hop"
         if s["model"].get("remote") else
         f"model: {s['engine']['backend']} backend, {s['engine']['precision']} on {s['engine']['device']}, each window "
         f"{c['realtime_factor']:.2f}x the hop" + (f"; input: {s['model']['input']}" if s["model"].get("input") else "")),
    ]
    if c.get("nonfinite_input"):
        lines.append(f"non-finite input: {c['nonfinite_input']} samples (NaN or inf) replaced with 0 as they entered "
                     "the engine" + ("; input.wav holds them as 0" if s.get("files") else ""))
    rec = s.get("recording")
    if rec:
        lines.append(f"recorded: {len(s['files'])} files, {rec['seconds']:.1f} s in {rec['folder']}")
        if rec.get("error"):
            lines.append(rec["error"].replace("; the show goes on", "; the show went on"))
        if rec.get("session_json_error"):
            lines.append(f"{rec['session_json_error']}: the stop reason and the counters are only in this summary")
    rtf = c.get("realtime_factor")
    if c["deadline_misses"] and rtf is not None and rtf > 0.9:
        lines.append(f"hint: each window took {rtf:.2f}x the hop on this machine, so separation fell back to the dry "
                     "input; a longer hop keeps up (--latency balanced, or --hop)")
    return "\n".join(lines)

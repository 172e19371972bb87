"""A live session: devices chosen and checked, the model warm, the stream open, the status shown,
and everything closed whatever ends it. :class:`LiveSession` is the run loop; its pieces are modules
of their own:

* :mod:`bridge.live.setup`: devices, channels, routes, the rate, the input map, the file;
* :mod:`bridge.live.status`: :class:`~bridge.live.status.LiveStatus`, the session's numbers as one typed
  value (the status line, the terminal mixer, OSC's ``/engine/status``);
* :mod:`bridge.live.report`: the summary (``session.json``) and :func:`format_summary`;
* :mod:`bridge.live.surfaces`: control surfaces (OSC, MIDI, ...), each with ``start``, ``close``, a
  ``label`` and ``counters``, added with :meth:`LiveSession.add_surface` and closed with the session;
* :mod:`bridge.live.signals`: the stop signals (:class:`StopSignals`) and best-effort printing (:func:`say`).

Order of events (``LiveSession.run``):

1. set-up, before any audio flows (every mistake is one clear error here): the devices are found
   (``bridge.live.devices``), the routes and channels checked against them, the rate chosen (the
   model's when the devices take it, else the output device's own, with resampling), the file read
   and resampled once (:func:`bridge.live.setup.set_up`), the recording folder created; the control
   surfaces start (:meth:`LiveSession.add_surface`, :meth:`LiveSession.start_osc`);
2. warm-up: the worker process starts and runs its first windows, and the whole path (numba
   kernels, effect chains, resamplers) runs on silence; then it is reset and the garbage collector's
   current objects are frozen;
3. the stream runs: PortAudio calls :meth:`LiveSession._callback` for every block, which only calls
   :meth:`LivePath.process` and counts (overflows, underflows, its own duration), never waiting on
   anything; the main thread feeds the terminal mixer, which runs in a process of its own
   (``bridge.live.ui_process``), or prints a status line per second, and watches for the end: ``--seconds``,
   the end of a file, ``q``, a signal (:data:`STOP_SIGNALS`: Ctrl-C, SIGTERM, SIGHUP from a closed
   terminal or ssh session, ...), an error in the callback, a device that stops calling back;
4. the end: the stream is closed, the control surfaces closed (the last added first), the recorder
   drains and renames its files, ``session.json`` is written, the worker process stopped, and a summary
   printed.

Signals (:mod:`bridge.live.signals`, :class:`StopSignals`): while the model loads, a stop signal raises
:class:`Stopped` (a ``KeyboardInterrupt``) at once; during the set-up and the warm-up it is acted on between steps (a
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
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bridge.control.model import ControlModel

from .devices import Device, DeviceError, portaudio
from .path import LivePath
from .recorder import Recorder
from .report import build_summary, format_summary
from .setup import DeviceSetup, choose_rate, input_label, input_map, set_up
from .signals import STOP_SIGNALS, Stopped, StopSignals, say, signal_words
from .status import LiveStatus
from .surfaces import OSCSurface, Surface, Surfaces
from .ui_process import UiProcess

STREAM_CLOSE_SECONDS = 2.0   # a stream that does not close within this is abandoned (see _close_stream)
DEVICE_LOST_SECONDS = 2.0    # no callback for this long while streaming: the device is gone
WARM_UP_SECONDS = 0.5        # of silence through the whole path before the stream opens
UI_REFRESH_HZ = 15.0
SWITCH_INTERVAL = 0.001        # s, while streaming (see run)
TIMES = 65536                # callback durations kept for the statistics

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
    """One run of a separator on live devices (see the module docstring): the run loop. The set-up is
    :mod:`bridge.live.setup`'s, the report :mod:`bridge.live.report`'s, the control surfaces
    :mod:`bridge.live.surfaces`' (:meth:`add_surface`). ``sd`` is the sounddevice module (``portaudio()``
    when not given)."""

    def __init__(self, separator, options: LiveOptions, sd=None):
        self.sep = separator
        self.opt = options
        self.sd = sd or portaudio()
        self.rate = separator.sample_rate
        C = self.channels = separator.channels
        found = self.setup = set_up(separator, options, self.sd)
        self.out_dev: Device = found.out_dev
        self.in_dev: Device | None = found.in_dev
        self.routes = found.routes
        self.out_channels = found.out_channels
        self.in_map, self.in_open = found.in_map, found.in_open
        self.device_rate = found.device_rate
        self.source = found.source
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
        self.control_model = ControlModel.of(separator)   # what every surface acts on
        self.control_model.set_host_status(self.status)   # /engine/status: this session's latency, seconds, xruns
        self.surfaces = Surfaces(self.control_model)
        self.osc: str | None = None          # the OSC endpoint(s), when started
        self.control = None                  # bridge.control.server.OSCControl, when started
        self.device_buffer_frames: int | None = None
        self.session_json_error: str | None = None   # why session.json could not be written (a full disk)
        self._summary: dict | None = None             # once closed

    # ------------------------------------------------------------------ set-up
    def _discard_recording(self) -> None:
        if self.recorder is not None:
            self.recorder.discard()
            self.recorder = None

    def add_surface(self, surface):
        """Start a control surface (:class:`bridge.live.surfaces.Surface`: ``start()``, ``close()``, ``label``,
        ``counters()``) on this session: its counters go into the status under its short name, its label
        into the terminal mixer, the summary and session.json; it is closed when the session ends (the
        last added first). A surface that cannot start raises here and is not added. Returns it."""
        return self.surfaces.add(surface)

    def start_osc(self, port: int, host: str = "127.0.0.1", allow=(), tcp: bool = False):
        """OSC control of this session's separator (:class:`bridge.live.surfaces.OSCSurface`), with this
        session's status (xruns, seconds played) in ``/engine/status``; closed with the session. Returns the
        :class:`bridge.control.server.OSCControl`."""
        surface = self.add_surface(OSCSurface(self.sep, port=port, host=host, allow=allow, tcp=tcp,
                                              status=self.status))
        self.control = surface.control
        self.osc = ", ".join(surface.endpoints)
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

    def status(self) -> LiveStatus:
        """The session's numbers now (:class:`bridge.live.status.LiveStatus`)."""
        st = self.sep.engine.stats
        med, p99 = self.callback_ms()
        rec = self.recorder
        return LiveStatus(
            seconds=self.seconds, latency_ms=self.latency_ms, latency_parts_ms=self.latency_parts_ms,
            realtime_factor=st["realtime_factor"], deadline_misses=int(st["deadline_misses"]),
            input_overflows=self.input_overflows, output_underflows=self.output_underflows,
            record_dropped=int(rec.counters[2]) if rec else 0,
            recorded_seconds=rec.frames / rec.sample_rate if rec else None,
            callback_ms_median=med, callback_ms_p99=p99, surfaces=tuple(self.surfaces.labels),
            input=self.input_label, output=self.out_dev.label(), recording=rec.folder if rec else None,
            error=self.error or st["error"] or (rec.error if rec else None),
        )

    @property
    def input_label(self) -> str:
        return input_label(self.opt, self.in_dev)

    def status_line(self) -> str:
        return self.status().line()

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
        surfaces = self.surfaces.report()      # their counters as they end, for the summary
        for entry, failure in zip(surfaces, self.surfaces.close()):
            if failure:                        # said in the summary; the show itself did not fail
                entry["error"] = failure
        self.control_model.set_host_status(None)   # the model outlives the session (one per separator)
        stats = self.sep.engine.stats
        self.sep.engine.stop()
        if self.started_at is None:
            self._discard_recording()  # nothing was played: leave no empty take behind
        recording = self.recorder.close() if self.recorder is not None else None
        self.stop_reason = self.stop_reason or ("error" if self.error else "quit")
        summary = self.summary(stats, recording, started)
        summary["surfaces"] = surfaces
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
        """The summary (:func:`bridge.live.report.build_summary`); also session.json."""
        return build_summary(self, stats, recording, started)


__all__ = ["LiveOptions", "LiveSession", "LiveStatus", "Stopped", "StopSignals", "STOP_SIGNALS", "Surface",
           "DeviceSetup", "OSCSurface", "choose_rate", "format_summary", "input_map", "say", "signal_words"]

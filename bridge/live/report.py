"""A live session's report: the summary (a dict, written as ``session.json`` by the recorder, and printed
by :func:`format_summary` when the session ends).

The summary holds when and why the session ended, the latency and where it comes from, the engine's
settings, the model, the devices and routes, the counters (callbacks and their duration, deadline misses,
xruns, dropped record blocks, non-finite input), the recording, and every control surface with its
counters (``"surfaces": [{"label": "osc: udp://127.0.0.1:9000", "counters": {"messages": 3, ...}}]``).
"""
from __future__ import annotations

import os


def build_summary(session, stats: dict, recording: dict | None, started: str | None) -> dict:
    """The summary of ``session`` (a :class:`~bridge.live.session.LiveSession`): ``stats`` are the engine's,
    ``recording`` what the recorder's ``close()`` returned (None while it runs, or without one)."""
    s = session
    e = s.sep.engine
    med, p99 = s.callback_ms()
    rate = s.rate
    rec = s.recorder
    return {
        "started": started,
        "duration_seconds": round(s.seconds, 3),
        "stopped_by": s.stop_reason,
        "error": s.error or stats["error"] or (recording or {}).get("error"),
        "sample_rate": rate,
        "latency_samples": int(s.sep.reported_latency_samples),
        "device_sample_rate": s.device_rate,
        "latency_frames": int(s.path.latency_frames),
        "device_buffer_latency_frames": s.device_buffer_frames,
        "latency_ms": {"total": s.latency_ms, **s.latency_parts_ms},
        "engine": {"window": e.window, "hop": e.hop, "lookahead": e.lookahead,
                   "crossfade": e.settings.crossfade, "compute_allowance": e.compute_allowance,
                   "residual": e.residual, "device": str(e.device), "precision": e.precision,
                   "backend": stats.get("backend", "torch"),
                   "seconds": {"window": e.window / rate, "hop": e.hop / rate, "lookahead": e.lookahead / rate}},
        "model": dict(s.opt.model, stems=list(s.sep.stem_names)),
        "buses": list(s.sep.mixer.bus_names),
        "stems": list(s.sep.stem_names),
        "input": s.input_label,
        "output": s.out_dev.label(),
        "routes": [r.text for r in s.routes],
        "blocksize": s.opt.blocksize,
        "surfaces": s.surfaces.report(),
        "counters": {
            "callbacks": s.calls,
            "callback_ms_median": med, "callback_ms_p99": p99,
            "deadline_misses": stats["deadline_misses"], "late_results": stats["late_results"],
            "skipped_windows": stats["skipped_windows"], "realtime_factor": stats["realtime_factor"],
            "input_overflows": s.input_overflows, "output_underflows": s.output_underflows,
            "record_dropped_blocks": (recording or {}).get("dropped_blocks", 0),
            "record_dropped_frames": (recording or {}).get("dropped_frames", 0),
            "resampler_underflow_frames": s.path.fifo_underflows,
            "nonfinite_input": stats["nonfinite_input"], "worker_restarts": stats["worker_restarts"],
        },
        "recording": None if rec is None else {
            "folder": rec.folder,
            "seconds": round((recording or {}).get("seconds", rec.frames / rate), 3),
            "error": (recording or {}).get("error", rec.error),
            "nonfinite_input_recorded_as_zero": (recording or {}).get("nonfinite_input", rec.nonfinite),
            "session_json_error": None,
        },
        "files": None if rec is None else sorted(os.path.relpath(p, rec.folder)
                                                 for p in rec.paths) + ["session.json"],
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
    for surface in s.get("surfaces") or ():
        counts = ", ".join(f"{k} {v}" for k, v in surface.get("counters", {}).items())
        lines.append(f"control {surface['label']}" + (f" ({counts})" if counts else "")
                     + (f"; {surface['error']}" if surface.get("error") else ""))
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

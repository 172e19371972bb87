"""A live session's set-up, before any audio flows: the devices found, the routes and channels checked
against them, the rate chosen, the input map, the file read. Every mistake is one clear error here
(:class:`~bridge.live.devices.DeviceError`, ``SettingsError``).

* devices: by index or a part of the name (:func:`bridge.live.devices.find_device`); a file input has no
  input device;
* routes (``--route monitor:3-4``) give the output channels needed; the input map takes ``--in-channels``
  (one channel duplicated, or one per model channel);
* the rate: the model's when the devices take it, else the output device's default rate (the audio path
  then resamples), else an error naming both;
* the file: read and resampled to the model's rate once (or the audio the caller already read: a stem
  file's master), as a :class:`~bridge.live.path.FileSource`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamer.audio import adapt_channels, read_audio, resample
from streamer.errors import SettingsError

from .devices import Device, DeviceError, check_channels, find_device, query
from .path import FileSource, Route, check_routes, parse_route


@dataclass
class DeviceSetup:
    """What :func:`set_up` found: the devices, routes, channels and rate a session runs with."""

    out_dev: Device
    in_dev: Device | None
    routes: list[Route]
    out_channels: int
    in_map: list[int] | None       # model channel -> device input channel
    in_open: int                   # input channels to open on the device
    device_rate: int
    source: FileSource | None      # the file played instead of an input device


def input_map(dev: Device, channels: int, chosen: list[int] | None) -> tuple[list[int], int]:
    """The device input channel of each of the model's ``channels`` (``--in-channels``, 0-based; default:
    the first ``channels`` when the device has them, else the first duplicated), and how many to open."""
    C = channels
    if chosen is None:
        chosen = list(range(C)) if dev.max_input_channels >= C else [0]
    if len(chosen) not in (1, C):
        raise SettingsError(f"--in-channels: {len(chosen)} channels for a {C}-channel model; give 1 "
                            f"(duplicated) or {C}")
    needed = max(chosen) + 1
    check_channels(dev, "input", needed, f"--in-channels {','.join(str(c + 1) for c in chosen)}")
    return (chosen * C if len(chosen) == 1 else list(chosen)), needed


def settings_ok(sd, rate: float, out_dev: Device, out_channels: int, in_dev: Device | None, in_open: int) -> str | None:
    """None when the devices take ``rate`` with these channels, else PortAudio's reason."""
    try:
        sd.check_output_settings(device=out_dev.index, channels=out_channels, dtype="float32", samplerate=rate)
        if in_dev is not None:
            sd.check_input_settings(device=in_dev.index, channels=in_open, dtype="float32", samplerate=rate)
    except Exception as exc:  # noqa: BLE001 - sounddevice raises PortAudioError or ValueError
        return str(exc).strip()
    return None


def choose_rate(sd, rate: int, out_dev: Device, out_channels: int, in_dev: Device | None, in_open: int) -> int:
    """The model's ``rate`` when the devices take it, else the output device's default rate (resampled)."""
    first = settings_ok(sd, rate, out_dev, out_channels, in_dev, in_open)
    if first is None:
        return rate
    fallback = int(round(out_dev.default_samplerate))
    if fallback != rate and settings_ok(sd, fallback, out_dev, out_channels, in_dev, in_open) is None:
        return fallback
    raise DeviceError(f"{out_dev.name} cannot run at the model's {rate} Hz"
                      + (f" nor at its default {fallback} Hz" if fallback != rate else "") + f": {first}")


def read_source(separator, options) -> FileSource | None:
    """The file ``options.input_file`` (or ``options.input_audio``, read by the caller) at the model's rate
    and channels; a stem deck follows the position the source has read."""
    if not options.input_file:
        return None
    rate, C = separator.sample_rate, separator.channels
    if options.input_audio is not None:   # read by the caller (a stem file's master)
        audio = options.input_audio
    else:
        audio, file_rate = read_audio(options.input_file)
        if file_rate != rate:
            audio = resample(audio, file_rate, rate)
    source = FileSource(adapt_channels(audio, C, options.input_file), loop=options.loop)
    follow = getattr(separator.engine, "follow", None)
    if follow is not None:   # a stem deck plays the stems at the position the file source has read
        follow(lambda: source.pos, source.loop)
    return source


def set_up(separator, options, sd: Any) -> DeviceSetup:
    """Find and check everything ``options`` (a :class:`~bridge.live.session.LiveOptions`) asks for."""
    C = separator.channels
    devices = query(sd)
    out_dev = find_device(options.output, "output", devices)
    in_dev = None if options.input_file else find_device(options.input, "input", devices)
    routes = [parse_route(r, separator.mixer.bus_names, separator.stem_names, C) for r in options.routes]
    out_channels = check_routes(routes, C)
    why = " ".join(f"--route {r.text}" for r in routes) or f"the first bus ({C} channels)"
    check_channels(out_dev, "output", out_channels, why)
    in_map, in_open = None, 0
    if in_dev is not None:
        in_map, in_open = input_map(in_dev, C, options.in_channels)
    device_rate = choose_rate(sd, separator.sample_rate, out_dev, out_channels, in_dev, in_open)
    source = read_source(separator, options)
    return DeviceSetup(out_dev, in_dev, routes, out_channels, in_map, in_open, device_rate, source)


def input_label(options, in_dev: Device | None) -> str:
    """The input as the status and the summary name it."""
    if options.input_file:
        return f"file {options.input_file}" + (" (looped)" if options.loop else "")
    return in_dev.label()

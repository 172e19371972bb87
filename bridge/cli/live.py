"""``stemstream devices`` (the audio devices) and ``stemstream live`` (separate and mix a live input or a
file, to real audio outputs, with routing, recording and the terminal mixer)."""
from __future__ import annotations

import argparse
import math
import os
import sys

from . import midi
from .common import (MAX_BLOCK, MAX_SCORE_SECONDS, MAX_WINDOW_SECONDS, add_backend_arg, number, positive_int,
                     residual_value, seconds, whole_number)

RANDOM_WEIGHTS = "random"   # --checkpoint random: an untrained model, asked for by name


def register(sub) -> None:
    dv = sub.add_parser("devices", help="list the audio devices",
                        description="List the audio devices PortAudio sees: index, name, host API, input and output "
                                    "channels, default sample rate ('>' default input, '<' default output). "
                                    "`stemstream live --input/--output` take an index or a part of a name.")
    dv.add_argument("--json", action="store_true", help="print JSON instead of a table")
    dv.set_defaults(func=cmd_devices)

    lv = sub.add_parser(
        "live", help="separate and mix a live input (or a file) to audio outputs in real time",
        description="Separate a live input (or a file played at real-time pace) and play the mix: the first bus "
                    "on outputs 1-2, further buses or single stems on other outputs with --route. A terminal "
                    "mixer shows meters and takes keys (1-9 mute stem N, shift+1-9 solo, q quits); --no-ui prints "
                    "a status line per second. Ends on q, Ctrl-C, --seconds or the end of a file, and prints a "
                    "summary.",
        epilog="examples:\n"
               "  stemstream live --config model.yaml --checkpoint model.ckpt --mute vocals\n"
               "  stemstream live --rig configs/rigs/karaoke.yaml --input Scarlett --output Scarlett "
               "--route monitor:3-4 --record takes/1\n"
               "  stemstream live --rig configs/rigs/practice_no_bass.yaml --input-file song.flac --loop",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    model = lv.add_argument_group("model (a config and checkpoint, or a rig; neither: the bundled demo model)")
    model.add_argument("--rig", help="rig YAML: model, engine, stems, effects and buses in one file")
    model.add_argument("--config", help="MSST-format YAML config of the model")
    model.add_argument("--checkpoint", help="model weights (.ckpt/.pth/.safetensors); 'random': untrained weights, to "
                                            "try the pipeline (the stems are not a separation)")
    model.add_argument("--model-type", choices=["bs_roformer", "mel_band_roformer"],
                       help="model class when the YAML has no training.model_type")
    model.add_argument("--trust-checkpoint", action="store_true",
                       help="allow a pickled checkpoint to run arbitrary code when loading (weights_only=False); "
                            "only for files from a source you trust")
    model.add_argument("--device", default=None, help="inference device: cpu, cuda, cuda:1 (default: cuda if "
                                                      "available, else cpu; a rig's engine.device)")
    model.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16", "fp16", "int8"],
                       help="autocast precision (auto: bf16 on CUDA when the config asks for it, else fp32); on the "
                            "CPU bf16 runs where the CPU has it natively; int8: the ONNX Runtime core with int8 "
                            "matrix products (CPU, --backend onnx or auto)")
    add_backend_arg(model)
    model.add_argument("--remote", metavar="URL",
                       help="run the model on a separation service (stemstream serve): ws://HOST:PORT[/stream] "
                            "or wss://... (TLS), "
                            "instead of --config/--rig; the audio side stays here and never waits")
    model.add_argument("--token", default=None,
                       help="the service's token (default: $STEMSTREAM_TOKEN)")
    model.add_argument("--model-name", default=None, metavar="NAME",
                       help="with --remote: which of the service's models (default: its only one)")
    model.add_argument("--network-allowance", type=number(0.0, 10000.0, zero=True), default=None, metavar="MS",
                       help="with --remote: time allowed for the network round trip, in ms, added to the latency "
                            "(default: twice the worst round trip measured at connect time, plus 5 ms)")
    model.add_argument("--wire", choices=["fp32", "fp16"], default="fp32",
                       help="with --remote: audio on the wire as fp32 (default) or fp16 (half the bytes)")
    model.add_argument("--tls-ca", metavar="FILE", default=None,
                       help="with --remote wss://...: verify the service against this PEM CA or self-signed "
                            "certificate (default: the system's CAs)")
    eng = lv.add_argument_group("engine (a preset, or explicit lengths as in a rig's engine section)")
    eng.add_argument("--latency", choices=["low", "balanced", "offline-exact"], default=None,
                     help="latency preset (default: the rig's, else balanced)")
    eng.add_argument("--window", type=seconds(MAX_WINDOW_SECONDS), help="window in seconds (overrides the preset)")
    eng.add_argument("--hop", type=seconds(MAX_WINDOW_SECONDS), help="hop in seconds")
    eng.add_argument("--lookahead", type=number(0.0, MAX_WINDOW_SECONDS, zero=True), help="look-ahead in seconds")
    eng.add_argument("--residual", default=None,
                     help="what the stems miss, so they sum to the input: 'spread' (shared equally; the default for "
                          "a multi-stem model), a stem's name (that stem takes mix minus the others; a single-target "
                          "model's default is 'other'), or 'none' (the model's stems as they are)")
    mix = lv.add_argument_group("mixer (the first bus)")
    mix.add_argument("--mute", action="append", default=[], metavar="STEM", help="mute a stem (repeatable)")
    mix.add_argument("--solo", action="append", default=[], metavar="STEM", help="solo a stem (repeatable)")
    mix.add_argument("--gain", action="append", default=[], metavar="STEM=DB", help="a stem's gain in dB (repeatable)")
    mix.add_argument("--buses", default=None, metavar="NAME,NAME",
                     help="bus names, the first on outputs 1-2 (default: the rig's buses, else main)")
    io = lv.add_argument_group("audio")
    io.add_argument("--input", default=None, help="input device: index or part of its name (default: the system's)")
    io.add_argument("--output", default=None, help="output device: index or part of its name (default: the system's)")
    io.add_argument("--in-channels", default=None, metavar="1,2",
                    help="device input channels feeding the model, counted from 1; one channel is duplicated for a "
                         "stereo model (default: 1,2)")
    io.add_argument("--input-file", default=None,
                    help="play a file (at real-time pace) instead of a device input; a stem file (.stem.mp4) with no "
                         "model plays its own stems (no model, no latency)")
    io.add_argument("--loop", action="store_true", help="with --input-file: play it again and again")
    io.add_argument("--route", action="append", default=[], metavar="NAME:FIRST-LAST",
                    help="send another bus or a single stem to output channels FIRST..LAST, e.g. monitor:3-4 or "
                         "vocals:5 (one channel: summed to mono); repeatable")
    io.add_argument("--blocksize", type=positive_int(MAX_BLOCK), default=256, help="frames per audio block (256)")
    io.add_argument("--record", default=None, metavar="DIR",
                    help="record DIR/input.wav, DIR/<bus>.wav, DIR/stems/<stem>.wav and DIR/session.json")
    io.add_argument("--seconds", type=seconds(MAX_SCORE_SECONDS), default=None,
                    help="stop after this many seconds (default: run until q or Ctrl-C)")
    io.add_argument("--no-ui", action="store_true", help="no terminal mixer: one status line per second")
    osc = lv.add_argument_group("OSC remote control (see the README's address table)")
    osc.add_argument("--osc", type=whole_number(0, 65535), default=None, metavar="PORT",
                     help="listen for OSC control on this UDP port (0: any free port)")
    osc.add_argument("--osc-host", default="127.0.0.1",
                     help="the address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every "
                          "interface, which needs --osc-allow)")
    osc.add_argument("--osc-allow", action="append", default=[], metavar="CIDR",
                     help="accept OSC only from these networks or addresses, e.g. 192.168.1.0/24 (repeatable)")
    osc.add_argument("--osc-tcp", action="store_true",
                     help="also listen on TCP (OSC 1.1 SLIP framing) on the same port")
    web = lv.add_argument_group("browser mixer (a page for a phone or tablet; see the README's Browser mixer)")
    web.add_argument("--web", type=whole_number(0, 65535), default=None, metavar="PORT",
                     help="serve the mixer page on this HTTP port (0: any free port); prints its address with an "
                          "access token and a QR code of it")
    web.add_argument("--web-host", default=None,
                     help="the address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every "
                          "interface, which needs --web-allow)")
    web.add_argument("--web-allow", action="append", default=[], metavar="CIDR",
                     help="serve the page only to these networks or addresses, e.g. 192.168.1.0/24 (repeatable)")
    web.add_argument("--web-token", default=None, metavar="T",
                     help="the page's access token (default: a random one per run)")
    midi.add_live_args(lv)
    lv.set_defaults(func=cmd_live)


def cmd_devices(args: argparse.Namespace) -> int:
    from bridge.live.devices import format_table, query, to_json

    devices = query()
    print(to_json(devices) if args.json else format_table(devices))
    return 0


def _stem_db(text: str) -> tuple[str, float]:
    from streamer.errors import SettingsError

    stem, sep, db = text.partition("=")
    try:
        value = float(db)
    except ValueError:
        value = math.nan
    if not sep or not stem or math.isnan(value):
        raise SettingsError(f"--gain {text}: expected STEM=DB, e.g. drums=-6")
    return stem, value


def _engine_overrides(args: argparse.Namespace, rate: int) -> dict:
    out: dict = {"realtime": True, "worker": "process", "backend": args.backend}
    for key in ("window", "hop", "lookahead"):
        value = getattr(args, key)
        if value is not None:
            out[key] = int(round(value * rate))
    if {"window", "hop", "lookahead"} & set(out):
        out.setdefault("crossfade", None)
    if args.residual is not None:
        out["residual"] = residual_value(args.residual)
    return out


def build_separator(args: argparse.Namespace):
    """The real-time separator the flags describe, and what session.json says about its model."""
    from bridge.plugin.separator import StemSeparator
    from streamer.errors import SettingsError
    from streamer.inference.loader import load_model
    from streamer.msst.config import load_config

    if args.remote:
        return _remote_separator(args)
    if args.rig and not args.config:
        from bridge.plugin.rig import remote_url

        if remote_url(args.rig) is not None:   # the rig's model runs on a separation service
            return _remote_rig_separator(args)
    for flag in ("model_name", "network_allowance", "tls_ca"):
        if getattr(args, flag) is not None:
            raise SettingsError(f"--{flag.replace('_', '-')} goes with --remote")

    if args.rig and args.config:
        raise SettingsError("give the model as --rig RIG.yaml, or as --config MODEL.yaml --checkpoint MODEL.ckpt, "
                            "not both")
    if args.checkpoint and not args.config:
        raise SettingsError("--checkpoint goes with --config (a rig names its own checkpoint)")
    if args.config and not args.checkpoint:
        raise SettingsError(f"--config {args.config} needs --checkpoint MODEL.ckpt: without trained weights the "
                            f"stems would be noise (to try the pipeline with random weights: --checkpoint "
                            f"{RANDOM_WEIGHTS})")
    random_weights = args.checkpoint == RANDOM_WEIGHTS and not os.path.exists(RANDOM_WEIGHTS)
    checkpoint = None if random_weights else args.checkpoint
    buses = [b.strip() for b in args.buses.split(",")] if args.buses else None
    if buses is not None and (not all(buses) or len(set(buses)) != len(buses)):
        raise SettingsError(f"--buses {args.buses}: expected distinct names separated by commas")
    if args.rig:
        from bridge.plugin.rig import load_rig

        spec = load_rig(args.rig)
        overrides = _engine_overrides(args, spec.config.sample_rate)
        for key in ("device", "precision"):
            if getattr(args, key) is not None:
                overrides[key] = getattr(args, key)
        sep = StemSeparator.from_rig(args.rig, trust_checkpoint=args.trust_checkpoint, latency=args.latency,
                                     **overrides)
        if buses is not None and buses != sep.mixer.bus_names:
            raise SettingsError(f"--buses {args.buses}: the rig defines its buses ({', '.join(sep.mixer.bus_names)})")
        info = {"rig": os.path.abspath(args.rig), "config": os.path.abspath(spec.config.path)
                if getattr(spec.config, "path", None) else None,
                "checkpoint": spec.checkpoint}
    else:
        config = load_config(args.config)
        overrides = _engine_overrides(args, config.sample_rate)
        loaded = load_model(args.config, checkpoint, device=args.device or "auto",
                            precision=args.precision or "auto", trust=args.trust_checkpoint,
                            model_type=args.model_type)
        sep = StemSeparator(loaded.model, loaded.config, latency=args.latency or "balanced",
                            buses=buses or ("main",), precision=loaded.precision, **overrides)
        info = {"config": os.path.abspath(args.config),
                "checkpoint": os.path.abspath(checkpoint) if checkpoint else None}
        if random_weights:
            info["weights"] = "random (--checkpoint random): not a separation"
    _apply_mixer_flags(sep, args)
    return sep, info


def _remote_separator(args: argparse.Namespace):
    """The separator whose model runs on a separation service (``--remote``)."""
    from bridge.plugin.separator import StemSeparator
    from streamer.errors import SettingsError

    given = [f for f in ("rig", "config", "checkpoint", "device", "precision", "model_type", "latency", "window")
             if getattr(args, f, None) is not None]
    if given:
        raise SettingsError(f"--remote runs the service's model: drop --{given[0].replace('_', '-')} (the service "
                            "sets the model, its window and precision; --hop and --lookahead may be given)")
    token = args.token or os.environ.get("STEMSTREAM_TOKEN")
    if not token:
        raise SettingsError("--remote needs the service's token: --token T or $STEMSTREAM_TOKEN")
    buses = [b.strip() for b in args.buses.split(",")] if args.buses else ["main"]
    if not all(buses) or len(set(buses)) != len(buses):
        raise SettingsError(f"--buses {args.buses}: expected distinct names separated by commas")
    try:
        from streamer.remote.host import RemoteLink
    except ImportError as exc:
        raise SettingsError(f"--remote needs the serve extra (pip install 'stemstream[serve]'): {exc}") from None
    served, _ = RemoteLink(args.remote, token, args.model_name, args.wire, args.tls_ca).probe(pings=1)
    overrides: dict = {"wire": args.wire}
    if args.tls_ca is not None:
        overrides["tls_ca"] = args.tls_ca
    if args.model_name:
        overrides["model"] = args.model_name
    residual = residual_value(args.residual) if args.residual is not None else None
    kwargs = {} if args.residual is None else {"residual": residual}
    sep = StemSeparator(remote=args.remote, token=token, buses=buses, **kwargs, **overrides,
                        **_remote_lengths(args, served.sample_rate))
    _apply_mixer_flags(sep, args)
    link = sep.engine
    info = {"remote": args.remote, "model": args.model_name, "config": None, "checkpoint": None,
            "wire": args.wire, "round_trips_ms": [round(t, 2) for t in getattr(link, "round_trips_ms", [])],
            "network_allowance_ms": round(1000.0 * (sep.engine.compute_allowance - sep.engine.hop)
                                          / sep.sample_rate, 1)}
    return sep, info


def _remote_rig_separator(args: argparse.Namespace):
    """``--rig R`` whose ``model: {remote: URL, token_env: NAME}`` runs on a separation service."""
    from bridge.plugin.rig import load_rig
    from bridge.plugin.separator import StemSeparator
    from streamer.errors import SettingsError

    given = [f for f in ("checkpoint", "device", "precision", "model_type", "latency", "window", "model_name")
             if getattr(args, f, None) is not None]
    if given:
        raise SettingsError(f"the rig {args.rig} runs its model on a service (model.remote): drop "
                            f"--{given[0].replace('_', '-')} (the service sets the model, its window and precision; "
                            "--hop and --lookahead may be given)")
    spec = load_rig(args.rig, token=args.token)
    overrides = _remote_lengths(args, spec.config.sample_rate)
    if args.tls_ca is not None:
        overrides["tls_ca"] = args.tls_ca
    if args.wire != "fp32":
        overrides["wire"] = args.wire
    if args.residual is not None:
        overrides["residual"] = residual_value(args.residual)
    sep = StemSeparator.from_rig(args.rig, token=args.token, **overrides)
    buses = [b.strip() for b in args.buses.split(",")] if args.buses else None
    if buses is not None and buses != sep.mixer.bus_names:
        raise SettingsError(f"--buses {args.buses}: the rig defines its buses ({', '.join(sep.mixer.bus_names)})")
    _apply_mixer_flags(sep, args)
    r = spec.remote
    info = {"rig": os.path.abspath(args.rig), "remote": r.url, "model": r.name, "config": None, "checkpoint": None,
            "wire": overrides.get("wire", r.wire),
            "round_trips_ms": [round(t, 2) for t in getattr(sep.engine, "round_trips_ms", [])],
            "network_allowance_ms": round(1000.0 * (sep.engine.compute_allowance - sep.engine.hop)
                                          / sep.sample_rate, 1)}
    return sep, info


def _remote_lengths(args: argparse.Namespace, rate: int) -> dict:
    """--hop/--lookahead (seconds) and --network-allowance (ms) in samples at the served model's rate."""
    out: dict = {}
    for key in ("hop", "lookahead"):
        value = getattr(args, key)
        if value is not None:
            out[key] = int(round(value * rate))
    if args.network_allowance is not None:
        out["network_allowance"] = int(round(args.network_allowance / 1000.0 * rate))
    return out


def _apply_mixer_flags(sep, args: argparse.Namespace) -> None:
    """--mute, --solo and --gain on the first bus: one mixer state, applied as one change."""
    from bridge.mix.state import MixerState
    from streamer.errors import SettingsError

    state = MixerState.snapshot(sep.mixer)
    changes = [(f"--{flag} {stem}", stem, {flag: True}) for flag in ("mute", "solo")
               for stem in getattr(args, flag)]
    changes += [(f"--gain {text}", *_stem_db_change(text)) for text in args.gain]
    for where, stem, control in changes:
        if stem not in sep.stem_names:
            raise SettingsError(f"{where}: no such stem; stems: {', '.join(sep.stem_names)}")
        try:
            state = state.with_stem(stem, **control)
        except ValueError as exc:
            raise SettingsError(f"{where}: expected {exc}") from None
    state.apply(sep.mixer)


def _stem_db_change(text: str) -> tuple[str, dict]:
    stem, db = _stem_db(text)
    return stem, {"gain_db": db}


def is_stem_file(path: str) -> bool:
    """Whether ``path`` is a stem file: named ``.stem.mp4``/``.stem.m4a``, or an MP4 holding NI's stem box."""
    from streamer.errors import StemstreamError
    from streamer.formats.nistem import is_stem_path, read_stem_metadata

    if is_stem_path(path):
        return True
    if not path.lower().endswith((".mp4", ".m4a")):
        return False
    try:
        read_stem_metadata(path)
        return True
    except (StemstreamError, OSError, ValueError):
        return False


def build_deck(args: argparse.Namespace):
    """A stem file played as it is (no model): the separator over its stems, and what session.json says."""
    from bridge.plugin.separator import StemSeparator
    from streamer.errors import SettingsError

    for flag in ("device", "precision", "latency", "window", "hop", "lookahead", "residual", "model_type"):
        if getattr(args, flag, None) is not None:
            raise SettingsError(f"--{flag.replace('_', '-')} sets up a model, and a stem file plays its own stems "
                                "with none (give --config/--checkpoint or --rig to separate its mix instead)")
    buses = [b.strip() for b in args.buses.split(",")] if args.buses else ["main"]
    if not all(buses) or len(set(buses)) != len(buses):
        raise SettingsError(f"--buses {args.buses}: expected distinct names separated by commas")
    sep = StemSeparator.from_stem_file(args.input_file, buses=buses, loop=args.loop)
    _apply_mixer_flags(sep, args)
    found = sep.stem_file
    info = {"stem_file": os.path.abspath(args.input_file), "config": None, "checkpoint": None,
            "stem_file_names": list(found.names), "codec": found.codec, "tags": dict(found.tags)}
    return sep, info


def _demo_model(args: argparse.Namespace) -> str:
    """No model given: the bundled demo model (as ``stemstream demo``); returns the line that says so."""
    from streamer.assets import DEMO_CHECKPOINT, DEMO_CONFIG

    args.config, args.checkpoint = DEMO_CONFIG, DEMO_CHECKPOINT
    return ("no model given: playing the bundled demo model (a small 4-stem BS-RoFormer: vocals, drums, bass, "
            "other); use your own with --config MODEL.yaml --checkpoint MODEL.ckpt, or --rig RIG.yaml")


def _web_settings(args: argparse.Namespace) -> dict | None:
    """The browser mixer's settings: --web/--web-host/--web-allow/--web-token over the rig's web section;
    None without either. Checked here, before the show starts (the port is bound by the session)."""
    from bridge.web.server import check_options, check_token
    from streamer.errors import SettingsError

    rig = None
    if args.rig:
        from bridge.plugin.rig import web_settings

        rig = web_settings(args.rig)
    if args.web is None and rig is None:
        if args.web_host is not None or args.web_allow or args.web_token is not None:
            raise SettingsError("--web-host, --web-allow and --web-token go with --web PORT")
        return None
    rig = rig or {}
    out = {"port": args.web if args.web is not None else rig["port"],
           "host": args.web_host if args.web_host is not None else rig.get("host", "127.0.0.1"),
           "allow": list(args.web_allow) or list(rig.get("allow", [])), "token": args.web_token}
    check_token(out["token"])
    check_options(out["host"], out["allow"])
    return out


def cmd_live(args: argparse.Namespace) -> int:
    from bridge.live.session import StopSignals, Stopped, say

    with StopSignals() as signals:
        try:
            return _live(args, signals)
        except Stopped as stop:   # before the stream ran: nothing was played, nothing is left behind
            say(f"stopped: {stop.reason} before the show started; nothing was played or recorded")
            return 0


def _live(args: argparse.Namespace, signals) -> int:
    from bridge.live.path import parse_channels
    from bridge.live.recorder import check_folder
    from bridge.live.session import LiveOptions, LiveSession, format_summary, say
    from streamer.errors import AudioError, SettingsError

    if args.loop and not args.input_file:
        raise SettingsError("--loop goes with --input-file")
    if args.input_file and (args.input or args.in_channels):
        raise SettingsError("--input-file replaces the input device: drop --input/--in-channels")
    if args.input_file and not os.path.isfile(args.input_file):
        raise SettingsError(f"input file not found: {args.input_file}")
    in_channels = parse_channels(args.in_channels) if args.in_channels else None
    web = _web_settings(args)   # before the model loads: a bad flag is one line at once
    if args.record:
        check_folder(args.record)   # before the model loads: a take there is refused (a killed one recovered)
    midi_prepared = midi.check_args(args)   # before the model loads: the MIDI flags and the mapping file
    has_model = bool(args.rig or args.config or args.checkpoint or args.remote)
    stem_file = bool(args.input_file) and is_stem_file(args.input_file)
    input_audio = None
    if stem_file and not has_model:
        sep, info = build_deck(args)   # the file's own stems: no model, zero latency
        input_audio = sep.stem_file.master
        say(f"stem file: playing its own {len(sep.stem_names)} stems ({', '.join(sep.stem_names)}) with no model and "
            "no latency; give a model (--config/--checkpoint or --rig) to separate its mix instead")
    else:
        if not has_model:
            say(_demo_model(args))
        sep, info = build_separator(args)
        if stem_file:   # a model given with a stem file: it separates the file's master (mix) track
            from streamer.audio import resample
            from streamer.formats.nistem import read_stem_file

            found = read_stem_file(args.input_file)
            input_audio = found.master if found.rate == sep.sample_rate else resample(found.master, found.rate,
                                                                                      sep.sample_rate)
            info["input"] = "the stem file's master track, separated by the model (its own stems unused)"
            say(f"stem file with a model: the model separates the file's master track; its own stems are not used")
    if info.get("weights"):
        say("WARNING: --checkpoint random: the model's weights are RANDOM, so the stems are not a separation; this "
            "run shows the pipeline end to end")
    session = None
    try:
        options = LiveOptions(input=args.input, output=args.output, in_channels=in_channels,
                              input_file=args.input_file, input_audio=input_audio, loop=args.loop,
                              blocksize=args.blocksize,
                              seconds=args.seconds, routes=list(args.route), record=args.record, model=info)
        if args.osc is None and (args.osc_allow or args.osc_tcp or args.osc_host != "127.0.0.1"):
            raise SettingsError("--osc-host, --osc-allow and --osc-tcp go with --osc PORT")
        signals.hold()    # from here a signal is acted on where stopping is safe
        session = LiveSession(sep, options)
        signals.check()
        if args.osc is not None:
            try:
                session.start_osc(args.osc, host=args.osc_host, allow=args.osc_allow, tcp=args.osc_tcp)
            except BaseException:
                session.close()   # nothing played: the recording folder and the worker go away
                raise
        if web is not None:
            from bridge.web.surface import WebSurface

            try:
                surface = session.add_surface(WebSurface(sep, **web))
            except BaseException:
                session.close()
                raise
            say(f"browser mixer: {surface.url}  (open it on a phone, or scan:)")
            say(surface.qr_for(sys.stdout))
        try:
            for surface in midi.start(args, session, midi_prepared):
                say(surface.label)
        except BaseException:
            session.close()
            raise
        say(f"stemstream live: {session.input_label} -> {session.out_dev.label()} at {session.device_rate} Hz, "
            f"latency {session.latency_ms:.1f} ms" + (f", OSC on {session.osc}" if session.osc else "")
            + "; warming up...")
        summary = session.run(ui=not args.no_ui, signals=signals)
    except BaseException:
        if session is not None:
            session.close()   # idempotent: nothing played leaves no take; the worker stops
        raise
    finally:
        if session is None:
            sep.engine.stop()
    say(format_summary(summary))
    if summary["stopped_by"] == "error":
        from bridge.live.devices import DeviceError

        raise DeviceError(summary["error"] or "the session ended with an error")
    rec = summary.get("recording") or {}
    if rec.get("error") or rec.get("session_json_error"):
        raise AudioError(f"the recording in {rec['folder']} is incomplete: "
                         + "; ".join(e for e in (rec.get("error"), rec.get("session_json_error")) if e))
    return 0

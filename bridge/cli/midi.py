"""``stemstream midi-ports`` (the MIDI inputs and outputs) and the MIDI flags of ``stemstream live``
(``--midi NAME``, ``--midi-virtual [NAME]``, ``--midi-api``, ``--midi-map FILE``): see :mod:`bridge.midi`."""
from __future__ import annotations

import argparse
import json
import os

API_CHOICES = ["alsa", "jack", "coremidi", "winmm"]


def register(sub) -> None:
    mp = sub.add_parser("midi-ports", help="list the MIDI input and output ports",
                        description="List the MIDI ports (python-rtmidi): inputs (controllers that send) and outputs "
                                    "(where feedback goes). `stemstream live --midi NAME` takes a port's name or a "
                                    "part of it. On Linux the JACK MIDI ports are listed when the ALSA sequencer is "
                                    "missing, else ALSA's; --midi-api chooses.")
    mp.add_argument("--midi-api", choices=API_CHOICES, default=None,
                    help="MIDI API (default: on Linux jack without an ALSA sequencer, else alsa)")
    mp.add_argument("--json", action="store_true", help="print JSON instead of a list")
    mp.set_defaults(func=cmd_midi_ports)


def add_live_args(parser) -> None:
    """The MIDI flags of ``stemstream live``."""
    g = parser.add_argument_group("MIDI controllers (see the README's MIDI section)")
    g.add_argument("--midi", action="append", default=[], metavar="NAME",
                   help="control the mixer from the MIDI input port NAME (exact, or the only port containing it; "
                        "see `stemstream midi-ports`), with feedback to its output when it has one; repeatable")
    g.add_argument("--midi-virtual", nargs="?", const="stemstream", default=None, metavar="NAME",
                   help="create a virtual MIDI port NAME (default stemstream: NAME:in, and NAME:out for feedback) "
                        "that other programs connect to")
    g.add_argument("--midi-api", choices=API_CHOICES, default=None,
                   help="MIDI API (default: JACK MIDI when the audio runs on JACK or there is no ALSA sequencer, "
                        "else ALSA on Linux)")
    g.add_argument("--midi-map", default=None, metavar="FILE",
                   help="mapping file (default: the rig's midi: section, else one saved by MIDI learn, else the "
                        "Korg nanoKONTROL2 factory map); MIDI learn ('l' in the mixer) writes to it")


def cmd_midi_ports(args: argparse.Namespace) -> int:
    from bridge.midi import ports

    api = ports.choose_api(args.midi_api, audio_on_jack=bool(os.environ.get("JACK_DEFAULT_SERVER")))
    inputs, outputs = ports.list_ports(api)
    if args.json:
        print(json.dumps({"api": api, "inputs": inputs, "outputs": outputs}, indent=2))
        return 0
    print(f"MIDI API: {api}")
    print("inputs (stemstream live --midi NAME):")
    for name in inputs:
        print(f"  {name}")
    if not inputs:
        print("  none")
    print("outputs (feedback):")
    for name in outputs:
        print(f"  {name}")
    if not outputs:
        print("  none")
    return 0


def wanted(args: argparse.Namespace) -> bool:
    return bool(args.midi or args.midi_virtual)


def check_args(args: argparse.Namespace):
    """Before the model loads: the flags fit together and the mapping file reads. Returns (mapping, learn
    path) or None when no MIDI was asked for (the rig's ``midi:`` section is read here too)."""
    from bridge.midi import DEFAULT_MAP
    from bridge.midi.mapping import load_mapping
    from bridge.midi.surface import default_user_map
    from streamer.errors import SettingsError

    if not wanted(args):
        if args.midi_map or args.midi_api:
            raise SettingsError("--midi-map and --midi-api go with --midi NAME or --midi-virtual")
        return None
    if args.midi_map:
        return load_mapping(args.midi_map), args.midi_map
    if getattr(args, "rig", None):
        from bridge.plugin.rig import rig_midi

        found = rig_midi(args.rig)
        if found is not None:
            return found, found.path or default_user_map()
    user = default_user_map()
    if os.path.isfile(user):
        return load_mapping(user), user
    return load_mapping(DEFAULT_MAP), user


def surfaces(args: argparse.Namespace, sep, mapping, learn_path: str, audio_on_jack: bool) -> list:
    """The MIDI surfaces the flags ask for (not started): one per ``--midi``, one for ``--midi-virtual``."""
    from bridge.control.model import ControlModel
    from bridge.midi.surface import MidiSurface

    model = ControlModel.of(sep)
    out = []
    specs = [("port", name) for name in args.midi] + ([("virtual", args.midi_virtual)] if args.midi_virtual else [])
    for i, (kind, name) in enumerate(specs):
        out.append(MidiSurface(model, mapping, api=args.midi_api, audio_on_jack=audio_on_jack,
                               name="midi" if i == 0 else f"midi{i + 1}", learn_path=learn_path, **{kind: name}))
    return out


def start(args: argparse.Namespace, session, prepared) -> list:
    """Open the MIDI surfaces on ``session`` (each closed with it); returns them."""
    if prepared is None:
        return []
    mapping, learn_path = prepared
    on_jack = "jack" in str(getattr(session.out_dev, "hostapi", "")).lower()
    started = []
    for surface in surfaces(args, session.sep, mapping, learn_path, on_jack):
        session.add_surface(surface)
        started.append(surface)
    return started

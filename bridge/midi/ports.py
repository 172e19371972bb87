"""MIDI ports: which backend, which ports there are, and opening them.

The backend is python-rtmidi (the library mido's ``rtmidi`` backend wraps; used directly here so that every
raw message, running status and SysEx included, can be seen and counted, and so that one client lists the
ports however often they are polled). Its APIs: ALSA and JACK on Linux, CoreMIDI on macOS, Windows MM.

Which API (:func:`choose_api`): ``--midi-api`` when given; on Linux JACK MIDI when the audio runs on JACK
or the ALSA sequencer (``/dev/snd/seq``) is missing (containers and CI have none), else ALSA; elsewhere the
platform's own. A port is named as ``--input`` names an audio device (:func:`find_port`): its exact name
(ignoring case), else the only port whose name contains it; anything else is one error listing the ports.
The output for feedback is the input's twin (:func:`matching_output`): the output of the same name, else the
only output that contains the name asked for; a controller without one gets no feedback.

Inputs are read by polling (``MidiIn.get_message`` from a thread of ours), never through python-rtmidi's
input callback. On JACK that callback runs in JACK's process thread and must take Python's GIL there: a
busy Python thread then makes the MIDI client (and with it the whole JACK graph, the audio included) late,
and closing the port while a message is in flight is unsafe (the callback's data is freed while JACK's
thread still holds it, and ``jack_client_close`` cancels that thread while it waits for the GIL, which
leaves the GIL's lock held: the process hangs or crashes; seen in this project's tests on unplug and quit).
Without a callback JACK's thread only queues the message in RtMidi's bounded queue (``BACKEND_QUEUE``).
"""
from __future__ import annotations

import contextlib
import os
import sys

from streamer.errors import SettingsError

INSTALL_HINT = ("MIDI needs python-rtmidi: pip install 'python-rtmidi>=1.5.8,<1.6' (on Linux also the Debian "
                "packages libasound2 and libjack-jackd2-0; `make install` installs them)")
API_NAMES = {"alsa": "API_LINUX_ALSA", "jack": "API_UNIX_JACK", "coremidi": "API_MACOSX_CORE",
             "winmm": "API_WINDOWS_MM"}
CLIENT = "stemstream"          # the client name of our own ports (left out of the listings)
BACKEND_QUEUE = 4096           # messages RtMidi holds for our reader between two polls


def backend():
    """The python-rtmidi module, or a SettingsError saying what to install."""
    try:
        import rtmidi
    except ImportError as exc:
        raise SettingsError(f"{INSTALL_HINT} ({exc})") from None
    return rtmidi


def compiled_apis() -> list[str]:
    """The API names this python-rtmidi was built with (``alsa``, ``jack``, ...)."""
    rt = backend()
    have = set(rt.get_compiled_api())
    return [name for name, attr in API_NAMES.items() if getattr(rt, attr, None) in have]


def choose_api(name: str | None = None, audio_on_jack: bool = False) -> str:
    """The API to use (see the module docstring); a name not built in is a SettingsError."""
    apis = compiled_apis()
    if name:
        name = name.lower()
        if name not in API_NAMES:
            raise SettingsError(f"--midi-api {name}: expected one of {', '.join(API_NAMES)}")
        if name not in apis:
            raise SettingsError(f"--midi-api {name}: this python-rtmidi has no {name} support (it has: "
                                f"{', '.join(apis) or 'none'})")
        return name
    if sys.platform.startswith("linux"):
        if "jack" in apis and (audio_on_jack or not os.path.exists("/dev/snd/seq") or "alsa" not in apis):
            return "jack"
        if "alsa" in apis:
            return "alsa"
    for name in ("coremidi", "winmm", "alsa", "jack"):
        if name in apis:
            return name
    raise SettingsError(f"{INSTALL_HINT}: this python-rtmidi has no MIDI API")


def _api_id(name: str) -> int:
    return getattr(backend(), API_NAMES[name])


def _why(api: str, exc: Exception) -> str:
    text = str(exc).strip()
    if api == "jack":
        return (f"JACK MIDI needs a running JACK server (start jackd, or choose --midi-api alsa): {text}")
    if api == "alsa":
        return (f"ALSA MIDI needs the ALSA sequencer (/dev/snd/seq; modprobe snd-seq), or choose --midi-api jack "
                f"with a JACK server running: {text}")
    return f"{api} MIDI: {text}"


def _jack_server_seen() -> bool:
    """Whether jackd's socket for the default server is there (jackd2 on Linux). PipeWire's libjack has no
    such socket, so this only decides whether libjack's own lines may be silenced, never whether to try."""
    name = os.environ.get("JACK_DEFAULT_SERVER") or "default"
    return os.path.exists(f"/dev/shm/jack_{name}_{os.getuid()}_0") if hasattr(os, "getuid") else True


@contextlib.contextmanager
def _quiet_stderr(quiet: bool):
    """libjack prints several lines to the process's stderr when no server runs; with ``quiet`` they go to
    /dev/null for the moment it tries (set-up time, before the show), so the user sees one error line."""
    if not quiet:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def new_client(kind: str, api: str, name: str = CLIENT, queue_size: int = BACKEND_QUEUE):
    """A python-rtmidi ``MidiIn``/``MidiOut`` (``kind`` "in"/"out") on ``api``; SettingsError when the API
    cannot start (no JACK server, no ALSA sequencer)."""
    rt = backend()
    quiet = (api == "jack" and not _jack_server_seen()) or (api == "alsa" and not os.path.exists("/dev/snd/seq"))
    try:
        with _quiet_stderr(quiet):
            if kind == "in":
                return rt.MidiIn(_api_id(api), name=name, queue_size_limit=queue_size)
            return rt.MidiOut(_api_id(api), name=name)
    except (rt.RtMidiError, RuntimeError, OSError) as exc:
        raise SettingsError(_why(api, exc)) from None


class PortLister:
    """Lists the ports of one API with one client per direction (kept, so polling costs no new client)."""

    def __init__(self, api: str):
        self.api = api
        self._in = new_client("in", api, f"{CLIENT}-list")
        self._out = new_client("out", api, f"{CLIENT}-list")

    def inputs(self) -> list[str]:
        return [p for p in self._in.get_ports() if not _ours(p)]

    def outputs(self) -> list[str]:
        return [p for p in self._out.get_ports() if not _ours(p)]

    def close(self) -> None:
        for client in (self._in, self._out):
            try:
                client.delete()
            except Exception:  # noqa: BLE001 - closing what may be half gone
                pass


def _ours(port: str) -> bool:
    """A port of this process's own MIDI clients (not a controller)."""
    return port.split(":", 1)[0].startswith((f"{CLIENT}-midi", f"{CLIENT}-list"))


def list_ports(api: str) -> tuple[list[str], list[str]]:
    """(inputs, outputs) of ``api``."""
    lister = PortLister(api)
    try:
        return lister.inputs(), lister.outputs()
    finally:
        lister.close()


def find_port(query: str, names: list[str], kind: str = "input", api: str = "") -> str:
    """The port ``query`` names: its exact name (ignoring case), else the only one containing it."""
    q = query.strip().lower()
    listing = f"MIDI {kind}s{f' ({api})' if api else ''}: " + (", ".join(repr(n) for n in names) or "none")
    if not q:
        raise SettingsError(f"--midi: empty port name; {listing}")
    exact = [n for n in names if n.lower() == q]
    if len(exact) == 1:
        return exact[0]
    part = [n for n in names if q in n.lower()]
    if len(part) == 1:
        return part[0]
    if not part:
        raise SettingsError(f"--midi {query}: no MIDI {kind} port has that name; {listing} (see `stemstream "
                            f"midi-ports`)")
    raise SettingsError(f"--midi {query}: {len(part)} MIDI {kind} ports match ({', '.join(repr(n) for n in part)}); "
                        f"give more of the name")


def matching_output(input_name: str, query: str, outputs: list[str]) -> str | None:
    """The output of the controller whose input is ``input_name`` (None: it has none we can tell)."""
    if input_name in outputs:
        return input_name
    q = query.strip().lower()
    part = [n for n in outputs if q in n.lower()]
    if len(part) == 1:
        return part[0]
    client = input_name.split(":", 1)[0]
    same = [n for n in part if n.split(":", 1)[0] == client]
    if len(same) == 1:
        return same[0]
    swapped = input_name.replace("capture", "playback").replace("(in)", "(out)").replace(" in", " out")
    return swapped if swapped in outputs else None


def open_input(api: str, name: str, client: str = f"{CLIENT}-midi"):
    """A MidiIn on the port ``name``, to be read with ``get_message`` (SysEx and clock let through, to be
    counted; active sensing not)."""
    midi_in = new_client("in", api, client)
    try:
        ports = midi_in.get_ports()
        if name not in ports:
            raise SettingsError(f"MIDI input {name!r} is gone")
        midi_in.ignore_types(sysex=False, timing=False, active_sense=True)
        midi_in.open_port(ports.index(name), "in")
    except BaseException:
        midi_in.delete()
        raise
    return midi_in


def open_output(api: str, name: str, client: str = f"{CLIENT}-midi"):
    midi_out = new_client("out", api, client)
    try:
        ports = midi_out.get_ports()
        if name not in ports:
            raise SettingsError(f"MIDI output {name!r} is gone")
        midi_out.open_port(ports.index(name), "out")
    except BaseException:
        midi_out.delete()
        raise
    return midi_out


def open_virtual(api: str, name: str):
    """A virtual input and output named ``name`` that other programs connect to (``name:in``, ``name:out``
    on JACK). Windows MM has no virtual ports."""
    if api == "winmm":
        raise SettingsError("--midi-virtual: Windows has no virtual MIDI ports (use a loopback driver such as "
                            "loopMIDI and --midi NAME)")
    midi_in = new_client("in", api, name)
    midi_in.ignore_types(sysex=False, timing=False, active_sense=True)
    midi_in.open_virtual_port("in")
    midi_out = new_client("out", api, name)
    midi_out.open_virtual_port("out")
    return midi_in, midi_out


def read(midi_in, limit: int) -> list:
    """Up to ``limit`` messages waiting in ``midi_in`` (python-rtmidi's ``(bytes, delta_time)`` pairs)."""
    got = []
    while len(got) < limit:
        message = midi_in.get_message()
        if message is None:
            break
        got.append(message)
    return got


def close(client) -> None:
    """Close a MidiIn/MidiOut, whatever state its port is in. Its object must not be used afterwards."""
    if client is None:
        return
    try:
        client.close_port()
        client.delete()
    except Exception:  # noqa: BLE001
        pass


__all__ = ["BACKEND_QUEUE", "INSTALL_HINT", "PortLister", "backend", "choose_api", "compiled_apis", "find_port", "list_ports",
           "matching_output", "open_input", "open_output", "open_virtual", "read", "close"]

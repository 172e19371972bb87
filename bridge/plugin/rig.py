"""Rig files: one YAML that sets up a StemSeparator (model, engine, stems, effects, buses).

```yaml
model:
  config: ../../streamer/assets/demo/demo_bs_roformer_64x2.yaml   # paths are relative to the rig file
  checkpoint: ../../streamer/assets/demo/demo_bs_roformer_64x2.ckpt  # optional (random weights without it)
  # no trust_checkpoint: a file cannot opt in to full pickle loading (see below)
engine:
  preset: low              # low | balanced | offline-exact
  window: 1.0              # seconds; window/hop/lookahead override the preset
  hop: 0.25
  lookahead: 0.25
  crossfade_ms: 10
  residual: spread         # what the stems miss: spread over them, or a stem's name (null: none; bridge.plugin.stems)
  device: cpu
  precision: fp32
stems:                     # initial controls of the first bus, and per-stem effects
  vocals:
    gain_db: 0             # -120..24 dB, or -.inf (silence)
    effects:
      - {plugin: Reverb, room_size: 0.6}
      - {vst3: /path/to/plugin.vst3, parameters: {mix: 0.5}}
buses:                     # named outputs with their own per-stem controls
  main: {vocals: {mute: true}}
  monitor: {vocals: {gain_db: -10}}
output: main               # what process() returns: a bus or "stems"
scenes:                    # named complete states, recalled over OSC (/scene/<name> [fade s]); see bridge.mix.scenes
  karaoke: {vocals: {mute: true}}
  full: {}
web:                       # the browser mixer of `stemstream live` (--web/--web-host/--web-allow override it)
  port: 8080
  host: 0.0.0.0            # default 127.0.0.1 (this machine only); another address needs allow
  allow: [192.168.1.0/24]
midi: my-controller.yaml   # the MIDI mapping of `live --midi`: a file (relative to the rig) or inline (bridge.midi.mapping)
```

:func:`load_rig` reads and validates the whole file into a :class:`RigSpec` (loading the model's
config, building the effect plugins) without touching a model or a separator; every error names the
file, the key and what was expected (NaN is never a number here; ``-.inf`` is accepted for gains and means
silence). ``StemSeparator.from_rig`` builds the separator from the spec. The file is read within the
limits of :mod:`streamer.msst.yamlsafe` (64 KiB, aliases expanding to at most 10,000 values, 64 levels
of nesting), and messages quote values as short excerpts, so a hostile rig is one short error.

The model may instead run on a separation service (``stemstream serve``; needs the serve extra):

```yaml
model:
  remote: wss://gpu-box:8765      # ws:// or wss:// (TLS); the service's model, window and precision
  token_env: STEMSTREAM_TOKEN     # the environment variable holding the token (this is the default)
  name: vocals                    # optional: which of the service's models (default: its only one)
  wire: fp16                      # optional: fp32 (default) or fp16 on the wire
  tls_ca: ca.pem                  # optional: verify a wss:// service against this PEM file (relative to the rig)
engine: {hop: 0.25, lookahead: 0.25, residual: spread}   # only these: the service sets the rest
```

The token itself is never in the file (a ``token`` key is refused): it comes from the environment
variable ``token_env`` names, or from the caller (``--token``, ``from_rig(path, token=...)``).
:func:`load_rig` connects to the service once to read the served model's config (stems, rate), so an
unreachable service, a wrong token or a certificate that does not verify is one error naming the file.

Checkpoints are read with ``torch.load(weights_only=True)``. Only the person running the program can
allow full pickle loading (which runs whatever code the file holds): ``--trust-checkpoint`` on the
command line, ``StemSeparator.from_rig(path, trust_checkpoint=True)`` in Python. A rig is a file that
travels with the checkpoint, so a rig with the key ``model.trust_checkpoint`` (any value) is refused.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from streamer.errors import SettingsError, StemstreamError
from streamer.msst.config import Config, load_config
from streamer.msst.yamlsafe import excerpt, load_yaml
from streamer.stream.settings import DEFAULT_PRESET

from ..mix.mixer import RULES
from ..mix.scenes import Scene
from ..mix.state import MixerState
from .stems import DEFAULT_RESIDUAL, separator_stems

TOP_KEYS = {"model", "engine", "stems", "buses", "output", "scenes", "web", "midi"}
MODEL_KEYS = {"config", "checkpoint"}
WEB_KEYS = {"port", "host", "allow"}          # the browser mixer (stemstream live --web)
REMOTE_KEYS = {"remote", "token_env", "name", "wire", "tls_ca"}          # model: on a separation service
REMOTE_ENGINE_KEYS = {"hop", "lookahead", "residual"}                     # what a remote rig's engine may set
DEFAULT_TOKEN_ENV = "STEMSTREAM_TOKEN"
ENGINE_KEYS = {"preset", "window", "hop", "lookahead", "crossfade_ms", "residual", "device", "precision",
               "compute_allowance"}
CONTROL_KEYS = {"gain_db", "fader", "mute", "solo"}
STEM_KEYS = CONTROL_KEYS | {"effects"}
BUS_KEYS = {"gain_db", "fader", "mute"}   # a bus master's controls


class RigError(StemstreamError, ValueError):
    """A rig file that cannot be used; the message names the file and the key."""


@dataclass
class RigSpec:
    """A validated rig: everything a separator needs, with lengths already in samples."""

    path: str
    config: Config
    checkpoint: str | None
    preset: str
    residual: str | None
    engine: dict[str, Any]                                  # StreamEngine keywords (samples, device, ...)
    buses: list[str]
    output: str | None
    stem_controls: dict[str, dict[str, Any]] = field(default_factory=dict)   # first bus: stem -> controls
    stem_effects: dict[str, Any] = field(default_factory=dict)               # stem -> pedalboard.Pedalboard
    bus_controls: dict[str, dict[str, Any]] = field(default_factory=dict)    # bus -> {stem: controls, gain_db, mute}
    scenes: dict[str, Scene] = field(default_factory=dict)                   # name -> Scene (see bridge.mix.scenes)
    web: dict[str, Any] | None = None     # the browser mixer: {port, host, allow} (see web_settings)
    remote: "RigRemote | None" = None     # the model runs on a separation service (config: the served one's)
    midi: Any = None                      # the rig's MIDI mapping (bridge.midi.mapping.Mapping), if it has one

    def initial_state(self, stems: list[str], buses: list[str]) -> MixerState:
        """The mixer state the rig starts with (its ``stems:`` controls on the first bus, its ``buses:``)."""
        state = MixerState.unity(stems, buses)
        for stem, controls in self.stem_controls.items():
            state = state.with_stem(stem, None, **controls)
        for bus, controls in self.bus_controls.items():
            state = state.with_bus(bus, **{k: v for k, v in controls.items() if k in BUS_KEYS})
            for stem, values in controls.items():
                if stem not in BUS_KEYS:
                    state = state.with_stem(stem, bus, **values)
        return state


@dataclass(frozen=True)
class RigRemote:
    """A rig's ``model: {remote: ...}``: where the model runs and how to reach it (the token is not kept
    in the file: it was read from the environment variable ``token_env`` or given by the caller)."""

    url: str
    token: str
    token_env: str
    name: str | None = None
    wire: str = "fp32"
    tls_ca: str | None = None


def remote_url(path: str | os.PathLike) -> str | None:
    """The rig's ``model.remote`` URL, or None for a local model (reads the file, connects nowhere)."""
    data = _read(os.fspath(path))
    model = data.get("model") if isinstance(data, dict) else None
    remote = model.get("remote") if isinstance(model, dict) else None
    return remote if isinstance(remote, str) else None


def _remote_model(path: str, model: dict, resolve, token: str | None) -> tuple[RigRemote, Config]:
    """Validate a rig's remote model section and read the served model's config from the service."""
    if "token" in model:
        raise RigError(f"{path}: model.token: a rig file does not hold the service's token; name the environment "
                       f"variable that holds it with model.token_env (default {DEFAULT_TOKEN_ENV}), or give --token")
    model = _check_keys(f"{path}: model", model, REMOTE_KEYS)
    for key in REMOTE_KEYS:
        value = model.get(key)
        if value is not None and not (isinstance(value, str) and 0 < len(value) <= 4096 and value.isprintable()):
            raise RigError(f"{path}: model.{key}: expected a string, got {excerpt(value)}")
    url = model["remote"]
    if url.split("://", 1)[0].lower() not in ("ws", "wss") or "://" not in url:
        raise RigError(f"{path}: model.remote: expected ws://HOST:PORT or wss://HOST:PORT (TLS), got {excerpt(url)}")
    wire = model.get("wire") or "fp32"
    if wire not in ("fp32", "fp16"):
        raise RigError(f"{path}: model.wire: expected fp32 or fp16, got {excerpt(wire)}")
    env = model.get("token_env") or DEFAULT_TOKEN_ENV
    token = token or os.environ.get(env)
    if not token:
        raise RigError(f"{path}: model.token_env: the environment variable {env} is not set (it holds the "
                       "service's token; or give --token)")
    tls_ca = resolve(model["tls_ca"]) if model.get("tls_ca") else None
    remote = RigRemote(url=url, token=token, token_env=env, name=model.get("name"), wire=wire, tls_ca=tls_ca)
    try:
        from streamer.msst.config import config_from_dict
        from streamer.remote.host import RemoteLink
    except ImportError as exc:
        raise RigError(f"{path}: model.remote needs the serve extra (pip install 'stemstream[serve]'): {exc}") from None
    try:
        info, _ = RemoteLink(url, token, remote.name, wire, tls_ca).probe(pings=1)
    except StemstreamError as exc:
        raise RigError(f"{path}: model.remote: {exc}") from None
    return remote, config_from_dict(info.config, path=f"{url} ({info.name})")


def _web(path: str, data: Any) -> dict[str, Any] | None:
    """A rig's ``web:`` section (the browser mixer of ``stemstream live``): ``port`` (0-65535), ``host``
    (default 127.0.0.1), ``allow`` (a network or address, or a list of them); None without one."""
    if data is None:
        return None
    web = _check_keys(f"{path}: web", data, WEB_KEYS)
    port = web.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise RigError(f"{path}: web.port: expected a port number 0 to 65535 (0: any free port), got {excerpt(port)}")
    host = web.get("host") or "127.0.0.1"
    _short_text(f"{path}: web.host", host)
    allow = web.get("allow") or []
    if isinstance(allow, str):
        allow = [allow]
    if not isinstance(allow, list) or not all(isinstance(a, str) and 0 < len(a) <= 64 for a in allow):
        raise RigError(f"{path}: web.allow: expected a network or address, or a list of them (e.g. 192.168.1.0/24), "
                       f"got {excerpt(web.get('allow'))}")
    return {"port": port, "host": str(host), "allow": list(allow)}


def web_settings(path: str | os.PathLike) -> dict[str, Any] | None:
    """The rig's ``web:`` section, checked (reads the file only: no model is loaded); None without one."""
    path = os.fspath(path)
    data = _read(path)
    return _web(path, data.get("web")) if isinstance(data, dict) else None


def _check_keys(where: str, data: Any, allowed: set[str]) -> dict:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RigError(f"{where}: expected a mapping with keys {', '.join(sorted(allowed))}, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed, key=str)
    if unknown:
        shown = ", ".join(_name(k) for k in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise RigError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {shown}; "
                       f"expected {', '.join(sorted(allowed))}")
    return data


def _name(key: Any) -> str:
    """A key as the user wrote it when it is a short string, else a short excerpt of it."""
    return key if isinstance(key, str) and len(key) <= 60 and key.isprintable() else excerpt(key)


def _short_text(where: str, value: Any) -> None:
    """Names (a preset, a device, a stem, a bus) are short strings: refuse others before they reach a message."""
    if value is not None and not (isinstance(value, str) and len(value) <= 200):
        raise RigError(f"{where}: expected a name, got {excerpt(value)}")


def _number(where: str, value: Any, low: float | None = None, high: float | None = None,
            minus_inf: bool = False) -> float:
    """A finite number in [low, high] (``minus_inf``: -inf is accepted too); NaN and other infinities never."""
    accepted = (f"{low} to {high}" if high is not None else f">= {low}") if low is not None else "a finite number"
    if minus_inf:
        accepted = f"-.inf (silence) or {accepted}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RigError(f"{where}: expected a number ({accepted}), got {excerpt(value)}")
    if math.isnan(value):
        raise RigError(f"{where}: expected a number ({accepted}), got .nan")
    if minus_inf and value == -math.inf:
        return -math.inf
    if math.isinf(value) or (low is not None and value < low) or \
            (high is not None and value > high):
        raise RigError(f"{where}: {value} is out of range; accepted: {accepted}")
    return float(value)


def build_plugin(where: str, spec: Any):
    """A pedalboard plugin from ``{plugin: Name, param: value...}`` or ``{vst3: path, parameters: {...}}``."""
    import pedalboard

    if not isinstance(spec, dict) or not ({"plugin", "vst3"} & set(spec)):
        raise RigError(f"{where}: expected {{plugin: <pedalboard plugin name>, ...parameters}} or "
                       f"{{vst3: <path>, parameters: {{...}}}}, got {excerpt(spec)}")
    spec = dict(spec)
    if "vst3" in spec:
        path = spec.pop("vst3")
        params = spec.pop("parameters", {}) or {}
        name = spec.pop("plugin_name", None)
        _check_keys(where, spec, set())
        if not os.path.exists(path):
            raise RigError(f"{where}: VST3 plugin not found: {excerpt(path, 200)}")
        try:
            return pedalboard.load_plugin(path, parameter_values=params, plugin_name=name)
        except Exception as exc:  # noqa: BLE001 - plugin hosts raise many kinds
            raise RigError(f"{where}: cannot load {excerpt(path, 200)}: {excerpt(str(exc), 200)}") from exc
    name = spec.pop("plugin")
    cls = getattr(pedalboard, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, pedalboard.Plugin)) or name in ("Plugin", "Pedalboard"):
        known = sorted(n for n in dir(pedalboard) if isinstance(getattr(pedalboard, n), type)
                       and issubclass(getattr(pedalboard, n), pedalboard.Plugin) and n[0].isupper()
                       and n not in ("Plugin", "Pedalboard", "Chain", "Mix", "ExternalPlugin", "VST3Plugin",
                                     "AudioUnitPlugin"))
        raise RigError(f"{where}: unknown plugin {excerpt(name)}; pedalboard has {', '.join(known)}")
    for key, value in spec.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise RigError(f"{where}.{_name(key)}: expected a finite number for {name}, got {value}")
    try:
        return cls(**spec)
    except (TypeError, ValueError) as exc:
        # name the parameter: the one that fails on its own (pedalboard's messages use its own labels)
        for key, value in spec.items():
            try:
                cls(**{key: value})
            except TypeError as one:
                raise RigError(f"{where}: bad parameters for {name}: {_name(key)}={excerpt(value)} is not one of its "
                               "parameters or has the wrong type") from one
            except ValueError as one:
                raise RigError(f"{where}.{_name(key)}: {excerpt(value)} is out of range for {name}: "
                               f"{excerpt(str(one).splitlines()[0], 200)}") from one
        raise RigError(f"{where}: bad parameters for {name}: {excerpt(str(exc), 200)}") from exc


def _controls(where: str, data: dict) -> dict[str, Any]:
    """Control values (gain_db, fader, mute, solo) of one stem on one bus, through the mixer's own rules
    (:data:`bridge.mix.mixer.RULES`: the same as Python, OSC, MIDI and the CLI give them)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in RULES:
            try:
                out[key] = RULES[key](value)
            except ValueError as exc:
                raise RigError(f"{where}.{key}: expected {exc}, got {excerpt(value)}") from None
    return out


def _read(path: str) -> Any:
    """The rig file's data, read within streamer.msst.yamlsafe's limits (size, aliases, nesting)."""
    return load_yaml(path, "rig file", error=RigError)


def load_rig(path: str | os.PathLike, token: str | None = None) -> RigSpec:
    """Read and validate a rig file (see the module docstring). ``token``: a remote model's token (default:
    from the environment variable the rig's ``model.token_env`` names)."""
    import pedalboard

    path = os.fspath(path)
    data = _check_keys(path, _read(path), TOP_KEYS)
    base = os.path.dirname(os.path.abspath(path))
    resolve = lambda p: p if os.path.isabs(p) else os.path.join(base, p)  # noqa: E731
    if isinstance(data.get("model"), dict) and "trust_checkpoint" in data["model"]:
        raise RigError(f"{path}: model.trust_checkpoint: a rig file cannot allow full pickle loading of its "
                       "checkpoint (unpickling can run arbitrary code); only the person running the command can "
                       "opt in: --trust-checkpoint on the command line, trust_checkpoint=True in Python "
                       "(StemSeparator.from_rig(path, trust_checkpoint=True)). Remove the key")
    remote = None
    if isinstance(data.get("model"), dict) and "remote" in data["model"]:
        if {"config", "checkpoint"} & set(data["model"]):
            raise RigError(f"{path}: model: give model.remote (the service's model) or model.config and "
                           "model.checkpoint (a model here), not both")
        remote, config = _remote_model(path, data["model"], resolve, token)
        model: dict = {}
    else:
        model = _check_keys(f"{path}: model", data.get("model"), MODEL_KEYS)
        if "config" not in model:
            raise RigError(f"{path}: model.config is required (the model's MSST YAML), or model.remote (a "
                           "separation service)")
        for key in ("config", "checkpoint"):
            value = model.get(key)
            if value is not None and not (isinstance(value, str) and 0 < len(value) <= 4096):
                raise RigError(f"{path}: model.{key}: expected a file path, got {excerpt(value)}")
        config = load_config(resolve(str(model["config"])))
    rate = config.sample_rate

    engine = dict(_check_keys(f"{path}: engine", data.get("engine"), ENGINE_KEYS))
    if remote is not None:
        local_only = sorted(set(engine) - REMOTE_ENGINE_KEYS)
        if local_only:
            raise RigError(f"{path}: engine.{local_only[0]}: the service sets the model's window, preset, device and "
                           f"precision; a remote rig's engine may set {', '.join(sorted(REMOTE_ENGINE_KEYS))}")
    for key in ("preset", "device", "precision", "residual"):
        if key in engine:
            _short_text(f"{path}: engine.{key}", engine[key])
    if data.get("output") is not None:
        _short_text(f"{path}: output", data["output"])
    preset = engine.pop("preset", DEFAULT_PRESET)  # checked by the separator (its error names the file)
    kwargs: dict[str, Any] = {}
    for key in ("window", "hop", "lookahead", "compute_allowance"):
        if key in engine:
            kwargs[key] = int(round(_number(f"{path}: engine.{key}", engine.pop(key), 0) * rate))
    if "crossfade_ms" in engine:
        kwargs["crossfade"] = int(round(_number(f"{path}: engine.crossfade_ms", engine.pop("crossfade_ms"), 0)
                                        * rate / 1000))
    if ("hop" in kwargs or "window" in kwargs or "lookahead" in kwargs) and "crossfade" not in kwargs:
        kwargs["crossfade"] = None  # the preset's crossfade may not fit the new lengths: the engine's default does
    residual = engine.pop("residual", DEFAULT_RESIDUAL)
    if residual is not None and residual is not DEFAULT_RESIDUAL and (not isinstance(residual, str) or not residual):
        raise RigError(f"{path}: engine.residual: expected a stem name, 'spread' or null (no residual), "
                       f"got {excerpt(residual)}")
    kwargs.update(engine)  # device, precision
    try:
        stems = separator_stems(config.stems, residual)
    except SettingsError as err:
        raise RigError(f"{path}: engine.residual: {err}") from None

    buses_cfg = data.get("buses") or {"main": {}}
    if not isinstance(buses_cfg, dict):
        raise RigError(f"{path}: buses: expected a mapping of bus name to per-stem controls")
    spec = RigSpec(path=path, config=config,
                   checkpoint=resolve(str(model["checkpoint"])) if model.get("checkpoint") else None,
                   preset=preset, residual=residual,
                   engine=kwargs, buses=[str(b) for b in buses_cfg], output=data.get("output"), remote=remote)

    spec.web = _web(path, data.get("web"))
    for stem, stem_spec in _check_keys(f"{path}: stems", data.get("stems"), set(stems)).items():
        where = f"{path}: stems.{stem}"
        stem_spec = _check_keys(where, stem_spec, STEM_KEYS)
        spec.stem_controls[stem] = _controls(where, stem_spec)
        effects = stem_spec.get("effects")
        if effects:
            if not isinstance(effects, list):
                raise RigError(f"{where}.effects: expected a list of plugins")
            spec.stem_effects[stem] = pedalboard.Pedalboard(
                [build_plugin(f"{where}.effects[{i}]", e) for i, e in enumerate(effects)])
    for bus, controls in buses_cfg.items():
        spec.bus_controls[str(bus)] = _bus_controls(f"{path}: buses.{_name(bus)}", controls, stems)
    scenes = data.get("scenes") or {}
    if not isinstance(scenes, dict):
        raise RigError(f"{path}: scenes: expected a mapping of scene name to controls, e.g. karaoke: {{vocals: "
                       "{mute: true}}")
    for name, scene in scenes.items():
        where = f"{path}: scenes.{_name(name)}"
        scene = _check_keys(where, scene, set(stems) | {"buses"})
        result = Scene(str(name))
        first = {stem: _controls(f"{where}.{stem}", _check_keys(f"{where}.{stem}", values, CONTROL_KEYS))
                 for stem, values in scene.items() if stem != "buses"}
        if first:
            result.buses[spec.buses[0]] = {"stems": first}
        others = _check_keys(f"{where}.buses", scene.get("buses"), set(spec.buses))
        for bus, controls in others.items():
            parsed = _bus_controls(f"{where}.buses.{_name(bus)}", controls, stems)
            entry = result.buses.setdefault(str(bus), {})
            entry.setdefault("stems", {}).update({k: v for k, v in parsed.items() if k in stems})
            entry.update({k: v for k, v in parsed.items() if k not in stems})
        spec.scenes[str(name)] = result
    spec.midi = rig_midi(path, data)
    return spec


def rig_midi(path: str | os.PathLike, data: Any = None):
    """The rig's ``midi:`` section as a checked :class:`bridge.midi.mapping.Mapping` (None without one): a
    mapping inline, or the path of a mapping file (relative to the rig). Reads the file when ``data`` is
    not given (connects nowhere, loads no model)."""
    from bridge.midi.mapping import MappingError, load_mapping, parse_mapping

    path = os.fspath(path)
    if data is None:
        data = _read(path)
    section = data.get("midi") if isinstance(data, dict) else None
    if section is None:
        return None
    try:
        if isinstance(section, str):
            target = section if os.path.isabs(section) else os.path.join(os.path.dirname(os.path.abspath(path)),
                                                                         section)
            return load_mapping(target)
        return parse_mapping(section, f"{path}: midi")
    except MappingError as exc:
        raise RigError(str(exc) if str(exc).startswith(path) else f"{path}: midi: {exc}") from None


def _bus_controls(where: str, controls: Any, stems: list[str]) -> dict[str, Any]:
    """A bus's controls: per stem, plus the master's gain_db, fader and mute."""
    controls = _check_keys(where, controls, set(stems) | BUS_KEYS)
    out: dict[str, Any] = {}
    for key, values in controls.items():
        if key in BUS_KEYS:
            out.update(_controls(where, {key: values}))
            continue
        values = _check_keys(f"{where}.{key}", values, CONTROL_KEYS)
        out[key] = _controls(f"{where}.{key}", values)
    return out

"""``StemSeparator``: the streaming engine and stem mixer behind pedalboard's plugin call contract.

pedalboard's native chains cannot hold Python objects, so compatibility means the same call
contract (see ``bridge.plugin.chain.Chain`` to mix both in one sequence):

* ``process(input_array, sample_rate, buffer_size=8192, reset=True)`` returns float32; ``__call__``
  is an alias; ``reset()``; ``is_effect``/``is_instrument``; ``reported_latency_samples``.
* Layout exactly as pedalboard decides it (the rule, with its memory of the last layout and channel
  count, is ``bridge.plugin.layout``); the output keeps the layout; empty blocks come back empty.
  float64 is converted; other dtypes raise pedalboard's TypeError.
* ``reset=True`` (one-shot): the output has the input's length and is aligned with it (latency
  compensated by flushing the engine). ``reset=False`` (streaming): like pedalboard's latent
  plugins, the first calls return fewer samples until ``reported_latency_samples`` are withheld, so
  the concatenated outputs line up with the input exactly.
* Sample rate: one-shot calls at another rate are resampled in and out (soxr, high quality);
  streaming calls must come at the model's rate (a clear ValueError says so).
* Channels: the model's channel count is used inside; mono input is duplicated for a stereo model
  and the output averaged back to mono; more than two channels are refused.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from streamer.audio import resample
from streamer.errors import AudioError, AudioTypeError, SettingsError
from streamer.inference.loader import load_model
from streamer.msst.config import Config
from streamer.stream.deck import StemDeck
from streamer.stream.engine import StreamEngine
from streamer.stream.settings import DEFAULT_PRESET, PRESETS

from ..mix.effects import EffectStage
from ..mix.mixer import StemControl, StemMixer
from ..mix.scenes import SceneRecaller
from .layout import FIRST, MONO, ChannelLayout
from .rig import RigError, load_rig
from .stems import DEFAULT_RESIDUAL, separator_residual

_DTYPE_ERROR = "Pedalboard only supports 32-bit and 64-bit floating point audio for processing."


def deck_names(names: Sequence[str]) -> list[str]:
    """A stem file's stem names as control names: lower case, OSC-safe, unique, NI's usual names as the
    slot's (NI's own files say e.g. ``Drums``, ``Bass``, ``Other``, ``Vox``: drums, bass, other, vocals)."""
    from streamer.formats.nistem import ALIASES

    out: list[str] = []
    for i, name in enumerate(names):
        base = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(name).strip().lower()) or f"stem{i + 1}"
        base = next((slot for slot, aliases in ALIASES.items() if base in aliases), base)   # Vox -> vocals
        candidate, k = base, 2
        while candidate in out:
            candidate, k = f"{base}{k}", k + 1
        out.append(candidate)
    return out


def remote_separator_engine(url: str, token: str | None, residual, overrides: dict):
    """A real-time engine whose windows run on the service at ``url`` (``streamer.remote.host``; needs
    the serve extra). ``overrides``: ``model`` (the served model's name), ``hop``/``lookahead`` in
    samples (default: the server's), ``network_allowance`` in samples (default: from the round trips
    measured at connect time), ``wire`` (fp32 or fp16), ``tls_ca`` (with a ``wss://`` URL: the PEM file
    to verify the server with; default the system's CAs)."""
    try:
        from streamer.remote.host import RemoteLink, remote_engine
    except ImportError as exc:
        raise SettingsError(f"remote separation needs the serve extra (pip install 'stemstream[serve]'): {exc}") from None
    if not token:
        raise SettingsError("remote= needs the service's token (token=..., or $STEMSTREAM_TOKEN with the CLI)")
    known = {"model", "hop", "lookahead", "network_allowance", "wire", "realtime", "tls_ca"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise SettingsError(f"with remote= the service runs the model: {', '.join(unknown)} cannot be set here")
    wire = overrides.get("wire", "fp32")
    tls_ca = None if overrides.get("tls_ca") is None else os.fspath(overrides["tls_ca"])
    info, _ = RemoteLink(url, token, overrides.get("model"), wire, tls_ca).probe(pings=1)   # the served model's stems
    return remote_engine(url, token, overrides.get("model"), hop=overrides.get("hop"),
                         lookahead=overrides.get("lookahead"), residual=separator_residual(residual, info.stems),
                         network_allowance_samples=overrides.get("network_allowance"), wire=wire, tls_ca=tls_ca)


class StemHandle:
    """A stem's controls on the first bus, plus its effect chain (shared by all buses)."""

    def __init__(self, separator: "StemSeparator", name: str):
        self._sep = separator
        self.name = name

    @property
    def _control(self) -> StemControl:
        return self._sep.mixer.stems[self.name]

    gain_db = property(lambda self: self._control.gain_db, lambda self, v: setattr(self._control, "gain_db", v))
    fader = property(lambda self: self._control.fader, lambda self, v: setattr(self._control, "fader", v))
    mute = property(lambda self: self._control.mute, lambda self, v: setattr(self._control, "mute", v))
    solo = property(lambda self: self._control.solo, lambda self, v: setattr(self._control, "solo", v))

    @property
    def effects(self):
        return self._sep._fx.get(self.name)

    @effects.setter
    def effects(self, chain) -> None:
        self._sep._set_effects(self.name, chain)

    def __repr__(self) -> str:
        c = self._control
        return (f"StemHandle({self.name!r}, gain_db={c.gain_db:g}, mute={c.mute}, solo={c.solo}, "
                f"effects={self.effects!r})")


class StemSeparator:
    """Separates stems and mixes them into buses, called like a pedalboard plugin.

    ``sep.stems["vocals"].mute = True``; ``sep.stems["drums"].gain_db = -6``;
    ``sep.stems["vocals"].effects = Pedalboard([Reverb()])``; ``sep.mixer["monitor"]["vocals"]`` for
    other buses. ``output`` picks what ``process`` returns: a bus name, ``"stems"`` for every stem on
    its own channels (stem-major: stem 0's channels first), or ``"buses"`` for every bus likewise.
    """

    is_effect = True
    is_instrument = False

    def __init__(self, model=None, config: Config | None = None, latency: str = DEFAULT_PRESET,
                 residual: str | None = DEFAULT_RESIDUAL, buses: Sequence[str] = ("main",), output: str | None = None,
                 effects_block: int = 256, ramp_ms: float = 10.0, effects_latency: int | None = None,
                 remote: str | None = None, token: str | None = None, **engine_overrides: Any):
        if latency not in PRESETS:
            raise SettingsError(f"latency must be one of {', '.join(PRESETS)}, got {latency!r}")
        if remote is not None:   # the model runs on a separation service (stemstream serve)
            if model is not None or config is not None:
                raise SettingsError("give a model and config, or remote= (the service's model), not both")
            engine = remote_separator_engine(remote, token, residual, engine_overrides)
            self._setup(engine, None, buses, output, effects_block, ramp_ms, effects_latency)
            return
        if model is None or config is None:
            raise SettingsError("StemSeparator needs a model and its config (or remote=URL, token=...; or "
                                "StemSeparator.from_config / from_rig / from_stem_file)")
        residual = separator_residual(residual, config.stems)
        engine_overrides.setdefault("realtime", False)
        engine = StreamEngine.from_config(config, model, preset=latency, residual=residual, **engine_overrides)
        self._setup(engine, config, buses, output, effects_block, ramp_ms, effects_latency)

    def _setup(self, engine, config: Config | None, buses: Sequence[str], output: str | None, effects_block: int,
               ramp_ms: float, effects_latency: int | None) -> None:
        """Everything after the engine (or a stem deck): mixer, stem handles, effect stage."""
        self.config = config
        self.engine = engine
        self.sample_rate = engine.sample_rate
        self.channels = engine.channels
        self.stem_names = list(self.engine.stems)
        self.mixer = StemMixer(self.stem_names, self.sample_rate, buses=buses, ramp_ms=ramp_ms,
                               channels=self.channels)
        self.output = output or self.mixer.bus_names[0]
        if self.output not in ("stems", "buses") and self.output not in self.mixer.bus_names:
            raise SettingsError(f"output must be 'stems', 'buses' or a bus ({', '.join(self.mixer.bus_names)}), "
                             f"got {output!r}")
        self.stems = {name: StemHandle(self, name) for name in self.stem_names}
        self.effects_block = int(effects_block)
        self._fx = EffectStage(self.stem_names, self.sample_rate, self.channels, self.effects_block,
                               latency_budget=effects_latency)
        self._layout = ChannelLayout()
        self._reset_requested = False
        # the one scene recaller of this separator, shared by every control surface (bridge.mix.scenes)
        self.recaller = SceneRecaller(self.mixer)
        self._clear_stream()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config_path: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                    latency: str = DEFAULT_PRESET, trust_checkpoint: bool = False, **kwargs) -> "StemSeparator":
        """A separator for the model of an MSST config and checkpoint (random weights without one)."""
        loaded = load_model(config_path, checkpoint, trust=trust_checkpoint)
        return cls(loaded.model, loaded.config, latency=latency, **kwargs)

    @classmethod
    def from_stems(cls, stems, names: Sequence[str], sample_rate: int, loop: bool = False, position=None,
                   buses: Sequence[str] = ("main",), output: str | None = None, effects_block: int = 256,
                   ramp_ms: float = 10.0, effects_latency: int | None = None,
                   label: str = "stem deck") -> "StemSeparator":
        """A separator with no model: ``stems`` (stems, channels, frames) already separated (a stem
        file's, see :meth:`from_stem_file`) play through the mixer, effects and buses at zero latency.
        Each block handed to ``process`` is taken as the mix at the next position of the song (the
        stems' own count, rewound by ``reset``; or ``position()``, the frames a live file source has
        read); the buses at unity play the stems' sum. See ``streamer.stream.deck.StemDeck``."""
        deck = StemDeck(stems, names, sample_rate, loop=loop, position=position, label=label)
        sep = cls.__new__(cls)
        sep._setup(deck, None, buses, output, effects_block, ramp_ms, effects_latency)
        return sep

    @classmethod
    def from_stem_file(cls, path: str | os.PathLike, sample_rate: int | None = None, **kwargs) -> "StemSeparator":
        """A stem deck for a Native Instruments Stem file (``.stem.mp4``): its four stems (drums, bass,
        other, vocals, named as the file names them, lower case) through the mixer at zero latency;
        ``sample_rate``: resample to it (default: the file's). Needs ffmpeg. Keywords as
        :meth:`from_stems`. ``sep.stem_file`` holds what was read (master, stems, names, tags)."""
        from streamer.formats.nistem import read_stem_file

        found = read_stem_file(path, rate=sample_rate)
        names = deck_names(found.names)
        kwargs.setdefault("label", f"stem file {os.path.basename(os.fspath(path))}")
        sep = cls.from_stems(found.stems, names, found.rate, **kwargs)
        sep.stem_file = found
        return sep

    @classmethod
    def from_rig(cls, path: str | os.PathLike, trust_checkpoint: bool = False, latency: str | None = None,
                 token: str | None = None, **overrides: Any) -> "StemSeparator":
        """A separator set up by a rig file (model, engine, stems, effects, buses); see ``bridge.plugin.rig``.

        ``trust_checkpoint=True`` allows the rig's checkpoint to be unpickled in full (it can run arbitrary
        code): only the person running the program can opt in, here or with ``--trust-checkpoint``; a rig
        file cannot (a rig with ``model.trust_checkpoint`` is refused).

        ``latency`` (a preset) and ``overrides`` (``residual`` and engine keywords in samples: window, hop,
        lookahead, crossfade, realtime, worker, ...) take precedence over the rig's engine section, as
        command-line flags do: a preset replaces the rig's window, hop, look-ahead and crossfade.

        A rig whose model is on a separation service (``model: {remote: URL, token_env: NAME}``) connects
        to it: ``token`` (default: from the environment variable the rig names); ``overrides`` may be
        ``residual``, ``hop``, ``lookahead``, ``network_allowance`` (samples), ``tls_ca`` and ``wire``."""
        if not isinstance(trust_checkpoint, (bool, np.bool_)):
            raise SettingsError(f"trust_checkpoint must be True or False, got {trust_checkpoint!r}")
        spec = load_rig(path, token=token)
        if spec.remote is not None:
            return cls._from_remote_rig(spec, latency, overrides)
        engine = dict(spec.engine)
        if latency is not None:
            for key in ("window", "hop", "lookahead", "crossfade"):
                engine.pop(key, None)
        residual = overrides.pop("residual", spec.residual)
        if {"window", "hop", "lookahead"} & set(overrides) and "crossfade" not in overrides:
            engine["crossfade"] = None  # the rig's crossfade may not fit the new lengths
        engine.update(overrides)
        loaded = load_model(spec.config, spec.checkpoint, trust=bool(trust_checkpoint))
        try:
            sep = cls(loaded.model, spec.config, latency=latency or spec.preset, residual=residual,
                      buses=spec.buses, output=spec.output, **engine)
        except SettingsError as exc:
            raise RigError(f"{spec.path}: {exc}") from exc
        return sep._take_rig(spec)

    def _take_rig(self, spec) -> "StemSeparator":
        """What a rig sets on a built separator, local or remote: the mixer's initial state, the effect
        chains, the scenes."""
        spec.initial_state(self.stem_names, self.mixer.bus_names).apply(self.mixer)
        for stem, chain in spec.stem_effects.items():
            self.stems[stem].effects = chain
        self.scenes = dict(spec.scenes)
        return self

    @classmethod
    def _from_remote_rig(cls, spec, latency: str | None, overrides: dict) -> "StemSeparator":
        """``from_rig`` for a rig whose model runs on a separation service (``spec.remote``)."""
        r = spec.remote
        if latency is not None:
            raise RigError(f"{spec.path}: the service's model runs at the service's preset: drop the latency preset "
                           "(the hop and look-ahead may be given)")
        engine = {k: v for k, v in spec.engine.items() if k in ("hop", "lookahead")}
        overrides = dict(overrides)
        residual = overrides.pop("residual", spec.residual)
        overrides.pop("crossfade", None)   # the engine's default for the lengths (as for a local rig with new lengths)
        engine.update(wire=r.wire, tls_ca=r.tls_ca, **overrides)
        if r.name is not None:
            engine["model"] = r.name
        local = sorted(k for k in engine if k not in ("hop", "lookahead", "network_allowance", "wire", "tls_ca",
                                                      "model"))
        if local:
            raise RigError(f"{spec.path}: the service sets the model's {local[0]}: a remote rig takes hop, "
                           "lookahead, residual, network_allowance, tls_ca and wire")
        if engine.get("tls_ca") is None:
            engine.pop("tls_ca")
        try:
            sep = cls(remote=r.url, token=r.token, residual=residual, buses=spec.buses, output=spec.output, **engine)
        except SettingsError as exc:
            raise RigError(f"{spec.path}: {exc}") from exc
        return sep._take_rig(spec)

    # ------------------------------------------------------------------ effects
    def _set_effects(self, name: str, chain) -> None:
        # mid-stream the stage keeps its latency and crossfades to the new chain (see bridge.mix.effects)
        self._fx.set(name, chain, live=self._emitted > 0)

    @property
    def effects_nonfinite_blocks(self) -> dict[str, int]:
        """Per stem: effect-chain blocks that came out inf/NaN and were replaced by a fade to silence."""
        return dict(self._fx.nonfinite_blocks)

    @property
    def effects_latency_samples(self) -> int:
        """Extra latency of the effect stage: one effects block plus the slowest stem chain's latency."""
        return self._fx.latency_samples

    @property
    def reported_latency_samples(self) -> int:
        return self.engine.latency_samples + self.effects_latency_samples

    # ------------------------------------------------------------------ state
    def _clear_stream(self) -> None:
        self._emitted = 0
        self._fx.clear()

    def reset(self) -> None:
        """Clear the stream (and the remembered channel layout, as pedalboard does)."""
        self.engine.reset()
        self._layout.reset()
        self._clear_stream()

    # ------------------------------------------------------------------ call contract
    def _to_internal(self, x) -> tuple[np.ndarray, str, int]:
        """(model channels, frames) float32, the layout pedalboard decides, and the input's channel count."""
        x = np.asarray(x)
        if x.dtype == np.float64:
            x = x.astype(np.float32)
        elif x.dtype != np.float32:
            raise AudioTypeError(_DTYPE_ERROR)
        layout = self._layout.decide(x.shape)
        cf = x[None] if layout == MONO else (x if layout == FIRST else x.T)
        in_channels = cf.shape[0]
        if in_channels > 2:
            raise AudioError(f"{in_channels} channels: StemSeparator takes mono or stereo audio")
        if cf.shape[1] == 0:  # an empty block (pedalboard returns it empty, in its shape)
            return np.zeros((self.channels, 0), np.float32), layout, in_channels
        if in_channels != self.channels:
            cf = np.repeat(cf, self.channels, axis=0) if in_channels == 1 else cf.mean(axis=0, keepdims=True)
        return np.ascontiguousarray(cf, np.float32), layout, in_channels

    def _from_internal(self, y: np.ndarray, layout: str, in_channels: int) -> np.ndarray:
        if self.output not in ("stems", "buses") and y.shape[0] != in_channels:
            if in_channels == 0:
                y = y[:0]
            elif in_channels == 1:
                y = y.mean(axis=0, keepdims=True)
            else:
                y = np.repeat(y, in_channels, axis=0)
        if layout == MONO:
            return np.ascontiguousarray(y[0] if y.shape[0] == 1 else y)
        return np.ascontiguousarray(y if layout == FIRST else y.T)

    def process(self, input_array, sample_rate: float, buffer_size: int = 8192, reset: bool = True) -> np.ndarray:
        rate = int(round(float(sample_rate)))
        x, layout, in_channels = self._to_internal(input_array)
        buffer_size = max(1, int(buffer_size))
        n = x.shape[1]
        if n == 0:  # nothing to separate: an empty output in the input's layout, the stream untouched
            if reset:
                self.engine.reset()
                self._clear_stream()
            width = {"stems": len(self.stem_names), "buses": len(self.mixer.bus_names)}.get(self.output, 1)
            return self._from_internal(np.zeros((width * self.channels, 0), np.float32), layout, in_channels)
        if reset:
            self.engine.reset()
            self._clear_stream()
            if rate != self.sample_rate:
                x = resample(x, rate, self.sample_rate)
            y = self._run(x, buffer_size)
            y = np.concatenate([y, self._run(np.zeros((self.channels, self.reported_latency_samples), np.float32),
                                             buffer_size)], axis=-1)
            y = y[:, self.reported_latency_samples:]
            if rate != self.sample_rate:
                y = resample(y, self.sample_rate, rate)
            y = y[:, :n] if y.shape[1] >= n else np.pad(y, ((0, 0), (0, n - y.shape[1])))
            self.engine.reset()
            self._clear_stream()
        else:
            y = self._stream(x, rate, buffer_size)
            withheld = max(0, self.reported_latency_samples - self._emitted)
            self._emitted += y.shape[1]
            y = y[:, min(withheld, y.shape[1]):]
        return self._from_internal(y.astype(np.float32, copy=False), layout, in_channels)

    __call__ = process

    def process_delayed(self, input_array, sample_rate: float, buffer_size: int = 8192) -> np.ndarray:
        """Streaming without withholding anything: the output has the input's length and is the
        result delayed by ``reported_latency_samples`` (what a latent native plugin produces inside a
        pedalboard chain before the chain trims its latency at the end). ``Chain`` uses this so that
        the plugins after the separator always see full blocks."""
        x, layout, in_channels = self._to_internal(input_array)
        y = self._stream(x, int(round(float(sample_rate))), max(1, int(buffer_size)))
        self._emitted += y.shape[1]
        return self._from_internal(y.astype(np.float32, copy=False), layout, in_channels)

    def _stream(self, x: np.ndarray, rate: int, buffer_size: int) -> np.ndarray:
        if rate != self.sample_rate:
            raise SettingsError(f"streaming calls (reset=False) must be at the model's rate, {self.sample_rate} Hz, "
                             f"got {rate} Hz: resample the stream, or use one-shot calls (reset=True), which "
                             "resample for you")
        return self._run(x, buffer_size)

    def stream_into(self, block: np.ndarray, stems: np.ndarray, dry: np.ndarray, buses: np.ndarray) -> None:
        """The live host's entry point (``bridge.live``): streams ``block`` (model channels, n) float32 at
        the model's rate and writes, delayed by ``reported_latency_samples``, every stem after its effects
        into ``stems`` (stems, channels, n), the input they came from into ``dry`` (channels, n) and every
        bus into ``buses`` (buses, channels, n). All four are the caller's preallocated buffers (views
        are fine); nothing else is allocated except by the pedalboard effect chains, when there are any."""
        if self._reset_requested:
            self._reset_requested = False
            self.engine.reset()
            self._clear_stream()
        self.engine.process_into(block, stems, dry)
        if self._fx.active:
            fx_stems, fx_dry = self._fx.process(stems, dry)
            stems[...] = fx_stems
            dry[...] = fx_dry
        self.mixer.process(stems, buses, dry, dry_is_sum=not self._fx.active)
        self._emitted += block.shape[1]

    @property
    def scenes(self) -> dict:
        """name -> :class:`bridge.mix.scenes.Scene` (a rig's ``scenes:``), recalled by :attr:`recaller`."""
        return self.recaller.scenes

    @scenes.setter
    def scenes(self, scenes: dict) -> None:
        self.recaller.scenes = dict(scenes)

    def request_reset(self) -> None:
        """Ask for a fresh stream at the next block of a live host (``stream_into``), from any thread:
        the rings and the overlap-add state are cleared there, on the audio side, where it is safe."""
        self._reset_requested = True

    # ------------------------------------------------------------------ internals
    def _run(self, x: np.ndarray, buffer_size: int) -> np.ndarray:
        """Delayed output for ``x`` (channels, n): (out channels, n), in ``buffer_size`` pieces."""
        n = x.shape[1]
        width = {"stems": len(self.stem_names), "buses": len(self.mixer.bus_names)}.get(self.output, 1) * self.channels
        out = np.zeros((width, n), np.float32)
        for pos in range(0, n, buffer_size):
            blk = x[:, pos:pos + buffer_size]
            m = blk.shape[1]
            stems = np.zeros((len(self.stem_names), self.channels, m), np.float32)
            dry = np.zeros((self.channels, m), np.float32)
            self.engine.process_into(blk, stems, dry)
            if self._fx.active:
                stems, dry = self._fx.process(stems, dry)
            out[:, pos:pos + m] = self._mix(stems, dry)
        return out

    def _mix(self, stems: np.ndarray, dry: np.ndarray) -> np.ndarray:
        buses = np.zeros((len(self.mixer.bus_names), self.channels, stems.shape[-1]), np.float32)
        self.mixer.process(stems, buses, dry, dry_is_sum=not self._fx.active)
        if self.output == "stems":
            return stems.reshape(-1, stems.shape[-1])
        if self.output == "buses":
            return buses.reshape(-1, buses.shape[-1])
        return buses[self.mixer.bus_names.index(self.output)]

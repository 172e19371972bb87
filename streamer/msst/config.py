"""Loading MSST-format YAML configs unchanged.

A config file has the sections ``audio``, ``model``, ``training``, ``inference`` (and others we
ignore). The ``model`` section holds the constructor keywords of the Roformer class. The STFT
settings come from ``model.stft_*``; ``audio.n_fft/hop_length/dim_t`` are not used by Roformers.

Values are taken as written or refused with one :class:`ConfigError` naming the file and the key;
nothing falls back to a default silently. A key that is absent or ``null`` takes its default; a given
``chunk_size``/``num_overlap``/``batch_size``/``sample_rate``/``num_channels`` must be a positive
integer (``0`` is refused, not read as "default"); booleans (``training.use_amp``,
``inference.normalize``, ``model.stereo`` ...) must be YAML booleans (the string ``"false"`` is
refused, not read as true); ``training.instruments`` must be a list of distinct stem names (a bare
string such as ``instruments: vocals`` is refused: MSST itself would iterate its letters; write
``[vocals]``) and ``training.target_instrument`` a stem name. The file is read by
:func:`streamer.msst.yamlsafe.load_yaml` (size, alias and nesting limits; ``!!python/tuple`` allowed),
and values are quoted in messages as short excerpts.
"""
from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .yamlsafe import excerpt, load_yaml

log = logging.getLogger(__name__)

BS_ROFORMER = "bs_roformer"
MEL_BAND_ROFORMER = "mel_band_roformer"
MODEL_TYPES = (BS_ROFORMER, MEL_BAND_ROFORMER)
# MSST's experimental variants have the main classes' keys as long as their extra features are off.
EXPERIMENTAL_TYPES = {
    "bs_roformer_experimental": BS_ROFORMER,
    "mel_band_roformer_experimental": MEL_BAND_ROFORMER,
}

# Keywords that change the state_dict or the numbers, with their defaults (MSST HEAD).
_COMMON_ARCH = {
    "dim": None,
    "depth": None,
    "stereo": False,
    "num_stems": 1,
    "time_transformer_depth": 2,
    "freq_transformer_depth": 2,
    "linear_transformer_depth": 0,
    "dim_head": 64,
    "heads": 8,
    "stft_n_fft": 2048,
    "stft_hop_length": 512,
    "stft_win_length": 2048,
    "stft_normalized": False,
    "zero_dc": True,
    "mlp_expansion_factor": 4,
    "skip_connection": False,
}
ARCH_KEYS = {
    BS_ROFORMER: {**_COMMON_ARCH, "freqs_per_bands": None, "mask_estimator_depth": 2},
    MEL_BAND_ROFORMER: {
        **_COMMON_ARCH,
        "num_bands": 60,
        "sample_rate": 44100,
        "mask_estimator_depth": 1,
        "match_input_audio_length": False,
    },
}
# Accepted by the reference constructors but without effect at inference (training/runtime only).
RUNTIME_KEYS = {
    "attn_dropout",
    "ff_dropout",
    "flash_attn",
    "dim_freqs_in",
    "use_torch_checkpoint",
    "multi_stft_resolution_loss_weight",
    "multi_stft_resolutions_window_sizes",
    "multi_stft_hop_size",
    "multi_stft_normalized",
    "multi_stft_window_fn",
    "stft_window_fn",
}
# Keys that older or forked code accepted and HEAD does not: dropped with a warning.
DROPPED_KEYS = {"sage_attention"}
# Features of the experimental variants: fine while off, refused when on.
EXPERIMENTAL_FEATURES = {"use_value_residual_learning": False, "num_residual_streams": 1}
# Architecture keys that are booleans.
BOOL_KEYS = ("stereo", "stft_normalized", "zero_dc", "skip_connection", "match_input_audio_length")


@dataclass
class Config:
    """A parsed config. ``model`` holds the constructor keywords (runtime-only keys removed)."""

    model_type: str
    model: dict[str, Any]
    stems: list[str]
    sample_rate: int = 44100
    chunk_size: int = 352800
    num_overlap: int = 2
    batch_size: int = 1
    num_channels: int = 2
    instruments: list[str] = field(default_factory=list)
    target_instrument: str | None = None
    use_amp: bool = True
    normalize: bool = False
    path: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def channels(self) -> int:
        """Channels the model takes: 2 when ``model.stereo`` is true, else 1."""
        return 2 if self.model.get("stereo", False) else 1

    @property
    def stft_hop(self) -> int:
        return int(self.model.get("stft_hop_length", _COMMON_ARCH["stft_hop_length"]))

    @property
    def stft_n_fft(self) -> int:
        return int(self.model.get("stft_n_fft", _COMMON_ARCH["stft_n_fft"]))

    def to_yaml_dict(self) -> dict[str, Any]:
        """The raw MSST-style dict, suitable for writing back to a YAML file."""
        return copy.deepcopy(self.raw)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The config file's data (``!!python/tuple`` included), read within :mod:`.yamlsafe`'s limits."""
    path = os.fspath(path)
    data = load_yaml(path, "config file", error=ConfigError, python_tuples=True)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with a 'model' section, got {type(data).__name__}")
    return data


def infer_model_type(model: dict[str, Any]) -> str | None:
    """``num_bands`` means Mel-band, ``freqs_per_bands`` means band-split; None if it can't tell."""
    has_mel = "num_bands" in model
    has_bs = "freqs_per_bands" in model
    if has_mel and not has_bs:
        return MEL_BAND_ROFORMER
    if has_bs and not has_mel:
        return BS_ROFORMER
    return None


def normalize_model_type(name: str, where: str) -> str:
    key = str(name).strip().lower()
    if key in MODEL_TYPES:
        return key
    if key in EXPERIMENTAL_TYPES:
        return key
    raise ConfigError(
        f"{where}: model type {excerpt(name)} is not supported; accepted: "
        f"{', '.join(MODEL_TYPES + tuple(EXPERIMENTAL_TYPES))}"
    )


def clean_model_kwargs(model: dict[str, Any], model_type: str, where: str = "config") -> dict[str, Any]:
    """Validate the ``model`` section: drop runtime-only keys, refuse unknown ones, fill nothing in."""
    base_type = EXPERIMENTAL_TYPES.get(model_type, model_type)
    accepted = ARCH_KEYS[base_type]
    kwargs: dict[str, Any] = {}
    unknown = []
    for key, value in model.items():
        if key in accepted:
            kwargs[key] = value
        elif key in RUNTIME_KEYS:
            continue
        elif key in DROPPED_KEYS:
            log.warning("%s: model.%s is not used by this implementation and was dropped", where, key)
        elif key in EXPERIMENTAL_FEATURES:
            if value not in (None, False, 0, EXPERIMENTAL_FEATURES[key]):
                raise ConfigError(
                    f"{where}: model.{key}={excerpt(value)} (an experimental-variant feature) is not supported"
                )
        elif key == "use_pope":
            if value is not None and not isinstance(value, bool):
                raise ConfigError(f"{where}: model.use_pope must be true or false, got {excerpt(value)}")
            if value:
                raise ConfigError(f"{where}: model.use_pope=True (PoPE positions) is not supported; RoPE only")
        else:
            unknown.append(key)
    if unknown:
        raise ConfigError(
            f"{where}: unknown model key{'s' if len(unknown) > 1 else ''} "
            f"{_some(unknown)} for {base_type}; accepted: "
            f"{', '.join(sorted(accepted))} (runtime-only keys {', '.join(sorted(RUNTIME_KEYS))} are ignored)"
        )
    for required in ("dim", "depth"):
        if required not in kwargs:
            raise ConfigError(f"{where}: model.{required} is required")
    if model_type == "bs_roformer_experimental":
        kwargs["zero_dc"] = False  # the experimental BS class has no DC zeroing
    _check_values(kwargs, base_type, where)
    return kwargs


def _check_values(kw: dict[str, Any], model_type: str, where: str) -> None:
    def positive_int(name: str, allow_zero: bool = False) -> None:
        if name not in kw:
            return
        v = kw[name]
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if allow_zero else 1):
            need = "a non-negative integer" if allow_zero else "a positive integer"
            raise ConfigError(f"{where}: model.{name} must be {need}, got {excerpt(v)}")

    for name in ("dim", "depth", "num_stems", "dim_head", "heads", "stft_n_fft", "stft_hop_length",
                 "stft_win_length", "mask_estimator_depth", "mlp_expansion_factor", "num_bands", "sample_rate"):
        positive_int(name)
    for name in ("time_transformer_depth", "freq_transformer_depth", "linear_transformer_depth"):
        positive_int(name, allow_zero=True)
    for name in BOOL_KEYS:
        if name in kw and not isinstance(kw[name], bool):
            raise ConfigError(f"{where}: model.{name} must be true or false, got {_shown(kw[name])}")
    if kw.get("dim_head", 64) % 2:
        raise ConfigError(f"{where}: model.dim_head must be even for rotary embeddings, got {kw['dim_head']}")
    n_fft = kw.get("stft_n_fft", 2048)
    if kw.get("stft_win_length", 2048) > n_fft:
        raise ConfigError(f"{where}: model.stft_win_length ({kw['stft_win_length']}) exceeds stft_n_fft ({n_fft})")
    if model_type == BS_ROFORMER and kw.get("freqs_per_bands") is not None:
        bands = kw["freqs_per_bands"]
        if not isinstance(bands, (list, tuple)) or not all(isinstance(b, int) and b > 0 for b in bands):
            raise ConfigError(f"{where}: model.freqs_per_bands must be a list of positive integers")
        if sum(bands) != n_fft // 2 + 1:
            raise ConfigError(
                f"{where}: model.freqs_per_bands sums to {sum(bands)} but stft_n_fft={n_fft} "
                f"gives {n_fft // 2 + 1} frequency bins"
            )
        kw["freqs_per_bands"] = tuple(bands)


def _shown(value: Any) -> str:
    return f"{excerpt(value)} (a string)" if isinstance(value, str) else excerpt(value)


def _some(keys: list, most: int = 5) -> str:
    """The first few keys, each as a short excerpt, and how many more there are."""
    shown = ", ".join(excerpt(k) for k in keys[:most])
    return shown + (f" and {len(keys) - most} more" if len(keys) > most else "")


def _positive_int(where: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: {key} must be a positive integer, got {_shown(value)}")
    return value


def _setting(where: str, sections: list[tuple[str, dict]], key: str, default: int) -> int:
    """The first of ``section.key`` that is given (not absent, not null), as a positive integer; else ``default``."""
    for name, section in sections:
        if section.get(key) is not None:
            return _positive_int(where, f"{name}.{key}", section[key])
    return default


def _flag(where: str, key: str, value: Any, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be true or false, got {_shown(value)}")
    return value


def _stem_names(where: str, value: Any) -> list[str]:
    """``training.instruments``: a list of distinct, non-empty stem names (absent or null: none)."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) and s for s in value):
        hint = f"; write [{value}] for one stem" if isinstance(value, str) else ""
        raise ConfigError(f"{where}: training.instruments must be a list of stem names, got {_shown(value)}{hint}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where}: training.instruments names a stem twice: {excerpt(list(value))}")
    return list(value)


def config_from_dict(data: dict[str, Any], model_type: str | None = None, path: str | None = None) -> Config:
    """Build a :class:`Config` from an already-parsed MSST YAML dict."""
    where = path or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with a 'model' section, got {type(data).__name__}")
    model = data.get("model")
    if model is None:
        raise ConfigError(f"{where}: missing 'model' section")
    if not isinstance(model, dict):
        raise ConfigError(f"{where}: 'model' must be a mapping of the model's keywords, got {type(model).__name__}")
    sections = {}
    for name in ("audio", "training", "inference"):
        section = data.get(name)
        if section is None:
            section = {}
        if not isinstance(section, dict):
            raise ConfigError(f"{where}: '{name}' must be a mapping, got {type(section).__name__}")
        sections[name] = section
    audio, training, inference = sections["audio"], sections["training"], sections["inference"]

    yaml_type = training.get("model_type")
    if yaml_type:
        chosen = normalize_model_type(yaml_type, f"{where}: training.model_type")
        if model_type and normalize_model_type(model_type, "model type argument") != chosen:
            log.warning("%s: training.model_type=%s overrides the requested %s", where, chosen, model_type)
    elif model_type:
        chosen = normalize_model_type(model_type, "model type argument")
    else:
        guessed = infer_model_type(model)
        if guessed is None:
            raise ConfigError(
                f"{where}: cannot tell the model type (model has neither 'num_bands' nor 'freqs_per_bands'); "
                f"set training.model_type or pass the model type explicitly ({', '.join(MODEL_TYPES)})"
            )
        chosen = guessed

    kwargs = clean_model_kwargs(model, chosen, where)
    base_type = EXPERIMENTAL_TYPES.get(chosen, chosen)
    num_stems = int(kwargs.get("num_stems", 1))

    instruments = _stem_names(where, training.get("instruments"))
    target = training.get("target_instrument")
    if target is not None and not isinstance(target, str):
        raise ConfigError(f"{where}: training.target_instrument must be a stem name or null, got {_shown(target)}")
    if target:
        stems = [target]
        if num_stems != 1:
            raise ConfigError(
                f"{where}: training.target_instrument={excerpt(target)} means one output, "
                f"but model.num_stems={num_stems}"
            )
    elif instruments:
        if len(instruments) != num_stems:
            raise ConfigError(
                f"{where}: training.instruments lists {len(instruments)} stems {excerpt(instruments)} but "
                f"model.num_stems={num_stems}; they must match (or set training.target_instrument)"
            )
        stems = list(instruments)
    else:
        stems = ["vocals"] if num_stems == 1 else [f"stem{i}" for i in range(num_stems)]
        log.warning("%s: no training.instruments or target_instrument; stems named %s", where, stems)

    chunk_size = _setting(where, [("inference", inference), ("audio", audio)], "chunk_size", 352800)
    num_overlap = _setting(where, [("inference", inference)], "num_overlap", 2)
    batch_size = _setting(where, [("inference", inference)], "batch_size", 1)
    sample_rate = _setting(where, [("audio", audio)], "sample_rate", 44100)
    num_channels = _setting(where, [("audio", audio)], "num_channels", 2)
    if chunk_size // num_overlap < 1:
        raise ConfigError(f"{where}: num_overlap {num_overlap} is larger than chunk_size {chunk_size}")
    if base_type == MEL_BAND_ROFORMER and int(kwargs.get("sample_rate", 44100)) != sample_rate:
        log.warning(
            "%s: model.sample_rate=%s (mel bands) differs from audio.sample_rate=%s",
            where, kwargs.get("sample_rate", 44100), sample_rate,
        )

    return Config(
        model_type=base_type,
        model=kwargs,
        stems=stems,
        sample_rate=sample_rate,
        chunk_size=chunk_size,
        num_overlap=num_overlap,
        batch_size=batch_size,
        num_channels=num_channels,
        instruments=instruments or list(stems),
        target_instrument=target or None,
        use_amp=_flag(where, "training.use_amp", training.get("use_amp"), True),
        normalize=_flag(where, "inference.normalize", inference.get("normalize"), False),
        path=path,
        raw=data,
    )


def load_config(path: str | os.PathLike, model_type: str | None = None) -> Config:
    """Load an MSST YAML config as it is (``!!python/tuple`` tags included)."""
    path = os.fspath(path)
    return config_from_dict(read_yaml(path), model_type=model_type, path=path)

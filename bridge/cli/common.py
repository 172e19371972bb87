"""What several commands share: the model flags, loading a model from them, the latency-preset choice, and
the argparse types that check numbers once for every command (a bad number is argparse's one-line usage
error, exit status 2, before any work), with the sane limits they enforce."""
from __future__ import annotations

import argparse
import math
import os

from streamer.inference.loader import LoadedModel, load_model
from streamer.stream.settings import DEFAULT_PRESET, PRESET_TABLE, PRESETS


# Sane limits: beyond them a number is a typo, and honouring it would try to allocate or run for ever.
MAX_BLOCK = 65536               # frames per audio block (an audio callback is rarely above 4096)
MAX_WINDOW_SECONDS = 60.0       # a streaming window, hop, look-ahead, compute allowance, model chunk, training segment
MAX_STREAM_SECONDS = 600.0      # generated audio: bench's stream, a synth song
MAX_SCORE_SECONDS = 86400.0     # "only the first N seconds" of songs that are already there
MAX_THREADS = 256
MAX_SEED = 2**32 - 1            # numpy's seeds


def _shown(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def whole_number(minimum: int = 1, maximum: int | None = None):
    """argparse ``type=``: a whole number in [minimum, maximum]; anything else is argparse's usage error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {_shown(text)!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            limits = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
            raise argparse.ArgumentTypeError(f"must be a whole number {limits}, got {_shown(text)}")
        return value

    parse.__name__ = "whole number"
    parse.kind, parse.minimum, parse.maximum = int, minimum, maximum
    return parse


def number(minimum: float = 0.0, maximum: float | None = None, *, zero: bool = False, unit: str = " s"):
    """argparse ``type=``: a finite number > ``minimum`` (>= with ``zero=True``) and <= ``maximum``; ``unit``
    is only for the messages (" s" for seconds)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {_shown(text)!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {_shown(text)!r}")
        if value < minimum or (value == minimum and not zero):
            raise argparse.ArgumentTypeError(f"must be {'>=' if zero else '>'} {minimum:g}{unit}, got {_shown(text)}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{_shown(text)}{unit} is beyond the limit of {maximum:g}{unit}")
        return value

    parse.__name__ = "number"
    parse.kind, parse.minimum, parse.maximum = float, minimum, maximum
    return parse


def seconds(maximum: float, least: float | None = None):
    """argparse ``type=``: a length in seconds, > 0 (or >= ``least``) and at most ``maximum``."""
    return number(0.0, maximum) if least is None else number(least, maximum, zero=True)


def positive_int(maximum: int | None = None):
    return whole_number(1, maximum)


def check_length(what: str, samples: int, config, extra_n_fft: int = 0) -> None:
    """Refuse a length of ``samples`` at the model's rate (``what``: the flag and value as the user gave it)
    that is beyond MAX_WINDOW_SECONDS or that the model cannot take: its STFT pads by n_fft // 2 at each end
    and needs more samples than that (``extra_n_fft``: another STFT the samples go through, e.g. a loss's)."""
    from streamer.errors import SettingsError

    rate = config.sample_rate
    if samples > MAX_WINDOW_SECONDS * rate:
        raise SettingsError(f"{what} is beyond the limit of {MAX_WINDOW_SECONDS:g} s "
                            f"({int(MAX_WINDOW_SECONDS * rate)} samples at {rate} Hz)")
    n_fft = max(config.stft_n_fft, extra_n_fft)
    least = n_fft // 2 + 1
    if samples < least:
        raise SettingsError(f"{what} is too short for the model: it needs at least {least} samples "
                            f"({1000 * least / rate:.1f} ms at {rate} Hz) for its {n_fft}-point STFT")


def add_model_args(p: argparse.ArgumentParser, checkpoint_required: bool = True, config_required: bool = True) -> None:
    """--config, --checkpoint, --model-type, --trust-checkpoint, --device, --precision."""
    p.add_argument("--config", required=config_required, help="MSST-format YAML config of the model")
    p.add_argument("--checkpoint", required=checkpoint_required,
                   help="model weights: .ckpt/.pth (plain or wrapped state_dict) or .safetensors")
    p.add_argument("--model-type", choices=["bs_roformer", "mel_band_roformer"],
                   help="model class when the YAML has no training.model_type (normally inferred)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a pickled checkpoint to run arbitrary code when loading (weights_only=False); "
                        "only for files from a source you trust")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16", "int8"],
                   help="autocast precision (auto: bf16 on CUDA when the config's use_amp is on, else fp32); on the "
                        "CPU bf16 runs where the CPU has it natively (AVX512-BF16/AMX), else fp32; int8: the ONNX "
                        "Runtime core with int8 matrix products (CPU, --backend onnx or auto; faster, less exact)")


def default_backend() -> str:
    """The default of --backend: ``auto``, or the environment's ``STEMSTREAM_BACKEND``."""
    value = os.environ.get("STEMSTREAM_BACKEND", "auto")
    return value if value in ("auto", "torch", "onnx") else "auto"


def add_backend_arg(p: argparse.ArgumentParser) -> None:
    """--backend: how the model runs (see streamer.make_runner)."""
    default = default_backend()
    p.add_argument("--backend", choices=["auto", "torch", "onnx"], default=default,
                   help="torch, or onnx: the model core in ONNX Runtime (CPU, fp32; exported once and cached); "
                        f"auto: the faster of the two on this machine, measured at start (default: {default})")


def residual_value(text: str) -> str | None:
    """A ``--residual`` value as the engine and separator take it: ``none`` (any case) is None, no residual."""
    return None if text.lower() == "none" else text


def load_from_args(args: argparse.Namespace) -> LoadedModel:
    """The model the flags of :func:`add_model_args` name, on its device, with its precision."""
    return load_model(args.config, args.checkpoint, device=args.device, precision=args.precision,
                      trust=args.trust_checkpoint, model_type=args.model_type)


def add_preset_arg(p: argparse.ArgumentParser, help_prefix: str = "latency preset") -> None:
    """--preset, one of the presets table's names."""
    p.add_argument("--preset", choices=list(PRESETS), default=DEFAULT_PRESET,
                   help=f"{help_prefix} (default: {DEFAULT_PRESET}): "
                        + "; ".join(f"{name}: {text}" for name, (_, text) in PRESET_TABLE.items()))


def shown_path(path: str) -> str:
    """A path as the user would like to read it: relative to here when inside it, else as given."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel

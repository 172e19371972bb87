"""What several commands share: the model flags, loading a model from them, the latency-preset choice."""
from __future__ import annotations

import argparse
import os

from streamer.inference.loader import LoadedModel, load_model
from streamer.stream.settings import DEFAULT_PRESET, PRESET_TABLE, PRESETS


def add_model_args(p: argparse.ArgumentParser, checkpoint_required: bool = True) -> None:
    """--config, --checkpoint, --model-type, --trust-checkpoint, --device, --precision."""
    p.add_argument("--config", required=True, help="MSST-format YAML config of the model")
    p.add_argument("--checkpoint", required=checkpoint_required,
                   help="model weights: .ckpt/.pth (plain or wrapped state_dict) or .safetensors")
    p.add_argument("--model-type", choices=["bs_roformer", "mel_band_roformer"],
                   help="model class when the YAML has no training.model_type (normally inferred)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a pickled checkpoint to run arbitrary code when loading (weights_only=False); "
                        "only for files from a source you trust")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="GPU autocast precision (auto: bf16 on CUDA when the config's use_amp is on, else fp32). "
                        "CPU always runs fp32")


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

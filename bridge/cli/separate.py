"""``stemstream separate`` (audio files into stems) and ``stemstream inspect`` (what a checkpoint holds)."""
from __future__ import annotations

import argparse
import os
import sys
import time

from .common import add_backend_arg, add_model_args, check_length, load_from_args, positive_int

MAX_OVERLAP = 64      # MSST configs use 2 to 8; beyond this the chunks are a few samples apart
MAX_BATCH = 256


def register(sub) -> None:
    sep = sub.add_parser(
        "separate", help="separate audio files into stems",
        description="Separate audio files into one file per stem: OUT/<file name>/<stem>.wav. The input is "
                    "resampled to the model's rate and mono/stereo adapted; stems are written back at the "
                    "input's rate and length (or the model's rate with --output-rate model).",
    )
    sep.add_argument("inputs", nargs="+", help="audio files (wav, flac, ogg, mp3, aiff) or folders of them")
    add_model_args(sep)
    add_backend_arg(sep)
    sep.add_argument("--out", required=True, help="output folder")
    sep.add_argument("--instrumental", action="store_true",
                     help="also write instrumental = mix minus the vocals stem (or the first stem)")
    sep.add_argument("--tta", action="store_true",
                     help="test-time augmentation: average with channel-swapped and polarity-inverted passes (3x time)")
    sep.add_argument("--chunk-size", type=positive_int(),
                     help="samples per chunk (default: the config's; at most 60 s)")
    sep.add_argument("--num-overlap", type=positive_int(MAX_OVERLAP),
                     help=f"chunks overlapping each sample (default: the config's; at most {MAX_OVERLAP})")
    sep.add_argument("--batch-size", type=positive_int(MAX_BATCH),
                     help=f"chunks per forward call (default: the config's; at most {MAX_BATCH}); "
                          "does not change the result")
    sep.add_argument("--format", dest="fmt", default="wav", choices=["wav", "flac"], help="output file format")
    sep.add_argument("--subtype", default=None,
                     help="sample format: FLOAT (default for wav), PCM_16, PCM_24 (default for flac)")
    sep.add_argument("--output-rate", choices=["input", "model"], default="input",
                     help="write stems at the input file's sample rate (default) or the model's")
    sep.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    sep.set_defaults(func=cmd_separate)

    ins = sub.add_parser("inspect", help="describe a checkpoint's architecture (and check it against a config)")
    ins.add_argument("checkpoint")
    ins.add_argument("--config", help="also check that the checkpoint loads into this config's model")
    ins.add_argument("--trust-checkpoint", action="store_true", help="allow full pickle loading")
    ins.set_defaults(func=cmd_inspect)


def cmd_separate(args: argparse.Namespace) -> int:
    from streamer.errors import AudioError
    from streamer.inference.separate import SeparationOptions, list_inputs, plan_outputs, separate_file
    from streamer.outputs import output_folder

    inputs = list_inputs(args.inputs)
    for p in inputs:
        if not os.path.isfile(p):
            raise AudioError(f"audio file not found: {p}")
    plan = plan_outputs(inputs, args.out)  # inputs that would write the same stems folder: refused before any work
    with output_folder(args.out):  # a folder this run creates is removed again if the run fails
        loaded = load_from_args(args)
        if args.chunk_size is not None:
            check_length(f"--chunk-size {args.chunk_size}", args.chunk_size, loaded.config)
        subtype = args.subtype or ("FLOAT" if args.fmt == "wav" else "PCM_24")
        opts = SeparationOptions(
            chunk_size=args.chunk_size, num_overlap=args.num_overlap, batch_size=args.batch_size, tta=args.tta,
            instrumental=args.instrumental, output_rate=args.output_rate, fmt=args.fmt, subtype=subtype,
            device=str(loaded.device), precision=loaded.precision, backend=args.backend,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
        for path, folder in plan.items():
            t0 = time.perf_counter()
            result = separate_file(loaded.model, loaded.config, path, args.out, opts, folder=folder)
            took = time.perf_counter() - t0
            seconds = next(iter(result.stems.values())).shape[1] / result.sample_rate
            print(f"{path}: {len(result.files)} stems in {took:.1f} s ({took / max(seconds, 1e-9):.2f}x real time)"
                  f" -> {folder}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from streamer.msst.build import build_model
    from streamer.msst.checkpoint import check_compatible, describe_state_dict, read_state_dict
    from streamer.msst.config import load_config

    sd = read_state_dict(args.checkpoint, trust=args.trust_checkpoint)
    info = describe_state_dict(sd)
    n_params = sum(v.numel() for v in sd.values())
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in sd.values()})
    kind = "mel_band_roformer" if info.get("mel") else "bs_roformer" if info.get("bs") else "unknown"
    print(f"{args.checkpoint}: {len(sd)} tensors, {n_params:,} values, dtype {'/'.join(dtypes)}")
    print(f"  looks like: {kind}")
    for key in ("dim", "depth", "heads", "dim_head", "num_stems", "num_bands", "mask_linears",
                "mlp_expansion_factor", "sub_layer_depths", "linear"):
        if key in info:
            print(f"  {key}: {info[key]}")
    if args.config:
        config = load_config(args.config)
        check_compatible(build_model(config, device="meta"), sd, where=args.checkpoint)
        print(f"  matches {args.config}")
    return 0

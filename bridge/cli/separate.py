"""``stemstream separate`` (audio files into stems) and ``stemstream inspect`` (what a checkpoint holds)."""
from __future__ import annotations

import argparse
import os
import sys
import time

from .common import add_backend_arg, add_model_args, check_length, load_from_args, positive_int, residual_value

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
    add_model_args(sep, checkpoint_required=False, config_required=False)
    add_backend_arg(sep)
    remote = sep.add_argument_group("separation service (stemstream serve; needs the extra: "
                                    "pip install 'stemstream[serve]')")
    remote.add_argument("--remote", metavar="URL",
                        help="separate through the service at ws://HOST:PORT or wss://HOST:PORT (TLS) (the same "
                             "stems as here, the model runs there; --config, if given, is checked against the "
                             "served model)")
    remote.add_argument("--tls-ca", metavar="FILE", default=None,
                        help="with a wss:// URL: verify the service against this PEM CA or self-signed certificate "
                             "(default: the system's CAs)")
    remote.add_argument("--token", default=None, help="the service's token (default: $STEMSTREAM_TOKEN)")
    remote.add_argument("--model-name", default=None, metavar="NAME",
                        help="which of the service's models (default: its only one)")
    remote.add_argument("--wire", choices=["fp32", "fp16"], default="fp32",
                        help="audio on the wire as fp32 (default: the same stems as here) or fp16 (half the bytes)")
    sep.add_argument("--out", required=True, help="output folder")
    sep.add_argument("--instrumental", action="store_true",
                     help="also write instrumental = mix minus the vocals stem (or the first stem)")
    sep.add_argument("--residual", default=None,
                     help="make the stems sum to the input: 'spread' (what the model's stems miss is shared "
                          "equally, as the live separator does), or a stem's name (that stem becomes the input "
                          "minus the others); 'none': the model's stems as they are, as MSST writes them (the "
                          "default, except for --format stem, whose default is 'spread')")
    sep.add_argument("--tta", action="store_true",
                     help="test-time augmentation: average with channel-swapped and polarity-inverted passes (3x time)")
    sep.add_argument("--chunk-size", type=positive_int(),
                     help="samples per chunk (default: the config's; at most 60 s)")
    sep.add_argument("--num-overlap", type=positive_int(MAX_OVERLAP),
                     help=f"chunks overlapping each sample (default: the config's; at most {MAX_OVERLAP})")
    sep.add_argument("--batch-size", type=positive_int(MAX_BATCH),
                     help=f"chunks per forward call (default: the config's; at most {MAX_BATCH}); "
                          "does not change the result")
    sep.add_argument("--format", dest="fmt", default="wav", choices=["wav", "flac", "stem"],
                     help="output file format: wav or flac (a folder of stems per input), or stem: one Native "
                          "Instruments Stem file per input, OUT/<name>.stem.mp4 (Traktor, Mixxx; needs ffmpeg)")
    sep.add_argument("--subtype", default=None,
                     help="sample format: FLOAT (default for wav), PCM_16, PCM_24 (default for flac)")
    sep.add_argument("--output-rate", choices=["input", "model"], default=None,
                     help="write stems at the input file's sample rate (default; --format stem: 44.1 kHz, NI's "
                          "rate) or the model's")
    stem = sep.add_argument_group("stem files (--format stem)")
    stem.add_argument("--codec", choices=["aac", "alac"], default="aac",
                      help="aac at 256 kbps (default; the codec Traktor reads everywhere) or alac (lossless)")
    stem.add_argument("--bits", type=int, choices=[16, 24], default=16, help="ALAC bit depth (16 or 24; default 16)")
    stem.add_argument("--stem-order", metavar="DRUMS,BASS,OTHER,VOCALS", default=None,
                      help="the model's stems for NI's four slots, in NI's order (default: matched by name: "
                           "drums, bass, other, vocals)")
    sep.add_argument("--recursive", action="store_true",
                     help="folders: take the audio files in their subfolders too; the stems keep the "
                          "library's layout (OUT/<path inside the folder>/<stem>.wav)")
    sep.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    sep.add_argument("--fail-fast", action="store_true",
                     help="stop at the first file that cannot be separated (default: go on with the others, list "
                          "every failure at the end and exit with status 1, as --ray always does)")
    ray_group = sep.add_argument_group(
        "cluster (--ray; needs the extra: pip install 'stemstream[cluster]')",
        "Separate on a Ray cluster: a local Ray instance on this machine, or the cluster at ADDRESS "
        "(ray://head:10001, or head:6379 from a node of it). Inputs are read and stems written here; the "
        "model travels to the workers through Ray. OUT/manifest.jsonl records every file; a rerun skips "
        "the files already done with the same model and settings. Exit status 1 if any file failed.")
    ray_group.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                           help="run on Ray (no ADDRESS: a local instance using this machine's CPUs/GPUs)")
    ray_group.add_argument("--local-cpus", type=positive_int(4096),
                           help="CPUs the local Ray instance may use (default: all of this machine's)")
    ray_group.add_argument("--workers", type=positive_int(4096),
                           help="separator workers (default: as many as the cluster's CPUs, or GPUs, allow)")
    ray_group.add_argument("--cpus-per-worker", type=float, default=1.0,
                           help="CPUs (and torch threads) per worker (default 1)")
    ray_group.add_argument("--gpus-per-worker", type=float, default=0.0,
                           help="GPUs per worker (default 0: CPU workers; 1: one GPU each, 0.5: two per GPU)")
    ray_group.add_argument("--split-seconds", type=float, default=60.0,
                           help="files are separated in ranges of at most this much audio, on different workers, "
                                "and merged bit for bit as plain separate makes the stems; the driver holds a "
                                "few ranges at a time, whatever the file's length (default 60; 0: a file in one "
                                "range, memory growing with its length)")
    sep.set_defaults(func=cmd_separate)

    ins = sub.add_parser("inspect", help="describe a checkpoint's architecture (and check it against a config)")
    ins.add_argument("checkpoint")
    ins.add_argument("--config", help="also check that the checkpoint loads into this config's model")
    ins.add_argument("--trust-checkpoint", action="store_true", help="allow full pickle loading")
    ins.set_defaults(func=cmd_inspect)


def cmd_separate(args: argparse.Namespace) -> int:
    from streamer.errors import AudioError, SettingsError
    from streamer.inference.demix import RunnerCache
    from streamer.inference.residual import model_residual_index
    from streamer.inference.separate import STEM_FORMAT, check_stem_file, list_inputs, plan_outputs, separate_file
    from streamer.outputs import output_folder

    inputs = list_inputs(args.inputs, recursive=args.recursive)
    for item in inputs:
        p = item[0] if isinstance(item, tuple) else item
        if not os.path.isfile(p):
            raise AudioError(f"audio file not found: {p}")
    plan = plan_outputs(inputs, args.out)  # inputs that would write the same stems folder: refused before any work
    if args.remote:
        return _separate_remote(args, plan)
    for flag in ("token", "model_name", "tls_ca"):
        if getattr(args, flag):
            raise SettingsError(f"--{flag.replace('_', '-')} goes with --remote")
    if not args.config or not args.checkpoint:
        raise SettingsError("separate needs the model: --config MODEL.yaml --checkpoint MODEL.ckpt (or --remote URL "
                            "for a separation service)")
    if args.ray is not None:
        return _separate_on_ray(args, plan)
    with output_folder(args.out):  # a folder this run creates is removed again if the run fails
        loaded = load_from_args(args)
        if args.chunk_size is not None:
            check_length(f"--chunk-size {args.chunk_size}", args.chunk_size, loaded.config)
        opts = _options(args, device=str(loaded.device), precision=loaded.precision,
                        progress=not args.no_progress and sys.stderr.isatty())
        model_residual_index(loaded.config.stems, opts.residual)  # a residual that cannot be made: before any work
        if opts.fmt == STEM_FORMAT:
            check_stem_file(loaded.config, opts)   # ffmpeg, the codec, the model's four stems: before any work
        # one runner per chunk size for every file: the ONNX core (or auto's timing) is made once
        runners = RunnerCache(loaded.model, opts.device, opts.precision, opts.backend)
        return _each_file(args, plan, opts, lambda path, folder: separate_file(
            loaded.model, loaded.config, path, args.out, opts, folder=folder, runners=runners))


def _separate_remote(args: argparse.Namespace, plan: dict[str, str]) -> int:
    """``--remote``: each file through the separation service, with the same options, files and layout
    as here; a file that fails does not stop the others (as without --remote)."""
    from streamer.errors import SettingsError
    from streamer.outputs import output_folder

    if args.ray is not None:
        raise SettingsError("--remote separates through a service; --ray runs the model on a Ray cluster: one or the other")
    if args.checkpoint:
        raise SettingsError("--remote runs the service's model: drop --checkpoint (--config, if given, is checked "
                            "against the served model)")
    token = args.token or os.environ.get("STEMSTREAM_TOKEN")
    if not token:
        raise SettingsError("--remote needs the service's token: --token T or $STEMSTREAM_TOKEN")
    try:
        from streamer.remote.client import Connection, separate_file_remote
    except ImportError as exc:
        raise SettingsError(f"--remote needs the serve extra (pip install 'stemstream[serve]'): {exc}") from None
    Connection(args.remote, token, tls_ca=args.tls_ca).close()   # unreachable, TLS, token: one line, not one per file
    config = None
    if args.config:
        from streamer.msst.config import load_config

        config = load_config(args.config, model_type=args.model_type)
    opts = _options(args, device="cpu", precision="fp32", progress=not args.no_progress and sys.stderr.isatty())
    with output_folder(args.out):
        return _each_file(args, plan, opts, lambda path, folder: separate_file_remote(
            args.remote, token, path, args.out, opts, model=args.model_name, folder=folder, config=config,
            wire=args.wire, tls_ca=args.tls_ca), via=f" through {args.remote}")


def _each_file(args: argparse.Namespace, plan: dict[str, str], opts, separate_one, via: str = "") -> int:
    """Run ``separate_one(path, folder)`` for each input of ``plan``: a line per file as it is done; a file
    that fails does not stop the others (unless --fail-fast or it is the only one: then its one error
    line); every failure listed at the end, with exit status 1."""
    from streamer.errors import StemstreamError
    from streamer.inference.separate import STEM_FORMAT, stem_target

    failed: list[tuple[str, str]] = []
    for path, folder in plan.items():
        t0 = time.perf_counter()
        try:
            result = separate_one(path, folder)
        except StemstreamError as exc:
            if args.fail_fast or len(plan) == 1:
                raise  # one error line, as for any bad input
            # a file that cannot be separated fails alone (its stems folder untouched); the others go on
            print(f"{path}: failed: {exc}", file=sys.stderr, flush=True)
            failed.append((path, str(exc)))
            continue
        took = time.perf_counter() - t0
        what, where = (("stem file", stem_target(folder)) if opts.fmt == STEM_FORMAT
                       else (f"{len(result.files)} stems", folder))
        print(f"{path}: {what} in {took:.1f} s ({took / max(result.seconds, 1e-9):.2f}x real time){via} -> {where}",
              flush=True)
    if failed:
        print(f"{len(plan) - len(failed)} separated, {len(failed)} failed:", file=sys.stderr)
        for path, reason in failed:
            print(f"failed: {path}: {reason}", file=sys.stderr)
        return 1
    return 0


def _options(args: argparse.Namespace, device: str, precision: str, progress: bool):
    """separate's flags as SeparationOptions."""
    from streamer.inference.separate import SeparationOptions

    from streamer.errors import SettingsError
    from streamer.formats.nistem import parse_stem_order
    from streamer.inference.separate import STEM_FORMAT, StemFileOptions

    stem = None
    if args.fmt == STEM_FORMAT:
        if args.subtype:
            raise SettingsError("--subtype is for wav/flac stems; a stem file's sample format is its --codec "
                                "(aac, or alac with --bits 16/24)")
        order = parse_stem_order(args.stem_order)
        out_rate = {None: 44100, "input": None}.get(args.output_rate, "model")
        stem = StemFileOptions(codec=args.codec, bits=args.bits, order=tuple(order) if order else None,
                               out_rate=out_rate)
    elif args.stem_order or args.codec != "aac" or args.bits != 16:
        raise SettingsError("--codec, --bits and --stem-order go with --format stem")
    subtype = args.subtype or ("FLOAT" if args.fmt in ("wav", STEM_FORMAT) else "PCM_24")
    residual = args.residual if args.residual is not None else ("spread" if args.fmt == STEM_FORMAT else "none")
    return SeparationOptions(
        chunk_size=args.chunk_size, num_overlap=args.num_overlap, batch_size=args.batch_size, tta=args.tta,
        instrumental=args.instrumental, residual=residual_value(residual),
        output_rate="model" if args.output_rate == "model" else "input", fmt=args.fmt, subtype=subtype,
        device=device, precision=precision, backend=args.backend, progress=progress, stem=stem,
    )


def _separate_on_ray(args: argparse.Namespace, plan: dict[str, str]) -> int:
    from streamer.cluster import ray_available
    from streamer.errors import SettingsError

    if not ray_available():
        raise SettingsError("--ray needs Ray: pip install 'stemstream[cluster]' (or pip install 'ray[data]')")
    for flag, value in (("--cpus-per-worker", args.cpus_per_worker), ("--gpus-per-worker", args.gpus_per_worker),
                        ("--split-seconds", args.split_seconds)):
        if not value >= 0 or value != value or value == float("inf"):
            raise SettingsError(f"{flag} must be a finite number >= 0, got {value:g}")
    if args.local_cpus is not None and args.ray != "local":
        raise SettingsError("--local-cpus sizes a local Ray instance; with a cluster ADDRESS the cluster decides")
    if args.cpus_per_worker <= 0 and args.gpus_per_worker <= 0:
        raise SettingsError("--cpus-per-worker 0 needs --gpus-per-worker above 0")
    from streamer.inference.loader import load_model
    from streamer.cluster.job import JobOptions, ModelSource, run_job
    from streamer.inference.residual import model_residual_index

    # the model is loaded here once first (on the CPU), so that a wrong config or checkpoint is one
    # error line before any cluster starts
    checked = load_model(args.config, args.checkpoint, device="cpu", precision="fp32",
                         trust=args.trust_checkpoint, model_type=args.model_type)
    if args.chunk_size is not None:
        check_length(f"--chunk-size {args.chunk_size}", args.chunk_size, checked.config)
    config = checked.config
    del checked
    # device and precision as asked: each worker resolves them for its own hardware
    opts = _options(args, device=args.device, precision=args.precision, progress=False)
    model_residual_index(config.stems, opts.residual)
    source = ModelSource.from_files(config, args.config, args.checkpoint, device=args.device,
                                    precision=args.precision, trust=args.trust_checkpoint)
    job = JobOptions(address=None if args.ray == "local" else args.ray, workers=args.workers,
                     cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
                     split_seconds=args.split_seconds, num_cpus=args.local_cpus, progress=not args.no_progress and sys.stderr.isatty())
    summary = run_job(plan, args.out, source, opts, job)
    for line in summary.lines():
        print(line)
    return 1 if summary.failed else 0


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

"""The ``stemstream`` command line."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(REPO_ROOT, "configs", "demo", "tiny_bs_roformer_4stem.yaml")
BENCH_CONFIG = os.path.join(REPO_ROOT, "configs", "models", "bs_roformer_64x2_4stem.yaml")

log = logging.getLogger("stemstream")


def _add_model_args(p: argparse.ArgumentParser, checkpoint_required: bool = True) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stemstream",
        description="Real-time and offline music stem separation with BS-RoFormer / Mel-Band RoFormer models "
                    "(MSST-format .ckpt + YAML).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    sep = sub.add_parser(
        "separate", help="separate audio files into stems",
        description="Separate audio files into one file per stem: OUT/<file name>/<stem>.wav. The input is "
                    "resampled to the model's rate and mono/stereo adapted; stems are written back at the "
                    "input's rate and length (or the model's rate with --output-rate model).",
    )
    sep.add_argument("inputs", nargs="+", help="audio files (wav, flac, ogg, mp3, aiff) or folders of them")
    _add_model_args(sep)
    sep.add_argument("--out", required=True, help="output folder")
    sep.add_argument("--instrumental", action="store_true",
                     help="also write instrumental = mix minus the vocals stem (or the first stem)")
    sep.add_argument("--tta", action="store_true",
                     help="test-time augmentation: average with channel-swapped and polarity-inverted passes (3x time)")
    sep.add_argument("--chunk-size", type=int, help="samples per chunk (default: the config's)")
    sep.add_argument("--num-overlap", type=int, help="chunks overlapping each sample (default: the config's)")
    sep.add_argument("--batch-size", type=int, help="chunks per forward call (default: the config's); "
                                                     "does not change the result")
    sep.add_argument("--format", dest="fmt", default="wav", choices=["wav", "flac"], help="output file format")
    sep.add_argument("--subtype", default=None,
                     help="sample format: FLOAT (default for wav), PCM_16, PCM_24 (default for flac)")
    sep.add_argument("--output-rate", choices=["input", "model"], default="input",
                     help="write stems at the input file's sample rate (default) or the model's")
    sep.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    demo = sub.add_parser("demo", help="separate a generated example clip with the bundled demo model",
                          description="Runs the main job on a short generated clip and writes the stems.")
    demo.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    demo.add_argument("--seconds", type=float, default=6.0, help="length of the generated clip")
    demo.add_argument("--seed", type=int, default=0, help="seed for the clip and the untrained weights")

    ins = sub.add_parser("inspect", help="describe a checkpoint's architecture (and check it against a config)")
    ins.add_argument("checkpoint")
    ins.add_argument("--config", help="also check that the checkpoint loads into this config's model")
    ins.add_argument("--trust-checkpoint", action="store_true", help="allow full pickle loading")

    bench = sub.add_parser("bench-model", help="time one forward pass per chunk length",
                           description="Prints the median time of one forward call of the model (random weights "
                                       "unless --checkpoint) for each chunk length.")
    bench.add_argument("--config", action="append", required=True, help="config YAML (repeatable)")
    bench.add_argument("--seconds", type=float, nargs="+", default=[1.0, 2.0, 2.98],
                       help="chunk lengths in seconds")
    bench.add_argument("--repeats", type=int, default=3)
    bench.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    bench.add_argument("--device", default="cpu")

    sb = sub.add_parser(
        "bench", help="stream audio through the engine at real-time pace and report latency, speed and misses",
        description="Feeds a generated clip at real-time pace through a simulated audio callback (--block frames) "
                    "into the streaming engine in real-time mode and prints the settings, the latency (total and "
                    "parts), inference time per hop, the real-time factor, deadline misses and the audio-side "
                    "cost per block. Settings come from --preset, overridden by --window/--hop/--lookahead.",
    )
    sb.add_argument("--config", default=BENCH_CONFIG,
                    help=f"model config (default: {os.path.relpath(BENCH_CONFIG, REPO_ROOT)}, random weights)")
    sb.add_argument("--checkpoint", help="weights (default: random; speed does not depend on them)")
    sb.add_argument("--preset", choices=["offline-exact", "balanced", "low"], default="balanced",
                    help="latency preset the settings start from (default: balanced)")
    sb.add_argument("--window", type=float, help="window in seconds")
    sb.add_argument("--hop", type=float, nargs="+",
                    help="hop in seconds; several values run one after another (to find the smallest that keeps up)")
    sb.add_argument("--lookahead", type=float, help="look-ahead in seconds (default with --hop: one hop)")
    sb.add_argument("--crossfade-ms", type=float, help="crossfade between windows in ms (default: 10, or less)")
    sb.add_argument("--allowance", type=float, help="compute allowance in seconds (default: one hop)")
    sb.add_argument("--seconds", type=float, default=60.0, help="length of the stream (default 60)")
    sb.add_argument("--block", type=int, default=256, help="frames per simulated callback (default 256)")
    sb.add_argument("--worker", choices=["thread", "process"], default="process",
                    help="where inference runs (default: process, see README)")
    sb.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    sb.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="default: fp32 on CPU, bf16 on CUDA")
    sb.add_argument("--threads", type=int, help="torch threads of the inference worker (default: cores - 1)")
    return parser


def _resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        from streamer import StemstreamError

        raise StemstreamError(f"--device {name}: no CUDA device is available (use --device cpu)")
    return name


def _resolve_precision(precision: str, device: str, use_amp: bool) -> str:
    if not device.startswith("cuda"):
        return "fp32"
    if precision == "auto":
        return "bf16" if use_amp else "fp32"
    return precision


def _load_model(args):
    import streamer

    config = streamer.load_config(args.config, model_type=args.model_type)
    device = _resolve_device(args.device)
    model = streamer.build_model(config)
    if args.checkpoint:
        streamer.load_checkpoint(model, args.checkpoint, trust=args.trust_checkpoint)
    model = model.to(device)
    return config, model, device


def cmd_separate(args) -> int:
    from streamer.audio import check_writable_dir
    from streamer.separate import SeparationOptions, list_inputs, separate_file

    inputs = list_inputs(args.inputs)
    for p in inputs:
        if not os.path.isfile(p):
            from streamer import AudioError

            raise AudioError(f"audio file not found: {p}")
    check_writable_dir(args.out)
    config, model, device = _load_model(args)
    subtype = args.subtype or ("FLOAT" if args.fmt == "wav" else "PCM_24")
    opts = SeparationOptions(
        chunk_size=args.chunk_size, num_overlap=args.num_overlap, batch_size=args.batch_size, tta=args.tta,
        instrumental=args.instrumental, output_rate=args.output_rate, fmt=args.fmt, subtype=subtype,
        device=device, precision=_resolve_precision(args.precision, device, config.use_amp),
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    for path in inputs:
        t0 = time.perf_counter()
        result = separate_file(model, config, path, args.out, opts)
        took = time.perf_counter() - t0
        seconds = next(iter(result.stems.values())).shape[1] / result.sample_rate
        print(f"{path}: {len(result.files)} stems in {took:.1f} s ({took / max(seconds, 1e-9):.2f}x real time)"
              f" -> {os.path.dirname(result.files[0])}")
    return 0


def cmd_demo(args) -> int:
    import torch

    import streamer
    from streamer.audio import AtomicWriter, check_writable_dir
    from streamer.separate import SeparationOptions, separate_array
    from streamer.testsignals import generated_clip

    config = streamer.load_config(DEMO_CONFIG)
    checkpoint = os.path.splitext(DEMO_CONFIG)[0] + ".ckpt"
    torch.manual_seed(args.seed)
    model = streamer.build_model(config)
    trained = os.path.exists(checkpoint)
    if trained:
        streamer.load_checkpoint(model, checkpoint)
    mix, truth = generated_clip(args.seconds, config.sample_rate, seed=args.seed, channels=config.channels)
    out = check_writable_dir(args.out)
    t0 = time.perf_counter()
    stems = separate_array(model, config, mix, SeparationOptions(instrumental=True, progress=False))
    took = time.perf_counter() - t0
    with AtomicWriter() as writer:
        writer.write(os.path.join(out, "mix.wav"), mix, config.sample_rate, "FLOAT")
        for name, data in stems.items():
            writer.write(os.path.join(out, f"{name}.wav"), data, config.sample_rate, "FLOAT")
    print(f"model: {os.path.relpath(DEMO_CONFIG)} ({config.model_type}, stems {', '.join(config.stems)})")
    if not trained:
        print("WARNING: no trained checkpoint is bundled yet: the weights are RANDOM (untrained), "
              "so the stems below are not a real separation. This run shows the pipeline end to end.")
    print(f"clip: {args.seconds:.1f} s generated at {config.sample_rate} Hz; separated in {took:.2f} s "
          f"({took / args.seconds:.2f}x real time, CPU threads: {torch.get_num_threads()})")
    for name in config.stems:
        ref, est = truth[name], stems[name]
        sdr = 10 * np.log10((ref**2).sum() / max(((ref - est) ** 2).sum(), 1e-12) + 1e-12)
        print(f"  {name:<8} SDR {sdr:6.2f} dB  -> {os.path.join(out, name + '.wav')}")
    print(f"  mix and instrumental (mix minus vocals) written to {out}")
    return 0


def cmd_inspect(args) -> int:
    import streamer
    from streamer.checkpoint import check_compatible, describe_state_dict

    sd = streamer.read_state_dict(args.checkpoint, trust=args.trust_checkpoint)
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
        config = streamer.load_config(args.config)
        check_compatible(streamer.build_model(config, device="meta"), sd, where=args.checkpoint)
        print(f"  matches {args.config}")
    return 0


def cmd_bench_model(args) -> int:
    import torch

    import streamer
    from streamer.benchmark import time_chunks

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
          f"repeats {args.repeats} (median)")
    print(f"{'config':<44} {'chunk s':>8} {'frames':>7} {'ms/chunk':>10} {'x real time':>12}")
    for path in args.config:
        config = streamer.load_config(path)
        torch.manual_seed(0)
        model = streamer.build_model(config).to(args.device)
        for r in time_chunks(model, config.sample_rate, args.seconds, repeats=args.repeats, device=args.device):
            frames = r.samples // config.stft_hop + 1
            print(f"{os.path.basename(path):<44} {r.seconds:>8.2f} {frames:>7d} {r.median * 1e3:>10.1f} "
                  f"{r.realtime_factor:>12.3f}")
    return 0


def _bench_engines(args, config, model):
    """One engine per requested hop (or the preset's), in real-time mode."""
    import streamer

    rate = config.sample_rate
    base = streamer.preset_settings(args.preset, config)
    hops = [round(h * rate) for h in args.hop] if args.hop else [base.hop]
    for hop in hops:
        window = round(args.window * rate) if args.window else base.window
        if args.lookahead is not None:
            lookahead = round(args.lookahead * rate)
        else:
            lookahead = hop if args.hop else base.lookahead
        if args.crossfade_ms is not None:
            crossfade = round(args.crossfade_ms * rate / 1000)
        elif base.crossfade == "msst" and not (args.hop or args.window or args.lookahead is not None):
            crossfade = "msst"
        else:
            crossfade = min(hop, lookahead, round(0.01 * rate))
        allowance = round(args.allowance * rate) if args.allowance is not None else None
        yield streamer.StreamEngine(
            model, config.stems, rate, window=window, hop=hop, lookahead=lookahead, crossfade=crossfade,
            residual=config.stems[-1], device=_resolve_device(args.device), precision=args.precision,
            realtime=True, worker=args.worker, compute_allowance=allowance, threads=args.threads,
            channels=config.channels)


def cmd_bench(args) -> int:
    import torch

    import streamer
    from streamer.stream_bench import run_realtime

    config = streamer.load_config(args.config)
    torch.manual_seed(0)
    model = streamer.build_model(config)
    if args.checkpoint:
        streamer.load_checkpoint(model, args.checkpoint)
    rate = config.sample_rate
    ms = lambda n: 1000.0 * n / rate  # noqa: E731
    print(f"model: {os.path.relpath(args.config)} ({config.model_type}, {sum(p.numel() for p in model.parameters()):,} "
          f"parameters, stems {', '.join(config.stems)}); torch {torch.__version__}; {args.seconds:.0f} s of audio "
          f"in {args.block}-frame callbacks ({ms(args.block):.1f} ms) at real-time pace; worker: {args.worker}")
    results = []
    for engine in _bench_engines(args, config, model):
        with engine:
            print(f"\n{engine.settings.describe(rate)}; device {engine.device}, {engine.precision}")
            p = engine.latency_parts
            print(f"  latency {ms(p['total']):.0f} ms = look-ahead {ms(p['lookahead']):.0f} + hop {ms(p['hop']):.0f} "
                  f"(algorithmic {ms(p['algorithmic']):.0f}) + compute allowance {ms(p['compute']):.0f} ms")
            r = run_realtime(engine, args.seconds, args.block)
        st, sm = r.stats, r.summary()
        print(f"  inference per hop: median {st['infer_ms_median']:.1f} ms, p99 {st['infer_ms_p99']:.1f} ms, "
              f"max {st['infer_ms_max']:.1f} ms over {st['hops']} hops; real-time factor {st['realtime_factor']:.3f}")
        print(f"  deadline misses {st['deadline_misses']} (late results {st['late_results']}, skipped windows "
              f"{st['skipped_windows']})")
        print(f"  audio side per {args.block}-frame block: median {sm['cost_us_median']:.0f} us, "
              f"p99 {sm['cost_us_p99']:.0f} us, max {sm['cost_us_max']:.0f} us; callback start late p99 "
              f"{sm['wake_late_us_p99']:.0f} us, max {sm['wake_late_us_max']:.0f} us; overruns {sm['overruns']}")
        if st["error"]:
            print(f"  worker error: {st['error']}")
        results.append((engine.hop, st["deadline_misses"]))
    if len(results) > 1:
        ok = [h for h, misses in results if misses == 0]
        print(f"\nsmallest hop with zero misses: {ms(min(ok)):.0f} ms" if ok else "\nno hop ran without misses")
    return 0


COMMANDS = {"bench": cmd_bench, "separate": cmd_separate, "demo": cmd_demo, "inspect": cmd_inspect, "bench-model": cmd_bench_model}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s: %(message)s", stream=sys.stderr)
    if args.command is None:
        parser.print_help()
        return 2
    from streamer import StemstreamError

    try:
        return COMMANDS[args.command](args)
    except (StemstreamError, OSError) as exc:
        if args.verbose:
            traceback.print_exc()
        message = str(exc) if isinstance(exc, StemstreamError) else f"{exc.strerror or exc}: {exc.filename or ''}"
        print(f"error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark commands: ``bench`` (the engine at real-time pace), ``bench-model`` (forward time per
chunk) and ``bench-mixer`` (the stem mixer per block). They print numbers; BENCHMARKS.md keeps them."""
from __future__ import annotations

import argparse
import os

import numpy as np

from streamer.assets import DEMO_CONFIG

from .common import (MAX_BLOCK, MAX_SCORE_SECONDS, MAX_STREAM_SECONDS, MAX_THREADS, MAX_WINDOW_SECONDS, add_backend_arg,
                     add_preset_arg, check_length, positive_int, seconds, shown_path)

MAX_STEMS = 64
MAX_BUSES = 64
MAX_MIXER_BLOCKS = 1_000_000
MAX_REPEATS = 1000


def register(sub) -> None:
    sb = sub.add_parser(
        "bench", help="stream audio through the engine at real-time pace and report latency, speed and misses",
        description="Feeds a generated clip at real-time pace through a simulated audio callback (--block frames) "
                    "into the streaming engine in real-time mode and prints the settings, the latency (total and "
                    "parts), inference time per hop, the real-time factor, deadline misses and the audio-side "
                    "cost per block. Settings come from --preset, overridden by --window/--hop/--lookahead.",
    )
    sb.add_argument("--config", default=DEMO_CONFIG,
                    help="model config (default: the demo model's, a 4-stem BS-RoFormer 64x2; random weights)")
    sb.add_argument("--checkpoint", help="weights (default: random; speed does not depend on them)")
    sb.add_argument("--trust-checkpoint", action="store_true",
                    help="allow a pickled checkpoint to run arbitrary code when loading (weights_only=False); "
                         "only for files from a source you trust")
    add_preset_arg(sb, "latency preset the settings start from")
    sb.add_argument("--window", type=float, help="window in seconds")
    sb.add_argument("--hop", type=float, nargs="+",
                    help="hop in seconds; several values run one after another (to find the smallest that keeps up)")
    sb.add_argument("--lookahead", type=float, help="look-ahead in seconds (default with --hop: one hop)")
    sb.add_argument("--crossfade-ms", type=float, help="crossfade between windows in ms (default: 10, or less)")
    sb.add_argument("--allowance", type=float, help="compute allowance in seconds (default: one hop)")
    sb.add_argument("--seconds", type=seconds(MAX_STREAM_SECONDS), default=60.0,
                    help=f"length of the stream (default 60, at most {MAX_STREAM_SECONDS:g})")
    sb.add_argument("--block", type=positive_int(MAX_BLOCK), default=256,
                    help=f"frames per simulated callback (default 256, at most {MAX_BLOCK})")
    sb.add_argument("--worker", choices=["thread", "process"], default="process",
                    help="where inference runs (default: process, see README)")
    sb.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    sb.add_argument("--precision", choices=["fp32", "bf16", "fp16", "int8"],
                    help="default: fp32 on CPU, bf16 on CUDA; bf16 on a CPU that has it natively; int8: the ONNX "
                         "Runtime core with int8 matrix products (--backend onnx or auto)")
    add_backend_arg(sb)
    sb.add_argument("--threads", type=positive_int(MAX_THREADS),
                    help="torch threads of the inference worker (default: cores - 1)")
    sb.set_defaults(func=cmd_bench)

    bm = sub.add_parser("bench-model", help="time one forward pass per chunk length",
                        description="Prints the median time of one forward call of the model (random weights "
                                    "unless --checkpoint) for each chunk length.")
    bm.add_argument("--config", action="append", required=True, help="config YAML (repeatable)")
    bm.add_argument("--seconds", type=seconds(MAX_WINDOW_SECONDS), nargs="+", default=[1.0, 2.0, 2.98],
                    help=f"chunk lengths in seconds (at most {MAX_WINDOW_SECONDS:g})")
    bm.add_argument("--repeats", type=positive_int(MAX_REPEATS), default=3)
    bm.add_argument("--threads", type=positive_int(MAX_THREADS), default=None,
                    help="torch CPU threads (default: torch's)")
    bm.add_argument("--device", default="cpu")
    bm.add_argument("--compare", action="store_true",
                    help="time every backend and precision this machine can run (eager torch fp32, torch bf16 "
                         "where the CPU has it, the ONNX Runtime core) interleaved, with the ratio to eager fp32 "
                         "and the largest error against it")
    bm.set_defaults(func=cmd_bench_model)

    bx = sub.add_parser("bench-mixer", help="time the stem mixer per audio block",
                        description="Times StemMixer.process (gain ramps, mute/solo, meters) per block with "
                                    "changing controls and prints the median and p99.")
    bx.add_argument("--stems", type=positive_int(MAX_STEMS), default=4)
    bx.add_argument("--buses", type=positive_int(MAX_BUSES), default=2)
    bx.add_argument("--block", type=positive_int(MAX_BLOCK), default=256)
    bx.add_argument("--blocks", type=positive_int(MAX_MIXER_BLOCKS), default=20000)
    bx.set_defaults(func=cmd_bench_mixer)

    bg = sub.add_parser(
        "bench-gpu", help="check and time the GPU path in one run (JSON + Markdown report)",
        description="The prepared GPU check (streamer.lab.gpu_check): correctness on the device, time per window "
                    "for the viperx BS 512x12 and Kim Mel 384x6 architectures at 2/4/8 s in fp32/bf16/fp16, eager and "
                    "as CUDA graphs, the arithmetic floor, torch.compile if it compiles within 60 s, offline demix "
                    "against plain eager fp16, and the smallest real-time hop. About 7 minutes on one H200; "
                    "--dry-run runs the same code on the CPU with tiny models.")
    bg.add_argument("out", help="folder for gpu_check.json and gpu_check.md")
    bg.add_argument("--dry-run", action="store_true", help="tiny models on the CPU, short settings (seconds)")
    bg.add_argument("--budget", type=seconds(MAX_SCORE_SECONDS),
                    help="seconds after which the remaining sections are skipped")
    bg.set_defaults(func=cmd_bench_gpu)


def _bench_engines(args: argparse.Namespace, config, model):
    """One engine per requested hop (or the preset's), in real-time mode."""
    from streamer.inference.precision import resolve_device
    from streamer.inference.residual import default_residual
    from streamer.stream.engine import StreamEngine
    from streamer.stream.settings import MSST_CROSSFADE, preset_settings, seconds_to_samples

    rate = config.sample_rate
    base = preset_settings(args.preset, config)
    hops = [seconds_to_samples("--hop", h, rate) for h in args.hop] if args.hop else [base.hop]
    window = base.window
    if args.window is not None:  # 0 is a value here (refused below), not "the preset's"
        window = seconds_to_samples("--window", args.window, rate)
        check_length(f"--window {args.window:g} s ({window} samples)", window, config)
    for hop in hops:
        if args.lookahead is not None:
            lookahead = seconds_to_samples("--lookahead", args.lookahead, rate)
        else:
            lookahead = hop if args.hop else base.lookahead
        if args.crossfade_ms is not None:
            crossfade = seconds_to_samples("--crossfade-ms", args.crossfade_ms / 1000, rate)
        elif base.crossfade == MSST_CROSSFADE and not (args.hop or args.window is not None
                                                       or args.lookahead is not None):
            crossfade = MSST_CROSSFADE
        else:
            crossfade = None  # the engine's default: 10 ms, or less to fit the hop and look-ahead
        allowance = seconds_to_samples("--allowance", args.allowance, rate) if args.allowance is not None else None
        yield StreamEngine(
            model, config.stems, rate, window=window, hop=hop, lookahead=lookahead, crossfade=crossfade,
            residual=default_residual(config.stems), device=resolve_device(args.device), precision=args.precision,
            realtime=True, worker=args.worker, compute_allowance=allowance, threads=args.threads,
            channels=config.channels, backend=args.backend)


def _check_settings(args: argparse.Namespace) -> None:
    """The stream-setting flags before any work: finite, >= 0 and within the limits (how they fit together,
    and the window against the model, the stream settings check once the model is known)."""
    from streamer.stream.settings import check_seconds

    most = MAX_WINDOW_SECONDS
    values = [("--window", args.window, most, "s"), ("--lookahead", args.lookahead, most, "s"),
              ("--allowance", args.allowance, most, "s"), ("--crossfade-ms", args.crossfade_ms, most * 1000, "ms")]
    values += [("--hop", h, most, "s") for h in args.hop or []]
    for name, value, limit, unit in values:
        if value is not None:
            check_seconds(name, value, 0.0, limit, unit)


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from streamer.errors import SettingsError
    from streamer.inference.loader import load_model
    from streamer.inference.precision import resolve_device
    from streamer.lab.benchmarks import run_realtime

    _check_settings(args)
    resolve_device(args.device)  # refuse a device this machine lacks before any work
    loaded = load_model(args.config, args.checkpoint, seed=0, trust=args.trust_checkpoint)
    config, model = loaded.config, loaded.model
    rate = config.sample_rate
    frames = int(round(args.seconds * rate))
    if args.block > frames:
        raise SettingsError(f"--block {args.block} frames is longer than the {args.seconds:g} s stream "
                            f"({frames} frames)")
    ms = lambda n: 1000.0 * n / rate  # noqa: E731
    print(f"model: {shown_path(args.config)} ({config.model_type}, {loaded.num_parameters:,} "
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
        print(f"  backend: {st['backend']}")
        print(f"  inference per hop: median {st['infer_ms_median']:.1f} ms, p99 {st['infer_ms_p99']:.1f} ms, "
              f"max {st['infer_ms_max']:.1f} ms over {st['hops']} hops; real-time factor {st['realtime_factor']:.3f}")
        print(f"  deadline misses {st['deadline_misses']} (late results {st['late_results']}, skipped windows "
              f"{st['skipped_windows']})")
        print(f"  audio side per {args.block}-frame block: median {sm['cost_us_median']:.0f} us, "
              f"p99 {sm['cost_us_p99']:.0f} us, max {sm['cost_us_max']:.0f} us; callback start late p99 "
              f"{sm['wake_late_us_p99']:.0f} us, max {sm['wake_late_us_max']:.0f} us; overruns {sm['overruns']}")
        if st["worker_deaths"]:
            print(f"  worker died {st['worker_deaths']} time(s), restarted {st['worker_restarts']} time(s)"
                  f"{'; gave up (dry input since)' if st['worker_given_up'] else ''}")
        if st["error"]:
            print(f"  worker error: {st['error']}")
        results.append((engine.hop, st["deadline_misses"]))
    if len(results) > 1:
        ok = [h for h, misses in results if misses == 0]
        print(f"\nsmallest hop with zero misses: {ms(min(ok)):.0f} ms" if ok else "\nno hop ran without misses")
    return 0


def _models(args: argparse.Namespace):
    """bench-model's models, one at a time: (config path, loaded model with random weights, the --seconds
    in samples, each checked against the model before any timing)."""
    from streamer.inference.loader import load_model

    for path in args.config:
        loaded = load_model(path, device=args.device, seed=0)
        lengths = []
        for sec in args.seconds:
            n = int(round(sec * loaded.config.sample_rate))
            check_length(f"--seconds {sec:g} s ({n} samples)", n, loaded.config)
            lengths.append(n)
        yield path, loaded, lengths


def cmd_bench_model(args: argparse.Namespace) -> int:
    import torch

    from streamer.inference.precision import resolve_device
    from streamer.lab.benchmarks import time_chunks

    resolve_device(args.device)  # refuse a device this machine lacks before any work
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compare:
        return _compare_backends(args)
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
          f"repeats {args.repeats} (median)")
    print(f"{'config':<44} {'chunk s':>8} {'frames':>7} {'ms/chunk':>10} {'x real time':>12}")
    for path, loaded, _ in _models(args):
        config = loaded.config
        for r in time_chunks(loaded.model, config.sample_rate, args.seconds, repeats=args.repeats,
                             device=loaded.device):
            frames = r.samples // config.stft_hop + 1
            print(f"{os.path.basename(path):<44} {r.seconds:>8.2f} {frames:>7d} {r.median * 1e3:>10.1f} "
                  f"{r.realtime_factor:>12.3f}")
    return 0


def _compare_backends(args: argparse.Namespace) -> int:
    """bench-model --compare: each backend and precision against eager fp32, timed interleaved in one process."""
    import time

    import numpy as np
    import torch

    from streamer.inference.precision import cpu_has_native_bf16
    from streamer.inference.runner import make_runner

    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, {args.repeats} interleaved "
          f"runs per option (min and median ms per window); error: max |out - eager fp32| / max |eager fp32|")
    print(f"{'config':<40} {'s':>5} {'option':<34} {'min ms':>8} {'median':>8} {'x eager':>8} {'error':>9}")
    for path, loaded, lengths in _models(args):
        config = loaded.config
        for sec, n in zip(args.seconds, lengths):
            options = [("torch fp32 (eager)", make_runner(loaded.model, n, device, "fp32", backend="torch"))]
            if device.type == "cuda" or cpu_has_native_bf16():
                options.append(("torch bf16", make_runner(loaded.model, n, device, "bf16", backend="torch")))
            if device.type == "cpu":
                for precision in ("fp32", "int8"):
                    onnx = make_runner(loaded.model, n, device, precision, backend="onnx", log=print)
                    if onnx.backend == "onnx":
                        options.append((onnx.describe(), onnx))
            x = (np.random.default_rng(0).standard_normal((config.channels, n)) * 0.1).astype(np.float32)
            outs = [r(x) for _, r in options]  # also the warm-up
            times: list[list[float]] = [[] for _ in options]
            for _ in range(args.repeats):
                for i, (_, r) in enumerate(options):
                    t = time.perf_counter()
                    r(x)
                    times[i].append(time.perf_counter() - t)
            base = min(times[0])
            scale = max(1e-12, float(np.abs(outs[0]).max()))
            for (name, _), t, out in zip(options, times, outs):
                err = float(np.abs(out - outs[0]).max()) / scale
                print(f"{os.path.basename(path):<40} {sec:>5.2f} {name:<34} {1e3 * min(t):>8.1f} "
                      f"{1e3 * float(np.median(t)):>8.1f} {base / min(t):>7.2f}x {err:>9.1e}")
    return 0


def cmd_bench_gpu(args: argparse.Namespace) -> int:
    from streamer.errors import SettingsError
    from streamer.lab.gpu_check import main as gpu_check

    argv = (["--dry-run"] if args.dry_run else []) + (["--budget", repr(args.budget)] if args.budget else [])
    argv += ["--", args.out]  # an output folder named like an option stays the folder
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            raise SettingsError("bench-gpu needs a CUDA device (use --dry-run for the CPU rehearsal)")
    return gpu_check(argv)


def cmd_bench_mixer(args: argparse.Namespace) -> int:
    from ..mix.bench import time_mixer

    t = time_mixer(args.stems, args.buses, args.block, args.blocks) * 1e6
    print(f"StemMixer.process: {args.stems} stems, {args.buses} buses, {args.block}-frame blocks, {args.blocks} blocks "
          f"(a gain change every 100): median {np.median(t):.1f} us, p99 {np.percentile(t, 99):.1f} us, "
          f"max {t.max():.1f} us; block period {1e6 * args.block / 44100:.0f} us")
    return 0

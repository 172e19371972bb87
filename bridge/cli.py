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
DEMO_CONFIG = os.path.join(REPO_ROOT, "configs", "demo", "demo_bs_roformer_64x2.yaml")
DEMO_SONG = os.path.join(REPO_ROOT, "examples", "song")
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

    demo = sub.add_parser(
        "demo", help="stream the bundled example song through the demo model: stems, karaoke mix, scores",
        description="Runs the streaming engine with the bundled demo model over the bundled example song "
                    "(examples/song, generated, with ground-truth stems) in audio-callback-sized blocks and writes "
                    "OUT/{mix,vocals,drums,bass,other,karaoke}.wav and OUT/spectrograms.png; prints the latency, the "
                    "real-time factor and the SDR reached per stem.")
    demo.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    demo.add_argument("--preset", choices=["offline-exact", "balanced", "low"], default="balanced",
                      help="latency preset (default: balanced)")
    demo.add_argument("--block", type=int, default=256, help="frames per block fed to the engine (default 256)")
    demo.add_argument("--config", default=DEMO_CONFIG, help=argparse.SUPPRESS)
    demo.add_argument("--song", default=DEMO_SONG, help=argparse.SUPPRESS)

    ev = sub.add_parser(
        "eval", help="score a model offline and streaming at several latencies (SDR, uSDR, plot)",
        description="Separates every song under DATA (MUSDB18-HQ layout: one folder per song with mixture.wav and "
                    "the stems' wavs) offline and with the streaming engine at each latency preset and each "
                    "--setting, and prints per stem and on average the median per-second SDR, the whole-track "
                    "uSDR and the improvement over the unprocessed mixture; --plot writes SDR against latency.")
    ev.add_argument("data", nargs="+", help="folders of song folders")
    _add_model_args(ev)
    ev.add_argument("--presets", nargs="*", default=["offline-exact", "balanced", "low"],
                    choices=["offline-exact", "balanced", "low"], help="latency presets to score")
    ev.add_argument("--setting", action="append", default=[], metavar="W,H,A",
                    help="extra streaming setting: window, hop, look-ahead in seconds (repeatable)")
    ev.add_argument("--seconds", type=float, help="score only the first seconds of each song")
    ev.add_argument("--plot", help="write a PNG of SDR against latency here")

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

    bm = sub.add_parser("bench-mixer", help="time the stem mixer per audio block",
                        description="Times StemMixer.process (gain ramps, mute/solo, meters) per block with "
                                    "changing controls and prints the median and p99.")
    bm.add_argument("--stems", type=int, default=4)
    bm.add_argument("--buses", type=int, default=2)
    bm.add_argument("--block", type=int, default=256)
    bm.add_argument("--blocks", type=int, default=20000)

    sy = sub.add_parser(
        "synth", help="generate multitrack songs with ground-truth stems (MUSDB18-HQ layout)",
        description="Writes OUT/synth_<seed>/{mixture,vocals,drums,bass,other}.wav for --count songs starting at "
                    "--seed, made with MMA (accompaniment), FluidSynth (General MIDI rendering) and espeak-ng "
                    "(chanted words). Deterministic by seed. Needs `make synth-deps`.",
    )
    sy.add_argument("--seed", type=int, default=0, help="seed of the first song")
    sy.add_argument("--count", type=int, default=1, help="number of songs (seeds seed, seed+1, ...)")
    sy.add_argument("--seconds", type=float, default=20.0, help="length of each song")
    sy.add_argument("--out", required=True, help="output folder")

    tr = sub.add_parser(
        "train", help="train a Roformer on songs in MUSDB18-HQ layout (synthetic or real)",
        description="Trains the model of --config on random remixes of the stems under DATA (one folder per song "
                    "with vocals/drums/bass/other.wav). Writes OUT/model.ckpt (plain state_dict, best validation "
                    "SDR gain) and OUT/config.yaml in MSST format, plus OUT/last.ckpt for --resume.",
    )
    tr.add_argument("data", nargs="+", help="folders of song folders for training")
    tr.add_argument("--config", required=True, help="MSST-format YAML of the model to train")
    tr.add_argument("--val", nargs="*", default=[], help="folders of song folders for validation")
    tr.add_argument("--out", required=True, help="output folder")
    tr.add_argument("--init", help="start from these weights (a checkpoint for the same config)")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/last.ckpt")
    tr.add_argument("--steps", type=int, default=2000)
    tr.add_argument("--batch-size", type=int, default=4)
    tr.add_argument("--segment", type=float, default=1.0, help="seconds per training example")
    tr.add_argument("--lr", type=float, default=1e-3)
    tr.add_argument("--val-every", type=int, default=200)
    tr.add_argument("--val-seconds", type=float, default=12.0, help="seconds of each validation song to score")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--threads", type=int, help="torch CPU threads")
    tr.add_argument("--device", default="auto")

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
    import soundfile as sf
    import torch

    import streamer
    from streamer.audio import AtomicWriter, check_writable_dir
    from streamer.evaluate import spectrogram_png
    from streamer.metrics import sdr_median_per_second

    config = streamer.load_config(args.config)
    checkpoint = os.path.splitext(args.config)[0] + ".ckpt"
    torch.manual_seed(0)
    model = streamer.build_model(config)
    trained = os.path.exists(checkpoint)
    if trained:
        streamer.load_checkpoint(model, checkpoint)
    rate = config.sample_rate
    truth = {}
    for stem in config.stems:
        data, sr = sf.read(os.path.join(args.song, f"{stem}.flac"), dtype="float32", always_2d=True)
        if sr != rate:
            raise streamer.StemstreamError(f"{args.song}: stems are {sr} Hz, the model needs {rate} Hz")
        truth[stem] = np.ascontiguousarray(data.T)
    mix = np.sum(list(truth.values()), axis=0).astype(np.float32)
    out_dir = check_writable_dir(args.out)

    residual = "other" if "other" in config.stems else None
    engine = streamer.StreamEngine.from_config(config, model, preset=args.preset, residual=residual)
    t0 = time.perf_counter()
    est = engine.separate(mix, args.block)
    took = time.perf_counter() - t0
    stems = {name: est[i] for i, name in enumerate(engine.stems)}
    vocal = "vocals" if "vocals" in stems else engine.stems[0]
    karaoke = np.sum([v for k, v in stems.items() if k != vocal], axis=0)
    with AtomicWriter() as writer:
        writer.write(os.path.join(out_dir, "mix.wav"), mix, rate, "FLOAT")
        for name, data in stems.items():
            writer.write(os.path.join(out_dir, f"{name}.wav"), data, rate, "FLOAT")
        writer.write(os.path.join(out_dir, "karaoke.wav"), karaoke, rate, "FLOAT")
    png = os.path.join(out_dir, "spectrograms.png")
    spectrogram_png({"mixture": mix, **{f"{k} (separated)": v for k, v in stems.items()}}, rate, png)

    seconds = mix.shape[1] / rate
    ms = lambda n: 1000.0 * n / rate  # noqa: E731
    p = engine.latency_parts
    print(f"model: {os.path.relpath(args.config)} ({config.model_type}, {sum(x.numel() for x in model.parameters()):,} "
          f"parameters, stems {', '.join(config.stems)})")
    if not trained:
        print("WARNING: no trained checkpoint next to the config: the weights are RANDOM, so the stems below are not "
              "a real separation. This run shows the pipeline end to end.")
    print(f"song: {os.path.relpath(args.song)} ({seconds:.1f} s, generated, with ground truth)")
    print(f"engine: preset {args.preset}: {engine.settings.describe(rate)}; residual stem: {residual}")
    print(f"latency: {ms(p['total']):.0f} ms (look-ahead {ms(p['lookahead']):.0f} + hop {ms(p['hop']):.0f}); live, with "
          f"the one-hop compute allowance: {ms(p['total'] + p['hop']):.0f} ms")
    print(f"speed: {took:.2f} s for {seconds:.1f} s of audio in {args.block}-frame blocks = real-time factor "
          f"{took / seconds:.2f} (CPU threads: {torch.get_num_threads()})")
    print(f"{'stem':<8} {'SDR':>7} {'mixture':>8} {'gain':>6}   file")
    gains = []
    for name in config.stems:
        sdr = sdr_median_per_second(truth[name], stems[name], rate)
        base = sdr_median_per_second(truth[name], mix, rate)
        gains.append(sdr - base)
        print(f"{name:<8} {sdr:>7.2f} {base:>8.2f} {sdr - base:>6.2f}   {os.path.join(out_dir, name + '.wav')}")
    print(f"mean SDR improvement over the unprocessed mixture: {np.mean(gains):.2f} dB (median per-second SDR)")
    print(f"karaoke mix (everything but {vocal}): {os.path.join(out_dir, 'karaoke.wav')}; spectrograms: {png}")
    return 0


def cmd_eval(args) -> int:
    import streamer
    from streamer.evaluate import evaluate, format_table, plot, settings_list

    config, model, device = _load_model(args)
    explicit = []
    for text in args.setting:
        try:
            w, h, a = (float(v) for v in text.split(","))
        except ValueError:
            raise streamer.StemstreamError(f"--setting {text!r}: expected window,hop,lookahead in seconds") from None
        explicit.append((w, h, a))
    settings = settings_list(config, args.presets, explicit)
    results = evaluate(model, config, args.data, settings, seconds=args.seconds, progress=sys.stderr.isatty())
    songs = len(results[0].sdr[config.stems[0]])
    print(f"{songs} songs; SDR = median per-second SDR in dB, mean over songs; latency = live latency with a one-hop "
          "compute allowance")
    print(format_table(results, config.sample_rate))
    if args.plot:
        plot(results, config.sample_rate, args.plot, title=f"{os.path.basename(args.config)}: SDR against latency")
        print(f"plot: {args.plot}")
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
            crossfade = None  # the engine's default: 10 ms, or less to fit the hop and look-ahead
        allowance = round(args.allowance * rate) if args.allowance is not None else None
        yield streamer.StreamEngine(
            model, config.stems, rate, window=window, hop=hop, lookahead=lookahead, crossfade=crossfade,
            residual=config.stems[-1], device=_resolve_device(args.device), precision=args.precision,
            realtime=True, worker=args.worker, compute_allowance=allowance, threads=args.threads,
            channels=config.channels)


def cmd_bench_mixer(args) -> int:
    from bridge.mixer import StemMixer

    names = [f"stem{i}" for i in range(args.stems)]
    mixer = StemMixer(names, 44100, buses=[f"bus{i}" for i in range(args.buses)])
    rng = np.random.default_rng(0)
    stems = (rng.standard_normal((args.stems, 2, args.block)) * 0.1).astype(np.float32)
    dry = stems.sum(axis=0)
    out = np.zeros((args.buses, 2, args.block), np.float32)
    times = np.zeros(args.blocks)
    for i in range(args.blocks):
        if i % 100 == 0:  # a control change every 100 blocks keeps ramps running part of the time
            mixer.stems[names[i // 100 % args.stems]].gain_db = float(rng.uniform(-12, 0))
        t0 = time.perf_counter()
        mixer.process(stems, out, dry)
        times[i] = time.perf_counter() - t0
    t = times * 1e6
    print(f"StemMixer.process: {args.stems} stems, {args.buses} buses, {args.block}-frame blocks, {args.blocks} blocks "
          f"(a gain change every 100): median {np.median(t):.1f} us, p99 {np.percentile(t, 99):.1f} us, "
          f"max {t.max():.1f} us; block period {1e6 * args.block / 44100:.0f} us")
    return 0


def cmd_synth(args) -> int:
    from tqdm.auto import tqdm

    from streamer.synth import generate_song, write_song

    seeds = range(args.seed, args.seed + args.count)
    for seed in tqdm(seeds, desc="songs", unit="song", disable=args.count < 2 or not sys.stderr.isatty()):
        song = generate_song(seed, args.seconds)
        folder = os.path.join(args.out, f"synth_{seed:06d}")
        write_song(song, folder)
        i = song.info
        print(f"{folder}: {args.seconds:.0f} s, {i['groove']} at {i['tempo']} bpm in {i['key']}"
              f"{', with espeak words' if i['espeak'] else ''}")
    return 0


def cmd_train(args) -> int:
    import torch

    import streamer
    from streamer.train import TrainOptions, train

    if args.threads:
        torch.set_num_threads(args.threads)
    config = streamer.load_config(args.config)
    torch.manual_seed(args.seed)
    model = streamer.build_model(config)
    if args.init:
        streamer.load_checkpoint(model, args.init)
    model.train()
    opts = TrainOptions(steps=args.steps, batch_size=args.batch_size, segment_seconds=args.segment, lr=args.lr,
                        val_every=args.val_every, val_seconds=args.val_seconds, seed=args.seed,
                        device=_resolve_device(args.device))
    result = train(model, config, args.config, args.data, args.val, args.out, opts, resume=args.resume,
                   progress=sys.stderr.isatty())
    print(f"done: {args.out}/model.ckpt with {args.out}/config.yaml (best validation score {result['best']:.2f})")
    return 0


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


COMMANDS = {"bench-mixer": cmd_bench_mixer, "eval": cmd_eval, "synth": cmd_synth, "train": cmd_train, "bench": cmd_bench, "separate": cmd_separate, "demo": cmd_demo, "inspect": cmd_inspect, "bench-model": cmd_bench_model}


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

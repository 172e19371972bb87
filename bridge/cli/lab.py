"""The lab commands: ``synth`` (generated songs), ``train`` and ``eval`` (quality against latency)."""
from __future__ import annotations

import argparse
import math
import os
import sys

from streamer.stream.settings import PRESETS

from .common import (MAX_SCORE_SECONDS, MAX_SEED, MAX_STREAM_SECONDS, MAX_THREADS, MAX_WINDOW_SECONDS,
                     add_backend_arg, add_model_args, check_length, load_from_args, number, positive_int, residual_value,
                     seconds, whole_number)

MAX_SONGS = 10000
LEAST_SECONDS = 0.1  # of audio to generate or score: less rounds to nothing worth a number
MAX_BATCH = 1024
TRAIN_LOSS_N_FFT = 2048  # the training loss's largest STFT (streamer.lab.train.separation_loss)


def stream_setting(text: str) -> tuple[float, float, float]:
    """argparse ``type=`` of eval's --setting: "window,hop,lookahead" in seconds, each finite, window and hop
    > 0, look-ahead >= 0, none beyond MAX_WINDOW_SECONDS (how they fit together the stream settings check)."""
    try:
        w, h, a = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected window,hop,lookahead in seconds, got {text!r}") from None
    if not all(math.isfinite(v) for v in (w, h, a)):
        raise argparse.ArgumentTypeError(f"window, hop and lookahead must be finite numbers of seconds, got {text!r}")
    if w <= 0 or h <= 0 or a < 0:
        raise argparse.ArgumentTypeError(f"window and hop must be > 0 s and lookahead >= 0 s, got {text!r}")
    if max(w, h, a) > MAX_WINDOW_SECONDS:
        raise argparse.ArgumentTypeError(f"{text!r}: {max(w, h, a):g} s is beyond the limit of "
                                         f"{MAX_WINDOW_SECONDS:g} s")
    return w, h, a


def register(sub) -> None:
    ev = sub.add_parser(
        "eval", help="score a model offline and streaming at several latencies (SDR, uSDR, plot)",
        description="Separates every song under DATA (MUSDB18-HQ layout: one folder per song with mixture.wav and "
                    "the stems' wavs) offline and with the streaming engine at each latency preset and each "
                    "--setting, and prints per stem and on average the median per-second SDR, the whole-track "
                    "uSDR and the improvement over the unprocessed mixture; --plot writes SDR against latency.")
    ev.add_argument("data", nargs="+", help="folders of song folders")
    add_model_args(ev)
    add_backend_arg(ev)
    ev.add_argument("--presets", nargs="*", default=list(PRESETS), choices=list(PRESETS),
                    help="latency presets to score")
    ev.add_argument("--setting", action="append", default=[], metavar="W,H,A", type=stream_setting,
                    help="extra streaming setting: window, hop, look-ahead in seconds (repeatable)")
    ev.add_argument("--seconds", type=seconds(MAX_SCORE_SECONDS, LEAST_SECONDS),
                    help="score only the first seconds of each song")
    ev.add_argument("--residual", default="none",
                    help="score the stems made to sum to the mixture as a live separator does: 'spread' (what the "
                         "stems miss shared equally; the live default for a multi-stem model) or a stem's name (that "
                         "stem is the mixture minus the others); default 'none': the model's stems as they are")
    ev.add_argument("--plot", help="write a PNG of SDR against latency here")
    ev.set_defaults(func=cmd_eval)

    sy = sub.add_parser(
        "synth", help="generate multitrack songs with ground-truth stems (MUSDB18-HQ layout)",
        description="Writes OUT/synth_<seed>/{mixture,vocals,drums,bass,other}.wav for --count songs starting at "
                    "--seed, made with MMA (accompaniment: about 200 groove families in 4/4, 3/4, 6/8 and 5/4, songs "
                    "in sections), FluidSynth (General MIDI rendering, a soundfont per part) and espeak-ng (sung "
                    "syllables re-pitched to a melody). Deterministic by seed. Needs `make synth-deps`.",
    )
    sy.add_argument("--seed", type=whole_number(0, MAX_SEED), default=0, help="seed of the first song")
    sy.add_argument("--count", type=positive_int(MAX_SONGS), default=1,
                    help="number of songs (seeds seed, seed+1, ...)")
    sy.add_argument("--seconds", type=seconds(MAX_STREAM_SECONDS, LEAST_SECONDS), default=20.0,
                    help=f"length of each song (at most {MAX_STREAM_SECONDS:g})")
    sy.add_argument("--out", required=True, help="output folder")
    sy.set_defaults(func=cmd_synth)

    fr = sub.add_parser(
        "fetch-real", help="fetch a real multitrack excerpt (MUSDB18, via the stempeg package) for the real-music check",
        description="Downloads the stempeg package's source from the package index (pip download, about 1 MB, once; "
                    "kept in the user cache), takes its 6-second MUSDB18 excerpt ('The Easton Ellises - Falcon 69', "
                    "a stem file) and writes OUT/the_easton_ellises-falcon_69/{mixture,drums,bass,other,vocals}.wav "
                    "for `stemstream eval OUT`. For evaluation only: never train or tune on it. Needs PyAV "
                    "(pip install av).")
    fr.add_argument("--out", required=True, help="output folder (a folder of song folders)")
    fr.add_argument("--cache", help="where the stem file is kept (default: the user cache folder)")
    fr.set_defaults(func=cmd_fetch_real)

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
    tr.add_argument("--trust-checkpoint", action="store_true",
                    help="allow the --init checkpoint, if pickled, to run arbitrary code when loading "
                         "(weights_only=False); only for files from a source you trust")
    tr.add_argument("--grow", action="store_true",
                    help="--init is a shallower BS-RoFormer of the same width: its layers seed the first ones and "
                         "each new layer starts as the identity, so training starts from its output "
                         "(see streamer.lab.grow)")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/last.ckpt")
    tr.add_argument("--steps", type=positive_int(), default=2000)
    tr.add_argument("--batch-size", type=positive_int(MAX_BATCH), default=4)
    tr.add_argument("--segment", type=seconds(MAX_WINDOW_SECONDS), default=1.0, help="seconds per training example")
    tr.add_argument("--lr", type=number(0.0, 1.0, unit=""), default=1e-3, help="learning rate, > 0 and <= 1")
    tr.add_argument("--val-every", type=positive_int(), default=200)
    tr.add_argument("--val-seconds", type=seconds(MAX_SCORE_SECONDS, LEAST_SECONDS), default=12.0,
                    help="seconds of each validation song to score")
    tr.add_argument("--max-minutes", type=number(0.0, 1e6, unit=" minutes"),
                    help="stop after this many minutes of training in this run, keeping OUT/last.ckpt for --resume")
    tr.add_argument("--no-augment", action="store_true",
                    help="no augmentation beyond the random remix, gain and channel swap (default: speed, "
                         "polarity, effects, missing stems and mix-bus compression as in streamer.lab.augment)")
    tr.add_argument("--ema", type=number(0.0, 0.99999, zero=True, unit=""), default=0.999,
                    help="decay of the moving average of the weights that validation scores and model.ckpt holds "
                         "(default 0.999: about the last thousand steps; 0: the weights of the step itself)")
    tr.add_argument("--seed", type=whole_number(0, MAX_SEED), default=0)
    tr.add_argument("--threads", type=positive_int(MAX_THREADS), help="torch CPU threads")
    tr.add_argument("--device", default="auto")
    tr.set_defaults(func=cmd_train)


def cmd_eval(args: argparse.Namespace) -> int:
    from streamer.lab.evaluate import evaluate, format_table, settings_list

    plot_path = _plot_path(args.plot) if args.plot else None  # a picture we could not write is refused first
    loaded = load_from_args(args)
    config = loaded.config
    for w, h, a in args.setting:
        check_length(f"--setting {w:g},{h:g},{a:g}: window {w:g} s ({round(w * config.sample_rate)} samples)",
                     round(w * config.sample_rate), config)
    settings = settings_list(config, args.presets, args.setting)
    results = evaluate(loaded.model, config, args.data, settings, seconds=args.seconds, progress=sys.stderr.isatty(),
                       precision=loaded.precision, backend=args.backend, residual=residual_value(args.residual))
    songs = len(results[0].sdr[config.stems[0]])
    print(f"{songs} songs; SDR = median per-second SDR in dB, mean over songs; latency = live latency with a one-hop "
          "compute allowance")
    print(format_table(results, config.sample_rate))
    if plot_path:
        _write_plot(results, config.sample_rate, plot_path, f"{os.path.basename(args.config)}: SDR against latency")
        print(f"plot: {plot_path}")
    return 0


def _plot_path(path: str) -> str:
    """The file --plot names (``.png`` added when it has no extension, as matplotlib would), refused when it is
    a folder or its extension no picture format matplotlib writes."""
    from matplotlib.backend_bases import FigureCanvasBase

    from streamer.errors import SettingsError

    if os.path.isdir(path) or path.endswith(os.sep) or not os.path.basename(path):
        raise SettingsError(f"--plot {path!r} is a folder: give the picture's file name (e.g. sdr.png)")
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if not ext:
        return path + ".png"
    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    if ext not in formats:
        raise SettingsError(f"--plot {path}: .{ext} is not a picture format matplotlib writes "
                            f"({', '.join('.' + f for f in formats)})")
    return path


def _write_plot(results, rate: int, path: str, title: str) -> None:
    """The plot under a temporary name next to ``path``, renamed when complete: never half a picture; a folder
    made for it is removed again if writing fails."""
    from streamer.errors import SettingsError
    from streamer.lab.evaluate import plot
    from streamer.outputs import make_dirs, remove_empty_dirs

    folder, name = os.path.split(os.path.abspath(path))
    made = make_dirs(folder)
    stem, ext = os.path.splitext(name)
    part = os.path.join(folder, f".{stem}.part{ext}")
    try:
        try:
            plot(results, rate, part, title=title)
        except (RuntimeError, ValueError) as exc:  # e.g. .pgf without a TeX installation
            raise SettingsError(f"--plot {path}: matplotlib cannot write it here: {exc}") from exc
        os.replace(part, path)
    except BaseException:
        if os.path.exists(part):
            os.remove(part)
        remove_empty_dirs(made)
        raise


def cmd_synth(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from streamer.lab.synth import generate_song, write_song
    from streamer.outputs import output_folder

    seeds = range(args.seed, args.seed + args.count)
    with output_folder(args.out):  # checked before the first song; a folder made here goes again if none is written
        for seed in tqdm(seeds, desc="songs", unit="song", disable=args.count < 2 or not sys.stderr.isatty()):
            song = generate_song(seed, args.seconds)
            folder = os.path.join(args.out, f"synth_{seed:06d}")
            write_song(song, folder)
            i = song.info
            form = "-".join(s["kind"] for s in i["sections"])
            print(f"{folder}: {args.seconds:g} s, {i['style']} in {i['meter']} at {i['tempo']} bpm in {i['key']}, "
                  f"{form}, {i['vocal_style']} vocals ({i['vocals']['voice']})"
                  f"{', with a vocal-like lead in other' if i['confuser_lead'] else ''}")
    return 0


def cmd_fetch_real(args: argparse.Namespace) -> int:
    from streamer.lab.realmusic import fetch_real_music
    from streamer.outputs import output_folder

    with output_folder(args.out):
        folder = fetch_real_music(args.out, cache=args.cache)
    print(f"{folder}: mixture and 4 stems of a real recording (MUSDB18 excerpt, evaluation only)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from streamer.errors import SettingsError
    from streamer.inference.loader import load_model
    from streamer.inference.precision import resolve_device
    from streamer.lab.train import TrainOptions, train
    from streamer.outputs import output_folder

    resolve_device(args.device)  # refuse a device this machine lacks before any work
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.grow and not args.init:
        raise SettingsError("--grow needs --init: the shallower checkpoint to grow from")
    if args.grow and args.resume:
        raise SettingsError("--grow starts a run; continue a grown run with --resume alone")
    loaded = load_model(args.config, None if args.grow else args.init, device=args.device, seed=args.seed,
                        trust=args.trust_checkpoint)
    if args.grow:
        from streamer.lab.grow import grow_from

        grown = grow_from(loaded.model, args.init, trust=args.trust_checkpoint)
        n = len(grown.new_layers)
        print(f"grown from {args.init}: its {grown.from_depth} layers seed layers 0-{grown.from_depth - 1}; "
              f"{n} new layer{'s start' if n != 1 else ' starts'} as the identity")
    check_length(f"--segment {args.segment:g} s ({int(args.segment * loaded.config.sample_rate)} samples)",
                 int(args.segment * loaded.config.sample_rate), loaded.config, extra_n_fft=TRAIN_LOSS_N_FFT)
    model = loaded.model
    model.train()
    opts = TrainOptions(steps=args.steps, batch_size=args.batch_size, segment_seconds=args.segment, lr=args.lr,
                        val_every=args.val_every, val_seconds=args.val_seconds, seed=args.seed,
                        device=str(loaded.device), augment=not args.no_augment, max_minutes=args.max_minutes,
                        ema=args.ema)
    with output_folder(args.out):  # a folder this run creates is removed again if the run fails before writing
        result = train(model, loaded.config, args.config, args.data, args.val, args.out, opts, resume=args.resume,
                       progress=sys.stderr.isatty())
    best = "none" if result["best"] is None else f"{result['best']:.2f}"
    if result.get("stopped_early"):
        print(f"paused at step {result['step']} of {args.steps} (--max-minutes): continue with the same command "
              f"and --resume; best validation score so far {best} in {args.out}/model.ckpt")
        return 0
    print(f"done: {args.out}/model.ckpt with {args.out}/config.yaml (best validation score {best})")
    return 0

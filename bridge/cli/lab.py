"""The lab commands: ``synth`` (generated songs), ``train`` and ``eval`` (quality against latency)."""
from __future__ import annotations

import argparse
import os
import sys

from streamer.stream.settings import PRESETS

from .common import add_model_args, load_from_args


def register(sub) -> None:
    ev = sub.add_parser(
        "eval", help="score a model offline and streaming at several latencies (SDR, uSDR, plot)",
        description="Separates every song under DATA (MUSDB18-HQ layout: one folder per song with mixture.wav and "
                    "the stems' wavs) offline and with the streaming engine at each latency preset and each "
                    "--setting, and prints per stem and on average the median per-second SDR, the whole-track "
                    "uSDR and the improvement over the unprocessed mixture; --plot writes SDR against latency.")
    ev.add_argument("data", nargs="+", help="folders of song folders")
    add_model_args(ev)
    ev.add_argument("--presets", nargs="*", default=list(PRESETS), choices=list(PRESETS),
                    help="latency presets to score")
    ev.add_argument("--setting", action="append", default=[], metavar="W,H,A",
                    help="extra streaming setting: window, hop, look-ahead in seconds (repeatable)")
    ev.add_argument("--seconds", type=float, help="score only the first seconds of each song")
    ev.add_argument("--plot", help="write a PNG of SDR against latency here")
    ev.set_defaults(func=cmd_eval)

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
    sy.set_defaults(func=cmd_synth)

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
    tr.set_defaults(func=cmd_train)


def cmd_eval(args: argparse.Namespace) -> int:
    from streamer.errors import StemstreamError
    from streamer.lab.evaluate import evaluate, format_table, plot, settings_list

    loaded = load_from_args(args)
    config = loaded.config
    explicit = []
    for text in args.setting:
        try:
            w, h, a = (float(v) for v in text.split(","))
        except ValueError as exc:
            raise StemstreamError(f"--setting {text!r}: expected window,hop,lookahead in seconds") from exc
        explicit.append((w, h, a))
    settings = settings_list(config, args.presets, explicit)
    results = evaluate(loaded.model, config, args.data, settings, seconds=args.seconds, progress=sys.stderr.isatty())
    songs = len(results[0].sdr[config.stems[0]])
    print(f"{songs} songs; SDR = median per-second SDR in dB, mean over songs; latency = live latency with a one-hop "
          "compute allowance")
    print(format_table(results, config.sample_rate))
    if args.plot:
        plot(results, config.sample_rate, args.plot, title=f"{os.path.basename(args.config)}: SDR against latency")
        print(f"plot: {args.plot}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from streamer.lab.synth import generate_song, write_song

    seeds = range(args.seed, args.seed + args.count)
    for seed in tqdm(seeds, desc="songs", unit="song", disable=args.count < 2 or not sys.stderr.isatty()):
        song = generate_song(seed, args.seconds)
        folder = os.path.join(args.out, f"synth_{seed:06d}")
        write_song(song, folder)
        i = song.info
        print(f"{folder}: {args.seconds:.0f} s, {i['groove']} at {i['tempo']} bpm in {i['key']}"
              f"{', with espeak words' if i['espeak'] else ''}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from streamer.inference.loader import load_model
    from streamer.lab.train import TrainOptions, train

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.config, args.init, device=args.device, seed=args.seed)
    model = loaded.model
    model.train()
    opts = TrainOptions(steps=args.steps, batch_size=args.batch_size, segment_seconds=args.segment, lr=args.lr,
                        val_every=args.val_every, val_seconds=args.val_seconds, seed=args.seed,
                        device=str(loaded.device))
    result = train(model, loaded.config, args.config, args.data, args.val, args.out, opts, resume=args.resume,
                   progress=sys.stderr.isatty())
    print(f"done: {args.out}/model.ckpt with {args.out}/config.yaml (best validation score {result['best']:.2f})")
    return 0

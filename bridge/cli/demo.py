"""``stemstream demo``: the bundled song through the bundled demo model, block by block, with scores."""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from streamer.assets import DEMO_CONFIG, DEMO_SONG

from .common import MAX_BLOCK, add_backend_arg, add_preset_arg, positive_int, shown_path


def register(sub) -> None:
    demo = sub.add_parser(
        "demo", help="stream the bundled example song through the demo model: stems, karaoke mix, scores",
        description="Runs the streaming engine with the bundled demo model over the bundled example song "
                    "(generated, with ground-truth stems) in audio-callback-sized blocks and writes "
                    "OUT/{mix,vocals,drums,bass,other,karaoke}.wav and OUT/spectrograms.png; prints the latency, the "
                    "real-time factor and the SDR reached per stem.")
    demo.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    add_preset_arg(demo)
    add_backend_arg(demo)
    demo.add_argument("--block", type=positive_int(MAX_BLOCK), default=256,
                      help=f"frames per block fed to the engine (default 256, at most {MAX_BLOCK})")
    demo.add_argument("--config", default=DEMO_CONFIG, help=argparse.SUPPRESS)
    demo.add_argument("--song", default=DEMO_SONG, help=argparse.SUPPRESS)
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    import torch

    from streamer.audio import adapt_channels, read_audio
    from streamer.errors import AudioError, StemstreamError
    from streamer.outputs import AtomicWriter, output_folder
    from streamer.inference.loader import load_model
    from streamer.lab.evaluate import spectrogram_png
    from streamer.lab.metrics import sdr_median_per_second
    from streamer.stream.engine import StreamEngine

    from ..plugin.stems import DEFAULT_RESIDUAL, separator_residual

    checkpoint = os.path.splitext(args.config)[0] + ".ckpt"
    loaded = load_model(args.config, checkpoint if os.path.exists(checkpoint) else None, seed=0)
    config, model = loaded.config, loaded.model
    rate = config.sample_rate
    if not os.path.isdir(args.song):
        raise AudioError(f"song folder not found: {args.song}")
    truth = {}
    for stem in config.stems:
        data, sr = read_audio(os.path.join(args.song, f"{stem}.flac"))
        if sr != rate:
            raise StemstreamError(f"{args.song}: stems are {sr} Hz, the model needs {rate} Hz")
        truth[stem] = adapt_channels(data, config.channels, where=os.path.join(args.song, f"{stem}.flac"))
    if len({v.shape for v in truth.values()}) > 1:
        raise AudioError(f"{args.song}: the stems differ in length: "
                         + ", ".join(f"{k} {v.shape[1]}" for k, v in truth.items()))
    mix = np.sum(list(truth.values()), axis=0).astype(np.float32)

    residual = separator_residual(DEFAULT_RESIDUAL, config.stems)  # as the live separator: the stems sum to the mix
    engine = StreamEngine.from_config(config, model, preset=args.preset, residual=residual, backend=args.backend)
    with output_folder(args.out) as out_dir:  # removed again if it was made here and the run fails
        t0 = time.perf_counter()
        est = engine.separate(mix, args.block)
        took = time.perf_counter() - t0
        stems = {name: est[i] for i, name in enumerate(engine.stems)}
        vocal = "vocals" if "vocals" in stems else engine.stems[0]
        karaoke = np.sum([v for k, v in stems.items() if k != vocal], axis=0)
        png = os.path.join(out_dir, "spectrograms.png")
        part = os.path.join(out_dir, ".spectrograms.part.png")
        try:
            spectrogram_png({"mixture": mix, **{f"{k} (separated)": v for k, v in stems.items()}}, rate, part)
            with AtomicWriter() as writer:  # the sound files appear together, then the picture
                writer.write(os.path.join(out_dir, "mix.wav"), mix, rate, "FLOAT")
                for name, data in stems.items():
                    writer.write(os.path.join(out_dir, f"{name}.wav"), data, rate, "FLOAT")
                writer.write(os.path.join(out_dir, "karaoke.wav"), karaoke, rate, "FLOAT")
            os.replace(part, png)
        finally:
            if os.path.exists(part):
                os.remove(part)

    seconds = mix.shape[1] / rate
    ms = lambda n: 1000.0 * n / rate  # noqa: E731
    p = engine.latency_parts
    print(f"model: {shown_path(args.config)} ({config.model_type}, {loaded.num_parameters:,} "
          f"parameters, stems {', '.join(config.stems)})")
    if not loaded.trained:
        print("WARNING: no trained checkpoint next to the config: the weights are RANDOM, so the stems below are not "
              "a real separation. This run shows the pipeline end to end.")
    print(f"song: {shown_path(args.song)} ({seconds:.1f} s, generated, with ground truth)")
    print(f"engine: preset {args.preset}: {engine.settings.describe(rate)}; residual: {residual}; "
          f"backend {engine.stats['backend']}")
    print(f"latency: {ms(p['total']):.0f} ms (look-ahead {ms(p['lookahead']):.0f} + hop {ms(p['hop']):.0f}); "
          f"live, with the one-hop compute allowance: {ms(engine.settings.live_latency):.0f} ms")
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

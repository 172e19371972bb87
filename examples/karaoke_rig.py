"""Karaoke rig: the PA gets the song without vocals, the singer's monitor a guide vocal at -10 dB.

    python examples/karaoke_rig.py [--rig configs/rigs/karaoke.yaml] [--out out/examples]

Streams the bundled song in 256-frame blocks (as an audio callback would) and writes both buses.
"""
import argparse
import os

import numpy as np
import soundfile as sf

from bridge import StemSeparator
from streamer.assets import DEMO_SONG, DEMO_STEMS
from streamer.audio import load_stems

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rig", default=os.path.join(REPO, "configs", "rigs", "karaoke.yaml"))
    parser.add_argument("--out", default="out/examples")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    mix = load_stems(DEMO_SONG, list(DEMO_STEMS), 44100, 2).sum(axis=0)

    sep = StemSeparator.from_rig(args.rig)
    buses = {}
    for bus in sep.mixer.bus_names:
        sep.reset()
        sep.output = bus
        blocks = [sep(mix[:, i:i + 256], 44100, buffer_size=256, reset=False) for i in range(0, mix.shape[1], 256)]
        buses[bus] = np.concatenate(blocks, axis=1)
        path = os.path.join(args.out, f"karaoke_{bus}.wav")
        sf.write(path, buses[bus].T, 44100, subtype="FLOAT")
        peak, rms = sep.mixer.meter(f"bus:{bus}")
        print(f"{bus:<8} -> {path} (last block: peak {peak:.1f} dBFS, RMS {rms:.1f} dBFS)")
    print(f"latency {1000 * sep.reported_latency_samples / 44100:.0f} ms; the first "
          f"{sep.reported_latency_samples} samples are withheld in streaming, as pedalboard does")


if __name__ == "__main__":
    main()

"""The separator inside a pedalboard effect chain: high-pass -> stem separator (drums down 6 dB) -> compressor.

    python examples/pedalboard_chain.py [--out out/examples]

Runs on the bundled example song with the bundled demo model, once in one shot (latency-compensated)
and once streamed in 512-frame calls, and writes both.
"""
import argparse
import os

import numpy as np
import soundfile as sf
from pedalboard import Compressor, HighpassFilter

from bridge import Chain, StemSeparator
from streamer.assets import DEMO_CHECKPOINT, DEMO_CONFIG, DEMO_SONG, DEMO_STEMS
from streamer.audio import load_stems



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/examples")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    audio = load_stems(DEMO_SONG, list(DEMO_STEMS), 44100, 2).sum(axis=0).T  # (frames, channels):
    # pedalboard takes either layout

    sep = StemSeparator.from_config(DEMO_CONFIG, checkpoint=DEMO_CHECKPOINT, latency="balanced")
    sep.stems["drums"].gain_db = -6
    chain = Chain([HighpassFilter(40), sep, Compressor(threshold_db=-18, ratio=3)])
    print(f"{chain}: latency {chain.reported_latency_samples} samples "
          f"({1000 * chain.reported_latency_samples / 44100:.0f} ms)")

    one_shot = chain(audio, 44100)
    sf.write(os.path.join(args.out, "chain_one_shot.wav"), one_shot, 44100, subtype="FLOAT")
    chain.reset()
    parts = [chain(audio[i:i + 512], 44100, buffer_size=512, reset=False) for i in range(0, len(audio), 512)]
    streamed = np.concatenate(parts)
    sf.write(os.path.join(args.out, "chain_streamed.wav"), streamed, 44100, subtype="FLOAT")
    print(f"one shot: {one_shot.shape} aligned with the input; streamed: {streamed.shape} "
          f"(the first {len(audio) - len(streamed)} samples withheld, like any latent pedalboard plugin)")


if __name__ == "__main__":
    main()

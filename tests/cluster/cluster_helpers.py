"""A tiny model, a small library of generated files and plain `stemstream separate` references for
the cluster tests."""
from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import soundfile as sf
import torch

import streamer
from bridge.cli.main import main

from conftest import TINY_BS, randomize, write_yaml

RATE = 44100
STEMS = ("vocals", "other")


def tiny_model(folder: pathlib.Path, seed: int = 0) -> tuple[pathlib.Path, pathlib.Path]:
    """(config, checkpoint) of a 2-stem tiny BS-RoFormer with random weights."""
    cfg = write_yaml(folder / "tiny.yaml", model=dict(TINY_BS, num_stems=2), stems=STEMS, target=None)
    torch.manual_seed(seed)
    model = randomize(streamer.build_model(streamer.load_config(cfg)), seed=seed, scale=0.1)
    ckpt = folder / "tiny.ckpt"
    torch.save(model.state_dict(), ckpt)
    return cfg, ckpt


def song(seconds: float, seed: int, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    tone = 0.3 * np.sin(2 * np.pi * (110 + 40 * seed) * t)
    return np.stack([tone + 0.05 * rng.standard_normal(t.size), 0.8 * tone + 0.05 * rng.standard_normal(t.size)],
                    axis=1).astype(np.float32)


def library(folder: pathlib.Path, count: int = 3, seconds: float = 2.0, corrupt: bool = True,
            silent: bool = True) -> pathlib.Path:
    """``folder/lib``: ``count`` songs (one in a subfolder, one FLAC at 48 kHz), a silent file and a
    corrupt one."""
    lib = folder / "lib"
    (lib / "sub").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        if i == 1:
            sf.write(lib / "sub" / f"song{i}.flac", song(seconds, i, 48000), 48000, subtype="PCM_24")
        else:
            sf.write(lib / f"song{i}.wav", song(seconds + 0.37 * i, i), RATE, subtype="FLOAT")
    if silent:
        sf.write(lib / "silent.wav", np.zeros((RATE, 2), np.float32), RATE)
    if corrupt:
        (lib / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + b"\x00" * 40)
    return lib


def separate_args(inputs, cfg, ckpt, out, *extra) -> list[str]:
    return ["separate", *map(str, inputs), "--config", str(cfg), "--checkpoint", str(ckpt), "--out", str(out),
            "--backend", "torch", "--no-progress", *map(str, extra)]


def plain_separate(inputs, cfg, ckpt, out, *extra) -> int:
    """Plain `stemstream separate` with the torch threads of one cluster worker (--cpus-per-worker 1):
    the same thread count, so the same floating-point sums, bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(separate_args(inputs, cfg, ckpt, out, *extra))
    finally:
        torch.set_num_threads(threads)


def manifest(out: pathlib.Path) -> list[dict]:
    path = out / "manifest.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def latest(out: pathlib.Path) -> dict[str, dict]:
    return {rec["input"]: rec for rec in manifest(out)}


def stem_files(out: pathlib.Path) -> dict[str, bytes]:
    """Every stem file below ``out`` (relative path -> audio samples as bytes)."""
    found = {}
    for root, _, files in os.walk(out):
        for name in files:
            if name.endswith((".wav", ".flac")):
                path = pathlib.Path(root) / name
                data, rate = sf.read(path, dtype="float32", always_2d=True)
                found[str(path.relative_to(out))] = (rate, data.shape, data.tobytes())
    return found


def leftovers(out: pathlib.Path) -> list[str]:
    """Temporary files or folders an interrupted write could leave."""
    bad = []
    for root, dirs, files in os.walk(out):
        for name in dirs + files:
            if ".part" in name or ".old" in name:
                bad.append(os.path.join(root, name))
    return bad

"""A tiny served model, a free port and a status reader for the service tests."""
from __future__ import annotations

import json
import pathlib
import socket
import urllib.request

import numpy as np
import torch

import streamer

from conftest import TINY_BS, randomize, write_yaml

RATE = 44100
STEMS = ("vocals", "other")
TOKEN = "test-token-0123"


def tiny_model(folder: pathlib.Path, seed: int = 0, chunk_size: int = 22050) -> tuple[pathlib.Path, pathlib.Path]:
    """(config, checkpoint) of a 2-stem tiny BS-RoFormer with random weights (0.5 s chunks by default)."""
    cfg = write_yaml(folder / "tiny.yaml", model=dict(TINY_BS, num_stems=2), stems=STEMS, target=None,
                     chunk_size=chunk_size)
    torch.manual_seed(seed)
    model = randomize(streamer.build_model(streamer.load_config(cfg)), seed=seed, scale=0.1)
    ckpt = folder / "tiny.ckpt"
    torch.save(model.state_dict(), ckpt)
    return cfg, ckpt


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def song(seconds: float, seed: int = 0, rate: int = RATE) -> np.ndarray:
    """(channels, samples) float32: a tone with noise."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    tone = 0.3 * np.sin(2 * np.pi * (110 + 40 * seed) * t)
    return np.stack([tone + 0.05 * rng.standard_normal(t.size),
                     0.8 * tone + 0.05 * rng.standard_normal(t.size)]).astype(np.float32)


def status(port: int, token: str = TOKEN) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/status", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())

import os
import pathlib
import time

import numpy as np
import pytest
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = pathlib.Path(__file__).resolve().parent / "data"   # the project's own copy of the reference data
MSST_CONFIGS = DATA / "msst-configs"
SHAPES_JSON = DATA / "state-dict-shapes.json"

torch.set_num_threads(min(2, os.cpu_count() or 1))
# commands run by the tests use the torch backend unless a test asks for another (an ONNX export per
# tiny model would only cost time); the ONNX Runtime backend has its own tests. Exports go to a
# private cache, never the user's.
os.environ.setdefault("STEMSTREAM_BACKEND", "torch")
os.environ.setdefault("STEMSTREAM_CACHE_DIR", os.path.join(__import__("tempfile").gettempdir(),
                                                           f"stemstream-test-cache-{os.getuid()}"))

def wait_for(predicate, timeout: float = 3.0, interval: float = 0.005) -> bool:
    """Poll ``predicate`` every ``interval`` s (5 ms) until it is true or ``timeout`` seconds have passed;
    its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


TINY_BS = {
    "dim": 16, "depth": 1, "heads": 2, "dim_head": 8, "stereo": True, "num_stems": 1,
    "time_transformer_depth": 1, "freq_transformer_depth": 1, "stft_hop_length": 441,
}


def write_yaml(path, model_type="bs_roformer", model=None, stems=("vocals", "other"), target="vocals",
               chunk_size=22050, num_overlap=2, batch_size=1, extra_model=None):
    import yaml

    model = dict(TINY_BS if model is None else model)
    if extra_model:
        model.update(extra_model)
    data = {
        "audio": {"chunk_size": chunk_size, "sample_rate": 44100, "num_channels": 2},
        "model": model,
        "training": {"instruments": list(stems), "target_instrument": target, "model_type": model_type},
        "inference": {"batch_size": batch_size, "num_overlap": num_overlap},
    }
    path = pathlib.Path(path)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def tiny_config(tmp_path):
    return write_yaml(tmp_path / "tiny.yaml")


FOUR_STEMS = ("vocals", "drums", "bass", "other")


def four_stem_separator(tmp_path):
    """A real separator for the control-surface tests: the identity stand-in model with four stems (each
    the input), low latency, two buses (main, monitor). Each test adds its own scenes and effects."""
    import streamer
    from bridge import StemSeparator
    from standins import IdentityModel

    config = streamer.load_config(write_yaml(tmp_path / "four.yaml", stems=FOUR_STEMS, target=None,
                                             extra_model={"num_stems": 4}, chunk_size=4410))
    return StemSeparator(IdentityModel(4), config, latency="low", buses=("main", "monitor"))


def randomize(model, seed=0, scale=0.05):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


@pytest.fixture
def rng():
    return np.random.default_rng(0)

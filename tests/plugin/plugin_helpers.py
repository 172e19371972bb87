"""A four-stem StemSeparator over the identity stand-in model, and test noise, for the plugin tests."""
import numpy as np
import pytest
from standins import IdentityModel

import streamer
from bridge import StemSeparator

from conftest import write_yaml

RATE = 44100


@pytest.fixture
def config(tmp_path):
    return streamer.load_config(write_yaml(tmp_path / "four.yaml", stems=("vocals", "drums", "bass", "other"),
                                           target=None, extra_model={"num_stems": 4}, chunk_size=4410))


@pytest.fixture
def sep(config):
    """Vocals = the input, the other stems silent (the residual, spread by default, is zero)."""
    return StemSeparator(IdentityModel(4), config, latency="low")


def noise(n, seed=0, channels=2):
    return (np.random.default_rng(seed).standard_normal((channels, n)) * 0.2).astype(np.float32)

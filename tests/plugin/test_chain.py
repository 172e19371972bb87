"""bridge.Chain: StemSeparator in a chain with native pedalboard plugins, one-shot and streaming."""
import numpy as np
import pytest
from pedalboard import Gain, Pedalboard, Reverb
from pedalboard_native._internal import AddLatency

from bridge import Chain

from plugin_helpers import RATE, config, noise, sep  # noqa: F401  (config: the fixture sep is built from)


def test_chain_with_native_plugins_one_shot_and_streaming(sep):
    x = noise(12000, seed=4)
    chain = Chain([Gain(-6), AddLatency(100), sep, Gain(6), AddLatency(50)])
    assert len(chain._stages) == 3
    y = chain(x, RATE)
    assert y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=1e-5)  # -6 dB then +6 dB, every latency compensated
    chain.reset()
    parts = [chain(x[:, i:i + 512], RATE, buffer_size=512, reset=False) for i in range(0, x.shape[1], 512)]
    joined = np.concatenate(parts, axis=1)
    withheld = x.shape[1] - joined.shape[1]
    assert withheld == 100 + sep.reported_latency_samples + 50
    np.testing.assert_allclose(joined, x[:, : joined.shape[1]], atol=1e-5)
    with pytest.raises(TypeError, match="pedalboard plugins"):
        Chain([Gain(0), "reverb"])


def test_chain_streaming_with_a_stateful_plugin_matches_pedalboard(sep):
    """Chain([sep, Reverb]) streamed equals pedalboard's own Pedalboard([AddLatency(L), Reverb]) streamed."""
    x = noise(30000, seed=7)
    ours = Chain([sep, Reverb(room_size=0.7)])
    native = Pedalboard([AddLatency(sep.reported_latency_samples), Reverb(room_size=0.7)])
    a = [ours(x[:, i:i + 512], RATE, buffer_size=512, reset=False) for i in range(0, x.shape[1], 512)]
    b = [native(x[:, i:i + 512], RATE, buffer_size=512, reset=False) for i in range(0, x.shape[1], 512)]
    assert [p.shape[1] for p in a] == [p.shape[1] for p in b]
    np.testing.assert_allclose(np.concatenate(a, axis=1), np.concatenate(b, axis=1), atol=1e-5)

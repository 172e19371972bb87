"""SDR metrics (streamer.lab.metrics), cross-checked against museval where it is installed."""
import os

import numpy as np
import pytest

from streamer.lab import metrics


def test_usdr_and_per_second_sdr_against_hand_computed_values():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 44100 * 3))
    est = ref + 0.1 * rng.standard_normal(ref.shape)
    expected = 10 * np.log10((ref**2).sum() / ((ref - est) ** 2).sum())
    assert metrics.usdr(ref, est) == pytest.approx(expected, abs=1e-6)
    frames = metrics.sdr_frames(ref, est, 44100)
    assert frames.shape == (3,)
    for i in range(3):
        r, e = ref[:, i * 44100:(i + 1) * 44100], est[:, i * 44100:(i + 1) * 44100]
        assert frames[i] == pytest.approx(10 * np.log10((r**2).sum() / ((r - e) ** 2).sum()), abs=1e-6)
    assert metrics.sdr_median_per_second(ref, est, 44100) == pytest.approx(np.median(frames))
    silent = ref.copy()
    silent[:, :44100] = 0
    assert np.isnan(metrics.sdr_frames(silent, est, 44100)[0])
    assert metrics.usdr(ref, ref) > 100
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.usdr(ref, est[:, :10])


@pytest.mark.slow
def test_per_second_sdr_matches_museval():
    """Cross-check against museval's BSSv4 (its metrics module alone: importing the package needs ffmpeg)."""
    import importlib.util

    spec = importlib.util.find_spec("museval")
    if spec is None:
        pytest.skip("museval is not installed")
    path = os.path.join(os.path.dirname(spec.origin), "metrics.py")
    loader = importlib.util.spec_from_file_location("museval_metrics", path)
    bss = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(bss)
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((2, 44100 * 4, 2)) * 0.1
    est = ref.copy()
    est[0] += 0.3 * ref[1] + 0.03 * rng.standard_normal(ref[0].shape)
    est[1] += 0.1 * ref[0] + 0.05 * rng.standard_normal(ref[1].shape)
    sdr = bss.bss_eval(ref, est, window=44100, hop=44100)[0]
    for j in range(2):
        ours = metrics.sdr_median_per_second(ref[j].T, est[j].T, 44100)
        assert np.nanmedian(sdr[j]) == pytest.approx(ours, abs=0.01)

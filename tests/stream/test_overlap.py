"""Crossfade weights and the worker's overlap-add: the weight shape, the partition of unity across
neighbouring windows, MSST's window, refused settings, and OverlapAdd against a brute-force
weighted average of every window's output (residual stem, non-finite output, shift)."""
import numpy as np
import pytest

from streamer.errors import SettingsError
from streamer.inference.chunks import msst_window
from streamer.inference.residual import SPREAD_INDEX
from streamer.stream.overlap import OverlapAdd, window_weights

F32 = np.float32


def random_lengths(rng, max_hop=300):
    """A valid (window, hop, lookahead, crossfade int)."""
    hop = int(rng.integers(1, max_hop))
    window = hop + int(rng.integers(0, 4 * hop + 5))
    lookahead = int(rng.integers(0, window - hop + 1))
    crossfade = int(rng.integers(0, min(lookahead, hop) + 1))
    return window, hop, lookahead, crossfade


# ---------------------------------------------------------------------------------------------- window_weights

def test_window_weights_shape_and_partition_of_unity():
    rng = np.random.default_rng(0)
    faded = 0
    for _ in range(400):
        window, hop, lookahead, x = random_lengths(rng)
        w = window_weights(window, hop, lookahead, x)
        assert w.dtype == np.float32 and w.shape == (window,)
        start, end = window - lookahead - hop, window - lookahead  # the window's own hop region
        assert (w[:start] == 0).all()
        assert (w[start + x:end] == 1).all()
        assert (w[end + x:] == 0).all()
        fade_in, fade_out = w[start:start + x], w[end:end + x]
        assert ((fade_in > 0) & (fade_in < 1)).all() and (np.diff(fade_in) > 0).all()
        # the previous window (ending hop samples earlier) sees position i at index i + hop
        np.testing.assert_array_equal(fade_in + w[start + hop:start + hop + x], np.ones(x, F32))
        np.testing.assert_array_equal(fade_out, w[start + hop:start + hop + x])
        # every sample of the region: the weights of all windows covering it sum to exactly 1
        total = np.zeros(hop, F32)
        for j in range(0, window // hop + 1):
            idx = np.arange(start, end) + j * hop
            total += np.where(idx < window, w[np.clip(idx, 0, window - 1)], F32(0))
        np.testing.assert_array_equal(total, np.ones(hop, F32))
        faded += x > 1
    assert faded > 100


def test_zero_crossfade_is_a_hard_cut_and_whole_floats_count_as_samples():
    w = window_weights(100, 30, 20, 0)
    expected = np.zeros(100, F32)
    expected[50:80] = 1
    np.testing.assert_array_equal(w, expected)
    np.testing.assert_array_equal(window_weights(100, 30, 20, 7.0), window_weights(100, 30, 20, 7))


@pytest.mark.parametrize("window,hop", [(4410, 1102), (3001, 1000), (100, 100), (9, 3), (20000, 2500)])
def test_msst_crossfade_is_msst_window(window, hop):
    w = window_weights(window, hop, window - hop, "msst")
    assert w.dtype == np.float32
    np.testing.assert_array_equal(w, msst_window(window).numpy().astype(F32))


@pytest.mark.parametrize("args,numbers", [
    ((100, 20, 10, 15), ["15", "10"]),          # longer than the look-ahead
    ((100, 10, 30, 20), ["20", "10"]),          # longer than the hop
    ((100, 20, 10, -3), ["-3"]),
    ((100, 20, 10, 2.5), ["2.5"]),
    ((100, 20, 10, True), ["True"]),
    ((100, 20, 10, "fast"), ["fast"]),
    ((100, 20, 30, "msst"), ["80", "30"]),      # msst needs lookahead = window - hop
])
def test_invalid_crossfade_is_refused_with_the_numbers(args, numbers):
    with pytest.raises(SettingsError) as info:
        window_weights(*args)
    assert isinstance(info.value, ValueError)
    for n in numbers:
        assert n in str(info.value)


# ---------------------------------------------------------------------------------------------- OverlapAdd

def stream(ola, weights_len, x, outputs):
    """Feed window j (ending at (j + 1) * hop) with model output outputs[j]; the regions it returns."""
    hop, window = ola.hop, weights_len
    pad = np.concatenate([np.zeros((x.shape[0], window), F32), x], axis=1)  # silence before the stream
    regions = []
    for j, y in enumerate(outputs):
        end = (j + 1) * hop
        dry = pad[:, end:end + window]  # input [end - window, end)
        regions.append(ola.add(y, dry).copy())
    return regions


def reference(outputs, w, hop, lookahead, x, j, model_stems, stems_out, residual):
    """Window j's region by brute force: at each position, the weighted average over ALL windows
    (later ones included: their weight there must be 0), float64; the residual is dry minus the rest."""
    window = w.shape[0]
    channels = x.shape[0]
    end = (j + 1) * hop
    pos = np.arange(end - lookahead - hop, end - lookahead)
    num = np.zeros((stems_out, channels, hop))
    den = np.zeros(hop)
    for i, y in enumerate(outputs):
        idx = pos - ((i + 1) * hop - window)
        ok = (idx >= 0) & (idx < window)
        wi = np.where(ok, w[np.clip(idx, 0, window - 1)], 0).astype(np.float64)
        if i > j:
            assert (wi == 0).all()
        den += wi
        for s in range(model_stems):
            if s != residual:
                num[s] += wi * np.where(ok, y[s][:, np.clip(idx, 0, window - 1)], 0)
    region = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    dry = np.where(pos >= 0, x[:, np.clip(pos, 0, None)], 0)
    if residual >= 0:
        region[residual] = dry - np.delete(region, residual, axis=0).sum(axis=0)
    elif residual == SPREAD_INDEX:  # each stem: its average plus an equal share of what the stems miss
        region += (dry - region.sum(axis=0)) / stems_out
    return region


@pytest.mark.parametrize("seed,crossfade", [(0, None), (1, None), (2, "msst"), (3, 0)])
def test_constant_output_gives_exactly_one(seed, crossfade):
    rng = np.random.default_rng(seed)
    window, hop, lookahead, x = random_lengths(rng, 100)
    if crossfade == "msst":
        hop = max(1, window // 4)
        lookahead, x = window - hop, "msst"
    elif crossfade == 0:
        x = 0
    w = window_weights(window, hop, lookahead, x)
    ola = OverlapAdd(2, 2, 2, window, hop, lookahead, w)
    n_windows = window // hop + 30
    ones = np.ones((2, 2, window), F32)
    regions = stream(ola, window, np.zeros((2, n_windows * hop), F32), [ones] * n_windows)
    first = window // hop + 1  # windows after this one only finalise regions past the stream start
    for r in regions[first:]:
        np.testing.assert_array_equal(r, np.ones((2, 2, hop), F32))
    if x != "msst":  # each region has its own window's weight > 0 on it: exact from the first window
        for r in regions[:first]:
            np.testing.assert_array_equal(r, np.ones((2, 2, hop), F32))


@pytest.mark.parametrize("seed,model_stems,stems_out,residual,msst", [
    (0, 2, 2, -1, False), (1, 2, 3, 2, False), (2, 3, 3, 1, False), (3, 2, 2, -1, True), (4, 2, 3, 2, True),
    (5, 4, 4, SPREAD_INDEX, False), (6, 2, 2, SPREAD_INDEX, True),
])
def test_overlap_add_matches_brute_force_and_residual_is_dry_minus_stems(seed, model_stems, stems_out, residual,
                                                                          msst):
    rng = np.random.default_rng(seed)
    window, hop, lookahead, x = random_lengths(rng, 60)
    if msst:
        hop = max(1, window // 3)
        lookahead, x = window - hop, "msst"
    w = window_weights(window, hop, lookahead, x)
    channels = 2
    ola = OverlapAdd(model_stems, stems_out, channels, window, hop, lookahead, w, residual)
    n_windows = window // hop + 12
    audio = rng.standard_normal((channels, n_windows * hop)).astype(F32)
    outputs = [rng.standard_normal((model_stems, channels, window)).astype(F32) for _ in range(n_windows)]
    if residual >= 0 and residual < model_stems:
        for y in outputs:
            y[residual] = 1e6  # the model's own residual stem is never used
    regions = stream(ola, window, audio, outputs)
    for j, r in enumerate(regions):
        assert r.shape == (stems_out, channels, hop) and r.dtype == np.float32
        ref = reference(outputs, w, hop, lookahead, audio, j, model_stems, stems_out, residual)
        np.testing.assert_allclose(r, ref, rtol=1e-4, atol=1e-5, err_msg=f"window {j}")
        if residual != -1:  # a residual stem or the spread residual: the stems sum to the dry input
            end = (j + 1) * hop
            pos = np.arange(end - lookahead - hop, end - lookahead)
            dry = np.where(pos >= 0, audio[:, np.clip(pos, 0, None)], F32(0))
            np.testing.assert_allclose(r.sum(axis=0), dry, atol=1e-5)
    assert ola.nonfinite == 0


def test_nonfinite_model_output_is_zeroed_and_counted():
    rng = np.random.default_rng(5)
    window, hop, lookahead = 64, 16, 32
    w = window_weights(window, hop, lookahead, 8)
    clean = OverlapAdd(2, 2, 2, window, hop, lookahead, w)
    dirty = OverlapAdd(2, 2, 2, window, hop, lookahead, w)
    expected_bad = 0
    for j in range(12):
        y = rng.standard_normal((2, 2, window)).astype(F32)
        bad = rng.random(y.shape) < 0.03
        y_dirty = y.copy()
        y_dirty[bad] = rng.choice(np.array([np.nan, np.inf, -np.inf], F32), size=int(bad.sum()))
        y[bad] = 0
        expected_bad += int(bad.sum())
        dry = np.zeros((2, window), F32)
        got = dirty.add(y_dirty, dry)
        assert np.isfinite(got).all()
        np.testing.assert_array_equal(got, clean.add(y, dry))
        assert dirty.nonfinite == expected_bad
    assert expected_bad > 0 and clean.nonfinite == 0
    assert np.isfinite(dirty.acc).all()


def test_shift_moves_the_accumulators_and_resets_from_a_window_on():
    rng = np.random.default_rng(6)
    window, hop, lookahead = 50, 10, 20
    ola = OverlapAdd(2, 2, 1, window, hop, lookahead, window_weights(window, hop, lookahead, 5))
    ola.acc[:] = rng.standard_normal(ola.acc.shape).astype(F32)
    ola.wsum[:] = rng.random(window).astype(F32) + 0.5
    acc, wsum = ola.acc.copy(), ola.wsum.copy()
    ola.shift(0)
    ola.shift(-3)
    np.testing.assert_array_equal(ola.acc, acc)
    np.testing.assert_array_equal(ola.wsum, wsum)
    ola.shift(7)
    np.testing.assert_array_equal(ola.acc[..., :-7], acc[..., 7:])
    assert (ola.acc[..., -7:] == 0).all() and (ola.wsum[-7:] == 0).all()
    np.testing.assert_array_equal(ola.wsum[:-7], wsum[7:])
    for samples in (window, window + 1, 10 * window):
        ola.acc[:] = 1
        ola.wsum[:] = 1
        ola.shift(samples)
        assert not ola.acc.any() and not ola.wsum.any()


@pytest.mark.parametrize("window,hop,lookahead", [(100, 50, 60), (10, 20, 0), (0, 0, 0), (100, 10, -1)])
def test_window_weights_refuse_lengths_that_do_not_fit(window, hop, lookahead):
    """Lengths that do not fit the window are refused, not turned into all-zero or all-one weights."""
    with pytest.raises(SettingsError):
        window_weights(window, hop, lookahead, 0)

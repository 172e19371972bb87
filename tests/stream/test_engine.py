"""The streaming engine: exactness against offline demix, latency, mixture consistency, real-time mode."""
import time

import numpy as np
import pytest
import torch
from standins import ContextModel, FailingModel, IdentityModel, NaNModel, SlowModel, WindowMeanModel

import streamer
from streamer import StreamEngine
from streamer.stream import kernels as rtkernels
from streamer.stream.overlap import window_weights

RATE = 44100


def feed(engine, audio, sizes):
    """Feed ``audio`` in blocks of the given sizes (cycled), flush, return the output aligned with the input."""
    outs, pos, i = [], 0, 0
    while pos < audio.shape[1]:
        n = sizes[i % len(sizes)]
        outs.append(engine.process(audio[:, pos:pos + n]))
        pos += n
        i += 1
    latency = engine.latency_samples
    outs.append(engine.flush())
    y = np.concatenate(outs, axis=-1)
    assert y.shape[-1] == audio.shape[1] + latency
    return y[..., latency:]


def noise(seconds=1.0, seed=0, channels=2):
    return (np.random.default_rng(seed).standard_normal((channels, int(seconds * RATE))) * 0.3).astype(np.float32)


@pytest.mark.parametrize("sizes", [[1], [37], [256], [1000], "random"])
def test_offline_exact_setting_equals_demix(sizes):
    chunk, nov = 4410, 4
    audio = noise(0.5 if sizes == [1] else 1.2)
    model = ContextModel()
    ref = streamer.demix(model, audio, chunk, nov)
    if sizes == "random":
        sizes = list(np.random.default_rng(3).integers(1, 3000, size=50))
    engine = StreamEngine(model, ["a", "b", "c"], RATE, window=chunk, hop=chunk // nov, lookahead=chunk - chunk // nov,
                          crossfade="msst", realtime=False)
    out = feed(engine, audio, sizes)
    inner = slice(chunk, audio.shape[1] - chunk)
    np.testing.assert_allclose(out[..., inner], ref[..., inner], atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk,nov", [(3000, 2), (3001, 3), (2205, 1)])
def test_offline_exact_with_other_overlaps(chunk, nov):
    audio = noise(0.6, seed=1)
    model = ContextModel()
    ref = streamer.demix(model, audio, chunk, nov)
    hop = chunk // nov
    engine = StreamEngine(model, ["a", "b", "c"], RATE, window=chunk, hop=hop, lookahead=chunk - hop, crossfade="msst")
    out = feed(engine, audio, [441, 17])
    inner = slice(chunk, audio.shape[1] - chunk)
    np.testing.assert_allclose(out[..., inner], ref[..., inner], atol=1e-5, rtol=0)


def test_offline_exact_with_a_real_roformer(tmp_path):
    from conftest import randomize, write_yaml

    config = streamer.load_config(write_yaml(tmp_path / "m.yaml", stems=("vocals", "drums"), target=None,
                                             extra_model={"num_stems": 2}, chunk_size=8820, num_overlap=2))
    torch.manual_seed(0)
    model = randomize(streamer.build_model(config))
    audio = noise(1.0, seed=2)
    ref = streamer.demix(model, audio, config.chunk_size, config.num_overlap)
    engine = StreamEngine.from_config(config, model, preset="offline-exact")
    out = feed(engine, audio, [1000, 313])
    inner = slice(config.chunk_size, audio.shape[1] - config.chunk_size)
    np.testing.assert_allclose(out[..., inner], ref[..., inner], atol=1e-5, rtol=0)


@pytest.mark.parametrize("window,hop,lookahead,crossfade", [
    (4410, 441, 441, 100), (4410, 1000, 0, 0), (3000, 700, 1500, 700), (2000, 2000, 0, 0), (4000, 500, 3500, "msst"),
])
def test_latency_is_exact_and_identity_model_passes_input(window, hop, lookahead, crossfade):
    audio = noise(0.5, seed=4)
    engine = StreamEngine(IdentityModel(), ["x", "silent"], RATE, window=window, hop=hop, lookahead=lookahead,
                          crossfade=crossfade)
    assert engine.latency_samples == lookahead + hop
    assert engine.latency_parts["algorithmic"] == lookahead + hop and engine.latency_parts["processing"] == 0
    out = feed(engine, audio, [37, 256])
    if crossfade == "msst":  # MSST's window is 0 at both ends: offline, such samples are 0 too
        inner = slice(window, audio.shape[1] - window)
        w = window_weights(window, hop, lookahead, "msst")
        assert (w[[0, -1]] == 0).all()
        np.testing.assert_allclose(out[0, :, inner], audio[:, inner], atol=1e-6)
    else:
        np.testing.assert_allclose(out[0], audio, atol=1e-6)
    assert np.abs(out[1]).max() == 0


def test_impulse_comes_out_after_latency_samples():
    engine = StreamEngine(IdentityModel(), ["x", "silent"], RATE, window=2048, hop=256, lookahead=512)
    x = np.zeros((2, 5000), np.float32)
    x[:, 1000] = 1.0
    y = np.concatenate([engine.process(x[:, i:i + 64]) for i in range(0, 5000, 64)], axis=-1)
    assert int(np.argmax(np.abs(y[0, 0]))) == 1000 + engine.latency_samples == 1000 + 768


@pytest.mark.parametrize("window,hop,lookahead,crossfade", [
    (4410, 441, 441, 200), (3000, 1000, 500, 0), (4000, 500, 3500, "msst"),
])
@pytest.mark.parametrize("residual", ["b", "extra", "spread"])
def test_residual_stems_sum_to_delayed_input(window, hop, lookahead, crossfade, residual):
    audio = noise(0.8, seed=5)
    engine = StreamEngine(ContextModel(), ["a", "b", "c"], RATE, window=window, hop=hop, lookahead=lookahead,
                          crossfade=crossfade, residual=residual)
    assert engine.stems == (["a", "b", "c", "extra"] if residual == "extra" else ["a", "b", "c"])
    rng = np.random.default_rng(7)
    out = feed(engine, audio, list(rng.integers(1, 1500, size=40)))
    np.testing.assert_allclose(out.sum(axis=0), audio, atol=2e-6)


def test_crossfade_removes_the_seams_between_windows():
    """A model whose output jumps at every window: the crossfade turns each jump into a ramp."""
    rng = np.random.default_rng(8)
    audio = np.repeat(rng.uniform(-0.5, 0.5, (2, 40)), 441, axis=1).astype(np.float32)  # steps every 10 ms
    hard = StreamEngine(WindowMeanModel(), ["mean", "rest"], RATE, window=4410, hop=441, lookahead=882, crossfade=0)
    soft = StreamEngine(WindowMeanModel(), ["mean", "rest"], RATE, window=4410, hop=441, lookahead=882, crossfade=400)
    jump_hard = np.abs(np.diff(feed(hard, audio, [256])[0], axis=-1)).max()
    jump_soft = np.abs(np.diff(feed(soft, audio, [256])[0], axis=-1)).max()
    assert jump_soft < jump_hard / 50


def test_reset_restarts_the_stream_and_flush_resets():
    audio = noise(0.4, seed=9)
    engine = StreamEngine(ContextModel(), ["a", "b", "c"], RATE, window=2000, hop=400, lookahead=400, residual="c")
    first = feed(engine, audio, [100])
    second = feed(engine, audio, [333])  # flush() reset the engine
    np.testing.assert_array_equal(first, second)
    engine.process(noise(0.1, seed=10))
    engine.reset()
    third = feed(engine, audio, [100])
    np.testing.assert_array_equal(first, third)
    assert engine.stats["hops"] > 0


def test_nan_and_inf_input_is_contained_and_counted():
    audio = noise(0.5, seed=11)
    bad = audio.copy()
    bad[0, 5000:5100] = np.nan
    bad[1, 7000] = np.inf
    engine = StreamEngine(IdentityModel(), ["x", "silent"], RATE, window=2205, hop=441, lookahead=441, residual="rest")
    out = feed(engine, bad, [256])
    assert np.isfinite(out).all()
    clean = np.nan_to_num(bad, nan=0.0, posinf=0.0)
    np.testing.assert_allclose(out[0], clean, atol=1e-6)
    assert engine.stats["nonfinite_input"] == 101


def test_non_finite_model_output_is_contained():
    engine = StreamEngine(NaNModel(), ["a", "b", "c"], RATE, window=2000, hop=500, lookahead=500, residual="c")
    out = feed(engine, noise(0.3), [256])
    assert np.isfinite(out).all()
    assert engine.stats["nonfinite_output"] > 0


def test_bad_settings_and_blocks_are_refused():
    m = ContextModel()
    with pytest.raises(ValueError, match="cannot be longer than the window"):
        StreamEngine(m, ["a", "b", "c"], RATE, window=1000, hop=2000, lookahead=0)
    with pytest.raises(ValueError, match="cannot exceed the window"):
        StreamEngine(m, ["a", "b", "c"], RATE, window=1000, hop=500, lookahead=600)
    with pytest.raises(ValueError, match="look-ahead"):
        StreamEngine(m, ["a", "b", "c"], RATE, window=1000, hop=500, lookahead=100, crossfade=200)
    with pytest.raises(ValueError, match="msst"):
        StreamEngine(m, ["a", "b", "c"], RATE, window=1000, hop=250, lookahead=250, crossfade="msst")
    with pytest.raises(ValueError, match="returned stems of shape"):
        StreamEngine(m, ["a", "b"], RATE, window=1000, hop=250, lookahead=250)
    engine = StreamEngine(m, ["a", "b", "c"], RATE, window=1000, hop=250, lookahead=250)
    with pytest.raises(ValueError, match=r"shape \(2, frames\)"):
        engine.process(np.zeros((3, 100), np.float32))
    with pytest.raises(TypeError, match="float32"):
        engine.process(np.zeros((2, 100), np.int16))
    with pytest.raises(ValueError, match="48000 Hz differs"):
        engine.process(np.zeros((2, 100), np.float32), sample_rate=48000)
    out64 = engine.process(np.zeros((2, 100), np.float64))  # float64 is converted
    assert out64.dtype == np.float32 and out64.shape == (3, 2, 100)


def test_model_built_from_a_config_refuses_another_rate(tiny_config):
    config = streamer.load_config(tiny_config)
    model = streamer.build_model(config)
    with pytest.raises(ValueError, match="resample"):
        StreamEngine(model, config.stems, 48000, window=4410, hop=441, lookahead=441)


def test_presets_are_valid_for_shipped_configs():
    from conftest import MSST_CONFIGS

    for path in sorted(MSST_CONFIGS.rglob("*.yaml")):
        config = streamer.load_config(path)
        for name in streamer.PRESETS:
            s = streamer.preset_settings(name, config)
            assert s.hop <= s.window and s.lookahead + s.hop <= s.window
            window_weights(s.window, s.hop, s.lookahead, s.crossfade)
    with pytest.raises(ValueError, match="unknown latency preset"):
        streamer.preset_settings("fast", config)


def test_audio_side_kernels_compile_once_for_any_layout():
    engine = StreamEngine(ContextModel(), ["a", "b", "c"], RATE, window=1000, hop=250, lookahead=250)
    channels_last = np.zeros((300, 2), np.float32)
    engine.process(channels_last.T)              # a non-contiguous view
    engine.process(np.zeros((2, 300), np.float32))
    out = np.zeros((3, 2, 64), np.float32)
    engine.process_into(np.zeros((2, 64), np.float32), out)
    assert len(rtkernels.write_input.signatures) == 1
    assert len(rtkernels.read_output.signatures) == 1


# ---------------------------------------------------------------------------------------------- real time

def paced_feed(engine, audio, block, speed=4.0):
    """Feed at ``speed`` x real time; returns the concatenated output (not flushed)."""
    outs = []
    period = block / RATE / speed
    t0 = time.perf_counter()
    for i, pos in enumerate(range(0, audio.shape[1], block)):
        while time.perf_counter() < t0 + i * period:
            time.sleep(0.0005)
        outs.append(engine.process(audio[:, pos:pos + block]))
    return np.concatenate(outs, axis=-1)


@pytest.mark.parametrize("worker,residual", [("thread", "c"), ("process", "c"), ("process", "spread")])
def test_realtime_output_equals_inline_output_when_on_time(worker, residual):
    audio = noise(1.5, seed=12)
    settings = dict(window=4410, hop=1102, lookahead=1102, crossfade=300, residual=residual)
    inline = StreamEngine(ContextModel(), ["a", "b", "c"], RATE, **settings)
    expected = feed(inline, audio, [441])
    allowance = 22050  # 0.5 s of audio = 250 ms of wall time at 2x: ample for a model taking < 1 ms
    with StreamEngine(ContextModel(), ["a", "b", "c"], RATE, realtime=True, worker=worker,
                      compute_allowance=allowance, **settings) as engine:
        assert engine.running
        assert engine.latency_samples == 1102 + 1102 + allowance
        assert engine.latency_parts["processing"] == allowance
        got = paced_feed(engine, audio, 441, speed=2.0)
        stats = engine.stats
    assert not engine.running
    assert stats["deadline_misses"] == 0 and stats["error"] is None and stats["hops"] > 30, stats
    lat = engine.latency_samples
    np.testing.assert_allclose(got[..., lat:], expected[..., : audio.shape[1] - lat], atol=1e-6)


def test_missed_deadlines_fall_back_to_dry_input_and_keep_stems_summing():
    audio = noise(1.5, seed=13)
    hop = 2205  # 50 ms; the model takes 120 ms per window
    with StreamEngine(SlowModel(0.12), ["a", "b", "c"], RATE, window=4410, hop=hop, lookahead=hop, residual="c",
                      realtime=True, worker="thread") as engine:
        got = paced_feed(engine, audio, 256, speed=1.0)
        stats = engine.stats
    lat = engine.latency_samples
    assert stats["deadline_misses"] > 0 and stats["skipped_windows"] + stats["late_results"] > 0
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got.sum(axis=0)[:, lat:], audio[:, : got.shape[-1] - lat], atol=2e-6)
    # a missed stretch plays the dry input in the residual stem and silence in the others
    dry_only = np.all(got[:2, :, lat:] == 0, axis=(0, 1))
    assert dry_only.sum() > hop
    np.testing.assert_allclose(got[2, :, lat:][:, dry_only], audio[:, : got.shape[-1] - lat][:, dry_only], atol=1e-7)


def test_spread_residual_keeps_stems_summing_on_time_and_through_missed_deadlines():
    """residual="spread": on time every stem is its overlap-add plus a third of what the three stems
    miss; a missed stretch splits the dry input equally; the sum is the input throughout."""
    audio = noise(1.5, seed=15)
    hop = 2205
    with StreamEngine(SlowModel(0.12), ["a", "b", "c"], RATE, window=4410, hop=hop, lookahead=hop, residual="spread",
                      realtime=True, worker="thread") as engine:
        assert engine.stems == ["a", "b", "c"]
        got = paced_feed(engine, audio, 256, speed=1.0)
        stats = engine.stats
    lat = engine.latency_samples
    assert stats["deadline_misses"] > 0
    delayed = audio[:, : got.shape[-1] - lat]
    np.testing.assert_allclose(got.sum(axis=0)[:, lat:], delayed, atol=2e-6)
    split = np.all(np.abs(got[:, :, lat:] - delayed[None] / 3) < 1e-7, axis=(0, 1))  # the fallback
    assert split.sum() > hop
    inline = StreamEngine(ContextModel(), ["a", "b", "c"], RATE, window=4410, hop=hop, lookahead=hop,
                          residual="spread")
    on_time = feed(inline, audio, [256])
    plain = feed(StreamEngine(ContextModel(), ["a", "b", "c"], RATE, window=4410, hop=hop, lookahead=hop), audio, [256])
    share = (audio - plain.sum(axis=0)) / 3
    np.testing.assert_allclose(on_time, plain + share[None], atol=2e-6)
    assert np.abs(share).max() > 1e-3  # the stand-in's stems do not sum to its input: there was something to share


def test_worker_failure_is_reported_and_audio_continues():
    audio = noise(0.5, seed=14)
    with StreamEngine(FailingModel(), ["a", "b", "c"], RATE, window=4410, hop=1102, lookahead=1102, residual="c",
                      realtime=True, worker="thread") as engine:
        got = paced_feed(engine, audio, 441, speed=8.0)
        time.sleep(0.05)
        stats = engine.stats
    assert "simulated model failure" in stats["error"]
    assert np.isfinite(got).all() and stats["deadline_misses"] > 0
    lat = engine.latency_samples
    np.testing.assert_allclose(got.sum(axis=0)[:, lat:], audio[:, : got.shape[-1] - lat], atol=2e-6)


def test_start_stop_are_idempotent_and_inline_needs_no_worker():
    engine = StreamEngine(ContextModel(), ["a", "b", "c"], RATE, window=1000, hop=250, lookahead=250, realtime=True,
                          worker="thread")
    engine.stop()  # never started
    engine.start()
    engine.start()  # already running
    assert engine.running
    engine.stop()
    engine.stop()
    assert not engine.running
    inline = StreamEngine(ContextModel(), ["a", "b", "c"], RATE, window=1000, hop=250, lookahead=250)
    inline.start()
    assert not inline.running
    inline.stop()


def test_realtime_flush_waits_for_the_worker():
    audio = noise(0.3, seed=15)
    settings = dict(window=4410, hop=1102, lookahead=1102, crossfade=300)
    expected = feed(StreamEngine(ContextModel(), ["a", "b", "c"], RATE, **settings), audio, [441])
    with StreamEngine(ContextModel(), ["a", "b", "c"], RATE, realtime=True, worker="thread", compute_allowance=4410,
                      **settings) as engine:
        got = paced_feed(engine, audio, 441, speed=2.0)
        tail = engine.flush()
    y = np.concatenate([got, tail], axis=-1)[..., engine.latency_samples:]
    np.testing.assert_allclose(y, expected, atol=1e-6)

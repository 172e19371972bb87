"""Training augmentation (streamer.lab.augment): every example stays a mixture that is the exact sum of
its stems, each augmentation does what it says, and a seed reproduces an example."""
import numpy as np
import pytest
import torch

from streamer.lab.augment import Augment, _compressor_gain, _limiter_gain
from streamer.lab.train import RemixDataset, song_folders

from lab_helpers import make_songs

RATE = 44100
STEMS = ["vocals", "drums", "bass", "other"]


def tone(seconds=1.0, f=220.0, seed=0):
    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * f * t) + 0.02 * rng.standard_normal(t.size)
    return np.stack([x, 0.7 * x]).astype(np.float32)


def only(**probabilities):
    """Every augmentation off except those given (gain fixed at 0 dB unless given)."""
    aug = Augment.off()
    aug.gain_db = probabilities.pop("gain_db", (0.0, 0.0))
    aug.p_swap = probabilities.pop("p_swap", 0.0)
    for name, value in probabilities.items():
        setattr(aug, name, value)
    return aug


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    songs = make_songs(tmp_path_factory.mktemp("aug") / "songs", 3, seconds=2.0)
    return RemixDataset(song_folders([str(songs)], STEMS), STEMS, RATE, 2, augment=Augment())


def test_examples_are_exact_sums_and_reproducible(dataset):
    mix, stems = dataset.batch(np.random.default_rng(7), 6, 11025)
    assert mix.shape == (6, 2, 11025) and stems.shape == (6, 4, 2, 11025)
    assert np.isfinite(stems.numpy()).all()
    np.testing.assert_array_equal(mix.numpy(), stems.sum(dim=1).numpy())
    again, _ = dataset.batch(np.random.default_rng(7), 6, 11025)
    np.testing.assert_array_equal(mix.numpy(), again.numpy())
    other, _ = dataset.batch(np.random.default_rng(8), 6, 11025)
    assert not np.array_equal(mix.numpy(), other.numpy())


def test_missing_stems_occur_and_are_silent(dataset):
    dataset_aug = dataset.augment
    try:
        dataset.augment = only(p_silent=1.0)
        _, stems = dataset.batch(np.random.default_rng(0), 2, 4410)
        assert not stems.numpy().any()
        dataset.augment = only(p_silent=0.0)
        _, stems = dataset.batch(np.random.default_rng(0), 2, 4410)
        assert all(stems[b, s].abs().max() > 0 for b in range(2) for s in range(4))
    finally:
        dataset.augment = dataset_aug


def test_gain_polarity_and_swap():
    x = tone()
    rng = np.random.default_rng(0)
    y = only(p_polarity=1.0).stem(x, 1.0, x.shape[1], RATE, rng)
    np.testing.assert_array_equal(y, -x)
    y = only(p_swap=1.0).stem(x, 1.0, x.shape[1], RATE, rng)
    np.testing.assert_array_equal(y, x[::-1])
    y = only(gain_db=(-6.0, -6.0)).stem(x, 1.0, x.shape[1], RATE, rng)
    np.testing.assert_allclose(y, x * 10 ** (-6 / 20), rtol=1e-6)


def test_speed_changes_pitch_and_keeps_the_length():
    x = tone(1.2, f=440.0)
    aug = only(p_speed=1.0, speed=(1.05, 1.05))
    need, speed = aug.read_length(np.random.default_rng(0), 22050)
    assert speed == pytest.approx(1.05) and need >= 22050 * 1.05
    y = aug.stem(x[:, :need], speed, 22050, RATE, np.random.default_rng(0))
    assert y.shape == (2, 22050)
    spectrum = np.abs(np.fft.rfft(y[0, 2000:20000] * np.hanning(18000)))
    peak = np.fft.rfftfreq(18000, 1 / RATE)[spectrum.argmax()]
    assert peak == pytest.approx(440 * 1.05, abs=4)


@pytest.mark.parametrize("effect", ["p_eq", "p_compress", "p_saturate", "p_chorus", "p_delay", "p_reverb"])
def test_each_effect_changes_the_stem_and_keeps_its_level(effect):
    x = tone(0.5, seed=1)
    y = only(**{effect: 1.0}).stem(x, 1.0, x.shape[1], RATE, np.random.default_rng(3))
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    assert not np.allclose(y, x, atol=1e-4)
    level = lambda a: np.sqrt(np.mean(a.astype(np.float64) ** 2))  # noqa: E731
    assert level(y) == pytest.approx(level(x), rel=1e-3)


def test_mix_bus_compression_and_limiting_keep_the_sum_exact():
    stems = np.stack([tone(1.0, f, seed=i) * (3.0 if i == 0 else 1.0) for i, f in enumerate((110, 220, 330, 440))])
    stems[:, :, 20000:22000] *= 4  # a loud burst
    aug = only(p_bus_compress=1.0, p_limit=1.0)
    out = aug.mix_bus(stems.copy(), RATE, np.random.default_rng(0))
    mix_in, mix_out = stems.sum(axis=0), out.sum(axis=0)
    # one gain curve for every stem: each stem is scaled by the same factor at every sample
    ratio = out / np.where(np.abs(stems) > 1e-3, stems, np.nan)
    spread = np.nanmax(ratio, axis=(0, 1)) - np.nanmin(ratio, axis=(0, 1))
    assert np.nanmax(spread) < 1e-4
    crest = lambda m: np.abs(m).max() / np.sqrt(np.mean(m ** 2))  # noqa: E731
    assert crest(mix_out) < crest(mix_in)


def test_gain_curves():
    t = np.arange(RATE) / RATE
    mix = np.stack([np.sin(2 * np.pi * 100 * t)] * 2) * np.where(t < 0.5, 0.1, 1.0)
    g = _compressor_gain(mix, RATE, threshold_db=-12, ratio=4, attack_ms=5, release_ms=100)
    assert g.shape == (RATE,) and g[int(0.9 * RATE)] < g[int(0.3 * RATE)]
    limit = _limiter_gain(mix, RATE, ceiling=0.5, release_ms=50)
    assert np.abs(mix * limit).max() <= 0.5 * 1.05
    assert limit[int(0.25 * RATE)] == pytest.approx(1.0)


def test_off_is_the_plain_remix():
    aug = Augment.off()
    assert aug.p_speed == aug.p_silent == aug.p_reverb == aug.p_bus_compress == 0.0 and aug.p_swap == 0.5
    names = [name for name, _ in Augment().describe()]
    assert "p_reverb" in names and "speed" in names


def test_songs_are_kept_in_float16_and_examples_come_out_in_float32(dataset):
    from streamer.audio import load_stems

    assert all(song.dtype == np.float16 for song in dataset.songs)
    first = load_stems(dataset.folders[0], STEMS, RATE, 2)
    np.testing.assert_allclose(dataset.songs[0].astype(np.float32), first, rtol=2 ** -11, atol=2 ** -24)
    mix, stems = dataset.batch(np.random.default_rng(3), 2, 4410)
    assert mix.dtype == stems.dtype == torch.float32

import numpy as np
import pytest
import torch

from streamer import demix, demix_tta

CHUNK = 1000


def stand_in(x):
    """Deterministic and context dependent: the output depends on the whole chunk and the position."""
    level = x.abs().mean(dim=(-1, -2), keepdim=True)
    ramp = torch.linspace(0.5, 1.5, x.shape[-1])
    a = x * (1 + level) * ramp
    # the left channel feeds both outputs and a square term breaks odd symmetry, so TTA changes it
    b = torch.cumsum(x, dim=-1) / x.shape[-1] + x[:, :1] * 0.25 + x.square() * 0.5
    return torch.stack([a, torch.tanh(b * 3)], dim=1)


def spec_reference(model, mix, chunk, nov):
    """Spec section 6 with batch size 1, written out sample by sample in numpy."""
    fade, step = chunk // 10, chunk // nov
    border = chunk - step
    length0 = mix.shape[1]
    padded = length0 > 2 * border and border > 0
    x = np.pad(mix, ((0, 0), (border, border)), mode="reflect") if padded else mix
    length = x.shape[1]
    w = np.ones(chunk)
    w[:fade] = np.linspace(0, 1, fade)
    w[chunk - fade:] = np.linspace(1, 0, fade)
    result = counter = None
    i = 0
    while i < length:
        part = x[:, i:i + chunk]
        n = part.shape[1]
        if n < chunk:
            mode = "reflect" if n > chunk // 2 else "constant"
            part = np.pad(part, ((0, 0), (0, chunk - n)), mode=mode)
        out = model(torch.from_numpy(part[None].astype(np.float32)))[0].numpy().astype(np.float64)
        wi = w.copy()
        if i == 0:
            wi[:fade] = 1
        elif i + step >= length:
            wi[-fade:] = 1
        if result is None:
            result = np.zeros((out.shape[0], mix.shape[0], length))
            counter = np.zeros((out.shape[0], mix.shape[0], length))
        result[..., i:i + n] += out[..., :n] * wi[:n]
        counter[..., i:i + n] += wi[:n]
        i += step
    with np.errstate(invalid="ignore"):
        est = np.nan_to_num(result / counter, nan=0.0)
    return est[..., border:length - border] if padded else est


@pytest.mark.parametrize("length", [300, 501, 700, 1000, 1999, 2517, 5003])
@pytest.mark.parametrize("nov", [1, 2, 3, 4])
def test_demix_matches_spec_formula(rng, length, nov):
    mix = (rng.standard_normal((2, length)) * 0.3).astype(np.float32)
    ref = spec_reference(stand_in, mix, CHUNK, nov)
    for batch_size in (1, 2, 5):
        got = demix(stand_in, mix, CHUNK, nov, batch_size=batch_size)
        assert got.shape == (2, 2, length) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, atol=2e-6, rtol=1e-5)


def test_zero_weight_samples_become_zero(rng):
    """With num_overlap 1, the first chunk's last sample has weight 0 and no other chunk covers it."""
    mix = (rng.standard_normal((2, 2500)) * 0.3).astype(np.float32)
    got = demix(stand_in, mix, CHUNK, 1)
    assert np.all(got[..., CHUNK - 1] == 0)
    assert np.all(np.isfinite(got))


def test_tta_formula(rng):
    mix = (rng.standard_normal((2, 2200)) * 0.3).astype(np.float32)
    plain = spec_reference(stand_in, mix, CHUNK, 2)
    swapped = spec_reference(stand_in, mix[::-1].copy(), CHUNK, 2)[:, ::-1]
    inverted = spec_reference(stand_in, -mix, CHUNK, 2)
    expected = (plain + swapped - inverted) / 3
    np.testing.assert_allclose(demix_tta(stand_in, mix, CHUNK, 2, batch_size=3), expected, atol=2e-6)
    assert not np.allclose(expected, plain, atol=1e-3)  # the augmentation changes this model's output


def test_three_dim_model_output_is_accepted(rng):
    mix = (rng.standard_normal((2, 1500)) * 0.3).astype(np.float32)
    got = demix(lambda x: x * 0.5, mix, CHUNK, 2)
    np.testing.assert_allclose(got[0], mix * 0.5, atol=1e-6)


def test_bad_inputs(rng):
    mix = (rng.standard_normal((2, 1500))).astype(np.float32)
    bad = mix.copy()
    bad[1, 7] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        demix(stand_in, bad, CHUNK, 2)
    with pytest.raises(ValueError, match="channels, samples"):
        demix(stand_in, mix[0], CHUNK, 2)
    with pytest.raises(ValueError, match="floating point"):
        demix(stand_in, (mix * 1000).astype(np.int16), CHUNK, 2)
    with pytest.raises(ValueError, match="num_overlap"):
        demix(stand_in, mix, 4, 8)


def test_real_model_through_demix_is_identity_when_all_pass(rng):
    """A Roformer whose masks are 1 returns the input through the whole chunked path."""
    from streamer.models.roformer import BSRoformer

    model = BSRoformer(16, depth=1, heads=2, dim_head=8, stereo=True, stft_hop_length=441, zero_dc=False).eval()
    model._mask = lambda xk, stem, packed: torch.zeros(xk.shape[1], sum(model.band_split.dim_inputs)).index_fill_(
        1, torch.arange(0, sum(model.band_split.dim_inputs), 2), 1.0)
    mix = (rng.standard_normal((2, 30000)) * 0.3).astype(np.float32)
    got = demix(model, mix, 8820, 2, batch_size=2)
    np.testing.assert_allclose(got[0], mix, atol=1e-5)


def test_fit_length_cuts_or_zero_pads_the_last_axis():
    from streamer.audio import fit_length

    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    cut = fit_length(x, 4)
    assert cut.shape == (2, 4) and np.array_equal(cut, x[:, :4])
    padded = fit_length(x, 9)
    assert padded.shape == (2, 9) and np.array_equal(padded[:, :6], x) and not padded[:, 6:].any()
    stems = np.ones((4, 2, 3), dtype=np.float32)  # any number of leading axes
    assert fit_length(stems, 5).shape == (4, 2, 5) and fit_length(stems, 5)[..., 3:].sum() == 0
    assert fit_length(x, 6) is x or np.array_equal(fit_length(x, 6), x)

"""Stems that add up to the input: a residual stem, or the residual spread over every stem."""
import numpy as np
import pytest

from streamer.errors import SettingsError
from streamer.inference.residual import NO_RESIDUAL, SPREAD_INDEX, apply_residual, output_stems

F32 = np.float32


def stems_and_mix(seed, stems=4, n=1000):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((stems, 2, n)).astype(F32), rng.standard_normal((2, n)).astype(F32)


def test_spread_gives_every_stem_an_equal_share_and_the_sum_is_the_mix():
    est, mix = stems_and_mix(0)
    before = est.copy()
    out = apply_residual(est, mix, SPREAD_INDEX)
    assert out is est and out.dtype == F32
    np.testing.assert_allclose(out.sum(axis=0), mix, atol=1e-5)
    shares = out - before  # the same correction on every stem: (mix - sum) / 4
    for s in range(4):
        np.testing.assert_allclose(shares[s], (mix - before.sum(axis=0)) / 4, atol=1e-5)


def test_residual_stem_is_the_mix_minus_the_others_and_ignores_the_model():
    est, mix = stems_and_mix(1, stems=3)
    est[2] = 1e6
    apply_residual(est, mix, 2)
    np.testing.assert_allclose(est[2], mix - est[0] - est[1], atol=1e-5)
    np.testing.assert_allclose(est.sum(axis=0), mix, atol=1e-4)


def test_no_residual_changes_nothing_and_a_bad_index_is_refused():
    est, mix = stems_and_mix(2)
    before = est.copy()
    np.testing.assert_array_equal(apply_residual(est, mix, NO_RESIDUAL), before)
    with pytest.raises(SettingsError, match=">= -2"):
        apply_residual(est, mix, -3)


def test_spread_of_a_perfect_separation_changes_nothing():
    est, _ = stems_and_mix(3)
    mix = est.sum(axis=0)
    before = est.copy()
    np.testing.assert_allclose(apply_residual(est, mix, SPREAD_INDEX), before, atol=1e-6)


def test_residual_names_spread_in_any_case_and_a_single_stem_cannot_be_its_own_residual():
    assert output_stems(["vocals", "other"], "Spread") == (["vocals", "other"], SPREAD_INDEX)
    for residual in ("spread", "vocals"):
        with pytest.raises(SettingsError, match="whole input"):
            output_stems(["vocals"], residual)
    assert output_stems(["vocals"], "other") == (["vocals", "other"], 1)

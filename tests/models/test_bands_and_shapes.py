import json

import numpy as np
import pytest
import torch

import streamer
from streamer.models.bands import DEFAULT_FREQS_PER_BANDS, MelBands
from streamer.models.roformer import model_class

from conftest import MSST_CONFIGS, SHAPES_JSON

SHAPES = json.loads(SHAPES_JSON.read_text())
ENTRIES = [k for k in SHAPES if k != "_meta"]


def test_every_shape_entry_is_covered():
    assert len(ENTRIES) == 21


@pytest.mark.parametrize("name", ENTRIES)
def test_state_dict_keys_and_shapes_match_reference(name):
    entry = SHAPES[name]
    if entry["file"]:
        cfg = streamer.load_config(MSST_CONFIGS / entry["file"][len("configs/"):])
        assert cfg.model_type == entry["model_type"]
        model = streamer.build_model(cfg, device="meta")
    else:
        with torch.device("meta"):
            model = model_class(entry["model_type"])(**entry["kwargs"])
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    ref = entry["state_dict"]
    assert len(got) == entry["num_keys"]
    assert list(got) == list(ref)  # same keys in the same order
    mismatched = {k: (got[k], ref[k]) for k in ref if got[k] != ref[k]}
    assert not mismatched
    # rotary frequencies are shared between attentions, as in the reference
    unique = {id(p): p.numel() for p in model.parameters()}
    assert sum(unique.values()) == entry["num_unique_params"]


def test_mel_band_tables_match_spec():
    bands = MelBands(44100, 2048, 60)
    table = SHAPES["_meta"]["mel_bands_sr44100_nfft2048_nbands60"]
    spec_nf = [7, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 9, 9, 9, 10, 10, 11, 13, 13, 13, 15, 16,
               17, 19, 20, 20, 22, 24, 26, 28, 29, 31, 33, 36, 39, 41, 44, 47, 50, 54, 57, 61, 66, 71, 76, 80,
               86, 93, 99, 105, 113, 122, 130]
    assert bands.num_freqs_per_band.tolist() == spec_nf == table["num_freqs_per_band"]
    assert bands.num_freqs_per_band.sum() == 1979
    assert len(bands.stereo_rows(2)) == 3958
    assert (bands.num_bands_per_freq == 2).sum() == 954 and (bands.num_bands_per_freq == 1).sum() == 71
    first_last = [[int(np.flatnonzero(r)[0]), int(np.flatnonzero(r)[-1])] for r in bands.membership]
    assert first_last == table["band_first_last_bin_inclusive"]
    assert first_last[:4] == [[0, 6], [4, 9], [7, 12], [10, 15]]
    assert first_last[-3:] == [[782, 894], [836, 957], [895, 1024]]
    # every band is a contiguous range of bins
    assert all(np.ptp(np.flatnonzero(r)) + 1 == r.sum() for r in bands.membership)
    # stereo rows: bin f -> (2f, 2f+1), band-major
    assert bands.stereo_rows(2)[:4].tolist() == [0, 1, 2, 3]
    assert MelBands(44100, 4096, 60).num_freqs_per_band.sum() == 3957


def test_bs_default_bands():
    assert list(DEFAULT_FREQS_PER_BANDS) == SHAPES["_meta"]["bs_default_freqs_per_bands"]
    assert len(DEFAULT_FREQS_PER_BANDS) == 62 and sum(DEFAULT_FREQS_PER_BANDS) == 1025

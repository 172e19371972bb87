"""Offline separation as a sum of chunk ranges (what a long file split between cluster workers runs):
the ranges' sums merged equal demix of the whole file, to float rounding for any split, and bit for
bit for one range of every chunk."""
import numpy as np
import pytest
import torch

import streamer
from streamer.inference.demix import demix, demix_range, finish_chunks, pad_for_chunks, plan_chunks

from conftest import TINY_BS, randomize, write_yaml


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    cfg = write_yaml(tmp_path_factory.mktemp("ranges") / "bs.yaml", model=dict(TINY_BS, num_stems=2),
                     target=None)
    torch.manual_seed(0)
    return randomize(streamer.build_model(streamer.load_config(cfg)), seed=0, scale=0.1).eval()


def split_demix(model, mix, chunk, overlap, max_chunks):
    plan = plan_chunks(mix.shape[1], chunk, overlap)
    padded = pad_for_chunks(mix, plan)
    parts = []
    for first, last in reversed(plan.ranges(max_chunks)):  # any order: finish_chunks sorts them
        start, end = plan.span(first, last)
        numerator, weights = demix_range(model, padded[:, start:end].clone(), plan, first, last)
        parts.append((start, numerator, weights))
    return finish_chunks(plan, parts), plan


@pytest.mark.parametrize("chunk,overlap,length", [(8820, 2, 50_000), (8820, 4, 61_234), (6000, 3, 20_001)])
def test_any_split_equals_demix_of_the_whole_file(model, chunk, overlap, length):
    mix = (np.random.default_rng(length).standard_normal((2, length)) * 0.2).astype(np.float32)
    whole = demix(model, mix, chunk, overlap)
    n = len(plan_chunks(length, chunk, overlap).starts)
    # every range boundary lies inside the neighbour chunks' linear fades (chunks overlap by
    # chunk - step, fades are chunk // 10 long at both ends)
    for max_chunks in sorted({1, 2, 3, 5, n - 1}):
        got, plan = split_demix(model, mix, chunk, overlap, max_chunks)
        assert len(plan.ranges(max_chunks)) > 1
        assert got.shape == whole.shape
        np.testing.assert_allclose(got, whole, rtol=0, atol=2e-6 * max(1.0, np.abs(whole).max()))


def test_one_range_of_every_chunk_is_demix_bit_for_bit(model):
    mix = (np.random.default_rng(1).standard_normal((2, 40_000)) * 0.2).astype(np.float32)
    whole = demix(model, mix, 8820, 2)
    got, _ = split_demix(model, mix, 8820, 2, max_chunks=10_000)
    assert got.tobytes() == whole.tobytes()


def test_ranges_cover_every_chunk_once_and_are_even():
    plan = plan_chunks(1_000_000, 44100, 4)
    n = len(plan.starts)
    for max_chunks in (1, 7, 10, n - 1, n, 10 * n):
        ranges = plan.ranges(max_chunks)
        assert [i for a, b in ranges for i in range(a, b)] == list(range(n))
        sizes = [b - a for a, b in ranges]
        assert max(sizes) <= max_chunks and max(sizes) - min(sizes) <= 1
    start, end = plan.span(0, n)
    assert (start, end) == (0, plan.padded)


def test_a_range_with_the_wrong_audio_is_refused(model):
    plan = plan_chunks(30_000, 8820, 2)
    with pytest.raises(streamer.SettingsError, match="span"):
        demix_range(model, torch.zeros(2, 100), plan, 0, 2)
    with pytest.raises(streamer.SettingsError, match="outside"):
        demix_range(model, torch.zeros(2, 100), plan, 3, 2)


@pytest.mark.parametrize("chunk,overlap,length,batch,piece,tta", [(8820, 4, 20_000, 2, 3, False),
                                                                   (6000, 3, 9_001, 3, 1, True)])
def test_pieces_are_demix_bit_for_bit(model, chunk, overlap, length, batch, piece, tta):
    """demix_pieces (a piece of chunks at a time, bounded memory) gives demix's (and demix_tta's) estimate
    of the whole input bit for bit, however the pieces fall, the border padding at both ends included."""
    from streamer.inference.demix import demix_pieces, demix_tta

    mix = (np.random.default_rng(length).standard_normal((2, length)) * 0.2).astype(np.float32)
    whole = (demix_tta if tta else demix)(model, mix, chunk, overlap, batch_size=batch)
    plan = plan_chunks(length, chunk, overlap)
    padded = pad_for_chunks(mix, plan)
    asked = []

    def read_span(start, end):
        asked.append((start, end))
        return padded[:, start:end].clone()

    pieces = list(demix_pieces(model, read_span, plan, 2, piece, tta=tta, batch_size=batch))
    assert len(asked) > 1 and asked == sorted(asked)
    assert [at for at, _ in pieces] == list(np.cumsum([0] + [e.shape[-1] for _, e in pieces[:-1]]))
    got = np.concatenate([e for _, e in pieces], axis=-1)
    assert got.shape == whole.shape and got.dtype == np.float32
    assert got.tobytes() == whole.tobytes()


@pytest.mark.parametrize("chunk,overlap,length,max_chunks,batch", [(8820, 4, 20_000, 1, 1), (6000, 3, 14_001, 2, 2)])
def test_ranges_merged_in_order_are_demix_bit_for_bit(model, chunk, overlap, length, max_chunks, batch):
    """Ranges run apart (as cluster workers run them) and merged by RangeMerger give demix's estimate bit
    for bit, also where a range's chunks overlap several earlier ranges' (1-chunk ranges, overlap 4):
    before, their sums merged only to float rounding."""
    from streamer.inference.demix import RangeMerger, range_head_end, split_ranges

    mix = (np.random.default_rng(length).standard_normal((2, length)) * 0.2).astype(np.float32)
    whole = demix(model, mix, chunk, overlap, batch_size=batch)
    plan = plan_chunks(length, chunk, overlap)
    padded = pad_for_chunks(mix, plan)
    merger = RangeMerger(plan, 2)
    pieces = []
    ranges = split_ranges(plan, max_chunks, batch)
    assert len(ranges) > 2 and all((b - a) % batch == 0 for a, b in ranges[:-1])
    for first, last in ranges:
        start, end = plan.span(first, last)
        records = []
        numerator, weights = demix_range(model, padded[:, start:end].clone(), plan, first, last, batch_size=batch,
                                         records=records, record_before=range_head_end(plan, first))
        piece = merger.add(first, last, [(numerator.numpy(), weights.numpy(), records)])
        if piece is not None:
            pieces.append(piece)
    got = np.concatenate([e for _, e in pieces], axis=-1)
    assert [at for at, _ in pieces] == list(np.cumsum([0] + [e.shape[-1] for _, e in pieces[:-1]]))
    assert got.shape == whole.shape and got.tobytes() == whole.tobytes()

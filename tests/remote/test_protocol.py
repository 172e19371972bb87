"""The wire protocol and a stream's server-side window state, without a server."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import streamer
from streamer.remote.protocol import (HEADER, Kind, ModelInfo, RemoteError, check_expected, choose_model, pack,
                                      unpack)
from streamer.remote.state import StreamState

from remote_helpers import RATE, song, tiny_model


def info(**kw) -> ModelInfo:
    base = dict(name="m", sample_rate=RATE, channels=2, stems=["vocals", "other"], window=4096, hop=512,
                lookahead=1024, crossfade=256, chunk_size=4096, num_overlap=2, config={})
    base.update(kw)
    return ModelInfo(**base)


def test_frames_round_trip_in_fp32_and_fp16_and_bad_frames_are_refused():
    x = np.random.default_rng(0).standard_normal((2, 3, 100)).astype(np.float32)
    frame = pack(Kind.REGION, 7, 12345, x)
    assert len(frame) == HEADER.size + x.nbytes
    kind, epoch, index, y = unpack(frame, lambda k, n: (2, 3, 100))
    assert (kind, epoch, index) == (Kind.REGION, 7, 12345) and np.array_equal(x, y)
    half = pack(Kind.REGION, 0, 1, x, "fp16")
    assert len(half) == HEADER.size + x.nbytes // 2  # fp16 halves the bytes on the wire
    assert np.abs(unpack(half, lambda k, n: (2, 3, 100))[3] - x).max() < 2e-3
    with pytest.raises(RemoteError, match="unexpected REGION frame of 600 samples"):
        unpack(frame, lambda k, n: None)  # a frame of the wrong size is refused, not reshaped
    with pytest.raises(RemoteError, match="shorter than its header"):
        unpack(b"abc", lambda k, n: None)
    with pytest.raises(RemoteError, match="unknown kind 99"):
        unpack(bytes([99]) + frame[1:], lambda k, n: (2, 3, 100))


def test_choosing_and_checking_the_served_model_is_one_line_each():
    models = {"a": info(name="a"), "b": info(name="b")}
    with pytest.raises(RemoteError, match=r"^the server serves several models \(a, b\): name one$"):
        choose_model(models, None)
    with pytest.raises(RemoteError, match=r"^the server does not serve a model 'c'; it serves a, b$"):
        choose_model(models, "c")
    check_expected(models["a"], sample_rate=RATE, stems=("vocals", "other"), channels=None)
    with pytest.raises(RemoteError) as bad:
        check_expected(models["a"], channels=1, stems=["vocals"])
    assert str(bad.value) == ("the served model 'a' does not match: channels 2 (expected 1), "
                              "stems ['vocals', 'other'] (expected ['vocals'])")


def test_the_server_state_gives_the_local_engines_stems_and_refuses_gaps(tmp_path):
    cfg, ckpt = tiny_model(tmp_path, chunk_size=8820)
    loaded = streamer.load_model(str(cfg), str(ckpt))
    c = loaded.config
    window, hop, lookahead = c.chunk_size, 1764, 3528
    served = info(window=window, hop=hop, lookahead=lookahead, crossfade=441, chunk_size=window)
    state = StreamState(served, residual="spread")
    engine = streamer.StreamEngine(loaded.model, c.stems, RATE, window, hop, lookahead, 441, residual="spread")
    audio = song(1.0, seed=2)[:, :hop * 10]
    regions = []
    with torch.inference_mode():
        for k in range(10):
            win = state.push(k, audio[:, k * hop:(k + 1) * hop])
            out = loaded.model(torch.from_numpy(win[None]))[0].numpy()
            regions.append(state.finish(out, win))
    got = np.concatenate(regions, -1)           # region k = input [k*hop - lookahead, (k+1)*hop - lookahead)
    ref = engine.process(audio)                 # delayed by lookahead + hop
    m = got.shape[-1] - lookahead - hop        # input sample t is got[t + lookahead] and ref[t + lookahead + hop]
    assert np.abs(got[..., lookahead:lookahead + m] - ref[..., lookahead + hop:lookahead + hop + m]).max() <= 1e-5
    assert np.abs(ref).max() > 0.01
    with pytest.raises(RemoteError, match="hop 20 out of order \\(expected 10\\)"):
        state.push(20, audio[:, :hop])
    later = StreamState(served, start_hop=5)
    with pytest.raises(RemoteError, match="before the PRIME frame"):
        later.push(5, audio[:, :hop])

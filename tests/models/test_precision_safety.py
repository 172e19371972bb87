"""Two GPU-path hazards that can be shown on the CPU: rotary positions rounded by a half-precision
autocast (and cached for every later call), and ``.to()`` freeing tensors a live CUDA graph reads."""
import copy

import torch

from streamer.models.layers import Attention
from streamer.models.roformer import BSRoformer

TINY = dict(dim=16, depth=1, heads=2, dim_head=8, stereo=True, num_stems=1, time_transformer_depth=1,
            freq_transformer_depth=1, stft_hop_length=441)
FRAMES = 801  # an 8 s window at hop 441: positions far above 256, where bf16 has no integers left


def _model(seed=0):
    torch.manual_seed(seed)
    model = BSRoformer(**TINY).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def _time_rotary(model):
    return next(m.rotary_embed for m in model.modules() if isinstance(m, Attention))


def _exact_freqs(rotary, n):
    positions = torch.arange(n, dtype=torch.float64)
    angles = positions[:, None] * rotary.freqs.detach().double()[None, :]
    return angles.repeat_interleave(2, dim=-1).float()


def test_rotary_positions_stay_exact_under_bf16_autocast():
    model = _model()
    audio = torch.randn(1, 2, (FRAMES - 1) * 441) * 0.1
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(audio)
    rotary = _time_rotary(model)
    assert rotary.cached_freqs_seq_len >= FRAMES
    got = rotary.cached_freqs[:FRAMES]
    assert torch.equal(got, _exact_freqs(rotary, FRAMES)), (got - _exact_freqs(rotary, FRAMES)).abs().max()


def test_fp32_output_does_not_depend_on_an_earlier_bf16_call():
    bf16_first = _model()
    fp32_first = copy.deepcopy(bf16_first)
    audio = torch.randn(1, 2, (FRAMES - 1) * 441) * 0.1
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16_first(audio)
        after_bf16 = bf16_first(audio)
        plain = fp32_first(audio)
    assert torch.equal(after_bf16, plain)


def test_to_the_same_device_keeps_the_tensors_a_graph_may_hold():
    model = _model()
    with torch.inference_mode():
        model(torch.randn(1, 2, 44100) * 0.1)
    scales = dict(model._scales)
    packed = model.packed_weights()
    assert scales, "the forward made the gamma scales"
    model.to("cpu")
    model.to(torch.device("cpu"), torch.float32)
    for key, tensor in scales.items():
        assert model._scales.get(key) is tensor, key
    assert model.packed_weights()["gammas"].data_ptr() == packed["gammas"].data_ptr()

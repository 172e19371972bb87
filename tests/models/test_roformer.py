import pytest
import torch
from einops import rearrange

from streamer.models.roformer import BSRoformer, MelBandRoformer

from conftest import TINY_BS, randomize, write_yaml
import streamer

SMALL = dict(dim=32, depth=2, heads=2, dim_head=16, stft_hop_length=441)


def loop_reference(model, audio):
    """The forward pass written band by band through the per-band modules, as the spec states it."""
    length = audio.shape[-1]
    packed = model._stft(audio)
    x = rearrange(model._gather(packed), "b f t c -> b t (f c)")
    parts = x.split(list(model.band_split.dim_inputs), dim=-1)
    x = torch.stack([f(p) for f, p in zip(model.band_split.to_features, parts)], dim=-2)
    x = model._transform(x)
    masks = torch.stack(
        [torch.cat([fn(x[:, :, k]) for k, fn in enumerate(est.to_freqs)], -1) for est in model.mask_estimators], 1
    )
    masks = torch.view_as_complex(model._spread_masks(rearrange(masks, "b n t (f c) -> b n f t c", c=2)).contiguous())
    spec = torch.view_as_complex(packed.contiguous()).unsqueeze(1) * masks
    return model._istft(spec, model._output_length(length))


VARIANTS = [
    (BSRoformer, dict(num_stems=2, stereo=True, linear_transformer_depth=1, skip_connection=True)),
    (BSRoformer, dict(stereo=False, mask_estimator_depth=1)),
    (BSRoformer, dict(stereo=True, mask_estimator_depth=3, mlp_expansion_factor=1, zero_dc=False)),
    (MelBandRoformer, dict(num_stems=3, stereo=True, mask_estimator_depth=2, skip_connection=True)),
    (MelBandRoformer, dict(stereo=False, num_bands=24, match_input_audio_length=True)),
]


@pytest.mark.parametrize("cls,kw", VARIANTS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_band_grouped_forward_equals_per_band_loop(cls, kw):
    torch.manual_seed(0)
    model = randomize(cls(**SMALL, **kw).eval())
    audio = torch.randn(2, model.audio_channels, 30000) * 0.3
    with torch.inference_mode():
        fast = model(audio)
        slow = loop_reference(model, audio)
    assert fast.shape == slow.shape
    assert fast.ndim == 4 and fast.shape[:3] == (2, model.num_stems, model.audio_channels)
    assert torch.allclose(fast, slow, atol=2e-6, rtol=1e-5), (fast - slow).abs().max()


def _all_pass(model):
    """Replace the mask estimators' output with 1 + 0j for every band row."""

    def ones(xk, stem, packed):
        m = torch.zeros(xk.shape[1], sum(model.band_split.dim_inputs))
        m[:, 0::2] = 1.0
        return m

    model._mask = ones
    return model


@pytest.mark.parametrize("cls", [BSRoformer, MelBandRoformer])
@pytest.mark.parametrize("stereo", [True, False])
def test_all_pass_mask_returns_input(cls, stereo):
    model = _all_pass(cls(**SMALL, stereo=stereo, zero_dc=False, num_stems=2).eval())
    audio = torch.randn(1, 2 if stereo else 1, 44100) * 0.5
    with torch.inference_mode():
        out = model(audio)
    assert out.shape == (1, 2, audio.shape[1], 44100)
    assert torch.allclose(out[:, 0], audio, atol=1e-5) and torch.allclose(out[:, 1], audio, atol=1e-5)


@pytest.mark.parametrize("cls", [BSRoformer, MelBandRoformer])
def test_all_pass_with_zero_dc_removes_only_the_dc_bin(cls):
    model = _all_pass(cls(**SMALL, stereo=True, zero_dc=True).eval())
    audio = torch.randn(1, 2, 44100) * 0.5 + 0.3  # with an offset, so DC matters
    with torch.inference_mode():
        out = model(audio)[:, 0]
    window = torch.hann_window(2048)
    spec = torch.stft(audio.reshape(2, -1), 2048, 441, window=window, return_complex=True)
    dc_only = torch.zeros_like(spec)
    dc_only[:, 0] = spec[:, 0]
    expected = audio - torch.istft(dc_only, 2048, 441, window=window, length=44100).reshape(1, 2, -1)
    assert torch.allclose(out, expected, atol=1e-5)
    assert abs(out.mean().item()) < 0.5 * abs(audio.mean().item())  # the DC bin held most of the offset


def test_mel_output_length_rule():
    audio = torch.randn(1, 2, 44100 + 100)
    with torch.inference_mode():
        short = MelBandRoformer(**SMALL, stereo=True).eval()(audio)
        full = MelBandRoformer(**SMALL, stereo=True, match_input_audio_length=True).eval()(audio)
        bs = BSRoformer(**SMALL, stereo=True).eval()(audio)
    assert short.shape[-1] == 441 * (audio.shape[-1] // 441)
    assert full.shape[-1] == bs.shape[-1] == audio.shape[-1]


def test_wrong_channel_count_is_refused():
    model = BSRoformer(**SMALL, stereo=True).eval()
    with pytest.raises(ValueError, match=r"\(batch, 2, samples\)"):
        model(torch.randn(1, 1, 4410))


def test_training_mode_gradients_reach_every_band():
    model = BSRoformer(**SMALL, stereo=True, num_stems=2).train()
    audio = torch.randn(1, 2, 8820)
    model(audio).square().mean().backward()
    for k, f in enumerate(model.band_split.to_features):
        assert f[1].weight.grad is not None and f[1].weight.grad.abs().sum() > 0, k
    for est in model.mask_estimators:
        for seq in est.to_freqs:
            assert seq[0][-1].weight.grad.abs().sum() > 0


def test_packed_weights_follow_parameter_changes():
    torch.manual_seed(1)
    model = randomize(MelBandRoformer(**SMALL, stereo=True).eval())
    audio = torch.randn(1, 2, 8820)
    with torch.inference_mode():
        before = model(audio)
    with torch.no_grad():
        model.mask_estimators[0].to_freqs[5][0][0].bias.add_(0.5)
        model.band_split.to_features[3][0].gamma.mul_(2.0)
    with torch.inference_mode():
        after = model(audio)
        ref = loop_reference(model, audio)
    assert not torch.allclose(before, after)
    assert torch.allclose(after, ref, atol=2e-6)


def test_rotary_frequencies_are_shared_per_axis():
    model = BSRoformer(**SMALL, stereo=True)
    time_rot = {id(layer[0].layers[0][0].rotary_embed) for layer in model.layers}
    freq_rot = {id(layer[1].layers[0][0].rotary_embed) for layer in model.layers}
    assert len(time_rot) == 1 and len(freq_rot) == 1 and time_rot != freq_rot


def test_l2_normalize_is_f_normalize_to_the_bit():
    """The models' norm is written without expand_as (no Expand node per norm in an exported
    graph); it must stay F.normalize exactly, zeros included, in fp32 and bf16."""
    import torch.nn.functional as F

    from streamer.models.layers import l2_normalize

    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        x = (torch.randn(7, 5, 64, generator=g) * 10).to(dtype)
        x[0] = 0
        x[1, 2] = 1e-30
        assert torch.equal(l2_normalize(x), F.normalize(x, dim=-1))


def test_mel_masks_spread_along_any_axis(tmp_path):
    """The ONNX core spreads the Mel masks with the rows on axis 3 (time-major); the result is the
    rows-on-axis-2 spread, transposed."""
    cfg = write_yaml(tmp_path / "mel.yaml", model_type="mel_band_roformer", model={**TINY_BS, "num_bands": 8})
    model = streamer.build_model(streamer.load_config(cfg)).eval()
    rows = int(model.freq_indices.shape[0])
    masks = torch.randn(2, 3, rows, 9, 2, generator=torch.Generator().manual_seed(1))
    spread = model._spread_masks(masks)
    spread_t = model._spread_masks(masks.transpose(2, 3).contiguous(), dim=3)
    assert torch.allclose(spread_t.transpose(2, 3), spread, atol=1e-6)

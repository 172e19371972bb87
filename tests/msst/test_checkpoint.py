import argparse

import pytest
import torch
from safetensors.torch import save_file

import streamer
from streamer import CheckpointError
from streamer.models.roformer import BSRoformer, MelBandRoformer

from conftest import randomize, write_yaml

SMALL = dict(dim=16, depth=2, heads=2, dim_head=8, stereo=True, stft_hop_length=441,
             time_transformer_depth=1, freq_transformer_depth=1)


@pytest.fixture
def trained():
    torch.manual_seed(0)
    return randomize(BSRoformer(**SMALL).eval())


def _same_output(a, b):
    x = torch.randn(1, 2, 8820, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        return torch.allclose(a(x), b(x), atol=1e-6)


@pytest.mark.parametrize("wrap", [None, "state_dict", "model_state_dict", "state"])
def test_plain_and_wrapped_checkpoints(tmp_path, trained, wrap):
    sd = trained.state_dict()
    obj = sd if wrap is None else {wrap: sd, "epoch": 3, "best_metric": 9.1}
    if wrap == "model_state_dict":
        obj["optimizer_state_dict"] = {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]}
    path = tmp_path / "model.ckpt"
    torch.save(obj, path)
    model = streamer.load_checkpoint(BSRoformer(**SMALL).eval(), path)
    assert _same_output(model, trained)


def test_module_prefix_is_stripped(tmp_path, trained):
    path = tmp_path / "dp.ckpt"
    torch.save({f"module.{k}": v for k, v in trained.state_dict().items()}, path)
    assert _same_output(streamer.load_checkpoint(BSRoformer(**SMALL).eval(), path), trained)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_checkpoints_are_converted(tmp_path, trained, dtype):
    path = tmp_path / "half.ckpt"
    half = {k: v.to(dtype) for k, v in trained.state_dict().items()}
    torch.save(half, path)
    model = streamer.load_checkpoint(BSRoformer(**SMALL).eval(), path)
    p = dict(model.named_parameters())["band_split.to_features.0.1.weight"]
    assert p.dtype == torch.float32
    assert torch.equal(p, half["band_split.to_features.0.1.weight"].float())


def test_checkpoint_rotary_frequencies_replace_cached_ones(tmp_path, trained):
    """A checkpoint's (e.g. fp16-rounded) RoPE freqs must be used even after a warm-up forward."""
    sd = trained.state_dict()
    for k in sd:
        if k.endswith("rotary_embed.freqs"):
            sd[k] = sd[k] * 1.5
    path = tmp_path / "rope.ckpt"
    torch.save(sd, path)
    warmed = BSRoformer(**SMALL).eval()
    with torch.inference_mode():
        warmed(torch.randn(1, 2, 8820))  # fills rotary-embedding-torch's angle cache
    streamer.load_checkpoint(warmed, path)
    fresh = BSRoformer(**SMALL).eval()
    fresh.load_state_dict(sd)
    assert _same_output(warmed, fresh)
    assert not _same_output(warmed, trained)


def test_safetensors(tmp_path, trained):
    path = tmp_path / "model.safetensors"
    save_file({k: v.clone() for k, v in trained.state_dict().items()}, str(path))
    assert _same_output(streamer.load_checkpoint(BSRoformer(**SMALL).eval(), path), trained)


def test_safetensors_save_model_deduplicates_shared_rotary_freqs(tmp_path, trained):
    from safetensors.torch import save_model

    path = tmp_path / "dedup.safetensors"
    save_model(trained, str(path))
    stored = streamer.read_state_dict(path)
    assert len(stored) < len(trained.state_dict())  # shared rotary freqs stored once
    assert _same_output(streamer.load_checkpoint(BSRoformer(**SMALL).eval(), path), trained)


def test_pickle_with_objects_needs_opt_in(tmp_path, trained):
    path = tmp_path / "full.ckpt"
    torch.save({"state_dict": trained.state_dict(), "args": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(CheckpointError) as err:
        streamer.load_checkpoint(BSRoformer(**SMALL).eval(), path)
    assert "trust=True" in str(err.value) and "--trust-checkpoint" in str(err.value)
    model = streamer.load_checkpoint(BSRoformer(**SMALL).eval(), path, trust=True)
    assert _same_output(model, trained)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all" * 10, b"PK\x03\x04broken zip"])
def test_corrupt_checkpoint(tmp_path, content):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="corrupt or not a PyTorch checkpoint"):
        streamer.load_checkpoint(BSRoformer(**SMALL).eval(), path)


def test_truncated_checkpoint(tmp_path, trained):
    path = tmp_path / "cut.ckpt"
    torch.save(trained.state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        streamer.load_checkpoint(BSRoformer(**SMALL).eval(), path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(CheckpointError, match="safetensors"):
        streamer.read_state_dict(bad)


def test_missing_checkpoint_and_non_dict(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        streamer.read_state_dict(tmp_path / "nope.ckpt")
    path = tmp_path / "list.ckpt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match="expected a state_dict"):
        streamer.read_state_dict(path)


def test_depth_mismatch_names_keys_and_hint(tmp_path, trained):
    path = tmp_path / "deep.ckpt"
    torch.save(trained.state_dict(), path)
    shallow = BSRoformer(**{**SMALL, "depth": 1}).eval()
    with pytest.raises(CheckpointError) as err:
        streamer.load_checkpoint(shallow, path)
    msg = str(err.value)
    assert "unexpected 22 keys: layers.1.* (22 keys)" in msg
    assert "checkpoint has 2 layers, config says depth 1" in msg


def test_width_and_stem_mismatch_hints(tmp_path, trained):
    path = tmp_path / "m.ckpt"
    torch.save(trained.state_dict(), path)
    wide = BSRoformer(**{**SMALL, "dim": 24, "num_stems": 2}).eval()
    with pytest.raises(CheckpointError) as err:
        streamer.load_checkpoint(wide, path)
    msg = str(err.value)
    assert "shape mismatches" in msg and "missing" in msg
    assert "checkpoint has dim 16, config says dim 24" in msg
    assert "checkpoint has num_stems 1, config says num_stems 2" in msg


def test_mask_depth_hint_accounts_for_mel_convention(tmp_path):
    path = tmp_path / "mel.ckpt"
    torch.save(MelBandRoformer(**SMALL, mask_estimator_depth=2).state_dict(), path)
    with pytest.raises(CheckpointError, match="checkpoint has mask_estimator_depth 2, config says 1"):
        streamer.load_checkpoint(MelBandRoformer(**SMALL, mask_estimator_depth=1).eval(), path)


def test_architecture_mismatch_hint(tmp_path, trained):
    path = tmp_path / "bs.ckpt"
    torch.save(trained.state_dict(), path)
    with pytest.raises(CheckpointError, match="the checkpoint is a bs_roformer"):
        streamer.load_checkpoint(MelBandRoformer(**SMALL).eval(), path)


def test_config_mismatch_through_public_api(tmp_path, trained):
    path = tmp_path / "k.ckpt"
    torch.save(trained.state_dict(), path)
    cfg = streamer.load_config(write_yaml(tmp_path / "c.yaml", model={**SMALL, "heads": 4}))
    with pytest.raises(CheckpointError, match="checkpoint has heads 2, config says heads 4"):
        streamer.load_checkpoint(streamer.build_model(cfg), path)


def test_non_finite_weights_refused(tmp_path, trained):
    sd = trained.state_dict()
    sd["final_norm.gamma"] = sd["final_norm.gamma"].clone()
    sd["final_norm.gamma"][0] = float("nan")
    path = tmp_path / "nan.ckpt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="NaN/inf"):
        streamer.load_checkpoint(BSRoformer(**SMALL).eval(), path)

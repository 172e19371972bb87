"""Growing a deeper BS-RoFormer from a shallower checkpoint (streamer.lab.grow, train --grow)."""
import json

import pytest
import torch

import streamer
from bridge.cli import main
from streamer.errors import CheckpointError
from streamer.lab.grow import grow_from

from conftest import randomize, write_yaml
from lab_helpers import make_songs


def _pair(tmp_path, small_depth=1, big_depth=2, **big_extra):
    small_cfg = streamer.load_config(write_yaml(tmp_path / "small.yaml", stems=("vocals", "other"), target=None,
                                                extra_model={"num_stems": 2, "depth": small_depth}))
    big_cfg = write_yaml(tmp_path / "big.yaml", stems=("vocals", "other"), target=None,
                         extra_model={"num_stems": 2, "depth": big_depth, **big_extra})
    small = randomize(streamer.build_model(small_cfg)).eval()
    ckpt = tmp_path / "small.ckpt"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in small.state_dict().items()}, ckpt)
    small_fp16 = streamer.build_model(small_cfg)
    streamer.load_checkpoint(small_fp16, ckpt)
    return small_fp16.eval(), ckpt, big_cfg


def test_a_grown_model_starts_with_the_small_models_output(tmp_path):
    small, ckpt, big_cfg = _pair(tmp_path, 1, 3)
    torch.manual_seed(5)
    big = randomize(streamer.build_model(streamer.load_config(big_cfg)), seed=9).eval()
    grown = grow_from(big, ckpt)
    assert (grown.from_depth, grown.to_depth, grown.new_layers) == (1, 3, [1, 2])
    audio = torch.randn(1, 2, 22050) * 0.1
    with torch.no_grad():
        ref, out = small(audio), big(audio)
    assert float((out - ref).abs().max()) <= 1e-6 * max(1.0, float(ref.abs().max()))
    for key, value in big.state_dict().items():  # trained layers copied; new layers' branch ends zero
        if key.startswith("layers.0.") or not key.startswith("layers."):
            assert torch.equal(value, small.state_dict()[key]), key
    new = {k: v for k, v in big.state_dict().items() if k.startswith("layers.2.")}
    assert all(float(v.abs().max()) == 0 for k, v in new.items() if k.endswith(("to_out.0.weight", "net.4.weight")))
    assert any(float(v.abs().max()) > 0 for k, v in new.items() if k.endswith("to_qkv.weight"))  # the rest stays random


def test_growing_refuses_what_cannot_start_as_the_identity(tmp_path):
    small, ckpt, big_cfg = _pair(tmp_path, 1, 2)
    same = streamer.build_model(streamer.load_config(tmp_path / "small.yaml"))
    with pytest.raises(CheckpointError, match="growing needs a deeper model"):
        grow_from(same, ckpt)
    wide = streamer.build_model(streamer.load_config(write_yaml(
        tmp_path / "wide.yaml", stems=("vocals", "other"), target=None, extra_model={"num_stems": 2, "depth": 2, "dim": 24})))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        grow_from(wide, ckpt)
    mel = streamer.build_model(streamer.load_config(write_yaml(
        tmp_path / "mel.yaml", model_type="mel_band_roformer", stems=("vocals", "other"), target=None,
        model={"dim": 16, "depth": 2, "heads": 2, "dim_head": 8, "stereo": True, "num_stems": 2, "num_bands": 8,
               "time_transformer_depth": 1, "freq_transformer_depth": 1, "stft_hop_length": 441})))
    with pytest.raises(CheckpointError, match="identity"):
        grow_from(mel, ckpt)


def test_train_grow_starts_a_deeper_run_from_the_small_checkpoint(tmp_path, capsys):
    _, ckpt, big_cfg = _pair(tmp_path, 1, 2)
    songs = make_songs(tmp_path / "train", 2, seconds=1.0)
    out = tmp_path / "run"
    args = ["train", str(songs), "--config", str(big_cfg), "--out", str(out), "--val-every", "2", "--steps", "2",
            "--segment", "0.25", "--batch-size", "1", "--device", "cpu", "--no-augment"]
    assert main(args + ["--init", str(ckpt), "--grow"]) == 0
    assert "1 new layer starts as the identity" in capsys.readouterr().out
    model = streamer.build_model(streamer.load_config(out / "config.yaml"))
    streamer.load_checkpoint(model, out / "model.ckpt")
    assert len(model.layers) == 2 and json.loads((out / "history.json").read_text())[-1]["step"] == 2
    assert main(args + ["--grow"]) == 1  # --grow without --init: one error line
    assert "--grow needs --init" in capsys.readouterr().err

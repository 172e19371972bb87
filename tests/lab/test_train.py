"""Training (streamer.lab.train) and its train command: checkpoints, resume, the loss going down."""
import json

import numpy as np
import torch

import streamer
from bridge.cli import main

from lab_helpers import four_stem_config, make_songs


def test_training_writes_msst_checkpoints_and_resumes(tmp_path, four_stem_config, capsys):
    train = make_songs(tmp_path / "train", 2, seconds=1.0)
    val = make_songs(tmp_path / "val", 1, seconds=1.0, seed=50)
    out = tmp_path / "run"
    args = ["train", str(train), "--val", str(val), "--config", str(four_stem_config), "--out", str(out),
            "--val-every", "2", "--segment", "0.25", "--batch-size", "2", "--val-seconds", "1", "--device", "cpu"]
    assert main(args + ["--steps", "4"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in history] == [2, 4]
    assert {"loss", "sdr_vocals", "gain_mean"} <= set(history[0])
    config = streamer.load_config(out / "config.yaml")
    model = streamer.build_model(config)
    streamer.load_checkpoint(model, out / "model.ckpt")  # plain state_dict, weights_only load
    plain = torch.load(out / "model.ckpt", weights_only=True)
    assert set(plain) == set(model.state_dict())
    assert main(args + ["--steps", "6", "--resume"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in history] == [2, 4, 6]


def test_training_loss_goes_down(tmp_path, four_stem_config):
    from streamer.lab.train import RemixDataset, TrainOptions, separation_loss, song_folders, train

    songs = make_songs(tmp_path / "train", 2)
    config = streamer.load_config(four_stem_config)
    torch.manual_seed(0)
    model = streamer.build_model(config).train()
    data = RemixDataset(song_folders([str(songs)], config.stems), config.stems, 44100, 2)
    mix, ref = data.batch(np.random.default_rng(1), 2, 11025)
    with torch.no_grad():
        before = float(separation_loss(model(mix), ref))
    train(model, config, str(four_stem_config), [str(songs)], [], str(tmp_path / "run"),
          TrainOptions(steps=15, batch_size=2, segment_seconds=0.25, val_every=15, warmup_steps=3, lr=3e-3),
          progress=False)
    model.eval()
    with torch.no_grad():
        after = float(separation_loss(model(mix), ref))
    assert after < before * 0.9



def test_a_time_budget_pauses_training_resumably(tmp_path, four_stem_config, capsys):
    train = make_songs(tmp_path / "train", 2, seconds=1.0)
    out = tmp_path / "run"
    args = ["train", str(train), "--config", str(four_stem_config), "--out", str(out), "--val-every", "1000",
            "--segment", "0.25", "--batch-size", "1", "--device", "cpu", "--steps", "50", "--no-augment"]
    assert main(args + ["--max-minutes", "0.0001"]) == 0
    printed = capsys.readouterr().out
    assert "paused at step" in printed and "--resume" in printed
    state = torch.load(out / "last.ckpt", weights_only=True)
    assert 0 <= state["step"] < 50 and not (out / "last.ckpt.part").exists()
    assert main(args + ["--steps", str(state["step"] + 2), "--resume"]) == 0
    assert torch.load(out / "last.ckpt", weights_only=True)["step"] == state["step"] + 2

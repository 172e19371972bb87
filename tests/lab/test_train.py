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


def test_the_weight_average_follows_the_steps_and_drives_the_packed_forward(four_stem_config):
    from streamer.lab.train import WeightAverage

    config = streamer.load_config(four_stem_config)
    torch.manual_seed(0)
    model = streamer.build_model(config).train()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    average = WeightAverage(model, 0.9)
    expected = {k: v.clone() for k, v in start.items()}
    params = dict(model.named_parameters())
    for n in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * (n + 1))
        average.update()
        decay = min(0.9, (1 + n) / (10 + n))
        for k in params:
            expected[k] = decay * expected[k] + (1 - decay) * params[k].detach()
    got = average.model.state_dict()
    for k in params:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-5, atol=1e-6)
    assert average.updates == 4
    # the copy runs from its band-weight arena (views of its own parameters): its forward is that of a
    # model loaded with the averaged weights, not of the weights it was copied from
    fresh = streamer.build_model(config).eval()
    fresh.load_state_dict(got)
    x = torch.randn(1, 2, 22050) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(average.model(x), fresh(x), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(average.model(x), model.eval()(x), atol=1e-4)
    # the trained model's weights are untouched by the average
    assert all(not torch.equal(params[k].detach(), got[k]) for k in params)


def test_training_keeps_the_average_in_model_ckpt_and_across_resume(tmp_path, four_stem_config):
    train = make_songs(tmp_path / "train", 2, seconds=1.0)
    val = make_songs(tmp_path / "val", 1, seconds=1.0, seed=50)
    out = tmp_path / "run"
    args = ["train", str(train), "--val", str(val), "--config", str(four_stem_config), "--out", str(out),
            "--val-every", "3", "--segment", "0.25", "--batch-size", "1", "--val-seconds", "1", "--device", "cpu",
            "--no-augment", "--lr", "0.01"]
    assert main(args + ["--steps", "3", "--ema", "0.5"]) == 0
    state = torch.load(out / "last.ckpt", weights_only=True)
    assert state["ema"]["updates"] == 3
    saved = torch.load(out / "model.ckpt", weights_only=True)
    assert all(torch.equal(saved[k], state["ema"]["weights"][k]) for k in saved)
    assert any(not torch.equal(saved[k], state["model"][k]) for k in saved)  # the average, not the last step
    assert main(args + ["--steps", "6", "--ema", "0.5", "--resume"]) == 0
    assert torch.load(out / "last.ckpt", weights_only=True)["ema"]["updates"] == 6
    # a run trained without the average gets one when resumed with it (from the weights it has then)
    plain = tmp_path / "plain"
    plain_args = [a if a != str(out) else str(plain) for a in args]
    assert main(plain_args + ["--steps", "3", "--ema", "0"]) == 0
    assert "ema" not in torch.load(plain / "last.ckpt", weights_only=True)
    assert main(plain_args + ["--steps", "5", "--ema", "0.5", "--resume"]) == 0
    assert torch.load(plain / "last.ckpt", weights_only=True)["ema"]["updates"] == 2

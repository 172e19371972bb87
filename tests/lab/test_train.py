"""Song generator, SDR metrics, training and evaluation."""
import json
import os

import numpy as np
import pytest
import soundfile as sf
import torch

import streamer
from bridge.cli import main
from streamer.lab import metrics
from streamer.lab.synth import STEMS, generate_song, missing_tools, write_song
from streamer.lab.testsignals import generated_clip

from conftest import write_yaml

needs_tools = pytest.mark.skipif(bool(missing_tools()), reason=f"song generator tools missing: {missing_tools()} "
                                 "(make synth-deps installs them)")


def test_usdr_and_per_second_sdr_against_hand_computed_values():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 44100 * 3))
    est = ref + 0.1 * rng.standard_normal(ref.shape)
    expected = 10 * np.log10((ref**2).sum() / ((ref - est) ** 2).sum())
    assert metrics.usdr(ref, est) == pytest.approx(expected, abs=1e-6)
    frames = metrics.sdr_frames(ref, est, 44100)
    assert frames.shape == (3,)
    for i in range(3):
        r, e = ref[:, i * 44100:(i + 1) * 44100], est[:, i * 44100:(i + 1) * 44100]
        assert frames[i] == pytest.approx(10 * np.log10((r**2).sum() / ((r - e) ** 2).sum()), abs=1e-6)
    assert metrics.sdr_median_per_second(ref, est, 44100) == pytest.approx(np.median(frames))
    silent = ref.copy()
    silent[:, :44100] = 0
    assert np.isnan(metrics.sdr_frames(silent, est, 44100)[0])
    assert metrics.usdr(ref, ref) > 100
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.usdr(ref, est[:, :10])


@needs_tools
def test_generated_songs_are_deterministic_sums_of_their_stems(tmp_path):
    a = generate_song(5, 3.0)
    b = generate_song(5, 3.0)
    c = generate_song(6, 3.0)
    for s in STEMS:
        assert a.stems[s].shape == (2, 3 * 44100) and a.stems[s].dtype == np.float32
        np.testing.assert_array_equal(a.stems[s], b.stems[s])
    np.testing.assert_allclose(a.mixture, sum(a.stems[s] for s in STEMS), atol=1e-6)
    assert not np.allclose(a.mixture, c.mixture)
    assert np.abs(a.mixture).max() <= 0.95
    assert all(np.sqrt(np.mean(a.stems[s] ** 2)) > 1e-3 for s in ("drums", "bass", "other"))
    write_song(a, tmp_path / "song")
    assert sorted(os.listdir(tmp_path / "song")) == ["bass.wav", "drums.wav", "mixture.wav", "other.wav", "vocals.wav"]


@needs_tools
def test_synth_command(tmp_path, capsys):
    assert main(["synth", "--seed", "11", "--count", "2", "--seconds", "2", "--out", str(tmp_path)]) == 0
    assert sorted(os.listdir(tmp_path)) == ["synth_000011", "synth_000012"]
    assert "bpm" in capsys.readouterr().out


def make_songs(folder, count, seconds=2.0, seed=0):
    """Songs in MUSDB layout from the numpy clip generator (no external tools needed)."""
    for i in range(count):
        mix, stems = generated_clip(seconds, 44100, seed=seed + i)
        d = folder / f"song{i}"
        d.mkdir(parents=True)
        sf.write(d / "mixture.wav", mix.T, 44100, subtype="FLOAT")
        for name, data in stems.items():
            sf.write(d / f"{name}.wav", data.T, 44100, subtype="FLOAT")
    return folder


@pytest.fixture
def four_stem_config(tmp_path):
    return write_yaml(tmp_path / "four.yaml", stems=("vocals", "drums", "bass", "other"), target=None,
                      extra_model={"num_stems": 4}, chunk_size=8820, num_overlap=2)


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


def test_eval_scores_offline_and_streaming_and_plots(tmp_path, four_stem_config, capsys):
    data = make_songs(tmp_path / "data", 1, seconds=1.0)
    config = streamer.load_config(four_stem_config)
    torch.manual_seed(0)
    model = streamer.build_model(config)
    ckpt = tmp_path / "m.ckpt"
    torch.save(model.state_dict(), ckpt)
    plot = tmp_path / "curve.png"
    code = main(["eval", str(data), "--config", str(four_stem_config), "--checkpoint", str(ckpt), "--presets",
                 "offline-exact", "balanced", "--setting", "0.2,0.1,0.05", "--plot", str(plot)])
    out = capsys.readouterr().out
    assert code == 0 and plot.stat().st_size > 1000
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line and line.split()[0] in
            ("offline", "offline-exact", "balanced", "w0.2/h0.1/a0.05", "mixture")}
    assert set(rows) == {"offline", "offline-exact", "balanced", "w0.2/h0.1/a0.05", "mixture"}

    # the offline row is demix scored by hand
    from streamer.lab.train import load_stems

    truth = load_stems(str(data / "song0"), config.stems, 44100, 2)
    est = streamer.demix(model, truth.sum(axis=0), config.chunk_size, config.num_overlap)
    vocals = metrics.sdr_median_per_second(truth[0], est[0], 44100)
    assert float(rows["offline"][2]) == pytest.approx(vocals, abs=0.01)


@pytest.mark.slow
def test_per_second_sdr_matches_museval():
    """Cross-check against museval's BSSv4 (its metrics module alone: importing the package needs ffmpeg)."""
    import importlib.util

    spec = importlib.util.find_spec("museval")
    if spec is None:
        pytest.skip("museval is not installed")
    path = os.path.join(os.path.dirname(spec.origin), "metrics.py")
    loader = importlib.util.spec_from_file_location("museval_metrics", path)
    bss = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(bss)
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((2, 44100 * 4, 2)) * 0.1
    est = ref.copy()
    est[0] += 0.3 * ref[1] + 0.03 * rng.standard_normal(ref[0].shape)
    est[1] += 0.1 * ref[0] + 0.05 * rng.standard_normal(ref[1].shape)
    sdr = bss.bss_eval(ref, est, window=44100, hop=44100)[0]
    for j in range(2):
        ours = metrics.sdr_median_per_second(ref[j].T, est[j].T, 44100)
        assert np.nanmedian(sdr[j]) == pytest.approx(ours, abs=0.01)

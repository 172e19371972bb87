"""Evaluation (streamer.lab.evaluate) through the eval command: offline and streaming scores and the plot."""
import pytest
import torch

import streamer
from bridge.cli import main
from streamer.lab import metrics

from lab_helpers import four_stem_config, make_songs


def song_and_model(tmp_path, config_path):
    """One generated 1 s song, and a random-weight model of ``config_path`` saved as a checkpoint."""
    data = make_songs(tmp_path / "data", 1, seconds=1.0)
    config = streamer.load_config(config_path)
    torch.manual_seed(0)
    model = streamer.build_model(config)
    ckpt = tmp_path / "m.ckpt"
    torch.save(model.state_dict(), ckpt)
    return data, config, model, ckpt


def test_eval_scores_offline_and_streaming_and_plots(tmp_path, four_stem_config, capsys):
    data, config, model, ckpt = song_and_model(tmp_path, four_stem_config)
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


def test_eval_residual_scores_the_stems_as_the_live_separator_makes_them(tmp_path, four_stem_config, capsys):
    """--residual spread: offline, the demix output with a quarter of what it misses added to each stem;
    streaming, the engine with the same residual (offline-exact equals offline, as without it)."""
    from streamer.inference.residual import SPREAD_INDEX, apply_residual
    from streamer.lab.train import load_stems

    data, config, model, ckpt = song_and_model(tmp_path, four_stem_config)
    rows = {}
    for residual in ("none", "spread"):
        code = main(["eval", str(data), "--config", str(four_stem_config), "--checkpoint", str(ckpt), "--presets",
                     "offline-exact", "--residual", residual])
        out = capsys.readouterr().out
        assert code == 0
        rows[residual] = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    truth = load_stems(str(data / "song0"), config.stems, 44100, 2)
    mix = truth.sum(axis=0)
    est = apply_residual(streamer.demix(model, mix, config.chunk_size, config.num_overlap), mix, SPREAD_INDEX)
    for i in range(4):
        expected = metrics.sdr_median_per_second(truth[i], est[i], 44100)
        assert float(rows["spread"]["offline"][2 + i]) == pytest.approx(expected, abs=0.01)
    assert rows["spread"]["offline"][2:6] != rows["none"]["offline"][2:6]
    for i in range(4):   # the engine applies the same residual: offline-exact = offline up to the song's ends
        spread_stream, plain_stream = (float(rows[k]["offline-exact"][3 + i]) for k in ("spread", "none"))
        assert spread_stream == pytest.approx(float(rows["spread"]["offline"][2 + i]), abs=0.1)
        assert abs(spread_stream - plain_stream) > 0.3
    code = main(["eval", str(data), "--config", str(four_stem_config), "--checkpoint", str(ckpt), "--presets",
                 "--residual", "rest"])
    err = capsys.readouterr().err
    assert code != 0 and "error:" in err and "'rest' is not one of the model's stems" in err and "Traceback" not in err

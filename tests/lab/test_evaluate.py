"""Evaluation (streamer.lab.evaluate) through the eval command: offline and streaming scores and the plot."""
import pytest
import torch

import streamer
from bridge.cli import main
from streamer.lab import metrics

from lab_helpers import four_stem_config, make_songs


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

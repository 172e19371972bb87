"""Fixtures and helpers shared by the CLI tests: a tiny model, a song, running the CLI, checking errors."""
import os

import pytest
import soundfile as sf
import torch

import streamer
from bridge.cli import main
from streamer.lab.testsignals import generated_clip

from conftest import randomize, write_yaml


@pytest.fixture
def model_files(tmp_path):
    cfg_path = write_yaml(tmp_path / "tiny.yaml", chunk_size=22050, num_overlap=2, batch_size=2)
    cfg = streamer.load_config(cfg_path)
    torch.manual_seed(0)
    model = randomize(streamer.build_model(cfg))
    ckpt = tmp_path / "tiny.ckpt"
    torch.save(model.state_dict(), ckpt)
    return cfg_path, ckpt, model, cfg


@pytest.fixture
def song(tmp_path):
    mix, _ = generated_clip(2.0, 44100, seed=1)
    path = tmp_path / "song.wav"
    sf.write(path, mix.T, 44100, subtype="FLOAT")
    return path, mix


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_line_error(code, err, *fragments):
    assert code != 0
    lines = [l for l in err.strip().splitlines() if not l.startswith("WARNING")]
    assert lines and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in err


def _no_outputs(folder):
    return not folder.exists() or not any(files for _, _, files in os.walk(folder))

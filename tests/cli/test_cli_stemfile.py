"""``stemstream separate --format stem``: one NI Stem file per input, read back with independent tools
(ffprobe, mutagen, the project's reader) and compared with plain ``separate``'s WAV stems."""
import json
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

import streamer
from streamer.formats import nistem

from cli_helpers import run_cli
from conftest import randomize, write_yaml

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                reason="ffmpeg not installed (Debian: ffmpeg; make install installs it)")
RATE = 44100
MODEL_STEMS = ("vocals", "drums", "bass", "other")


def _model(folder, stems=MODEL_STEMS):
    cfg = write_yaml(folder / f"tiny{len(stems)}.yaml", stems=stems, target=None,
                     extra_model={"num_stems": len(stems)}, chunk_size=22050)
    torch.manual_seed(0)
    model = randomize(streamer.build_model(streamer.load_config(cfg)), scale=0.1)
    ckpt = folder / f"tiny{len(stems)}.ckpt"
    torch.save(model.state_dict(), ckpt)
    return cfg, ckpt


def _song(path, seconds=2.5, title=None):
    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.default_rng(5)
    x = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.25 * np.sin(2 * np.pi * 330 * t)]) + 0.03 * rng.standard_normal((2, t.size))
    with sf.SoundFile(path, "w", RATE, 2, subtype="PCM_24" if str(path).endswith(".flac") else "FLOAT") as f:
        if title:
            f.title, f.artist = title, "Tester"
        f.write(x.T.astype(np.float32))
    return sf.read(path, dtype="float32")[0].T


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("stemfile")
    cfg, ckpt = _model(d)
    mix = _song(d / "song.flac", title="Song Title")
    return {"dir": d, "cfg": cfg, "ckpt": ckpt, "song": d / "song.flac", "mix": mix}


def _wav_stems(files, capsys, out):
    code, _, err = run_cli(["separate", files["song"], "--config", files["cfg"], "--checkpoint", files["ckpt"],
                            "--out", out, "--residual", "spread", "--no-progress"], capsys)
    assert code == 0, err
    return {s: sf.read(out / "song" / f"{s}.wav", dtype="float32")[0].T for s in MODEL_STEMS}


def test_alac_stem_file_holds_the_wav_stems_and_the_input(files, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_cli(["separate", files["song"], "--config", files["cfg"], "--checkpoint", files["ckpt"],
                                 "--out", out, "--format", "stem", "--codec", "alac", "--bits", "24", "--no-progress"],
                                capsys)
    assert code == 0, err
    target = out / "song.stem.mp4"
    assert target.is_file() and "-> " + str(target) in stdout
    assert sorted(p.name for p in out.iterdir()) == ["song.stem.mp4"]        # nothing else left behind
    probe = json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(target)],
                                      capture_output=True, text=True, check=True).stdout)["streams"]
    assert [(s["codec_name"], s["channels"], s["disposition"]["default"]) for s in probe] == \
        [("alac", 2, 1)] + [("alac", 2, 0)] * 4
    f = nistem.read_stem_file(target)
    wav = _wav_stems(files, capsys, tmp_path / "plain")       # --format stem's default residual: spread
    step = 2.0 ** -23
    assert np.abs(f.master - files["mix"]).max() <= step       # the master is the input
    for i, name in enumerate(("drums", "bass", "other", "vocals")):   # NI's order
        assert np.abs(f.stems[i] - wav[name]).max() <= step, name
    assert np.abs(f.stems.sum(axis=0) - files["mix"]).max() < 1e-4   # spread: the stems add up to the master
    assert f.tags.get("title") == "Song Title" and f.tags.get("artist") == "Tester" and f.tags.get("stem") == "STEM"
    meta = nistem.read_stem_metadata(target)
    assert meta["version"] == 1 and [s["name"] for s in meta["stems"]] == ["Drums", "Bass", "Other", "Vocals"]


def test_aac_by_default_within_20_db_of_the_wav_stems(files, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["separate", files["song"], "--config", files["cfg"], "--checkpoint", files["ckpt"],
                            "--out", out, "--format", "stem", "--no-progress"], capsys)
    assert code == 0, err
    f = nistem.read_stem_file(out / "song.stem.mp4")
    assert f.codec == "aac" and f.rate == RATE
    wav = _wav_stems(files, capsys, tmp_path / "plain")
    for i, name in enumerate(("drums", "bass", "other", "vocals")):
        ref = wav[name][:, :f.frames]
        snr = 10 * np.log10((ref ** 2).sum() / ((f.stems[i][:, :ref.shape[1]] - ref) ** 2).sum())
        assert snr > 20, (name, snr)


def test_a_model_without_four_stems_is_one_error_line_and_no_file(files, tmp_path, capsys):
    cfg2, ckpt2 = _model(tmp_path, stems=("vocals", "instrumental"))
    code, _, err = run_cli(["separate", files["song"], "--config", cfg2, "--checkpoint", ckpt2,
                            "--out", tmp_path / "out", "--format", "stem", "--no-progress"], capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--stem-order" in lines[0]
    assert "vocals, instrumental" in lines[0]
    assert not (tmp_path / "out").exists()
    code, _, err = run_cli(["separate", files["song"], "--config", files["cfg"], "--checkpoint", files["ckpt"],
                            "--out", tmp_path / "o2", "--codec", "alac"], capsys)
    assert code == 2 or (code == 1 and "go with --format stem" in err)


def test_stem_order_maps_other_names(files, tmp_path, capsys):
    cfg, ckpt = _model(tmp_path, stems=("kick", "low", "rest", "lead", "fx"))
    out = tmp_path / "out"
    code, _, err = run_cli(["separate", files["song"], "--config", cfg, "--checkpoint", ckpt, "--out", out,
                            "--format", "stem", "--codec", "alac", "--stem-order", "kick,low,rest,lead",
                            "--no-progress"], capsys)
    assert code == 0, err
    meta = nistem.read_stem_metadata(out / "song.stem.mp4")
    assert [s["name"] for s in meta["stems"]] == ["Kick", "Low", "Rest", "Lead"]

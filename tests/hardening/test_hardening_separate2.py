"""Hardening of the offline ``stemstream separate``, second round (issue 28, items 1 and 2).

1. A folder with one unreadable file among good ones: the good files are all separated, every failure
   is listed at the end (file and reason), the exit status is 1; ``--fail-fast`` stops at the first.
2. Memory does not grow with the file's length: ``separate_file`` reads, separates and writes a piece
   at a time, and its stems are those of the whole-file path (``separate_file_whole``) bit for bit, for
   every option that changes the samples (TTA, --instrumental, residual modes, normalisation,
   resampled and mono input, flac output, the model's output rate), with pieces far smaller than the
   file so that many piece boundaries fall inside the chunks' overlaps.
"""
import os
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

import streamer
from bridge.cli import main
from streamer.inference.separate import SeparationOptions, separate_file, separate_file_whole
from streamer.lab.testsignals import generated_clip

from conftest import randomize, write_yaml


# a small STFT and few bands: a fast model, so that files many chunks long separate in a second or two
SMALL = dict(stft_n_fft=512, stft_win_length=512, stft_hop_length=128, freqs_per_bands=(32, 32, 64, 129))


def _model(tmp_path, name="tiny", normalize=False, extra_model=None, **kwargs):
    cfg_path = write_yaml(tmp_path / f"{name}.yaml", extra_model={**SMALL, **(extra_model or {})}, **kwargs)
    if normalize:
        data = yaml.safe_load(open(cfg_path))
        data["inference"]["normalize"] = True
        with open(cfg_path, "w") as fh:
            yaml.safe_dump(data, fh)
    cfg = streamer.load_config(cfg_path)
    torch.manual_seed(0)
    model = randomize(streamer.build_model(cfg), seed=1, scale=0.1).eval()
    ckpt = tmp_path / f"{name}.ckpt"
    torch.save(model.state_dict(), ckpt)
    return cfg_path, ckpt, model, cfg


def _run(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------------------------------ item 1
def test_a_bad_file_in_a_folder_does_not_stop_the_others(tmp_path, capsys):
    cfg_path, ckpt, _, _ = _model(tmp_path, chunk_size=4410, batch_size=4)
    folder = tmp_path / "in"
    folder.mkdir()
    mix, _ = generated_clip(0.3, 44100, seed=4)
    sf.write(folder / "a.wav", mix.T, 44100)
    sf.write(folder / "b.flac", mix.T, 44100)
    (folder / "c.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk-not-audio" * 4)   # corrupt
    sf.write(folder / "d.wav", mix.T, 44100)
    nan = mix.copy()
    nan[1, 7] = np.nan
    sf.write(folder / "e.wav", nan.T, 44100, subtype="FLOAT")                     # NaN samples
    sf.write(folder / "f.wav", mix.T, 44100)
    out = tmp_path / "out"
    base = ["separate", folder, "--config", cfg_path, "--checkpoint", ckpt]

    code, stdout, err = _run([*base, "--out", out], capsys)
    assert code == 1
    for name in ("a", "b", "d", "f"):
        assert (out / name / "vocals.wav").is_file(), name
        assert f"{name}." in stdout
    assert not (out / "c").exists() and not (out / "e").exists()
    assert "4 separated, 2 failed" in err
    tail = err[err.index("4 separated, 2 failed"):]
    assert f"failed: {folder / 'c.wav'}: cannot read audio" in tail
    assert f"failed: {folder / 'e.wav'}: " in tail and "NaN/inf samples (first at sample 7)" in tail
    assert "Traceback" not in err

    # --fail-fast: the old behaviour, one error line at the first bad file, nothing after it
    out2 = tmp_path / "out2"
    code, stdout, err = _run([*base, "--out", out2, "--fail-fast"], capsys)
    lines = [line for line in err.strip().splitlines() if not line.startswith("WARNING")]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: ") and "c.wav" in lines[0]
    assert (out2 / "b" / "vocals.wav").is_file() and not (out2 / "d").exists() and not (out2 / "f").exists()


# ------------------------------------------------------------------------------------------ item 2
def _files(folder):
    """Each file's format and samples, exactly (float files as float32, PCM as the integers stored; the
    bytes themselves differ in the time stamp libsndfile puts into a float WAV's PEAK chunk)."""
    found = {}
    for name in sorted(os.listdir(folder)):
        info = sf.info(folder / name)
        data, _ = sf.read(folder / name, dtype="float32" if info.subtype in ("FLOAT", "DOUBLE") else "int32")
        found[name] = (info.format, info.subtype, info.samplerate, info.channels, info.frames, data.tobytes())
    return found


CASES = {
    # name: (config kwargs, normalize, input (seconds, rate, channels, subtype), options)
    "tta-instrumental-overlap4-batch3": (dict(chunk_size=4410, num_overlap=4, batch_size=3), False,
                                         (0.4, 44100, 2, "FLOAT"), dict(tta=True, instrumental=True)),
    "normalize-residual-other-pcm16": (dict(chunk_size=4000, num_overlap=3, batch_size=4, stems=("vocals", "other"),
                                            target=None, extra_model={"num_stems": 2}), True, (1.0, 44100, 2, "PCM_16"),
                                       dict(residual="other", instrumental=True)),
    "normalize-spread-48k-mono-flac": (dict(chunk_size=4410, num_overlap=2, batch_size=4,
                                            stems=("vocals", "drums", "other"), target=None,
                                            extra_model={"num_stems": 3}), True, (0.9, 48000, 1, "PCM_24"),
                                       dict(residual="spread", fmt="flac", subtype="PCM_24")),
    "22k-model-rate": (dict(chunk_size=4410, num_overlap=2, batch_size=4), False, (0.6, 22050, 2, "FLOAT"),
                       dict(output_rate="model")),
    "short-no-border": (dict(chunk_size=4410, num_overlap=2), False, (0.08, 44100, 2, "FLOAT"), {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_streamed_stems_are_the_whole_file_stems_bit_for_bit(tmp_path, case):
    kwargs, normalize, (seconds, rate, channels, subtype), options = CASES[case]
    _, _, model, cfg = _model(tmp_path, normalize=normalize, **kwargs)
    mix, _ = generated_clip(seconds, rate, seed=7, channels=channels)
    mix = (mix * 0.9 + 0.02).astype(np.float32)  # a DC offset: normalisation's mean is not 0
    path = tmp_path / "song.wav"
    sf.write(path, mix.T, rate, subtype=subtype)
    opts = SeparationOptions(progress=False, **options)
    whole = separate_file_whole(model, cfg, path, tmp_path / "whole", opts)
    # pieces of 0.05 s: fewer samples than a chunk, so that there are many pieces and their boundaries fall
    # inside the chunks' overlaps (a piece is rounded up to whole batches)
    streamed = separate_file(model, cfg, path, tmp_path / "streamed", opts, piece_seconds=0.05)
    assert [os.path.basename(f) for f in streamed.files] == [os.path.basename(f) for f in whole.files]
    assert streamed.seconds == pytest.approx(mix.shape[1] / rate)
    got, want = _files(tmp_path / "streamed" / "song"), _files(tmp_path / "whole" / "song")
    assert list(got) == list(want) and got
    for name in want:
        assert got[name] == want[name], f"{case}: {name} differs"
    info = sf.info(tmp_path / "streamed" / "song" / os.path.basename(whole.files[0]))
    out_rate = cfg.sample_rate if options.get("output_rate") == "model" else rate
    assert info.samplerate == out_rate and info.channels == cfg.channels
    if out_rate == rate:
        assert info.frames == mix.shape[1]


def test_normalisation_statistics_are_numpys_bit_for_bit():
    """The mean and deviation the streamed path computes in two passes (a block at a time) are numpy's of
    the whole mono mix, to the last bit (pairwise sums over the same halves)."""
    from streamer.inference.separate import mix_stats, normalize_mix

    class Cfg:
        normalize = True

    rng = np.random.default_rng(3)
    for n in (1, 127, 129, 5000, 300_007):
        x = (rng.standard_normal((2, n)) * 0.3 + 0.05).astype(np.float32)
        _, mean, std = normalize_mix(x, Cfg)

        def blocks():
            return (x[:, i : i + 1001] for i in range(0, n, 1001))

        for leaf in (128, 1 << 16):
            assert mix_stats(blocks, n, leaf) == ((mean, std) if std is not None else (None, None)), (n, leaf)
    assert mix_stats(lambda: iter([np.zeros((2, 500), np.float32)]), 500) == (None, None)


def _peak(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_files_length(tmp_path, monkeypatch):
    """The numpy memory separate_file holds at its peak is the same for a file four times longer: pieces,
    not the file, are held (before, the whole file was: about seven times the file as float32)."""
    import streamer.inference.separate as separate_module

    monkeypatch.setattr(separate_module, "READ_FRAMES", 2048)  # reads far shorter than the file, as for a long one
    _, _, model, cfg = _model(tmp_path, chunk_size=4410, num_overlap=2, batch_size=8)
    opts = SeparationOptions(progress=False, instrumental=True)
    mix, _ = generated_clip(1, 48000, seed=5)
    peaks = {}
    for seconds in (1, 4):
        path = tmp_path / f"song{seconds}.wav"
        with sf.SoundFile(path, "w", 48000, 2, subtype="PCM_16") as fh:
            for _ in range(seconds):
                fh.write(mix.T * 0.5)
        peaks[seconds] = _peak(lambda: separate_file(model, cfg, path, tmp_path / "s", opts, piece_seconds=0.25))
    # the whole-file path: four times the memory for four times the file
    assert peaks[4] < 1.3 * peaks[1], peaks

"""Songs in MUSDB layout and a tiny four-stem config, shared by the training and evaluation tests."""
import pytest
import soundfile as sf

from streamer.lab.testsignals import generated_clip

from conftest import write_yaml


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

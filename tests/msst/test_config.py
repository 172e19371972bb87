import logging

import pytest

import streamer
from streamer import ConfigError
from streamer.msst.config import read_yaml

from conftest import MSST_CONFIGS, write_yaml

ALL_CONFIGS = sorted(MSST_CONFIGS.rglob("*.yaml"))


def test_reference_configs_are_present():
    assert len(ALL_CONFIGS) >= 14


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: str(p.relative_to(MSST_CONFIGS)))
def test_every_shipped_config_loads(path):
    raw = read_yaml(path)
    cfg = streamer.load_config(path)
    assert cfg.model_type in ("bs_roformer", "mel_band_roformer")
    assert len(cfg.stems) == cfg.model.get("num_stems", 1)
    assert cfg.sample_rate == 44100 and cfg.channels == 2
    assert "sage_attention" not in cfg.model and "flash_attn" not in cfg.model
    if "freqs_per_bands" in raw["model"]:
        assert isinstance(raw["model"]["freqs_per_bands"], tuple)  # !!python/tuple understood
        assert sum(cfg.model["freqs_per_bands"]) == 1025
    assert cfg.chunk_size == raw["audio"]["chunk_size"]
    assert cfg.num_overlap == raw["inference"]["num_overlap"]
    assert cfg.batch_size == raw["inference"]["batch_size"]


def test_kj_config_fields():
    cfg = streamer.load_config(MSST_CONFIGS / "KimberleyJensen" / "config_vocals_mel_band_roformer_kj.yaml")
    assert cfg.model_type == "mel_band_roformer"
    assert cfg.stems == ["vocals"]
    assert cfg.chunk_size == 352800 and cfg.num_overlap == 2 and cfg.batch_size == 4
    assert cfg.model["stft_hop_length"] == 441
    four = streamer.load_config(MSST_CONFIGS / "config_musdb18_mel_band_roformer_all_stems.yaml")
    assert four.stems == ["drums", "bass", "other", "vocals"]


def test_stft_settings_come_from_model_section(tmp_path):
    p = write_yaml(tmp_path / "c.yaml", extra_model={"stft_hop_length": 256})
    text = p.read_text().replace("audio:\n", "audio:\n  hop_length: 1024\n  n_fft: 4096\n  dim_t: 801\n")
    p.write_text(text)
    cfg = streamer.load_config(p)
    assert cfg.stft_hop == 256
    model = streamer.build_model(cfg)
    assert model.stft_hop_length == 256 and model.stft_n_fft == 2048


def test_sage_attention_dropped_with_warning(caplog):
    with caplog.at_level(logging.WARNING):
        cfg = streamer.load_config(MSST_CONFIGS / "config_musdb18_mel_band_roformer_sage.yaml")
    assert "sage_attention" not in cfg.model
    assert any("sage_attention" in r.getMessage() for r in caplog.records)


def test_unknown_architecture_key_is_named(tmp_path):
    p = write_yaml(tmp_path / "c.yaml", extra_model={"num_expertz": 4})
    with pytest.raises(ConfigError) as err:
        streamer.load_config(p)
    msg = str(err.value)
    assert "num_expertz" in msg and "accepted" in msg and "freqs_per_bands" in msg and "dim_head" in msg


def test_model_type_sources(tmp_path):
    mel = {"dim": 16, "depth": 1, "num_bands": 8, "stereo": True}
    # inferred from num_bands / freqs_per_bands
    p = write_yaml(tmp_path / "a.yaml", model_type=None, model=mel)
    assert streamer.load_config(p).model_type == "mel_band_roformer"
    p = write_yaml(tmp_path / "b.yaml", model_type=None, extra_model={"freqs_per_bands": [1025]})
    assert streamer.load_config(p).model_type == "bs_roformer"
    # neither: ambiguous unless given explicitly
    p = write_yaml(tmp_path / "c.yaml", model_type=None)
    with pytest.raises(ConfigError, match="cannot tell the model type"):
        streamer.load_config(p)
    assert streamer.load_config(p, model_type="bs_roformer").model_type == "bs_roformer"
    # training.model_type wins over the argument
    p = write_yaml(tmp_path / "d.yaml", model_type="mel_band_roformer", model=mel)
    assert streamer.load_config(p, model_type="bs_roformer").model_type == "mel_band_roformer"


def test_other_architecture_is_refused(tmp_path):
    p = write_yaml(tmp_path / "c.yaml", model_type="htdemucs", model={"channels": 48, "depth": 4})
    with pytest.raises(ConfigError) as err:
        streamer.load_config(p)
    assert "htdemucs" in str(err.value) and "bs_roformer" in str(err.value)


def test_stems_from_target_or_instruments(tmp_path):
    p = write_yaml(tmp_path / "a.yaml", stems=("vocals", "other"), target="other")
    assert streamer.load_config(p).stems == ["other"]
    p = write_yaml(tmp_path / "b.yaml", stems=("drums", "bass"), target=None, extra_model={"num_stems": 2})
    assert streamer.load_config(p).stems == ["drums", "bass"]
    p = write_yaml(tmp_path / "c.yaml", stems=("drums", "bass", "vocals"), target=None, extra_model={"num_stems": 2})
    with pytest.raises(ConfigError, match="num_stems"):
        streamer.load_config(p)


def test_inference_chunk_size_overrides_audio(tmp_path):
    p = write_yaml(tmp_path / "a.yaml", chunk_size=44100)
    p.write_text(p.read_text().replace("inference:\n", "inference:\n  chunk_size: 22050\n"))
    assert streamer.load_config(p).chunk_size == 22050


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        streamer.load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        streamer.load_config(bad)
    bad.write_text("audio: {}\n")
    with pytest.raises(ConfigError, match="missing 'model'"):
        streamer.load_config(bad)
    p = write_yaml(tmp_path / "c.yaml", extra_model={"freqs_per_bands": [2, 2]})
    with pytest.raises(ConfigError, match="sums to 4"):
        streamer.load_config(p)
    p = write_yaml(tmp_path / "d.yaml", extra_model={"dim": "wide"})
    with pytest.raises(ConfigError, match="model.dim must be a positive integer"):
        streamer.load_config(p)


def test_use_pope_refused_and_experimental_variant_accepted(tmp_path):
    p = write_yaml(tmp_path / "a.yaml", extra_model={"use_pope": True})
    with pytest.raises(ConfigError, match="use_pope"):
        streamer.load_config(p)
    p = write_yaml(tmp_path / "b.yaml", model_type="bs_roformer_experimental",
                   extra_model={"use_value_residual_learning": False, "num_residual_streams": 1})
    cfg = streamer.load_config(p)
    assert cfg.model_type == "bs_roformer" and cfg.model["zero_dc"] is False
    p = write_yaml(tmp_path / "c.yaml", model_type="bs_roformer_experimental",
                   extra_model={"use_value_residual_learning": True})
    with pytest.raises(ConfigError, match="use_value_residual_learning"):
        streamer.load_config(p)

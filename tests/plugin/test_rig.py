"""Rig files: a working rig, and every kind of bad input named clearly."""
import os

import numpy as np
import pytest
import yaml

import streamer
from bridge import StemSeparator
from bridge.plugin.rig import RigError, load_rig

from conftest import REPO, write_yaml


@pytest.fixture
def model_config(tmp_path):
    return write_yaml(tmp_path / "model.yaml", stems=("vocals", "drums", "bass", "other"), target=None,
                      extra_model={"num_stems": 4}, chunk_size=8820)


def rig(tmp_path, data, name="rig.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_rig_sets_up_engine_stems_effects_and_buses(tmp_path, model_config):
    path = rig(tmp_path, {
        "model": {"config": model_config.name},
        "engine": {"preset": "low", "window": 0.2, "hop": 0.05, "lookahead": 0.05, "residual": "other"},
        "stems": {"drums": {"gain_db": -6}, "vocals": {"effects": [{"plugin": "Reverb", "room_size": 0.5}]}},
        "buses": {"main": {"vocals": {"mute": True}}, "monitor": {"vocals": {"fader": 0.5}, "gain_db": -3}},
        "output": "monitor",
    })
    sep = StemSeparator.from_rig(path)
    assert sep.engine.window == 8820 and sep.engine.hop == 2205 and sep.engine.lookahead == 2205
    assert sep.stems["drums"].gain_db == -6 and sep.mixer["main"]["vocals"].mute
    assert sep.mixer["monitor"]["vocals"].gain_db == pytest.approx(-10) and sep.mixer["monitor"].gain_db == -3
    assert type(sep.stems["vocals"].effects[0]).__name__ == "Reverb"
    assert sep.output == "monitor"
    y = sep(np.zeros((2, 5000), np.float32), 44100)
    assert y.shape == (2, 5000)


@pytest.mark.parametrize("residual,expected", [(None, "spread"), ("spread", "spread"), ("other", "other"),
                                               ("null", None)])
def test_rig_residual_defaults_to_spread_for_a_multi_stem_model(tmp_path, model_config, residual, expected):
    engine = {} if residual is None else {"residual": None if residual == "null" else residual}
    sep = StemSeparator.from_rig(rig(tmp_path, {"model": {"config": model_config.name}, "engine": engine}))
    assert sep.engine.residual == expected
    assert sep.stem_names == list(streamer.load_config(model_config).stems)


@pytest.mark.parametrize("data,message", [
    ({"model": {"config": "model.yaml"}, "engin": {}}, "unknown key engin; expected buses, engine, midi, model"),
    ({"engine": {}}, "model.config is required"),
    ({"model": {"config": "model.yaml"}, "engine": {"hop": "fast"}}, "engine.hop: expected a number"),
    ({"model": {"config": "model.yaml"}, "engine": {"preset": "instant"}}, "latency must be one of"),
    ({"model": {"config": "model.yaml"}, "stems": {"guitar": {"mute": True}}}, "stems: unknown key guitar"),
    ({"model": {"config": "model.yaml"}, "stems": {"vocals": {"mute": "yes"}}}, "stems.vocals.mute: expected true"),
    ({"model": {"config": "model.yaml"}, "stems": {"vocals": {"effects": [{"plugin": "Reverbb"}]}}},
     "stems.vocals.effects[0]: unknown plugin 'Reverbb'"),
    ({"model": {"config": "model.yaml"}, "stems": {"vocals": {"effects": [{"plugin": "Reverb", "size": 2}]}}},
     "bad parameters for Reverb"),
    ({"model": {"config": "model.yaml"}, "stems": {"vocals": {"effects": [{"vst3": "/no/such.vst3"}]}}},
     "VST3 plugin not found"),
    ({"model": {"config": "model.yaml"}, "buses": {"main": {"vocals": {"volume": 1}}}},
     "buses.main.vocals: unknown key volume"),
    ({"model": {"config": "model.yaml"}, "stems": {"drums": {"gain_db": float("inf")}}}, "drums.gain_db: expected"),
    ({"model": {"config": "model.yaml"}, "output": "pa"}, "output must be 'stems', 'buses' or a bus"),
])
def test_bad_rigs_name_the_file_and_key(tmp_path, model_config, data, message):
    path = rig(tmp_path, data)
    with pytest.raises(RigError) as err:
        StemSeparator.from_rig(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_shipped_rigs_are_valid():
    from streamer.assets import DEMO_CHECKPOINT

    assert os.path.exists(DEMO_CHECKPOINT)
    for path in sorted((REPO / "configs" / "rigs").glob("*.yaml")):
        sep = StemSeparator.from_rig(path)
        assert sep.reported_latency_samples > 0


def test_scenes_are_parsed_and_checked(tmp_path, model_config):
    from bridge.plugin.rig import load_rig

    base = {"model": {"config": str(model_config)}, "buses": {"main": {}, "monitor": {}}}
    spec = load_rig(rig(tmp_path, dict(base, scenes={
        "karaoke": {"vocals": {"mute": True}, "buses": {"monitor": {"vocals": {"gain_db": -10}, "mute": False}}},
        "full": {}})))
    assert spec.scenes["karaoke"].buses == {"main": {"stems": {"vocals": {"mute": True}}},
                                            "monitor": {"stems": {"vocals": {"gain_db": -10.0}}, "mute": False}}
    assert spec.scenes["full"].buses == {}
    for scenes, words in [({"k": {"piano": {"mute": True}}}, "scenes.k: unknown key piano"),
                          ({"k": {"vocals": {"gain_db": float("nan")}}}, "scenes.k.vocals.gain_db"),
                          ({"k": {"buses": {"stage": {}}}}, "scenes.k.buses: unknown key stage"),
                          ({"k": {"vocals": {"volume": 1}}}, "unknown key volume"),
                          (["karaoke"], "scenes: expected a mapping")]:
        with pytest.raises(RigError, match=words):
            load_rig(rig(tmp_path, dict(base, scenes=scenes)))


def test_a_copy_of_the_separator_default_is_still_the_default():
    import copy
    import pickle

    from bridge.plugin.stems import DEFAULT_RESIDUAL, separator_residual

    for default in (DEFAULT_RESIDUAL, copy.copy(DEFAULT_RESIDUAL), pickle.loads(pickle.dumps(DEFAULT_RESIDUAL))):
        assert separator_residual(default, ["vocals", "drums", "bass", "other"]) == "spread"
        assert separator_residual(default, ["vocals"]) == "other"
    assert separator_residual("other", ["vocals", "drums", "bass", "other"]) == "other"


def test_rig_values_follow_the_mixer_rules(tmp_path, model_config):
    """One rule per value, whatever the source: a rig's 99 dB stops at +24 and its fader 1.2 at the top, as
    over OSC; -130 dB is accepted (very quiet); 1/0 are flags too."""
    spec = load_rig(rig(tmp_path, {"model": {"config": "model.yaml"},
                                   "stems": {"drums": {"gain_db": 99}, "bass": {"fader": 1.2, "mute": 1},
                                             "vocals": {"gain_db": -130, "solo": 0}}}))
    assert spec.stem_controls["drums"] == {"gain_db": 24.0}
    assert spec.stem_controls["bass"] == {"fader": 1.0, "mute": True}
    assert spec.stem_controls["vocals"] == {"gain_db": -130.0, "solo": False}

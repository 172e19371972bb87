"""Hardening of what users feed in: checkpoints that would run code, a single-target model's residual,
pedalboard's channel-layout rule for every small block shape, and wrong types or silent fallbacks in
configs, rigs and mixer controls.

1. A checkpoint whose unpickling creates a marker file is refused everywhere a checkpoint is read
   (Python API, StemSeparator, rigs, every CLI command taking one) unless the person running the
   command opts in (``trust=True`` / ``trust_checkpoint=True`` / ``--trust-checkpoint``); a rig file
   that has the key ``model.trust_checkpoint`` at all is refused.
10. A single-target model always gets its residual stem (default ``"other"``), so muting the target
    plays the rest of the mix; a multi-stem model without ``other`` gets one only when asked for.
11. ``StemSeparator`` and ``Chain`` decide block layouts exactly as pedalboard's own plugins do
    (checked against real ``pedalboard`` plugins, shape by shape and call after call).
13. Wrong types and zero/NaN values are accepted with their natural meaning or refused with one line
    naming the file and the key; nothing falls back to a default silently.
"""
import itertools
import math
import pathlib
from types import SimpleNamespace

import numpy as np
import pedalboard
import pytest
import soundfile as sf
import torch
import yaml
from pedalboard_native._internal import AddLatency

import streamer
from bridge import Chain, StemMixer, StemSeparator
from bridge.cli.main import main as cli_main
from bridge.mix.mixer import fader_to_db
from bridge.plugin.layout import FIRST, LAST, MONO, ChannelLayout
from bridge.plugin.rig import RigError
from streamer.errors import AudioError, CheckpointError, ConfigError, SettingsError, StemstreamError

from conftest import TINY_BS, write_yaml
from standins import ContextModel, IdentityModel

RATE = 44100


def noise(shape, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * 0.2).astype(np.float32)


def run_cli(capsys, argv):
    """Exit code, stdout and stderr of ``stemstream ARGV`` (any exception escaping main fails the test)."""
    code = cli_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code, err, *needles):
    assert code == 1, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert str(needle) in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------------------------------------------
# 1. checkpoints that run code when unpickled


class TouchOnUnpickle:
    """Unpickling this object creates ``marker``: a checkpoint that runs code as it loads."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.fixture
def evil(tmp_path):
    """A tiny model's config and a checkpoint of its real weights that also carries a code payload."""
    cfg_path = write_yaml(tmp_path / "tiny.yaml")
    torch.manual_seed(0)
    model = streamer.build_model(streamer.load_config(cfg_path))
    marker = tmp_path / "marker-created-by-unpickling"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": model.state_dict(), "payload": TouchOnUnpickle(marker)}, path)
    assert not marker.exists()
    return SimpleNamespace(config=cfg_path, ckpt=path, marker=marker, model=model, tmp=tmp_path)


def assert_refusal(exc_or_text, evil):
    text = str(exc_or_text)
    assert str(evil.ckpt) in text
    assert "--trust-checkpoint" in text and "trust=True" in text  # how to opt in
    assert "trust where the file came from" in text
    assert not evil.marker.exists()


def test_refusal_says_why_unpickling_is_dangerous(evil):
    with pytest.raises(CheckpointError) as err:
        streamer.read_state_dict(evil.ckpt)
    assert "arbitrary code" in str(err.value)


def test_the_payload_is_real_and_trust_true_runs_it(evil):
    """The person opting in (trust=True) is the only way the payload runs: proof the file is dangerous."""
    sd = streamer.read_state_dict(evil.ckpt, trust=True)
    assert evil.marker.exists()
    assert set(sd) == set(evil.model.state_dict())


@pytest.mark.parametrize("value", ["false", False, "true", True, None, 0, "no"])
def test_rig_cannot_opt_in_to_pickle_loading(evil, value):
    rig = evil.tmp / "rig.yaml"
    rig.write_text(yaml.safe_dump({"model": {"config": evil.config.name, "checkpoint": evil.ckpt.name,
                                             "trust_checkpoint": value}}))
    for kwargs in ({}, {"trust_checkpoint": True}):
        with pytest.raises(RigError) as err:
            StemSeparator.from_rig(rig, **kwargs)
        msg = str(err.value)
        assert str(rig) in msg and "model.trust_checkpoint" in msg
        assert "--trust-checkpoint" in msg and "trust_checkpoint=True" in msg
        assert "\n" not in msg
        assert not evil.marker.exists()


def test_rig_checkpoint_loads_safely_unless_the_person_opts_in(evil):
    rig = evil.tmp / "rig.yaml"
    rig.write_text(yaml.safe_dump({"model": {"config": evil.config.name, "checkpoint": evil.ckpt.name}}))
    with pytest.raises(CheckpointError) as err:
        StemSeparator.from_rig(rig)
    assert_refusal(err.value, evil)
    with pytest.raises(SettingsError, match="trust_checkpoint must be True or False"):
        StemSeparator.from_rig(rig, trust_checkpoint="false")
    assert not evil.marker.exists()
    sep = StemSeparator.from_rig(rig, trust_checkpoint=True)  # the person running the program opted in
    assert evil.marker.exists()
    for k, v in evil.model.state_dict().items():
        assert torch.equal(sep.engine.model.state_dict()[k], v), k


def test_python_api_refuses_without_trust(evil):
    model = streamer.build_model(streamer.load_config(evil.config))
    for call in (lambda: StemSeparator.from_config(evil.config, checkpoint=evil.ckpt),
                 lambda: streamer.load_model(evil.config, evil.ckpt),
                 lambda: streamer.load_checkpoint(model, evil.ckpt),
                 lambda: streamer.read_state_dict(evil.ckpt)):
        with pytest.raises(CheckpointError) as err:
            call()
        assert_refusal(err.value, evil)
    StemSeparator.from_config(evil.config, checkpoint=evil.ckpt, trust_checkpoint=True)
    assert evil.marker.exists()


def test_python_load_model_with_trust_runs_the_payload(evil):
    loaded = streamer.load_model(evil.config, evil.ckpt, trust=True)
    assert evil.marker.exists() and loaded.trained


def test_cli_commands_refuse_without_trust_checkpoint(evil, capsys):
    wav = evil.tmp / "mix.wav"
    sf.write(wav, noise((RATE // 2, 2)), RATE)
    data = evil.tmp / "songs"
    data.mkdir()
    out = evil.tmp / "out"
    commands = [
        ["inspect", evil.ckpt],
        ["inspect", evil.ckpt, "--config", evil.config],
        ["separate", wav, "--config", evil.config, "--checkpoint", evil.ckpt, "--out", out, "--device", "cpu"],
        ["eval", data, "--config", evil.config, "--checkpoint", evil.ckpt, "--device", "cpu"],
        ["bench", "--checkpoint", evil.ckpt, "--seconds", "1"],
    ]
    for argv in commands:
        code, _, err = run_cli(capsys, argv)
        line = assert_one_error_line(code, err, evil.ckpt, "--trust-checkpoint")
        assert "trust where the file came from" in line
        assert not evil.marker.exists(), argv


def test_cli_trust_checkpoint_flag_is_the_person_opting_in(evil, capsys):
    code, out, err = run_cli(capsys, ["inspect", evil.ckpt, "--config", evil.config, "--trust-checkpoint"])
    assert code == 0, err
    assert evil.marker.exists() and "matches" in out
    evil.marker.unlink()
    wav = evil.tmp / "mix.wav"
    sf.write(wav, noise((RATE // 4, 2)), RATE)
    code, out, err = run_cli(capsys, ["separate", wav, "--config", evil.config, "--checkpoint", evil.ckpt,
                                      "--out", evil.tmp / "out", "--device", "cpu", "--no-progress",
                                      "--trust-checkpoint"])
    assert code == 0, err
    assert evil.marker.exists()


# ---------------------------------------------------------------------------------------------------
# 10. a single-target model's residual


@pytest.fixture
def vocals_model(tmp_path):
    """A real tiny BS-RoFormer with one output (training.target_instrument: vocals, num_stems: 1)."""
    cfg_path = write_yaml(tmp_path / "vocals.yaml", chunk_size=8820)
    loaded = streamer.load_model(cfg_path, seed=0)
    assert loaded.config.stems == ["vocals"] and loaded.config.model["num_stems"] == 1
    return cfg_path, loaded


def test_single_target_model_gets_its_residual_so_muting_vocals_plays_the_rest(vocals_model):
    _, loaded = vocals_model
    sep = StemSeparator(loaded.model, loaded.config, latency="low")
    assert sep.stem_names == ["vocals", "other"]
    x = noise((2, 12000), seed=1)
    sep.output = "stems"
    stems = sep(x, RATE)
    assert stems.shape == (4, 12000) and np.abs(stems[:2]).max() > 1e-4  # the model does output something
    sep.output = "main"
    sep.stems["vocals"].mute = True
    sep(x, RATE)  # the mute ramps in over the first 10 ms; the gains stay between one-shot calls
    y = sep(x, RATE)
    np.testing.assert_allclose(y, x - stems[:2], atol=1e-6)   # the input minus the vocals stem
    np.testing.assert_array_equal(y, stems[2:])               # = the residual stem, exactly
    assert np.abs(y).max() > 0.1                               # not silence


def test_single_target_residual_names_and_explicit_none(vocals_model):
    cfg_path, loaded = vocals_model
    assert StemSeparator.from_config(cfg_path).stem_names == ["vocals", "other"]
    assert StemSeparator(loaded.model, loaded.config, residual="instrumental").stem_names == ["vocals", "instrumental"]
    assert StemSeparator(loaded.model, loaded.config, residual=None).stem_names == ["vocals"]


def test_single_target_rig_can_set_the_residual_stem(vocals_model, tmp_path):
    cfg_path, _ = vocals_model
    rig = tmp_path / "rig.yaml"
    rig.write_text(yaml.safe_dump({"model": {"config": cfg_path.name},
                                   "stems": {"vocals": {"mute": True}, "other": {"gain_db": -3}}}))
    sep = StemSeparator.from_rig(rig)
    assert sep.stem_names == ["vocals", "other"]
    assert sep.stems["other"].gain_db == -3 and sep.stems["vocals"].mute


def test_multi_stem_model_without_other_gets_an_extra_residual_stem_only_when_asked(tmp_path):
    cfg = streamer.load_config(write_yaml(tmp_path / "two.yaml", stems=("drums", "bass"), target=None,
                                          extra_model={"num_stems": 2}))
    assert StemSeparator(IdentityModel(2), cfg).stem_names == ["drums", "bass"]              # default: spread
    assert StemSeparator(IdentityModel(2), cfg, residual="other").stem_names == ["drums", "bass", "other"]
    assert StemSeparator(IdentityModel(2), cfg, residual="rest").stem_names == ["drums", "bass", "rest"]
    assert StemSeparator(IdentityModel(2), cfg, residual="bass").stem_names == ["drums", "bass"]
    rig = tmp_path / "rig.yaml"
    rig.write_text(yaml.safe_dump({"model": {"config": "two.yaml"}, "engine": {"residual": "other"},
                                   "stems": {"other": {"mute": True}}}))
    assert StemSeparator.from_rig(rig).stem_names == ["drums", "bass", "other"]
    rig.write_text(yaml.safe_dump({"model": {"config": "two.yaml"}, "stems": {"other": {"mute": True}}}))
    with pytest.raises(RigError, match="stems: unknown key other"):
        StemSeparator.from_rig(rig)


def test_multi_stem_model_spreads_the_residual_by_default_so_its_stems_sum_to_the_input(tmp_path):
    cfg = streamer.load_config(write_yaml(tmp_path / "four.yaml", stems=("vocals", "drums", "bass", "other"),
                                          target=None, extra_model={"num_stems": 4}, chunk_size=4410))
    x = noise((2, 20000), seed=3)
    out = {}
    for residual in ("default", "spread", None, "other"):
        kw = {} if residual == "default" else {"residual": residual}
        sep = StemSeparator(ContextModel(4), cfg, latency="low", output="stems", **kw)
        assert sep.stem_names == ["vocals", "drums", "bass", "other"]
        assert sep.engine.residual == ("spread" if residual == "default" else residual)
        out[residual] = sep(x, RATE).reshape(4, 2, -1)   # one call: aligned with the input
        if residual is not None:
            np.testing.assert_allclose(out[residual].sum(axis=0), x, atol=2e-6)
    np.testing.assert_array_equal(out["default"], out["spread"])
    share = (x - out[None].sum(axis=0)) / 4   # what the model's stems miss, a quarter to each
    assert np.abs(share).max() > 1e-3
    np.testing.assert_allclose(out["spread"], out[None] + share[None], atol=2e-6)
    np.testing.assert_allclose(out["other"][:3], out[None][:3], atol=1e-7)   # a residual stem leaves the rest as made


def test_spread_is_refused_for_a_single_target_model(vocals_model, tmp_path):
    cfg_path, loaded = vocals_model
    with pytest.raises(SettingsError, match="more than one stem"):
        StemSeparator(loaded.model, loaded.config, residual="spread")
    rig = tmp_path / "rig.yaml"
    rig.write_text(yaml.safe_dump({"model": {"config": cfg_path.name}, "engine": {"residual": "spread"}}))
    with pytest.raises(StemstreamError, match="more than one stem") as err:
        StemSeparator.from_rig(rig)
    assert "rig.yaml" in str(err.value)


# ---------------------------------------------------------------------------------------------------
# 11. pedalboard's channel-layout rule


SHAPES = [(0,), (1,), (2,), (5,), (0, 0), (0, 2), (2, 0), (0, 5), (5, 0), (1, 1), (1, 2), (2, 1), (2, 2), (3, 2),
          (2, 3), (3, 3), (1, 5), (5, 1), (2, 5), (5, 2), (3, 5), (5, 3), (1, 1, 1)]
RESET = "reset"


def observe(plugin, shape, x=None, reset=False):
    """What a real pedalboard plugin does with an array of ``shape``: ``("error", type)`` or
    ``("ok", output, layout)``. ``layout`` is FIRST/LAST when the output shows which axis is time (for a
    low-pass filter, an impulse at [0, 0] spreads along the time axis), else None (1-D, empty, (1, 1))."""
    if x is None:
        x = np.zeros(shape, np.float32)
        if x.size:
            x.flat[0] = 1.0
    try:
        y = plugin.process(x, RATE, reset=reset)
    except Exception as exc:  # noqa: BLE001 - the type is what is compared
        return ("error", type(exc))
    layout = None
    if y.ndim == 2 and y.size and isinstance(plugin, (pedalboard.LowpassFilter, BoardProbe)):
        along0 = y.shape[0] > 1 and np.abs(y[1:, 0]).max() > 0
        along1 = y.shape[1] > 1 and np.abs(y[0, 1:]).max() > 0
        if along1 and not along0:
            layout = FIRST
        elif along0 and not along1:
            layout = LAST
        elif not along0 and not along1 and shape[0] != shape[1]:
            layout = FIRST if shape[1] == 1 else LAST  # one frame: the length-1 axis is time
    return ("ok", y, layout)


def channels_of(shape, layout):
    if len(shape) == 1:
        return 1
    if layout is None:
        return min(shape) if min(shape) <= 1 else None
    return shape[0] if layout == FIRST else shape[1]


def sequences(prefixes, shapes):
    """Every ``prefix + (shape,)`` and every single shape on a fresh object."""
    seqs = [(s,) for s in shapes]
    for prefix in prefixes:
        for s in shapes:
            seqs.append(tuple(prefix) + (s,))
    return seqs


class BoardProbe:
    """A low-pass filter inside a Pedalboard: the container decides the layout (observe() reads it)."""

    def __init__(self):
        self.board = pedalboard.Pedalboard([pedalboard.LowpassFilter(1000)])

    def process(self, x, rate, reset):
        return self.board.process(x, rate, reset=reset)

    def reset(self):
        self.board.reset()


@pytest.mark.parametrize("reset", [False, True], ids=["streaming", "one-shot"])
@pytest.mark.parametrize("make", [lambda: pedalboard.LowpassFilter(1000), BoardProbe], ids=["plugin", "Pedalboard"])
def test_channel_layout_follows_pedalboard_for_every_sequence_of_three_small_shapes(make, reset):
    """ChannelLayout.decide against a real pedalboard plugin (alone and inside a Pedalboard, streaming
    and one-shot calls): same errors (type), same layout decided, for all 24**3 sequences of three calls
    drawn from the small shapes and reset()."""
    items = SHAPES + [RESET]
    checked = 0
    for seq in itertools.product(items, repeat=3):
        plugin, ours = make(), ChannelLayout()
        for step, item in enumerate(seq):
            if item == RESET:
                plugin.reset()
                ours.reset()
                continue
            theirs = observe(plugin, item, reset=reset)
            try:
                mine = ("ok", ours.decide(item))
            except Exception as exc:  # noqa: BLE001
                mine = ("error", type(exc))
            where = f"sequence {seq}, call {step}: {item}"
            assert mine[0] == theirs[0], f"{where}: pedalboard {theirs[0]}, ours {mine}"
            if mine[0] == "error":
                assert issubclass(mine[1], theirs[1]) and issubclass(mine[1], StemstreamError), where
                continue
            if len(item) == 1:
                assert mine[1] == MONO, where
            elif theirs[2] is not None:
                assert mine[1] == theirs[2], f"{where}: pedalboard {theirs[2]}, ours {mine[1]}"
                checked += 1
    assert checked > 5000


@pytest.fixture
def four(tmp_path):
    return streamer.load_config(write_yaml(tmp_path / "four.yaml", stems=("vocals", "drums", "bass", "other"),
                                           target=None, extra_model={"num_stems": 4}, chunk_size=4410))


PREFIXES = [(2, 5), (5, 2), (1, 5), (5,), (2, 0), (0, 2), (1, 1), (3, 5), (5, 3), (2, 1), (1, 2), (2, 2)]
SEP_SHAPES = [s for s in SHAPES if s not in ((0, 5), (5, 0))] + [RESET]


def test_separator_one_shot_shapes_values_and_errors_match_pedalboard(four):
    """At unity (residual stem present, nothing muted) a one-shot call returns the input bit for bit, in
    the shape pedalboard's Gain(0) and Pedalboard([Gain(0)]) return, and raises where they raise; more
    than two channels (as pedalboard decides them) are refused. output="stems" shows the layout decided:
    the vocals stem (IdentityModel: the input) sits on the channels axis pedalboard chose."""
    bus = StemSeparator(IdentityModel(4), four, latency="low")
    stems = StemSeparator(IdentityModel(4), four, latency="low", output="stems")
    for seq in sequences([(p,) for p in PREFIXES], SEP_SHAPES):
        probe, gain = pedalboard.LowpassFilter(1000), pedalboard.Gain(0)
        board = pedalboard.Pedalboard([pedalboard.Gain(0)])
        for sep in (bus, stems):
            sep.reset()
        for step, item in enumerate(seq):
            where = f"sequence {seq}, call {step}: {item}"
            if item == RESET:
                for p in (probe, gain, board, bus, stems):
                    p.reset()
                continue
            x = noise(item, seed=step)
            layout = observe(probe, item)
            ref = observe(gain, item, x)
            assert observe(board, item, x)[0] == ref[0], where
            for sep in (bus, stems):
                if ref[0] == "error":
                    with pytest.raises(ref[1]):
                        sep(x, RATE)
                    continue
                n_ch = channels_of(item, layout[2])
                if n_ch is not None and n_ch > 2:
                    with pytest.raises(AudioError, match="channels"):
                        sep(x, RATE)
                    continue
                y = sep(x, RATE)
                assert y.dtype == np.float32, where
                if sep is bus:
                    assert y.shape == ref[1].shape == x.shape, where
                    np.testing.assert_array_equal(y, x, err_msg=where)
                    continue
                # the stems pass the overlap-add (float rounding), the unity bus passes the dry input exactly
                if len(item) == 1:
                    assert y.shape == (8, item[0]), where
                    np.testing.assert_allclose(y[0], x, atol=1e-6, err_msg=where)
                elif layout[2] == FIRST:
                    assert y.shape == (8, item[1]), where
                    np.testing.assert_allclose(y[:n_ch], x, atol=1e-6, err_msg=where)
                elif layout[2] == LAST:
                    assert y.shape == (item[0], 8), where
                    np.testing.assert_allclose(y[:, :n_ch], x, atol=1e-6, err_msg=where)
                else:
                    assert y.size == 8 * (x.size // max(1, n_ch or 1)) or x.size == 0, where


STREAMS = {
    "stereo channels-first": [(2, 64), (2, 1), (2, 2), (2, 0), (2, 3), (2, 64), (2, 1), (2, 2), (2, 64)],
    "stereo channels-last": [(64, 2), (1, 2), (2, 2), (0, 2), (3, 2), (64, 2), (1, 2), (2, 2), (64, 2)],
    "mono, every form": [(64,), (1, 64), (64, 1), (1, 1), (0,), (1,), (5, 1), (1, 5), (64,), (2,), (64, 1)],
}


def delayed_reference(blocks, plugins):
    board = pedalboard.Pedalboard(plugins)
    return [board(b, RATE, buffer_size=64, reset=False) for b in blocks]


@pytest.mark.parametrize("name", list(STREAMS))
def test_separator_streaming_matches_a_native_latent_plugin_block_for_block(four, name):
    """Streamed at unity, the separator is pedalboard's AddLatency of the same latency: same shape of every
    output block, same samples, whatever block shapes come (one-frame and empty blocks included)."""
    sep = StemSeparator(IdentityModel(4), four, latency="low")
    blocks = [noise(s, seed=i) for i, s in enumerate(STREAMS[name] * 40)]
    theirs = delayed_reference(blocks, [AddLatency(sep.reported_latency_samples)])
    ours = [sep(b, RATE, buffer_size=64, reset=False) for b in blocks]
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a.shape == b.shape, f"block {i} {blocks[i].shape}: ours {a.shape}, pedalboard {b.shape}"
        np.testing.assert_array_equal(a, b, err_msg=f"block {i} {blocks[i].shape}")


@pytest.mark.parametrize("name", list(STREAMS))
def test_chain_streaming_matches_a_native_pedalboard_block_for_block(four, name):
    sep = StemSeparator(IdentityModel(4), four, latency="low")
    blocks = [noise(s, seed=i) for i, s in enumerate(STREAMS[name] * 40)]
    theirs = delayed_reference(blocks, [pedalboard.Gain(0), AddLatency(sep.reported_latency_samples),
                                        pedalboard.Gain(0)])
    chain = Chain([pedalboard.Gain(0), sep, pedalboard.Gain(0)])
    ours = [chain(b, RATE, buffer_size=64, reset=False) for b in blocks]
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a.shape == b.shape, f"block {i} {blocks[i].shape}: ours {a.shape}, pedalboard {b.shape}"
        np.testing.assert_array_equal(a, b, err_msg=f"block {i} {blocks[i].shape}")


def test_chain_one_shot_shapes_values_and_errors_match_pedalboard(four):
    sep = StemSeparator(IdentityModel(4), four, latency="low")
    chains = [Chain([sep]), Chain([pedalboard.Gain(0), sep, pedalboard.Gain(0)])]
    for seq in sequences([(p,) for p in PREFIXES[:8]], SEP_SHAPES):
        for c in chains:
            c.reset()
        boards = [pedalboard.Pedalboard([pedalboard.Gain(0)]) for _ in chains]
        probe = pedalboard.LowpassFilter(1000)
        for step, item in enumerate(seq):
            where = f"sequence {seq}, call {step}: {item}"
            if item == RESET:
                for p in chains + boards + [probe]:
                    p.reset()
                continue
            x = noise(item, seed=step)
            layout = observe(probe, item)
            for chain, board in zip(chains, boards):
                ref = observe(board, item, x)
                n_ch = channels_of(item, layout[2]) if layout[0] == "ok" else None
                if ref[0] == "error":
                    with pytest.raises(ref[1]):
                        chain(x, RATE)
                elif n_ch is not None and n_ch > 2:
                    with pytest.raises(AudioError):
                        chain(x, RATE)
                else:
                    y = chain(x, RATE)
                    assert y.shape == x.shape, where
                    np.testing.assert_array_equal(y, x, err_msg=where)
                # a refused call must not leave the chain's stages out of step: the next call decides alike


def test_streaming_after_one_shot_keeps_the_remembered_layout(four):
    """A square streaming block after a one-shot non-square call: pedalboard remembers the layout across
    both kinds of call, and so do the separator and the chain."""
    sep = StemSeparator(IdentityModel(4), four, latency="low")
    chain = Chain([pedalboard.Gain(0), sep])
    native = pedalboard.Gain(0)
    x = noise((5, 2))
    for p in (native, chain, sep):
        p(x, RATE)  # one-shot, channels-last
    assert native(noise((2, 2)), RATE, reset=False).shape == (2, 2)
    assert sep(noise((2, 2)), RATE, reset=False).shape == (0, 2)    # channels-last, withheld (latency)
    assert chain(noise((2, 2)), RATE, reset=False).shape == (0, 2)


# ---------------------------------------------------------------------------------------------------
# 13. wrong types and silent fallbacks


def base_config():
    return {"audio": {"chunk_size": 22050, "sample_rate": 44100, "num_channels": 2},
            "model": dict(TINY_BS),
            "training": {"instruments": ["vocals", "other"], "target_instrument": "vocals",
                         "model_type": "bs_roformer"},
            "inference": {"batch_size": 1, "num_overlap": 2}}


def with_value(section, key, value):
    data = base_config()
    data[section][key] = value
    return data


BAD_CONFIGS = {
    "instruments a string": (with_value("training", "instruments", "vocals"), "training.instruments"),
    "use_amp a string": (with_value("training", "use_amp", "false"), "training.use_amp"),
    "normalize a string": (with_value("inference", "normalize", "false"), "inference.normalize"),
    "stereo a string": (with_value("model", "stereo", "false"), "model.stereo"),
    "zero_dc a number": (with_value("model", "zero_dc", 2), "model.zero_dc"),
    "chunk_size 0": (with_value("audio", "chunk_size", 0), "audio.chunk_size"),
    "inference chunk_size 0": (with_value("inference", "chunk_size", 0), "inference.chunk_size"),
    "num_overlap 0": (with_value("inference", "num_overlap", 0), "inference.num_overlap"),
    "batch_size 0": (with_value("inference", "batch_size", 0), "inference.batch_size"),
    "num_channels 0": (with_value("audio", "num_channels", 0), "audio.num_channels"),
    "chunk_size a list": (with_value("audio", "chunk_size", [1, 2]), "audio.chunk_size"),
    "sample_rate a string": (with_value("audio", "sample_rate", "44100"), "audio.sample_rate"),
    "sample_rate a list": (with_value("audio", "sample_rate", [44100]), "audio.sample_rate"),
    "batch_size a float": (with_value("inference", "batch_size", 1.5), "inference.batch_size"),
    "dim a string": (with_value("model", "dim", "big"), "model.dim"),
    "target a list": (with_value("training", "target_instrument", ["vocals"]), "training.target_instrument"),
    "model a list": ({**base_config(), "model": [1, 2]}, "'model'"),
    "no model section": ({k: v for k, v in base_config().items() if k != "model"}, "'model'"),
    "audio a list": ({**base_config(), "audio": [1, 2]}, "'audio'"),
    "not a mapping": (["just", "a", "list"], "mapping"),
    "a plain string": ("hello", "mapping"),
}


def duplicate_instruments():
    data = base_config()
    data["training"].update(instruments=["vocals", "vocals"], target_instrument=None)
    data["model"]["num_stems"] = 2
    return data


BAD_CONFIGS["instruments twice"] = (duplicate_instruments(), "training.instruments")


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_values_are_one_config_error_naming_file_and_key(tmp_path, case):
    data, key = BAD_CONFIGS[case]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        streamer.load_config(path)
    msg = str(err.value)
    assert str(path) in msg and key in msg and "\n" not in msg


@pytest.fixture
def tiny_ckpt(tmp_path):
    cfg = streamer.load_config(write_yaml(tmp_path / "tiny.yaml"))
    torch.manual_seed(0)
    path = tmp_path / "tiny.ckpt"
    torch.save(streamer.build_model(cfg).state_dict(), path)
    return path


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_through_the_cli_is_one_error_line(tmp_path, tiny_ckpt, capsys, case):
    data, key = BAD_CONFIGS[case]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    code, _, err = run_cli(capsys, ["inspect", tiny_ckpt, "--config", path])
    assert_one_error_line(code, err, path, key)


def test_config_values_keep_their_natural_meaning(tmp_path):
    data = base_config()
    data["training"].update(use_amp=False)
    data["inference"].update(normalize=True, chunk_size=11025, num_overlap=4, batch_size=3)
    data["model"]["stereo"] = False
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = streamer.load_config(path)
    assert cfg.use_amp is False and cfg.normalize is True and cfg.channels == 1
    assert (cfg.chunk_size, cfg.num_overlap, cfg.batch_size) == (11025, 4, 3)
    data = base_config()
    data["inference"].update(chunk_size=None, num_overlap=None)  # null: not given, the defaults
    data["training"]["use_amp"] = None
    path.write_text(yaml.safe_dump(data))
    cfg = streamer.load_config(path)
    assert (cfg.chunk_size, cfg.num_overlap, cfg.use_amp) == (22050, 2, True)


@pytest.fixture
def four_path(tmp_path):
    return write_yaml(tmp_path / "model.yaml", stems=("vocals", "drums", "bass", "other"), target=None,
                      extra_model={"num_stems": 4}, chunk_size=8820)


def write_rig(tmp_path, data):
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_rig_gain_minus_infinity_is_silence(tmp_path, four_path):
    rig = write_rig(tmp_path, {"model": {"config": four_path.name},
                               "stems": {"vocals": {"gain_db": float("-inf")}},
                               "buses": {"main": {"gain_db": float("-inf")}, "monitor": {}}})
    assert "-.inf" in rig.read_text()
    sep = StemSeparator.from_rig(rig)
    assert sep.stems["vocals"].gain_db == -math.inf and sep.mixer["main"].gain_db == -math.inf
    x = noise((2, 6000))
    sep(x, RATE)  # ramps down
    assert not np.any(sep(x, RATE))


@pytest.mark.parametrize("where,values,key", [
    ("stems", {"vocals": {"gain_db": float("nan")}}, "stems.vocals.gain_db"),
    ("stems", {"vocals": {"fader": float("nan")}}, "stems.vocals.fader"),
    ("stems", {"vocals": {"gain_db": float("inf")}}, "stems.vocals.gain_db"),
    ("stems", {"vocals": {"mute": "false"}}, "stems.vocals.mute"),
    ("stems", {"vocals": {"solo": "true"}}, "stems.vocals.solo"),
    ("stems", {"vocals": {"mute": 2}}, "stems.vocals.mute"),
    ("buses", {"main": {"gain_db": float("nan")}}, "buses.main.gain_db"),
    ("buses", {"main": {"vocals": {"fader": float("nan")}}}, "buses.main.vocals.fader"),
    ("engine", {"window": float("inf")}, "engine.window"),
    ("engine", {"hop": float("nan")}, "engine.hop"),
    ("engine", {"residual": 5}, "engine.residual"),
    ("engine", {"residual": True}, "engine.residual"),
])
def test_bad_rig_values_name_the_file_and_key(tmp_path, four_path, where, values, key):
    rig = write_rig(tmp_path, {"model": {"config": four_path.name}, where: values})
    with pytest.raises(RigError) as err:
        StemSeparator.from_rig(rig)
    msg = str(err.value)
    assert str(rig) in msg and key in msg and "\n" not in msg


def test_mixer_controls_refuse_wrong_types_and_nan():
    mixer = StemMixer(["vocals", "other"], RATE)
    vocals = mixer.stems["vocals"]
    for value in (float("nan"), "0.5", None, True):
        with pytest.raises(SettingsError, match=r"vocals: fader must be a number from 0 to 1"):
            vocals.fader = value
    with pytest.raises(SettingsError, match="fader"):
        fader_to_db(float("nan"))
    for value in ("-6", None, True, [1]):
        with pytest.raises(SettingsError, match="vocals: gain_db must be a number"):
            vocals.gain_db = value
    for value in ("false", "true", 2, 0.5, None):
        with pytest.raises(SettingsError, match="vocals: mute must be true or false"):
            vocals.mute = value
        with pytest.raises(SettingsError, match="vocals: solo must be true or false"):
            vocals.solo = value
    with pytest.raises(SettingsError, match="bus main: gain_db must be a number"):
        mixer["main"].gain_db = "0"
    assert vocals.mute is False and vocals.solo is False and vocals.gain_db == 0.0
    # natural meanings: -inf dB and fader 0 are silence; OSC toggles send 1/0 or 1.0/0.0
    vocals.gain_db = -math.inf
    assert vocals.gain_db == -math.inf
    vocals.fader = 0.75
    assert vocals.gain_db == pytest.approx(0.0)
    vocals.fader = np.float32(0.0)
    assert vocals.gain_db == -math.inf
    vocals.mute = 1.0
    assert vocals.mute is True
    vocals.mute = np.bool_(False)
    assert vocals.mute is False
    vocals.solo = 1
    assert vocals.solo is True


@pytest.mark.parametrize("params,message", [
    ({"room_size": 5}, "stems.vocals.effects[0].room_size: 5 is out of range for Reverb"),
    ({"room_size": float("nan")}, "stems.vocals.effects[0].room_size: expected a finite number"),
])
def test_item14_rig_plugin_parameter_out_of_range_names_file_stem_and_key(tmp_path, params, message):
    import yaml

    from bridge import StemSeparator
    from bridge.plugin.rig import RigError
    from streamer.assets import DEMO_CONFIG

    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump({"model": {"config": DEMO_CONFIG},
                                    "stems": {"vocals": {"effects": [{"plugin": "Reverb", **params}]}}}))
    with pytest.raises(RigError) as err:
        StemSeparator.from_rig(path)
    assert str(path) in str(err.value) and message in str(err.value)

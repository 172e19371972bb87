"""Hardening, second round (issue 28), items 8 and 11: YAML files within limits, atomic checkpoints,
effect chains shared between stems, gain ramps that end on time, --trust-checkpoint for bench and train.

Item 8 runs ``bridge.cli.main`` in this process (imports warmed first, so the clock measures the loading),
with tracemalloc measuring the peak of what Python allocated during the call.
"""
import os
import time
import tracemalloc

import numpy as np
import pytest
import yaml

from bridge.cli import main
from streamer.errors import ConfigError

from conftest import REPO, write_yaml

DEMO_CONFIG = REPO / "streamer" / "assets" / "demo" / "demo_bs_roformer_64x2.yaml"
MSST_CONFIGS = sorted((REPO / "tests" / "data" / "msst-configs").rglob("*.yaml"))


# ---------------------------------------------------------------- item 8: YAML files within limits
def laughs(levels=9, width=10, anchor_key="scenes"):
    """A 'billion laughs' rig under valid keys: width**levels strings behind stems.vocals.gain_db."""
    lines = [f"model: {{config: {DEMO_CONFIG}}}", f"{anchor_key}:",
             '  l0: &l0 [' + ",".join(['"lol"'] * width) + ']']
    for i in range(1, levels):
        lines.append(f"  l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * width) + "]")
    lines += ["stems:", f"  vocals: {{gain_db: *l{levels - 1}}}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def warm():
    """Import what `stemstream live --rig` imports, so the timed call measures the rig, not the imports."""
    import bridge.cli.live  # noqa: F401
    import bridge.plugin.separator  # noqa: F401
    import streamer.inference.loader  # noqa: F401
    main(["live", "--rig", str(REPO / "configs" / "rigs" / "missing.yaml"), "--no-ui"])


def run_rig(path, capsys, argv=None, memory=True):
    """`stemstream live --rig PATH`, run twice: timed (CPU time), then under tracemalloc (which slows Python down
    several times) for the peak MB it allocates. (exit status, stderr lines, seconds, peak MB)."""
    argv = argv or ["live", "--rig", str(path), "--no-ui", "--seconds", "1"]
    capsys.readouterr()
    start = time.process_time()    # CPU seconds: other jobs on a loaded machine do not count
    code = main(argv)
    seconds = time.process_time() - start
    err = capsys.readouterr().err.strip().splitlines()
    peak = 0.0
    if memory:
        tracemalloc.start()
        try:
            assert main(argv) == code
        finally:
            peak = tracemalloc.get_traced_memory()[1] / 1e6
            tracemalloc.stop()
        assert capsys.readouterr().err.strip().splitlines() == err
    return code, err, seconds, peak


def assert_one_short_error(code, err, seconds, peak, *words):
    assert code == 1, err
    assert len(err) == 1 and err[0].startswith("error:"), [line[:200] for line in err]
    assert len(err[0]) < 400, err[0][:400]
    for word in words:
        assert word in err[0], err[0]
    assert seconds < 1.5, f"{seconds:.2f} s of CPU"
    assert peak < 64, f"{peak:.0f} MB allocated"


def test_billion_laughs_rig_is_refused_quickly_in_one_short_line(tmp_path, capsys, warm):
    path = tmp_path / "laughs.yaml"
    path.write_text(laughs())
    code, err, seconds, peak = run_rig(path, capsys)
    assert_one_short_error(code, err, seconds, peak, str(path), "aliases", "billion laughs")


def test_huge_rig_is_refused_unread(tmp_path, capsys, warm):
    path = tmp_path / "huge.yaml"
    with open(path, "w") as fh:
        fh.write(f"model: {{config: {DEMO_CONFIG}}}\nscenes:\n")
        line = "".join(f"  s{i}: {{vocals: {{mute: true}}}}\n" for i in range(1000))
        for _ in range(2000):     # about 60 MB
            fh.write(line)
    assert path.stat().st_size > 50e6
    code, err, seconds, peak = run_rig(path, capsys)
    assert_one_short_error(code, err, seconds, peak, "MiB", "at most 64 KiB")


def test_endless_rig_is_refused(capsys, warm):
    code, err, seconds, peak = run_rig("/dev/zero", capsys)
    assert_one_short_error(code, err, seconds, peak, "larger than 64 KiB")


@pytest.mark.parametrize("name,text,words", [
    ("recursive", "model: {config: CFG}\nscenes: {a: &a [*a]}\n", ["recursive alias"]),
    ("deep", "model: {config: CFG}\nscenes: {a: " + "[" * 2000 + "]" * 2000 + "}\n", ["nested more than 64"]),
    ("deep_aliases", "model: {config: CFG}\nscenes:\n" + "".join(
        f"  a{i}: &a{i} [[[[[[[[[[{'*a%d' % (i - 1) if i else 1}]]]]]]]]]]\n" for i in range(12)),
     ["nested more than 64", "aliases followed"]),
    ("long_value", "model: {config: CFG}\nstems: {vocals: {gain_db: '" + "x" * 50_000 + "'}}\n",
     ["gain_db: expected a number", "(50000 characters)"]),
    ("long_key", "model: {config: CFG}\nstems:\n  vocals:\n    ? '" + "k" * 50_000 + "'\n    : 1\n",
     ["stems.vocals: unknown key 'kkkk"]),
    ("many_keys", "model: {config: CFG}\nengine: {" + ", ".join(f"k{i}: 1" for i in range(1000)) + "}\n",
     ["and 995 more"]),
    ("long_int", "model: {config: CFG}\nstems: {vocals: {gain_db: " + "9" * 50_000 + "}}\n",
     ["a value cannot be read"]),
    ("long_path", "model: {config: '" + "p" * 50_000 + "'}\n", ["model.config: expected a file path"]),
    ("long_bus", "model: {config: CFG}\nbuses:\n  ? '" + "b" * 50_000 + "'\n  : {vocals: {mute: 3}}\n",
     ["buses.'bbbb", "mute: expected true or false"]),
    ("long_output", "model: {config: CFG}\noutput: '" + "o" * 50_000 + "'\n", ["output: expected a name"]),
    ("bad_yaml", "model: {config: CFG}\nstems: [" + "x, " * 5_000 + "\n", ["is not valid YAML", "line"]),
    ("binary", None, ["not UTF-8 text"]),
])
def test_rig_abuse_is_one_short_error(tmp_path, capsys, warm, name, text, words):
    path = tmp_path / f"{name}.yaml"
    if text is None:
        path.write_bytes(bytes(range(256)) * 100)
    else:
        path.write_text(text.replace("CFG", str(DEMO_CONFIG)))
    code, err, seconds, peak = run_rig(path, capsys, memory=name in ("recursive", "deep_aliases", "long_int"))
    assert_one_short_error(code, err, seconds, peak, *words)


def test_billion_laughs_config_is_refused(tmp_path, capsys, warm):
    """The same limits hold for an MSST config (`--config`), whichever command reads it."""
    import torch

    ckpt = tmp_path / "x.ckpt"
    torch.save({"w": torch.zeros(1)}, ckpt)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(laughs().replace("scenes:", "training:").replace("stems:\n  vocals: {gain_db:", "model: {dim:"))
    code, err, seconds, peak = run_rig(cfg, capsys, ["inspect", str(ckpt), "--config", str(cfg)])
    assert_one_short_error(code, err, seconds, peak, str(cfg), "aliases")


def test_config_values_are_quoted_short(tmp_path):
    cfg = write_yaml(tmp_path / "c.yaml", extra_model={"stereo": "y" * 50_000})
    with pytest.raises(ConfigError) as info:
        from streamer.msst.config import load_config
        load_config(cfg)
    assert "model.stereo must be true or false" in str(info.value) and len(str(info.value)) < 400


def test_real_msst_configs_load_unchanged():
    """Every real config (``!!python/tuple`` tags included) loads to what PyYAML itself reads."""
    from streamer.msst.config import read_yaml

    class Reference(yaml.SafeLoader):
        pass

    Reference.add_constructor("tag:yaml.org,2002:python/tuple",
                              lambda loader, node: tuple(loader.construct_sequence(node, deep=True)))
    assert len(MSST_CONFIGS) >= 10
    tuples = 0
    for path in MSST_CONFIGS:
        with open(path) as fh:
            expected = yaml.load(fh, Loader=Reference)
        got = read_yaml(path)
        assert got == expected, path
        tuples += isinstance(got["model"].get("multi_stft_resolutions_window_sizes"), tuple)
    assert tuples >= 5


def test_anchors_and_merges_within_bounds_still_work(tmp_path):
    from streamer.msst.yamlsafe import load_yaml

    path = tmp_path / "mapping.yaml"
    path.write_text("defaults: &d {channel: 1, curve: linear}\n"
                    "cc7: {<<: *d, target: /bus/main/gain}\n"
                    "cc8: {<<: *d, target: /bus/monitor/gain, channel: 2}\n"
                    "list: &l [1, 2, 3]\nagain: *l\n")
    data = load_yaml(path, "mapping file")
    assert data["cc7"] == {"channel": 1, "curve": "linear", "target": "/bus/main/gain"}
    assert data["cc8"]["channel"] == 2 and data["again"] == [1, 2, 3]
    # the caller names the kind of file and the error class
    path.write_text("a: &a [*a]\n")
    with pytest.raises(KeyError, match="mapping.yaml: an alias refers to a value that contains it"):
        load_yaml(path, "mapping file", error=KeyError)


def test_no_other_yaml_loader_in_runtime_code():
    """Every YAML file a user gives goes through streamer.msst.yamlsafe.load_yaml."""
    offenders = []
    for top in ("bridge", "streamer"):
        for root, _, files in os.walk(REPO / top):
            for name in files:
                if name.endswith(".py") and name != "yamlsafe.py":
                    text = open(os.path.join(root, name)).read()
                    for needle in ("yaml.safe_load", "yaml.load(", "yaml.full_load", "yaml.unsafe_load",
                                   "yaml.load_all", "yaml.safe_load_all"):
                        if needle in text:
                            offenders.append(f"{name}: {needle}")
    assert not offenders, offenders


# ---------------------------------------------------------------- item 11a: training writes its files atomically
def make_songs(folder, count, seconds):
    """Songs in MUSDB layout from the numpy clip generator (as tests/lab does)."""
    import soundfile as sf

    from streamer.lab.testsignals import generated_clip

    for i in range(count):
        mix, stems = generated_clip(seconds, 44100, seed=i)
        d = folder / f"song{i}"
        d.mkdir(parents=True)
        sf.write(d / "mixture.wav", mix.T, 44100, subtype="FLOAT")
        for name, data in stems.items():
            sf.write(d / f"{name}.wav", data.T, 44100, subtype="FLOAT")
    return folder


def test_training_checkpoints_are_fsynced_and_renamed_and_survive_a_failed_write(tmp_path, monkeypatch):
    """A write that fails half-way (a real EFBIG from RLIMIT_FSIZE, as a full disk would give) leaves the
    previous model.ckpt whole; a normal save is flushed to the disk before it is renamed into place."""
    import resource
    import signal

    import torch

    import streamer
    config = write_yaml(tmp_path / "four.yaml", stems=("vocals", "drums", "bass", "other"), target=None,
                        extra_model={"num_stems": 4}, chunk_size=8820)
    songs = make_songs(tmp_path / "train", 1, seconds=0.5)
    out = tmp_path / "run"
    args = ["train", str(songs), "--config", str(config), "--out", str(out), "--val-every", "1", "--steps", "1",
            "--segment", "0.25", "--batch-size", "1", "--device", "cpu", "--no-augment", "--ema", "0"]

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", os.fspath(a))), real_replace(a, b))[1])
    assert main(args) == 0
    monkeypatch.undo()
    for name in ("model.ckpt", "last.ckpt"):
        part = str(out / name) + ".part"
        assert ("fsync", part) in events and ("replace", part) in events, (name, events)
        assert events.index(("fsync", part)) < events.index(("replace", part))
    before = torch.load(out / "model.ckpt", weights_only=True)
    assert (out / "model.ckpt").stat().st_size > 1_000_000

    # a save that fails half-way (EFBIG, as a full disk would) keeps the previous checkpoint whole
    from streamer.lab.train import save_checkpoint

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, hard))   # any file beyond 1 MB: EFBIG
    try:
        with pytest.raises(OSError, match="File too large") as info:
            save_checkpoint({k: v + 1 for k, v in before.items()}, str(out / "model.ckpt"))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert info.value.filename == str(out / "model.ckpt")       # the command line's one error line names it
    after = torch.load(out / "model.ckpt", weights_only=True)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert not [p.name for p in out.iterdir() if p.name.endswith(".part")]
    streamer.load_checkpoint(streamer.build_model(streamer.load_config(out / "config.yaml")), out / "model.ckpt")


# ---------------------------------------------------------------- item 11b: one effect chain, one stem
def test_an_effect_chain_or_plugin_cannot_be_shared_by_two_stems(tmp_path):
    from pedalboard import Chain as NativeChain
    from pedalboard import Gain, Pedalboard, Reverb
    from standins import IdentityModel

    import streamer
    from bridge import StemSeparator
    from bridge.plugin.chain import Chain
    from streamer.errors import SettingsError

    cfg = streamer.load_config(write_yaml(tmp_path / "four.yaml", stems=("vocals", "drums", "bass", "other"),
                                          target=None, extra_model={"num_stems": 4}, chunk_size=4410))
    sep = StemSeparator(IdentityModel(4), cfg, latency="low")
    reverb = Reverb(room_size=0.8)
    chain = Pedalboard([reverb])
    sep.stems["vocals"].effects = chain
    drums = Pedalboard([Gain(-3)])
    sep.stems["drums"].effects = drums
    with pytest.raises(SettingsError, match="effects for 'drums': this chain is already in the effects of 'vocals'"):
        sep.stems["drums"].effects = chain
    for shared in (Pedalboard([Gain(-6), reverb]), Pedalboard([NativeChain([reverb])]), Chain([Gain(1), reverb])):
        with pytest.raises(SettingsError, match="its plugin Reverb is already in the effects of 'vocals'"):
            sep.stems["bass"].effects = shared
    assert sep.stems["drums"].effects is drums and sep.stems["bass"].effects is None   # nothing changed
    sep.stems["vocals"].effects = chain                                                 # its own stem: fine
    sep.stems["bass"].effects = Pedalboard([Reverb(room_size=0.8)])                     # a chain of its own
    x = (np.random.default_rng(0).standard_normal((2, 4410)) * 0.1).astype(np.float32)
    assert np.isfinite(sep(x, 44100)).all()


# ---------------------------------------------------------------- item 11c: every change ends within one ramp time
@pytest.mark.parametrize("start_db,change", [(24.0, {"mute": True}), (24.0, {"gain_db": -float("inf")}),
                                             (-float("inf"), {"gain_db": 24.0}), (0.0, {"gain_db": -1.0}),
                                             (-60.0, {"fader": 1.0})])
def test_every_gain_change_reaches_its_target_within_one_ramp_time(start_db, change):
    from bridge.mix.mixer import StemMixer, db_to_gain

    mixer = StemMixer(["vocals", "drums"], 44100, ramp_ms=10.0)
    ramp = 441
    dc = np.ones((2, 2, 2048), np.float32)
    dc[1] = 0
    out = np.zeros((1, 2, 2048), np.float32)
    mixer.stems["vocals"].gain_db = start_db
    mixer.process(dc, out)
    assert out[0, 0, -1] == np.float32(db_to_gain(start_db))
    for key, value in change.items():
        setattr(mixer.stems["vocals"], key, value)
    target = np.float32(mixer.buses["main"].targets()[0])
    mixer.process(dc, out)
    gain = out[0, 0]
    assert (gain[ramp - 1:] == target).all(), f"at 10 ms: {gain[ramp - 1]}, target {target}"
    assert (gain[:ramp - 1] != target).all()                       # a ramp, not a jump: it takes the 10 ms
    steps = np.abs(np.diff(gain[:ramp]))
    assert steps.max() <= abs(target - db_to_gain(start_db)) / ramp * 1.1 + 1e-6    # linear, no click


# ---------------------------------------------------------------- item 11d: --trust-checkpoint for bench and train
@pytest.fixture(scope="module")
def pickled_checkpoint(tmp_path_factory):
    """A checkpoint holding, beside its weights, an object that only a full unpickle can rebuild."""
    import argparse

    import torch

    import streamer

    root = tmp_path_factory.mktemp("pickled")
    cfg = write_yaml(root / "four.yaml", stems=("vocals", "drums", "bass", "other"), target=None,
                     extra_model={"num_stems": 4}, chunk_size=8820)
    model = streamer.build_model(streamer.load_config(cfg))
    torch.save({"state_dict": model.state_dict(), "args": argparse.Namespace(lr=1e-3)}, root / "pickled.ckpt")
    return cfg, root / "pickled.ckpt"


@pytest.mark.parametrize("command", ["bench", "train"])
def test_bench_and_train_load_weights_only_unless_trusted(tmp_path, capsys, pickled_checkpoint, command):
    cfg, ckpt = pickled_checkpoint
    if command == "bench":     # --block longer than the stream: refused right after the model is loaded
        argv = ["bench", "--config", str(cfg), "--checkpoint", str(ckpt), "--seconds", "0.01", "--block", "4096"]
        after_load = "--block 4096 frames is longer than the 0.01 s stream"
    else:                      # a segment shorter than the loss's STFT: refused right after the model is loaded
        songs = make_songs(tmp_path / "train", 1, seconds=0.5)
        argv = ["train", str(songs), "--config", str(cfg), "--init", str(ckpt), "--out", str(tmp_path / "out"),
                "--segment", "0.001", "--device", "cpu"]
        after_load = "is too short for the model"
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "refused to unpickle" in err and "argparse.Namespace" in err and "--trust-checkpoint" in err, err
    assert main(argv + ["--trust-checkpoint"]) == 1
    err = capsys.readouterr().err
    assert after_load in err and "unpickle" not in err, err

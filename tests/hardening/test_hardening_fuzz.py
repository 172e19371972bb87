"""Property-based fuzzing of the whole command line (issue 15): whatever a user types, ``stemstream`` ends with
exit status 0, 1 (one ``error:`` line), 2 (argparse's usage error) or 130, never a Python traceback, never
hangs, and leaves no partial output (no ``*.part*`` file or ``.NAME.partXXXX`` folder) and no zero-frame
audio file.

Grammar. The command lines are generated from ``bridge.cli.main.build_parser()``: for every subcommand, its
positionals and options with their nargs, choices, flags (store_true) and types; the number types of
``bridge.cli.common`` carry their limits, which add "limit + 1" to the extremes. A flag added later is fuzzed
without touching this file. Each argument is drawn from:

* valid values: by the argument's name where it names a known thing (config, checkpoint, inputs, data,
  device, ...), else small numbers / the fixture's files;
* wrong types: "abc", "", "1.5" for a whole number, "1,5" for a number;
* extremes: 0, -1, 1e9, 1e400 (inf), nan, inf, -inf, 1e-12, 2**63, a 50-digit number, the limit + 1;
* paths: a missing file, an empty folder, a tiny WAV, a tiny config, a tiny checkpoint, an empty file,
  random bytes, and (for output paths) a fresh folder, a nested one, an existing file, an existing folder.
  Every example runs in its own folder holding a copy of the fixture's files, so an output path can never
  damage another example's inputs; no system path is drawn (the tests may run as root).

Each example has a mode: every value valid (the command really runs), exactly one argument wrong (its own
check must catch it, whatever the others), or every value from the whole pool (required options now and
then missing).

Bounds (documented choices that keep ``make test`` fast and deterministic):

* commands run in this process (``main(argv)``, argparse's ``SystemExit`` is the exit status) under a
  ``signal.setitimer`` alarm of ``LIMIT`` seconds per example: a process per example would cost ~2 s of
  imports each; torch's thread count is restored after each example;
* valid draws of the costly arguments are small: bench streams 0.3 s through the thread worker (the process
  worker has its own tests and costs a process start), train runs 1-2 steps, synth makes one song of 0.5 s,
  bench-model times 1-2 repeats of short chunks, bench-mixer 10-100 blocks; the options whose defaults are
  long (bench --seconds 60, demo's bundled model and song, bench-model's chunk lengths, train --steps 2000,
  synth --seconds 20) are always given;
* bench-gpu never gets --dry-run (its CPU rehearsal takes ~30 s) and is not fuzzed at all on a machine with
  CUDA (there it would run the real check for minutes);
* a huge train --steps is a valid request for a long training, so it is not among train's wrong values;
* hypothesis: ``derandomize=True`` (a fixed seed from the test's name: the same examples in every run),
  ``EXAMPLES`` (8) examples per command, 80 in all, ``deadline=None``, no example database. For a deeper
  local run: ``STEMSTREAM_FUZZ_EXAMPLES=300`` (about 4 minutes here).

Known issue, not drawn until fixed: a binary file as --config (see BINARY and test_known_issue_binary_config).
"""
import argparse
import contextlib
import io
import math
import os
import shutil
import signal
import tempfile
import traceback

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import streamer
from bridge.cli import main
from bridge.cli.main import build_parser
from streamer.audio import AUDIO_EXTENSIONS

from conftest import randomize, write_yaml

RATE = 44100
LIMIT = 20.0        # seconds per example; a refused argument takes milliseconds, a valid tiny run one or two
EXAMPLES = int(os.environ.get("STEMSTREAM_FUZZ_EXAMPLES", "8"))  # per command: 80 in all; more for a deeper local run

# ---------------------------------------------------------------- the fixture's files, copied into each example
IN = "{work}/in"
PATHS = {  # valid values of path arguments, by dest
    "config": [f"{IN}/tiny.yaml"], "checkpoint": [f"{IN}/tiny.ckpt"], "init": [f"{IN}/tiny.ckpt"],
    "inputs": [f"{IN}/song.wav"], "data": [f"{IN}/data"], "val": [f"{IN}/data"], "song": [f"{IN}/demo_song"],
}
OUTPUTS = {"out": ["{work}/out", "{work}/out/sub"], "plot": ["{work}/out/plot.png", "{work}/plot", "{work}/x.foo"]}
BAD_PATHS = [f"{IN}/missing.wav", f"{IN}/folder", f"{IN}/song.wav", f"{IN}/tiny.yaml", f"{IN}/tiny.ckpt",
             f"{IN}/empty.bin", f"{IN}/garbage.bin", f"{IN}/data"]
# Known issue (not this file's to fix): a binary file as --config ends in a UnicodeDecodeError traceback from
# streamer/msst/config.py read_yaml; until that is fixed binary files are not drawn for --config, and
# test_known_issue_binary_config below shows the exact command lines.
BINARY = {f"{IN}/song.wav", f"{IN}/tiny.ckpt", f"{IN}/garbage.bin"}
BAD_PATHS_FOR = {"config": [p for p in BAD_PATHS if p not in BINARY]}
BAD_OUTPUTS = ["{work}/afile", "{work}/adir", "{work}/afile/sub", ""]
STRINGS = {  # other string arguments: valid values, then wrong ones
    "device": (["cpu", "auto"], ["foo", "mps", "cuda", "cuda:7", "meta", ""]),
    "subtype": (["PCM_16", "FLOAT", "PCM_24"], ["FOO", ""]),
    "setting": (["1,0.25,0.25", "0.5,0.1,0.1"], ["1,2,0.5", "nan,0.1,0.1", "0.01,0.005,0", "1e9,1,1", "a,b,c", "1,2"]),
}

# ---------------------------------------------------------------- bounds on valid draws (see the docstring)
VALID = {  # (command or None for any, dest) -> valid values
    (None, "threads"): ["1", "2"], (None, "seed"): ["0", "3"], (None, "block"): ["256", "1", "4096"],
    (None, "batch_size"): ["1", "2"], (None, "seconds"): ["0.3", "0.5"],
    ("bench", "worker"): ["thread"], ("bench", "window"): ["0.5", "1"], ("bench", "hop"): ["0.1", "0.25"],
    ("bench", "lookahead"): ["0", "0.1"], ("bench", "crossfade_ms"): ["0", "5"], ("bench", "allowance"): ["0", "0.1"],
    ("bench-model", "seconds"): ["0.1", "0.5"], ("bench-model", "repeats"): ["1", "2"],
    ("bench-mixer", "blocks"): ["10", "100"], ("bench-mixer", "stems"): ["1", "4"],
    ("bench-mixer", "buses"): ["1", "2"],
    ("bench-gpu", "budget"): ["5"], ("live", "seconds"): ["0.3"], ("live", "blocksize"): ["256", "512"],
    ("live", "osc"): ["0"],
    ("separate", "chunk_size"): ["22050", "4096"], ("separate", "num_overlap"): ["1", "2", "4"],
    ("synth", "count"): ["1"], ("synth", "seconds"): ["0.5"],
    ("train", "steps"): ["1", "2"], ("train", "val_every"): ["1"], ("train", "segment"): ["0.1", "0.5"],
    ("train", "val_seconds"): ["0.5"], ("train", "lr"): ["0.001"],
}
ALWAYS = {  # options always given, so that their long defaults never run
    "bench": {"seconds", "config", "worker"}, "demo": {"config", "song"}, "bench-model": {"seconds", "repeats"},
    "bench-mixer": {"blocks"}, "live": {"seconds"}, "train": {"steps", "val_every", "segment"}, "synth": {"seconds", "count"},
}
NEVER = {("bench-gpu", "dry_run")}
NO_HUGE = {("train", "steps")}  # a huge step count is a valid request for a long training, not a wrong value

INT_EXTREMES = ["0", "-1", "1000000000", str(2**63), "9" * 50]
FLOAT_EXTREMES = ["0", "-1", "1e9", "1e400", "nan", "inf", "-inf", "1e-12"]
INT_WRONG = ["abc", "", "1.5", "1e3"]
FLOAT_WRONG = ["abc", "", "1,5"]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


SUBPARSERS = _subparsers()
# serve is not fuzzed: a valid command line starts Ray and serves until stopped (its refusals are tested in
# tests/remote/test_serve_cli.py)
COMMANDS = [name for name in SUBPARSERS if not (name == "bench-gpu" and torch.cuda.is_available()) and name != "serve"]


def _kind(action: argparse.Action):
    t = action.type
    if t is int or getattr(t, "kind", None) is int:
        return int
    if t is float or getattr(t, "kind", None) is float:
        return float
    return str


def _pools(command: str, action: argparse.Action) -> tuple[list[str], list[str]]:
    """(valid values, wrong ones) of ``action``: wrong types, extremes, bad paths and bogus choices."""
    dest = action.dest
    valid = VALID.get((command, dest)) or VALID.get((None, dest))
    if action.choices is not None:
        return valid or [str(c) for c in action.choices], ["bogus"]
    kind = _kind(action)
    if kind in (int, float):
        extremes = list(INT_EXTREMES if kind is int else FLOAT_EXTREMES)
        if (command, dest) in NO_HUGE:
            extremes = [v for v in extremes if not v.lstrip("-").isdigit() or len(v) < 4]
        top = getattr(action.type, "maximum", None)
        if top is not None:
            extremes.append(str(int(top) + 1) if kind is int else repr(top * 1.5))
        wrong = INT_WRONG if kind is int else FLOAT_WRONG
        return valid or (["1", "2", "3"] if kind is int else ["0.5", "1"]), extremes + wrong
    if dest in OUTPUTS:
        return OUTPUTS[dest], BAD_OUTPUTS
    if dest in PATHS:
        return PATHS[dest], BAD_PATHS_FOR.get(dest, BAD_PATHS)
    if dest in STRINGS:
        return STRINGS[dest]
    # an argument this file does not know: anything of the fixture's, or words
    return ["{work}/out", "abc"], BAD_PATHS + ["", "0", "-1", "nan"]


def _values(draw, command: str, action: argparse.Action, mode: str) -> list[str]:
    """The values one occurrence of ``action`` takes: all valid ("valid"), all wrong ("bad") or either, mostly
    valid ("chaos"); valid values come first so that hypothesis shrinks towards them."""
    valid, bad = _pools(command, action)
    value = st.sampled_from({"valid": valid, "bad": bad, "chaos": valid * 3 + bad}[mode])
    nargs = action.nargs
    if nargs in (None, "?") or isinstance(nargs, int) and nargs == 1:
        return [draw(value)]
    if isinstance(nargs, int):
        return [draw(value) for _ in range(nargs)]
    low = 1 if nargs == "+" or mode == "bad" else 0
    return draw(st.lists(value, min_size=low, max_size=2))


@st.composite
def command_line(draw, command: str) -> list[str]:
    """A command line for ``command`` from its parser's grammar, positionals first, then options in order.

    Each example has a mode: "valid" (every value valid: the command runs), "one" (exactly one argument
    wrong: its own check must catch it) or "chaos" (every value from the whole pool, required options now
    and then missing)."""
    parser = SUBPARSERS[command]
    mode = draw(st.sampled_from(["valid", "one", "one", "chaos"]), label="mode")
    chosen = []  # (option strings or [], action, repeats)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or (command, action.dest) in NEVER:
            continue
        if not action.option_strings:
            chosen.append(([], action, 1))
            continue
        name = max(action.option_strings, key=len)
        if action.nargs == 0:  # store_true and friends
            if draw(st.booleans()):
                chosen.append(([name], action, 0))
            continue
        if action.dest in ALWAYS.get(command, ()):
            given_ = True
        elif action.required:
            given_ = mode != "chaos" or draw(st.sampled_from([True] * 9 + [False]))  # now and then missing
        else:
            given_ = draw(st.sampled_from([True, False, False]))
        if given_:
            repeats = draw(st.integers(1, 2)) if isinstance(action, argparse._AppendAction) else 1
            chosen.append(([name], action, repeats))
    takes_values = [i for i, (_, action, repeats) in enumerate(chosen) if repeats]
    wrong = draw(st.sampled_from(takes_values), label="wrong") if mode == "one" and takes_values else None
    positionals, options = [], []
    for i, (name, action, repeats) in enumerate(chosen):
        if not repeats:
            options.append(name)
        kind = "chaos" if mode == "chaos" else "bad" if i == wrong else "valid"
        for _ in range(repeats):
            (options if name else positionals).append(name + _values(draw, command, action, kind))
    return [command] + [v for part in positionals + options for v in part]


# ---------------------------------------------------------------- running one example
class Hung(BaseException):
    """The alarm went off: the example ran past LIMIT seconds."""


_ALARM = {"armed": False, "fired": False}


def _alarm(signum, frame):
    if _ALARM["armed"]:
        _ALARM["fired"] = True
        raise Hung(f"still running after {LIMIT:g} s")


def _run(argv: list[str], work: str) -> tuple[object, str, str]:
    """(exit status or "hung"/"traceback", stdout, stderr) of ``stemstream ARGV`` run in ``work``.

    The alarm repeats every second after LIMIT: an exception raised where Python only prints it (a
    ``__del__``, a weakref callback) would otherwise swallow a one-shot alarm and let a hang run on."""
    out, err = io.StringIO(), io.StringIO()
    threads, cwd = torch.get_num_threads(), os.getcwd()
    old = signal.signal(signal.SIGALRM, _alarm)
    os.chdir(work)  # defaults that write relative paths (demo's out/demo) land in the example's folder
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            _ALARM.update(armed=True, fired=False)
            signal.setitimer(signal.ITIMER_REAL, LIMIT, 1.0)
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code
            except Hung:
                code = "hung"
            except BaseException:  # noqa: BLE001 - the property: nothing escapes main()
                traceback.print_exc()
                code = "traceback"
            finally:
                _ALARM["armed"] = False
                signal.setitimer(signal.ITIMER_REAL, 0)
            if _ALARM["fired"]:
                code = "hung"
    finally:
        signal.signal(signal.SIGALRM, old)
        os.chdir(cwd)
        torch.set_num_threads(threads)
    return code, out.getvalue(), err.getvalue()


def _leftovers(work: str) -> list[str]:
    """Partial output (hidden ``.part`` files or folders) and zero-frame audio files under ``work``."""
    bad = []
    for folder, dirs, files in os.walk(work):
        for name in dirs + files:
            if ".part" in name:
                bad.append(os.path.join(folder, name))
        for name in files:
            path = os.path.join(folder, name)
            if os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS and ".part" not in name:
                try:
                    frames = sf.info(path).frames
                except Exception:  # noqa: BLE001 - the fixture's non-audio .wav is not output
                    continue
                if frames == 0:
                    bad.append(f"{path} (0 frames)")
    return bad


@pytest.fixture(scope="module")
def fixture_files(tmp_path_factory):
    """The inputs every example gets a copy of: a tiny model, a song, a MUSDB-style data folder, a demo song
    folder, and files that are not what they claim."""
    root = tmp_path_factory.mktemp("fuzz")
    inputs = root / "in"
    inputs.mkdir()
    cfg = write_yaml(inputs / "tiny.yaml", chunk_size=22050, num_overlap=2, batch_size=2)
    torch.manual_seed(0)
    torch.save(randomize(streamer.build_model(streamer.load_config(cfg))).state_dict(), inputs / "tiny.ckpt")
    rng = np.random.default_rng(0)
    noise = lambda seconds: (rng.standard_normal((int(seconds * RATE), 2)) * 0.1).astype(np.float32)  # noqa: E731
    sf.write(inputs / "song.wav", noise(0.5), RATE, subtype="FLOAT")
    song = inputs / "data" / "song1"
    song.mkdir(parents=True)
    stems = {name: noise(1.0) for name in ("vocals", "other")}
    for name, data in stems.items():
        sf.write(song / f"{name}.wav", data, RATE, subtype="FLOAT")
    sf.write(song / "mixture.wav", sum(stems.values()), RATE, subtype="FLOAT")
    (inputs / "demo_song").mkdir()
    for name in ("vocals", "other"):
        sf.write(inputs / "demo_song" / f"{name}.flac", noise(0.5), RATE)
    (inputs / "folder").mkdir()
    (inputs / "empty.bin").write_bytes(b"")
    # bytes that are no pickle at all (the first one is an invalid opcode), so --trust-checkpoint runs nothing
    (inputs / "garbage.bin").write_bytes(b"\xff" + np.random.default_rng(1).integers(0, 256, 2047, np.uint8).tobytes())
    (root / "work").mkdir()
    return root


@pytest.mark.parametrize("command", COMMANDS)
def test_no_command_line_ends_in_a_traceback_a_hang_or_partial_output(command, fixture_files):
    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def check(data):
        template = data.draw(command_line(command), label="argv")
        work = tempfile.mkdtemp(dir=fixture_files / "work")
        try:
            shutil.copytree(fixture_files / "in", os.path.join(work, "in"))
            os.mkdir(os.path.join(work, "adir"))
            with open(os.path.join(work, "afile"), "w") as fh:
                fh.write("not a folder\n")
            argv = [a.format(work=work) for a in template]
            shown = " ".join(repr(a) if not a or " " in a else a for a in template)
            note(f"stemstream {shown}")
            code, out, err = _run(argv, work)
            assert code != "hung", f"stemstream {shown}: still running after {LIMIT:g} s\n{err[-2000:]}"
            assert code != "traceback" and "Traceback" not in err, f"stemstream {shown}:\n{err[-4000:]}"
            assert code in (0, 1, 2, 130), f"stemstream {shown}: exit status {code!r}\n{err[-2000:]}"
            if code == 1:
                assert err.strip().splitlines()[-1].startswith("error: "), f"stemstream {shown}:\n{err[-2000:]}"
            assert not _leftovers(work), f"stemstream {shown}: left {_leftovers(work)}"
        finally:
            shutil.rmtree(work, ignore_errors=True)

    check()


@pytest.mark.parametrize("config", ["song.wav", "tiny.ckpt", "garbage.bin"])
def test_binary_config_is_one_error(config, fixture_files, tmp_path):
    work = str(tmp_path)
    shutil.copytree(fixture_files / "in", os.path.join(work, "in"))
    argv = ["inspect", f"{work}/in/tiny.ckpt", "--config", f"{work}/in/{config}"]
    code, _, err = _run(argv, work)
    assert code == 1 and "Traceback" not in err, err


def test_the_grammar_is_read_from_the_parser():
    """Every subcommand is fuzzed (bench-gpu only without CUDA) and the number types carry their limits."""
    assert set(COMMANDS) | {"bench-gpu", "serve"} == set(SUBPARSERS)
    block = next(a for a in SUBPARSERS["bench-mixer"]._actions if a.dest == "block")
    assert _kind(block) is int and block.type.maximum >= 4096
    assert all(math.isfinite(float(v)) for values in VALID.values() for v in values if v[0].isdigit())

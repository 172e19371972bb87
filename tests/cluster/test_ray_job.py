"""`stemstream separate --ray` on a real local Ray instance (2 CPUs): a library equal to plain
`separate`, failures recorded, long files split across workers, resuming, and Ray never imported
without --ray."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import soundfile as sf
import torch

import streamer
from bridge.cli.main import main
from conftest import randomize, write_yaml
from cluster_helpers import (RATE, latest, leftovers, library, manifest, plain_separate, separate_args, song,
                             stem_files, tiny_model)

ray = pytest.importorskip("ray", reason="the cluster extra is not installed (pip install 'stemstream[cluster]')")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the module (a job reuses a running instance and leaves it running)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model"))


def test_a_library_equals_plain_separate_and_failures_are_recorded(tmp_path, model, local_ray, capsys):
    cfg, ckpt = model
    lib = library(tmp_path)
    out = tmp_path / "stems"
    rc = main(separate_args([lib], cfg, ckpt, out, "--recursive", "--ray", "--workers", 2))
    printed = capsys.readouterr().out
    assert rc == 1  # the corrupt file failed
    assert "4 separated, 0 already done (skipped), 1 failed" in printed
    assert "failed: " in printed and "corrupt.wav" in printed and "x real time" in printed
    assert "workers busy:" in printed

    records = latest(out)
    corrupt = records[str(lib / "corrupt.wav")]
    assert corrupt["status"] == "failed" and "cannot read audio" in corrupt["error"]
    assert "BytesIO" not in corrupt["error"]
    done = [r for r in records.values() if r["status"] == "done"]
    assert len(done) == 4
    for r in done:
        assert r["hash"].startswith("sha256:") and r["duration"] > 0 and r["seconds"] > 0 and r["error"] is None
        assert r["settings"]["chunk_size"] == 22050 and r["model"].startswith("sha256:")
    assert (out / "sub" / "song1" / "vocals.wav").is_file()  # the library's layout is kept

    # every good file's stems are plain `stemstream separate`'s, bit for bit
    reference = tmp_path / "plain"
    goods = [p for p in sorted(lib.rglob("*")) if p.is_file() and p.name != "corrupt.wav"]
    assert plain_separate(goods, cfg, ckpt, reference) == 0
    ours = stem_files(out)
    theirs = stem_files(reference)
    assert len(theirs) == 8
    for rel, (rate, shape, data) in theirs.items():
        mine = ours[rel.replace("song1", os.path.join("sub", "song1"))]
        assert mine[0] == rate and mine[1] == shape and mine[2] == data, rel
    silent = sf.read(out / "silent" / "vocals.wav")[0]
    assert np.isfinite(silent).all()
    assert not leftovers(out)


@pytest.mark.parametrize("split_seconds", [0.3, 0.55, 1.7])
def test_a_long_file_split_across_workers_equals_the_whole_file(tmp_path, model, local_ray, split_seconds):
    """Ranges of 1, 2 and 6 chunks of 0.5 s with 0.25 s steps: every range boundary lies inside the
    neighbouring chunks' fades; the ranges, read from the file a range at a time and merged in order,
    give plain separate's stems bit for bit (before: to float rounding)."""
    cfg, ckpt = model
    path = tmp_path / "set.wav"
    sf.write(path, song(6.3, 7), RATE, subtype="FLOAT")
    out = tmp_path / "stems"
    assert main(separate_args([path], cfg, ckpt, out, "--ray", "--split-seconds", split_seconds)) == 0
    reference = tmp_path / "plain"
    assert plain_separate([path], cfg, ckpt, reference) == 0
    for stem in ("vocals", "other"):
        got, _ = sf.read(out / "set" / f"{stem}.wav", dtype="float32")
        want, _ = sf.read(reference / "set" / f"{stem}.wav", dtype="float32")
        assert got.shape == want.shape
        assert got.tobytes() == want.tobytes(), stem
    assert latest(out)[str(path)]["status"] == "done"


def test_a_rerun_skips_what_is_done_and_redoes_a_deleted_output(tmp_path, model, local_ray, capsys):
    cfg, ckpt = model
    lib = library(tmp_path, count=2, corrupt=False, silent=False)
    out = tmp_path / "stems"
    args = separate_args([lib], cfg, ckpt, out, "--recursive", "--ray")
    assert main(args) == 0
    capsys.readouterr()
    lines = len(manifest(out))
    before = {p: os.stat(out / p).st_mtime_ns for p in stem_files(out)}

    t0 = time.perf_counter()
    assert main(args) == 0
    assert "0 separated, 2 already done (skipped), 0 failed" in capsys.readouterr().out
    assert time.perf_counter() - t0 < 10
    assert len(manifest(out)) == lines  # nothing written
    assert {p: os.stat(out / p).st_mtime_ns for p in stem_files(out)} == before

    (out / "song0" / "other.wav").unlink()
    assert main(args) == 0
    assert "1 separated, 1 already done (skipped), 0 failed" in capsys.readouterr().out
    after = {p: os.stat(out / p).st_mtime_ns for p in stem_files(out)}
    assert after[os.path.join("sub", "song1", "vocals.wav")] == before[os.path.join("sub", "song1", "vocals.wav")]
    assert (out / "song0" / "other.wav").is_file()
    assert len(manifest(out)) == lines + 1

    # other settings: everything again
    assert main(args + ["--instrumental"]) == 0
    assert "2 separated, 0 already done" in capsys.readouterr().out
    assert (out / "song0" / "instrumental.wav").is_file()


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        try:
            kids = subprocess.run(["pgrep", "-P", str(p)], capture_output=True, text=True).stdout.split()
        except FileNotFoundError:
            return found
        for k in map(int, kids):
            if k not in found:
                found.add(k)
                todo.append(k)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def test_a_killed_job_loses_only_the_files_in_flight(tmp_path, model):
    """SIGKILL of the driver half-way: the files it finished are recorded and complete, none is half
    written, and a rerun does the rest."""
    cfg, ckpt = model
    lib = tmp_path / "lib"
    lib.mkdir()
    count = 16
    for i in range(count):
        sf.write(lib / f"track{i:02d}.flac", song(8.0, i), RATE, subtype="PCM_16")
    out = tmp_path / "stems"
    args = separate_args([lib], cfg, ckpt, out, "--ray", "--local-cpus", 2, "--workers", 1)
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            children |= _descendants(proc.pid)
            if len([r for r in manifest(out) if r["status"] == "done"]) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the job ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
        children |= _descendants(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        # Ray's own processes end with their driver (its reaper); whatever is left is stopped by PID
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(p) for p in children):
            time.sleep(0.2)
        for p in children:
            if _alive(p):
                try:
                    os.kill(p, signal.SIGTERM)
                except ProcessLookupError:
                    pass
    finished = [r for r in manifest(out) if r["status"] == "done"]
    assert 2 <= len(finished) < count
    for r in finished:
        folder = out / os.path.basename(r["output"])
        assert sorted(os.listdir(folder)) == ["other.wav", "vocals.wav"]

    rerun = subprocess.run([sys.executable, "-m", "bridge.cli", *args], cwd=REPO, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{count - len(finished)} separated, {len(finished)} already done (skipped), 0 failed" in rerun.stdout
    assert len([r for r in latest(out).values() if r["status"] == "done"]) == count
    assert not leftovers(out)
    assert len(stem_files(out)) == 2 * count


def test_without_ray_nothing_imports_it_and_the_extra_is_optional(tmp_path, model):
    cfg, ckpt = model
    path = tmp_path / "a.wav"
    sf.write(path, song(1.0, 1), RATE)
    args = separate_args([path], cfg, ckpt, tmp_path / "stems")
    plain = textwrap.dedent(f"""
        import sys
        from bridge.cli.main import main
        assert main({args!r}) == 0
        assert "ray" not in sys.modules, sorted(m for m in sys.modules if m.startswith("ray"))
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", plain], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-2000:]

    # as if the extra were not installed: plain separate works, --ray is one error line
    blocked = textwrap.dedent(f"""
        import sys
        class NoRay:
            def find_spec(self, name, path=None, target=None):
                if name == "ray" or name.startswith("ray."):
                    raise ModuleNotFoundError("No module named 'ray'")
        sys.meta_path.insert(0, NoRay())
        from bridge.cli.main import main
        assert main({separate_args([path], cfg, ckpt, tmp_path / "stems2")!r}) == 0
        sys.exit(main({separate_args([path], cfg, ckpt, tmp_path / "stems3", "--ray")!r}))
    """)
    run = subprocess.run([sys.executable, "-c", blocked], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    errors = [l for l in run.stderr.splitlines() if l.startswith("error:")]
    assert errors == ["error: --ray needs Ray: pip install 'stemstream[cluster]' (or pip install 'ray[data]')"]
    assert "Traceback" not in run.stderr
    assert (tmp_path / "stems2" / "a" / "vocals.wav").is_file() and not (tmp_path / "stems3").exists()


def test_bad_cluster_settings_are_one_error_line(tmp_path, model, capsys):
    cfg, ckpt = model
    path = tmp_path / "a.wav"
    sf.write(path, song(1.0, 1), RATE)
    for extra, message in [(("--gpus-per-worker", "-1"), "--gpus-per-worker must be a finite number >= 0"),
                           (("--cpus-per-worker", "0"), "--cpus-per-worker 0 needs --gpus-per-worker"),
                           (("--local-cpus", "2"), "--local-cpus sizes a local Ray instance")]:
        ray_flag = ["--ray", "ray://nowhere:1"] if extra[0] == "--local-cpus" else ["--ray"]
        assert main(separate_args([path], cfg, ckpt, tmp_path / "o", *ray_flag, *extra)) == 1
        assert message in capsys.readouterr().err


def test_tta_and_instrumental_match_plain_separate(tmp_path, model, local_ray):
    cfg, ckpt = model
    path = tmp_path / "song.wav"
    sf.write(path, song(3.1, 3), RATE, subtype="FLOAT")
    out, reference = tmp_path / "stems", tmp_path / "plain"
    extra = ("--tta", "--instrumental")
    assert main(separate_args([path], cfg, ckpt, out, "--ray", "--split-seconds", 1, *extra)) == 0
    assert plain_separate([path], cfg, ckpt, reference, *extra) == 0
    ours, theirs = stem_files(out), stem_files(reference)
    assert sorted(ours) == sorted(theirs) and len(ours) == 3
    assert ours == theirs  # bit for bit, the ranges' three passes merged in order


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed (Debian: ffmpeg)")
def test_stem_files_on_ray_equal_local_ones_and_a_rerun_skips_them(tmp_path, local_ray, capsys):
    from streamer.formats import nistem

    cfg = write_yaml(tmp_path / "tiny4.yaml", stems=("vocals", "drums", "bass", "other"), target=None,
                     extra_model={"num_stems": 4})
    torch.manual_seed(1)
    model4 = randomize(streamer.build_model(streamer.load_config(cfg)), scale=0.1)
    ckpt = tmp_path / "tiny4.ckpt"
    torch.save(model4.state_dict(), ckpt)
    lib = tmp_path / "lib"
    (lib / "sub").mkdir(parents=True)
    sf.write(lib / "a.wav", song(2.2, 1), RATE, subtype="FLOAT")
    sf.write(lib / "sub" / "b.wav", song(1.7, 2), RATE, subtype="FLOAT")
    common = ["--config", cfg, "--checkpoint", ckpt, "--format", "stem", "--codec", "alac", "--recursive",
              "--no-progress"]
    assert main(["separate", str(lib), "--out", str(tmp_path / "local"), *map(str, common)]) == 0
    assert main(["separate", str(lib), "--out", str(tmp_path / "ray"), "--ray", *map(str, common)]) == 0
    for rel in ("a.stem.mp4", "sub/b.stem.mp4"):
        here, there = nistem.read_stem_file(tmp_path / "local" / rel), nistem.read_stem_file(tmp_path / "ray" / rel)
        np.testing.assert_array_equal(here.stems, there.stems)
        np.testing.assert_array_equal(here.master, there.master)
    assert sorted(p.name for p in (tmp_path / "ray").rglob("*") if p.is_file() and p.name != ".manifest.lock") == \
        ["a.stem.mp4", "b.stem.mp4", "manifest.jsonl"]   # the separated stems are gone
    records = [json.loads(line) for line in (tmp_path / "ray" / "manifest.jsonl").read_text().splitlines()]
    assert {r["output"].rsplit("/", 1)[-1] for r in records} == {"a.stem.mp4", "b.stem.mp4"}
    assert all(r["settings"]["format"] == "stem" and r["settings"]["stem_file"]["codec"] == "alac" for r in records)
    capsys.readouterr()
    assert main(["separate", str(lib), "--out", str(tmp_path / "ray"), "--ray", *map(str, common)]) == 0
    assert "0 separated, 2 already done (skipped), 0 failed" in capsys.readouterr().out
